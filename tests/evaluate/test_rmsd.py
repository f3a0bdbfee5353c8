"""Kabsch RMSD (Å): zero for a rotated and translated copy, the known value for a known
displacement, no reflections, hydrogens left out, and the same optimum as SciPy's
independent alignment."""

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from force2geo.evaluate.metrics import heavy_atom_rmsd, kabsch_rmsd

# A chiral, non-planar arrangement (Å): C at the centre, four different neighbours.
CHIRAL = np.array([[0.0, 0.0, 0.0], [1.09, 0.0, 0.0], [-0.36, 1.03, 0.0],
                   [-0.36, -0.51, 0.89], [-0.40, -0.60, -1.30]])


def moved(points, seed):
    """``points`` rotated by a random rotation and translated."""
    rng = np.random.default_rng(seed)
    rotation = Rotation.random(random_state=seed).as_matrix()
    return points @ rotation.T + rng.normal(scale=5.0, size=3)


def test_rotated_translated_copy_has_zero_rmsd():
    for seed in range(5):
        assert kabsch_rmsd(CHIRAL, moved(CHIRAL, seed)) < 1e-10


def test_known_displacement_breathing_mode():
    # scaling about the centroid by (1 + s) needs no rotation: RMSD = s * radius of gyration
    s = 0.05
    center = CHIRAL.mean(axis=0)
    scaled = center + (1.0 + s) * (CHIRAL - center)
    gyration = math.sqrt(((CHIRAL - center) ** 2).sum(axis=1).mean())
    expected = s * gyration
    assert kabsch_rmsd(CHIRAL, scaled) == pytest.approx(expected, rel=1e-10)
    assert kabsch_rmsd(moved(CHIRAL, 7), scaled) == pytest.approx(expected, rel=1e-10)


def test_mirror_image_is_not_superimposed():
    mirror = CHIRAL * np.array([1.0, 1.0, -1.0])
    assert kabsch_rmsd(CHIRAL, mirror) > 0.1  # a reflection would make it 0


def test_agrees_with_scipy_alignment():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(12, 3)) * 1.5
    q = moved(p + rng.normal(scale=0.2, size=p.shape), 11)
    pc, qc = p - p.mean(axis=0), q - q.mean(axis=0)
    rotation, rssd = Rotation.align_vectors(qc, pc)  # rotates pc onto qc
    assert kabsch_rmsd(p, q) == pytest.approx(rssd / math.sqrt(len(p)), rel=1e-9)
    assert kabsch_rmsd(p, q) == pytest.approx(
        math.sqrt(((rotation.apply(pc) - qc) ** 2).sum(axis=1).mean()), rel=1e-9)


def test_heavy_atom_rmsd_ignores_hydrogens():
    z = np.array([6, 1, 8, 1, 7])
    displaced = CHIRAL.copy()
    displaced[1] += [0.0, 0.3, 0.0]  # move a hydrogen only
    assert heavy_atom_rmsd(z, CHIRAL, displaced) < 1e-10
    assert kabsch_rmsd(CHIRAL, displaced) > 0.05
    # with hydrogens only (H2), all atoms count
    h2 = np.array([[0.0, 0.0, 0.0], [0.74, 0.0, 0.0]])
    stretched = np.array([[0.0, 0.0, 0.0], [0.84, 0.0, 0.0]])
    assert heavy_atom_rmsd([1, 1], h2, stretched) == pytest.approx(0.05, rel=1e-9)


def test_non_finite_and_mismatched_inputs():
    bad = CHIRAL.copy()
    bad[2, 0] = np.nan
    assert math.isnan(kabsch_rmsd(CHIRAL, bad))
    with pytest.raises(ValueError, match="do not match"):
        kabsch_rmsd(CHIRAL, CHIRAL[:4])
