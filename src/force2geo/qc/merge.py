"""Join trajectory stores (for example the shards of a cluster job array) into a new one.

``merge(STORES, OUT)`` checks that the stores are compatible (the same units; a stage
present in several stores has one level of theory, as their ``label.json``,
``generate.json`` or ``merge.json`` records name it), finds duplicate trajectories (the
same molecule name and the same geometries, stages and charge: a shard merged twice, or
one molecule in two overlapping runs) and refuses them, or with ``skip_duplicates`` keeps
the first and names the others in the record. OUT is written under a temporary name and
renamed into place when complete::

    OUT/manifest.json, shard-*/   the trajectories, in input order
    OUT/failures.jsonl            the inputs' failure records, each with "from_store"
    OUT/merge.json                inputs (path, fingerprint, counts, their run record),
                                  stage levels, duplicates, versions, output fingerprint
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from force2geo import atomic
from force2geo.data.shard import MANIFEST
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.qc.generate import FAILURES, _now, _versions, read_failures
from force2geo.qc.generate import RUN_RECORD as GENERATE_RECORD
from force2geo.qc.geometries import geometry_key
from force2geo.qc.label import RUN_RECORD as LABEL_RECORD

RUN_RECORD = "merge.json"
MAX_LISTED = 1000  # duplicates named one by one in the record


@dataclass
class MergeStats:
    """Counts of one :func:`merge` call."""

    stores: int = 0
    trajectories: int = 0
    snapshots: int = 0
    duplicates: int = 0


def run_record(store_path: Path) -> tuple[str | None, dict]:
    """The name and content of a store's run record (label, generate or merge), if any."""
    for name in (LABEL_RECORD, GENERATE_RECORD, RUN_RECORD):
        path = store_path / name
        if path.exists():
            try:
                return name, json.loads(path.read_text())
            except json.JSONDecodeError:
                return name, {}
    return None, {}


def stage_levels(store_path: Path) -> dict[str, str]:
    """The level of theory of each stage, as the store's run record names it."""
    name, record = run_record(store_path)
    if name == LABEL_RECORD and record.get("stage"):
        return {record["stage"]: record.get("level", "unknown")}
    if name == GENERATE_RECORD:
        return dict(record.get("levels", {}))
    if name == RUN_RECORD:
        return dict(record.get("stage_levels", {}))
    return {}


def trajectory_signature(trajectory: Trajectory) -> str:
    """A hash of a trajectory's name and of each snapshot's stage and geometry key."""
    digest = hashlib.sha256(trajectory.name.encode())
    for k, stage in enumerate(trajectory.stages):
        digest.update(f"|{stage}:".encode())
        digest.update(geometry_key(trajectory.atomic_numbers, trajectory.positions[k],
                                   trajectory.charge).encode())
    return digest.hexdigest()[:32]


# --------------------------------------------------------------------------- checks


def _check_paths(stores: Sequence[Path], out: Path, overwrite: bool) -> None:
    if not stores:
        raise InputError(None, "no stores to merge")
    resolved = [p.resolve() for p in stores]
    if out.resolve() in resolved:
        raise InputError(out, "is also an input; merge into a new folder")
    twice = [str(p) for p, r in zip(stores, resolved, strict=True) if resolved.count(r) > 1]
    if twice:
        raise InputError(twice[0], "is named twice")
    if out.exists():
        if not overwrite:
            raise InputError(out, "exists; pass --overwrite to replace it")
        if not (out / MANIFEST).exists() and (out.is_file() or any(out.iterdir())):
            raise InputError(out, "exists and is not a trajectory store; refusing to "
                             "overwrite it")


def _check_compatible(stores: list[TrajectoryStore]) -> dict[str, str]:
    """The stage levels of the merged store; InputError on different units or levels."""
    units = stores[0].manifest["units"]
    levels: dict[str, dict[str, list[str]]] = {}
    for store in stores:
        if store.manifest["units"] != units:
            raise InputError(store.path, f"has units {store.manifest['units']}, but "
                             f"{stores[0].path} has {units}")
        known = stage_levels(store.path)
        for stage in store.summary()["snapshots_per_stage"]:
            level = known.get(stage, "unknown")
            levels.setdefault(stage, {}).setdefault(level, []).append(str(store.path))
    out = {}
    for stage, by_level in levels.items():
        named = {lv: paths for lv, paths in by_level.items() if lv != "unknown"}
        if len(named) > 1:
            detail = "; ".join(f"{lv} in {', '.join(paths)}" for lv, paths in named.items())
            raise InputError(None, f"stage {stage!r} has different levels of theory: "
                             f"{detail}")
        out[stage] = next(iter(named), "unknown")
    return out


def _duplicates(stores: list[TrajectoryStore]) -> list[dict]:
    """Every trajectory whose signature an earlier one (in input order) already has."""
    first: dict[str, tuple[str, int]] = {}
    found = []
    for store in stores:
        for j, trajectory in enumerate(store.trajectories()):
            signature = trajectory_signature(trajectory)
            if signature in first:
                found.append({"name": trajectory.name, "store": str(store.path),
                              "trajectory": j, "same_as": {"store": first[signature][0],
                                                           "trajectory": first[signature][1]}})
            else:
                first[signature] = (str(store.path), j)
    return found


# --------------------------------------------------------------------------- merge


def _write(stores: list[TrajectoryStore], tmp: Path, skip: set[tuple[str, int]],
           stats: MergeStats) -> list[dict]:
    """Copy every trajectory not in ``skip`` to a new store at ``tmp``; per-input counts."""
    inputs = []
    with TrajectoryWriter(tmp, source=f"force2geo merge of {len(stores)} stores") as writer:
        writer.create()
        for store in stores:
            taken = 0
            for j, trajectory in enumerate(store.trajectories()):
                if (str(store.path), j) in skip:
                    continue
                writer.add(trajectory)
                taken += 1
                stats.trajectories += 1
                stats.snapshots += trajectory.n_snapshots
            name, record = run_record(store.path)
            inputs.append({"path": str(store.path), "fingerprint": store.fingerprint,
                           "trajectories": store.n_trajectories,
                           "snapshots": store.n_snapshots, "taken": taken,
                           "run_record": {"file": name, **record} if name else None})
    failures = [{**r, "from_store": str(s.path)} for s in stores for r in read_failures(s.path)]
    atomic.write_text(tmp / FAILURES, "".join(json.dumps(r) + "\n" for r in failures))
    return inputs


def _replace(tmp: Path, out: Path) -> None:
    """Put the finished ``tmp`` in place of ``out`` (whose old content goes)."""
    old = out.with_name(f".{out.name}.merge-old")
    if out.exists():
        if old.exists():
            shutil.rmtree(old)
        os.rename(out, old)
    os.rename(tmp, out)
    atomic.fsync_dir(out.parent)
    if old.exists():
        shutil.rmtree(old)


def merge(stores: Sequence[str | os.PathLike], out: str | os.PathLike,
          overwrite: bool = False, skip_duplicates: bool = False) -> MergeStats:
    """Join ``stores`` into a new store ``out`` (see the module docstring)."""
    paths, out = [Path(s) for s in stores], Path(out)
    _check_paths(paths, out, overwrite)
    opened = [TrajectoryStore(p) for p in paths]
    levels = _check_compatible(opened)
    duplicates = _duplicates(opened)
    if duplicates and not skip_duplicates:
        listed = ", ".join(f"{d['name']!r} ({d['store']} #{d['trajectory']} = "
                           f"{d['same_as']['store']} #{d['same_as']['trajectory']})"
                           for d in duplicates[:3])
        raise InputError(None, f"{len(duplicates)} duplicate trajectories (same name and "
                         f"geometries), e.g. {listed}; pass --skip-duplicates to keep the "
                         "first of each")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.merge-tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    stats = MergeStats(stores=len(opened), duplicates=len(duplicates))
    try:
        skip = {(d["store"], d["trajectory"]) for d in duplicates}
        inputs = _write(opened, tmp, skip, stats)
        record = {"created": _now(), "command": " ".join(sys.argv), "inputs": inputs,
                  "stage_levels": levels, "units": opened[0].manifest["units"],
                  "duplicates": {"policy": "skip" if skip_duplicates else "refuse",
                                 "count": len(duplicates),
                                 "listed": duplicates[:MAX_LISTED]},
                  "counts": asdict(stats), "fingerprint": TrajectoryStore(tmp).fingerprint,
                  "versions": _versions()}
        atomic.write_json(tmp / RUN_RECORD, record, indent=1)
        _replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return stats
