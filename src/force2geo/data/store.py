"""The on-disk trajectory store: sharded, columnar, memory-mapped, crash-safe.

Layout of a store folder::

    STORE/
      manifest.json          # format, units, stage table, sources, shards with checksums
      shard-000000/          # one immutable shard: plain .npy columns
        positions.npy        # float32 [n_atoms_total, 3]   Å
        forces.npy           # float32 [n_atoms_total, 3]   eV/Å (NaN where unknown)
        energy.npy           # float64 [n_snapshots]        eV   (NaN where unknown)
        stage.npy            # uint8   [n_snapshots]        index into manifest["stages"]
        snap_atom_offset.npy # int64   [n_snapshots + 1]    rows of positions/forces
        snap_traj.npy        # int32   [n_snapshots]        trajectory within the shard
        traj_snap_offset.npy # int64   [n_trajectories + 1]
        traj_atom_offset.npy # int64   [n_trajectories + 1] rows of atomic_numbers
        atomic_numbers.npy   # uint8   [sum of n_atoms over trajectories]
        charge.npy           # int16   [n_trajectories]
        cid.npy              # int64   [n_trajectories]     -1 when unknown
        properties.npy       # float64 [n_trajectories, n_properties] (names in manifest)
        smiles.bin, smiles_offset.npy, inchikey.bin, ..., name.bin, name_offset.npy

A shard is written under a temporary name, synced, renamed, and only then entered in
the manifest (itself replaced atomically), so a crash never leaves a shard that reads as
valid: readers see only what the manifest lists, and writers sweep away the rest.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from force2geo.data.shard import (
    MANIFEST,
    STRING_COLUMNS,
    Shard,
    fsync_dir,
    new_manifest,
    npy_bytes,
    pack_shard,
    read_manifest,
    write_file,
    write_manifest,
)
from force2geo.data.trajectory import Trajectory
from force2geo.errors import StoreError

__all__ = ["MANIFEST", "Snapshot", "TrajectoryStore", "TrajectoryWriter"]

DEFAULT_SHARD_SNAPSHOTS = 262_144


class Snapshot(NamedTuple):
    """One geometry: ``positions [n_atoms, 3]`` Å, ``forces [n_atoms, 3]`` eV/Å, energy eV."""

    atomic_numbers: np.ndarray
    positions: np.ndarray
    forces: np.ndarray
    energy: float
    stage: str
    trajectory: int
    charge: int


# --------------------------------------------------------------------------- reader


class TrajectoryStore:
    """Random access to snapshots and trajectories of a store folder.

    ``store[i]`` is snapshot ``i`` (a :class:`Snapshot`), ``store.trajectory(j)`` is
    trajectory ``j``; both are O(1) (a bisection over shards, then array offsets).
    ``store.read(indices)`` gathers many snapshots at once as a concatenated batch.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self.stage_names: list[str] = list(self.manifest["stages"])
        self.property_names: list[str] = list(self.manifest["property_names"])
        entries = self.manifest["shards"]
        self._entries = entries
        self._snap_start = np.concatenate(
            [[0], np.cumsum([e["n_snapshots"] for e in entries])]).astype(np.int64)
        self._traj_start = np.concatenate(
            [[0], np.cumsum([e["n_trajectories"] for e in entries])]).astype(np.int64)
        self._snap_start_list = self._snap_start.tolist()
        self._traj_start_list = self._traj_start.tolist()
        self._shards: list[Shard | None] = [None] * len(entries)

    # -- sizes
    def __len__(self) -> int:
        return int(self._snap_start[-1])

    @property
    def n_snapshots(self) -> int:
        return int(self._snap_start[-1])

    @property
    def n_trajectories(self) -> int:
        return int(self._traj_start[-1])

    @property
    def n_shards(self) -> int:
        return len(self._entries)

    @property
    def fingerprint(self) -> str:
        """A hash of every shard's checksums: equal fingerprints mean equal data."""
        digest = hashlib.sha256()
        for entry in self._entries:
            for name in sorted(entry["files"]):
                digest.update(entry["files"][name]["sha256"].encode())
        return digest.hexdigest()[:16]

    def shard(self, s: int) -> Shard:
        shard = self._shards[s]
        if shard is None:
            shard = self._shards[s] = Shard(self.path, self._entries[s])
        return shard

    def open_all(self) -> TrajectoryStore:
        """Open (and size-check) every shard now instead of on first use."""
        for s in range(self.n_shards):
            self.shard(s)
        return self

    # -- snapshots
    def _locate(self, i: int, starts: list[int], total: int) -> tuple[int, int]:
        if i < 0:
            i += total
        if not 0 <= i < total:
            raise IndexError(f"index {i} out of range for {total}")
        s = bisect.bisect_right(starts, i) - 1
        return s, i - starts[s]

    def __getitem__(self, i: int) -> Snapshot:
        s, li = self._locate(int(i), self._snap_start_list, self.n_snapshots)
        sh = self._shards[s] or self.shard(s)
        a, b = sh.snap_atom_offset[li : li + 2]
        t = int(sh.snap_traj[li])
        za, zb = sh.traj_atom_offset[t : t + 2]
        return Snapshot(
            sh.atomic_numbers[za:zb], sh.positions[a:b], sh.forces[a:b], float(sh.energy[li]),
            self.stage_names[sh.stage[li]], self._traj_start_list[s] + t, int(sh.charge[t]),
        )

    def read(self, indices: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        """Gather snapshots into one concatenated batch, in the order given.

        Returns ``atomic_numbers [n_atoms]``, ``positions [n_atoms, 3]``, ``forces
        [n_atoms, 3]``, ``system_idx [n_atoms]`` and per system ``energy``, ``stage``
        (codes into ``stage_names``), ``trajectory``, ``charge``, ``n_atoms``, ``index``.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= self.n_snapshots):
            raise IndexError(f"snapshot indices out of range for {self.n_snapshots}")
        shard_of = np.searchsorted(self._snap_start, indices, side="right") - 1
        order = np.argsort(shard_of, kind="stable")
        parts = []
        for s in np.unique(shard_of):
            members = order[shard_of[order] == s]
            local = indices[members] - self._snap_start[s]
            parts.append((members, self._read_shard(int(s), local)))
        return _assemble(indices, parts)

    def _read_shard(self, s: int, local: np.ndarray) -> dict[str, np.ndarray]:
        sh = self.shard(s)
        start = sh.snap_atom_offset[local]
        n_atoms = sh.snap_atom_offset[local + 1] - start
        rows = concat_ranges(start, n_atoms)
        traj = sh.snap_traj[local].astype(np.int64)
        z_rows = concat_ranges(sh.traj_atom_offset[traj], n_atoms)
        return {
            "atomic_numbers": sh.atomic_numbers[z_rows],
            "positions": sh.positions[rows],
            "forces": sh.forces[rows],
            "energy": sh.energy[local],
            "stage": sh.stage[local],
            "trajectory": traj + self._traj_start[s],
            "charge": sh.charge[traj].astype(np.int64),
            "n_atoms": n_atoms,
        }

    # -- trajectories
    def trajectory(self, j: int) -> Trajectory:
        s, t = self._locate(int(j), self._traj_start_list, self.n_trajectories)
        sh = self.shard(s)
        a, b = sh.traj_snap_offset[t : t + 2]
        pa, pb = sh.snap_atom_offset[a], sh.snap_atom_offset[b]
        za, zb = sh.traj_atom_offset[t : t + 2]
        n_atoms = int(zb - za)
        values = sh.properties[t]
        props = {name: float(v) for name, v in zip(sh.property_names, values, strict=True)
                 if not np.isnan(v)}
        cid = int(sh.cid[t])
        return Trajectory(
            atomic_numbers=sh.atomic_numbers[za:zb],
            positions=sh.positions[pa:pb].reshape(-1, n_atoms, 3),
            energy=sh.energy[a:b],
            forces=sh.forces[pa:pb].reshape(-1, n_atoms, 3),
            stages=[self.stage_names[c] for c in sh.stage[a:b]],
            charge=int(sh.charge[t]),
            cid=None if cid < 0 else cid,
            smiles=sh.string("smiles", t),
            inchikey=sh.string("inchikey", t),
            name=sh.string("name", t),
            properties=props,
        )

    def trajectories(self, indices: Iterable[int] | None = None) -> Iterator[Trajectory]:
        for j in range(self.n_trajectories) if indices is None else indices:
            yield self.trajectory(j)

    def trajectory_snapshots(self, j: int) -> np.ndarray:
        """Global indices of the snapshots of trajectory ``j``, in order."""
        s, t = self._locate(int(j), self._traj_start_list, self.n_trajectories)
        sh = self.shard(s)
        a, b = sh.traj_snap_offset[t : t + 2]
        return np.arange(a, b, dtype=np.int64) + self._snap_start[s]

    def identifiers(self, column: str) -> list[str]:
        """One string column (``smiles``, ``inchikey`` or ``name``) for every trajectory."""
        if column not in STRING_COLUMNS:
            raise ValueError(f"column must be one of {STRING_COLUMNS}")
        out = []
        for s in range(self.n_shards):
            sh = self.shard(s)
            out.extend(sh.string(column, t) for t in range(self._entries[s]["n_trajectories"]))
        return out

    def cids(self) -> np.ndarray:
        """CID of every trajectory, -1 when unknown."""
        parts = [self.shard(s).cid for s in range(self.n_shards)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def properties(self, name: str) -> np.ndarray:
        """Per-trajectory property ``name`` (eV), NaN where a trajectory lacks it."""
        parts = []
        for s in range(self.n_shards):
            sh = self.shard(s)
            if name in sh.property_names:
                parts.append(np.asarray(sh.properties[:, sh.property_names.index(name)]))
            else:
                parts.append(np.full(self._entries[s]["n_trajectories"], np.nan))
        return np.concatenate(parts) if parts else np.empty(0)

    # -- selection
    def select(self, stages: str | Sequence[str] | None = None,
               trajectories: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Global indices of the snapshots in ``stages`` (and ``trajectories``), in order."""
        codes = None
        if stages is not None:
            wanted = [stages] if isinstance(stages, str) else list(stages)
            unknown = [s for s in wanted if s not in self.stage_names]
            if unknown:
                raise ValueError(f"unknown stage(s) {unknown}; known: {self.stage_names}")
            codes = np.array([self.stage_names.index(s) for s in wanted], dtype=np.uint8)
        traj_mask = None
        if trajectories is not None:
            traj_mask = np.zeros(self.n_trajectories, dtype=bool)
            traj_mask[np.asarray(trajectories, dtype=np.int64)] = True
        out = []
        for s in range(self.n_shards):
            sh = self.shard(s)
            keep = np.ones(sh.energy.shape[0], dtype=bool)
            if codes is not None:
                keep &= np.isin(sh.stage, codes)
            if traj_mask is not None:
                keep &= traj_mask[sh.snap_traj.astype(np.int64) + self._traj_start[s]]
            out.append(np.flatnonzero(keep) + self._snap_start[s])
        return np.concatenate(out) if out else np.empty(0, dtype=np.int64)

    def snapshot_trajectory(self) -> np.ndarray:
        """The trajectory index of every snapshot ``[n_snapshots]``."""
        parts = [self.shard(s).snap_traj.astype(np.int64) + self._traj_start[s]
                 for s in range(self.n_shards)]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    # -- integrity and summary
    def verify(self) -> None:
        """Check every shard file against the manifest's SHA-256; raise on the first mismatch."""
        for entry in self._entries:
            for name, meta in entry["files"].items():
                path = self.path / entry["name"] / name
                digest = hashlib.sha256()
                try:
                    with open(path, "rb") as handle:
                        for chunk in iter(lambda h=handle: h.read(1 << 24), b""):
                            digest.update(chunk)
                except FileNotFoundError:
                    raise StoreError(f"{path}: missing shard file") from None
                if digest.hexdigest() != meta["sha256"]:
                    raise StoreError(f"{path}: checksum mismatch (corrupt shard file)")

    def summary(self) -> dict:
        """Counts per stage, element counts, sizes and sources, for ``force2geo info``."""
        stage_counts = np.zeros(len(self.stage_names), dtype=np.int64)
        element_counts = np.zeros(256, dtype=np.int64)
        sizes = []
        for s in range(self.n_shards):
            sh = self.shard(s)
            stage_counts += np.bincount(sh.stage, minlength=len(self.stage_names))
            element_counts += np.bincount(sh.atomic_numbers, minlength=256)
            sizes.append(np.diff(sh.traj_atom_offset))
        sizes = np.concatenate(sizes) if sizes else np.zeros(0, dtype=np.int64)
        from ase.data import chemical_symbols

        return {
            "path": str(self.path),
            "trajectories": self.n_trajectories,
            "snapshots": self.n_snapshots,
            "shards": self.n_shards,
            "snapshots_per_stage": {name: int(stage_counts[code])
                                    for code, name in enumerate(self.stage_names)
                                    if stage_counts[code]},
            "atoms_per_molecule": (
                {"min": int(sizes.min()), "mean": round(float(sizes.mean()), 2),
                 "max": int(sizes.max())} if sizes.size else {}
            ),
            "elements": {chemical_symbols[z]: int(c) for z, c in enumerate(element_counts) if c},
            "properties": self.property_names,
            "units": self.manifest["units"],
            "sources": self.manifest["sources"],
            "fingerprint": self.fingerprint,
        }


def concat_ranges(start: np.ndarray, length: np.ndarray) -> np.ndarray:
    """Concatenate ``arange(start[k], start[k] + length[k])`` for all k, vectorised."""
    length = np.asarray(length, dtype=np.int64)
    total = int(length.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    seg_start = np.cumsum(length) - length
    return np.repeat(np.asarray(start, dtype=np.int64) - seg_start, length) + np.arange(total)


def _assemble(indices: np.ndarray, parts: list[tuple[np.ndarray, dict]]) -> dict[str, np.ndarray]:
    """Put per-shard results back into the caller's order and add ``system_idx``."""
    n = indices.shape[0]
    if len(parts) == 1 and np.array_equal(parts[0][0], np.arange(n)):
        out = dict(parts[0][1])
    else:
        members = np.concatenate([m for m, _ in parts]) if parts else np.empty(0, np.int64)
        grouped = {k: np.concatenate([p[k] for _, p in parts]) for k in
                   (parts[0][1] if parts else ())}
        inverse = np.empty(n, dtype=np.int64)
        inverse[members] = np.arange(n)
        if not parts:
            return _empty_batch()
        n_atoms = grouped["n_atoms"]
        atom_start = np.cumsum(n_atoms) - n_atoms
        rows = concat_ranges(atom_start[inverse], n_atoms[inverse])
        out = {}
        for key, value in grouped.items():
            out[key] = value[rows] if key in ("atomic_numbers", "positions", "forces") \
                else value[inverse]
    out["system_idx"] = np.repeat(np.arange(n, dtype=np.int64), out["n_atoms"])
    out["index"] = indices
    return out


def _empty_batch() -> dict[str, np.ndarray]:
    return {
        "atomic_numbers": np.empty(0, np.uint8), "positions": np.empty((0, 3), np.float32),
        "forces": np.empty((0, 3), np.float32), "energy": np.empty(0),
        "stage": np.empty(0, np.uint8),
        "trajectory": np.empty(0, np.int64), "charge": np.empty(0, np.int64),
        "n_atoms": np.empty(0, np.int64), "system_idx": np.empty(0, np.int64),
        "index": np.empty(0, np.int64),
    }


# --------------------------------------------------------------------------- writer


class TrajectoryWriter:
    """Append trajectories to a store, one crash-safe shard at a time.

    Use as a context manager. Trajectories are buffered and written as a new shard when
    ``shard_snapshots`` is reached, on ``flush()`` and on ``close()``. Nothing is created
    on disk until the first shard is written. Only one writer may hold a store at once.
    """

    def __init__(self, path: str | os.PathLike, source: str | None = None,
                 shard_snapshots: int = DEFAULT_SHARD_SNAPSHOTS, overwrite: bool = False):
        self.path = Path(path)
        self.source = source
        self.shard_snapshots = int(shard_snapshots)
        self._buffer: list[Trajectory] = []
        self._buffered_snapshots = 0
        self._lock_handle = None
        self._overwrite = overwrite
        self._manifest: dict | None = None
        self.n_written = 0
        if self.path.exists() and not overwrite:
            if (self.path / MANIFEST).exists() and self.path.is_dir():
                self._open_existing()
            elif self.path.is_file() or any(self.path.iterdir()):
                raise StoreError(f"{self.path}: exists and is not a trajectory store")

    def _open_existing(self) -> None:
        self._take_lock()
        self._manifest = read_manifest(self.path)
        listed = {e["name"] for e in self._manifest["shards"]}
        for child in self.path.iterdir():  # leftovers of a crash: never listed, never read
            if child.is_dir() and child.name.startswith(("shard-", ".shard-")) \
                    and child.name not in listed:
                shutil.rmtree(child)

    def _take_lock(self) -> None:
        if self._lock_handle is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_handle = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_handle.close()
            self._lock_handle = None
            raise StoreError(f"{self.path}: another process is writing this store") from None

    def _init_store(self) -> None:
        if self._overwrite and self.path.exists():
            if not (self.path / MANIFEST).exists() and any(self.path.iterdir()):
                raise StoreError(f"{self.path}: exists and is not a trajectory store; "
                                 "refusing to overwrite")
            shutil.rmtree(self.path)
        self._take_lock()
        self._manifest = new_manifest()
        write_manifest(self.path, self._manifest)

    def create(self) -> TrajectoryWriter:
        """Create the (empty) store on disk now, if it does not exist yet."""
        if self._manifest is None:
            self._init_store()
        return self

    def add(self, trajectory: Trajectory) -> None:
        if self._manifest is None:
            self._init_store()
        self._buffer.append(trajectory)
        self._buffered_snapshots += trajectory.n_snapshots
        if self._buffered_snapshots >= self.shard_snapshots:
            self.flush()

    def extend(self, trajectories: Iterable[Trajectory]) -> None:
        for trajectory in trajectories:
            self.add(trajectory)

    def flush(self) -> None:
        """Write buffered trajectories as one new shard and record it in the manifest."""
        if not self._buffer:
            return
        manifest = self._manifest
        for stage in (s for t in self._buffer for s in t.stages):
            if stage not in manifest["stages"]:
                if len(manifest["stages"]) >= 255:
                    raise StoreError(f"{self.path}: too many distinct stages")
                manifest["stages"].append(stage)
        property_names = sorted({k for t in self._buffer for k in t.properties})
        for name in property_names:
            if name not in manifest["property_names"]:
                manifest["property_names"].append(name)
        codes = {name: i for i, name in enumerate(manifest["stages"])}
        columns = pack_shard(self._buffer, codes, property_names)
        index = 1 + max((int(e["name"].split("-")[1]) for e in manifest["shards"]), default=-1)
        name = f"shard-{index:06d}"
        tmp = self.path / f".{name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files = {}
        for column, value in columns.items():
            if isinstance(value, bytes):
                files[f"{column}.bin"] = write_file(tmp / f"{column}.bin", value)
            else:
                files[f"{column}.npy"] = write_file(tmp / f"{column}.npy", npy_bytes(value))
        fsync_dir(tmp)
        os.rename(tmp, self.path / name)
        fsync_dir(self.path)
        manifest["shards"].append({
            "name": name,
            "n_trajectories": len(self._buffer),
            "n_snapshots": int(columns["energy"].shape[0]),
            "n_atoms": int(columns["positions"].shape[0]),
            "property_names": property_names,
            "files": files,
        })
        if self.source and self.source not in manifest["sources"]:
            manifest["sources"].append(self.source)
        write_manifest(self.path, manifest)
        self.n_written += len(self._buffer)
        self._buffer = []
        self._buffered_snapshots = 0

    def close(self) -> None:
        try:
            if self._manifest is not None:
                self.flush()
        finally:
            if self._lock_handle is not None:
                self._lock_handle.close()
                self._lock_handle = None

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
