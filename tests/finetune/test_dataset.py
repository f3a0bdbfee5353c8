"""Property datasets built from a real ``force2geo generate`` store (RDKit, MMFF94, tblite
GFN2-xTB) and from a single-snapshot store with shuffled atoms, as QM9-like conversions
make: frames, atom order, targets, files, batches, splits, leakage, MLIP relaxation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.finetune import (
    PropertyDataset,
    add_rdkit_conformers,
    from_store,
    relax_geometries,
    split_dataset,
)
from force2geo.finetune.build import stage_geometries
from force2geo.finetune.conformers import connectivity_mol, smiles_in_order
from force2geo.models import PaiNN, PaiNNConfig, Potential
from force2geo.models.gin import smiles_graph
from force2geo.pretrained import read_registry
from force2geo.qc.generate import generate
from force2geo.qc.molecules import Molecule
from force2geo.qc.protocol import ProtocolConfig
from force2geo.relax import RelaxConfig

MOLECULES = [Molecule("ethanol", "CCO"), Molecule("alanine", "C[C@@H](N)C(=O)O"),
             Molecule("phenol", "Oc1ccccc1"), Molecule("pyridine", "c1ccncc1"),
             Molecule("acetanilide", "CC(=O)Nc1ccccc1")]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    """A real protocol store: ETKDG -> MMFF94 -> GFN2-xTB trajectories (a few seconds)."""
    path = tmp_path_factory.mktemp("finetune") / "store"
    stats = generate(MOLECULES, path, ProtocolConfig(max_mmff_frames=3), workers=1,
                     progress=False)
    assert stats.written == len(MOLECULES)
    return path


@pytest.fixture(scope="module")
def dataset(store_path):
    return from_store(store_path, "gap", progress=False)


@pytest.fixture(scope="module")
def snapshot_store(store_path, tmp_path_factory):
    """The xTB minima as one-snapshot ``dft`` trajectories with atoms shuffled (the shape
    of a QM9 / Molecule3D conversion), plus one record whose SMILES names another molecule
    of the same formula (ethanol's geometry, dimethyl ether's SMILES)."""
    store = TrajectoryStore(store_path)
    path = tmp_path_factory.mktemp("finetune-snap") / "store"
    rng = np.random.default_rng(7)
    permutations = []
    with TrajectoryWriter(path, source="test: shuffled minima") as writer:
        for j in range(store.n_trajectories):
            t = store.trajectory(j)
            perm = rng.permutation(t.n_atoms)
            permutations.append(perm)
            writer.add(Trajectory(t.atomic_numbers[perm], t.positions[-1][perm], t.energy[-1:],
                                  None, "dft", smiles=t.smiles, inchikey=t.inchikey,
                                  name=t.name, properties=t.properties))
        ethanol = store.trajectory(0)
        writer.add(Trajectory(ethanol.atomic_numbers, ethanol.positions[-1], ethanol.energy[-1:],
                              None, "dft", smiles="COC", inchikey="", name="wrong-smiles",
                              properties={"gap": 1.0}))
    return path, permutations


def bonded_pairs(z, positions):
    mol = connectivity_mol(z, positions)
    return np.array([(b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds()])


def bond_lengths(positions, pairs):
    return np.linalg.norm(positions[pairs[:, 0]] - positions[pairs[:, 1]], axis=1)


def chiral_volume(positions, centre, neighbours):
    a, b, c = (positions[n] - positions[centre] for n in neighbours[:3])
    return float(np.dot(a, np.cross(b, c)))


def test_geometries_are_the_stored_frames(dataset, store_path):
    store = TrajectoryStore(store_path)
    assert len(dataset) == store.n_trajectories == len(MOLECULES)
    assert dataset.target_names == tuple(store.property_names)
    for i in range(len(dataset)):
        raw = store.trajectory(int(dataset.source_indices[i]))
        stages = np.array(raw.stages)
        xtb = np.flatnonzero(stages == "xtb")
        assert dataset.names[i] == raw.name and dataset.smiles[i] == raw.smiles
        assert dataset.inchikeys[i] == raw.inchikey
        np.testing.assert_array_equal(dataset.atomic_numbers(i), raw.atomic_numbers)
        # float32 in both files: equal to the bit
        np.testing.assert_array_equal(dataset.positions(i, "ground_truth"), raw.positions[-1])
        np.testing.assert_array_equal(dataset.positions(i, "early"), raw.positions[xtb[0]])
        np.testing.assert_array_equal(dataset.positions(i, "rdkit"),
                                      raw.positions[np.flatnonzero(stages == "etkdg")[0]])
        # early = the last MMFF geometry, where the xTB relaxation starts
        np.testing.assert_array_equal(raw.positions[xtb[0]],
                                      raw.positions[np.flatnonzero(stages == "mmff")[-1]])
        for name in dataset.target_names:
            assert dataset.target(name)[i] == raw.properties[name]
    assert not dataset.has("mlip").any()
    assert dataset.meta["source"]["store_fingerprint"] == store.fingerprint
    assert dataset.meta["source"]["levels"]["xtb"] == "GFN2-xTB"


def test_stage_rule_for_single_points_and_two_dft_substages():
    z = np.array([1, 1])
    x = np.arange(5 * 2 * 3, dtype=float).reshape(5, 2, 3)
    # generate --dft single: the dft frame repeats the last xtb frame -> early = first xtb
    single = Trajectory(z, np.concatenate([x[:4], x[3:4]]), np.zeros(5), None,
                        ["etkdg", "mmff", "xtb", "xtb", "dft"])
    geometries = stage_geometries(single)
    np.testing.assert_array_equal(geometries["early"], x[2])
    np.testing.assert_array_equal(geometries["ground_truth"], x[3])
    # PubChemQCR: dft1 + dft2 are one DFT relaxation, which starts at the first dft1 frame
    pubchem = Trajectory(z, x, np.zeros(5), None, ["pm3", "hf", "dft1", "dft2", "dft2"])
    geometries = stage_geometries(pubchem)
    np.testing.assert_array_equal(geometries["early"], x[2])
    assert "rdkit" not in geometries
    assert set(stage_geometries(Trajectory(z, x[:1], [0.0], None, "dft"))) == {"ground_truth"}


def test_rdkit_conformers_share_the_ground_truth_atom_order(dataset):
    fresh = dataset.subset(np.arange(len(dataset)))
    failures = add_rdkit_conformers(fresh, seed=3, overwrite=True, progress=False)
    assert failures == {}
    for i in range(len(fresh)):
        z, truth = fresh.atomic_numbers(i), fresh.positions(i, "ground_truth")
        made = fresh.positions(i, "rdkit")
        assert not np.allclose(made, dataset.positions(i, "rdkit"))  # a new conformer
        pairs = bonded_pairs(z, truth)
        np.testing.assert_allclose(bond_lengths(made, pairs), bond_lengths(truth, pairs),
                                   atol=0.1)


def test_snapshot_store_gets_ordered_conformers_and_no_early(snapshot_store, dataset):
    path, permutations = snapshot_store
    snap = from_store(path, "gap", seed=11, progress=False)
    assert len(snap) == len(MOLECULES) + 1
    assert not snap.has("early").any()
    wrong = snap.names.index("wrong-smiles")
    assert snap.has("rdkit").tolist() == [k != wrong for k in range(len(snap))]
    reason = snap.meta["rdkit"]["failures"][str(wrong)]
    assert "differs from the SMILES" in reason
    assert snap.meta["build"]["rdkit_failures"] == 1
    for i, perm in enumerate(permutations):
        truth = snap.positions(i, "ground_truth")
        np.testing.assert_array_equal(truth, dataset.positions(i, "ground_truth")[perm])
        made = snap.positions(i, "rdkit")
        pairs = bonded_pairs(snap.atomic_numbers(i), truth)
        np.testing.assert_allclose(bond_lengths(made, pairs), bond_lengths(truth, pairs),
                                   atol=0.1)
    # alanine keeps its configuration: the signed volume at the stereocentre agrees
    k = snap.names.index("alanine")
    mol = smiles_in_order(snap.smiles[k], snap.atomic_numbers(k),
                          snap.positions(k, "ground_truth"))
    centre = next(a for a in mol.GetAtoms() if str(a.GetChiralTag()) != "CHI_UNSPECIFIED")
    neighbours = [n.GetIdx() for n in centre.GetNeighbors()]
    signs = {np.sign(chiral_volume(snap.positions(k, g), centre.GetIdx(), neighbours))
             for g in ("ground_truth", "rdkit")}
    assert len(signs) == 1


def test_save_load_round_trip(dataset, tmp_path):
    folder = dataset.save(tmp_path / "ds")
    loaded = PropertyDataset.load(folder)
    loaded.verify()
    assert loaded.fingerprint == dataset.fingerprint
    assert (loaded.names, loaded.smiles, loaded.inchikeys) == (dataset.names, dataset.smiles,
                                                               dataset.inchikeys)
    assert loaded.meta["build"] == dataset.meta["build"]
    for i in range(len(dataset)):
        for g in ("ground_truth", "rdkit", "early"):
            np.testing.assert_array_equal(loaded.positions(i, g), dataset.positions(i, g))
    np.testing.assert_array_equal(loaded.target("gap"), dataset.target("gap"))
    with pytest.raises(InputError, match="exists"):
        dataset.save(folder)
    not_a_dataset = tmp_path / "other"
    not_a_dataset.mkdir()
    (not_a_dataset / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not a property dataset"):
        dataset.save(not_a_dataset, overwrite=True)
    assert (not_a_dataset / "keep.txt").exists()
    targets = np.load(folder / "targets.npy")
    targets[0, 0] += 1.0
    np.save(folder / "targets.npy", targets)
    with pytest.raises(InputError, match="checksum mismatch"):
        PropertyDataset.load(folder).verify()
    assert not list(tmp_path.glob(".*tmp*"))


def test_batch_contents(dataset):
    indices = np.array([3, 0, 2])
    pb = dataset.batch(indices, "early", "xtb_gap", with_2d=True, dtype=torch.float64)
    sizes = [len(dataset.atomic_numbers(i)) for i in indices]
    np.testing.assert_array_equal(pb.batch.positions.numpy(),
                                  np.concatenate([dataset.positions(i, "early")
                                                  for i in indices]))
    np.testing.assert_array_equal(pb.ground_truth.numpy(),
                                  np.concatenate([dataset.positions(i, "ground_truth")
                                                  for i in indices]))
    np.testing.assert_array_equal(pb.batch.system_idx.numpy(), np.repeat(np.arange(3), sizes))
    np.testing.assert_array_equal(pb.batch.atomic_numbers.numpy(),
                                  np.concatenate([dataset.atomic_numbers(i) for i in indices]))
    np.testing.assert_array_equal(pb.targets.numpy(), dataset.target("xtb_gap")[indices])
    np.testing.assert_array_equal(pb.indices, indices)
    heavy = [int((dataset.atomic_numbers(i) > 1).sum()) for i in indices]
    assert np.bincount(pb.graph2d.node_system.numpy()).tolist() == heavy
    np.testing.assert_array_equal(pb.graph2d.atom_features[: heavy[0]].numpy(),
                                  smiles_graph(dataset.smiles[3])[0])
    noisy = [dataset.positions(i, "ground_truth") + 0.1 for i in indices]
    override = dataset.batch(indices, positions=noisy, target=None)
    assert override.targets is None
    np.testing.assert_allclose(override.batch.positions.numpy(), np.concatenate(noisy),
                               atol=1e-6)
    with pytest.raises(ValueError, match="no 'mlip' geometry"):
        dataset.batch(indices, "mlip")


def test_splits_are_disjoint_and_leakage_is_removed(dataset, store_path, tmp_path):
    for method in ("random", "scaffold"):
        split = split_dataset(dataset, method, (0.6, 0.2, 0.2), seed=1)
        together = np.concatenate([split[p] for p in ("train", "valid", "test")])
        assert sorted(together.tolist()) == list(range(len(dataset)))
    scaffold = split_dataset(dataset, "scaffold", (0.6, 0.2, 0.2))
    benzene = [dataset.names.index("phenol"), dataset.names.index("acetanilide")]
    assert set(benzene) <= set(scaffold["train"].tolist())  # one scaffold, one part
    # pretraining data holding two molecules: they leave valid/test, not train
    store = TrajectoryStore(store_path)
    pretraining = tmp_path / "pretraining"
    leaked = {"alanine", "pyridine"}
    with TrajectoryWriter(pretraining) as writer:
        for j in range(store.n_trajectories):
            if store.trajectory(j).name in leaked:
                writer.add(store.trajectory(j))
    base = split_dataset(dataset, "random", (0.2, 0.4, 0.4), seed=5)
    clean = split_dataset(dataset, "random", (0.2, 0.4, 0.4), seed=5, pretraining=pretraining)
    np.testing.assert_array_equal(clean["train"], base["train"])
    for part in ("valid", "test"):
        names = {dataset.names[i] for i in clean[part]}
        assert not names & leaked
        assert names == {dataset.names[i] for i in base[part]} - leaked
    by_key = split_dataset(dataset, "random", (0.2, 0.4, 0.4), seed=5,
                           pretraining=[dataset.inchikeys[dataset.names.index("alanine")]])
    assert "alanine" not in {dataset.names[i] for p in ("valid", "test") for i in by_key[p]}


def test_relax_geometries_with_a_painn_potential(dataset, tmp_path):
    torch.manual_seed(0)
    potential = Potential(PaiNN(PaiNNConfig(hidden_channels=16, num_layers=2, num_rbf=16,
                                            cutoff=4.0))).double().eval()
    data = dataset.subset(np.arange(len(dataset)))
    record = relax_geometries(data, potential, "early",
                              RelaxConfig(max_steps=8, trajectory=True), indices=[0, 2, 3],
                              progress=False)
    assert record["relaxed"] == 3 and sum(record["status_counts"].values()) == 3
    assert data.has("mlip").tolist() == [True, False, True, True, False]
    assert data.trajectory(1) is None and data.relax_status[1] == ""
    for i in (0, 2, 3):
        frames = data.trajectory(i)
        assert frames.shape == (data.relax_steps[i] + 1, len(data.atomic_numbers(i)), 3)
        np.testing.assert_array_equal(frames[-1], data.positions(i, "mlip"))
        np.testing.assert_allclose(frames[0], data.positions(i, "early"), atol=1e-6)
        assert data.relax_status[i] in ("converged", "step_limit", "diverged")
        assert len(data.trajectory_energy(i)) == len(frames)
    moved = np.abs(data.positions(0, "mlip") - data.positions(0, "early")).max()
    assert moved > 1e-4 or data.relax_steps[0] == 0
    loaded = PropertyDataset.load(data.save(tmp_path / "relaxed"))
    sub = loaded.subset([3, 0])
    np.testing.assert_array_equal(sub.trajectory(0), data.trajectory(3))
    np.testing.assert_array_equal(sub.trajectory(1), data.trajectory(0))
    assert sub.relax_status.tolist() == [data.relax_status[3], data.relax_status[0]]
    assert loaded.meta["relax"]["start"] == "early"


def test_cli_build_and_info(store_path, tmp_path, capsys):
    out = tmp_path / "cli-ds"
    assert main(["dataset", "build", str(store_path), "-o", str(out), "--target", "xtb_gap",
                 "--limit", "3", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["dataset", "info", str(out), "--json", "--verify"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["molecules"] == 3
    assert summary["geometries"] == {"ground_truth": 3, "rdkit": 3, "early": 3, "mlip": 0}
    assert PropertyDataset.load(out).meta["default_target"] == "xtb_gap"
    assert main(["dataset", "build", str(store_path), "-o", str(out)]) == 1  # exists
    assert main(["dataset", "build", str(store_path), "-o", str(tmp_path / "x"),
                 "--target", "dipole"]) == 1


def test_cli_relax_only_the_parts_of_a_store_split(store_path, tmp_path, capsys):
    """dataset relax --only FILE:PART [--sample N]: exactly those molecules get an mlip
    geometry (store trajectory indices mapped through the dataset's source indices)."""
    from force2geo.data.splits import save_split, split_meta
    from force2geo.data.store import TrajectoryStore

    store = TrajectoryStore(store_path)
    out = tmp_path / "ds"
    assert main(["dataset", "build", str(store_path), "-o", str(out), "--no-rdkit",
                 "--no-progress"]) == 0
    save_split(tmp_path / "split.json", {"train": np.array([0, 1, 4]), "valid": np.array([2]),
                                         "test": np.array([3])}, split_meta(store, "hand"))
    ckpt = _tiny_checkpoint(store_path, tmp_path)
    assert main(["dataset", "relax", str(out), "--model", str(ckpt), "--only",
                 f"{tmp_path / 'split.json'}:test", "--only", f"{tmp_path / 'split.json'}:train",
                 "--sample", "2", "--steps", "3", "--no-progress", "--threads", "1"]) == 0
    data = PropertyDataset.load(out)
    relaxed = set(data.source_indices[data.has("mlip")].tolist())
    assert 3 in relaxed and 2 not in relaxed and len(relaxed & {0, 1, 4}) == 2
    assert main(["dataset", "relax", str(out), "--model", str(ckpt), "--only",
                 f"{tmp_path / 'split.json'}:nope"]) == 1
    assert "no part 'nope'" in capsys.readouterr().err
    # A shipped model by name; the record names its file and SHA-256.
    assert main(["dataset", "relax", str(out), "--model", "force2geo-painn-xtb", "--only",
                 f"{tmp_path / 'split.json'}:valid", "--steps", "2", "--no-progress",
                 "--threads", "1"]) == 0
    data = PropertyDataset.load(out)
    assert 2 in set(data.source_indices[data.has("mlip")].tolist())
    model = data.meta["relax"]["model"]
    assert model["spec"] == "force2geo-painn-xtb"
    shipped = [f.file for f in read_registry()["force2geo-painn-xtb"].files]
    assert [Path(f["path"]).name for f in model["files"]] == shipped  # every member
    assert all(len(f["sha256"]) == 64 for f in model["files"])
    history = data.meta["relax_history"]  # one record per call, the latest also as "relax"
    assert len(history) == 2 and history[-1] == data.meta["relax"]
    assert history[0]["model"]["spec"] == str(ckpt) and history[0]["relaxed"] == 3


def _tiny_checkpoint(store_path, tmp_path):
    from force2geo.training import TrainConfig, fit

    config = TrainConfig(data=str(store_path), run_dir=str(tmp_path / "mlip"),
                         model_config={"hidden_channels": 8, "num_layers": 1, "num_rbf": 8},
                         epochs=1, max_steps=1, device="cpu", plots=False,
                         split_fractions=(1.0, 0.0, 0.0))
    fit(config)
    return tmp_path / "mlip" / "last.pt"
