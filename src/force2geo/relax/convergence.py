"""Per-molecule convergence and divergence tests of a batched relaxation.

A molecule is **converged** when its largest atomic force norm is below ``fmax`` (eV/Å),
as ASE measures it; it reaches the **step limit** after ``max_steps`` position updates
without converging; it has **diverged** when its energy or forces are not finite, an atom
has drifted farther than ``max_neighbor_distance`` (Å) from every other atom (the molecule
is flying apart), or its energy has risen more than ``max_energy_rise`` (eV) above the
energy of its starting geometry. Every test is one tensor expression over the batch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from force2geo.relax.state import BatchState

CONVERGED = "converged"
STEP_LIMIT = "step_limit"
DIVERGED = "diverged"
RUNNING = "running"
STATUSES = (CONVERGED, STEP_LIMIT, DIVERGED)
# Status codes of the tensors below, indices into CODES.
CODES = (RUNNING, CONVERGED, STEP_LIMIT, DIVERGED)


def max_force(state: BatchState, forces: Tensor) -> Tensor:
    """Largest atomic force norm of each molecule, ``[n_systems]`` eV/Å (NaN if any force
    of the molecule is not finite)."""
    norms = torch.linalg.vector_norm(forces, dim=-1)  # [n_atoms]
    largest = state.system_max(norms)
    bad = state.system_sum((~torch.isfinite(norms)).to(norms.dtype)) > 0
    return torch.where(bad, torch.full_like(largest, torch.nan), largest)


def farthest_neighbor_distance(state: BatchState, positions: Tensor) -> Tensor:
    """For each molecule, the largest distance (Å) from an atom to its nearest other atom,
    ``[n_systems]``; 0 for one-atom molecules, NaN for non-finite positions."""
    n, m = state.n_systems, state.max_atoms
    padded = state.pad(positions).view(n, m, 3)
    real = state.dof_mask().view(n, m, 3)[..., 0]  # [n_systems, max_atoms]
    distances = torch.cdist(padded, padded)  # [n_systems, m, m]
    others = real.unsqueeze(1) & real.unsqueeze(2)
    others &= ~torch.eye(m, dtype=torch.bool, device=positions.device)
    nearest = torch.where(others, distances, torch.inf).amin(-1)  # [n_systems, m]
    nearest = torch.where(real & torch.isfinite(nearest), nearest, torch.zeros_like(nearest))
    farthest = nearest.amax(-1) if m else torch.zeros(n, dtype=positions.dtype)
    finite = state.system_sum(torch.isfinite(positions).all(-1).to(positions.dtype))
    return torch.where(finite == state.sizes.to(positions.dtype), farthest,
                       torch.full_like(farthest, torch.nan))


def classify(state: BatchState, fmax: Tensor, energy: Tensor, start_energy: Tensor,
             n_steps: Tensor, limits: dict[str, float]) -> Tensor:
    """Status code (index into :data:`CODES`) of every molecule, ``[n_systems]`` long.

    ``fmax``, ``energy``, ``start_energy`` (eV) and ``n_steps`` are ``[n_systems]``;
    ``limits`` holds ``fmax``, ``max_steps``, ``max_neighbor_distance`` and
    ``max_energy_rise``. Divergence wins over convergence, which wins over the step limit.
    """
    spread = farthest_neighbor_distance(state, state["positions"])
    diverged = ~torch.isfinite(energy) | ~torch.isfinite(fmax) | ~torch.isfinite(spread)
    diverged |= spread > limits["max_neighbor_distance"]
    diverged |= energy - start_energy > limits["max_energy_rise"]
    converged = fmax < limits["fmax"]
    at_limit = n_steps >= limits["max_steps"]
    code = torch.zeros_like(n_steps)
    code = torch.where(at_limit, CODES.index(STEP_LIMIT), code)
    code = torch.where(converged, CODES.index(CONVERGED), code)
    return torch.where(diverged, CODES.index(DIVERGED), code)
