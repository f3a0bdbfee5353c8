"""``force2geo relax`` end to end: real checkpoint, real files, order and keys kept, resume.

The checkpoint (conftest) is a tiny PaiNN trained by ``force2geo.training.fit`` for a few
steps on MMFF94 energies and forces (RDKit) of displaced conformers: a real model file with
a real (if crude) potential energy surface.
"""

import json
import os
import signal
import subprocess
import sys
import time

import ase.io
import numpy as np
import pytest
import torch
from rdkit import Chem
from relax_potentials import TRAIN_SMILES, conformer

from force2geo.cli.main import main
from force2geo.models import Batch, energy_and_forces
from force2geo.qc.protocol import embed, prepare

SMILES = {"ethanol": "CCO", "phenol": "c1ccccc1O", "paracetamol": "CC(=O)Nc1ccc(O)cc1",
          "acetic-acid": "CC(=O)O"}
RESULT_KEYS = {"converged", "n_steps", "fmax", "status"}


@pytest.fixture(scope="module")
def model(checkpoint):
    from force2geo.training.checkpoint import load_potential

    return load_potential(checkpoint)


def relax_cli(*args):
    return main(["relax", *map(str, args), "--device", "cpu", "--no-progress"])


def smi_file(path, names):
    path.write_text("".join(f"{SMILES[n]} {n}\n" for n in names))
    return path


def check_energies(model, frames):
    """Energy (eV) and fmax (eV/Å) in the file are the model's at the written geometry."""
    for atoms in frames:
        batch = Batch.from_arrays([atoms.numbers], [atoms.positions], dtype=torch.float64)
        energy, forces = energy_and_forces(model, batch)
        assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), abs=1e-5)
        fmax = float(torch.linalg.vector_norm(forces, dim=-1).max())
        assert atoms.info["fmax"] == pytest.approx(fmax, abs=1e-4)


def test_smiles_to_extxyz(tmp_path, checkpoint, model, capsys):
    names = ["paracetamol", "ethanol", "phenol"]
    out = tmp_path / "out.xyz"
    assert relax_cli(smi_file(tmp_path / "in.smi", names), "-o", out, "--model", checkpoint,
                     "--steps", 15, "--trajectory", tmp_path / "traj.xyz") == 0
    frames = ase.io.read(out, index=":")
    assert [a.info["name"] for a in frames] == names
    assert [len(a) for a in frames] == [20, 9, 13]  # hydrogens added
    for atoms in frames:
        assert RESULT_KEYS <= set(atoms.info) and atoms.info["smiles"]
        assert atoms.info["n_steps"] <= 15
        assert atoms.info["converged"] == (atoms.info["status"] == "converged")
    check_energies(model, frames)
    steps = ase.io.read(tmp_path / "traj.xyz", index=":")
    assert len(steps) == sum(a.info["n_steps"] + 1 for a in frames)
    np.testing.assert_allclose(steps[-1].positions, frames[-1].positions, atol=1e-7)
    record = json.loads((tmp_path / "out.xyz.json").read_text())
    assert record["config"]["max_steps"] == 15 and record["units"]["energy"] == "eV"
    assert "3 molecules" in capsys.readouterr().out
    assert not (tmp_path / "out.xyz.partial").exists()


def test_sdf_round_trip_keeps_properties(tmp_path, checkpoint, model):
    path = tmp_path / "in.sdf"
    writer = Chem.SDWriter(str(path))
    for k, name in enumerate(["phenol", "acetic-acid"]):
        mol = prepare(SMILES[name])
        embed(mol, k)
        mol.SetProp("_Name", name)
        mol.SetProp("vendor_id", f"V{k:03d}")
        mol.SetProp("energy", "-123.4")  # clashes with a result key: kept as input_energy
        writer.write(mol)
    writer.close()
    out = tmp_path / "out.sdf"
    assert relax_cli(path, "-o", out, "--model", checkpoint, "--steps", 5,
                     "--optimizer", "fire") == 0
    records = list(Chem.SDMolSupplier(str(out), removeHs=False))
    assert [m.GetProp("_Name") for m in records] == ["phenol", "acetic-acid"]
    for k, mol in enumerate(records):
        props = mol.GetPropsAsDict()
        assert props["vendor_id"] == f"V{k:03d}" and props["input_energy"] == -123.4
        assert RESULT_KEYS | {"energy"} <= set(props)
        assert mol.GetNumAtoms() == Chem.AddHs(Chem.MolFromSmiles(
            SMILES[mol.GetProp("_Name")])).GetNumAtoms()
        positions = mol.GetConformer().GetPositions()
        batch = Batch.from_arrays([[a.GetAtomicNum() for a in mol.GetAtoms()]], [positions],
                                  dtype=torch.float64)
        assert props["energy"] == pytest.approx(float(energy_and_forces(model, batch)[0][0]),
                                                abs=1e-3)  # SDF keeps 4 decimals of Å


def test_extxyz_round_trip_keeps_info_keys(tmp_path, checkpoint, model):
    path = tmp_path / "in.xyz"
    frames = []
    for k, name in enumerate(["acetic-acid", "ethanol", "phenol"]):
        z, positions = conformer(SMILES[name], seed=k)
        atoms = ase.Atoms(numbers=z, positions=positions)
        atoms.info.update(mol_id=name, batch_no=k, source="unit test")
        frames.append(atoms)
    ase.io.write(path, frames, format="extxyz")
    out = tmp_path / "out.xyz"
    assert relax_cli(path, "-o", out, "--model", checkpoint, "--steps", 5,
                     "--optimizer", "lbfgs", "--batch-atoms", 20) == 0
    relaxed = ase.io.read(out, index=":")
    assert [a.info["mol_id"] for a in relaxed] == ["acetic-acid", "ethanol", "phenol"]
    assert [a.info["batch_no"] for a in relaxed] == [0, 1, 2]
    assert all(a.info["source"] == "unit test" and RESULT_KEYS <= set(a.info)
               for a in relaxed)
    for before, after in zip(frames, relaxed, strict=True):
        assert list(before.numbers) == list(after.numbers)
    check_energies(model, relaxed)


def test_existing_output_and_foreign_partial_are_refused(tmp_path, checkpoint, capsys):
    smi = smi_file(tmp_path / "in.smi", ["ethanol"])
    out = tmp_path / "out.xyz"
    out.write_text("precious\n")
    assert relax_cli(smi, "-o", out, "--model", checkpoint, "--steps", 2) == 1
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == "precious\n"
    assert relax_cli(smi, "-o", out, "--model", checkpoint, "--steps", 2,
                     "--overwrite") == 0
    (tmp_path / "out.xyz.partial").write_text("")
    (tmp_path / "out.xyz.partial.json").write_text(json.dumps(
        {"done": 0, "bytes": {"output": 0}, "signature": {"other": "run"}}))
    assert relax_cli(smi, "-o", out, "--model", checkpoint, "--steps", 2) == 1
    assert "interrupted run with other input" in capsys.readouterr().err


def test_resumes_after_kill(tmp_path, checkpoint, capsys):
    """SIGKILL a real run after it has written some molecules; the rerun continues after
    the last complete one and the result equals an uninterrupted run's."""
    names = ["ethanol", "phenol", "acetic-acid"] * 2
    smi = smi_file(tmp_path / "in.smi", names)
    args = ["-o", tmp_path / "out.xyz", "--model", checkpoint, "--steps", 20,
            "--batch-atoms", 1]  # one molecule at a time: results arrive one by one
    index = tmp_path / "out.xyz.partial.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "force2geo.cli.main", "relax", str(smi),
         *map(str, args), "--device", "cpu", "--no-progress"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            if index.exists() and json.loads(index.read_text())["done"] >= 2:
                break
            time.sleep(0.01)
        assert process.poll() is None, process.stderr.read().decode()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = json.loads(index.read_text())["done"]
    assert 2 <= done < len(names)
    with open(tmp_path / "out.xyz.partial", "a") as handle:
        handle.write("20\nhalf-written fr")  # what a kill during a write leaves
    assert relax_cli(smi, *args) == 0
    assert f"({done} from an earlier run)" in capsys.readouterr().out
    resumed = ase.io.read(tmp_path / "out.xyz", index=":")
    assert relax_cli(smi, *args[:1], tmp_path / "clean.xyz", *args[2:]) == 0
    clean = ase.io.read(tmp_path / "clean.xyz", index=":")
    assert [a.info["name"] for a in resumed] == names[:3] + [f"{n}-2" for n in names[3:]]
    for a, b in zip(resumed, clean, strict=True):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
        assert a.info["n_steps"] == b.info["n_steps"]


def test_store_input_starts_from_chosen_snapshot(tmp_path, checkpoint):
    """A trajectory store as INPUT: one molecule per trajectory, from its first snapshot
    (or its last with --frame last), with its name and SMILES kept."""
    from force2geo.data.store import TrajectoryStore

    store = TrajectoryStore(os.path.join(os.path.dirname(os.path.dirname(checkpoint)),
                                         "store"))
    out = tmp_path / "out.xyz"
    assert relax_cli(store.path, "-o", out, "--model", checkpoint, "--steps", 0,
                     "--frame", "last") == 0
    relaxed = ase.io.read(out, index=":")
    assert [a.info["smiles"] for a in relaxed] == TRAIN_SMILES
    for j, atoms in enumerate(relaxed):  # zero steps: the geometry is the chosen snapshot
        np.testing.assert_allclose(atoms.positions, store.trajectory(j).positions[-1],
                                   atol=1e-7)
        assert atoms.info["stage"] == "mmff" and atoms.info["n_steps"] == 0


def test_smiles_elements_are_the_models_to_refuse(tmp_path, checkpoint, model):
    """SMILES input passes any element GFN2-xTB knows; the model (trained on H C N O here)
    refuses the bromide per molecule with its reason and relaxes the others."""
    smi = tmp_path / "in.smi"
    smi.write_text("CCO ethanol\nCBr bromomethane\nCO methanol\n")
    out = tmp_path / "out.xyz"
    assert relax_cli(smi, "-o", out, "--model", checkpoint, "--steps", 5) == 0
    frames = {a.info["name"]: a for a in ase.io.read(out, index=":")}
    assert frames["bromomethane"].info["status"] == "failed"
    assert "element Br (Z=35) not in the model's training elements" in \
        frames["bromomethane"].info["reason"]
    assert frames["ethanol"].info["status"] != "failed" != frames["methanol"].info["status"]
