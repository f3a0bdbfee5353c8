"""The snapshot loader: batch sizes and atom budgets, seeded shuffles, DDP shards and the
resumable position; splits by trajectory."""

import numpy as np
import pytest
import torch

from force2geo.data.splits import random_split, save_split, split_meta
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.errors import InputError
from force2geo.training import SnapshotLoader, make_batches, split_snapshots
from force2geo.training.data import snapshot_sizes


def test_make_batches_respects_count_and_atom_budget():
    sizes = np.array([5, 3, 9, 2, 2, 30, 4])
    order = np.arange(7)
    assert [b.tolist() for b in make_batches(order, sizes, 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    batches = make_batches(order, sizes, 3, max_atoms=10)
    # 5+3 = 8 (adding 9 would exceed 10); 9; 2+2 (30 alone: over budget by itself); 30; 4
    assert [b.tolist() for b in batches] == [[0, 1], [2], [3, 4], [5], [6]]
    assert all(sizes[b].sum() <= 10 or len(b) == 1 for b in batches)


def test_shuffle_is_seeded_per_epoch_and_shards_are_disjoint(xtb_store):
    store = TrajectoryStore(xtb_store)
    indices = np.arange(3, store.n_snapshots)  # 51 snapshots
    one = SnapshotLoader(store, indices, batch_size=4, seed=7)
    again = SnapshotLoader(store, indices, batch_size=4, seed=7)
    assert [b.tolist() for b in one.global_batches(2)] == \
        [b.tolist() for b in again.global_batches(2)]
    assert one.global_batches(0)[0].tolist() != one.global_batches(1)[0].tolist()
    assert np.array_equal(np.sort(np.concatenate(one.global_batches(3))), indices)

    ranks = [SnapshotLoader(store, indices, batch_size=4, seed=7, rank=r, world_size=3)
             for r in range(3)]
    shards = [r.rank_batches(1) for r in ranks]
    assert len({len(s) for s in shards}) == 1  # 13 batches -> 4 steps each, 1 skipped
    assert len(shards[0]) == 13 // 3
    seen = np.concatenate([b for s in shards for b in s])
    assert np.unique(seen).shape[0] == seen.shape[0]  # disjoint
    # step s of rank r is global batch s * world + r
    assert shards[2][1].tolist() == one.global_batches(1)[1 * 3 + 2].tolist()


def test_evaluation_shards_cover_everything_once(xtb_store):
    store = TrajectoryStore(xtb_store)
    indices = np.arange(store.n_snapshots)
    parts = [SnapshotLoader(store, indices, 5, shuffle=False, rank=r, world_size=2,
                            drop_uneven=False).rank_batches(0) for r in range(2)]
    seen = np.sort(np.concatenate([b for p in parts for b in p]))
    assert np.array_equal(seen, indices)


def test_resumed_position_continues_with_the_next_batch(xtb_store):
    store = TrajectoryStore(xtb_store)
    indices = np.arange(store.n_snapshots)
    loader = SnapshotLoader(store, indices, 8, max_atoms=40, seed=3, dtype=torch.float64)
    straight = []
    for _ in range(2):
        straight += [b.positions.clone() for b in loader.epoch_batches()]
        loader.end_epoch()

    loader = SnapshotLoader(store, indices, 8, max_atoms=40, seed=3, dtype=torch.float64)
    first = []
    for batch in loader.epoch_batches():
        first.append(batch.positions.clone())
        if len(first) == 3:
            break
    state = loader.state_dict()
    assert (state["epoch"], state["batch"]) == (0, 3)
    resumed = SnapshotLoader(store, indices, 8, max_atoms=40, seed=3, dtype=torch.float64)
    resumed.load_state_dict(state)
    rest = []
    for _ in range(2 - resumed.epoch):
        rest += [b.positions.clone() for b in resumed.epoch_batches()]
        resumed.end_epoch()
    together = first + rest
    assert len(together) == len(straight)
    assert all(torch.equal(a, b) for a, b in zip(together, straight, strict=True))
    with pytest.raises(InputError, match="world_size=1, this run has world_size=2"):
        SnapshotLoader(store, indices, 8, rank=0, world_size=2, seed=3).load_state_dict(state)


def test_batches_carry_labels_in_ev_and_angstrom(xtb_store):
    store = TrajectoryStore(xtb_store)
    loader = SnapshotLoader(store, [0, 1], 2, shuffle=False, dtype=torch.float64)
    batch = next(iter(loader))
    water = store.trajectory(0)  # GFN2-xTB water: about -137.9 eV
    assert batch.energy.tolist() == pytest.approx(water.energy[:2].tolist())
    assert -140 < float(batch.energy[0]) < -135
    assert torch.allclose(batch.forces[:3], torch.as_tensor(water.forces[0]), atol=1e-6)


def test_split_snapshots_keeps_trajectories_together(xtb_store, tmp_path):
    store = TrajectoryStore(xtb_store)
    parts = split_snapshots(store, None, (0.6, 0.2, 0.2), seed=1, stages=("xtb",))
    owner = store.snapshot_trajectory()
    groups = [set(owner[ix].tolist()) for ix in parts.values()]
    assert not (groups[0] & groups[1] or groups[0] & groups[2] or groups[1] & groups[2])
    energy_only = store.n_trajectories - 1
    assert all(energy_only not in g for g in groups)  # stage "input" left out
    assert sum(ix.size for ix in parts.values()) == 48
    assert snapshot_sizes(store)[parts["train"]].sum() > 0

    split = random_split(store.n_trajectories, (0.5, 0.25, 0.25), seed=0)
    path = save_split(tmp_path / "split.json", split, split_meta(store, "random", seed=0))
    from_file = split_snapshots(store, str(path))
    assert set(owner[from_file["valid"]].tolist()) == set(split["valid"].tolist())
    meta = split_meta(store, "random")
    meta["store_fingerprint"] = "0" * 16
    other = save_split(tmp_path / "other.json", split, meta)
    with pytest.raises(InputError, match="fingerprint"):
        split_snapshots(store, str(other))


def test_snapshot_sizes_across_shards(xtb_store, tmp_path):
    store = TrajectoryStore(xtb_store)
    with TrajectoryWriter(tmp_path / "sharded", shard_snapshots=10) as writer:
        writer.extend(store.trajectories())
    sharded = TrajectoryStore(tmp_path / "sharded")
    assert sharded.n_shards > 3
    picks = np.array([53, 0, 17, 12, 11, 40, 40])
    expected = [sharded[int(i)].atomic_numbers.shape[0] for i in picks]
    assert snapshot_sizes(sharded, picks).tolist() == expected
    assert snapshot_sizes(sharded).tolist() == [len(s.atomic_numbers) for s in
                                               (sharded[i] for i in range(len(sharded)))]
    # The atom budget holds on a sharded store as well.
    loader = SnapshotLoader(sharded, np.arange(len(sharded)), 16, max_atoms=20, seed=1)
    for indices in loader.global_batches(0):
        assert snapshot_sizes(sharded, indices).sum() <= 20 or len(indices) == 1
