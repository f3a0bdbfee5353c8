"""Our batched optimizers against ASE's on the same potential, from the same start."""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.optimize import BFGS as AseBFGS
from ase.optimize import FIRE as AseFIRE
from ase.optimize import LBFGS as AseLBFGS

from force2geo.relax import BFGS, PotentialCalculator, RelaxConfig, potential_force_fn, relax

ASE = {"bfgs": AseBFGS, "lbfgs": AseLBFGS, "fire": AseFIRE}


def ase_relax(potential, z, positions, name, fmax=0.05, steps=500):
    """ASE's optimizer ``name`` over our calculator: (atoms, steps, list of positions)."""
    atoms = Atoms(numbers=z, positions=positions)
    atoms.calc = PotentialCalculator(potential)
    optimizer = ASE[name](atoms, logfile=None)
    frames = []
    optimizer.attach(lambda: frames.append(atoms.positions.copy()))
    optimizer.run(fmax=fmax, steps=steps)
    return atoms, optimizer.nsteps, frames


def rmsd(a, b):
    return float(np.sqrt(((a - b) ** 2).sum(axis=1).mean()))


@pytest.mark.parametrize("name", ["bfgs", "lbfgs", "fire"])
@pytest.mark.parametrize("molecule", [0, 2])
def test_same_minimum_and_path_as_ase(potential, starts, name, molecule):
    z, start = starts[molecule]
    atoms, ase_steps, ase_frames = ase_relax(potential, z, start, name)
    ours = relax(potential_force_fn(potential), [(z, start)],
                 RelaxConfig(optimizer=name, trajectory=True))[0]
    assert ours.status == "converged" and ours.fmax < 0.05
    assert rmsd(ours.positions, atoms.positions) < 0.01
    assert abs(ours.energy - atoms.get_potential_energy()) < 1e-3  # eV
    assert abs(ours.n_steps - ase_steps) <= max(2, ase_steps // 10)
    # Not only the end: the path itself is ASE's, step by step (float64 both sides).
    path = ours.trajectory[0]
    assert len(path) == ours.n_steps + 1
    for k in range(min(10, len(path), len(ase_frames))):
        np.testing.assert_allclose(path[k], ase_frames[k], atol=1e-8)


def test_eigh_route_matches_cholesky_route(potential, starts):
    """The exact ASE step (eigendecomposition) and the Cholesky solve agree."""
    fn = potential_force_fn(potential)
    fast = relax(fn, starts[:3], RelaxConfig())
    exact = relax(fn, starts[:3], RelaxConfig(), optimizer=BFGS(eigh=True))
    for a, b in zip(fast, exact, strict=True):
        assert a.n_steps == b.n_steps
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-8)


def test_indefinite_hessian_takes_absolute_eigenvalues():
    """With a negative curvature, the step is ASE's -V |w|^-1 V^T g, not -H^-1 g."""
    rng = np.random.default_rng(0)
    vectors, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    omega = np.array([-2.0, 0.5, 1.0, 3.0, 5.0, 70.0])
    hessian = vectors @ np.diag(omega) @ vectors.T
    gradient = rng.normal(size=6)
    expected = -vectors @ ((gradient @ vectors) / np.abs(omega))
    step = BFGS()._newton_step(torch.tensor(hessian)[None], torch.tensor(gradient)[None])
    np.testing.assert_allclose(step[0].numpy(), expected, rtol=1e-10, atol=1e-12)
    assert not np.allclose(expected, -np.linalg.solve(hessian, gradient))
