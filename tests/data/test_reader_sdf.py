"""SDF reader: RDKit records to trajectories, energy units, bad records reported by number."""

import gzip

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.data.readers import sdf
from force2geo.errors import InputError
from force2geo.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV


def embedded(smiles, name, seed=7, **props):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    mol.SetProp("_Name", name)
    for key, value in props.items():
        mol.SetProp(key, str(value))
    return mol


def write_sdf(path, mols):
    writer = Chem.SDWriter(str(path))
    for mol in mols:
        writer.write(mol)
    writer.close()
    return mols


def read_all(path, **options):
    errors = []
    trajectories = list(sdf.read(path, on_error=errors.append, **options))
    return trajectories, errors


def test_records_round_trip_with_identifiers_and_hartree_energy(tmp_path):
    mols = write_sdf(tmp_path / "mols.sdf", [
        embedded("CCO", "ethanol", E=-155.0341, HOMO=-0.27, gap=0.31, stage="dft", cid=702),
        embedded("CC(=O)[O-]", "acetate", E=-228.5),
    ])
    trajectories, errors = read_all(tmp_path / "mols.sdf", energy_key="E",
                                    energy_unit="hartree", property_unit="hartree")
    assert errors == [] and len(trajectories) == 2
    ethanol, acetate = trajectories
    assert ethanol.energy[0] == pytest.approx(-155.0341 * 27.211386245988, rel=1e-12)
    assert ethanol.properties["homo"] == pytest.approx(-0.27 * HARTREE_TO_EV)
    assert ethanol.properties["gap"] == pytest.approx(0.31 * HARTREE_TO_EV)
    assert ethanol.stages == ["dft"] and acetate.stages == ["input"]
    assert (ethanol.name, ethanol.smiles, ethanol.cid) == ("ethanol", "CCO", 702)
    assert ethanol.inchikey == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    assert ethanol.atomic_numbers.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]  # explicit H kept
    # the SDF text has 4 decimals
    np.testing.assert_allclose(ethanol.positions[0], mols[0].GetConformer().GetPositions(),
                               atol=1e-4)
    assert acetate.charge == -1 and acetate.smiles == "CC(=O)[O-]"
    assert np.isnan(ethanol.forces).all()


def test_energy_units_and_no_energy_key(tmp_path):
    write_sdf(tmp_path / "m.sdf", [embedded("O", "water", E=-47000.0)])
    kcal, _ = read_all(tmp_path / "m.sdf", energy_key="E", energy_unit="kcal/mol")
    assert kcal[0].energy[0] == pytest.approx(-47000.0 * 4.184 / 96.48533212)
    assert kcal[0].energy[0] == pytest.approx(-47000.0 * KCAL_PER_MOL_TO_EV)
    ev, _ = read_all(tmp_path / "m.sdf", energy_key="E", energy_unit="eV")
    assert ev[0].energy[0] == -47000.0
    unknown, _ = read_all(tmp_path / "m.sdf")
    assert np.isnan(unknown[0].energy[0])
    with pytest.raises(InputError, match="energy_unit 'kJ' is not one of"):
        sdf.read(tmp_path / "m.sdf", energy_key="E", energy_unit="kJ")


def test_bad_records_are_reported_by_number_and_the_rest_kept(tmp_path):
    good = [embedded("CCO", f"ok{k}", seed=k, E=-1.0 - k) for k in range(3)]
    blocks = [Chem.MolToMolBlock(m) + f">  <E>\n{m.GetProp('E')}\n\n$$$$\n" for m in good]
    oxygen_line = next(line for line in blocks[0].splitlines() if line.endswith(
        "O   0  0  0  0  0  0  0  0  0  0  0  0"))
    unknown_element = blocks[0].replace(oxygen_line, oxygen_line.replace(" O ", " Qq"))
    broken_counts = blocks[0].replace("  9  8  0  0", "  x  8  0  0", 1)
    pentavalent = Chem.MolFromSmiles("C(C)(C)(C)(C)C", sanitize=False)
    AllChem.Compute2DCoords(pentavalent)
    valence = Chem.MolToMolBlock(pentavalent, kekulize=False).replace("2D", "3D") + "$$$$\n"
    nan_energy = blocks[1].replace("\n-2.0\n", "\nnan\n")
    text_energy = blocks[1].replace("\n-2.0\n", "\nhigh\n")
    path = tmp_path / "damaged.sdf"
    path.write_text(blocks[0] + unknown_element + broken_counts + valence + nan_energy
                    + text_energy + blocks[1] + blocks[2] + "\n\n")
    trajectories, errors = read_all(path, energy_key="E")
    assert [t.name for t in trajectories] == ["ok0", "ok1", "ok2"]
    assert [t.energy[0] for t in trajectories] == [-1.0, -2.0, -3.0]
    assert [e.record for e in errors] == [2, 3, 4, 5, 6]
    reasons = [e.reason for e in errors]
    assert "Element 'Qq' not found" in reasons[0]
    assert "RDKit cannot parse the record" in reasons[1] and "line" in reasons[1]
    assert "sanitisation failed" in reasons[2] and "valence" in reasons[2].lower()
    assert "non-finite energy" in reasons[3]
    assert "'high' is not a number" in reasons[4]
    assert str(errors[0]).startswith(f"{path}: record 2: RDKit")
    # without sanitisation the pentavalent carbon is accepted as written
    loose, loose_errors = read_all(path, sanitize=False)
    assert "ok0" in [t.name for t in loose] and len(loose) == 6
    assert [e.record for e in loose_errors] == [2, 3]
    with pytest.raises(InputError, match="record 2"):
        list(sdf.read(path))


def test_missing_energy_property_and_unknown_atomic_number(tmp_path):
    with_e = embedded("C", "methane", E=-40.5)
    without_e = embedded("N", "ammonia")
    dummy = Chem.MolFromMolBlock(Chem.MolToMolBlock(embedded("CO", "dummy"))
                                 .replace(" O ", " * ", 1), sanitize=False, removeHs=False)
    dummy.SetProp("E", "-1.0")
    write_sdf(tmp_path / "m.sdf", [with_e, without_e, dummy])
    trajectories, errors = read_all(tmp_path / "m.sdf", energy_key="E", sanitize=False)
    assert [t.name for t in trajectories] == ["methane"]
    assert errors[0].record == 2 and "no SD property 'E'" in errors[0].reason
    assert errors[1].record == 3 and "unknown atomic number(s) [0]" in errors[1].reason


def test_flat_2d_drawings_are_not_geometries(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    AllChem.Compute2DCoords(mol)
    mol.SetProp("_Name", "drawing")
    write_sdf(tmp_path / "flat.sdf", [mol])
    trajectories, errors = read_all(tmp_path / "flat.sdf")
    assert trajectories == [] and "2D drawing" in errors[0].reason
    allowed, errors = read_all(tmp_path / "flat.sdf", allow_2d=True)
    assert errors == [] and allowed[0].positions[0, :, 2].tolist() == [0.0] * 9


def test_gzip_mol_empty_and_missing(tmp_path):
    mol = embedded("CCO", "ethanol")
    block = Chem.MolToMolBlock(mol)
    with gzip.open(tmp_path / "m.sdf.gz", "wt") as handle:
        handle.write(block + "$$$$\n" + block + "$$$$\n")
    (tmp_path / "single.mol").write_text(block)
    assert sdf.detect(tmp_path / "m.sdf.gz") and sdf.detect(tmp_path / "single.mol")
    assert len(read_all(tmp_path / "m.sdf.gz")[0]) == 2
    assert read_all(tmp_path / "single.mol")[0][0].smiles == "CCO"
    (tmp_path / "empty.sdf").write_text("\n")
    with pytest.raises(InputError, match=r"empty\.sdf: empty file"):
        list(sdf.read(tmp_path / "empty.sdf"))
    with pytest.raises(InputError, match="no such file"):
        sdf.read(tmp_path / "missing.sdf")
    (tmp_path / "x.xyz").write_text("1\n\nH 0 0 0\n")
    assert not sdf.detect(tmp_path / "x.xyz") and not sdf.detect(tmp_path)
