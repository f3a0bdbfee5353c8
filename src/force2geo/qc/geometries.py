"""Geometries to label: units of work, their stable keys, frame selection and grouping.

:func:`force2geo.qc.label_inputs.read_geometries` turns one input (extxyz / plain xyz, SDF
or a trajectory store) into a list of items in input order, each either

* a :class:`Unit`: consecutive geometries of one molecule (same atoms and charge) from one
  input, at most :data:`MAX_UNIT_GEOMETRIES` of them: one worker task, one stored
  trajectory; or
* an :class:`Unreadable` record (a malformed frame, an unknown element): a per-record
  failure with its reason, so that one bad record never stops the others.

Grouping: consecutive extxyz frames that share the first of :data:`GROUP_KEYS` they have
(a ``force2geo relax --trajectory`` file has ``index``), consecutive SDF records with the
same title, and the frames of one store trajectory. ``FrameSelection.frames`` then picks
frames of each group.

Charge: the extxyz ``charge`` (or ``total_charge``) key, else the formal charge of its
``smiles`` key (``force2geo relax`` outputs of SMILES input carry one), else 0; the sum of
an SDF record's formal charges; a store trajectory's charge.

Each geometry has a stable key, :func:`geometry_key`: a hash of its atomic numbers, its
positions rounded to float32 (as the store keeps them) and its charge. Labelling runs
skip geometries whose key is already done, so reruns resume and duplicates are labelled
once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from force2geo.errors import InputError

MAX_UNIT_GEOMETRIES = 64
GROUP_KEYS = ("traj_id", "mol_id", "index", "name", "smiles")


def geometry_key(atomic_numbers, positions, charge: int) -> str:
    """A stable id of one geometry: SHA-256 (32 hex digits) of atomic numbers, positions
    as little-endian float32 (Å, as stored) and charge."""
    digest = hashlib.sha256()
    digest.update(np.asarray(atomic_numbers).astype("<i8").tobytes())
    digest.update(np.asarray(positions, dtype=np.float64).astype("<f4").tobytes())
    digest.update(int(charge).to_bytes(4, "little", signed=True))
    return digest.hexdigest()[:32]


@dataclass
class Unit:
    """Geometries of one molecule: ``atomic_numbers [n_atoms]``, ``positions [k, n_atoms,
    3]`` Å (float32-rounded, as the store keeps them), one ``source`` (file and record) and
    one :func:`geometry_key` per geometry."""

    name: str
    atomic_numbers: np.ndarray
    charge: int
    positions: np.ndarray
    sources: list[str]
    keys: list[str] = field(default_factory=list)
    smiles: str = ""
    inchikey: str = ""
    cid: int | None = None

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64).reshape(-1)
        n_atoms = self.atomic_numbers.shape[0]
        positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, n_atoms, 3)
        self.positions = positions.astype(np.float32).astype(np.float64)
        if not self.keys:
            self.keys = [geometry_key(self.atomic_numbers, x, self.charge)
                         for x in self.positions]

    @property
    def n_geometries(self) -> int:
        return int(self.positions.shape[0])

    def subset(self, keep: list[int]) -> Unit:
        """The geometries ``keep`` (indices) of this unit, as a new unit."""
        return Unit(self.name, self.atomic_numbers, self.charge, self.positions[keep],
                    [self.sources[k] for k in keep], [self.keys[k] for k in keep],
                    self.smiles, self.inchikey, self.cid)


class Unreadable(NamedTuple):
    """A record that could not be read: ``source`` (file and record) and the reason."""

    source: str
    reason: str

    @property
    def key(self) -> str:
        return f"unreadable:{self.source}"


@dataclass(frozen=True)
class FrameSelection:
    """Which frames to label: store ``stages`` (None: all), and per group ``frames``:
    ``all``, ``first``, ``last`` or ``every:K`` (every K-th from the first, plus the last)."""

    stages: tuple[str, ...] | None = None
    frames: str = "all"

    def __post_init__(self) -> None:
        if self.stages is not None:
            object.__setattr__(self, "stages", tuple(self.stages))
        frame_indices(self.frames, 1)  # raises on a malformed spec

    def pick(self, n: int) -> list[int]:
        return frame_indices(self.frames, n)


def frame_indices(spec: str, n: int) -> list[int]:
    """Indices of ``range(n)`` named by ``spec`` (see :class:`FrameSelection`)."""
    if spec == "all":
        return list(range(n))
    if spec in ("first", "last"):
        return [] if n == 0 else [0 if spec == "first" else n - 1]
    head, sep, tail = spec.partition(":")
    step = int(tail) if head == "every" and sep and tail.isdigit() else 0
    if step < 1:
        raise InputError("--frames", f"expected all, first, last or every:K (K >= 1), "
                         f"got {spec!r}")
    picked = list(range(0, n, step))
    if n and picked[-1] != n - 1:
        picked.append(n - 1)
    return picked


# --------------------------------------------------------------------------- grouping


class Record(NamedTuple):
    """One geometry read from a file, before grouping."""

    group: object  # consecutive records with equal non-None groups form one molecule
    name: str
    atomic_numbers: np.ndarray
    charge: int
    positions: np.ndarray
    source: str
    smiles: str = ""
    inchikey: str = ""
    cid: int | None = None


def _same_molecule(a: Record, b: Record) -> bool:
    return (a.group is not None and a.group == b.group and a.charge == b.charge
            and np.array_equal(a.atomic_numbers, b.atomic_numbers))


def units_of(records: list[Record], selection: FrameSelection) -> list[Unit]:
    """Selected frames of one molecule's records, cut into units."""
    picked = [records[k] for k in selection.pick(len(records))]
    first = records[0]
    units = []
    for start in range(0, len(picked), MAX_UNIT_GEOMETRIES):
        chunk = picked[start:start + MAX_UNIT_GEOMETRIES]
        units.append(Unit(first.name, first.atomic_numbers, first.charge,
                          np.stack([r.positions for r in chunk]), [r.source for r in chunk],
                          smiles=first.smiles, inchikey=first.inchikey, cid=first.cid))
    return units


def group_records(items: Iterator[Record | Unreadable], selection: FrameSelection
                  ) -> list[Unit | Unreadable]:
    """Group consecutive records of one molecule; unreadable records pass through."""
    out: list[Unit | Unreadable] = []
    run: list[Record] = []
    for item in items:
        if isinstance(item, Record) and run and _same_molecule(run[0], item):
            run.append(item)
            continue
        if run:
            out.extend(units_of(run, selection))
            run = []
        if isinstance(item, Unreadable):
            out.append(item)
        else:
            run = [item]
    if run:
        out.extend(units_of(run, selection))
    return out
