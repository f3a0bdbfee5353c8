"""Data-parallel training: two gloo processes launched by torchrun, each on half of every
global batch, end with the same weights and validation metrics as one process on the
whole global batches (float64, so agreement is to rounding)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from force2geo.training import TrainConfig, fit, load_checkpoint
from force2geo.training.runlog import read_records


def torchrun() -> str | None:
    candidate = Path(sys.executable).parent / "torchrun"
    return str(candidate) if candidate.exists() else shutil.which("torchrun")


@pytest.mark.skipif(torchrun() is None, reason="torchrun is not installed")
def test_two_gloo_processes_match_one_process(xtb_store, tmp_path, tiny_painn):
    steps, per_rank = 3, 4
    common = {"data": str(xtb_store), "model_config": tiny_painn, "dtype": "float64",
              "device": "cpu", "epochs": 1, "max_steps": steps, "log_every": 1, "seed": 3,
              "split_seed": 1, "plots": False}  # split seed 1: energy-only molecule in train
    ddp_dir = tmp_path / "ddp"
    options = [f"--model-option={k}={v}" for k, v in tiny_painn.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [torchrun(), "--standalone", "--nproc-per-node", "2", "-m", "force2geo.cli.main",
         "train", "--data", str(xtb_store), "-o", str(ddp_dir), *options, "--dtype", "float64",
         "--device", "cpu", "--epochs", "1", "--max-steps", str(steps), "--log-every", "1",
         "--seed", "3", "--split-seed", "1", "--batch-size", str(per_rank), "--no-plots"],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("trained 3 steps") == 1  # only rank 0 reports

    # One process; each of its batches is the union of the two ranks' batches of a step.
    one = TrainConfig(run_dir=str(tmp_path / "one"), batch_size=2 * per_rank, **common)
    fit(one)

    ddp = load_checkpoint(ddp_dir / "last.pt")
    single = load_checkpoint(tmp_path / "one" / "last.pt")
    assert ddp["progress"]["step"] == single["progress"]["step"] == steps
    for name, value in single["model_state"].items():
        assert torch.allclose(ddp["model_state"][name], value, rtol=1e-10, atol=1e-12), name
    ddp_records = [r for r in read_records(ddp_dir) if r["kind"] == "train"]
    one_records = [r for r in read_records(tmp_path / "one") if r["kind"] == "train"]
    assert len(ddp_records) == steps  # rank 1 wrote nothing
    for a, b in zip(ddp_records, one_records, strict=True):  # loss of the global batch
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-10)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-10)
        assert a["grad_norm"] > 0
    for key in ("energy_mae", "force_rmse", "force_mae", "force_cos", "loss"):
        assert ddp["metrics"][key] == pytest.approx(single["metrics"][key], rel=1e-10), key
    assert ddp["metrics"]["n_energy"] == single["metrics"]["n_energy"]
