"""force2geo active-learn on real GFN2-xTB: a pool made by the real protocol, a tiny PaiNN
trained on it, two rounds of relax -> label -> fine-tune, and the final scoring pass."""

import json

import numpy as np
import pytest
from ase.io import read

from force2geo.active import ActiveConfig, active_learn, read_labels
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.qc.engines import XTBEngine
from force2geo.qc.generate import generate
from force2geo.qc.geometries import geometry_key
from force2geo.qc.molecules import Molecule
from force2geo.qc.protocol import ProtocolConfig
from force2geo.training import TrainConfig, fit, load_checkpoint

POOL = {"ethanol": "CCO", "acetamide": "CC(N)=O", "methylamine": "CN",
        "acetonitrile": "CC#N", "methanol": "CO", "formamide": "NC=O"}


@pytest.fixture(scope="module")
def pool_and_model(tmp_path_factory):
    """A 6-molecule xTB store (ETKDG -> loose MMFF -> xTB) and a tiny PaiNN trained on it."""
    root = tmp_path_factory.mktemp("active")
    molecules = [Molecule(name, smiles) for name, smiles in POOL.items()]
    generate(molecules, root / "pool", ProtocolConfig(mmff_fmax=3.0), workers=1,
             progress=False)
    fit(TrainConfig(data=str(root / "pool"), run_dir=str(root / "run"), epochs=1, max_steps=4,
                    batch_size=8, stages=("xtb",), split_fractions=(1.0, 0.0, 0.0),
                    device="cpu", plots=False,
                    model_config={"hidden_channels": 16, "num_layers": 2, "num_rbf": 8,
                                  "cutoff": 4.0}))
    return root / "pool", root / "run" / "last.pt"


def config_for(pool, model, out, **changes):
    options = dict(model=str(model), pool=str(pool), base=str(pool), output=str(out),
                   rounds=2, molecules=2, replay=2, train_steps=2, batch_size=4,
                   relax_steps=20, workers=1)
    return ActiveConfig(**{**options, **changes})


def test_two_rounds_label_the_ends_and_fine_tune_from_the_previous_model(pool_and_model,
                                                                          tmp_path):
    pool, model = pool_and_model
    out = tmp_path / "al"
    record = active_learn(config_for(pool, model, out))
    rounds = record["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert rounds[1]["model_in"] == rounds[0]["model_out"] != str(model)
    for k, entry in enumerate(rounds, start=1):
        # two molecules, two starts: four ends, and the raw ETKDG starts have no xTB energy;
        # a geometry met twice (a start already converged) is labelled once
        assert entry["relaxations"] == 4
        frames = read(out / f"round-{k:02d}" / "endpoints.extxyz", index=":")
        assert len(frames) == 6
        unique = {geometry_key(a.numbers, a.positions, 0) for a in frames}
        assert entry["oracle_calls"] == {"endpoints": len(unique)}
        metrics = entry["metrics_before"]
        assert set(metrics) == {"xtb:first", "etkdg:first", "all"}
        # every relaxation is scored; a crude model's blown-up end (no oracle energy) counts
        # as diverged, so pct_T may have nothing to average
        assert metrics["all"]["n_scored"] == 4 and 0 <= metrics["all"]["pct_div"] <= 100
        assert np.isfinite(metrics["all"]["pct_T"]) or \
            metrics["all"]["n_pct_oracle_failed"] + metrics["all"]["n_pct_small_drop"] == 4
    names = {t.name.split("@")[1] for t in
             TrajectoryStore(out / "round-01" / "labels").trajectories()}
    assert names <= {"etkdg:first#end", "etkdg:first#start", "xtb:first#end"}
    assert "xtb:first#end" in names and "etkdg:first#start" in names
    assert 4 <= record["final"]["oracle_calls"]["endpoints"] <= 6
    # the labels are the oracle's: recompute one end directly
    labels = TrajectoryStore(out / "round-01" / "labels")
    traj = next(t for t in labels.trajectories() if t.name.endswith("#end"))
    direct = XTBEngine().compute(traj.atomic_numbers, traj.positions[0], traj.charge)
    assert traj.energy[0] == pytest.approx(direct.energy, abs=1e-6)
    assert read_labels(out / "round-01" / "labels", "xtb-label")[traj.name][0] == \
        pytest.approx(direct.energy, abs=1e-6)
    # round 2 trains on the replay and both rounds' labels; its run started from round 1
    replay = TrajectoryStore(out / "replay").n_snapshots
    # (labels with an oracle force above 20 eV/Å, ends this crude model blew up, stay out)
    tame = sum(int(np.sqrt((t.forces ** 2).sum(-1)).max() <= 20.0)
               for k in (1, 2)
               for t in TrajectoryStore(out / f"round-{k:02d}" / "labels").trajectories())
    assert rounds[1]["train_snapshots"] == replay + tame
    assert load_checkpoint(rounds[1]["model_out"])["config"]["init"] == rounds[0]["model_out"]
    saved = (out / "active_learn.json").read_text()
    assert json.dumps(json.loads(saved)["rounds"]) == json.dumps(rounds)  # NaN != NaN
    # a rerun resumes (nothing left to do); other settings in the same folder are refused
    assert json.dumps(active_learn(config_for(pool, model, out))) == json.dumps(json.loads(saved))
    with pytest.raises(InputError, match="other settings"):
        active_learn(config_for(pool, model, out, lr=1e-2))


def test_random_selection_labels_one_drawn_step_besides_the_scored_ends(pool_and_model,
                                                                         tmp_path):
    pool, model = pool_and_model
    record = active_learn(config_for(pool, model, tmp_path / "al", rounds=1, select="random",
                                     starts=("xtb:first",)))
    entry = record["rounds"][0]
    assert entry["oracle_calls"] == {"endpoints": 2, "selected": 2}
    names = [t.name for t in TrajectoryStore(tmp_path / "al" / "round-01" / "labels")
             .trajectories()]
    assert len(names) == 2 and all(n.endswith("@xtb:first#pick") for n in names)
    ends = TrajectoryStore(tmp_path / "al" / "round-01" / "endpoints")
    assert ends.n_snapshots == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="select"):
        ActiveConfig(model="m", pool="p", base="b", output="o", select="best")
    with pytest.raises(ValueError, match="STAGE:first"):
        ActiveConfig(model="m", pool="p", base="b", output="o", starts=("xtb",))
