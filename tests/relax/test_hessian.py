"""The Lindh model Hessian, and BFGS started from it.

The Hessian is checked against finite differences of an independently written model
energy, for its exact null space and rotation equivariance, on a diatomic by hand and on
a linear molecule; BFGS from it against ASE's BFGS on the same potential.
"""

import numpy as np
import pytest
import torch
from relax_potentials import conformer
from scipy.spatial.transform import Rotation

from force2geo.relax import BFGS, RelaxConfig, potential_force_fn, relax
from force2geo.relax.hessian import (
    K_BEND,
    K_STRETCH,
    K_TORSION,
    _terms,
    lindh_hessian,
    lindh_model,
    lindh_rho,
)
from force2geo.units import ANGSTROM_TO_BOHR


def as_tensors(z, x):
    return torch.as_tensor(np.asarray(z)), torch.as_tensor(np.asarray(x, dtype=np.float64))


def coordinates(x, atoms):
    """Bond lengths, angles (arccos) and dihedrals (numpy, written apart from the module)."""
    p = [x[..., atoms[:, k], :] for k in range(atoms.shape[1])]  # each [..., t, 3]
    if atoms.shape[1] == 2:
        return np.linalg.norm(p[0] - p[1], axis=-1)
    if atoms.shape[1] == 3:
        u, v = p[0] - p[1], p[2] - p[1]
        cos = (u * v).sum(-1) / np.linalg.norm(u, axis=-1) / np.linalg.norm(v, axis=-1)
        return np.arccos(np.clip(cos, -1, 1))
    b1, b2, b3 = p[1] - p[0], p[2] - p[1], p[3] - p[2]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    m1 = np.cross(n1, b2 / np.linalg.norm(b2, axis=-1, keepdims=True))
    return np.arctan2((m1 * n2).sum(-1), (n1 * n2).sum(-1))


def finite_difference_hessian(z, x0, h=1e-4):
    """Hessian at ``x0`` of E = 1/2 sum_q k_q (q - q0)^2 (k_q and the terms of the
    module), by central differences: at q = q0 it is exactly sum_q k_q b_q b_q^T.
    (Dihedral differences are wrapped into [-pi, pi).)"""
    terms = _terms(lindh_rho(*as_tensors(z, x0)), 1e-3)
    constants = {"stretch": K_STRETCH, "bend": K_BEND, "torsion": K_TORSION}
    parts = [(atoms.numpy(), constants[kind] * weight.numpy()) for kind, (atoms, weight)
             in terms.items()]
    q0 = [coordinates(x0[None], atoms)[0] for atoms, _ in parts]
    n = 3 * len(z)
    eye = np.eye(n).reshape(n, -1, 3) * h

    def energy(x):  # x [..., n_atoms, 3]
        total = 0.0
        for (atoms, k), q in zip(parts, q0, strict=True):
            dq = coordinates(x, atoms) - q
            if atoms.shape[1] == 4:
                dq = (dq + np.pi) % (2 * np.pi) - np.pi
            total = total + 0.5 * (k * dq**2).sum(-1)
        return total

    plus, minus = x0 + eye, x0 - eye  # [n, n_atoms, 3]
    pp = energy(plus[:, None] + eye[None])
    pm = energy(plus[:, None] - eye[None])
    mp = energy(minus[:, None] + eye[None])
    mm = energy(minus[:, None] - eye[None])
    return (pp - pm - mp + mm) / (4 * h * h)


def rigid_motions(x):
    """``[6, 3n]``: three translations and three infinitesimal rotations of ``x [n, 3]``."""
    x = x - x.mean(0)
    moves = [np.tile(np.eye(3)[k], (len(x), 1)) for k in range(3)]
    moves += [np.cross(np.eye(3)[k], x) for k in range(3)]
    return np.array([m.reshape(-1) for m in moves])


# Molecules without near-linear atom triples (those take the linear-bend form, below).
@pytest.mark.parametrize("smiles", ["CCO", "CC(C)O", "CC(=O)O", "C1CC1"])
def test_matches_finite_differences_of_the_model_energy(smiles):
    z, x = conformer(smiles)
    hessian = lindh_model(*as_tensors(z, x)).numpy()
    reference = finite_difference_hessian(z, x)
    assert np.abs(hessian).max() > 10  # eV/Å^2: real bonds, not an empty matrix
    np.testing.assert_allclose(hessian, reference, atol=2e-4 * np.abs(reference).max())


def test_rigid_motions_cost_nothing_and_rotation_rotates_it():
    z, x = conformer("CC(=O)Nc1ccc(O)cc1")
    hessian = lindh_model(*as_tensors(z, x)).numpy()
    motions = rigid_motions(x)
    assert np.abs(hessian @ motions.T).max() < 1e-9
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert eigenvalues.min() > -1e-9 and (eigenvalues > 1e-6).sum() == 3 * len(z) - 6
    rotation = Rotation.from_euler("xyz", [0.3, -1.1, 2.0]).as_matrix()
    rotated = lindh_model(*as_tensors(z, x @ rotation.T + 1.5)).numpy()
    block = np.kron(np.eye(len(z)), rotation)
    np.testing.assert_allclose(rotated, block @ hessian @ block.T, atol=1e-9)


def test_diatomic_by_hand():
    """H2 at 0.8 Å: one stretch, k = 0.45 Eh/Bohr^2 rho, curvature 2k along the bond."""
    x = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, 0.8]])
    hessian = lindh_model(*as_tensors([1, 1], x)).numpy()
    rho = np.exp(1.0 * (1.35**2 - (0.8 * ANGSTROM_TO_BOHR) ** 2))
    expected = np.zeros((6, 6))
    for a in range(2):
        for b in range(2):
            expected[3 * a + 2, 3 * b + 2] = K_STRETCH * rho * (1 if a == b else -1)
    np.testing.assert_allclose(hessian, expected, atol=1e-10)


def test_linear_molecule_bends_both_ways():
    """CO2: a linear angle has two bending directions; only 3 + 2 rigid motions are free."""
    x = np.array([[0.0, 0.0, -1.16], [0.0, 0.0, 0.0], [0.0, 0.0, 1.16]])
    hessian = lindh_model(*as_tensors([8, 6, 8], x)).numpy()
    eigenvalues = np.linalg.eigvalsh(hessian)
    assert np.isfinite(hessian).all() and eigenvalues.min() > -1e-9
    assert (eigenvalues > 1e-3).sum() == 4  # 3N - 5: two stretches, two bends
    bend = np.zeros((3, 3))
    bend[:, 0] = [1.0, -2.0, 1.0]  # the O atoms up, C down: a bend in the x direction
    bend = bend.reshape(-1) / np.linalg.norm(bend)
    assert bend @ hessian @ bend > 0.5  # eV/Å^2


def test_floor_makes_it_positive_definite():
    z, x = conformer("CCCCO")
    raw = lindh_model(*as_tensors(z, x)).numpy()
    floored = lindh_hessian(*as_tensors(z, x), min_curvature=2.0).numpy()
    np.testing.assert_allclose(floored, floored.T, atol=1e-12)
    assert np.linalg.eigvalsh(floored).min() == pytest.approx(2.0)
    # Stiff directions (bonds) keep their model curvature.
    w, v = np.linalg.eigh(raw)
    stiff = v[:, w > 2.0]
    np.testing.assert_allclose(stiff.T @ floored @ stiff, np.diag(w[w > 2.0]), atol=1e-8)


def test_first_bfgs_step_is_the_newton_step_of_the_model(potential, starts):
    z, x = starts[2]
    result = relax(potential_force_fn(potential), [(z, x)],
                   RelaxConfig(initial_hessian="lindh", trajectory=True))[0]
    positions, _, forces = result.trajectory
    hessian = lindh_hessian(*as_tensors(z, x)).numpy()
    step = np.linalg.solve(hessian, forces[0].reshape(-1)).reshape(-1, 3)
    longest = np.linalg.norm(step, axis=1).max()
    step *= min(1.0, 0.2 / longest)  # maxstep 0.2 Å
    np.testing.assert_allclose(positions[1] - positions[0], step, atol=1e-10)


def test_batched_as_alone_and_fewer_steps(potential, starts):
    """With a small atom budget (molecules join as others leave, padded Hessians of
    different sizes), each molecule's run is its lone run; and it takes fewer steps than
    from ASE's 70 * I. (This toy surface is too flat for its minima to be compared:
    polishing its end points to 0.005 eV/Å takes up to a hundred steps.)"""
    fn = potential_force_fn(potential)
    plain = relax(fn, starts, RelaxConfig())  # ASE's path (tested against ASE elsewhere)
    model = relax(fn, starts, RelaxConfig(initial_hessian="lindh", batch_atoms=40))
    alone = [relax(fn, [s], RelaxConfig(initial_hessian="lindh"))[0] for s in starts]
    for a, b in zip(model, alone, strict=True):
        assert a.n_steps == b.n_steps
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)
    assert all(r.converged for r in model + plain)
    steps_plain = np.median([r.n_steps for r in plain])
    steps_model = np.median([r.n_steps for r in model])
    assert steps_model < 0.8 * steps_plain


class XTBForces:
    """GFN2-xTB (tblite) as a relaxation force function, one molecule at a time."""

    def __init__(self):
        from force2geo.qc.engines import XTBEngine

        self.engine = XTBEngine()

    def __call__(self, positions, atomic_numbers, system_idx, n_systems):
        sizes = torch.bincount(system_idx, minlength=n_systems).tolist()
        energies, forces = [], []
        for z, x in zip(torch.split(atomic_numbers, sizes), torch.split(positions, sizes),
                        strict=True):
            result = self.engine.compute(z.numpy(), x.numpy())
            energies.append(result.energy)
            forces.append(torch.from_numpy(result.forces))
        return torch.tensor(energies, dtype=torch.float64), torch.cat(forces)


def mmff_start(smiles):
    from force2geo.qc.engines import MMFFEngine
    from force2geo.qc.protocol import embed, prepare, relax_path

    mol = prepare(smiles)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    path = relax_path(MMFFEngine(mol), z, embed(mol, 1), 0, fmax=0.05, max_steps=1000)
    return z, path.positions[-1]


def test_same_xtb_minima_as_ase_bfgs_in_fewer_steps():
    """On GFN2-xTB from MMFF94 minima: BFGS from the model Hessian ends in the minimum
    ASE's BFGS ends in (both end points polished to 0.005 eV/Å: same energy within 1 meV,
    heavy atoms within 0.05 Å), in fewer steps."""
    from force2geo.evaluate.metrics import heavy_atom_rmsd

    starts = [mmff_start(s) for s in ("CC(=O)Nc1ccc(O)cc1", "CCOC(=O)C", "c1ccncc1CN")]
    fn = XTBForces()
    plain = relax(fn, starts, RelaxConfig())
    model = relax(fn, starts, RelaxConfig(initial_hessian="lindh"))
    assert all(r.converged for r in plain + model)
    assert sum(r.n_steps for r in model) < 0.75 * sum(r.n_steps for r in plain)
    tight = RelaxConfig(fmax=0.005)
    polished = [relax(fn, [(z, r.positions) for (z, _), r in zip(starts, runs, strict=True)],
                      tight) for runs in (plain, model)]
    for (z, _), a, b in zip(starts, *polished, strict=True):
        assert a.converged and b.converged
        assert abs(a.energy - b.energy) < 1e-3  # eV
        assert heavy_atom_rmsd(z, a.positions, b.positions) < 0.05


def test_only_bfgs_takes_a_model_hessian():
    with pytest.raises(ValueError, match="needs the bfgs"):
        RelaxConfig(optimizer="fire", initial_hessian="lindh")
    with pytest.raises(ValueError, match="initial_hessian"):
        RelaxConfig(initial_hessian="unit")
    with pytest.raises(ValueError, match="min_curvature"):
        BFGS(initial_hessian="lindh", min_curvature=0.0)
