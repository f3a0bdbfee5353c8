"""The model card: facts read off the files, the store and a real evaluation, checked
against independent computations; the card shows them; a foreign store is refused."""

import hashlib
import json
import shutil

import numpy as np
import pytest
from shipped import ship, train

from force2geo.cli.main import main
from force2geo.data.splits import random_split
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.pretrained import (
    DEFAULT,
    collect_facts,
    inchikey_digest,
    load_pretrained,
    make_model_card,
    read_registry,
)
from force2geo.training import SnapshotLoader, TrainConfig, evaluate, load_checkpoint

COMMANDS = ["force2geo train --data STORE -o RUN", "python -m force2geo.pretrained export RUN"]


@pytest.fixture
def evaluation(weights, ema_run, store_path, tmp_path):
    """A real 'evaluate relax' of the shipped model on 2 molecules, GFN2-xTB oracle."""
    ship(weights, DEFAULT, [ema_run])
    report = tmp_path / "report"
    assert main(["evaluate", "relax", "--data", str(store_path), "--k", "2", "--steps", "5",
                 "--workers", "1", "--device", "cpu", "-o", str(report),
                 "--no-progress"]) == 0
    return report


def test_card_facts_match_independent_computations(evaluation, weights, ema_run,
                                                   store_path):
    card = make_model_card(DEFAULT, weights, evaluation, commands=COMMANDS)
    facts = json.loads((weights / f"{DEFAULT}.facts.json").read_text())
    store = TrajectoryStore(store_path)
    parts = random_split(store.n_trajectories, (0.5, 0.25, 0.25), seed=42)
    keys = store.identifiers("inchikey")
    counts = facts["training_data"]["parts"]
    for name, trajectories in parts.items():
        assert counts[name] == {"trajectories": len(trajectories),
                                "molecules": len({keys[t] for t in trajectories}),
                                "snapshots": 4 * len(trajectories)}
    seen = [keys[t] for t in np.concatenate([parts["train"], parts["valid"]])]
    listing = facts["training_data"]["inchikeys"]
    assert listing["count"] == 6 and listing["sha256"] == inchikey_digest(seen)
    key_file = (weights / listing["file"]).read_bytes()
    assert hashlib.sha256(key_file).hexdigest() == listing["sha256"]
    assert key_file.decode().splitlines() == sorted(set(seen))
    # Test errors: the training code's own evaluation of the shipped model on the test part.
    model = load_pretrained()
    loader = SnapshotLoader(store, store.select(trajectories=parts["test"]), 8,
                            shuffle=False, drop_uneven=False)
    expected, _ = evaluate(model, loader, TrainConfig(data=str(store_path), run_dir="-"))
    for key in ("energy_mae", "energy_mae_total", "force_rmse", "force_mae", "force_cos"):
        assert facts["test"][key] == pytest.approx(expected[key], rel=1e-9)
    validation = load_checkpoint(ema_run / "best.pt")["metrics"]
    assert facts["model"]["members"][0]["validation"] == validation
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert facts["relaxation"]["pct_T"] == metrics["pct_T"]
    assert facts["relaxation"]["oracle"] == "GFN2-xTB (tblite)"
    text = card.read_text()
    for shown in (f"{facts['test']['energy_mae']:.1f}", f"{validation['force_rmse']:.1f}",
                  listing["sha256"], read_registry(weights)[DEFAULT].files[0].sha256,
                  *COMMANDS, "MIT", "| test | 2 | 2 | 8 |"):
        assert shown in text
    assert f"| pct_div (%) | {metrics['pct_div']:.2f} | 8.10 |" in text
    pct_t = "n/a" if metrics["pct_T"] is None else f"{metrics['pct_T']:.2f}"  # JSON null: NaN
    assert f"| pct_T (%) | {pct_t} | 57.37 |" in text
    assert read_registry(weights)[DEFAULT].card == card.name == "MODEL_CARD.md"


def test_facts_refuse_another_store(weights, ema_run, store_path, tmp_path):
    ship(weights, DEFAULT, [ema_run])
    other = tmp_path / "other"
    shutil.copytree(store_path, other)
    with TrajectoryWriter(other) as writer:  # one more molecule: another fingerprint
        writer.add(Trajectory(np.array([1, 1]), np.array([[[0, 0, 0], [0.74, 0, 0]]]),
                              [-27.0], np.zeros((1, 2, 3)), "xtb", smiles="[H][H]"))
    with pytest.raises(InputError, match="not the same data"):
        collect_facts(DEFAULT, weights, store=other, test_errors=False)
    facts, _ = collect_facts(DEFAULT, weights, store=store_path, test_errors=False)
    assert facts["test"] is None and facts["relaxation"] is None
    assert facts["model"]["parameters"] == sum(
        p.numel() for p in load_pretrained().backbone.parameters())


def test_a_warm_started_model_names_its_start_on_the_card(weights, ema_run, store_path,
                                                          tmp_path):
    """A run with init = an exported model: the facts carry that file's SHA-256 and export
    name, and the card says the model began from it; a cold start says nothing of it."""
    start = ship(weights, "start", [ema_run]).files[0]
    warm = train(store_path, tmp_path / "warm", dtype="float64", ema_decay=0.9, seed=2,
                 init=str(weights / start.file))
    ship(weights, DEFAULT, [warm])
    card = make_model_card(DEFAULT, weights, test_errors=False)
    init = json.loads((weights / f"{DEFAULT}.facts.json").read_text())["training_data"]["init"]
    assert init == {"checkpoint": str(weights / start.file), "sha256": start.sha256,
                    "exported_as": "start"}
    assert f"SHA-256 `{start.sha256}`), exported as start" in card.read_text()
    ship(weights, DEFAULT, [ema_run])
    cold = make_model_card(DEFAULT, weights, test_errors=False)
    assert "Warm start" not in cold.read_text()
    assert json.loads((weights / f"{DEFAULT}.facts.json").read_text())[
        "training_data"]["init"] is None
