"""``predict`` refuses, per molecule and with the reason, what its potential cannot treat:
elements the potential was never trained on (S and Br for these tiny H C N O models, Xe),
overlapping atoms; the other molecules get their relaxation and property."""

import ase.io
import numpy as np
import pytest
from ase import Atoms
from predict_data import read_rows
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.models import element_names
from force2geo.predict import PredictConfig
from force2geo.predict.run import predict_file
from force2geo.qc.molecules import DEFAULT_ELEMENTS
from force2geo.relax import RelaxConfig
from force2geo.training.checkpoint import load_checkpoint


def rdkit_conformer(smiles: str, seed: int = 5):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    AllChem.EmbedMolecule(mol, randomSeed=seed)
    return ([a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer().GetPositions())


@pytest.fixture(scope="module")
def mixed_xyz(tmp_path_factory):
    z, ethanol = rdkit_conformer("CCO")
    close = ethanol.copy()
    close[5] = close[0] + [0.05, 0.0, 0.0]
    molecules = {"ethanol": (z, ethanol), "methanethiol": rdkit_conformer("CS"),
                 "xenon": ([54, 54], [[0, 0, 0], [0, 0, 4.4]]),
                 "bromomethane": rdkit_conformer("CBr"), "overlap": (z, close),
                 "water": rdkit_conformer("O")}
    path = tmp_path_factory.mktemp("elements") / "mixed.xyz"
    ase.io.write(path, [Atoms(numbers=n, positions=p, info={"name": name})
                        for name, (n, p) in molecules.items()], format="extxyz")
    return path


def test_unseen_elements_and_overlaps_fail_and_the_rest_is_predicted(
        mixed_xyz, mlip_runs, property_runs, tmp_path):
    known = load_checkpoint(mlip_runs[0] / "best.pt")["elements"]
    assert {1, 6, 8} <= set(known) and not {16, 35} & set(known)
    config = PredictConfig(relax=RelaxConfig(max_steps=30), progress=False,
                           elements=(*DEFAULT_ELEMENTS, "Br"))  # the model decides on Br
    record = predict_file(str(mixed_xyz), tmp_path / "out.csv", model=str(mlip_runs[0]),
                          property_model=str(property_runs[0]), config=config)
    rows = {row["name"]: row for row in read_rows(tmp_path / "out.csv")}
    assert list(rows) == ["ethanol", "methanethiol", "xenon", "bromomethane", "overlap",
                          "water"]
    names = element_names(known)
    assert rows["methanethiol"]["reason"] == (f"element S (Z=16) not in the model's "
                                              f"training elements {names}")
    assert rows["bromomethane"]["reason"] == (f"element Br (Z=35) not in the model's "
                                              f"training elements {names}")
    assert "Xe not supported" in rows["xenon"]["reason"]  # refused as input already
    assert rows["overlap"]["reason"].startswith("overlapping atoms: 1 (C) and 6 (H)")
    for name in ("methanethiol", "xenon", "bromomethane", "overlap"):
        row = rows[name]
        assert row["status"] == "failed", name
        assert row["energy"] == row["fmax"] == row["gap_eV"] == row["n_steps"] == ""
    for name in ("ethanol", "water"):
        assert rows[name]["status"] in ("converged", "step_limit")
        assert np.isfinite(float(rows[name]["energy"])) and rows[name]["gap_eV"]
    assert record["status_counts"]["failed"] == 4
    frames = ase.io.read(tmp_path / "out.xyz", index=":")
    assert [a.info["name"] for a in frames] == ["ethanol", "water"]
