"""The commands without --model: they use the shipped model (a tiny exported one in a
weights folder standing in for the package's), flag an ensemble's spread per molecule, and
fail clearly when nothing is shipped."""

import json

import ase.io
import pytest
import torch
from shipped import ship

from force2geo.cli.main import main
from force2geo.evaluate.report import read_rows
from force2geo.models import Batch, energy_and_forces
from force2geo.pretrained import DEFAULT, Ensemble, load_pretrained
from force2geo.pretrained.__main__ import main as pretrained_main

SMILES = "CCO ethanol\nC=O formaldehyde\nCN methylamine\n"


def relax(tmp_path, *extra):
    (tmp_path / "in.smi").write_text(SMILES)
    out = tmp_path / "out.xyz"
    code = main(["relax", str(tmp_path / "in.smi"), "-o", str(out), "--device", "cpu",
                 "--no-progress", "--steps", "8", "--dtype", "float64", *extra])
    return code, out


def test_relax_uses_the_shipped_model(weights, ema_run, tmp_path):
    ship(weights, DEFAULT, [ema_run])
    code, out = relax(tmp_path)
    assert code == 0
    model = load_pretrained(dtype=torch.float64)
    frames = ase.io.read(out, index=":")
    assert [a.info["name"] for a in frames] == ["ethanol", "formaldehyde", "methylamine"]
    for atoms in frames:
        batch = Batch.from_arrays([atoms.numbers], [atoms.positions], dtype=torch.float64)
        energy, _ = energy_and_forces(model, batch)
        assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), abs=1e-6)
        assert "energy_std" not in atoms.info  # a single model has no spread
    record = json.loads((tmp_path / "out.xyz.json").read_text())
    assert record["model"] is None
    assert record["model_files"][0]["path"].endswith(f"{DEFAULT}.pt")


def test_relax_with_an_ensemble_flags_each_molecule(weights, ema_run, plain_run, tmp_path):
    ship(weights, "tiny-ensemble", [ema_run, plain_run])
    code, out = relax(tmp_path, "--model", "tiny-ensemble")
    assert code == 0
    ensemble = load_pretrained("tiny-ensemble", dtype=torch.float64)
    assert isinstance(ensemble, Ensemble)
    for atoms in ase.io.read(out, index=":"):
        batch = Batch.from_arrays([atoms.numbers], [atoms.positions], dtype=torch.float64)
        prediction = ensemble.predict(batch)
        assert atoms.get_potential_energy() == pytest.approx(float(prediction.energy[0]),
                                                             abs=1e-6)
        assert atoms.info["energy_std"] == pytest.approx(float(prediction.energy_std[0]),
                                                         rel=1e-6)
        assert atoms.info["forces_std"] == pytest.approx(float(prediction.forces_std[0]),
                                                         rel=1e-6)
        assert atoms.info["energy_std"] > 0 and atoms.info["forces_std"] > 0


def test_commands_fail_clearly_without_a_shipped_model(weights, store_path, tmp_path, capsys):
    code, out = relax(tmp_path)
    assert code == 1 and not out.exists()
    error = capsys.readouterr().err
    assert "no shipped model yet" in error and "--model" in error
    code = main(["evaluate", "relax", "--data", str(store_path), "-o", str(tmp_path / "rep"),
                 "--no-progress"])
    assert code == 1 and "no shipped model yet" in capsys.readouterr().err
    assert not (tmp_path / "rep").exists()


def test_export_command_registers_an_ensemble(weights, ema_run, plain_run, capsys):
    assert pretrained_main(["export", str(ema_run), str(plain_run), "--name", "pair",
                            "--folder", str(weights), "--level-of-theory", "GFN2-xTB"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"{weights}/pair-0.pt",
                                                      f"{weights}/pair-1.pt"]
    assert isinstance(load_pretrained("pair"), Ensemble)
    assert pretrained_main(["export", str(weights / "nowhere"), "--folder",
                            str(weights)]) == 1
    assert "no such checkpoint file or run folder" in capsys.readouterr().err


def test_exported_drive_and_calibrated_flag_reach_relax(weights, ema_run, plain_run,
                                                        store_path, tmp_path, capsys):
    """export --drive first registers the setting; calibrate reads an evaluate relax run of
    the ensemble (its forces_std per molecule) and registers the threshold with its catch
    rate; relax then writes the flag per molecule."""
    assert pretrained_main(["export", str(ema_run), str(plain_run), "--name", "pair",
                            "--folder", str(weights), "--drive", "first"]) == 0
    ensemble = load_pretrained("pair", dtype=torch.float64)
    assert ensemble.drive == "first" and ensemble.flag_forces_std is None
    report = tmp_path / "eval"
    # --steps 0: c_T = c_0, never above the start, so the residuals decide good and bad
    assert main(["evaluate", "relax", "--model", "pair", "--data", str(store_path), "--k", "8",
                 "--steps", "0", "--workers", "1", "-o", str(report), "--no-progress"]) == 0
    rows = read_rows(report)
    residuals = sorted(r["e_res_kcal"] for r in rows)
    middle = f"{(residuals[3] + residuals[4]) / 2:.6f}"
    n_bad = sum(r["diverged"] or r["e_res_kcal"] > float(middle) for r in rows)
    assert 4 <= n_bad < 8  # (E_T may exceed E_0 by float32 rounding: diverged, bad)
    assert pretrained_main(["calibrate", "--name", "pair", "--folder", str(weights),
                            "--evaluation", str(report), "--max-false-alarm", "0.5",
                            "--bad-kcal=-1e9"]) == 1  # every result is bad: no good ones
    assert "at least one good" in capsys.readouterr().err
    assert pretrained_main(["calibrate", "--name", "pair", "--folder", str(weights),
                            "--evaluation", str(report), "--max-false-alarm", "0.5",
                            "--bad-kcal", middle]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["n_good"], result["n_bad"]) == (8 - n_bad, n_bad)
    assert result["false_alarm"] <= 0.5
    entry = json.loads((weights / "registry.json").read_text())["models"]["pair"]
    assert entry["ensemble"]["drive"] == "first"
    assert entry["ensemble"]["flag_forces_std"] == result["flag_forces_std"] > 0
    assert entry["ensemble"]["calibration"]["false_alarm"] <= 0.5
    code, relaxed = relax(tmp_path, "--model", "pair")
    assert code == 0
    threshold = load_pretrained("pair").flag_forces_std
    for atoms in ase.io.read(relaxed, index=":"):
        assert atoms.info["uncertain"] == (atoms.info["forces_std"] > threshold)
