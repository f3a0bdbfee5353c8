"""Matplotlib without a display, and figures saved whole (see :mod:`force2geo.atomic`)."""

from __future__ import annotations

import os
from pathlib import Path

from force2geo import atomic


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) atomically, then close it."""
    path = Path(path)
    try:
        with atomic.atomic_open(path, "wb") as handle:
            fig.savefig(handle, dpi=dpi, format=path.suffix.lstrip(".") or "png")
    finally:
        pyplot().close(fig)
    return path
