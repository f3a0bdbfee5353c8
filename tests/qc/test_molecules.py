"""Input molecules: the .smi parser and the built-in sets from RDKit's shipped data."""

import pytest
from rdkit import Chem

from force2geo.errors import InputError
from force2geo.qc import molecules
from force2geo.qc.molecules import DEMO, Molecule, Selection, load, read_smi, unique_names


def test_read_smi_names_comments_and_duplicates(tmp_path):
    path = tmp_path / "set.smi"
    path.write_text(
        "# a comment\n"
        "CCO ethanol\n"
        "\n"
        "c1ccccc1\tbenzene ring\n"
        "O\n"
        "CC ethanol\n"
        "  C   methane  \n"
        "N ethanol-2\n"
        "not-a-smiles broken\n"
    )
    got = read_smi(path)
    assert got == [
        Molecule("ethanol", "CCO"),
        Molecule("benzene ring", "c1ccccc1"),
        Molecule("set-5", "O"),  # no name: file stem + line number
        Molecule("ethanol-3", "CC"),  # "ethanol-2" is taken further down
        Molecule("methane", "C"),
        Molecule("ethanol-2", "N"),
        Molecule("broken", "not-a-smiles"),  # parsed later; a bad one becomes a failure
    ]
    assert read_smi(path) == got  # deterministic


def test_unique_names_is_stable():
    assert unique_names(["a", "a", "b", "a"]) == ["a", "a-2", "b", "a-3"]


def test_read_smi_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="missing.smi: no such file"):
        read_smi(tmp_path / "missing.smi")
    empty = tmp_path / "empty.smi"
    empty.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="empty.smi: no molecules"):
        read_smi(empty)
    with pytest.raises(InputError, match="unknown built-in set"):
        load("builtin:zinc")


def test_raw_files_have_what_the_filters_remove():
    raw = list(molecules._raw_nci())
    assert len(raw) == 4999 and raw[0] == Molecule("nci-1", "CC1=CC(=O)C=CC1=O")
    wehi = list(molecules._raw_wehi())
    assert len(wehi) == 10000 and wehi[0].name == "WEHI-0039854"
    assert any("." in m.smiles for m in raw)  # salts and mixtures
    assert any("Br" in m.smiles or "I" in m.smiles for m in raw)


@pytest.fixture(scope="module")
def nci():
    return molecules.builtin("nci", Selection(min_heavy=5, max_heavy=20))


def test_builtin_filters(nci):
    assert 1500 < len(nci) < 4999
    keys = set()
    for m in nci:
        mol = Chem.MolFromSmiles(m.smiles)
        assert 5 <= mol.GetNumHeavyAtoms() <= 20
        assert len(Chem.GetMolFrags(mol)) == 1
        assert Chem.GetFormalCharge(mol) == 0
        assert {a.GetSymbol() for a in mol.GetAtoms()} <= {"H", "C", "N", "O", "F", "S", "Cl"}
        assert not any(a.GetNumRadicalElectrons() for a in mol.GetAtoms())
        keys.add(Chem.MolToInchiKey(mol))
    assert len(keys) == len(nci)  # deduplicated by InChIKey
    numbers = [int(m.name.split("-")[1]) for m in nci]
    assert numbers == sorted(numbers)  # file order


def test_builtin_sampling_is_seeded(nci):
    selection = Selection(min_heavy=5, max_heavy=20, limit=25, seed=1)
    first = molecules.sample(nci, 25, 1)
    assert molecules.builtin("nci", selection) == first
    assert len(first) == 25 and len({m.name for m in first}) == 25
    assert molecules.sample(nci, 25, 2) != first
    order = [nci.index(m) for m in first]
    assert order == sorted(order)


def test_demo_set_is_what_the_rule_picks():
    assert list(DEMO) == molecules.demo_rule()
    assert load("builtin:demo") == list(DEMO) and len(DEMO) == 12
    for m in DEMO:
        mol = Chem.AddHs(Chem.MolFromSmiles(m.smiles))
        assert 12 <= mol.GetNumAtoms() <= 20 and Chem.GetFormalCharge(mol) == 0


def test_load_smi_with_limit(tmp_path):
    path = tmp_path / "x.smi"
    path.write_text("".join(f"{'C' * (i + 1)} alkane{i + 1}\n" for i in range(10)))
    assert [m.name for m in load(str(path))][:2] == ["alkane1", "alkane2"]
    picked = load(str(path), Selection(limit=3, seed=0))
    assert len(picked) == 3 and picked == load(str(path), Selection(limit=3, seed=0))
    with pytest.raises(InputError, match="no such file"):
        load(str(tmp_path / "nope.smi"))


WATER_XYZ = "3\nwater\nO 0.0 0.0 0.117\nH 0.0 0.757 -0.467\nH 0.0 -0.757 -0.467\n"


def test_geometry_files_are_not_smiles_lists(tmp_path):
    """``generate good.xyz`` once read every line as a SMILES and stored 16 'molecules'."""
    xyz = tmp_path / "good.xyz"
    xyz.write_text(WATER_XYZ * 2)
    with pytest.raises(InputError, match=r"good.xyz: a file of geometries \(extxyz format\), "
                                         r"not a SMILES list .*'force2geo relax'"):
        load(str(xyz))
    sdf = tmp_path / "mols.sdf"
    sdf.write_text(Chem.MolToMolBlock(Chem.AddHs(Chem.MolFromSmiles("CCO"))) + "$$$$\n")
    with pytest.raises(InputError, match=r"mols.sdf: a file of geometries \(sdf format\)"):
        load(str(sdf))
    with pytest.raises(InputError, match="a folder, not a SMILES list"):
        load(str(tmp_path))
    # The same content under names that say nothing: refused by its lines.
    for text, what in ((WATER_XYZ, "line 1: an XYZ atom count"),
                       ("O 0.0 0.0 0.117 0.1 0.2 0.3\n", "line 1: an atom with coordinates"),
                       (sdf.read_text(), "line 4: a line of an SDF/MOL file")):
        disguised = tmp_path / "molecules.smi"
        disguised.write_text(text)
        with pytest.raises(InputError, match=f"molecules.smi: record {what}") as err:
            load(str(disguised))
        assert "not a SMILES list" in str(err.value)
    plain = tmp_path / "ok.txt"  # SMILES lists need no suffix
    plain.write_text("CCO ethanol\nC1CC1 3 membered ring\nO 1 2\n")
    assert [m.smiles for m in load(str(plain))] == ["CCO", "C1CC1", "O"]


def test_generate_refuses_a_geometry_file_before_any_work(tmp_path, capsys):
    from force2geo.cli.main import main

    xyz = tmp_path / "good.xyz"
    xyz.write_text(WATER_XYZ)
    assert main(["generate", str(xyz), "-o", str(tmp_path / "store")]) == 1
    assert "not a SMILES list" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
