"""Molecules a model cannot treat fail, each with its reason, and the others relax:
elements the model never saw (Xe; Br for a model trained on H C N O), non-finite
coordinates, overlapping atoms. The checkpoint (conftest) is a tiny PaiNN trained on
H C N O molecules."""

import json

import ase.io
import numpy as np
import pytest
from ase import Atoms
from rdkit import Chem
from rdkit.Chem import AllChem
from relax_potentials import conformer

from force2geo.cli.main import main
from force2geo.relax import PotentialCalculator
from force2geo.relax.screen import FAILED, failed_result, geometry_problem, screen
from force2geo.training.checkpoint import load_potential

BROMINE = "element Br (Z=35) not in the model's training elements H C N O"
XENON = "element Xe (Z=54) not in the model's training elements H C N O"


def rdkit_conformer(smiles: str, seed: int = 3):
    """An ETKDG conformer of any element (force2geo's own protocol refuses Br)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return (np.array([a.GetAtomicNum() for a in mol.GetAtoms()]),
            mol.GetConformer().GetPositions())


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_potential(checkpoint)


@pytest.fixture(scope="module")
def batch_xyz(tmp_path_factory):
    """Seven frames: ethanol, Xe2, bromomethane, ethanol with a NaN, ethanol with two atoms
    0.01 Å apart, methylamine, and H2 at its bond length."""
    z, good = conformer("CCO")
    nan, close = good.copy(), good.copy()
    nan[4, 1] = np.nan
    close[3] = close[2] + [0.01, 0.0, 0.0]
    molecules = {"ethanol": (z, good), "xenon": ([54, 54], [[0, 0, 0], [0, 0, 4.4]]),
                 "bromomethane": rdkit_conformer("CBr"), "not-a-number": (z, nan),
                 "overlap": (z, close), "methylamine": conformer("CN"),
                 "hydrogen": ([1, 1], [[0, 0, 0], [0, 0, 0.74]])}
    frames = [Atoms(numbers=numbers, positions=positions, info={"name": name})
              for name, (numbers, positions) in molecules.items()]
    path = tmp_path_factory.mktemp("screen") / "batch.xyz"
    ase.io.write(path, frames, format="extxyz")
    return path


def test_geometry_problems_name_the_atoms():
    z, positions = conformer("CCO")
    assert geometry_problem(z, positions) is None
    assert geometry_problem([1, 1], [[0, 0, 0], [0, 0, 0.74]]) is None  # H2: 1.2x radii
    bad = positions.copy()
    bad[[2, 5], 0] = [np.inf, np.nan]
    assert geometry_problem(z, bad) == "non-finite coordinates (atom 3 and 1 more)"
    close = positions.copy()
    close[7] = close[0] + [0.2, 0.0, 0.0]  # an H 0.2 Å from a C: 0.19x the radii sum
    reason = geometry_problem(z, close)
    assert reason.startswith("overlapping atoms: 1 (C) and 8 (H) are 0.200 Å apart")
    assert "0.5 times the sum of their covalent radii (1.07 Å)" in reason
    assert geometry_problem(z, positions[:3]).startswith("9 atomic numbers but positions")


def test_screen_checks_the_model_first_and_failed_results_hold_no_numbers(model):
    z, positions = rdkit_conformer("CBr")
    assert screen(z, positions, model) == BROMINE
    assert screen(z, positions) is None  # no model: the geometry alone is fine
    result = failed_result(4, z, np.where(z == 35, np.nan, 0.0)[:, None] + positions, BROMINE)
    assert result.status == FAILED and result.reason == BROMINE and result.n_steps == 0
    assert not result.converged and np.isnan([result.energy, result.fmax]).all()
    assert np.isfinite(result.positions).all()  # written readable: the reason says why


def test_relax_fails_each_bad_molecule_with_its_reason_and_relaxes_the_rest(
        batch_xyz, checkpoint, tmp_path, capsys):
    out = tmp_path / "out.xyz"
    assert main(["relax", str(batch_xyz), "-o", str(out), "--model", checkpoint, "--steps",
                 "10", "--device", "cpu", "--no-progress"]) == 0
    frames = ase.io.read(out, index=":")
    assert [a.info["name"] for a in frames] == ["ethanol", "xenon", "bromomethane",
                                                "not-a-number", "overlap", "methylamine",
                                                "hydrogen"]
    status = {a.info["name"]: a.info["status"] for a in frames}
    failed = {a.info["name"]: a.info["reason"] for a in frames if "reason" in a.info}
    assert failed == {
        "xenon": XENON, "bromomethane": BROMINE,
        "not-a-number": "non-finite coordinates (atom 5)",
        "overlap": "overlapping atoms: 3 (O) and 4 (H) are 0.010 Å apart, closer than 0.5 "
                   "times the sum of their covalent radii (0.97 Å)"}
    assert all(status[name] == FAILED for name in failed)
    for atoms in frames:
        if atoms.info["name"] in failed:  # no numbers that mean nothing
            assert not atoms.info["converged"] and atoms.info["n_steps"] == 0
            assert "energy" not in atoms.info and atoms.calc is None
            assert "fmax" not in atoms.info
        else:
            assert atoms.info["status"] in ("converged", "step_limit")
            assert np.isfinite(atoms.get_potential_energy()) and atoms.info["n_steps"] > 0
    record = json.loads((tmp_path / "out.xyz.json").read_text())
    assert record["status_counts"][FAILED] == 4 and sum(record["status_counts"].values()) == 7
    captured = capsys.readouterr()
    assert f"record 3: failed: {BROMINE}" in captured.err and "4 failed" in captured.out


def test_failed_molecules_stay_readable_in_sdf(batch_xyz, checkpoint, tmp_path):
    out = tmp_path / "out.sdf"
    assert main(["relax", str(batch_xyz), "-o", str(out), "--model", checkpoint, "--steps",
                 "2", "--device", "cpu", "--no-progress"]) == 0
    records = list(Chem.SDMolSupplier(str(out), removeHs=False, sanitize=False))
    assert all(m is not None for m in records) and len(records) == 7
    assert [m.GetProp("status") == FAILED for m in records] == [
        False, True, True, True, True, False, False]
    assert records[1].GetProp("reason") == XENON


def test_the_calculator_refuses_what_the_model_cannot_treat(model):
    z, positions = rdkit_conformer("CBr")
    atoms = Atoms(numbers=z, positions=positions)
    atoms.calc = PotentialCalculator(model)
    with pytest.raises(ValueError, match=r"PotentialCalculator: element Br \(Z=35\) not in"):
        atoms.get_potential_energy()
    z, positions = conformer("CCO")
    positions[0, 0] = np.nan
    atoms = Atoms(numbers=z, positions=positions)
    atoms.calc = PotentialCalculator(model)
    with pytest.raises(ValueError, match="non-finite coordinates"):
        atoms.get_forces()
