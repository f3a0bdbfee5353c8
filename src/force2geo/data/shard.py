"""Files of the trajectory store: shard columns, the manifest, and their integrity checks.

See :mod:`force2geo.data.store` for the layout. Everything here is written whole to disk
(write, fsync, rename) and checked against the manifest when read back.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import io
import json
import mmap
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from force2geo import __version__
from force2geo.data.trajectory import STAGES, Trajectory
from force2geo.errors import StoreError
from force2geo.units import UNITS

FORMAT = "force2geo-trajectory-store"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STRING_COLUMNS = ("smiles", "inchikey", "name")

# --------------------------------------------------------------------------- files


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_file(path: Path, payload: bytes) -> dict:
    with open(path, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    return {"bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_npy(path: Path, expected_bytes: int) -> np.ndarray:
    """Memory-map a .npy file as a plain read-only ndarray, checking it is whole."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise StoreError(f"{path}: missing shard file") from None
    with handle:
        size = os.fstat(handle.fileno()).st_size
        if size != expected_bytes:
            raise StoreError(
                f"{path}: truncated or altered shard file "
                f"({size} bytes, manifest says {expected_bytes})"
            )
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        except (ValueError, OSError) as exc:
            raise StoreError(f"{path}: corrupt array header ({exc})") from None
        offset = handle.tell()
        count = int(np.prod(shape, dtype=np.int64))
        if fortran or dtype.hasobject or offset + count * dtype.itemsize != size:
            raise StoreError(f"{path}: corrupt shard file (header does not match size)")
        if count == 0:
            return np.empty(shape, dtype=dtype)
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)


# --------------------------------------------------------------------------- shards


class Shard:
    """The columns of one shard, opened lazily as memory maps."""

    def __init__(self, root: Path, entry: dict):
        self.path = root / entry["name"]
        self.entry = entry
        self.property_names: list[str] = list(entry.get("property_names", []))
        files = entry["files"]
        arrays = {name[:-4]: open_npy(self.path / name, meta["bytes"])
                  for name, meta in files.items() if name.endswith(".npy")}
        self.blobs = {}
        for name, meta in files.items():
            if name.endswith(".bin"):
                blob_path = self.path / name
                if not blob_path.exists():
                    raise StoreError(f"{blob_path}: missing shard file")
                if blob_path.stat().st_size != meta["bytes"]:
                    raise StoreError(f"{blob_path}: truncated or altered shard file")
                self.blobs[name[:-4]] = blob_path.read_bytes()
        self.positions = arrays["positions"]
        self.forces = arrays["forces"]
        self.energy = arrays["energy"]
        self.stage = arrays["stage"]
        self.snap_atom_offset = arrays["snap_atom_offset"]
        self.snap_traj = arrays["snap_traj"]
        self.traj_snap_offset = arrays["traj_snap_offset"]
        self.traj_atom_offset = arrays["traj_atom_offset"]
        self.atomic_numbers = arrays["atomic_numbers"]
        self.charge = arrays["charge"]
        self.cid = arrays["cid"]
        self.properties = arrays["properties"]
        self.string_offsets = {c: arrays[f"{c}_offset"] for c in STRING_COLUMNS}
        self._check(entry)

    def _check(self, entry: dict) -> None:
        n_snap, n_traj = entry["n_snapshots"], entry["n_trajectories"]
        ok = (
            self.energy.shape == (n_snap,)
            and self.snap_atom_offset.shape == (n_snap + 1,)
            and self.traj_snap_offset.shape == (n_traj + 1,)
            and int(self.snap_atom_offset[-1]) == self.positions.shape[0] == self.forces.shape[0]
            and int(self.traj_atom_offset[-1]) == self.atomic_numbers.shape[0]
            and int(self.traj_snap_offset[-1]) == n_snap
        )
        if not ok:
            raise StoreError(f"{self.path}: corrupt shard (column lengths disagree)")

    def string(self, column: str, t: int) -> str:
        offsets = self.string_offsets[column]
        return self.blobs[column][offsets[t] : offsets[t + 1]].decode("utf-8")


def pack_shard(trajectories: Sequence[Trajectory], stage_codes: dict[str, int],
                   property_names: list[str]) -> dict[str, np.ndarray | bytes]:
    """Pack trajectories into the columns of one shard."""
    n_snaps = np.array([t.n_snapshots for t in trajectories], dtype=np.int64)
    n_atoms = np.array([t.n_atoms for t in trajectories], dtype=np.int64)
    per_snap_atoms = np.repeat(n_atoms, n_snaps)
    columns: dict[str, np.ndarray | bytes] = {
        "positions": np.concatenate([t.positions.reshape(-1, 3) for t in trajectories])
        .astype(np.float32),
        "forces": np.concatenate([t.forces.reshape(-1, 3) for t in trajectories])
        .astype(np.float32),
        "energy": np.concatenate([t.energy for t in trajectories]).astype(np.float64),
        "stage": np.array([stage_codes[s] for t in trajectories for s in t.stages],
                          dtype=np.uint8),
        "snap_atom_offset": np.concatenate([[0], np.cumsum(per_snap_atoms)]).astype(np.int64),
        "snap_traj": np.repeat(np.arange(len(trajectories), dtype=np.int32), n_snaps),
        "traj_snap_offset": np.concatenate([[0], np.cumsum(n_snaps)]).astype(np.int64),
        "traj_atom_offset": np.concatenate([[0], np.cumsum(n_atoms)]).astype(np.int64),
        "atomic_numbers": np.concatenate([t.atomic_numbers for t in trajectories])
        .astype(np.uint8),
        "charge": np.array([t.charge for t in trajectories], dtype=np.int16),
        "cid": np.array([-1 if t.cid is None else t.cid for t in trajectories], dtype=np.int64),
        "properties": np.array(
            [[t.properties.get(p, np.nan) for p in property_names] for t in trajectories],
            dtype=np.float64,
        ).reshape(len(trajectories), len(property_names)),
    }
    for column in STRING_COLUMNS:
        encoded = [getattr(t, column).encode("utf-8") for t in trajectories]
        columns[column] = b"".join(encoded)
        columns[f"{column}_offset"] = np.concatenate(
            [[0], np.cumsum([len(e) for e in encoded])]
        ).astype(np.int64)
    return columns


# --------------------------------------------------------------------------- manifest


def read_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not root.exists():
        raise StoreError(f"{root}: no such trajectory store")
    if not path.exists():
        raise StoreError(f"{root}: not a trajectory store (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: corrupt manifest ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise StoreError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise StoreError(
            f"{path}: store format {manifest['format_version']} is newer than this "
            f"force2geo reads ({FORMAT_VERSION}); upgrade force2geo"
        )
    return manifest


def new_manifest() -> dict:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": now,
        "updated": now,
        "force2geo_version": __version__,
        "units": dict(UNITS),
        "stages": list(STAGES),
        "property_names": [],
        "sources": [],
        "counts": {"trajectories": 0, "snapshots": 0, "atoms": 0},
        "shards": [],
    }


def write_manifest(root: Path, manifest: dict) -> None:
    manifest["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    shards = manifest["shards"]
    manifest["counts"] = {
        "trajectories": sum(s["n_trajectories"] for s in shards),
        "snapshots": sum(s["n_snapshots"] for s in shards),
        "atoms": sum(s["n_atoms"] for s in shards),
    }
    tmp = root / f".{MANIFEST}.tmp"
    write_file(tmp, json.dumps(manifest, indent=1).encode())
    os.replace(tmp, root / MANIFEST)
    fsync_dir(root)
