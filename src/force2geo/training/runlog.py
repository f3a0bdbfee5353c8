"""Metrics of a run: ``RUN_DIR/metrics.jsonl``, ``RUN_DIR/metrics.csv`` and, when the
``tensorboard`` package is installed, TensorBoard event files in ``RUN_DIR/tensorboard``.

Each record has a ``kind`` ("train" every few steps; "valid" at each epoch end, or "epoch"
with the mean training loss when there is no validation split; "final" at the end), the
global ``step`` and ``epoch``. Energies are meV/atom (``energy_mae``) or
meV (``energy_mae_total``), forces meV/Å, losses in the loss's own units (see
:mod:`force2geo.training.losses`). On resume, records written after the checkpoint's step
(by the run that was killed) are dropped, so each step appears once.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from force2geo import atomic

logger = logging.getLogger(__name__)

JSONL, CSV = "metrics.jsonl", "metrics.csv"
COLUMNS = ("kind", "step", "epoch", "lr", "loss", "energy_loss", "force_loss", "grad_norm",
           "energy_mae", "energy_mae_total", "force_rmse", "force_mae", "force_cos",
           "n_energy", "n_force_atoms", "seconds")


def read_records(run_dir: str | os.PathLike) -> list[dict]:
    """The records of ``RUN_DIR/metrics.jsonl`` (empty when there is none)."""
    path = Path(run_dir) / JSONL
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class RunLog:
    """Appends records to the metrics files; does nothing when ``enabled`` is False
    (ranks other than 0). ``resume_step``: drop earlier records past this step."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True,
                 resume_step: int | None = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tensorboard = None
        if not enabled:
            return
        records = read_records(self.run_dir)
        if resume_step is not None:
            records = [r for r in records if r["step"] <= resume_step and r["kind"] != "final"]
        else:
            records = []
        self._rewrite(records)
        self._tensorboard = _tensorboard_writer(self.run_dir / "tensorboard")

    def _rewrite(self, records: list[dict]) -> None:
        for name, body in ((JSONL, "".join(json.dumps(r) + "\n" for r in records)),
                           (CSV, None)):
            with atomic.atomic_open(self.run_dir / name, "w", newline="") as handle:
                if body is not None:
                    handle.write(body)
                else:
                    writer = csv.DictWriter(handle, COLUMNS, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(records)

    def write(self, record: dict) -> None:
        """Append one record (a dict of plain values with ``kind``, ``step``, ``epoch``)."""
        if not self.enabled:
            return
        with open(self.run_dir / JSONL, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        with open(self.run_dir / CSV, "a", newline="") as handle:
            csv.DictWriter(handle, COLUMNS, extrasaction="ignore").writerow(record)
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)):
                    self._tensorboard.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None


def _tensorboard_writer(folder: Path):
    """A TensorBoard SummaryWriter, or None when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.debug("tensorboard is not installed; metrics go to JSONL and CSV only")
        return None
    return SummaryWriter(str(folder))
