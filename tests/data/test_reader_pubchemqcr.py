"""PubChemQCR reader: real LMDB files in the release's format, built from RDKit geometries."""

from __future__ import annotations

import gzip
import os
import pathlib
import pickle
import random

import lmdb
import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.data.readers import detect_format
from force2geo.data.readers import pubchemqcr as pq
from force2geo.errors import InputError

HARTREE_EV = 27.211386245988
HARTREE_PER_BOHR_EV_PER_A = 51.4220674763  # CODATA 2018


def ethanol():
    """Symbols and an ETKDG geometry (Å) of ethanol, explicit H."""
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    symbols = [a.GetSymbol() for a in mol.GetAtoms()]
    return symbols, mol.GetConformer().GetPositions()


def step(symbols, xyz, energy, grad=None, charge=True):
    """One step exactly as released: per-atom dicts, Hartree and Hartree/Bohr."""
    grad = np.zeros_like(xyz) if grad is None else grad
    coords, gradient = [], []
    for s, p, g in zip(symbols, xyz.tolist(), grad.tolist(), strict=True):
        atom = {"atom": s, "x": p[0], "y": p[1], "z": p[2]}
        row = {"atom": s, "dx": g[0], "dy": g[1], "dz": g[2]}
        if charge:
            z = Chem.GetPeriodicTable().GetAtomicNumber(s.capitalize())
            atom["charge"] = row["charge"] = float(z)  # nuclear charge column
        coords.append(atom)
        gradient.append(row)
    return {"coordinates": coords, "energy": energy, "gradient": gradient}


def relaxation(symbols, xyz):
    """pm3 (2) -> hf (2) -> DFT_1st (3) -> DFT_2nd (2); each stage starts where the last
    ended (same coordinates), as in the release."""
    geoms = [xyz + 0.01 * k for k in range(7)]
    grad = np.zeros_like(xyz)
    grad[0, 0] = 0.1  # +0.1 Ha/Bohr on atom 0, x
    return {
        "pm3": [step(symbols, geoms[0], -0.05), step(symbols, geoms[1], -0.06)],
        "hf": [step(symbols, geoms[1], -152.0), step(symbols, geoms[2], -152.1)],
        "DFT_1st": [step(symbols, geoms[2], -1.0, grad), step(symbols, geoms[3], -155.01),
                    step(symbols, geoms[4], -155.02, charge=False)],
        "DFT_2nd": [step(symbols, geoms[4], -155.02), step(symbols, geoms[5], -155.03)],
    }


@pytest.fixture
def release(tmp_path):
    symbols, xyz = ethanol()
    records = {702: relaxation(symbols, xyz),
               887: relaxation(symbols, xyz + 1.0),
               5: {"pm3": [step(symbols, xyz, -0.05)], "hf": [step(symbols, xyz, -152.0)],
                   "DFT_1st": None, "DFT_2nd": None}}
    path = pq.write_lmdb(tmp_path / "Data06.lmdb", records)
    return path, records, symbols, xyz


def test_units_ids_and_default_stage(release):
    path, records, symbols, xyz = release
    trajectories = list(pq.read(path))
    assert [t.cid for t in trajectories] == [702, 887]  # CID 5 has no DFT_1st: skipped
    t = trajectories[0]
    assert t.stages == ["dft1"] * 3
    assert t.atomic_numbers.tolist() == [6, 6, 8, 1, 1, 1, 1, 1, 1]
    assert t.energy[0] == pytest.approx(-HARTREE_EV, rel=1e-12)
    assert t.energy[2] == pytest.approx(-155.02 * HARTREE_EV, rel=1e-12)
    assert t.forces[0, 0, 0] == pytest.approx(-0.1 * HARTREE_PER_BOHR_EV_PER_A, rel=1e-10)
    assert t.forces[0, 0, 0] == pytest.approx(-5.14220674763, rel=1e-10)
    assert np.count_nonzero(t.forces) == 1
    np.testing.assert_allclose(t.positions[0], xyz + 0.02, atol=1e-12)  # Å kept as is
    assert t.charge == 0 and t.key == "702"


def test_all_stages_keep_level_changes_and_drop_the_repeated_dft_frame(release):
    path, *_ = release
    t = next(pq.read(path, stages="all", cids=[702]))
    # 2 + 2 + 3 + 2 steps, minus the DFT_2nd copy of the last DFT_1st step
    assert t.stages == ["pm3"] * 2 + ["hf"] * 2 + ["dft1"] * 3 + ["dft2"]
    # pm3 -> hf boundary: same geometry, different level of theory: both kept
    np.testing.assert_array_equal(t.positions[1], t.positions[2])
    assert t.energy[1] == pytest.approx(-0.06 * HARTREE_EV)
    assert t.energy[2] == pytest.approx(-152.0 * HARTREE_EV)
    assert t.energy[-1] == pytest.approx(-155.03 * HARTREE_EV)
    assert len({tuple(p.ravel()) for p in t.positions[t.stages.index("dft1"):]}) == 4
    both = next(pq.read(path, stages=("dft2", "dft1"), cids=[702]))
    assert both.stages == ["dft1"] * 3 + ["dft2"]
    alone = next(pq.read(path, stages="dft2", cids=[702]))
    assert alone.stages == ["dft2"] * 2  # one stage alone keeps every step


def test_record_without_dft_still_reads_its_other_stages(release):
    path, *_ = release
    t = next(t for t in pq.read(path, stages=("pm3", "hf")) if t.cid == 5)
    assert t.stages == ["pm3", "hf"]


def test_cids_limit_iter_cids_and_registry(release, tmp_path):
    path, *_ = release
    assert [t.cid for t in pq.read(path, cids=[887, 702])] == [887, 702]
    assert [t.cid for t in pq.read(path, limit=2)] == [702]  # keys 5 and 702 looked at
    assert list(pq.iter_cids(path)) == [5, 702, 887]
    assert detect_format(path) == "pubchemqcr"
    assert pq.detect(tmp_path) and detect_format(tmp_path) == "pubchemqcr"
    assert [t.cid for t in pq.read(tmp_path, cids=[887])] == [887]


def test_symbols_case_insensitive_and_chlorine(tmp_path):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCl"))
    AllChem.EmbedMolecule(mol, randomSeed=1)
    xyz = mol.GetConformer().GetPositions()
    symbols = [a.GetSymbol().upper() for a in mol.GetAtoms()]  # "CL", as GAMESS prints
    path = pq.write_lmdb(tmp_path / "x.lmdb", {6327: {"DFT_1st": [step(symbols, xyz, -500.0)]}})
    t = next(pq.read(path))
    assert t.atomic_numbers.tolist() == [6, 17, 1, 1, 1]


def test_write_lmdb_is_the_release_format(release, tmp_path):
    path, records, *_ = release
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        keys = [bytes(k) for k, _ in txn.cursor()]
        value = pickle.loads(gzip.decompress(txn.get(b"000000702")))
    env.close()
    assert keys == [b"000000005", b"000000702", b"000000887"]
    assert value == records[702]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Data06.lmdb"]  # no temp files


def test_reference_energies_in_ev():
    refs = pq.atom_reference_energies_ev()
    assert refs[1] == pytest.approx(-0.5002727762 * HARTREE_EV)
    assert refs[6] == pytest.approx(-37.8462799513 * HARTREE_EV)
    assert set(refs) >= {1, 6, 7, 8, 9, 15, 16, 17, 35}


# --------------------------------------------------------------------------- split


def test_published_split_reproduces_the_loader():
    n = 1000
    expected = list(range(n))
    random.seed(42)  # the loader: random.seed(42); random.shuffle(trajectory_indices)
    random.shuffle(expected)
    subset = pq.published_split(n)
    assert [len(subset[k]) for k in ("train", "valid", "test")] == [600, 200, 200]
    assert subset["train"].tolist() == expected[:600]
    assert subset["valid"].tolist() == expected[600:800]
    assert subset["test"].tolist() == expected[800:]
    full = pq.published_split(n, full=True)
    assert [len(full[k]) for k in ("train", "valid", "test")] == [800, 100, 100]
    assert full["train"].tolist() == expected[:800]
    odd = pq.published_split(7)  # int() floors: 4 train, 1 valid, 2 test
    assert [len(odd[k]) for k in ("train", "valid", "test")] == [4, 1, 2]


def test_published_split_of_cids(release):
    path, *_ = release
    cids = [t.cid for t in pq.read(path)]
    split = pq.published_split(cids)
    by_index = pq.published_split(len(cids))
    for part in ("train", "valid", "test"):
        assert split[part].tolist() == [cids[i] for i in by_index[part]]
    assert sorted(np.concatenate(list(split.values())).tolist()) == sorted(cids)


# --------------------------------------------------------------------------- bad input


def _raw_lmdb(path, items):
    env = lmdb.open(str(path), subdir=False, map_size=1 << 24, lock=False)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()
    return path


def test_bad_records_name_file_and_key(release, tmp_path):
    _, records, symbols, xyz = release
    nan_energy = relaxation(symbols, xyz)
    nan_energy["DFT_1st"][1]["energy"] = float("nan")
    unknown = relaxation(symbols, xyz)
    unknown["DFT_1st"][0]["coordinates"][0]["atom"] = "Xx"
    changed = relaxation(symbols, xyz)
    changed["DFT_1st"][2] = step(symbols[:-1], xyz[:-1], -155.0)
    short_gradient = relaxation(symbols, xyz)
    short_gradient["DFT_1st"][0]["gradient"].pop()
    items = {pq.encode_key(c): pq.encode_record(r) for c, r in
             {1: nan_energy, 2: unknown, 3: changed, 4: short_gradient, 702: records[702]}.items()}
    items[b"000000009"] = b"not gzip at all"
    items[b"000000010"] = gzip.compress(pickle.dumps(["not", "a", "dict"]))
    path = _raw_lmdb(tmp_path / "bad.lmdb", items)

    with pytest.raises(InputError) as first:
        list(pq.read(path))
    assert str(first.value).startswith(f"{path}: record 000000001: non-finite energy")

    errors = []
    good = list(pq.read(path, on_error=errors.append))
    assert [t.cid for t in good] == [702]
    reasons = {e.record: e.reason for e in errors}
    assert set(reasons) == {"000000001", "000000002", "000000003", "000000004",
                            "000000009", "000000010"}
    assert all(e.path == str(path) for e in errors)
    assert "unknown element 'Xx'" in reasons["000000002"]
    assert "atoms differ" in reasons["000000003"]
    assert "gradient rows" in reasons["000000004"]
    assert "does not decode" in reasons["000000009"]
    assert "not a dict" in reasons["000000010"]


def test_drop_bad_steps_like_the_released_loader(release, tmp_path):
    _, _, symbols, xyz = release
    record = relaxation(symbols, xyz)
    record["DFT_1st"][1]["energy"] = None
    path = pq.write_lmdb(tmp_path / "x.lmdb", {42: record})
    t = next(pq.read(path, drop_bad_steps=True))
    assert t.n_snapshots == 2
    assert t.energy.tolist() == pytest.approx([-HARTREE_EV, -155.02 * HARTREE_EV])


def test_whole_input_errors(release, tmp_path):
    path, *_ = release
    with pytest.raises(InputError, match="no such file"):
        list(pq.read(tmp_path / "missing.lmdb"))
    empty = tmp_path / "empty.lmdb"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="not an LMDB file") as err:
        list(pq.read(empty))
    assert str(empty) in str(err.value)
    folder = tmp_path / "nothing"
    folder.mkdir()
    with pytest.raises(InputError, match="no .lmdb files"):
        list(pq.read(folder))
    errors = []
    assert list(pq.read(path, cids=[123], on_error=errors.append)) == []
    assert errors[0].record == "000000123" and "no such key" in errors[0].reason
    with pytest.raises(ValueError, match="unknown PubChemQCR stage"):
        pq.read(path, stages="dft")


def test_detect_is_specific(release, tmp_path):
    path, *_ = release
    assert pq.detect(path)
    other = _raw_lmdb(tmp_path / "other.lmdb", {b"abc": b"\x1f\x8b"})
    assert not pq.detect(other)
    text = tmp_path / "notes.lmdb"
    text.write_text("hello")
    assert not pq.detect(text)
    assert not pq.detect(tmp_path / "absent.lmdb")


# --------------------------------------------------------------------------- hostile values


class Calls:
    """Pickles as a call of ``function(*args)``: what a naive ``pickle.loads`` runs."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def hostile_payloads(marker):
    """Values that, unpickled as they are, create ``marker``: a shell command, a file
    opened for writing, a method of a pickled object."""
    return {"os.system": Calls(os.system, f"touch {marker}"),
            "open": Calls(open, str(marker), "w"),
            "Path.touch": Calls(pathlib.Path.touch, pathlib.Path(marker))}


def hostile_release(path, payload):
    """A release-shaped LMDB: CID 702 genuine, CID 703 with ``payload`` as a step's energy."""
    symbols, xyz = ethanol()
    bad = step(symbols, xyz, -155.0)
    bad["energy"] = payload
    records = {702: relaxation(symbols, xyz),
               703: {"pm3": None, "hf": None, "DFT_1st": [bad], "DFT_2nd": None}}
    return pq.write_lmdb(path, records)


@pytest.mark.parametrize("kind", ["os.system", "open", "Path.touch"])
def test_hostile_value_is_refused_and_runs_nothing(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = hostile_release(tmp_path / "evil.lmdb", hostile_payloads(marker)[kind])
    env = lmdb.open(str(path), subdir=False, readonly=True, lock=False)
    with env.begin() as txn:
        value = txn.get(pq.encode_key(703))
    env.close()
    pickle.loads(gzip.decompress(value))  # the naive reader: the payload runs
    assert marker.exists(), "the crafted value must be hostile for this test to mean anything"
    marker.unlink()

    with pytest.raises(InputError) as err:
        list(pq.read(path))
    assert not marker.exists()
    assert err.value.record == "000000703" and err.value.path == str(path)
    assert "refused" in err.value.reason and "never holds" in err.value.reason
    errors = []  # with on_error (convert without --strict): reported, the rest is read
    assert [t.cid for t in pq.read(path, on_error=errors.append)] == [702]
    assert [e.record for e in errors] == ["000000703"] and not marker.exists()


def test_convert_relax_and_predict_refuse_a_hostile_file_by_content(tmp_path, capsys):
    from force2geo.cli.main import main
    from force2geo.relax.inputs import read_inputs

    marker = tmp_path / "MARKER"
    path = hostile_release(tmp_path / "evil.lmdb", hostile_payloads(marker)["os.system"])
    disguised = path.rename(tmp_path / "molecules.dat")  # taken by content, not by name
    assert detect_format(disguised) == "pubchemqcr"
    with pytest.raises(InputError, match="record 000000703: refused"):
        read_inputs(str(disguised))
    assert main(["convert", str(disguised), str(tmp_path / "store"), "--strict"]) != 0
    assert main(["relax", str(disguised), "-o", str(tmp_path / "out.xyz"), "--device", "cpu",
                 "--no-progress"]) == 1
    assert main(["predict", str(disguised), "-o", str(tmp_path / "pred.csv"), "--device",
                 "cpu", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert err.count("molecules.dat: record 000000703: refused") >= 3, err
    assert not marker.exists()


def test_numpy_numbers_and_numeric_arrays_are_data(tmp_path):
    """Admitted in case a value carries them; an object array could hold anything."""
    symbols, xyz = ethanol()
    plain = relaxation(symbols, xyz)
    record = {**plain, "DFT_1st": [{**s, "energy": np.float64(s["energy"]),
                                    "extra": np.arange(3.0)} for s in plain["DFT_1st"]]}
    items = {pq.encode_key(cid): gzip.compress(pickle.dumps(record, protocol=protocol))
             for cid, protocol in ((1, 2), (2, 5))}  # protocol 2 stores bytes via _codecs
    items[pq.encode_key(3)] = gzip.compress(pickle.dumps(
        {**plain, "extra": np.array([1, "a"], dtype=object)}))
    path = _raw_lmdb(tmp_path / "numpy.lmdb", items)
    errors = []
    trajectories = list(pq.read(path, on_error=errors.append))
    assert [t.cid for t in trajectories] == [1, 2]
    assert trajectories[0].energy[2] == pytest.approx(-155.02 * HARTREE_EV, rel=1e-12)
    assert [e.record for e in errors] == ["000000003"]
    assert "object" in errors[0].reason and "refused" in errors[0].reason
