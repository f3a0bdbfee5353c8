"""Molecule3D reader: a small release in the real layout, molecules embedded by RDKit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.data.readers import detect_format
from force2geo.data.readers import molecule3d as m3d
from force2geo.errors import InputError

SMILES = ["C", "CO", "CCO", "CC(=O)[O-]", "c1ccccc1", "CCN", "CC=O", "OCCO",
          "CC(C)O", "C#N", "NC=O", "CCCl"]
HEADER = "cid,dipole x,dipole y,dipole z,homo,lumo,homolumogap,scf energy\n"
FILES = ((0, 2), (2, 10), (10, 12))  # "10_to_12" sorts before "2_to_10" as text
BROKEN = 5  # this molecule's element is unknown to RDKit


def molblock(smiles: str, cid: int, broken: bool = False) -> str:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=11) == 0
    mol.SetProp("_Name", f"{cid:09d}")
    block = Chem.MolToMolBlock(mol)
    return block.replace(" C   0", " Xx  0", 1) if broken else block


def cid_of(i: int) -> int:
    return 1000 + 7 * i


def props(i: int) -> tuple[float, float, float, float]:
    homo, lumo = -6.0 - 0.1 * i, -1.0 + 0.05 * i
    return homo, lumo, lumo - homo, -4000.0 - 100.0 * i  # eV, as released


def write_release(folder, rows=None, files=FILES):
    folder.mkdir(exist_ok=True)
    for start, end in files:
        text = "".join(molblock(SMILES[i], cid_of(i), i == BROKEN) + "$$$$\n"
                       for i in range(start, end))
        (folder / f"combined_mols_{start}_to_{end}.sdf").write_text(text)
    lines = [HEADER]
    for i in range(len(SMILES) if rows is None else rows):
        homo, lumo, gap, scf = props(i)
        cid = f"{cid_of(i):09d}" if i % 2 else str(cid_of(i))  # both spellings occur
        lines.append(f"{cid},0.1,0.2,0.3,{homo},{lumo},{gap},{scf}\n")
    (folder / "properties.csv").write_text("".join(lines))
    (folder / "random_split_inds.json").write_text(json.dumps(
        {"train": [0, 2, 4, 6, 8, 10], "valid": [1, 3, 5], "test": [7, 9, 11]}))
    (folder / "scaffold_split_inds.json").write_text(json.dumps(
        {"train": [4, 0], "valid": [1], "test": [2]}))
    return folder


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "raw")


def test_values_identifiers_and_pairing(release):
    errors = []
    trajectories = list(m3d.read(release, on_error=errors.append))
    assert len(trajectories) == len(SMILES) - 1
    assert [e.record for e in errors] == [f"index {BROKEN} (CID {cid_of(BROKEN)})"]
    assert str(release / "combined_mols_2_to_10.sdf") in str(errors[0])
    by_cid = {t.cid: t for t in trajectories}
    for i, smiles in enumerate(SMILES):
        if i == BROKEN:
            continue
        t = by_cid[cid_of(i)]
        reference = Chem.MolFromSmiles(smiles)
        assert t.smiles == Chem.MolToSmiles(reference)
        assert t.inchikey == Chem.MolToInchiKey(reference)
        homo, lumo, gap, scf = props(i)
        assert t.properties == pytest.approx({"homo": homo, "lumo": lumo, "gap": gap,
                                              "scf_energy": scf}, rel=1e-12)
        assert t.stages == ["dft"] and t.n_snapshots == 1
        assert np.isnan(t.energy).all() and np.isnan(t.forces).all()
    assert by_cid[cid_of(3)].charge == -1
    # positions: exactly the SDF coordinates (Å), atoms with explicit H
    mol = Chem.MolFromMolBlock(molblock("CCO", cid_of(2)), removeHs=False)
    t = by_cid[cid_of(2)]
    assert t.atomic_numbers.tolist() == [a.GetAtomicNum() for a in mol.GetAtoms()]
    np.testing.assert_allclose(t.positions[0], mol.GetConformer().GetPositions(), atol=1e-4)


def test_single_file_indices_limit_and_detect(release):
    last = release / "combined_mols_10_to_12.sdf"
    assert [t.cid for t in m3d.read(last)] == [cid_of(10), cid_of(11)]
    first = release / "combined_mols_0_to_2.sdf"  # later rows belong to the other files
    assert [t.cid for t in m3d.read(first)] == [cid_of(0), cid_of(1)]
    assert [t.cid for t in m3d.read(release, indices=[11, 0, 6])] == \
        [cid_of(0), cid_of(6), cid_of(11)]
    assert [t.cid for t in m3d.read(release, limit=3)] == [cid_of(0), cid_of(1), cid_of(2)]
    assert m3d.detect(release) and m3d.detect(last)
    assert not m3d.detect(release / "properties.csv")
    assert detect_format(release) == "molecule3d"


def test_split_indices(release):
    random = m3d.split_indices(release)
    assert random["valid"].dtype == np.int64
    assert random["valid"].tolist() == [1, 3, 5]
    assert m3d.split_indices(release / "combined_mols_0_to_2.sdf", "scaffold")["train"] \
        .tolist() == [4, 0]
    # the split's indices address molecules of the concatenated files
    test = [t.cid for t in m3d.read(release, indices=random["test"])]
    assert test == [cid_of(i) for i in (7, 9, 11)]
    with pytest.raises(ValueError, match="unknown Molecule3D split"):
        m3d.split_indices(release, "temporal")
    (release / "scaffold_split_inds.json").write_text(json.dumps({"train": [1]}))
    with pytest.raises(InputError, match="no 'valid' list"):
        m3d.split_indices(release, "scaffold")
    (release / "random_split_inds.json").unlink()
    with pytest.raises(InputError, match="random_split_inds.json: no such file"):
        m3d.split_indices(release)


def test_row_errors_name_file_and_record(tmp_path):
    short = write_release(tmp_path / "short", rows=10)
    errors = []
    got = list(m3d.read(short, on_error=errors.append))
    assert [t.cid for t in got][-1] == cid_of(9)
    assert [(e.record, e.reason) for e in errors][-2:] == [
        ("index 10", "no properties row for this molecule"),
        ("index 11", "no properties row for this molecule")]
    assert errors[-1].path == str(short / "properties.csv")

    extra = write_release(tmp_path / "extra")
    with open(extra / "properties.csv", "a") as handle:
        handle.write("99,0,0,0,-5,-1,4,-100\n")
    errors = []
    assert len(list(m3d.read(extra, on_error=errors.append))) == len(SMILES) - 1
    assert "row 12 has no molecule" in errors[-1].reason

    bad = write_release(tmp_path / "bad")
    text = (bad / "properties.csv").read_text().replace("-6.3,", "abc,", 1)
    (bad / "properties.csv").write_text(text)
    with pytest.raises(InputError) as err:
        list(m3d.read(bad))
    assert str(err.value).startswith(f"{bad / 'properties.csv'}: record index 3: unreadable")


def test_whole_input_errors(tmp_path, release):
    with pytest.raises(InputError, match="no such file or folder"):
        list(m3d.read(tmp_path / "absent"))
    (release / "properties.csv").write_text("")
    with pytest.raises(InputError, match="properties.csv: empty file"):
        m3d.read(release)
    (release / "properties.csv").write_text("cid,homo\n1,2\n")
    with pytest.raises(InputError, match="missing column"):
        m3d.read(release)
    (release / "properties.csv").unlink()
    with pytest.raises(InputError, match="properties.csv: no such file"):
        m3d.read(release)

    gap = write_release(tmp_path / "gap", files=((0, 2), (3, 10)))
    with pytest.raises(InputError, match="mispaired") as err:
        list(m3d.read(gap))
    assert "combined_mols_3_to_10.sdf" in str(err.value)

    empty = write_release(tmp_path / "empty")
    (empty / "combined_mols_10_to_12.sdf").write_text("")
    with pytest.raises(InputError, match="combined_mols_10_to_12.sdf: empty file"):
        m3d.read(empty)
    nothing = tmp_path / "nothing"
    nothing.mkdir()
    (nothing / "properties.csv").write_text(HEADER)
    with pytest.raises(InputError, match="no combined_mols"):
        m3d.read(nothing)
