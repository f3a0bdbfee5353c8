"""∇²DFT reader: real ASE SQLite databases and summary.csv files in the release's layout."""

from __future__ import annotations

import gzip

import ase
import ase.db
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.data.readers import detect_format
from force2geo.data.readers import nabla2dft as nabla
from force2geo.errors import InputError

HARTREE_EV = 27.211386245988
UNITS = {"_distance_unit": "Ang",
         "_property_unit_dict": {"energy": "Hartree", "forces": "Hartree/Ang"}}
SUMMARY_HEADER = (",MOSES id,CONFORMER id,archive name,DFT TOTAL ENERGY,DFT XC ENERGY,"
                  "DFT NUCLEAR REPULSION ENERGY,DFT ONE-ELECTRON ENERGY,DFT TWO-ELECTRON ENERGY,"
                  "DFT DIPOLE X,DFT DIPOLE Y,DFT DIPOLE Z,DFT TOTAL DIPOLE,DFT ROT CONSTANT A,"
                  "DFT ROT CONSTANT B,DFT ROT CONSTANT C,DFT HOMO,DFT LUMO,DFT HOMO-LUMO GAP,"
                  "DFT ATOMIC ENERGY,DFT FORMATION ENERGY,SMILES,SPLITS\n")
MOLECULES = {164: "CCOC(=O)C", 7: "C[NH3+]"}


def conformers(smiles: str, n: int):
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    ids = AllChem.EmbedMultipleConfs(mol, numConfs=n, randomSeed=5)
    assert len(ids) == n
    numbers = [a.GetAtomicNum() for a in mol.GetAtoms()]
    return numbers, [mol.GetConformer(i).GetPositions() for i in ids]


def energy_of(moses_id: int, conf: int) -> float:
    return -1.0 if (moses_id, conf) == (164, 0) else -300.0 - moses_id - 0.001 * conf


def gap_of(moses_id: int, conf: int) -> tuple[float, float, float]:
    homo, lumo = -0.311180 - 0.001 * conf, 0.017776 + 0.0001 * moses_id
    return homo, lumo, lumo - homo


def write_db(path, rows, metadata=UNITS):
    path.parent.mkdir(parents=True, exist_ok=True)
    with ase.db.connect(path) as db:
        for numbers, positions, pairs, data in rows:
            db.write(ase.Atoms(numbers=numbers, positions=positions), key_value_pairs=pairs,
                     data=data)
    if metadata is not None:
        db = ase.db.connect(path)
        db.metadata = metadata
    return path


def release_rows():
    rows = []
    for moses_id, smiles in MOLECULES.items():
        numbers, confs = conformers(smiles, 2)
        for conf, positions in enumerate(confs):
            forces = np.zeros((len(numbers), 3))
            forces[0, 0] = 0.1  # Hartree/Å
            energy = energy_of(moses_id, conf)
            rows.append((numbers, positions,
                         {"moses_id": moses_id, "conformation_id": conf, "smiles": smiles},
                         {"energy": [energy] if conf == 0 else energy, "forces": forces}))
    return rows


def summary_text(keys) -> str:
    lines = [SUMMARY_HEADER]
    for i, (moses_id, conf) in enumerate(keys):
        homo, lumo, gap = gap_of(moses_id, conf)
        total = energy_of(moses_id, conf) - 1294.5
        lines.append(f"{i},{moses_id},{conf},data/moses_wfns/archive_0_0_0.tar,{total},-102.3,"
                     f"1658.7,-5071.5,2214.3,-1.8,-3.7,0.4,4.1,0.018,0.0046,0.0041,{homo},"
                     f"{lumo},{gap},-1294.500711,-6.395,{MOLECULES.get(moses_id, 'C')},"
                     "train_full\n")
    return "".join(lines)


@pytest.fixture
def release(tmp_path):
    db = write_db(tmp_path / "train_2k_v2_formation_energy_w_forces.db", release_rows())
    # summary order differs from the database's, and holds conformations the db does not
    keys = [(7, 1), (999, 0), (164, 1), (7, 0), (164, 0), (999, 1)]
    (tmp_path / "summary.csv").write_text(summary_text(keys))
    return db


def test_units_properties_and_identifiers(release):
    trajectories = list(nabla.read(release))
    assert [t.name for t in trajectories] == ["moses_164_conf_0", "moses_164_conf_1",
                                              "moses_7_conf_0", "moses_7_conf_1"]
    first = trajectories[0]
    assert first.energy[0] == pytest.approx(-HARTREE_EV, rel=1e-12)
    assert first.forces[0, 0, 0] == pytest.approx(0.1 * HARTREE_EV, rel=1e-12)
    assert np.count_nonzero(first.forces) == 1
    assert trajectories[1].energy[0] == pytest.approx((-464.001) * HARTREE_EV)  # scalar energy
    homo, lumo, gap = gap_of(164, 0)
    assert first.properties == pytest.approx({
        "homo": homo * HARTREE_EV, "lumo": lumo * HARTREE_EV, "gap": gap * HARTREE_EV,
        "total_energy": (-1.0 - 1294.5) * HARTREE_EV}, rel=1e-9)
    assert first.properties["gap"] == pytest.approx(9.39762, abs=1e-4)  # 0.345356 Ha
    assert trajectories[3].properties["gap"] == pytest.approx(gap_of(7, 1)[2] * HARTREE_EV)
    numbers, confs = conformers(MOLECULES[164], 2)
    assert first.atomic_numbers.tolist() == numbers
    np.testing.assert_allclose(trajectories[1].positions[0], confs[1], atol=1e-12)
    assert first.stages == ["dft"] and first.smiles == MOLECULES[164]
    assert first.inchikey == Chem.MolToInchiKey(Chem.MolFromSmiles(MOLECULES[164]))
    assert trajectories[2].charge == 1 and first.charge == 0


def test_summary_options_gzip_folder_and_paging(release, tmp_path, monkeypatch):
    assert all(t.properties == {} for t in nabla.read(release, summary=False))
    text = (tmp_path / "summary.csv").read_text()
    (tmp_path / "summary.csv").unlink()
    assert all(t.properties == {} for t in nabla.read(release))  # none beside: no properties
    with gzip.open(tmp_path / "summary.csv.gz", "wt") as handle:
        handle.write(text)
    monkeypatch.setattr(nabla, "PAGE_ROWS", 3)  # several pages of rows
    via_folder = list(nabla.read(tmp_path))
    assert len(via_folder) == 4 and via_folder[3].name == "moses_7_conf_1"
    assert via_folder[3].properties["gap"] == pytest.approx(gap_of(7, 1)[2] * HARTREE_EV)
    elsewhere = tmp_path / "meta" / "s.csv"
    elsewhere.parent.mkdir()
    elsewhere.write_text(text)
    assert next(nabla.read(release, summary=elsewhere)).properties["homo"] == \
        pytest.approx(gap_of(164, 0)[0] * HARTREE_EV)
    assert [t.name for t in nabla.read(release, limit=2)] == ["moses_164_conf_0",
                                                              "moses_164_conf_1"]


def test_detect(release, tmp_path):
    assert nabla.detect(release) and nabla.detect(tmp_path)
    assert detect_format(release) == "nabla2dft"
    plain = write_db(tmp_path / "plain" / "other.db",
                     [([1, 1], [[0, 0, 0], [0, 0, 0.74]], {"energy_key": 1}, {})], None)
    assert not nabla.detect(plain) and not nabla.detect(plain.parent)
    text = tmp_path / "x.db"
    text.write_text("not sqlite")
    assert not nabla.detect(text)


def test_record_errors_name_file_and_record(tmp_path):
    rows = release_rows()
    rows[1][3]["energy"] = [float("nan")]
    rows[2][3]["forces"] = np.zeros((2, 3))
    numbers, positions, pairs, data = rows[3]
    rows.append(([0, *numbers[1:]], positions, {**pairs, "conformation_id": 5}, data))
    rows.append((numbers, positions, {"smiles": "C"}, data))  # no ids
    db = write_db(tmp_path / "bad.db", rows)
    keys = [(164, 0), (164, 1), (7, 0), (7, 1)]  # (7, 5) is not in the summary
    (tmp_path / "summary.csv").write_text(summary_text(keys))
    errors = []
    got = list(nabla.read(db, on_error=errors.append))
    assert [t.name for t in got] == ["moses_164_conf_0", "moses_7_conf_1"]
    by_record = {e.record: e for e in errors}
    assert set(by_record) == {"id 2 (moses_id 164, conformation_id 1)",
                              "id 3 (moses_id 7, conformation_id 0)",
                              "id 5 (moses_id 7, conformation_id 5)",
                              "id 6 (moses_id None, conformation_id None)"}
    assert "non-finite energy" in by_record["id 2 (moses_id 164, conformation_id 1)"].reason
    assert "shape (2, 3)" in by_record["id 3 (moses_id 7, conformation_id 0)"].reason
    missing = by_record["id 5 (moses_id 7, conformation_id 5)"]
    assert missing.path == str(tmp_path / "summary.csv") and "not in the summary" in missing.reason
    assert "moses_id" in by_record["id 6 (moses_id None, conformation_id None)"].reason
    # the unknown element (Z = 0) is caught when the summary is not consulted
    errors = []
    list(nabla.read(db, summary=False, on_error=errors.append))
    assert any("unknown atomic number(s) [0]" in e.reason for e in errors)
    with pytest.raises(InputError) as err:
        list(nabla.read(db))
    assert str(err.value).startswith(f"{db}: record id 2 (moses_id 164, conformation_id 1): "
                                     "non-finite energy")


def test_whole_input_errors(release, tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        nabla.read(tmp_path / "absent.db")
    empty = tmp_path / "empty" / "e.db"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="e.db: empty file"):
        nabla.read(empty)
    plain = write_db(tmp_path / "plain" / "p.db", [([1], [[0, 0, 0]], {}, {})], None)
    with pytest.raises(InputError, match="not a ∇²DFT database"):
        nabla.read(plain)
    with pytest.raises(InputError, match="no ∇²DFT database"):
        nabla.read(plain.parent)
    with pytest.raises(InputError, match="nope.csv: no such file"):
        nabla.read(release, summary=tmp_path / "nope.csv")
    folder = tmp_path / "nosummary"
    folder.mkdir()
    write_db(folder / "d.db", release_rows())
    with pytest.raises(InputError, match="no summary.csv or summary.csv.gz"):
        nabla.read(folder)
    (tmp_path / "summary.csv").write_text(",MOSES id,CONFORMER id,DFT HOMO\n0,1,0,-0.3\n")
    with pytest.raises(InputError, match="missing column"):
        list(nabla.read(release))
    bohr = write_db(tmp_path / "units" / "u.db", release_rows(),
                    {"_property_unit_dict": {"energy": "kcal/mol", "forces": "Hartree/Ang"}})
    with pytest.raises(InputError, match="unsupported unit 'kcal/mol'"):
        list(nabla.read(bohr, summary=False))
