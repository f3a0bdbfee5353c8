"""Oracle energies and forces for any geometries, in parallel, resumable after a kill.

``label(inputs, STORE)`` reads geometries (extxyz / plain xyz, SDF, ``force2geo relax``
outputs and ``--trajectory`` files, a store's frames: :mod:`force2geo.qc.label_inputs`),
computes GFN2-xTB (tblite) or DFT (PySCF, B3LYP/6-31G* by default) single points in a
pool of one-thread workers, and writes each unit (consecutive geometries of one
molecule) as one trajectory of a new stage (``xtb-label`` / ``dft-label``) into a
:class:`~force2geo.data.store.TrajectoryStore`::

    STORE/manifest.json, shard-*/   the labelled geometries: energy eV, forces eV/Å
    STORE/failures.jsonl            {"key", "name", "source", "stage", "reason"} per failure
    STORE/label.json                the run record: inputs with SHA-256, oracle, settings,
                                    versions, counts (earlier runs under previous_runs)

Energies are total energies at the same level and settings as ``force2geo generate``'s
``xtb``/``dft`` stages, so a label of a generate frame reproduces its stored energy.

Resuming: every geometry has a stable key (:func:`~force2geo.qc.geometries.geometry_key`,
a hash of atomic numbers, float32 positions and charge). A rerun skips keys already in
the store's stage or in ``failures.jsonl``, and a geometry met twice is labelled once. A
killed run loses at most its unflushed units. Each xTB geometry starts from a fresh SCF
guess, so its label does not depend on which geometry a worker computed before.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from force2geo import atomic
from force2geo.data.geometry import OVERLAP_FRACTION
from force2geo.data.geometry import geometry_problem as molecule_geometry_problem
from force2geo.data.shard import MANIFEST
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.qc.engines import DFTEngine, Engine, QCError, XTBEngine
from force2geo.qc.generate import (
    FAILURES,
    _FailureLog,
    _now,
    _rewrite_failures,
    _versions,
    read_failures,
)
from force2geo.qc.generate import RUN_RECORD as GENERATE_RECORD
from force2geo.qc.geometries import FrameSelection, Unit, Unreadable, geometry_key
from force2geo.qc.label_inputs import describe_input, read_geometries
from force2geo.qc.pool import run_tasks
from force2geo.qc.shard import shard_slice, shard_text
from force2geo.units import UNITS

log = logging.getLogger(__name__)

RUN_RECORD = "label.json"
ORACLES = ("xtb", "dft")


@dataclass(frozen=True)
class LabelConfig:
    """The oracle: ``xtb`` (GFN2-xTB, tblite) or ``dft`` (``dft_xc``/``dft_basis``, PySCF
    with density fitting), the stage name its labels get (default ``<oracle>-label``),
    and how close two atoms may come, as a fraction of the sum of their covalent radii."""

    oracle: str = "xtb"
    stage_name: str = ""
    dft_xc: str = "b3lyp"
    dft_basis: str = "6-31g*"
    overlap: float = OVERLAP_FRACTION

    def __post_init__(self) -> None:
        if self.oracle not in ORACLES:
            raise ValueError(f"oracle must be one of {ORACLES}, got {self.oracle!r}")
        if not self.stage_name:
            object.__setattr__(self, "stage_name", f"{self.oracle}-label")
        if len(self.stage_name) > 64 or not self.stage_name.strip():
            raise ValueError(f"stage name must be 1 to 64 characters, got {self.stage_name!r}")
        if not self.overlap >= 0:
            raise ValueError(f"overlap must be >= 0, got {self.overlap}")

    @property
    def level(self) -> str:
        """The level of theory, spelt as ``generate.json`` spells its levels."""
        if self.oracle == "xtb":
            return "GFN2-xTB"
        return f"{self.dft_xc.upper()}/{self.dft_basis.upper()} (density fitting)"

    def engine(self) -> Engine:
        if self.oracle == "xtb":
            return XTBEngine()
        return DFTEngine(xc=self.dft_xc, basis=self.dft_basis)


@dataclass
class LabelStats:
    """Counts of one :func:`label` call, in geometries (an unreadable record counts one)."""

    requested: int = 0  # in this shard of the input
    skipped: int = 0  # labelled or failed in an earlier run
    duplicates: int = 0  # the same geometry met again in the input: labelled once
    deferred: int = 0  # left for a later run by ``limit``
    written: int = 0
    failed: int = 0
    wall_s: float = 0.0

    @property
    def geometries_per_hour(self) -> float:
        done = self.written + self.failed
        return 3600.0 * done / self.wall_s if self.wall_s > 0 else 0.0


# --------------------------------------------------------------------------- one unit


def geometry_problem(atomic_numbers: np.ndarray, positions: np.ndarray, charge: int,
                     overlap: float = OVERLAP_FRACTION) -> str | None:
    """Why a geometry cannot be labelled before any calculation, or None: no molecule
    (:func:`force2geo.data.geometry.geometry_problem`: shape, non-finite coordinates, atoms
    closer than ``overlap`` times the sum of their covalent radii), or an odd electron count
    (closed shells only; an odd count usually means a missing charge)."""
    reason = molecule_geometry_problem(atomic_numbers, positions, overlap)
    if reason is not None:
        return reason
    electrons = int(np.asarray(atomic_numbers, dtype=np.int64).sum()) - int(charge)
    if electrons % 2 or electrons <= 0:
        return (f"{electrons} electrons at charge {charge}: only closed shells are supported "
                "(is the charge right? extxyz: a charge= key)")
    return None


def _failure(unit: Unit, k: int, stage: str, reason: str) -> dict:
    return {"key": unit.keys[k], "name": unit.name, "source": unit.sources[k],
            "stage": stage, "reason": reason}


def label_unit(unit: Unit, config: LabelConfig) -> tuple[Trajectory | None, list[dict]]:
    """Label every geometry of ``unit``: the trajectory of those that worked (None when
    none did) and one failure record per geometry that did not."""
    kept, energies, forces, failures = [], [], [], []
    engine = None
    for k in range(unit.n_geometries):
        reason = geometry_problem(unit.atomic_numbers, unit.positions[k], unit.charge,
                                  config.overlap)
        if reason is None:
            try:
                if engine is None or config.oracle == "xtb":  # a fresh SCF guess
                    engine = config.engine()
                result = engine.compute(unit.atomic_numbers, unit.positions[k], unit.charge)
                kept.append(k)
                energies.append(result.energy)
                forces.append(result.forces)
            except QCError as exc:
                reason = exc.reason
            except Exception as exc:  # one odd geometry must not end a long run
                reason = f"internal error: {type(exc).__name__}: {exc}"
        if reason is not None:
            failures.append(_failure(unit, k, config.stage_name, reason))
    if not kept:
        return None, failures
    trajectory = Trajectory(
        atomic_numbers=unit.atomic_numbers, positions=unit.positions[kept],
        energy=np.array(energies), forces=np.array(forces), stages=config.stage_name,
        charge=unit.charge, cid=unit.cid, smiles=unit.smiles, inchikey=unit.inchikey,
        name=unit.name)
    return trajectory, failures


def _work(task: tuple[Unit, LabelConfig]) -> tuple[Trajectory | None, list[dict]]:
    return label_unit(*task)


# --------------------------------------------------------------------------- resume


def labelled_keys(store_path: str | os.PathLike, stage: str) -> set[str]:
    """Keys of the geometries of ``stage`` already in the store (none if no store)."""
    store_path = Path(store_path)
    if not (store_path / MANIFEST).exists():
        return set()
    keys = set()
    for traj in TrajectoryStore(store_path).trajectories():
        for k, name in enumerate(traj.stages):
            if name == stage:
                keys.add(geometry_key(traj.atomic_numbers, traj.positions[k], traj.charge))
    return keys


def _done_keys(items: list, store_path: Path, stage: str, retry_failed: bool) -> set[str]:
    """Keys labelled (or failed, unless ``retry_failed``) by earlier runs."""
    done = labelled_keys(store_path, stage)
    failures = read_failures(store_path)
    if retry_failed and failures:
        wanted = {key for item in items for key in _keys(item)}
        _rewrite_failures(store_path, [r for r in failures if r.get("key") not in wanted])
    else:
        done.update(r.get("key") for r in failures)
    return done


def _keys(item: Unit | Unreadable) -> list[str]:
    return [item.key] if isinstance(item, Unreadable) else item.keys


def plan(items: list, done: set[str], limit: int | None, stats: LabelStats
         ) -> tuple[list[Unit], list[Unreadable]]:
    """The units (reduced to geometries not done, first of duplicates, within ``limit``)
    and unreadable records this run must handle; counts go to ``stats``."""
    seen, todo, unreadable, planned = set(done), [], [], 0
    for item in items:
        keys = _keys(item)
        stats.requested += len(keys)
        keep = []
        for k, key in enumerate(keys):
            if key in done:
                stats.skipped += 1
            elif key in seen:
                stats.duplicates += 1
            else:
                seen.add(key)
                keep.append(k)
        if limit is not None and planned + len(keep) > limit:
            stats.deferred += planned + len(keep) - max(limit, planned)
            keep = keep[:max(0, limit - planned)]
        if not keep:
            continue
        planned += len(keep)
        if isinstance(item, Unreadable):
            unreadable.append(item)
        else:
            todo.append(item.subset(keep))
    return todo, unreadable


# --------------------------------------------------------------------------- run record


def _check_target(store_path: Path, config: LabelConfig, inputs: Sequence) -> dict | None:
    """Refuse a store that is an input, not a label store, or labelled with other
    settings; return its previous run record, if any."""
    for spec in inputs:
        if Path(spec).resolve() == store_path.resolve():
            raise InputError(store_path, "is also an input; label into another store")
    if (store_path / GENERATE_RECORD).exists():
        raise InputError(store_path, "was made by force2geo generate; label into a new "
                         "store (force2geo merge joins stores)")
    path = store_path / RUN_RECORD
    if not path.exists():
        if (store_path / MANIFEST).exists() and TrajectoryStore(store_path).n_trajectories:
            raise InputError(store_path, "holds trajectories not written by force2geo "
                             "label; label into a new store")
        return None
    try:
        previous = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a torn record says nothing; this run rewrites it
    current = json.loads(json.dumps(asdict(config)))
    old = previous.get("config") or {}
    changed = sorted(k for k in set(old) | set(current) if old.get(k) != current.get(k))
    if changed:
        raise InputError(store_path, f"was labelled with other settings ({', '.join(changed)} "
                         "differ); use a new store and join them with force2geo merge")
    return previous


def _history(previous: dict | None) -> list[dict]:
    if not previous:
        return []
    keep = ("started", "finished", "status", "inputs", "shard", "selection", "limit",
            "counts")
    return [*previous.get("previous_runs", []), {k: previous.get(k) for k in keep}]


def _start_record(config: LabelConfig, selection: FrameSelection, inputs: list[dict],
                  run: dict, previous: dict | None) -> dict:
    return {"status": "running", "config": asdict(config), "level": config.level,
            "stage": config.stage_name, "selection": asdict(selection), "inputs": inputs,
            **run, "units": dict(UNITS), "versions": _versions(), "started": _now(),
            "command": " ".join(sys.argv), "previous_runs": _history(previous)}


def _finish_record(record: dict, stats: LabelStats) -> dict:
    if record["status"] == "running":
        record["status"] = "interrupted"
    record.update(finished=_now(), counts=asdict(stats), wall_s=round(stats.wall_s, 3),
                  geometries_per_hour=round(stats.geometries_per_hour, 1))
    return record


# --------------------------------------------------------------------------- driver


def _read_all(inputs: Sequence, selection: FrameSelection,
              shard: tuple[int, int] | None) -> tuple[list[dict], list]:
    if not inputs:
        raise InputError(None, "no inputs to label")
    described = [describe_input(spec) for spec in inputs]  # every path checked first
    items = [item for spec in inputs for item in read_geometries(spec, selection)]
    return described, shard_slice(items, shard)


def _check_engine(config: LabelConfig) -> None:
    try:
        config.engine()
    except ImportError as exc:
        raise InputError("--oracle", f"{config.oracle} needs the Python package "
                         f"{exc.name or exc} ({exc})") from None


def label(inputs: Sequence[str | os.PathLike], store_path: str | os.PathLike,
          config: LabelConfig | None = None, selection: FrameSelection | None = None,
          workers: int | None = None, shard: tuple[int, int] | None = None,
          limit: int | None = None, retry_failed: bool = False, flush_every: int = 16,
          flush_seconds: float = 30.0, progress: bool = True) -> LabelStats:
    """Label the geometries of ``inputs`` and append them to the store ``store_path``.

    ``workers`` one-thread processes (default: all cores) label one unit each at a time.
    ``shard = (I, N)`` takes the I-th round-robin slice of the units; ``limit`` caps the
    geometries labelled by this run (rerun to go on); ``retry_failed`` runs geometries
    listed in ``failures.jsonl`` again. Returns the run's counts.
    """
    store_path = Path(store_path)
    config = config or LabelConfig()
    selection = selection or FrameSelection()
    workers = max(1, int(workers or os.cpu_count() or 1))
    started = time.time()
    previous = _check_target(store_path, config, inputs)
    described, items = _read_all(inputs, selection, shard)
    _check_engine(config)
    # The writer takes the store's lock first: a second label run on it fails here.
    writer = TrajectoryWriter(store_path, source=f"force2geo label ({config.level})").create()
    failures, stats = None, LabelStats()
    run = {"shard": shard_text(shard), "limit": limit, "workers": workers}
    record = _start_record(config, selection, described, run, previous)
    try:
        done = _done_keys(items, store_path, config.stage_name, retry_failed)
        todo, unreadable = plan(items, done, limit, stats)
        failures = _FailureLog(store_path / FAILURES)
        atomic.write_json(store_path / RUN_RECORD, {**record, "counts": asdict(stats)},
                          indent=1)
        for item in unreadable:
            failures.write({"key": item.key, "name": "", "source": item.source,
                            "stage": "input", "reason": item.reason})
            stats.failed += 1

        def take(result: tuple[Trajectory | None, list[dict]]) -> None:
            trajectory, failed = result
            if trajectory is not None:
                writer.add(trajectory)
                stats.written += trajectory.n_snapshots
            for entry in failed:
                failures.write(entry)
                stats.failed += 1

        run_tasks(_work, [(unit, config) for unit in todo], workers, take, writer.flush,
                  flush_every, flush_seconds, progress, unit="unit")
        record["status"] = "finished"
    finally:
        writer.close()
        if failures is not None:
            failures.close()
        stats.wall_s = time.time() - started
        atomic.write_json(store_path / RUN_RECORD, _finish_record(record, stats), indent=1)
    return stats
