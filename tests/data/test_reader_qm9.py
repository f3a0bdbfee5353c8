"""QM9 reader: torch_geometric's raw files, written for real molecules embedded by RDKit."""

from __future__ import annotations

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.data.readers import detect_format, qm9
from force2geo.errors import InputError

HARTREE_EV = 27.211386245988
HEADER = ("mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,cv,"
          "u0_atom,u298_atom,h298_atom,g298_atom\n")
# gdb_1 .. gdb_5 start QM9 (CH4, NH3, H2O, C2H2, HCN); gdb_6 is glycine as QM9 stores it:
# a zwitterion with no charges written, which RDKit cannot sanitize.
SMILES = ["C", "N", "O", "C#C", "C#N", "[NH3+]CC(=O)[O-]"]
# gdb_1 (methane) as released: homo, lumo, gap, zpve, u0, u298, h298, g298 in Hartree
METHANE = (-0.3877, 0.1171, 0.5048, 0.044749, -40.47893, -40.476062, -40.475117, -40.498597)


def molblock(smiles: str, name: str, broken: bool = False) -> str:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=3) == 0
    mol.SetProp("_Name", name)
    lines = [ln for ln in Chem.MolToMolBlock(mol).splitlines() if not ln.startswith("M  CHG")]
    block = "\n".join(lines) + "\n"
    return block.replace(" C   0", " Xx  0", 1) if broken else block


def row(i: int, name: str | None = None, u0: str | None = None) -> str:
    homo, lumo, gap, zpve, u0_, u298, h298, g298 = METHANE
    shift = 0.01 * i
    values = [157.7, 157.7, 157.7, 0.0, 13.21, homo - shift, lumo, gap + shift, 35.36, zpve,
              u0_ - i if u0 is None else u0, u298 - i, h298 - i, g298 - i, 6.469,
              -395.9995, -398.6430, -401.0145, -372.4718]
    return ",".join([name or f"gdb_{i + 1}", *map(str, values)]) + "\n"


UNCHARACTERIZED = """

  List of molecules among the 133885 GDB9 molecules for which the Corina generated
  Cartesian coordinates and the B3LYP/6-31G(2df,p) equilibrium geometry lead to
  different SMILES and InChI strings when parsed through the program Openbabel.

=================================================================================
#   Index      GDB17 SMILES       SMILES for B3LYP XYZ     SMILES for Corina XYZ     D_IJ
=================================================================================
        3                 O                        O                       [OH2]    1.234
=================================================================================
"""


def write_raw(folder, smiles=SMILES, rows=None, broken=None):
    folder.mkdir(exist_ok=True)
    (folder / "gdb9.sdf").write_text("".join(
        molblock(s, f"gdb_{i + 1}", i == broken) + "$$$$\n" for i, s in enumerate(smiles)))
    body = rows if rows is not None else [row(i) for i in range(len(smiles))]
    (folder / "gdb9.sdf.csv").write_text(HEADER + "".join(body))
    (folder / "uncharacterized.txt").write_text(UNCHARACTERIZED)
    return folder


@pytest.fixture
def raw(tmp_path):
    return write_raw(tmp_path / "raw")


def test_units_names_and_skipped_molecules(raw):
    trajectories = list(qm9.read(raw))
    assert [t.name for t in trajectories] == ["gdb_1", "gdb_2", "gdb_4", "gdb_5", "gdb_6"]
    methane = trajectories[0]
    homo, lumo, gap, zpve, u0, u298, h298, g298 = METHANE
    assert methane.energy[0] == pytest.approx(u0 * HARTREE_EV, rel=1e-12)
    assert methane.energy[0] == pytest.approx(-1101.4877, abs=1e-3)  # eV
    assert methane.properties == pytest.approx({
        "homo": homo * HARTREE_EV, "lumo": lumo * HARTREE_EV, "gap": gap * HARTREE_EV,
        "zpve": zpve * HARTREE_EV, "u0": u0 * HARTREE_EV, "u298": u298 * HARTREE_EV,
        "h298": h298 * HARTREE_EV, "g298": g298 * HARTREE_EV}, rel=1e-12)
    assert methane.properties["gap"] == pytest.approx(13.7363, abs=1e-4)
    assert methane.stages == ["dft"] and np.isnan(methane.forces).all()
    assert methane.atomic_numbers.tolist() == [6, 1, 1, 1, 1]
    assert methane.smiles == "C" and methane.inchikey == Chem.MolToInchiKey(Chem.MolFromSmiles("C"))
    mol = Chem.MolFromMolBlock(molblock("C", "gdb_1"), removeHs=False)
    np.testing.assert_allclose(methane.positions[0], mol.GetConformer().GetPositions(), atol=1e-4)
    # row i pairs with molecule i: gdb_5 (HCN) carries row 4's shifted values
    hcn = trajectories[3]
    assert hcn.atomic_numbers.tolist() == [6, 7, 1]
    assert hcn.energy[0] == pytest.approx((u0 - 4) * HARTREE_EV)
    glycine = trajectories[4]  # zwitterion without charges: no identifiers, still read
    assert glycine.smiles == "" and glycine.inchikey == "" and glycine.n_atoms == 10


def test_uncharacterized_format_and_option(raw):
    assert qm9.uncharacterized_indices(raw).tolist() == [3]
    assert qm9.uncharacterized_indices(raw / "uncharacterized.txt").tolist() == [3]
    names = [t.name for t in qm9.read(raw, skip_uncharacterized=False)]
    assert names == [f"gdb_{i}" for i in range(1, 7)]
    (raw / "uncharacterized.txt").write_text("header only\n=====\n")
    with pytest.raises(InputError, match="lists no molecule indices"):
        qm9.read(raw)
    (raw / "uncharacterized.txt").unlink()
    with pytest.raises(InputError, match="uncharacterized.txt: no such file"):
        qm9.read(raw)
    assert len(list(qm9.read(raw, skip_uncharacterized=False, limit=2))) == 2


def test_detect(raw):
    assert qm9.detect(raw) and qm9.detect(raw / "gdb9.sdf")
    assert not qm9.detect(raw / "gdb9.sdf.csv")
    assert detect_format(raw) == "qm9"


def test_record_errors_name_file_and_record(tmp_path):
    rows = [row(0), row(1, name="gdb_77"), row(2), row(3, u0="nan"), row(4)]
    folder = write_raw(tmp_path / "bad", rows=rows, broken=4)
    errors = []
    got = list(qm9.read(folder, on_error=errors.append))
    assert [t.name for t in got] == ["gdb_1"]
    records = {e.record: e for e in errors}
    assert set(records) == {"index 1 (gdb_77)", "index 3 (gdb_4)", "index 4 (gdb_5)", "index 5"}
    assert "but the SDF molecule is 'gdb_2'" in records["index 1 (gdb_77)"].reason
    assert records["index 1 (gdb_77)"].path == str(folder / "gdb9.sdf.csv")
    assert "non-finite energy" in records["index 3 (gdb_4)"].reason
    assert records["index 3 (gdb_4)"].path == str(folder / "gdb9.sdf")
    assert "RDKit cannot parse" in records["index 4 (gdb_5)"].reason  # unknown element
    assert "no property row" in records["index 5"].reason
    with pytest.raises(InputError) as err:
        list(qm9.read(folder))
    assert str(err.value).startswith(f"{folder / 'gdb9.sdf.csv'}: record index 1 (gdb_77)")


def test_whole_input_errors(tmp_path, raw):
    with pytest.raises(InputError, match="no such file or folder"):
        qm9.read(tmp_path / "absent")
    (raw / "gdb9.sdf.csv").write_text("mol_id,A,B\n")
    with pytest.raises(InputError, match="missing column"):
        qm9.read(raw)
    (raw / "gdb9.sdf.csv").write_text("")
    with pytest.raises(InputError, match="gdb9.sdf.csv: empty file"):
        qm9.read(raw)
    (raw / "gdb9.sdf.csv").unlink()
    with pytest.raises(InputError, match="gdb9.sdf.csv: no such file"):
        qm9.read(raw)
    (raw / "gdb9.sdf").write_text("")
    with pytest.raises(InputError, match="gdb9.sdf: empty file"):
        qm9.read(raw)
