"""Is it a molecule at all? Checks of a geometry before anything computes on it.

:func:`geometry_problem` says why ``positions`` cannot be a molecule's geometry: a shape that
does not match the atoms, a coordinate that is not finite, or two atoms closer than
:data:`OVERLAP_FRACTION` times the sum of their covalent radii (ASE's table, Cordero et al.
2008). Bonded atoms sit at about 1.0 times that sum, and even a strained start geometry
stays far above 0.5. The relaxation's per-molecule screen (:mod:`force2geo.relax.screen`)
and oracle labelling (:mod:`force2geo.qc.label`) both use it.
"""

from __future__ import annotations

import numpy as np
from ase.data import chemical_symbols, covalent_radii

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
    return (f"overlapping atoms: {a + 1} ({chemical_symbols[z[a]]}) and {b + 1} "
            f"({chemical_symbols[z[b]]}) are {distance[k]:.3f} Å apart, closer than "
            f"{overlap:g} times the sum of their covalent radii "
            f"({radii[a] + radii[b]:.2f} Å)")
