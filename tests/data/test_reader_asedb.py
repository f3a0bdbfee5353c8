"""ASE database reader: rows to trajectories, labels eV / eV/Å, metadata, bad rows skipped."""

import json
import sqlite3
from contextlib import closing

import ase.db
import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from force2geo.data.readers import asedb
from force2geo.errors import InputError

WATER = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.469], [0.0, -0.757, -0.469]])


def water(shift=0.0, energy=None, forces=None):
    atoms = Atoms("OH2", positions=WATER + shift)
    if energy is not None or forces is not None:
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def read_all(path, **options):
    errors = []
    trajectories = list(asedb.read(path, on_error=errors.append, **options))
    return trajectories, errors


@pytest.fixture(params=["db", "json"])
def suffix(request):
    return request.param


def test_rows_round_trip_with_metadata(tmp_path, suffix):
    path = tmp_path / f"mols.{suffix}"
    forces = np.arange(9.0).reshape(3, 3) / 10.0
    with ase.db.connect(path) as db:
        db.write(water(0.0, energy=-2079.5, forces=forces), name="water", stage="dft",
                 charge=0, smiles="O", homo=-7.1, lumo=1.2, gap=8.3, cid=962)
        db.write(water(0.1), name="bare", total_charge=-1)
        db.write(Atoms("CO", positions=[[0, 0, 0], [0, 0, 1.13]], charges=[-0.6, -0.4]),
                 dft_energy=-3090.25)
    trajectories, errors = read_all(path)
    assert errors == [] and len(trajectories) == 3
    first, bare, co = trajectories
    assert first.energy.tolist() == [-2079.5] and first.stages == ["dft"]
    np.testing.assert_array_equal(first.forces[0], forces)
    np.testing.assert_array_equal(first.positions[0], WATER)
    assert (first.name, first.smiles, first.cid, first.charge) == ("water", "O", 962, 0)
    assert first.properties == {"homo": -7.1, "lumo": 1.2, "gap": 8.3}
    assert np.isnan(bare.energy).all() and np.isnan(bare.forces).all()
    assert bare.charge == -1 and bare.stages == ["input"]
    np.testing.assert_allclose(bare.positions[0], WATER + 0.1)
    assert co.atomic_numbers.tolist() == [6, 8] and co.energy.tolist() == [-3090.25]
    assert co.charge == -1  # the sum of the initial (partial) charges


def test_grouping_is_opt_in(tmp_path):
    path = tmp_path / "traj.db"
    with ase.db.connect(path) as db:
        for k in range(3):
            db.write(water(0.01 * k, energy=-10.0 - k), traj_id="t1", stage="xtb")
        db.write(water(energy=-20.0), traj_id="t2", stage="xtb")
    trajectories, _ = read_all(path)
    assert len(trajectories) == 4  # every row alone by default
    grouped, errors = read_all(path, group_by="traj_id")
    assert errors == []
    assert [t.n_snapshots for t in grouped] == [3, 1]
    assert grouped[0].energy.tolist() == [-10.0, -11.0, -12.0] and grouped[0].name == "t1"
    np.testing.assert_allclose(grouped[0].positions[2], WATER + 0.02)


def test_bad_rows_are_skipped_with_row_id(tmp_path):
    path = tmp_path / "bad.json"
    with ase.db.connect(path) as db:
        db.write(water(energy=-1.0), name="ok1")
        db.write(water(energy=float("nan")), name="nan-energy")  # JSON keeps NaN
        db.write(Atoms(numbers=[0, 1], positions=[[0, 0, 0], [0, 0, 1]]), name="dummy-atom")
        db.write(Atoms("OH2", positions=WATER, charges=[-0.5, 0.0, 0.0]), name="half-charge")
        db.write(water(energy=-5.0), name="ok2")
    trajectories, errors = read_all(path)
    assert [t.name for t in trajectories] == ["ok1", "ok2"]
    assert [e.record for e in errors] == [2, 3, 4]
    assert "non-finite energy" in errors[0].reason
    assert "unknown atomic number(s) [0]" in errors[1].reason
    assert "charge -0.5 is not an integer" in errors[2].reason
    assert str(errors[0]).startswith(f"{path}: record 2: ")
    with pytest.raises(InputError, match="record 2"):
        list(asedb.read(path))


def test_energy_key_reads_key_value_pairs_or_data(tmp_path):
    path = tmp_path / "keys.db"
    with ase.db.connect(path) as db:
        db.write(water(), my_energy=-42.0)
        db.write(water(), data={"my_energy": -43.0})
    trajectories, errors = read_all(path, energy_key="my_energy")
    assert errors == [] and [t.energy[0] for t in trajectories] == [-42.0, -43.0]


def test_detect_accepts_ase_databases_only(tmp_path):
    db_path, json_path = tmp_path / "a.db", tmp_path / "a.json"
    for path in (db_path, json_path):
        with ase.db.connect(path) as db:
            db.write(water())
    other_sqlite = tmp_path / "other.db"
    with closing(sqlite3.connect(other_sqlite)) as con:
        con.execute("CREATE TABLE t (x INTEGER)")
        con.commit()
    plain_json = tmp_path / "plain.json"
    plain_json.write_text(json.dumps({"train": [1, 2]}))
    renamed = tmp_path / "release.sqlite"
    renamed.write_bytes(db_path.read_bytes())
    assert asedb.detect(db_path) and asedb.detect(json_path) and asedb.detect(renamed)
    assert not asedb.detect(other_sqlite) and not asedb.detect(plain_json)
    assert not asedb.detect(tmp_path / "missing.db") and not asedb.detect(tmp_path)
    assert len(list(asedb.read(renamed))) == 1  # the SQLite magic decides, not the suffix
    with pytest.raises(InputError, match="not an ASE database"):
        asedb.read(other_sqlite)


def test_empty_database_and_missing_file(tmp_path):
    path = tmp_path / "empty.db"
    with ase.db.connect(path) as db:
        row_id = db.write(water())
    with ase.db.connect(path) as db:
        db.delete([row_id])
    with pytest.raises(InputError, match=r"empty\.db: empty ASE database"):
        list(asedb.read(path))
    with pytest.raises(InputError, match="no such file"):
        asedb.read(tmp_path / "missing.db")
    assert not (tmp_path / "missing.db").exists()  # reading never creates a database
