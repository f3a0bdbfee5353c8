"""Snapshots of a :class:`~force2geo.data.store.TrajectoryStore` in training batches.

* :func:`split_snapshots`: train/valid/test *snapshot* indices from a split of the
  store's *trajectories* (a split file, or a seeded random split), so that all snapshots
  of a molecule land in one part.
* :class:`SnapshotLoader`: per-epoch seeded shuffling, batches of at most ``batch_size``
  snapshots and (optionally) ``max_atoms`` atoms, sharded across data-parallel ranks,
  with a resumable position ``(epoch, batch)``.

Sharding: the epoch's batches are cut from one permutation shared by all ranks; step ``s``
of rank ``r`` is batch ``s * world_size + r``. Every rank thus gets a disjoint slice and
the same number of steps; the at most ``world_size - 1`` batches left over at the end of
an epoch are skipped (a different few each epoch, as the permutation changes). Evaluation
loaders (``drop_uneven=False``) give rank ``r`` batches ``r, r + world_size, ...`` and
skip nothing: their metrics are sums added over ranks.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from force2geo.data.splits import PARTS, load_split, random_split
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.models.batch import Batch


def snapshot_sizes(store: TrajectoryStore, indices: np.ndarray | None = None) -> np.ndarray:
    """Number of atoms of the snapshots ``indices`` (default: all), int64, from the shards'
    offset columns, one shard at a time (no coordinates are read)."""
    if indices is None:
        indices = np.arange(store.n_snapshots, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    sizes = np.empty(indices.shape[0], dtype=np.int64)
    start = 0
    for s in range(store.n_shards):
        offsets = np.asarray(store.shard(s).snap_atom_offset)
        end = start + offsets.shape[0] - 1
        mine = np.flatnonzero((indices >= start) & (indices < end))
        local = indices[mine] - start
        sizes[mine] = offsets[local + 1] - offsets[local]
        start = end
    return sizes


def snapshot_elements(store: TrajectoryStore, indices: np.ndarray) -> tuple[int, ...]:
    """The atomic numbers present in the snapshots ``indices``, ascending: read from each
    shard's element column, one shard at a time (no coordinates are read)."""
    from force2geo.data.store import concat_ranges

    indices = np.asarray(indices, dtype=np.int64)
    seen = np.zeros(256, dtype=bool)  # the store keeps atomic numbers as uint8
    start = 0
    for s in range(store.n_shards):
        shard = store.shard(s)
        end = start + shard.snap_traj.shape[0]
        local = indices[(indices >= start) & (indices < end)] - start
        start = end
        if not local.size:
            continue
        trajectories = np.unique(np.asarray(shard.snap_traj)[local].astype(np.int64))
        offsets = np.asarray(shard.traj_atom_offset)
        rows = concat_ranges(offsets[trajectories], offsets[trajectories + 1]
                             - offsets[trajectories])
        seen[np.asarray(shard.atomic_numbers)[rows]] = True
    return tuple(int(z) for z in np.flatnonzero(seen))


def split_trajectories(store: TrajectoryStore, split: str | None,
                       fractions=(0.8, 0.1, 0.1), seed: int = 42) -> dict[str, np.ndarray]:
    """Trajectory indices per part: from the split file ``split`` (checked against the
    store's fingerprint and size), or a random split with ``fractions`` and ``seed``."""
    if split is None:
        return random_split(store.n_trajectories, fractions, seed)
    parts, meta = load_split(split)
    expected = meta.get("store_fingerprint")
    if expected is not None and expected != store.fingerprint:
        raise InputError(split, f"was made for a store with fingerprint {expected}, but "
                         f"{store.path} has fingerprint {store.fingerprint}")
    for name, indices in parts.items():
        if indices.size and indices.max() >= store.n_trajectories:
            raise InputError(split, f"trajectory index {int(indices.max())} is out of range "
                             f"for {store.path} ({store.n_trajectories} trajectories)",
                             record=name)
    if "train" not in parts:
        raise InputError(split, f"has no 'train' part (parts: {', '.join(parts) or 'none'})")
    return parts


def split_snapshots(store: TrajectoryStore, split: str | None = None,
                    fractions=(0.8, 0.1, 0.1), seed: int = 42,
                    stages: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Snapshot indices (int64, ascending) of each part, restricted to ``stages`` (all
    when empty). Parts are those of :data:`~force2geo.data.splits.PARTS` that exist."""
    trajectories = split_trajectories(store, split, fractions, seed)
    try:
        return {name: store.select(stages or None, trajectories=trajectories[name])
                for name in PARTS if name in trajectories}
    except ValueError as exc:  # an unknown stage name
        raise InputError(store.path, str(exc)) from None


def make_batches(order: np.ndarray, sizes: np.ndarray, batch_size: int,
                 max_atoms: int | None = None) -> list[np.ndarray]:
    """Cut ``order`` (snapshot indices) into consecutive batches of at most ``batch_size``
    snapshots and, when given, at most ``max_atoms`` atoms (``sizes[i]`` atoms for
    snapshot ``i``). A snapshot larger than ``max_atoms`` on its own forms its own batch."""
    order = np.asarray(order, dtype=np.int64)
    if max_atoms is None:
        return [order[a : a + batch_size] for a in range(0, order.shape[0], batch_size)]
    batches, start, atoms = [], 0, 0
    counts = np.asarray(sizes)[order]
    for k, n in enumerate(counts.tolist()):
        if k > start and (k - start == batch_size or atoms + n > max_atoms):
            batches.append(order[start:k])
            start, atoms = k, 0
        atoms += n
    if start < order.shape[0]:
        batches.append(order[start:])
    return batches


class SnapshotLoader:
    """Batches of snapshots ``indices`` of ``store`` for one data-parallel ``rank``.

    ``shuffle``: a new permutation each epoch from ``numpy.random.default_rng((seed,
    epoch))``, the same on every rank and on resume. ``position`` is ``(epoch, batch)``:
    the next batch this rank will yield. Batches come as :class:`Batch` in ``dtype``.
    """

    def __init__(self, store: TrajectoryStore, indices: np.ndarray, batch_size: int,
                 max_atoms: int | None = None, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1, drop_uneven: bool = True,
                 dtype: torch.dtype = torch.float32):
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size, self.max_atoms = int(batch_size), max_atoms
        self.shuffle, self.seed = shuffle, int(seed)
        self.rank, self.world_size, self.drop_uneven = rank, world_size, drop_uneven
        self.dtype = dtype
        # Atoms of each of ``indices`` (same order), needed only for an atom budget.
        self.sizes = snapshot_sizes(store, self.indices) if max_atoms is not None else None
        self.epoch, self.batch = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    # -- the plan of an epoch
    def global_batches(self, epoch: int) -> list[np.ndarray]:
        """Every batch of ``epoch`` over all ranks, as snapshot-index arrays."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        # Batches are cut over positions in ``indices``, then mapped to snapshot indices.
        order = np.arange(self.indices.shape[0], dtype=np.int64)
        if self.shuffle:
            order = np.random.default_rng((self.seed, epoch)).permutation(order.shape[0])
        batches = [self.indices[b] for b in
                   make_batches(order, self.sizes, self.batch_size, self.max_atoms)]
        self._cache = (epoch, batches)
        return batches

    def rank_batches(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches of ``epoch``, in the order it steps through them."""
        batches = self.global_batches(epoch)
        if self.drop_uneven:
            steps = len(batches) // self.world_size
            return [batches[s * self.world_size + self.rank] for s in range(steps)]
        return batches[self.rank :: self.world_size]

    def __len__(self) -> int:
        """Batches of this rank in the current epoch."""
        return len(self.rank_batches(self.epoch))

    # -- iteration with a resumable position
    def epoch_batches(self) -> Iterator[Batch]:
        """Yield the rest of the current epoch's batches from ``position``.

        The position moves to the next batch *before* a batch is yielded, so a checkpoint
        written after a training step on it resumes with the batch that follows.
        """
        batches = self.rank_batches(self.epoch)
        while self.batch < len(batches):
            indices = batches[self.batch]
            self.batch += 1
            yield self.load(indices)

    def end_epoch(self) -> None:
        """Move the position to the first batch of the next epoch."""
        self.epoch, self.batch = self.epoch + 1, 0

    def load(self, indices: np.ndarray) -> Batch:
        """The snapshots ``indices`` as one :class:`Batch` (positions and forces in
        ``dtype``, energies float64)."""
        return Batch.from_store(self.store.read(indices), dtype=self.dtype)

    def __iter__(self) -> Iterator[Batch]:
        """All of this rank's batches of the current epoch, ignoring the position (for
        evaluation)."""
        for indices in self.rank_batches(self.epoch):
            yield self.load(indices)

    @property
    def position(self) -> tuple[int, int]:
        return self.epoch, self.batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "seed": self.seed,
                "n_indices": int(self.indices.shape[0]), "world_size": self.world_size}

    def load_state_dict(self, state: dict, source: str | Path | None = None) -> None:
        """Resume at ``state``'s position; refuse a state made for other data or another
        number of ranks (its batches would not be these batches)."""
        for key, mine in (("seed", self.seed), ("n_indices", int(self.indices.shape[0])),
                          ("world_size", self.world_size)):
            if state[key] != mine:
                raise InputError(source, f"loader position was saved with {key}="
                                 f"{state[key]}, this run has {key}={mine}; an exact resume "
                                 "needs the same data, seed and number of processes")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])
