"""Property datasets from trajectory stores.

Which stored frame becomes which geometry (:func:`stage_geometries`):

- ``ground_truth``: the last frame of the trajectory (the minimum of the final stage:
  ``dft`` when the store has a DFT relaxation, else ``xtb``; the single snapshot of a store
  converted from QM9, Molecule3D or ∇²DFT).
- ``early``: the first frame of the final relaxation stage, the analog of the paper's
  "PM3 & HF" geometry (the start of the last-level relaxation): the last MMFF geometry
  in a ``force2geo generate`` store, the first ``dft1`` frame in PubChemQCR. A final stage
  of single points on earlier geometries (``generate --dft single``) relaxes nothing, so
  the stage before it is the final relaxation stage then. A single snapshot has none.
- ``rdkit``: the ``etkdg`` frame of a ``generate`` store (already in the trajectory's atom
  order); for other stores an ETKDG conformer made here in the ground truth's atom order
  (:mod:`force2geo.finetune.conformers`), or none, with the reason in the build report.

Targets are every property of the store (eV: ``gap``, ``homo``, ``lumo``, ``xtb_gap`` ...);
molecules without a finite value of the required ``target`` are left out and counted.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from force2geo import __version__
from force2geo.data.store import TrajectoryStore
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.finetune.conformers import add_rdkit_conformers
from force2geo.finetune.dataset import MoleculeRecord, PropertyDataset

# Stages that are one relaxation at one level (PubChemQCR splits its DFT run in two).
SAME_RELAXATION = {"dft1": "dft", "dft2": "dft"}
RUN_RECORD = "generate.json"  # force2geo.qc.generate's run record, when the store has one


def _segments(stages: Sequence[str]) -> list[tuple[str, int, int]]:
    """Runs of consecutive frames of one relaxation: ``(level, first, end)``."""
    out: list[tuple[str, int, int]] = []
    for k, stage in enumerate(stages):
        level = SAME_RELAXATION.get(stage, stage)
        if out and out[-1][0] == level:
            out[-1] = (level, out[-1][1], k + 1)
        else:
            out.append((level, k, k + 1))
    return out


def _single_points(positions: np.ndarray, first: int, end: int, tol: float = 1e-4) -> bool:
    """True when every frame in ``first:end`` repeats a geometry of an earlier frame."""
    earlier = positions[:first].reshape(first, -1)
    if earlier.shape[0] == 0:
        return False
    for k in range(first, end):
        gap = np.abs(earlier - positions[k].reshape(1, -1)).max(axis=1)
        if gap.min() > tol:
            return False
    return True


def stage_geometries(trajectory: Trajectory) -> dict[str, np.ndarray]:
    """``{"ground_truth", ["early"], ["rdkit"]}`` -> ``[n_atoms, 3]`` Å of a stored
    trajectory (see the module docstring for the rule)."""
    positions, stages = trajectory.positions, trajectory.stages
    out = {"ground_truth": positions[-1]}
    if "etkdg" in stages:
        out["rdkit"] = positions[stages.index("etkdg")]
    segments = _segments(stages)
    while len(segments) > 1 and _single_points(positions, *segments[-1][1:]):
        segments.pop()
    if len(segments) > 1:
        out["early"] = positions[segments[-1][1]]
    return out


def _record(store: TrajectoryStore, j: int, target_names: Sequence[str]) -> MoleculeRecord:
    trajectory = store.trajectory(j)
    return MoleculeRecord(
        name=trajectory.name or trajectory.key or str(j), smiles=trajectory.smiles,
        inchikey=trajectory.inchikey, atomic_numbers=trajectory.atomic_numbers,
        geometries=stage_geometries(trajectory),
        targets={t: trajectory.properties.get(t, np.nan) for t in target_names},
        charge=trajectory.charge, cid=-1 if trajectory.cid is None else trajectory.cid,
        source_index=j)


def _source_meta(store: TrajectoryStore) -> dict:
    """Where the data came from: the store, its fingerprint, sources and levels."""
    meta = {"store": str(store.path.resolve()), "store_fingerprint": store.fingerprint,
            "store_trajectories": store.n_trajectories, "sources": store.manifest["sources"],
            "stages": store.stage_names}
    record = store.path / RUN_RECORD
    if record.is_file():
        try:
            run = json.loads(record.read_text())
            meta["levels"] = run.get("levels")
            meta["protocol"] = run.get("config")
        except (OSError, json.JSONDecodeError):
            meta["levels"] = None
    return meta


def from_store(store: TrajectoryStore | str | Path, target: str = "gap", *,
               indices: Sequence[int] | None = None, limit: int | None = None,
               rdkit: bool = True, seed: int = 42,
               progress: bool = True) -> PropertyDataset:
    """A :class:`PropertyDataset` of the trajectories of ``store``.

    ``indices`` (trajectory indices, default all) and ``limit`` (the first N of them)
    choose molecules; those without a finite ``target`` are left out. ``rdkit``: make
    ETKDG conformers (``seed``) for molecules whose trajectory has no ``etkdg`` frame.
    ``dataset.meta["build"]`` records the target, counts, left-out molecules and
    conformer failures; ``meta["source"]`` the store, fingerprint and levels of theory.
    """
    from tqdm import tqdm

    store = store if isinstance(store, TrajectoryStore) else TrajectoryStore(store)
    if target not in store.property_names:
        raise InputError(store.path, f"no property {target!r}; it has "
                         f"{', '.join(store.property_names) or 'none'}")
    chosen = np.arange(store.n_trajectories) if indices is None \
        else np.asarray(indices, dtype=np.int64)
    if limit is not None:
        chosen = chosen[:limit]
    values = store.properties(target)
    usable = np.isfinite(values[chosen])
    target_names = list(store.property_names)
    bar = tqdm(chosen[usable].tolist(), unit="mol", desc="read store", dynamic_ncols=True,
               disable=not progress or not sys.stderr.isatty())
    records = [_record(store, int(j), target_names) for j in bar]
    meta = {"source": _source_meta(store), "default_target": target,
            "build": {"target": target, "requested": int(chosen.size),
                      "kept": len(records), "force2geo_version": __version__,
                      "no_target": [int(j) for j in chosen[~usable]]}}
    dataset = PropertyDataset.from_records(records, target_names, meta)
    from_store_frames = int(dataset.has("rdkit").sum())
    if from_store_frames:
        dataset.meta["rdkit"] = {"method": "the etkdg frame of the stored trajectory",
                                 "failures": {}}
    if rdkit and not dataset.has("rdkit").all():
        add_rdkit_conformers(dataset, seed, progress=progress)
    dataset.meta["build"]["rdkit_failures"] = len(dataset.meta.get("rdkit", {})
                                                  .get("failures", {}))
    return dataset
