"""``force2geo predict`` end to end with the shipped (default) models: a tiny potential and
a tiny gap model, exported and registered in a FORCE2GEO_WEIGHTS folder."""

from __future__ import annotations

import json

import ase.io
import numpy as np
import pytest
import torch
from predict_data import NAMES, SMI, number, read_rows, ship

from force2geo.cli.main import main
from force2geo.finetune.checkpoint import load_property_model as load_checkpoint_model
from force2geo.finetune.dataset import PropertyBatch
from force2geo.models import Batch, energy_and_forces
from force2geo.pretrained import DEFAULT, DEFAULT_PROPERTY
from force2geo.training.checkpoint import load_potential

N_ATOMS = {"water": 3, "ethanol": 9, "formaldehyde": 4}  # with hydrogens


@pytest.fixture
def shipped(weights, mlip_runs, property_runs):
    """Both default models registered; returns the weights folder."""
    ship(weights, DEFAULT, mlip_runs[:1], "mlip")
    ship(weights, DEFAULT_PROPERTY, property_runs[:1], "property")
    return weights


@pytest.fixture
def smi(tmp_path):
    path = tmp_path / "molecules.smi"
    path.write_text(SMI)
    return path


def _predict(smi, out, *options) -> int:
    return main(["predict", str(smi), "-o", str(out), "--steps", "100", "--no-progress",
                 "--threads", "1", *options])


def test_rows_in_input_order_with_failures_and_numbers(shipped, smi, tmp_path, capsys):
    out = tmp_path / "run" / "pred.csv"
    assert _predict(smi, out) == 0
    assert "5 molecules" in capsys.readouterr().out
    rows = read_rows(out)
    assert [r["name"] for r in rows] == NAMES
    assert [r["index"] for r in rows] == [str(k) for k in range(len(NAMES))]
    by_name = {r["name"]: r for r in rows}
    broken, bromo = by_name["broken"], by_name["bromomethane"]
    assert broken["status"] == "failed" and "unparsable SMILES" in broken["reason"]
    assert bromo["status"] == "failed" and "Br not supported" in bromo["reason"]
    for row in (broken, bromo):
        assert all(row[c] == "" for c in ("n_atoms", "n_steps", "fmax", "energy", "gap_eV"))
    for name, n in N_ATOMS.items():
        row = by_name[name]
        assert row["status"] in ("converged", "step_limit") and row["start"] == "mmff"
        assert int(row["n_atoms"]) == n and row["smiles"]
        assert number(row["gap_eV"]) is not None and number(row["energy"]) < 0
        assert row["energy_std"] == row["forces_std"] == row["gap_eV_std"] == ""  # no ensembles
        assert row["uncertain"] == ""
        if row["status"] == "converged":
            assert number(row["fmax"]) < 0.05


def test_predictions_equal_the_models_on_the_written_geometries(shipped, smi, tmp_path):
    """The CSV's gap is the property model's (loaded independently from the exported file)
    on the geometry in OUT.xyz; its energy and fmax are the potential's there."""
    out = tmp_path / "pred.csv"
    assert _predict(smi, out) == 0
    rows = read_rows(out)
    frames = ase.io.read(tmp_path / "pred.xyz", index=":")
    relaxed = [r for r in rows if r["status"] in ("converged", "step_limit")]
    assert [int(a.info["index"]) for a in frames] == [int(r["index"]) for r in relaxed]
    gap_model = load_checkpoint_model(shipped / f"{DEFAULT_PROPERTY}.pt")
    potential = load_potential(shipped / f"{DEFAULT}.pt", dtype=torch.float64)
    for atoms, row in zip(frames, relaxed, strict=True):
        assert atoms.info["name"] == row["name"]
        batch = Batch.from_arrays([atoms.numbers], [atoms.positions], dtype=torch.float32)
        with torch.no_grad():
            gap = float(gap_model(PropertyBatch(batch, None, None, None)))
        assert gap == pytest.approx(number(row["gap_eV"]), abs=2e-5)
        assert atoms.info["gap_eV"] == pytest.approx(gap, abs=2e-5)
        energy, forces = energy_and_forces(potential, batch.to(dtype=torch.float64))
        assert float(energy) == pytest.approx(number(row["energy"]), abs=2e-3)
        fmax = float(forces.norm(dim=1).max())
        assert fmax == pytest.approx(number(row["fmax"]), abs=2e-3)


def test_run_record_and_report(shipped, smi, tmp_path):
    out = tmp_path / "pred.csv"
    assert _predict(smi, out, "--report", str(tmp_path / "report")) == 0
    record = json.loads((tmp_path / "pred.json").read_text())
    registry = json.loads((shipped / "registry.json").read_text())["models"]
    assert record["model"]["files"][0]["sha256"] == registry[DEFAULT]["files"][0]["sha256"]
    prop = record["property"]
    assert prop["files"][0]["sha256"] == registry[DEFAULT_PROPERTY]["files"][0]["sha256"]
    assert registry[DEFAULT_PROPERTY]["kind"] == "property"
    assert prop["target"] == "gap" and record["columns"]["gap_eV"] == "eV"
    rows = read_rows(out)
    statuses = [r["status"] for r in rows]
    assert record["status_counts"] == {s: statuses.count(s) for s in set(statuses)}
    assert record["config"]["relax"]["max_steps"] == 100
    assert set(record["timings"]) == {"inputs_s", "relax_s", "property_s", "total_s"}
    gaps = [number(r["gap_eV"]) for r in rows if r["gap_eV"]]
    assert record["property_summary"]["mean"] == pytest.approx(np.mean(gaps), abs=1e-5)
    text = (tmp_path / "report" / "pred.report.md").read_text()
    assert f"| failed | {statuses.count('failed')} |" in text
    assert "unparsable SMILES" in text and "pred.gap_eV.png" in text
    assert (tmp_path / "report" / "pred.gap_eV.png").stat().st_size > 1000


def test_sdf_geometries_and_refusing_to_overwrite(shipped, smi, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert _predict(smi, out, "--geometries", str(tmp_path / "relaxed.sdf")) == 0
    from rdkit import Chem

    mols = [m for m in Chem.SDMolSupplier(str(tmp_path / "relaxed.sdf"), removeHs=False)]
    relaxed = [r for r in read_rows(out) if r["gap_eV"]]
    assert [m.GetProp("_Name") for m in mols] == [r["name"] for r in relaxed]
    assert [m.GetNumAtoms() for m in mols] == [int(r["n_atoms"]) for r in relaxed]
    assert _predict(smi, out) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err


def test_default_models_fail_clearly_when_not_shipped(weights, mlip_runs, smi, tmp_path,
                                                      capsys):
    out = tmp_path / "pred.csv"
    assert _predict(smi, out) == 1
    assert "no shipped model yet" in capsys.readouterr().err
    ship(weights, DEFAULT, mlip_runs[:1], "mlip")
    assert _predict(smi, out) == 1
    error = capsys.readouterr().err
    assert "no shipped property model yet" in error and "--property-model" in error
    assert _predict(smi, out, "--property-model", str(mlip_runs[0])) == 1
    assert "not a force2geo-property-checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_named_models_of_the_wrong_kind_are_refused(shipped, smi, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    assert _predict(smi, out, "--model", DEFAULT_PROPERTY) == 1
    assert "is a shipped property model" in capsys.readouterr().err
    assert _predict(smi, out, "--property-model", DEFAULT) == 1
    assert "is a shipped potential" in capsys.readouterr().err


def test_repeated_models_make_ensembles(weights, mlip_runs, property_runs, smi, tmp_path):
    out = tmp_path / "pred.csv"
    models = [a for run in mlip_runs for a in ("--model", str(run))]
    heads = [a for run in property_runs for a in ("--property-model", str(run))]
    assert _predict(smi, out, *models, *heads) == 0
    relaxed = [r for r in read_rows(out) if r["gap_eV"]]
    assert relaxed
    for row in relaxed:
        assert number(row["energy_std"]) > 0 and number(row["forces_std"]) > 0
        assert number(row["gap_eV_std"]) > 0
        assert row["uncertain"] == ""  # an ensemble of --model files has no calibrated flag
    record = json.loads((tmp_path / "pred.json").read_text())
    assert len(record["model"]["files"]) == len(record["property"]["files"]) == 2
    assert record["model"]["spec"] == [str(run) for run in mlip_runs]
