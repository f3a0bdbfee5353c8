"""Property datasets: molecules, their alternative geometries and their targets.

A :class:`PropertyDataset` holds, per molecule, an identity (name, SMILES, InChIKey, CID,
charge), atomic numbers in one order shared by every geometry, up to four geometries
(:data:`GEOMETRIES`: the ground truth, an RDKit conformer, an early-stage geometry, the
MLIP-relaxed one) with a mask saying which exist, targets in eV, and, after an MLIP
relaxation, the relaxation's frames, status and step count.

On disk it is a folder of plain ``.npy`` columns and ``meta.json``, written under a
temporary name and renamed (never half-written)::

    DATASET/
      meta.json               format, counts, target names, units, sources, build and
                              relaxation records, files with SHA-256, fingerprint
      atomic_numbers.npy      uint8   [n_atoms_total]
      atom_offset.npy         int64   [n + 1]   rows of molecule i: offset[i]:offset[i+1]
      charge.npy int16, cid.npy int64 (-1 unknown), source_index.npy int64   [n]
      positions_<g>.npy       float32 [n_atoms_total, 3]  Å (NaN where has_<g> is False)
      has_<g>.npy             bool    [n]
      targets.npy             float64 [n, n_targets]  eV (NaN where unknown)
      relax_status.npy int8 (-1 not relaxed, else index into meta "relax_statuses"),
      relax_steps.npy int32 (-1), relax_fmax.npy float64 (eV/Å, NaN)       [n]
      traj_positions.npy      float32 [n_frame_atoms, 3]  MLIP relaxation frames, Å
      traj_frame_offset.npy   int64   [n + 1]  frames of molecule i (0 frames: none)
      traj_energy.npy         float64 [n_frames]  eV
      name.bin/.npy, smiles, inchikey: UTF-8 bytes (uint8) + <col>_offset.npy int64 [n + 1]

Builders live in :mod:`force2geo.finetune.build` (stores), ``conformers`` (RDKit
conformers in ground-truth atom order) and ``relaxation`` (MLIP geometries).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from force2geo import __version__
from force2geo.data.store import concat_ranges
from force2geo.errors import InputError
from force2geo.finetune import storage
from force2geo.finetune.storage import offsets
from force2geo.models import Batch
from force2geo.models.gin import Graph2D, collate_graphs, smiles_graph
from force2geo.relax import STATUSES
from force2geo.units import UNITS

__all__ = ["GEOMETRIES", "Graph2D", "MoleculeRecord", "PropertyBatch", "PropertyDataset"]

GEOMETRIES = ("ground_truth", "rdkit", "early", "mlip")
STRING_COLUMNS = ("name", "smiles", "inchikey")
# column -> (dtype, trailing shape, scope): "molecule" [n], "offset" [n + 1], "atom" rows
_COLUMNS: dict[str, tuple[str, tuple[int, ...], str]] = {
    "atomic_numbers": ("uint8", (), "atom"),
    "atom_offset": ("int64", (), "offset"),
    "charge": ("int16", (), "molecule"),
    "cid": ("int64", (), "molecule"),
    "source_index": ("int64", (), "molecule"),
    "relax_status": ("int8", (), "molecule"),
    "relax_steps": ("int32", (), "molecule"),
    "relax_fmax": ("float64", (), "molecule"),
    "traj_positions": ("float32", (3,), "frame_atom"),
    "traj_frame_offset": ("int64", (), "offset"),
    "traj_energy": ("float64", (), "frame"),
    **{f"positions_{g}": ("float32", (3,), "atom") for g in GEOMETRIES},
    **{f"has_{g}": ("bool", (), "molecule") for g in GEOMETRIES},
}


@dataclass
class MoleculeRecord:
    """One molecule as a builder makes it: ``atomic_numbers [n_atoms]``, geometries
    ``{name: [n_atoms, 3]}`` Å in that atom order, targets ``{name: value}`` eV."""

    name: str
    smiles: str
    inchikey: str
    atomic_numbers: np.ndarray
    geometries: dict[str, np.ndarray]
    targets: dict[str, float]
    charge: int = 0
    cid: int = -1
    source_index: int = -1


@dataclass
class PropertyBatch:
    """Molecules ready for a property model.

    ``batch``: positions ``[n_atoms, 3]`` Å of the chosen geometry, atomic numbers,
    ``system_idx``, charge; ``targets [n_systems]`` eV (None when no target was asked
    for); ``ground_truth [n_atoms, 3]`` Å (None unless every molecule has one);
    ``graph2d`` (with ``with_2d``); ``indices``: dataset indices in batch order.
    """

    batch: Batch
    targets: Tensor | None
    ground_truth: Tensor | None
    graph2d: Graph2D | None
    indices: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


class PropertyDataset:
    """Molecules with alternative geometries and property targets (eV, Å).

    Make one with :func:`force2geo.finetune.build.from_store` or :meth:`from_records`,
    read one with :meth:`load`. ``columns`` maps the names of the module docstring's table
    to arrays; ``meta`` is plain JSON (sources, units, build and relaxation records).
    """

    def __init__(self, columns: dict[str, np.ndarray], strings: dict[str, list[str]],
                 target_names: Sequence[str], meta: dict | None = None):
        self._columns = dict(columns)
        self.names: list[str] = list(strings["name"])
        self.smiles: list[str] = list(strings["smiles"])
        self.inchikeys: list[str] = list(strings["inchikey"])
        self.target_names: tuple[str, ...] = tuple(target_names)
        self.meta: dict = dict(meta or {})
        self._fingerprint: str | None = None
        self._graphs: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._traj_row_offset: np.ndarray | None = None
        self._stored: tuple[Path, dict, str | None] | None = None  # set by load()
        self._check()

    # -- construction
    @classmethod
    def from_records(cls, records: Sequence[MoleculeRecord], target_names: Sequence[str],
                     meta: dict | None = None) -> PropertyDataset:
        """A dataset of ``records``, in order; a geometry a record lacks is masked out."""
        n_atoms = [len(r.atomic_numbers) for r in records]
        total = int(sum(n_atoms))
        columns: dict[str, np.ndarray] = {
            "atomic_numbers": np.concatenate([np.asarray(r.atomic_numbers, np.uint8)
                                              for r in records]) if records
            else np.empty(0, np.uint8),
            "atom_offset": offsets(n_atoms),
            "charge": np.array([r.charge for r in records], dtype=np.int16),
            "cid": np.array([r.cid for r in records], dtype=np.int64),
            "source_index": np.array([r.source_index for r in records], dtype=np.int64),
            "targets": np.array([[r.targets.get(t, np.nan) for t in target_names]
                                 for r in records], dtype=np.float64).reshape(
                                     len(records), len(target_names)),
        }
        for g in GEOMETRIES:
            positions = np.full((total, 3), np.nan, dtype=np.float32)
            has = np.array([g in r.geometries for r in records], dtype=bool)
            for i in np.flatnonzero(has):
                a, b = columns["atom_offset"][i : i + 2]
                positions[a:b] = np.asarray(records[i].geometries[g]).reshape(b - a, 3)
            columns[f"positions_{g}"], columns[f"has_{g}"] = positions, has
        dataset = cls(columns | _empty_relaxation(len(records)),
                      {"name": [r.name for r in records], "smiles": [r.smiles for r in records],
                       "inchikey": [r.inchikey for r in records]}, target_names, meta)
        return dataset

    def _check(self) -> None:
        c, n = self._columns, len(self.names)
        if len(self.smiles) != n or len(self.inchikeys) != n:
            raise ValueError("name, smiles and inchikey must have one entry per molecule")
        sizes = {"molecule": n, "offset": n + 1, "atom": int(c["atom_offset"][-1]),
                 "frame": int(c["traj_frame_offset"][-1])}
        n_atoms = np.diff(c["atom_offset"])
        frames = np.diff(c["traj_frame_offset"])
        sizes["frame_atom"] = int((n_atoms * frames).sum())
        for name, (_, tail, scope) in _COLUMNS.items():
            expected = (sizes[scope],) + tail
            if tuple(c[name].shape) != expected:
                raise ValueError(f"column {name}: shape {tuple(c[name].shape)}, expected "
                                 f"{expected}")
        if c["targets"].shape != (n, len(self.target_names)):
            raise ValueError(f"targets: shape {c['targets'].shape}, expected "
                             f"{(n, len(self.target_names))}")

    # -- per molecule
    def __len__(self) -> int:
        return len(self.names)

    @property
    def geometries(self) -> tuple[str, ...]:
        return GEOMETRIES

    def n_atoms(self) -> np.ndarray:
        """Atoms per molecule ``[n]``."""
        return np.diff(self._columns["atom_offset"])

    def atomic_numbers(self, i: int) -> np.ndarray:
        a, b = self._columns["atom_offset"][i : i + 2]
        return np.asarray(self._columns["atomic_numbers"][a:b], dtype=np.int64)

    def has(self, geometry: str) -> np.ndarray:
        """Which molecules have ``geometry``, ``[n]`` bool."""
        return np.asarray(self._columns[f"has_{_geometry(geometry)}"], dtype=bool)

    def positions(self, i: int, geometry: str) -> np.ndarray:
        """``[n_atoms_i, 3]`` Å (float64); KeyError when molecule ``i`` lacks it."""
        if not self.has(geometry)[i]:
            raise KeyError(f"molecule {i} ({self.names[i]}) has no {geometry!r} geometry")
        a, b = self._columns["atom_offset"][i : i + 2]
        return np.asarray(self._columns[f"positions_{geometry}"][a:b], dtype=np.float64)

    def target(self, name: str) -> np.ndarray:
        """Target ``name`` of every molecule, ``[n]`` float64 eV (NaN where unknown)."""
        if name not in self.target_names:
            raise KeyError(f"no target {name!r}; the dataset has {list(self.target_names)}")
        return np.asarray(self._columns["targets"][:, self.target_names.index(name)])

    @property
    def charges(self) -> np.ndarray:
        return np.asarray(self._columns["charge"], dtype=np.int64)

    @property
    def cids(self) -> np.ndarray:
        return np.asarray(self._columns["cid"], dtype=np.int64)

    @property
    def source_indices(self) -> np.ndarray:
        """Trajectory index of each molecule in the store it was built from (-1: none)."""
        return np.asarray(self._columns["source_index"], dtype=np.int64)

    def trajectory(self, i: int) -> np.ndarray | None:
        """MLIP relaxation frames of molecule ``i``, ``[n_frames, n_atoms_i, 3]`` Å, or None."""
        f0, f1 = self._columns["traj_frame_offset"][i : i + 2]
        if f1 == f0:
            return None
        a, b = self._columns["atom_offset"][i : i + 2]
        n = int(b - a)
        start = int(self._traj_rows()[i])
        rows = self._columns["traj_positions"][start : start + (f1 - f0) * n]
        return np.asarray(rows, dtype=np.float64).reshape(f1 - f0, n, 3)

    def _traj_rows(self) -> np.ndarray:
        """First row of each molecule's frames in ``traj_positions``, ``[n + 1]``."""
        if self._traj_row_offset is None:
            frames = np.diff(self._columns["traj_frame_offset"])
            self._traj_row_offset = offsets(self.n_atoms() * frames)
        return self._traj_row_offset

    def trajectory_energy(self, i: int) -> np.ndarray | None:
        """MLIP energies of the frames of molecule ``i``, ``[n_frames]`` eV, or None."""
        f0, f1 = self._columns["traj_frame_offset"][i : i + 2]
        return None if f1 == f0 else np.asarray(self._columns["traj_energy"][f0:f1])

    @property
    def relax_status(self) -> np.ndarray:
        """Per molecule ``converged``, ``step_limit``, ``diverged`` or ``""`` (not relaxed)."""
        codes = np.asarray(self._columns["relax_status"], dtype=np.int64)
        return np.array([STATUSES[c] if c >= 0 else "" for c in codes], dtype=object)

    @property
    def relax_steps(self) -> np.ndarray:
        """Optimizer steps of each MLIP relaxation ``[n]`` (-1: not relaxed)."""
        return np.asarray(self._columns["relax_steps"], dtype=np.int64)

    @property
    def relax_fmax(self) -> np.ndarray:
        """Largest atomic force at the end of each MLIP relaxation ``[n]`` eV/Å (NaN)."""
        return np.asarray(self._columns["relax_fmax"], dtype=np.float64)

    # -- batches
    def batch(self, indices, geometry: str = "ground_truth", target: str | None = "gap", *,
              with_2d: bool = False, positions: Sequence[np.ndarray] | None = None,
              device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> PropertyBatch:
        """The molecules ``indices`` as one :class:`PropertyBatch`.

        ``positions`` (one ``[n_atoms_k, 3]`` Å array per molecule) replaces the geometry,
        for noisy or trajectory-frame inputs. A molecule without ``geometry`` (when no
        ``positions`` are given) or without a value of ``target`` is a ValueError.
        """
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        c = self._columns
        first = np.asarray(c["atom_offset"][indices])
        sizes = np.asarray(c["atom_offset"][indices + 1]) - first  # n_atoms() diffs them all
        rows = concat_ranges(first, sizes)
        if positions is None:
            self._require(indices, geometry)
            xyz = np.asarray(c[f"positions_{geometry}"][rows], dtype=np.float64)
        else:
            xyz = self._override(indices, sizes, positions)
        batch = Batch(
            positions=torch.as_tensor(xyz, dtype=dtype, device=device),
            atomic_numbers=torch.as_tensor(c["atomic_numbers"][rows].astype(np.int64),
                                           device=device),
            system_idx=torch.as_tensor(np.repeat(np.arange(len(indices)), sizes),
                                       device=device),
            n_systems=len(indices),
            charge=torch.as_tensor(c["charge"][indices].astype(np.int64), device=device),
        )
        targets = None
        if target is not None:
            values = self.target(target)[indices]
            if np.isnan(values).any():
                bad = indices[np.isnan(values)]
                raise ValueError(f"molecules {bad[:5].tolist()} have no {target!r} value")
            targets = torch.as_tensor(values, dtype=dtype, device=device)
        ground_truth = None
        if self.has("ground_truth")[indices].all():
            ground_truth = torch.as_tensor(np.asarray(c["positions_ground_truth"][rows]),
                                           dtype=dtype, device=device)
        graph = self.graph2d(indices).to(device) if with_2d else None
        return PropertyBatch(batch, targets, ground_truth, graph, indices)

    def _require(self, indices: np.ndarray, geometry: str) -> None:
        missing = indices[~self.has(geometry)[indices]]
        if missing.size:
            names = [self.names[i] for i in missing[:3]]
            raise ValueError(f"{missing.size} molecule(s) have no {geometry!r} geometry "
                             f"(indices {missing[:5].tolist()}, names {names})")

    def _override(self, indices: np.ndarray, sizes: np.ndarray,
                  positions: Sequence[np.ndarray]) -> np.ndarray:
        if len(positions) != len(indices):
            raise ValueError(f"{len(positions)} position arrays for {len(indices)} molecules")
        for k, (p, n) in enumerate(zip(positions, sizes, strict=True)):
            if np.shape(p) != (n, 3):
                raise ValueError(f"positions[{k}] has shape {np.shape(p)}; molecule "
                                 f"{indices[k]} needs ({n}, 3)")
        return np.concatenate([np.asarray(p, dtype=np.float64) for p in positions]) \
            if len(positions) else np.zeros((0, 3))

    def graph2d(self, indices) -> Graph2D:
        """Heavy-atom 2D graphs (OGB features, from the SMILES) of ``indices``, in order.
        Featurised once per molecule and kept in memory."""
        graphs = []
        for i in np.asarray(indices, dtype=np.int64).reshape(-1):
            i = int(i)
            if i not in self._graphs:
                try:
                    self._graphs[i] = smiles_graph(self.smiles[i])
                except ValueError as exc:
                    raise ValueError(f"molecule {i} ({self.names[i]}): {exc}") from None
            graphs.append(self._graphs[i])
        return collate_graphs(graphs)

    # -- subsets and updates
    def subset(self, indices) -> PropertyDataset:
        """A new dataset of the molecules ``indices``, in that order."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        c = self._columns
        sizes = self.n_atoms()[indices]
        rows = concat_ranges(c["atom_offset"][indices], sizes)
        frames = np.diff(c["traj_frame_offset"])
        frame_rows_start = self._traj_rows()[:-1]
        out = {"atomic_numbers": c["atomic_numbers"][rows], "atom_offset": offsets(sizes),
               "targets": c["targets"][indices],
               "traj_positions": c["traj_positions"][concat_ranges(frame_rows_start[indices],
                                                             sizes * frames[indices])],
               "traj_frame_offset": offsets(frames[indices]),
               "traj_energy": c["traj_energy"][concat_ranges(c["traj_frame_offset"][indices],
                                                       frames[indices])]}
        for name, (_, _, scope) in _COLUMNS.items():
            if scope == "molecule":
                out[name] = c[name][indices]
            elif scope == "atom" and name != "atomic_numbers":
                out[name] = c[name][rows]
        strings = {"name": [self.names[i] for i in indices],
                   "smiles": [self.smiles[i] for i in indices],
                   "inchikey": [self.inchikeys[i] for i in indices]}
        meta = dict(self.meta, subset_of={"fingerprint": self.fingerprint,
                                          "n_molecules": len(self)})
        return PropertyDataset({k: np.array(v) for k, v in out.items()}, strings,
                               self.target_names, meta)

    def _writable(self, name: str) -> np.ndarray:
        array = self._columns[name]
        if not array.flags.writeable:
            array = self._columns[name] = np.array(array)
        self._fingerprint = None
        return array

    def set_geometry(self, geometry: str, indices: Sequence[int],
                     positions: Sequence[np.ndarray]) -> None:
        """Set ``geometry`` of molecules ``indices`` (``[n_atoms_i, 3]`` Å each)."""
        geometry = _geometry(geometry)
        column, has = self._writable(f"positions_{geometry}"), self._writable(f"has_{geometry}")
        for i, p in zip(indices, positions, strict=True):
            a, b = self._columns["atom_offset"][i : i + 2]
            column[a:b] = np.asarray(p, dtype=np.float64).reshape(b - a, 3)
            has[i] = True

    def clear_geometry(self, geometry: str, indices: Sequence[int]) -> None:
        """Mark ``geometry`` missing for molecules ``indices`` (positions set to NaN)."""
        geometry = _geometry(geometry)
        column, has = self._writable(f"positions_{geometry}"), self._writable(f"has_{geometry}")
        for i in indices:
            a, b = self._columns["atom_offset"][i : i + 2]
            column[a:b] = np.nan
            has[i] = False

    def set_relaxations(self, indices: Sequence[int], frames: Sequence[np.ndarray | None],
                        energies: Sequence[np.ndarray | None], statuses: Sequence[str],
                        steps: Sequence[int], fmax: Sequence[float]) -> None:
        """Record MLIP relaxations of molecules ``indices``: frames ``[k, n_atoms_i, 3]`` Å
        (or None), their energies ``[k]`` eV, status, steps and final fmax (eV/Å)."""
        per_molecule = [self.trajectory(i) for i in range(len(self))]
        per_energy = [self.trajectory_energy(i) for i in range(len(self))]
        status, n_steps, last_fmax = (self._writable("relax_status"),
                                      self._writable("relax_steps"), self._writable("relax_fmax"))
        for k, i in enumerate(indices):
            per_molecule[i], per_energy[i] = frames[k], energies[k]
            status[i], n_steps[i], last_fmax[i] = STATUSES.index(statuses[k]), steps[k], fmax[k]
        counts = [0 if f is None else len(f) for f in per_molecule]
        self._columns["traj_frame_offset"] = offsets(counts)
        kept = [f.reshape(-1, 3) for f in per_molecule if f is not None]
        self._columns["traj_positions"] = (np.concatenate(kept).astype(np.float32) if kept
                                           else np.zeros((0, 3), np.float32))
        energy = [e for e in per_energy if e is not None]
        self._columns["traj_energy"] = (np.concatenate(energy).astype(np.float64) if energy
                                        else np.zeros(0))
        self._traj_row_offset = None
        self._check()

    # -- identity
    @property
    def fingerprint(self) -> str:
        """A hash of every column and string: equal fingerprints mean equal data."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(json.dumps(list(self.target_names)).encode())
            for name in sorted(self._columns):
                array = np.ascontiguousarray(self._columns[name])
                digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
                digest.update(array.tobytes())
            for column in STRING_COLUMNS:
                digest.update(storage.pack_strings(self._strings(column))[0].tobytes())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def _strings(self, column: str) -> list[str]:
        return {"name": self.names, "smiles": self.smiles, "inchikey": self.inchikeys}[column]

    def summary(self) -> dict:
        """Counts per geometry, target statistics, relaxation statuses, sources."""
        n_atoms = self.n_atoms()
        status = self.relax_status
        targets = {}
        for name in self.target_names:
            values = self.target(name)
            finite = values[np.isfinite(values)]
            targets[name] = ({"n": int(finite.size), "mean": float(finite.mean()),
                              "std": float(finite.std()), "min": float(finite.min()),
                              "max": float(finite.max())} if finite.size else {"n": 0})
        return {
            "molecules": len(self),
            "atoms_per_molecule": ({"min": int(n_atoms.min()), "mean": float(n_atoms.mean()),
                                    "max": int(n_atoms.max())} if len(self) else {}),
            "geometries": {g: int(self.has(g).sum()) for g in GEOMETRIES},
            "targets": targets,
            "relaxed": {s: int((status == s).sum()) for s in STATUSES if (status == s).any()},
            "trajectory_frames": int(self._columns["traj_frame_offset"][-1]),
            "fingerprint": self.fingerprint,
            "source": self.meta.get("source", {}),
        }

    # -- files
    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the dataset to ``folder``, atomically (see the module docstring); an
        existing dataset there is replaced only with ``overwrite``. Returns the folder."""
        arrays = dict(self._columns)
        for column in STRING_COLUMNS:
            arrays[column], arrays[f"{column}_offset"] = storage.pack_strings(
                self._strings(column))
        meta = {
            **self.meta, "force2geo_version": __version__,
            "n_molecules": len(self), "n_atoms": int(self._columns["atom_offset"][-1]),
            "target_names": list(self.target_names), "geometries": list(GEOMETRIES),
            "geometry_counts": {g: int(self.has(g).sum()) for g in GEOMETRIES},
            "relax_statuses": list(STATUSES), "units": dict(UNITS),
            "fingerprint": self.fingerprint,
        }
        return storage.write_folder(folder, arrays, meta, overwrite)

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = True) -> PropertyDataset:
        """Read a dataset folder (large columns memory-mapped unless ``mmap=False``).

        Raises :class:`InputError` naming the folder when it is missing, not a property
        dataset, from a newer format, or lacks or has malformed column files.
        """
        meta = storage.read_meta(folder)
        names = [*_COLUMNS, "targets", *STRING_COLUMNS, *(f"{c}_offset" for c in STRING_COLUMNS)]
        arrays = storage.read_columns(folder, names, mmap)
        strings = {c: storage.unpack_strings(arrays.pop(c), arrays.pop(f"{c}_offset"))
                   for c in STRING_COLUMNS}
        for name in ("atom_offset", "traj_frame_offset"):
            arrays[name] = np.array(arrays[name])  # small, and indexed constantly
        keep = {k: v for k, v in meta.items() if k not in _DERIVED_META}
        try:
            dataset = cls(arrays, strings, meta["target_names"], keep)
        except (KeyError, ValueError) as exc:
            raise InputError(folder, f"inconsistent dataset: {exc}") from None
        dataset._fingerprint = meta.get("fingerprint")
        dataset._stored = (Path(folder), meta.get("files", {}), meta.get("fingerprint"))
        return dataset

    def verify(self) -> None:
        """Check a loaded dataset's files against their recorded SHA-256 and its data
        against the recorded fingerprint; raise :class:`InputError` on a mismatch."""
        if self._stored is None:
            raise ValueError("verify() checks a dataset read by load()")
        folder, files, recorded = self._stored
        storage.verify_files(folder, files)
        self._fingerprint = None
        if recorded is not None and self.fingerprint != recorded:
            raise InputError(folder, f"fingerprint {self.fingerprint} differs from the "
                             f"recorded {recorded}")

    def __repr__(self) -> str:
        counts = ", ".join(f"{g}={int(self.has(g).sum())}" for g in GEOMETRIES)
        return (f"PropertyDataset({len(self)} molecules, targets={list(self.target_names)}, "
                f"{counts})")


# meta.json keys that save() derives from the data (not carried over by load())
_DERIVED_META = ("format", "format_version", "n_molecules", "n_atoms", "target_names",
                 "geometries", "geometry_counts", "relax_statuses", "units", "files",
                 "fingerprint", "force2geo_version")


def _geometry(name: str) -> str:
    if name not in GEOMETRIES:
        raise KeyError(f"unknown geometry {name!r}; choose from {', '.join(GEOMETRIES)}")
    return name


def _empty_relaxation(n: int) -> dict[str, np.ndarray]:
    return {"relax_status": np.full(n, -1, np.int8), "relax_steps": np.full(n, -1, np.int32),
            "relax_fmax": np.full(n, np.nan), "traj_positions": np.zeros((0, 3), np.float32),
            "traj_frame_offset": np.zeros(n + 1, np.int64), "traj_energy": np.zeros(0)}
