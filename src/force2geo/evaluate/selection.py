"""Which molecules to evaluate (D_opt), and their start and reference geometries.

D_opt (paper §4.2) is picked by MaxMin diversity on Morgan fingerprints of the stored
SMILES, among the trajectories of a split part (or of the whole store) that have
snapshots of the chosen stage. A selection file (``force2geo split --method maxmin``)
gives D_opt directly.

From each trajectory's snapshots of that stage, in order: the start ``c_0`` is the first
(the paper starts from the first DFT-substage snapshot) or the snapshot numbered ``start``
(negative counts from the end); the reference minimum ``c_gt`` is the stage's last
snapshot when it comes after the start. When it does not (a one-snapshot stage, or a
start at the end), or when asked, there is no stored reference and the oracle makes one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from force2geo.data import splits
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class Case:
    """One molecule to evaluate: its ``trajectory`` index in the store, identifiers,
    ``atomic_numbers [n]``, ``charge``, the start ``c0 [n, 3]`` Å and the stored
    reference minimum ``c_gt [n, 3]`` Å (None: the oracle makes it)."""

    trajectory: int
    name: str
    smiles: str
    atomic_numbers: np.ndarray
    charge: int
    c0: np.ndarray
    c_gt: np.ndarray | None


def parse_start(text: str) -> int:
    """``first`` -> 0, else an integer snapshot number within the stage."""
    if text == "first":
        return 0
    try:
        return int(text)
    except ValueError:
        raise InputError("--start", f"must be 'first' or an integer frame, got {text!r}") \
            from None


def trajectories_with_stage(store: TrajectoryStore, stage: str) -> np.ndarray:
    """Sorted indices of the trajectories that have at least one ``stage`` snapshot."""
    if stage not in store.stage_names:
        raise InputError(store.path, f"has no stage {stage!r}; its stages: "
                         f"{', '.join(store.stage_names)}")
    snapshots = store.select(stage)
    return np.unique(store.snapshot_trajectory()[snapshots])


def choose_molecules(store: TrajectoryStore, stage: str, k: int, seed: int = 42,
                     split: str | None = None, select: str | None = None) -> np.ndarray:
    """D_opt as trajectory indices, in pick order.

    ``select`` (a selection file) gives them directly; otherwise MaxMin picks ``k`` (at
    most all candidates) among the trajectories of ``split`` (``FILE:PART``) or of the
    whole store. Trajectories without ``stage`` snapshots are dropped, with a warning.
    """
    with_stage = trajectories_with_stage(store, stage)
    if select is not None:
        chosen = splits.read_part(select, store)
        keep = np.isin(chosen, with_stage)
        if not keep.all():
            logger.warning("%s: %d of %d selected trajectories have no %r snapshots and are "
                           "skipped", select, int((~keep).sum()), chosen.size, stage)
        if not keep.any():
            raise InputError(select, f"none of its trajectories has {stage!r} snapshots")
        return chosen[keep]
    pool = splits.read_part(split, store) if split is not None else np.arange(store.n_trajectories)
    candidates = pool[np.isin(pool, with_stage)]
    if candidates.size == 0:
        raise InputError(split or store.path, f"no trajectory with {stage!r} snapshots")
    if k < 1:
        raise InputError("--k", f"must be at least 1, got {k}")
    if k >= candidates.size:
        if k > candidates.size:
            logger.info("k=%d but only %d candidates: evaluating all of them", k,
                        candidates.size)
        return candidates
    return splits.select_store(store, k, seed, candidates)


def make_case(store: TrajectoryStore, j: int, stage: str, start: int,
              reference: str = "stage") -> Case:
    """The :class:`Case` of trajectory ``j``: start snapshot ``start`` of ``stage`` and,
    when ``reference == "stage"`` and the stage goes on after it, its last snapshot as
    ``c_gt`` (else None: the oracle makes the reference)."""
    trajectory = store.trajectory(j)
    part = trajectory.select(stage)
    if part is None:
        raise InputError(store.path, f"no {stage!r} snapshots", record=f"trajectory {j}")
    n = part.n_snapshots
    if not -n <= start < n:
        raise InputError(store.path, f"--start {start} is outside its {n} {stage!r} "
                         "snapshots", record=f"trajectory {j}")
    first = start % n
    has_gt = reference == "stage" and first < n - 1
    return Case(
        trajectory=int(j), name=trajectory.key or f"trajectory-{j}", smiles=trajectory.smiles,
        atomic_numbers=trajectory.atomic_numbers.astype(np.int64),
        charge=trajectory.charge, c0=np.array(part.positions[first], dtype=np.float64),
        c_gt=np.array(part.positions[-1], dtype=np.float64) if has_gt else None,
    )
