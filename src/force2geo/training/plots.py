"""PNG plots of a run with matplotlib (Agg backend, no display needed).

* :func:`learning_curve`: training loss per logged step and validation loss, energy MAE
  (meV/atom) and force RMSE (meV/Å) per epoch.
* :func:`parity`: predicted against reference energies per atom less the atom reference
  energies (eV/atom) and force components (eV/Å) on the validation split.

When matplotlib is not installed the plots are skipped with a log message.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from force2geo.plotting import pyplot, save_figure

logger = logging.getLogger(__name__)


def learning_curve(records: list[dict], path: str | os.PathLike) -> Path | None:
    """Draw the learning curves of the metric ``records`` (see :mod:`.runlog`) to ``path``."""
    plt = pyplot()
    train = [r for r in records if r["kind"] == "train"]
    valid = [r for r in records if r["kind"] == "valid" and r.get("energy_mae") is not None]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].plot([r["step"] for r in train], [r["loss"] for r in train], label="train")
    if valid:
        axes[0].plot([r["step"] for r in valid], [r["loss"] for r in valid], "o-",
                     label="valid")
    axes[0].set(xlabel="step", ylabel="loss", yscale="log", title="loss (Eq. 4)")
    axes[0].legend()
    for ax, key, label in ((axes[1], "energy_mae", "energy MAE (meV/atom)"),
                           (axes[2], "force_rmse", "force RMSE (meV/Å)")):
        ax.plot([r["step"] for r in valid], [r[key] for r in valid], "o-")
        ax.set(xlabel="step", ylabel=label, yscale="log", title=f"validation {label}")
    fig.tight_layout()
    return save_figure(fig, path)


def parity(energy_true: np.ndarray, energy_pred: np.ndarray, forces_true: np.ndarray,
           forces_pred: np.ndarray, path: str | os.PathLike,
           metrics: dict | None = None) -> Path | None:
    """Parity plots: ``energy_* [n_snapshots]`` eV/atom (less atom references),
    ``forces_* [n_atoms, 3]`` eV/Å; ``metrics`` (of :mod:`.metrics`) go in the titles."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.3))
    panels = (
        (axes[0], energy_true, energy_pred, "E - atom refs (eV/atom)", "energy_mae",
         "energy MAE", "meV/atom"),
        (axes[1], np.ravel(forces_true), np.ravel(forces_pred), "force component (eV/Å)",
         "force_rmse", "force RMSE", "meV/Å"),
    )
    for ax, true, pred, label, key, name, unit in panels:
        ax.scatter(true, pred, s=4, alpha=0.5)
        if true.size:
            low, high = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
            ax.plot([low, high], [low, high], "k--", lw=0.8)
        title = "validation"
        if metrics is not None and metrics.get(key) is not None:
            title += f": {name} {metrics[key]:.2f} {unit}"
        ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}", title=title)
    fig.tight_layout()
    return save_figure(fig, path)
