"""The ``mlip`` geometry of a property dataset: batched MLIP relaxation (paper §2.4, §4.3).

:func:`relax_geometries` relaxes each molecule from a non-stable geometry (``early`` or
``rdkit``) with :func:`force2geo.relax.relax_iter` and stores the final geometry as
``mlip``, every evaluated frame as the molecule's trajectory (the inputs of mixed
conformer denoising), and the relaxation's status, steps and final fmax.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence

import numpy as np
import torch

from force2geo.finetune.dataset import PropertyDataset
from force2geo.relax import ForceFn, RelaxConfig, RelaxStats, potential_force_fn, relax_iter

STARTS = ("early", "rdkit", "ground_truth")
DEFAULT_CONFIG = RelaxConfig(trajectory=True)  # the paper's BFGS, fmax 0.05 eV/Å, 500 steps


def _keep(n_frames: int, keep_frames: int | None) -> np.ndarray:
    """At most ``keep_frames`` evenly spaced frame indices, first and last kept."""
    if keep_frames is None or n_frames <= keep_frames:
        return np.arange(n_frames)
    return np.unique(np.linspace(0, n_frames - 1, max(keep_frames, 2)).round().astype(int))


def _force_fn(potential_or_force_fn) -> ForceFn:
    if isinstance(potential_or_force_fn, torch.nn.Module):
        return potential_force_fn(potential_or_force_fn)
    if callable(potential_or_force_fn):
        return potential_or_force_fn
    raise TypeError("need a Potential (torch module) or a force function, got "
                    f"{type(potential_or_force_fn).__name__}")


def relax_geometries(dataset: PropertyDataset, potential_or_force_fn, start: str = "early",
                     config: RelaxConfig = DEFAULT_CONFIG,
                     indices: Sequence[int] | None = None, progress: bool = True, *,
                     device: torch.device | str = "cpu", keep_frames: int | None = None,
                     model: dict | None = None) -> dict:
    """Relax molecules of ``dataset`` from their ``start`` geometry; fill ``mlip``.

    ``potential_or_force_fn``: a :class:`~force2geo.models.Potential` or a
    :data:`~force2geo.relax.ForceFn`. ``indices`` default to every molecule; those
    without a ``start`` geometry are skipped and counted. Frames are kept when
    ``config.trajectory`` (subsampled to at most ``keep_frames``, first and last kept).
    A molecule whose final geometry is not finite gets no ``mlip`` geometry. ``model``
    (plain JSON, e.g. the checkpoint path) goes into the record.

    Returns the record, also stored as ``dataset.meta["relax"]`` (the latest) and appended
    to ``dataset.meta["relax_history"]`` (one per call, e.g. valid/test first, train later):
    start, config, model, counts per status, skipped molecules, median steps, wall time.
    """
    from tqdm import tqdm

    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    force_fn = _force_fn(potential_or_force_fn)
    wanted = np.arange(len(dataset)) if indices is None else np.asarray(indices, np.int64)
    todo = wanted[dataset.has(start)[wanted]]
    skipped = wanted[~dataset.has(start)[wanted]]
    starts = [(dataset.atomic_numbers(i), dataset.positions(i, start)) for i in todo]
    stats, results = RelaxStats(), [None] * len(todo)
    bar = tqdm(total=len(todo), unit="mol", desc=f"MLIP relax from {start}",
               dynamic_ncols=True, disable=not progress or not sys.stderr.isatty())
    started = time.perf_counter()
    for result in relax_iter(force_fn, starts, config, device=device, stats=stats):
        results[result.index] = result
        bar.update(1)
    bar.close()
    finite = [bool(np.isfinite(r.positions).all()) for r in results]
    dataset.set_geometry("mlip", [int(i) for i, ok in zip(todo, finite, strict=True) if ok],
                         [r.positions for r, ok in zip(results, finite, strict=True) if ok])
    dataset.clear_geometry("mlip", [int(i) for i, ok in zip(todo, finite, strict=True)
                                    if not ok])
    frames, energies = [], []
    for r in results:
        if r.trajectory is None:
            frames.append(None)
            energies.append(None)
            continue
        keep = _keep(len(r.trajectory[1]), keep_frames)
        frames.append(r.trajectory[0][keep])
        energies.append(r.trajectory[1][keep])
    dataset.set_relaxations(todo, frames, energies, [r.status for r in results],
                            [r.n_steps for r in results], [r.fmax for r in results])
    record = _record(start, config, model, results, skipped, stats,
                     time.perf_counter() - started, keep_frames)
    dataset.meta["relax"] = record
    dataset.meta["relax_history"] = [*dataset.meta.get("relax_history", []), record]
    return record


def _record(start, config, model, results, skipped, stats, wall, keep_frames) -> dict:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    steps = [r.n_steps for r in results]
    return {"start": start, "config": dataclasses.asdict(config), "model": model,
            "keep_frames": keep_frames, "relaxed": len(results), "status_counts": counts,
            "skipped_no_start": [int(i) for i in skipped],
            "median_steps": float(np.median(steps)) if steps else None,
            "force_evaluations": stats.evaluations, "wall_s": round(wall, 3)}
