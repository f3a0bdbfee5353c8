"""``force2geo split``: random / scaffold splits, leakage exclusion, MaxMin picks, clear errors."""

import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.cli.main import main
from force2geo.data import splits
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory

MOLECULES = [  # (SMILES, PubChem CID)
    ("CC(=O)Oc1ccccc1C(=O)O", 2244), ("CC(=O)Nc1ccc(O)cc1", 1983), ("CCO", 702),
    ("c1ccccc1", 241), ("Cc1ccccc1", 1140), ("Oc1ccccc1", 996), ("c1ccc2ccccc2c1", 931),
    ("c1ccncc1", 1049), ("Cc1ccncc1", 7963), ("C1CCCCC1", 8078), ("OC1CCCCC1", 7966),
    ("CC(=O)C", 180), ("CCCCCC", 8058), ("c1ccc2[nH]ccc2c1", 798), ("C1CCNCC1", 8082),
    ("O=C1CCCC1", 8452), ("c1ccoc1", 8029), ("c1ccsc1", 8030), ("OCC(O)CO", 753),
    ("NCC(=O)O", 750), ("c1ccc(-c2ccccc2)cc1", 7095), ("Clc1ccccc1", 7964),
    ("C1COCCO1", 31275), ("C1CCOC1", 8028), ("c1cnc2ccccc2c1", 7047),
    ("O=C(O)CCC(=O)O", 1110), ("CN(C)C=O", 6228), ("Nc1ccccc1", 6115),
    ("OC(=O)c1ccccc1", 243), ("Cn1cnc2c1c(=O)n(C)c(=O)n2C", 2519),
]
SMILES = [s for s, _ in MOLECULES]


def write_store(path, molecules):
    """A store of ETKDG geometries (Å) of real molecules, one 'etkdg' snapshot each."""
    with TrajectoryWriter(path, source="rdkit etkdg", shard_snapshots=8) as writer:
        for smiles, cid in molecules:
            mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
            assert AllChem.EmbedMolecule(mol, randomSeed=11) == 0
            writer.add(Trajectory(
                [a.GetAtomicNum() for a in mol.GetAtoms()], mol.GetConformer().GetPositions(),
                [np.nan], None, "etkdg", cid=cid, smiles=smiles,
                inchikey=Chem.MolToInchiKey(mol),
            ))
    return TrajectoryStore(path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-split")
    main_store = write_store(root / "store", MOLECULES)
    # aspirin, benzene and caffeine by InChIKey and CID; indole by CID only (other SMILES)
    other = write_store(root / "other", [MOLECULES[0], MOLECULES[3], MOLECULES[29],
                                         ("c1ccc2[nH]ccc2c1", 798), ("CCCCO", 263)])
    return main_store, other


def run(*argv):
    return main(["split", *map(str, argv)])


def one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("force2geo split: error: ") and "\n" not in err
    return err


def test_random_split_file(stores, tmp_path, capsys):
    store, _ = stores
    out = tmp_path / "split.json"
    assert run(store.path, "-o", out, "--method", "random", "--fractions", 0.6, 0.2, 0.2,
               "--seed", 7) == 0
    assert "train 18  valid 6  test 6" in capsys.readouterr().out
    record = json.loads(out.read_text())
    expected = splits.random_split(30, (0.6, 0.2, 0.2), seed=7)
    assert {p: record[p] for p in splits.PARTS} == {p: expected[p].tolist() for p in expected}
    meta = record["meta"]
    assert meta["method"] == "random" and meta["seed"] == 7
    assert meta["fractions"] == [0.6, 0.2, 0.2] and meta["store_fingerprint"] == store.fingerprint
    assert run(store.path, "-o", out, "--method", "random") == 1
    assert "exists; pass --force" in one_line_error(capsys)
    assert run(store.path, "-o", out, "--method", "random", "--force") == 0


def test_scaffold_split_keeps_scaffolds_whole(stores, tmp_path):
    store, _ = stores
    out = tmp_path / "scaffold.json"
    assert run(store.path, "-o", out, "--method", "scaffold") == 0
    parts, meta = splits.load_split(out)
    assert meta["method"] == "scaffold" and "seed" not in meta
    owner = {}
    for name, indices in parts.items():
        for i in indices:
            assert owner.setdefault(splits.murcko_scaffold(SMILES[i]), name) == name
    assert owner["c1ccccc1"] == "train" and sum(len(v) for v in parts.values()) == 30


def test_exclude_removes_leaking_molecules(stores, tmp_path, capsys):
    store, other = stores
    leaking = {0, 3, 29, 13}  # aspirin, benzene, caffeine, indole (CID match)
    out = tmp_path / "clean.json"
    assert run(store.path, "-o", out, "--method", "random", "--fractions", 0.2, 0.2, 0.6,
               "--seed", 1, "--exclude", other.path) == 0
    parts, meta = splits.load_split(out)
    plain = splits.random_split(30, (0.2, 0.2, 0.6), seed=1)
    in_test = leaking & set(plain["test"].tolist())
    assert set(parts["test"].tolist()) == set(plain["test"].tolist()) - leaking
    np.testing.assert_array_equal(parts["train"], plain["train"])  # only test loses items
    assert meta["exclude"]["removed"] == {"test": len(in_test)}
    assert meta["exclude"]["store_fingerprint"] == other.fingerprint
    out_all = tmp_path / "clean-all.json"
    assert run(store.path, "-o", out_all, "--method", "scaffold", "--exclude", other.path,
               "--exclude-parts", "train", "valid", "test") == 0
    parts, meta = splits.load_split(out_all)
    remaining = set(np.concatenate(list(parts.values())).tolist())
    assert remaining == set(range(30)) - leaking
    assert sum(meta["exclude"]["removed"].values()) == 4


def test_maxmin_from_a_split_part(stores, tmp_path, capsys):
    store, other = stores
    split_file = tmp_path / "split.json"
    assert run(store.path, "-o", split_file, "--method", "random", "--fractions",
               0.5, 0.1, 0.4) == 0
    test = splits.load_split(split_file)[0]["test"]
    out = tmp_path / "sel.json"
    assert run(store.path, "-o", out, "--method", "maxmin", "--k", 5,
               "--from", f"{split_file}:test", "--seed", 3) == 0
    assert "selected 5" in capsys.readouterr().out
    parts, meta = splits.load_split(out)
    local = splits.maxmin_select([SMILES[i] for i in test], 5, seed=3)
    np.testing.assert_array_equal(parts["selected"], test[local])
    assert meta["method"] == "maxmin" and meta["k"] == 5 and meta["radius"] == 2
    assert meta["from"] == f"{split_file}:test"
    # a selection file has one part, so --from needs no PART; exclusion shrinks the pool
    again = tmp_path / "sel2.json"
    assert run(store.path, "-o", again, "--method", "maxmin", "--k", 3, "--from", out,
               "--exclude", other.path) == 0
    picked = splits.load_split(again)[0]["selected"]
    assert set(picked.tolist()) <= set(parts["selected"].tolist()) - {0, 3, 13, 29}


@pytest.mark.parametrize("extra, words", [
    (["--method", "random", "--fractions", "0.8", "0.1", "0.2"], "--fractions: fractions must"),
    (["--method", "random", "--fractions", "0.9", "0.1"], "--fractions: need 3 fractions"),
    (["--method", "maxmin", "--k", "31"], "--k: 31 is more than the 30 candidate molecules"),
    (["--method", "maxmin"], "--k: required with --method maxmin"),
    (["--method", "random", "--k", "3"], "only used with --method maxmin"),
    (["--method", "maxmin", "--k", "2", "--from", "missing.json:test"], "no such split file"),
    (["--method", "random", "--exclude", "no-such-store"], "no such trajectory store"),
])
def test_bad_arguments_are_one_line_errors(stores, tmp_path, capsys, monkeypatch, extra, words):
    store, _ = stores
    monkeypatch.chdir(tmp_path)
    assert run(store.path, "-o", tmp_path / "out.json", *extra) == 1
    assert words in one_line_error(capsys)
    assert not (tmp_path / "out.json").exists()


def test_path_errors(stores, tmp_path, capsys):
    store, other = stores
    assert run(tmp_path / "nope", "-o", tmp_path / "o.json", "--method", "random") == 1
    assert "no such trajectory store" in one_line_error(capsys)
    assert run(store.path, "-o", tmp_path / "no" / "o.json", "--method", "random") == 1
    assert "does not exist" in one_line_error(capsys)
    split_file = tmp_path / "split.json"
    assert run(store.path, "-o", split_file, "--method", "random") == 0
    capsys.readouterr()
    assert run(store.path, "-o", tmp_path / "s.json", "--method", "maxmin", "--k", 1,
               "--from", f"{split_file}:holdout") == 1
    assert "no part 'holdout'; it holds train, valid, test" in one_line_error(capsys)
    assert run(store.path, "-o", tmp_path / "s.json", "--method", "maxmin", "--k", 1,
               "--from", split_file) == 1
    assert "name one as" in one_line_error(capsys)
    # a split made for another store is refused, not silently applied
    assert run(other.path, "-o", tmp_path / "s.json", "--method", "maxmin", "--k", 1,
               "--from", f"{split_file}:test") == 1
    assert "was made for a store with fingerprint" in one_line_error(capsys)


def test_extend_keeps_the_earlier_split_of_a_smaller_store(stores, tmp_path, capsys):
    """A grown store (the first 12 molecules, then 18 more): molecules of the earlier split
    keep their part, the new ones are split at random, nothing is lost or doubled."""
    store, _ = stores
    small = write_store(tmp_path / "small", MOLECULES[:12])
    old = tmp_path / "old.json"
    assert run(small.path, "-o", old, "--method", "random", "--seed", 1) == 0
    grown = tmp_path / "grown.json"
    assert run(store.path, "-o", grown, "--method", "random", "--seed", 2, "--extend", old) == 0
    before, _ = splits.load_split(old)
    after, meta = splits.load_split(grown)
    for part in splits.PARTS:  # store and small share the first 12 trajectories in order
        assert set(before[part]) == set(after[part][after[part] < 12]), part
    assert sorted(np.concatenate(list(after.values()))) == list(range(30))
    assert meta["extends"]["store"] == str(small.path)
    assert len(after["train"][after["train"] >= 12]) == 14  # 0.8 of the 18 new ones
    assert run(store.path, "-o", tmp_path / "x.json", "--method", "scaffold",
               "--extend", old) == 1
    assert "only with --method random" in one_line_error(capsys)


def test_extend_with_an_inchikey_list_puts_those_molecules_in_train(stores, tmp_path, capsys):
    """A model card's key list (here 5 molecules, one unknown to the store): the listed
    molecules are all in train, the others split at random by --fractions and --seed."""
    store, _ = stores
    keys = store.identifiers("inchikey")
    listed = [keys[i] for i in (2, 7, 11, 19, 23)] + ["VNWKTOKETHGBQD-UHFFFAOYSA-N"]  # CH4
    key_file = tmp_path / "model.inchikeys.txt"
    key_file.write_text("\n".join(listed) + "\n\n")
    out = tmp_path / "warm.json"
    assert run(store.path, "-o", out, "--method", "random", "--seed", 3, "--extend",
               key_file) == 0
    parts, meta = splits.load_split(out)
    assert {2, 7, 11, 19, 23} <= set(parts["train"])
    for part in ("valid", "test"):
        assert not {2, 7, 11, 19, 23} & set(parts[part])
    assert sorted(np.concatenate(list(parts.values()))) == list(range(30))
    rest = np.setdiff1d(np.arange(30), [2, 7, 11, 19, 23])  # the 25 unlisted molecules
    expected = splits.random_split(25, (0.8, 0.1, 0.1), 3)
    for part in splits.PARTS:
        assert set(rest[expected[part]]) == set(np.intersect1d(parts[part], rest)), part
    assert meta["extends"]["inchikeys"] == str(key_file)
    assert meta["extends"]["n_keys"] == 6 and len(meta["extends"]["sha256"]) == 64
    bad = tmp_path / "bad.txt"
    bad.write_text("not-a-key\n")
    assert run(store.path, "-o", tmp_path / "y.json", "--method", "random", "--extend",
               bad) == 1
    assert "is not an InChIKey" in one_line_error(capsys)


def test_hold_out_puts_listed_molecules_in_test_only(stores, tmp_path, capsys):
    """Benchmark molecules (a key list) land in test, never in train or valid; combined
    with --extend KEYS.txt the warm-start molecules stay in train; a key in both lists is
    refused; scaffold splits refuse --hold-out."""
    store, _ = stores
    keys = store.identifiers("inchikey")
    held = tmp_path / "held.txt"
    held.write_text("\n".join(keys[i] for i in (1, 4, 9)) + "\n")
    warm = tmp_path / "warm.txt"
    warm.write_text("\n".join(keys[i] for i in (2, 3)) + "\n")
    out = tmp_path / "held.json"
    assert run(store.path, "-o", out, "--method", "random", "--seed", 5, "--hold-out", held,
               "--extend", warm) == 0
    parts, meta = splits.load_split(out)
    assert {1, 4, 9} <= set(parts["test"]) and {2, 3} <= set(parts["train"])
    assert not {1, 4, 9} & (set(parts["train"]) | set(parts["valid"]))
    assert sorted(np.concatenate(list(parts.values()))) == list(range(30))
    assert meta["hold_out"]["n_keys"] == 3 and meta["extends"]["n_keys"] == 2
    warm.write_text(keys[4] + "\n")
    assert run(store.path, "-o", tmp_path / "x.json", "--method", "random", "--hold-out",
               held, "--extend", warm) == 1
    assert "also in --extend's train list" in one_line_error(capsys)
    assert run(store.path, "-o", tmp_path / "s.json", "--method", "scaffold", "--hold-out",
               held) == 1
    assert "only with --method random" in one_line_error(capsys)
