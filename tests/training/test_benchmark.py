"""``force2geo benchmark models`` on real GFN2-xTB labels: every model trained with the same
budget and options, and a table whose numbers equal an independent evaluation of the saved
checkpoints (per molecule, in numpy)."""

import contextlib
import io
import json

import numpy as np
import pytest
import torch

from force2geo.cli.main import main
from force2geo.data.splits import random_split
from force2geo.data.store import TrajectoryStore
from force2geo.models import MODELS, Batch, energy_and_forces
from force2geo.training import load_checkpoint, load_potential

TINY = {
    "painn": {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0},
    "schnet": {"hidden_channels": 16, "num_filters": 16, "num_interactions": 2,
               "num_gaussians": 10, "cutoff": 4.0},
    "mace": {"r_max": 4.0, "hidden_irreps": "8x0e+8x1o", "max_ell": 1, "correlation": 2,
             "num_bessel": 6, "radial_mlp": [8, 8], "mlp_irreps": "4x0e",
             "elements": [1, 6, 7, 8]},
}
NAMES = [name for name in ("painn", "schnet", "mace") if name in MODELS]
# Valid: methane, ethylene and the energy-only HCN (its NaN forces must be left out).
FRACTIONS = (0.7, 0.3, 0.0)


def model_options(names):
    def text(value):
        return value if isinstance(value, str) else json.dumps(value)

    return [f"--model-option={name}.{key}={text(value)}"
            for name in names for key, value in TINY[name].items()]


def run_cli(argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(argv)
    return code, out.getvalue()


@pytest.fixture(scope="module")
def bench(xtb_store, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("bench") / "out"
    argv = ["benchmark", "models", "--data", str(xtb_store), "-o", str(out_dir),
            "--models", *NAMES, "--steps", "3", *model_options(NAMES), "--seed", "7",
            "--batch-size", "4", "--split-fractions", *map(str, FRACTIONS),
            "--dtype", "float64", "--device", "cpu"]
    code, printed = run_cli(argv)
    return argv, out_dir, code, printed


def independent_metrics(checkpoint, store_path):
    """Table-2 metrics of a checkpoint over the validation split, one molecule at a time."""
    store = TrajectoryStore(store_path)
    potential = load_potential(checkpoint)
    valid = random_split(store.n_trajectories, FRACTIONS, 42)["valid"]
    e_err, f_pred, f_true = [], [], []
    for t in valid:
        for s in store.trajectory_snapshots(int(t)):
            batch = Batch.from_store(store.read([int(s)]), dtype=torch.float64)
            energy, forces = energy_and_forces(potential, batch)
            e_err.append((float(energy[0]) - float(batch.energy[0])) / batch.n_atoms)
            f_pred.append(forces.numpy())
            f_true.append(batch.forces.numpy())
    f_pred, f_true = np.concatenate(f_pred), np.concatenate(f_true)
    known = np.isfinite(f_true).all(axis=1)
    d = f_pred[known] - f_true[known]
    cos = (f_pred[known] * f_true[known]).sum(1) / (
        np.linalg.norm(f_pred[known], axis=1) * np.linalg.norm(f_true[known], axis=1))
    return {"energy_mae": 1000 * np.mean(np.abs(e_err)), "force_rmse": 1000 * np.sqrt(
        np.mean(d**2)), "force_mae": 1000 * np.mean(np.abs(d)), "force_cos": np.mean(cos),
        "n_valid": len(e_err), "n_known": int(known.sum()), "n_atoms": len(known),
        "parameters": sum(p.numel() for p in potential.parameters())}


def test_table_lists_every_model_with_numbers_of_its_checkpoint(bench, xtb_store):
    _, out_dir, code, printed = bench
    assert code == 0
    table = json.loads((out_dir / "table.json").read_text())
    markdown = (out_dir / "table.md").read_text()
    assert [row["model"] for row in table["rows"]] == NAMES
    assert markdown in printed and "energy MAE (meV/atom)" in markdown
    assert table["units"]["force_rmse"] == "meV/Angstrom"
    for row in table["rows"]:
        assert f"| {row['model']} | {row['parameters']:,} |" in markdown
        checkpoint = out_dir / row["checkpoint"]
        assert checkpoint.parent.name == row["model"] and checkpoint.name in ("best.pt",
                                                                              "last.pt")
        expected = independent_metrics(checkpoint, xtb_store)
        assert expected["n_known"] < expected["n_atoms"]  # the energy-only molecule
        assert row["n_valid"] == expected["n_valid"] == 18
        for key in ("energy_mae", "force_rmse", "force_mae", "force_cos"):
            assert row[key] == pytest.approx(expected[key], rel=1e-9), (row["model"], key)
        assert row["parameters"] == expected["parameters"]
        assert row["train_steps"] == 3 and row["train_seconds"] > 0
        assert row["ms_per_molecule"] > 0 and row["ms_per_molecule_batched"] > 0


def test_every_model_trained_under_the_same_options(bench):
    _, out_dir, _, _ = bench
    configs = []
    for name in NAMES:
        config = load_checkpoint(out_dir / name / "last.pt")["config"]
        assert config["model"] == name
        assert config["model_config"] == TINY[name]
        assert (config["max_steps"], config["max_minutes"], config["seed"]) == (3, None, 7)
        configs.append({k: v for k, v in config.items()
                        if k not in ("model", "model_config", "run_dir")})
    assert all(c == configs[0] for c in configs)
    assert configs[0]["split_fractions"] == list(FRACTIONS)


def test_a_second_run_reuses_the_finished_runs(bench):
    argv, out_dir, _, _ = bench
    before = json.loads((out_dir / "table.json").read_text())["rows"]
    stamps = {n: (out_dir / n / "last.pt").stat().st_mtime_ns for n in NAMES}
    code, _ = run_cli(argv)
    after = json.loads((out_dir / "table.json").read_text())["rows"]
    assert code == 0
    assert stamps == {n: (out_dir / n / "last.pt").stat().st_mtime_ns for n in NAMES}
    for old, new in zip(before, after, strict=True):
        for key in ("energy_mae", "force_rmse", "train_steps", "train_seconds", "parameters"):
            assert new[key] == old[key]


def test_minutes_budget_stops_training_by_the_clock(xtb_store, tmp_path):
    out_dir = tmp_path / "out"
    code, _ = run_cli(["benchmark", "models", "--data", str(xtb_store), "-o", str(out_dir),
                       "--models", "schnet", "--minutes", "0.01", *model_options(["schnet"]),
                       "--batch-size", "4", "--split-fractions", *map(str, FRACTIONS),
                       "--device", "cpu"])
    assert code == 0
    row = json.loads((out_dir / "table.json").read_text())["rows"][0]
    config = load_checkpoint(out_dir / "schnet" / "last.pt")["config"]
    assert (config["max_minutes"], config["max_steps"]) == (0.01, None)
    assert row["train_steps"] >= 1 and row["train_seconds"] < 30


@pytest.mark.parametrize("argv, message", [
    (["--models", "painn", "--model-option", "painn.hidden=3"],
     "painn has no option(s) ['hidden']"),
    (["--models", "painn", "--model-option", "schnet.cutoff=3"],
     "model_options: given for ['schnet']"),
    (["--models", "painn", "--model-option", "cutoff=3"], "expected NAME.KEY=VALUE"),
    (["--models", "nequip"], "models: unknown 'nequip'"),
])
def test_errors_name_the_culprit(xtb_store, tmp_path, capsys, argv, message):
    code = main(["benchmark", "models", "--data", str(xtb_store), "-o", str(tmp_path / "o"),
                 "--steps", "1", *argv])
    assert code == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing trained, nothing written


def test_budget_is_steps_or_minutes(xtb_store, tmp_path):
    with pytest.raises(SystemExit) as exit_info, contextlib.redirect_stderr(io.StringIO()):
        main(["benchmark", "models", "--data", str(xtb_store), "-o", str(tmp_path),
              "--steps", "3", "--minutes", "1"])
    assert exit_info.value.code == 2
