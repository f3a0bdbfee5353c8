"""Training end to end on real GFN2-xTB labels: a small PaiNN overfits; checkpoints are
self-describing and load safely; a stopped run, and a SIGKILLed one, resume to the very
same weights as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.models import energy_and_forces
from force2geo.training import (
    SnapshotLoader,
    TrainConfig,
    evaluate,
    fit,
    load_checkpoint,
    load_potential,
    resume_config,
    train_step,
)
from force2geo.training.fit import (
    build_potential,
    fit_reference_energies,
    make_scheduler,
    warm_start_potential,
)
from force2geo.training.runlog import read_records
from force2geo.units import UNITS


def overfit_three_molecules(xtb_store, tiny_painn, seed: int) -> tuple[dict, dict]:
    """Metrics before and after 300 full-batch Adam steps (cosine 1e-2 -> 1e-4) in float64
    on the 18 snapshots of water, methane and ammonia, from initial weights of ``seed``."""
    store = TrajectoryStore(xtb_store)
    indices = store.select(trajectories=[0, 1, 2])  # water, methane, ammonia: 18 snapshots
    config = TrainConfig(data=str(xtb_store), run_dir="unused", lr=1e-2, dtype="float64",
                         epochs=300, schedule="cosine", lr_floor=0.01,
                         model_config={**tiny_painn, "num_rbf": 16})
    torch.manual_seed(seed)
    potential = build_potential(config, fit_reference_energies(store, indices))
    optimizer = torch.optim.Adam(potential.parameters(), lr=config.lr)
    scheduler = make_scheduler(optimizer, config, steps_per_epoch=1)
    loader = SnapshotLoader(store, indices, batch_size=18, seed=0, dtype=torch.float64)
    before, _ = evaluate(potential, loader, config)
    for _ in range(config.epochs):
        for batch in loader.epoch_batches():
            train_step(potential, batch, optimizer, config)
            scheduler.step()
        loader.end_epoch()
    after, _ = evaluate(potential, loader, config)
    return before, after


def test_small_painn_overfits_three_molecules(xtb_store, tiny_painn):
    """Deterministic (fixed seeds, float64, one thread) and far from its thresholds.

    Measured over initial-weight seeds 0-5 (torch 2.13.0 CPU, tblite 0.8.0 labels), with
    the thresholds below: before training (reference energies and an untrained network)
    energy MAE 213-560 meV/atom (> 150), force RMSE 1253-2096 meV/Å (> 1000); after it
    energy MAE 0.54-1.11 meV/atom (< 5), force RMSE 21.1-29.7 meV/Å (< 60), force cosine
    0.9971-0.9993 (> 0.99). Seed 0: 522 -> 0.57 meV/atom, 2096 -> 28 meV/Å.
    The 100-step float32 run this replaces ended anywhere in 12-93 meV/atom.
    """
    before, after = overfit_three_molecules(xtb_store, tiny_painn, seed=0)
    assert before["energy_mae"] > 150 and before["force_rmse"] > 1000
    assert after["energy_mae"] < 5
    assert after["force_rmse"] < 60
    assert after["force_cos"] > 0.99


# -- one configuration shared by the resume tests, and its uninterrupted run


def resume_config_for(store, run_dir, tiny_painn):
    """float64 so that 'the same' can mean bit for bit; EMA and an atom budget on, so
    their state is part of what must survive a restart."""
    return TrainConfig(data=str(store), run_dir=str(run_dir), model_config=tiny_painn,
                       dtype="float64", device="cpu", epochs=2, batch_size=4, max_atoms=24,
                       ema_decay=0.9, log_every=2, ckpt_every=3, plateau_patience=0, seed=5,
                       split_seed=1)  # puts the energy-only molecule in the training split


@pytest.fixture(scope="module")
def reference_run(xtb_store, tmp_path_factory):
    tiny = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0}
    config = resume_config_for(xtb_store, tmp_path_factory.mktemp("ref") / "run", tiny)
    summary = fit(config)
    return config, summary, load_checkpoint(Path(config.run_dir) / "last.pt")


def assert_same_state(a: dict, b: dict):
    assert torch.equal(a["atom_refs"], b["atom_refs"])
    for name, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][name]), name
    for name, value in a["ema"]["model"].items():
        assert torch.equal(value, b["ema"]["model"][name]), name
    for k, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][k][name]), (k, name)
    assert a["scheduler"] == b["scheduler"]
    assert a["progress"]["step"] == b["progress"]["step"]
    assert a["loader"] == b["loader"]


def comparable(records):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in records]


def test_checkpoint_is_self_describing(reference_run, xtb_store):
    config, summary, checkpoint = reference_run
    store = TrajectoryStore(xtb_store)
    assert checkpoint["config"] == config.to_dict()
    assert checkpoint["units"] == UNITS
    assert checkpoint["data"]["fingerprint"] == store.fingerprint
    assert checkpoint["model"] == {"name": "painn", "config": {
        "hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0,
        "num_elements": 83, "envelope_exponent": 5}}
    assert checkpoint["atom_refs"].dtype == torch.float64
    assert checkpoint["force2geo_version"] and checkpoint["torch_version"]
    assert set(checkpoint["rng"]) == {"torch", "cuda", "numpy", "python"}
    # With an atom budget the number of batches changes from epoch to epoch.
    from force2geo.training.data import split_snapshots

    train = split_snapshots(store, None, config.split_fractions, config.split_seed)["train"]
    energy_only = store.trajectory_snapshots(store.n_trajectories - 1)
    assert np.isin(energy_only, train).all()  # trained on NaN forces: masked, not NaN weights
    assert all(torch.isfinite(v).all() for v in checkpoint["model_state"].values())
    loader = SnapshotLoader(store, train, config.batch_size, config.max_atoms, seed=config.seed)
    steps = sum(len(loader.rank_batches(e)) for e in range(config.epochs))
    assert summary["epoch"] == config.epochs
    assert summary["step"] == checkpoint["progress"]["step"] == steps
    # Reference energies: least squares on the training split; H, C, N, O present.
    refs = checkpoint["atom_refs"].numpy()
    assert np.all(refs[[1, 6, 7, 8]] < 0) and np.all(refs[[2, 3, 9]] == 0)
    # Every file of the run is there.
    names = {p.name for p in Path(config.run_dir).iterdir()}
    assert {"config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt",
            "learning_curve.png", "parity.png"} <= names
    assert TrainConfig.from_json(Path(config.run_dir) / "config.json") == config


def test_load_potential_reproduces_the_validation_metrics(reference_run, xtb_store):
    config, summary, checkpoint = reference_run
    potential = load_potential(Path(config.run_dir) / "last.pt")  # EMA weights by default
    assert potential.atom_refs.dtype == torch.float64
    assert next(potential.parameters()).dtype == torch.float64
    store = TrajectoryStore(xtb_store)
    from force2geo.training.data import split_snapshots

    valid = split_snapshots(store, None, config.split_fractions, config.split_seed)["valid"]
    loader = SnapshotLoader(store, valid, 64, shuffle=False, dtype=torch.float64)
    metrics, _ = evaluate(potential, loader, config)
    assert metrics["energy_mae"] == pytest.approx(summary["metrics"]["energy_mae"], rel=1e-12)
    assert metrics["force_rmse"] == pytest.approx(summary["metrics"]["force_rmse"], rel=1e-12)
    raw = load_potential(Path(config.run_dir) / "last.pt", use_ema=False)
    batch = next(iter(loader))
    assert not torch.equal(energy_and_forces(raw, batch)[0],
                           energy_and_forces(potential, batch)[0])


def test_unsafe_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.pt"
    torch.save({"format": "force2geo-checkpoint", "payload": Payload()}, path)
    with pytest.raises(InputError, match="refused"):
        load_checkpoint(path)
    assert not marker.exists()
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(InputError, match="not a force2geo-checkpoint"):
        load_checkpoint(tmp_path / "other.pt")


def test_stopped_run_resumes_bit_identically(reference_run, xtb_store, tmp_path, tiny_painn):
    config, _, expected = reference_run
    mine = config.replace(run_dir=str(tmp_path / "run"), max_steps=14)  # stops mid-epoch 2
    fit(mine)
    stopped = load_checkpoint(tmp_path / "run" / "last.pt")
    assert stopped["progress"]["step"] == 14 and stopped["loader"]["batch"] > 0
    with pytest.raises(InputError, match="already holds a run"):
        fit(mine)
    with pytest.raises(InputError, match="different lr"):
        fit(mine.replace(lr=0.01), resume=True)
    fit(resume_config(tmp_path / "run", max_steps=None), resume=True)
    assert_same_state(load_checkpoint(tmp_path / "run" / "last.pt"), expected)
    assert comparable(read_records(tmp_path / "run")) == \
        comparable(read_records(config.run_dir))


def test_killed_run_resumes_from_its_last_checkpoint(reference_run, tmp_path):
    config, _, expected = reference_run
    run_dir = tmp_path / "run"
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(config.replace(run_dir=str(run_dir)).to_dict()))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "force2geo.cli.main", "train", "--config", str(config_file),
         "-o", str(run_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not (run_dir / "last.pt").exists():
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 120 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    killed = load_checkpoint(run_dir / "last.pt")
    assert killed["progress"]["step"] < expected["progress"]["step"]
    assert not any(r["kind"] == "final" for r in read_records(run_dir))

    fit(resume_config(run_dir), resume=True)
    assert_same_state(load_checkpoint(run_dir / "last.pt"), expected)
    assert comparable(read_records(run_dir)) == comparable(read_records(config.run_dir))


def test_warm_start_begins_from_the_checkpoint_weights(reference_run, tmp_path):
    """--init: the new run starts from the source checkpoint's EMA weights and reference
    energies, and trains on from there; a different backbone is refused by name."""
    config, _, checkpoint = reference_run
    source = Path(config.run_dir) / "last.pt"
    warm = config.replace(run_dir=os.fspath(tmp_path / "warm"), init=os.fspath(source),
                          epochs=1, max_steps=2, ema_decay=None, plots=False)
    start = warm_start_potential(warm)
    for name, value in checkpoint["ema"]["model"].items():
        assert torch.equal(start.state_dict()[name], value), name
    assert start.training
    fit(warm)
    trained = load_checkpoint(tmp_path / "warm" / "last.pt")
    assert torch.equal(trained["atom_refs"], checkpoint["atom_refs"])
    assert trained["progress"]["step"] == 2
    assert TrainConfig.from_dict(trained["config"]).init == os.fspath(source)
    wrong = warm.replace(run_dir=os.fspath(tmp_path / "wrong"),
                         model_config={**config.model_config, "hidden_channels": 8})
    with pytest.raises(InputError, match="hidden_channels"):
        fit(wrong)


def test_cosine_schedule_falls_to_its_floor_and_resumes_bit_identically(reference_run, tmp_path):
    config, _, _ = reference_run
    cosine = config.replace(run_dir=str(tmp_path / "whole"), schedule="cosine", warmup_steps=4,
                            lr_floor=0.1)
    fit(cosine)
    # logged every 2 steps: half-way up the warm-up, at the top, then falling
    lrs = [r["lr"] for r in read_records(tmp_path / "whole") if r["kind"] == "train"]
    assert lrs[0] == pytest.approx(0.75 * config.lr) and lrs[1] == pytest.approx(config.lr)
    assert lrs[1:] == sorted(lrs[1:], reverse=True) and lrs[-1] < 0.2 * config.lr
    final = load_checkpoint(tmp_path / "whole" / "last.pt")
    steps = final["progress"]["step"]
    assert final["optimizer"]["param_groups"][0]["lr"] == pytest.approx(config.lr * 0.1)
    stopped = cosine.replace(run_dir=str(tmp_path / "cut"), max_steps=steps // 2 + 1)
    fit(stopped)
    fit(resume_config(tmp_path / "cut", max_steps=None), resume=True)
    assert_same_state(load_checkpoint(tmp_path / "cut" / "last.pt"), final)


def test_cosine_over_schedule_steps_reaches_its_floor_there(reference_run, tmp_path):
    config, _, _ = reference_run
    fit(config.replace(run_dir=str(tmp_path / "run"), schedule="cosine", lr_floor=0.1,
                       schedule_steps=6, max_steps=6))
    last = load_checkpoint(tmp_path / "run" / "last.pt")
    assert last["progress"]["step"] == 6
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.1 * config.lr)
    with pytest.raises(ValueError, match="schedule_steps"):
        config.replace(schedule_steps=0)
