"""Per-molecule checks before a relaxation: a molecule a model cannot treat fails with a
reason instead of giving numbers that mean nothing.

:func:`screen` says why a molecule must not be relaxed, or returns None:

* an element the model was not trained on
  (:func:`~force2geo.models.potential.unsupported_elements`);
* a coordinate that is not finite;
* two atoms closer than :data:`OVERLAP_FRACTION` times the sum of their covalent radii
  (ASE's table, Cordero et al. 2008): overlapping atoms, not a molecule. Bonded atoms sit
  at about 1.0 times that sum, and even a strained start geometry stays far above 0.5.

Every entry point that relaxes many molecules (``force2geo relax``, ``predict``,
``evaluate relax``) gives such a molecule the status :data:`FAILED` with the reason (its
:class:`~force2geo.relax.engine.RelaxResult` from :func:`failed_result`) and relaxes the
others; the ASE calculator raises the reason as a ValueError.
"""

from __future__ import annotations

import numpy as np
from torch import nn

from force2geo.models.potential import element_names, unsupported_elements
from force2geo.relax.engine import RelaxResult

FAILED = "failed"
OVERLAP_FRACTION = 0.5


def geometry_problem(atomic_numbers, positions,
                     overlap: float = OVERLAP_FRACTION) -> str | None:
    """Why ``positions [n_atoms, 3]`` Å of ``atomic_numbers [n_atoms]`` is no molecule to
    relax (atoms count 1-based in the reason), or None: a shape that does not match, a
    non-finite coordinate, or two atoms closer than ``overlap`` times the sum of their
    covalent radii."""
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    positions = np.asarray(positions, dtype=np.float64)
    if z.size == 0 or positions.shape != (z.size, 3):
        return (f"{z.size} atomic numbers but positions of shape {positions.shape} (need at "
                "least one atom, [n, 3])")
    bad = np.flatnonzero(~np.isfinite(positions).all(axis=1))
    if bad.size:
        more = f" and {bad.size - 1} more" if bad.size > 1 else ""
        return f"non-finite coordinates (atom {bad[0] + 1}{more})"
    return _overlap(z, positions, overlap)


def _overlap(z: np.ndarray, positions: np.ndarray, overlap: float) -> str | None:
    """The closest pair (relative to its radii) of atoms closer than ``overlap`` times the
    sum of their covalent radii, as a reason; None when there is none."""
    from ase.data import covalent_radii
    from scipy.spatial import cKDTree

    radii = covalent_radii[z]  # Å
    pairs = cKDTree(positions).query_pairs(2.0 * overlap * float(radii.max()),
                                           output_type="ndarray")  # [n_pairs, 2]
    if not len(pairs):
        return None
    i, j = pairs[:, 0], pairs[:, 1]
    distance = np.linalg.norm(positions[i] - positions[j], axis=1)
    ratio = distance / (radii[i] + radii[j])
    k = int(np.argmin(ratio))
    if ratio[k] >= overlap:
        return None
    a, b = int(min(i[k], j[k])), int(max(i[k], j[k]))
    return (f"overlapping atoms: {a + 1} ({element_names([z[a]])}) and {b + 1} "
            f"({element_names([z[b]])}) are {distance[k]:.3f} Å apart, closer than "
            f"{overlap:g} times the sum of their covalent radii "
            f"({radii[a] + radii[b]:.2f} Å)")


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
