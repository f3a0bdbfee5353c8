"""Model Hessians from the bonded structure, to start BFGS closer to the true curvature.

:func:`lindh_hessian` is the model Hessian of Lindh, Bernhardsson, Karlström and Malmqvist
(Chem. Phys. Lett. 241, 423, 1995) in Cartesian coordinates. Every pair, triple and
quadruple of atoms of a molecule is a stretch, bend or torsion with force constant

    k_ij = k_r rho_ij,   k_ijk = k_phi rho_ij rho_jk,   k_ijkl = k_tau rho_ij rho_jk rho_kl,
    rho_ij = exp(alpha_ij (r_ref,ij^2 - r_ij^2))   (r in Bohr),

with ``alpha`` and ``r_ref`` tabulated by the periods of the two elements (H-He, Li-Ne,
Na and beyond), ``k_r`` = 0.45 Eh/Bohr^2, ``k_phi`` = 0.15 Eh/rad^2, ``k_tau`` = 0.005
Eh/rad^2; the Hessian is ``sum_q k_q b_q b_q^T`` with ``b_q = dq/dx`` the Wilson B row of
coordinate ``q``. rho is about 1 for a bond and decays like a Gaussian beyond it, so terms
whose force constant is below ``cutoff`` times its ``k`` are left out (they add nothing
visible). A bend's Wilson row is its in-plane direction; an exactly linear angle (sin <
1e-6), where that plane is undefined, takes both perpendicular bending directions instead.
Torsions over a near-linear angle (sin < 0.3) are left out: the dihedral is undefined at
180° and its derivatives blow up near it.

The Cartesian model has zero curvature along translations and rotations and very little
along soft torsions; its eigenvalues are raised to at least ``min_curvature`` eV/Å^2 so
that BFGS starts from a positive definite matrix and its first steps stay moderate.
"""

from __future__ import annotations

import torch
from torch import Tensor

from force2geo.units import ANGSTROM_TO_BOHR, BOHR_TO_ANGSTROM, HARTREE_TO_EV

# Lindh 1995, Table 1, by period pair (H-He, Li-Ne, Na-): alpha in Bohr^-2, r_ref in Bohr.
LINDH_ALPHA = ((1.0000, 0.3949, 0.3949), (0.3949, 0.2800, 0.2800), (0.3949, 0.2800, 0.2800))
LINDH_R_REF = ((1.35, 2.10, 2.53), (2.10, 2.87, 3.40), (2.53, 3.40, 3.40))
# Force constants, Eh/Bohr^2 (stretch) and Eh/rad^2 (bend, torsion), converted to eV/Å^2
# and eV/rad^2 (bends and torsions are then differentiated in Å).
K_STRETCH = 0.45 * HARTREE_TO_EV / BOHR_TO_ANGSTROM**2
K_BEND = 0.15 * HARTREE_TO_EV
K_TORSION = 0.005 * HARTREE_TO_EV
LINEAR_BEND_SIN = 1e-6
TORSION_MIN_SIN = 0.3
# Default eigenvalue floor, eV/Å^2: on GFN2-xTB from MMFF94 minima (benchmarks/
# relax_steps.py, 60 molecules) floors of 2, 3 and 5 halved ASE's median steps alike, and 3
# reached ASE's minima most often (59 of 60, as often as BFGS from 70 * I itself).
MIN_CURVATURE = 3.0
_TABLE_LIMIT = 1 << 22  # entries of a dense bend or torsion weight table at a time


def _period(atomic_numbers: Tensor) -> Tensor:
    """0 for H-He, 1 for Li-Ne, 2 from Na on (heavier elements take the third row's values)."""
    return (atomic_numbers > 2).long() + (atomic_numbers > 10).long()


def lindh_rho(atomic_numbers: Tensor, positions: Tensor) -> Tensor:
    """``rho [n, n]`` of one molecule (``positions [n, 3]`` Å), zero on the diagonal."""
    period = _period(atomic_numbers)
    table = {name: torch.tensor(values, dtype=positions.dtype, device=positions.device)
             for name, values in (("alpha", LINDH_ALPHA), ("r_ref", LINDH_R_REF))}
    alpha = table["alpha"][period[:, None], period[None, :]]
    r_ref = table["r_ref"][period[:, None], period[None, :]]
    r2 = torch.cdist(positions, positions).square() * ANGSTROM_TO_BOHR**2
    rho = torch.exp(alpha * (r_ref.square() - r2))
    return rho.fill_diagonal_(0.0)


def _bends(rho: Tensor, cutoff: float, centres: Tensor) -> tuple[Tensor, Tensor]:
    """Bends i-j-k (i < k) about the ``centres`` j whose weight rho_ij rho_jk exceeds
    ``cutoff``: atoms ``[t, 3]`` (centre in the middle) and weights ``[t]``."""
    n = rho.shape[0]
    weight = rho[:, centres].T[:, :, None] * rho[centres][:, None, :]  # [centre, i, k]
    upper = torch.ones(n, n, dtype=torch.bool, device=rho.device).triu(1)
    c, i, k = torch.nonzero((weight > cutoff) & upper, as_tuple=True)
    return torch.stack([i, centres[c], k], 1), weight[c, i, k]


def _torsions(rho: Tensor, cutoff: float, cj: Tensor, ck: Tensor) -> tuple[Tensor, Tensor]:
    """Torsions i-j-k-l about the central pairs ``(cj, ck)`` whose weight rho_ij rho_jk
    rho_kl exceeds ``cutoff`` (i, l distinct and off the axis): ``[t, 4]``, ``[t]``."""
    weight = rho[:, cj].T[:, :, None] * rho[cj, ck][:, None, None] * rho[ck][:, None, :]
    first = torch.arange(rho.shape[0], device=rho.device)[None, :, None]  # i, [1, n, 1]
    last = first.transpose(1, 2)  # l, [1, 1, n]
    keep = (weight > cutoff) & (first != last)
    keep &= (first != ck[:, None, None]) & (last != cj[:, None, None])
    b, i, m = torch.nonzero(keep, as_tuple=True)
    return torch.stack([i, cj[b], ck[b], m], 1), weight[b, i, m]


def _chunks(n_items: int, per_item: int) -> list[slice]:
    """Slices of ``range(n_items)`` whose dense tables stay under ``_TABLE_LIMIT`` entries."""
    step = max(1, _TABLE_LIMIT // max(per_item, 1))
    return [slice(a, a + step) for a in range(0, n_items, step)]


def _terms(rho: Tensor, cutoff: float) -> dict[str, tuple[Tensor, Tensor]]:
    """Atom index lists and weights (rho products) of the stretches ``[t, 2]``, bends
    ``[t, 3]`` (centre in the middle) and torsions ``[t, 4]`` worth keeping, each once;
    from dense weight tables, a chunk of centres or central pairs at a time."""
    n = rho.shape[0]
    i, j = torch.nonzero(torch.triu(rho > cutoff, diagonal=1), as_tuple=True)
    stretch = (torch.stack([i, j], 1), rho[i, j])  # also the central pairs of torsions
    centres = torch.arange(n, device=rho.device)
    bends = [_bends(rho, cutoff, centres[part]) for part in _chunks(n, n * n)]
    torsions = [_torsions(rho, cutoff, i[part], j[part]) for part in _chunks(len(i), n * n)]
    return {"stretch": stretch,
            "bend": tuple(torch.cat(parts) for parts in zip(*bends, strict=True)),
            "torsion": tuple(torch.cat(parts) for parts in zip(*torsions, strict=True))}


def _angle_sin(u: Tensor, v: Tensor) -> Tensor:
    """sin of the angle between ``u`` and ``v`` (``[t, 3]`` each)."""
    cross = torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1)
    return cross / (torch.linalg.vector_norm(u, dim=-1) * torch.linalg.vector_norm(v, dim=-1))


def _coordinate(kind: str, x: Tensor) -> Tensor:
    """Stretch length (Å), bend angle or dihedral (rad) of each ``x [t, m, 3]``."""
    if kind == "stretch":
        return torch.linalg.vector_norm(x[:, 0] - x[:, 1], dim=-1)
    if kind == "bend":
        u, v = x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]
        cross = torch.linalg.vector_norm(torch.linalg.cross(u, v), dim=-1)
        return torch.atan2(cross, (u * v).sum(-1))
    b1, b2, b3 = x[:, 1] - x[:, 0], x[:, 2] - x[:, 1], x[:, 3] - x[:, 2]
    n1, n2 = torch.linalg.cross(b1, b2), torch.linalg.cross(b2, b3)
    y = torch.linalg.vector_norm(b2, dim=-1) * (b1 * n2).sum(-1)
    return torch.atan2(y, (n1 * n2).sum(-1))


def _wilson_rows(kind: str, x: Tensor) -> Tensor:
    """``dq/dx [t, m, 3]`` of each term's coordinate with respect to its own atoms
    ``x [t, m, 3]`` (one backward pass: every term has its own copy of its atoms)."""
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (gradient,) = torch.autograd.grad(_coordinate(kind, x).sum(), x)
    return gradient


def _linear_bend_blocks(x: Tensor) -> Tensor:
    """``[t, 9, 9]``: sum over the two bending directions of a collinear triple i-j-k
    (``x [t, 3, 3]``) of ``b b^T``, i.e. ``c c^T ⊗ (I - a a^T)`` with ``a`` the axis and
    ``c = (1/r_ij, -(1/r_ij + s/r_jk), s/r_jk)``, ``s`` = +1 at 180°, -1 at 0°
    (so that ``sum_a c_a x_a = 0``: rigid motions do not bend it)."""
    u, v = x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]
    r_u, r_v = torch.linalg.vector_norm(u, dim=-1), torch.linalg.vector_norm(v, dim=-1)
    axis = u / r_u[:, None]
    sign = -torch.sign((u * v).sum(-1))
    eye = torch.eye(3, dtype=x.dtype, device=x.device)
    perpendicular = eye - axis[:, :, None] * axis[:, None, :]  # [t, 3, 3]
    c = torch.stack([1 / r_u, -(1 / r_u + sign / r_v), sign / r_v], 1)  # [t, 3]
    cc = c[:, :, None] * c[:, None, :]  # [t, atom a, atom b]
    blocks = cc[:, :, None, :, None] * perpendicular[:, None, :, None, :]  # [t, a, α, b, β]
    return blocks.reshape(-1, 9, 9)


def _add_terms(hessian: Tensor, atoms: Tensor, blocks: Tensor) -> None:
    """``hessian[dof(a), dof(b)] += blocks`` for each term's atoms ``[t, m]`` and
    ``blocks [t, 3m, 3m]``, in place."""
    if atoms.shape[0] == 0:
        return
    dofs = (3 * atoms[:, :, None] + torch.arange(3, device=atoms.device)).flatten(1)
    rows = dofs[:, :, None].expand_as(blocks)
    cols = dofs[:, None, :].expand_as(blocks)
    hessian.index_put_((rows.reshape(-1), cols.reshape(-1)), blocks.reshape(-1), accumulate=True)


def _outer_blocks(rows: Tensor, force_constants: Tensor) -> Tensor:
    """``k b b^T [t, 3m, 3m]`` from Wilson rows ``[t, m, 3]`` and ``k [t]``."""
    b = rows.flatten(1)
    return force_constants[:, None, None] * b[:, :, None] * b[:, None, :]


def lindh_model(atomic_numbers: Tensor, positions: Tensor, cutoff: float = 1e-3) -> Tensor:
    """The raw Lindh model Hessian ``[3n, 3n]`` eV/Å^2 of one molecule (``atomic_numbers
    [n]``, ``positions [n, 3]`` Å), float64; positive semi-definite, with zero curvature
    along translations and rotations."""
    positions = positions.to(torch.float64)
    n = positions.shape[0]
    hessian = positions.new_zeros(3 * n, 3 * n)
    terms = _terms(lindh_rho(atomic_numbers, positions), cutoff)
    constants = {"stretch": K_STRETCH, "bend": K_BEND, "torsion": K_TORSION}
    for kind, (atoms, weight) in terms.items():
        if atoms.shape[0] == 0:
            continue
        x = positions[atoms]  # [t, m, 3]
        k = constants[kind] * weight
        if kind == "bend":
            linear = _angle_sin(x[:, 0] - x[:, 1], x[:, 2] - x[:, 1]) < LINEAR_BEND_SIN
            _add_terms(hessian, atoms[linear], k[linear, None, None]
                       * _linear_bend_blocks(x[linear]))
            atoms, x, k = atoms[~linear], x[~linear], k[~linear]
        elif kind == "torsion":
            sin_a = _angle_sin(x[:, 0] - x[:, 1], x[:, 2] - x[:, 1])
            sin_b = _angle_sin(x[:, 1] - x[:, 2], x[:, 3] - x[:, 2])
            keep = torch.minimum(sin_a, sin_b) >= TORSION_MIN_SIN
            atoms, x, k = atoms[keep], x[keep], k[keep]
        _add_terms(hessian, atoms, _outer_blocks(_wilson_rows(kind, x), k))
    return hessian


def floor_eigenvalues(hessian: Tensor, min_curvature: float) -> Tensor:
    """``V max(w, min_curvature) V^T`` of a symmetric ``hessian [..., D, D]``."""
    omega, vectors = torch.linalg.eigh(hessian)
    omega = omega.clamp(min=min_curvature)
    return (vectors * omega[..., None, :]) @ vectors.transpose(-1, -2)


def lindh_hessian(atomic_numbers: Tensor, positions: Tensor,
                  min_curvature: float = MIN_CURVATURE,
                  cutoff: float = 1e-3) -> Tensor:
    """The Lindh model Hessian ``[3n, 3n]`` eV/Å^2 of one molecule with every eigenvalue
    at least ``min_curvature`` eV/Å^2 (positive definite; float64)."""
    if min_curvature <= 0:
        raise ValueError(f"min_curvature must be > 0 eV/Å^2, got {min_curvature}")
    return floor_eigenvalues(lindh_model(atomic_numbers, positions, cutoff), min_curvature)
