"""Per-molecule checks before a relaxation: a molecule a model cannot treat fails with a
reason instead of giving numbers that mean nothing.

:func:`screen` says why a molecule must not be relaxed, or returns None:

* an element the model was not trained on
  (:func:`~force2geo.models.potential.unsupported_elements`);
* a geometry that is no molecule (:func:`force2geo.data.geometry.geometry_problem`): a
  coordinate that is not finite, or two atoms closer than half the sum of their covalent
  radii.

Every entry point that relaxes many molecules (``force2geo relax``, ``predict``,
``evaluate relax``) gives such a molecule the status :data:`FAILED` with the reason (its
:class:`~force2geo.relax.engine.RelaxResult` from :func:`failed_result`) and relaxes the
others; the ASE calculator raises the reason as a ValueError.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from force2geo.data.geometry import OVERLAP_FRACTION, geometry_problem
from force2geo.models.potential import unsupported_elements
from force2geo.relax.engine import RelaxResult

__all__ = ["FAILED", "OVERLAP_FRACTION", "failed_result", "geometry_problem", "screen"]

FAILED = "failed"


def screen(atomic_numbers, positions, model: nn.Module | None = None,
           overlap: float = OVERLAP_FRACTION) -> str | None:
    """Why a molecule must not be relaxed with ``model`` (elements it never saw; with no
    model, only the geometry is checked), or None when it may (see the module
    docstring)."""
    if model is not None:
        reason = unsupported_elements(model, atomic_numbers)
        if reason is not None:
            return reason
    return geometry_problem(atomic_numbers, positions, overlap)


def failed_result(index: int, atomic_numbers, positions, reason: str) -> RelaxResult:
    """The :class:`RelaxResult` of a molecule that was not relaxed: its input geometry
    (a non-finite coordinate as 0, so that every output record stays readable: SDF has no
    NaN), status :data:`FAILED`, the ``reason``, 0 steps, and NaN for every number that
    does not exist (energy, forces, fmax)."""
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    positions = np.where(np.isfinite(positions), positions, 0.0)
    return RelaxResult(index=index, atomic_numbers=z, positions=positions, energy=np.nan,
                       forces=np.full(positions.shape, np.nan), fmax=np.nan, n_steps=0,
                       status=FAILED, reason=reason)
