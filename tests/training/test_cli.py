"""``force2geo train``: a run from the command line, its extension by --resume, and errors
that name the option or file at fault."""

import json

import pytest

from force2geo.cli.main import main
from force2geo.training import load_checkpoint
from force2geo.training.runlog import read_records


def tiny_options(tiny_painn):
    return [f"--model-option={k}={v}" for k, v in tiny_painn.items()]


@pytest.fixture(scope="module")
def cli_run(xtb_store, tmp_path_factory):
    """One epoch from the command line, then one more by --resume --epochs 2."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    tiny = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0}
    first = main(["train", "--data", str(xtb_store), "--model", "painn", "-o", str(run_dir),
                  *tiny_options(tiny), "--epochs", "1", "--batch-size", "8", "--dtype",
                  "float64", "--device", "cpu", "--log-every", "1", "--lambda-f", "5",
                  "--stages", "xtb", "--ema-decay", "0.5", "--grad-clip", "0"])
    after_first = load_checkpoint(run_dir / "last.pt")
    second = main(["train", "-o", str(run_dir), "--resume", "--epochs", "2"])
    return run_dir, first, after_first, second


def test_train_command_writes_a_run(cli_run, capsys):
    run_dir, first, after_first, _ = cli_run
    assert first == 0
    config = after_first["config"]
    assert config["model_config"]["hidden_channels"] == 16
    assert (config["lambda_f"], config["stages"], config["ema_decay"]) == (5.0, ["xtb"], 0.5)
    assert config["grad_clip"] is None  # --grad-clip 0 turns clipping off
    assert after_first["progress"]["epoch"] == 1
    for name in ("config.json", "metrics.jsonl", "metrics.csv", "last.pt", "best.pt",
                 "learning_curve.png", "parity.png"):
        assert (run_dir / name).stat().st_size > 0, name
    header = (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("kind,step,epoch,lr,loss")


def test_resume_extends_the_run(cli_run):
    run_dir, _, after_first, second = cli_run
    assert second == 0
    last = load_checkpoint(run_dir / "last.pt")
    assert last["progress"]["epoch"] == 2
    assert last["progress"]["step"] > after_first["progress"]["step"]
    valid = [r for r in read_records(run_dir) if r["kind"] == "valid"]
    assert [r["epoch"] for r in valid] == [1, 2]
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 2


def test_summary_line_reports_units(xtb_store, tmp_path, tiny_painn, capsys):
    code = main(["train", "--data", str(xtb_store), "-o", str(tmp_path / "run"),
                 *tiny_options(tiny_painn), "--epochs", "1", "--max-steps", "2",
                 "--batch-size", "8", "--device", "cpu"])
    assert code == 0
    out = capsys.readouterr().out
    assert "trained 2 steps" in out and "meV/atom" in out and "meV/Å" in out


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "1"], "--data: required"),
    (["--data", "{store}", "--model-option", "hidden=3"], "painn has no option(s) ['hidden']"),
    (["--data", "{store}", "--stages", "b3lyp"], "unknown stage(s) ['b3lyp']"),
    (["--data", "{store}", "--stages", "dft"], "no training snapshots (stages ['dft'])"),
    (["--data", "{store}", "--split-fractions", "0.5", "0.5", "0.5"], "must sum to 1"),
    (["--data", "{store}", "--batch-size", "0"], "batch_size: must be a positive integer"),
    (["--resume", "--lr", "0.1"], "--resume: continues with the run's saved config"),
    (["--resume"], "last.pt: no such checkpoint file"),
])
def test_errors_name_the_culprit(xtb_store, tmp_path, capsys, argv, message):
    argv = [a.replace("{store}", str(xtb_store)) for a in argv]
    assert main(["train", "-o", str(tmp_path / "run"), *argv]) == 1
    assert message in capsys.readouterr().err


def test_an_existing_run_is_not_overwritten(cli_run, xtb_store, capsys):
    run_dir = cli_run[0]
    assert main(["train", "--data", str(xtb_store), "-o", str(run_dir)]) == 1
    assert "already holds a run" in capsys.readouterr().err
