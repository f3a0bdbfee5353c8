"""Splits, MaxMin diversity picking and leakage removal, on real molecules and real stores."""

import json
import logging

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from force2geo.data import splits
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.units import KCAL_PER_MOL_TO_EV

# (SMILES, PubChem CID or None): common molecules with shared and distinct scaffolds.
MOLECULES = [
    ("CC(=O)Oc1ccccc1C(=O)O", 2244), ("CC(C)Cc1ccc(cc1)C(C)C(=O)O", 3672),
    ("CC(=O)Nc1ccc(O)cc1", 1983), ("Cn1cnc2c1c(=O)n(C)c(=O)n2C", 2519), ("CCO", 702),
    ("c1ccccc1", 241), ("Cc1ccccc1", 1140), ("Oc1ccccc1", 996), ("c1ccc2ccccc2c1", 931),
    ("c1ccncc1", 1049), ("OC(=O)c1ccccc1", 243), ("Nc1ccccc1", 6115), ("Cc1ccncc1", 7963),
    ("C1CCCCC1", 8078), ("OC1CCCCC1", 7966), ("CC(=O)C", 180), ("CCCCCC", 8058),
    ("c1ccc(Cc2ccccc2)cc1", 7580), ("Oc1ccc(Cc2ccccc2)cc1", 7581), ("c1ccc2[nH]ccc2c1", 798),
    ("Cc1c[nH]c2ccccc12", 6736), ("C1CCNCC1", 8082), ("CN1CCCCC1", 12291),
    ("O=C1CCCC1", 8452), ("c1ccoc1", 8029), ("Cc1ccco1", 10797), ("c1ccsc1", 8030),
    ("OCC(O)CO", 753), ("NCC(=O)O", 750), ("CC(N)C(=O)O", 5950),
    ("c1ccc(-c2ccccc2)cc1", 7095), ("Clc1ccccc1", 7964), ("FC(F)(F)c1ccccc1", 7368),
    ("C1COCCO1", 31275), ("C1CCOC1", 8028), ("c1cnc2ccccc2c1", 7047),
    ("c1ccc2ncccc2c1", None),  # quinoline again, written differently, CID unknown
    ("O=C(O)CCC(=O)O", 1110), ("CN(C)C=O", 6228), ("C[C@H](N)c1ccccc1", 643189),
]
SMILES = [s for s, _ in MOLECULES]


def molecule_trajectory(smiles: str, cid: int | None, seed: int = 7) -> Trajectory:
    """One-snapshot trajectory: ETKDG geometry (Å), MMFF94 energy (eV) and forces (eV/Å)."""
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=seed) == 0
    field = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
    grad = np.asarray(field.CalcGrad()).reshape(-1, 3)  # kcal/mol/Å
    return Trajectory(
        atomic_numbers=[a.GetAtomicNum() for a in mol.GetAtoms()],
        positions=mol.GetConformer().GetPositions()[None],
        energy=[field.CalcEnergy() * KCAL_PER_MOL_TO_EV],
        forces=-grad[None] * KCAL_PER_MOL_TO_EV,
        stages=["mmff"], cid=cid, smiles=smiles, inchikey=Chem.MolToInchiKey(mol),
    )


def write_store(path, molecules, shard_snapshots=16):
    with TrajectoryWriter(path, source="rdkit etkdg + mmff94",
                          shard_snapshots=shard_snapshots) as writer:
        for smiles, cid in molecules:
            writer.add(molecule_trajectory(smiles, cid))
    return TrajectoryStore(path)


def tanimoto_distance_matrix(smiles):
    """Brute-force Tanimoto distances ``[n, n]`` from the Morgan bits, in NumPy."""
    bits = np.array([list(fp) for fp in splits.morgan_fingerprints(smiles)], dtype=np.float64)
    shared = bits @ bits.T
    count = bits.sum(axis=1)
    return 1.0 - shared / (count[:, None] + count[None, :] - shared)


def brute_force_maxmin(distance, first, k):
    """Greedy MaxMin from ``first``: each pick maximises its distance to the picked set."""
    picked = [first]
    for _ in range(k - 1):
        nearest = distance[:, picked].min(axis=1)
        nearest[picked] = -1.0
        picked.append(int(np.argmax(nearest)))  # ties: the lowest index
    return picked


def assert_partition(parts, n):
    everything = np.concatenate([parts[name] for name in splits.PARTS])
    np.testing.assert_array_equal(np.sort(everything), np.arange(n))


# --------------------------------------------------------------------------- sizes / random


def test_part_sizes_follow_largest_remainder_rule():
    assert splits.part_sizes(10, (0.8, 0.1, 0.1)).tolist() == [8, 1, 1]
    assert splits.part_sizes(7, (0.8, 0.1, 0.1)).tolist() == [5, 1, 1]  # 5.6/0.7/0.7
    assert splits.part_sizes(3, (1 / 3, 1 / 3, 1 / 3)).tolist() == [1, 1, 1]
    assert splits.part_sizes(5, (0.6, 0.2, 0.2)).tolist() == [3, 1, 1]  # no float noise
    assert splits.part_sizes(100, (0.29, 0.71, 0.0)).tolist() == [29, 71, 0]
    rng = np.random.default_rng(1)
    for _ in range(200):
        n, fractions = int(rng.integers(0, 500)), rng.dirichlet([1.0, 1.0, 1.0])
        sizes = splits.part_sizes(n, fractions)
        assert sizes.sum() == n and np.all(np.abs(sizes - fractions * n) < 1.0)


@pytest.mark.parametrize("fractions, words", [
    ((0.8, 0.1, 0.2), "sum to 1"), ((1.2, -0.1, -0.1), "non-negative"),
    ((0.9, 0.1), "need 3"), ((float("nan"), 0.5, 0.5), "finite"),
])
def test_bad_fractions_are_refused(fractions, words):
    with pytest.raises(ValueError, match=words):
        splits.random_split(10, fractions)


def test_random_split_is_a_seeded_partition():
    parts = splits.random_split(1000, (0.6, 0.2, 0.2), seed=42)
    assert [len(parts[p]) for p in splits.PARTS] == [600, 200, 200]
    assert_partition(parts, 1000)
    # the documented rule: cut numpy's default_rng(seed) permutation in part order
    permutation = np.random.default_rng(42).permutation(1000)
    np.testing.assert_array_equal(parts["valid"], np.sort(permutation[600:800]))
    again = splits.random_split(1000, (0.6, 0.2, 0.2), seed=42)
    other = splits.random_split(1000, (0.6, 0.2, 0.2), seed=43)
    assert all(np.array_equal(parts[p], again[p]) for p in splits.PARTS)
    assert not np.array_equal(parts["test"], other["test"])


def test_random_split_of_ids_returns_ids():
    ids = np.array([f"mol-{i}" for i in range(20)])
    parts = splits.random_split(ids, seed=3)
    assert sorted(np.concatenate(list(parts.values())).tolist()) == sorted(ids.tolist())
    by_index = splits.random_split(20, seed=3)
    np.testing.assert_array_equal(parts["test"], ids[by_index["test"]])
    with pytest.raises(ValueError, match="repeat"):
        splits.random_split(["a", "b", "a"])


# --------------------------------------------------------------------------- scaffold


def test_murcko_scaffolds_of_known_molecules():
    assert splits.murcko_scaffold("CC(=O)Oc1ccccc1C(=O)O") == "c1ccccc1"  # aspirin
    assert splits.murcko_scaffold("CC(C)Cc1ccc(cc1)C(C)C(=O)O") == "c1ccccc1"  # ibuprofen
    assert splits.murcko_scaffold("Oc1ccc(Cc2ccccc2)cc1") == "c1ccc(Cc2ccccc2)cc1"  # linker
    assert splits.murcko_scaffold("CCO") == ""  # acyclic
    assert splits.murcko_scaffold("c1ccc2ncccc2c1") == splits.murcko_scaffold("c1cnc2ccccc2c1")
    assert splits.murcko_scaffold("not a smiles") is None
    assert splits.murcko_scaffold("") is None


def test_scaffolds_ignore_chirality_by_default():
    r, s = "c1ccc(cc1)[C@H]1CCCN1", "c1ccc(cc1)[C@@H]1CCCN1"  # stereocentre in the scaffold
    assert splits.murcko_scaffold(r) == splits.murcko_scaffold(s) == "c1ccc(C2CCCN2)cc1"
    assert splits.murcko_scaffold(r, include_chirality=True) != \
        splits.murcko_scaffold(s, include_chirality=True)


def test_scaffold_split_assigns_groups_largest_first_then_later_first_index():
    smiles = ["c1ccccc1C", "C1CCCCC1O", "c1ccccc1O", "c1ccncc1C", "c1ccccc1N",
              "c1ccc2ccccc2c1", "c1ccccc1Cl", "C1CCCCC1N", "c1ccncc1O", "CCO"]
    # groups: benzene {0,2,4,6}; pyridine {3,8}; cyclohexane {1,7}; naphthalene {5}; {9}
    groups, unparsed = splits.scaffold_groups(smiles)
    assert [g.tolist() for g in groups] == [[0, 2, 4, 6], [3, 8], [1, 7], [9], [5]]
    assert unparsed.size == 0
    parts = splits.scaffold_split(smiles, (0.6, 0.2, 0.2))
    # train cut 6: benzene + pyridine; valid cut 8: cyclohexane; the rest overflow to test
    assert parts["train"].tolist() == [0, 2, 3, 4, 6, 8]
    assert parts["valid"].tolist() == [1, 7]
    assert parts["test"].tolist() == [5, 9]


def test_scaffold_split_around_pretraining_molecules():
    smiles = ["c1ccccc1C", "C1CCCCC1O", "c1ccccc1O", "c1ccncc1C", "c1ccccc1N",
              "c1ccc2ccccc2c1", "c1ccccc1Cl", "C1CCCCC1N", "c1ccncc1O", "CCO",
              "c1ccsc1", "c1ccoc1C", "C1CCNCC1"]
    # groups: benzene {0,2,4,6}; pyridine {3,8}; cyclohexane {1,7}; then singletons
    train_only = np.zeros(len(smiles), bool)
    train_only[[2, 8, 1, 7]] = True  # one benzene, one pyridine, both cyclohexanes
    parts = splits.scaffold_split(smiles, (0.6, 0.2, 0.2), train_only=train_only)
    assert_partition(parts, len(smiles))
    # Every group touching a pretraining molecule is in train (9 > the cut of 7.8), so
    # the free singletons are dealt 1:1 to valid and test, the larger deficit first.
    assert parts["train"].tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    assert parts["valid"].tolist() == [5, 10, 12] and parts["test"].tolist() == [9, 11]
    assert not train_only[np.concatenate([parts["valid"], parts["test"]])].any()
    # With no pretraining molecule, train fills as in the usual rule.
    usual = splits.scaffold_split(smiles, (0.6, 0.2, 0.2))
    again = splits.scaffold_split(smiles, (0.6, 0.2, 0.2), train_only=np.zeros(13, bool))
    assert again["train"].tolist() == usual["train"].tolist() == [0, 2, 3, 4, 6, 8, 12]


def test_no_scaffold_crosses_parts_and_unparsed_are_kept(caplog):
    smiles = SMILES + ["C1CC(", "", "c1ccccc1CC"]  # broken ring, empty, another benzene
    with caplog.at_level(logging.WARNING, logger="force2geo.data.splits"):
        parts = splits.scaffold_split(smiles, (0.8, 0.1, 0.1))
    assert_partition(parts, len(smiles))
    owners = {}
    for name, indices in parts.items():
        for i in indices:
            scaffold = splits.murcko_scaffold(smiles[i])
            key = ("unparsed", int(i)) if scaffold is None else scaffold
            assert owners.setdefault(key, name) == name, f"scaffold {key!r} in two parts"
    assert owners["c1ccccc1"] == "train"  # the largest group (12 benzenes) goes to train
    _, unparsed = splits.scaffold_groups(smiles)
    assert unparsed.tolist() == [len(SMILES), len(SMILES) + 1]
    assert f"indices [{len(SMILES)}, {len(SMILES) + 1}]" in caplog.text


# --------------------------------------------------------------------------- maxmin


@pytest.mark.parametrize("seed", [0, 1, 42, 2024])
def test_maxmin_matches_brute_force_numpy(seed):
    distance = tanimoto_distance_matrix(SMILES)
    picks = splits.maxmin_select(SMILES, 15, seed=seed)
    assert len(set(picks.tolist())) == 15
    for j in range(1, 15):  # each pick is as far from the picked set as any candidate
        nearest = distance[:, picks[:j]].min(axis=1)
        nearest[picks[:j]] = -1.0
        assert nearest[picks[j]] == pytest.approx(nearest.max(), abs=1e-12)
    # and the whole sequence equals greedy NumPy MaxMin from the same first pick
    assert picks.tolist() == brute_force_maxmin(distance, int(picks[0]), 15)


def test_maxmin_is_more_diverse_than_random_subsets():
    distance = tanimoto_distance_matrix(SMILES)
    k = 10
    iu = np.triu_indices(k, 1)

    def pairwise(indices):
        return distance[np.ix_(indices, indices)][iu]

    picked = pairwise(splits.maxmin_select(SMILES, k, seed=42))
    rng = np.random.default_rng(0)
    randoms = [pairwise(rng.choice(len(SMILES), k, replace=False)) for _ in range(200)]
    assert picked.min() > max(r.min() for r in randoms)
    assert picked.mean() > max(r.mean() for r in randoms)


def test_maxmin_seeding_inputs_and_limits():
    a = splits.maxmin_select(SMILES, 8, seed=5)
    np.testing.assert_array_equal(a, splits.maxmin_select(SMILES, 8, seed=5))
    firsts = {int(splits.maxmin_select(SMILES, 1, seed=s)[0]) for s in range(10)}
    assert len(firsts) > 3  # the first pick is random, driven by the seed
    fingerprints = splits.morgan_fingerprints(SMILES)
    np.testing.assert_array_equal(a, splits.maxmin_select(fingerprints, 8, seed=5))
    everything = splits.maxmin_select(SMILES, len(SMILES), seed=5)
    assert sorted(everything.tolist()) == list(range(len(SMILES)))
    with pytest.raises(ValueError, match="between 1 and the 40 candidates"):
        splits.maxmin_select(SMILES, 41)
    with pytest.raises(ValueError, match=r"indices \[1\]"):
        splits.maxmin_select(["CCO", "C1CC(", "c1ccccc1"], 2)


def test_maxmin_radius_changes_the_fingerprint():
    r1 = splits.morgan_fingerprints(["CCCCCCO"], radius=1, n_bits=1024)[0]
    r3 = splits.morgan_fingerprints(["CCCCCCO"], radius=3, n_bits=1024)[0]
    assert r1.GetNumBits() == 1024 and r3.GetNumOnBits() > r1.GetNumOnBits()


# --------------------------------------------------------------------------- leakage


def test_remove_leakage_by_inchikey_and_cid():
    aspirin = "BSYNRYMUTXBXSQ-UHFFFAOYSA-N"
    caffeine = "RYYVLZVUVIJVGH-UHFFFAOYSA-N"
    ethanol = "LFQSCWFLJHTTHZ-UHFFFAOYSA-N"
    keys_a = [aspirin, f" {caffeine.lower()} ", "", "", ethanol, "UNKNOWNKEYXXXX-UHFFFAOYSA-N"]
    cids_a = [2244, None, 2519, -1, 9999, 702]
    keys_b = [aspirin, caffeine, "", "PHENOLKEYXXXXX-UHFFFAOYSA-N"]
    cids_b = [None, 1, 2519, -1]
    keep = splits.remove_leakage(keys_a, keys_b, cids_a, cids_b)
    # key match; key match despite case/space; CID match with no key; unknown both ways;
    # ethanol not in b; CID 702 not in b
    assert keep.tolist() == [False, False, False, True, True, True]
    no_cids = splits.remove_leakage(keys_a, keys_b)
    assert no_cids.tolist() == [False, False, True, True, True, True]


def test_remove_leakage_first_block_ignores_stereo():
    r = Chem.MolToInchiKey(Chem.MolFromSmiles("C[C@H](N)c1ccccc1"))
    s = Chem.MolToInchiKey(Chem.MolFromSmiles("C[C@@H](N)c1ccccc1"))
    assert r != s and r[:14] == s[:14]
    assert splits.remove_leakage([r], [s]).tolist() == [True]
    assert splits.remove_leakage([r], [s], first_block=True).tolist() == [False]


# --------------------------------------------------------------------------- stores and files


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("splits") / "store", MOLECULES)


def test_store_holds_real_mmff_labels(store):
    traj = store.trajectory(SMILES.index("CCO"))
    assert traj.inchikey == "LFQSCWFLJHTTHZ-UHFFFAOYSA-N" and traj.cid == 702
    bonds = np.linalg.norm(traj.positions[0, 1] - traj.positions[0, 2])  # C-O bond
    assert 1.35 < bonds < 1.48  # Å, not Bohr
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    conformer = Chem.Conformer(mol.GetNumAtoms())
    for i, xyz in enumerate(traj.positions[0].tolist()):  # the stored geometry, Å
        conformer.SetAtomPosition(i, xyz)
    mol.AddConformer(conformer)
    field = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
    kcal = field.CalcEnergy()
    assert traj.energy[0] == pytest.approx(kcal * 0.0433641, abs=1e-4)  # eV, not kcal/mol


def test_split_store_matches_the_array_functions(store):
    assert store.n_shards > 1
    random = splits.split_store(store, "random", (0.5, 0.25, 0.25), seed=9)
    expected = splits.random_split(len(MOLECULES), (0.5, 0.25, 0.25), seed=9)
    assert all(np.array_equal(random[p], expected[p]) for p in splits.PARTS)
    scaffold = splits.split_store(store.path, "scaffold", (0.8, 0.1, 0.1))
    assert all(np.array_equal(scaffold[p], splits.scaffold_split(SMILES)[p])
               for p in splits.PARTS)
    with pytest.raises(ValueError, match="unknown split method"):
        splits.split_store(store, "butina")


def test_select_store_and_leakage_between_stores(store, tmp_path):
    candidates = np.arange(0, len(MOLECULES), 2)
    picks = splits.select_store(store, 6, seed=1, candidates=candidates)
    local = splits.maxmin_select([SMILES[i] for i in candidates], 6, seed=1)
    np.testing.assert_array_equal(picks, candidates[local])
    # other store: aspirin (same key and CID), quinoline (same key, other CID), a new one
    other = write_store(tmp_path / "other", [MOLECULES[0], ("c1ccc2ncccc2c1", 1),
                                             ("CCCCO", 263)])
    keep = splits.store_leakage_mask(store, other)
    assert np.flatnonzero(~keep).tolist() == [0, 35, 36]  # both quinolines share the key
    keep_part = splits.store_leakage_mask(store, other, indices=[36, 5, 0])
    assert keep_part.tolist() == [False, True, False]


def test_save_and_load_split_round_trip(store, tmp_path):
    parts = splits.split_store(store, "random", seed=4)
    meta = splits.split_meta(store, "random", seed=4, fractions=[0.8, 0.1, 0.1])
    path = splits.save_split(tmp_path / "split.json", parts, meta)
    record = json.loads(path.read_text())
    assert list(record) == ["train", "valid", "test", "meta"]
    assert record["meta"]["store_fingerprint"] == store.fingerprint
    assert record["meta"]["n_trajectories"] == 40 and record["meta"]["seed"] == 4
    loaded, loaded_meta = splits.load_split(path)
    assert all(np.array_equal(loaded[p], parts[p]) for p in splits.PARTS)
    assert loaded_meta == record["meta"]
    assert [p.name for p in tmp_path.iterdir()] == ["split.json"]  # no temporary left


def test_save_split_is_atomic(tmp_path):
    path = splits.save_split(tmp_path / "s.json", {"train": [0, 1]}, {"method": "x"})
    before = path.read_text()
    with pytest.raises(TypeError):  # not JSON-serialisable: fails mid-write
        splits.save_split(path, {"train": [2, 3]}, {"method": object()})
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]
    with pytest.raises(InputError, match="does not exist"):
        splits.save_split(tmp_path / "no" / "s.json", {"train": [0]}, {})


@pytest.mark.parametrize("content, words", [
    (None, "no such split file"),
    ("{not json", "not a readable JSON"),
    ('[1, 2]', "not a split file"),
    ('{"train": [0, -1], "meta": {}}', "record train: must be a list of non-negative"),
    ('{"train": [0, 1.5], "meta": {}}', "record train: must be a list"),
    ('{"train": [0, 1], "test": [2, 1], "meta": {}}', "index 1 appears twice (also in"),
    ('{"train": [0, 3, 3], "meta": {}}', "record train: index 3 appears twice"),
])
def test_load_split_errors_name_file_and_reason(tmp_path, content, words):
    path = tmp_path / "split.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as info:
        splits.load_split(path)
    message = str(info.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message
