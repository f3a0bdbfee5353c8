"""Pieces shared by the property-training and the denoising runs: run folders, resume
checks, seeded batch order, the metrics log, the clock and the progress bar.

Randomness of a run's data comes from generators seeded by ``(seed, epoch, batch)``, never
from a running generator, so a run stopped anywhere and resumed from ``last.pt`` draws the
same batches and the same noise as a run that never stopped.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from force2geo.errors import InputError
from force2geo.training.runlog import read_records  # the same metrics.jsonl format

CONFIG, METRICS, RESULT, LAST, BEST = ("config.json", "metrics.jsonl", "result.json",
                                       "last.pt", "best.pt")
# Options a resumed run may change: how long it goes on, where, and how it reports.
RESUMABLE = ("epochs", "max_minutes", "max_steps", "device", "progress", "ckpt_every")


def check_new_run_dir(run_dir: Path) -> None:
    """Refuse a folder that already holds a run; create it otherwise."""
    for name in (LAST, METRICS):
        if (run_dir / name).exists():
            raise InputError(run_dir, f"already holds a run ({name}); resume it, or choose "
                             "another output folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "exists and is not a folder")
    run_dir.mkdir(parents=True, exist_ok=True)


def check_same_run(saved: dict, current: dict, path: Path) -> None:
    """Resume only the same run: every option but :data:`RESUMABLE` must match."""
    changed = sorted(k for k in set(saved) | set(current)
                     if k not in RESUMABLE and saved.get(k) != current.get(k))
    if changed:
        raise InputError(path, f"cannot resume exactly with a different {', '.join(changed)} "
                         f"(only {', '.join(RESUMABLE)} may change)")


def check_same_data(checkpoint: dict, data: dict, path: Path) -> None:
    for key in ("fingerprint", "split_digest"):
        if checkpoint["data"].get(key) != data.get(key):
            raise InputError(path, f"was trained with {key} {checkpoint['data'].get(key)}, "
                             f"but this run has {data.get(key)}")


def split_digest(parts: dict[str, np.ndarray]) -> str:
    """A short hash of the index parts (names and indices, in order)."""
    text = json.dumps({name: [int(i) for i in ix] for name, ix in sorted(parts.items())})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def epoch_batches(indices: np.ndarray, batch_size: int, seed: int, epoch: int
                  ) -> list[np.ndarray]:
    """``indices`` shuffled by ``(seed, epoch)`` and cut into batches (the last may be
    smaller)."""
    order = np.asarray(indices)[np.random.default_rng([seed, epoch, 0]).permutation(
        len(indices))]
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def batch_rng(seed: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator of the random inputs (noise, frames) of one batch."""
    return np.random.default_rng([seed, epoch, 1, batch])


def subsample(indices: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded ``fraction`` of ``indices`` (at least one when any), sorted."""
    indices = np.asarray(indices, dtype=np.int64)
    if fraction >= 1.0 or indices.size == 0:
        return indices
    n = max(1, int(round(fraction * indices.size)))
    pick = np.random.default_rng([seed, 2]).choice(indices.size, n, replace=False)
    return np.sort(indices[pick])


class MetricsLog:
    """``metrics.jsonl``, one record per epoch. ``keep_epochs``: on resume, the records of
    the epochs the checkpoint has finished are kept, later ones (a killed run's) dropped."""

    def __init__(self, run_dir: Path, keep_epochs: int | None = None):
        from force2geo import atomic

        self.path = run_dir / METRICS
        records = []
        if keep_epochs is not None and self.path.exists():
            records = [r for r in read_records(run_dir) if r.get("epoch", 0) <= keep_epochs]
        atomic.write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


def stop_reason(config, step: int, clock: Clock) -> str | None:
    """``"max_steps"`` or ``"max_minutes"`` once ``config``'s budget is spent, else None."""
    if config.max_steps is not None and step >= config.max_steps:
        return "max_steps"
    if clock.out_of(config.max_minutes):
        return "max_minutes"
    return None


class Clock:
    """Seconds of a run, counting those of earlier (resumed) processes."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.started = time.perf_counter()

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self.started

    def out_of(self, max_minutes: float | None) -> bool:
        return max_minutes is not None and self.seconds() >= 60.0 * max_minutes


def progress_bar(total: int, initial: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm bar on stderr, off when ``enabled`` is False or stderr is not a terminal."""
    return tqdm(total=total, initial=initial, desc=desc, unit="batch", leave=False,
                dynamic_ncols=True, disable=not enabled or not sys.stderr.isatty())
