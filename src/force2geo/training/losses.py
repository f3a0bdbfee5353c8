"""The energy + force loss of the paper (Eq. 4-6).

``L = lambda_E * L_E + lambda_F * L_F`` with

* ``L_E = (1 / N) * sum_i |E_hat_i - E_i| / n_i`` in eV/atom (``per_atom=True``, the
  default; ``n_i`` atoms in molecule ``i``), or without ``/ n_i`` in eV (``per_atom=False``),
  over the ``N`` snapshots whose energy is known;
* ``L_F = (1 / M) * sum_j ||F_hat_j - F_j||^2`` in (eV/Å)^2, over the ``M`` atoms whose
  force is known (a snapshot stored without forces has NaN there and is left out).

The loss is split into *sums* and *counts* so that data-parallel training can divide by
the counts of the whole global batch (all ranks together) and so reproduce, exactly, the
loss of one process on the same molecules.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from force2geo.models.batch import Batch


class LossSums(NamedTuple):
    """Un-normalised loss terms of one (local) batch.

    ``energy``: sum of absolute energy errors (eV/atom or eV), float64 scalar;
    ``forces``: sum over atoms of squared force-error norms, (eV/Å)^2, scalar;
    ``n_energy``: snapshots with a known energy; ``n_forces``: atoms with a known force.
    """

    energy: Tensor
    forces: Tensor
    n_energy: int
    n_forces: int


def label_masks(batch: Batch) -> tuple[Tensor, Tensor]:
    """Which labels are known: ``energy [n_systems]`` and ``forces [n_atoms]`` (bool)."""
    if batch.energy is None:
        energy = torch.zeros(batch.n_systems, dtype=torch.bool, device=batch.device)
    else:
        energy = torch.isfinite(batch.energy)
    if batch.forces is None:
        forces = torch.zeros(batch.n_atoms, dtype=torch.bool, device=batch.device)
    else:
        forces = torch.isfinite(batch.forces).all(dim=-1)
    return energy, forces


def energy_errors(energy: Tensor, batch: Batch, per_atom: bool = True) -> Tensor:
    """Signed energy errors of the snapshots with a known energy: ``[n_known]`` eV/atom
    (``per_atom``) or eV, float64. ``energy [n_systems]`` is the predicted total (eV)."""
    known, _ = label_masks(batch)
    error = energy.to(torch.float64)[known] - batch.energy[known]
    if per_atom:
        error = error / batch.atoms_per_system()[known].to(torch.float64)
    return error


def force_errors(forces: Tensor, batch: Batch) -> Tensor:
    """Force errors ``F_hat - F`` ``[n_known, 3]`` eV/Å of the atoms with a known force."""
    _, known = label_masks(batch)
    # Index first: NaN labels must never enter the graph, or their gradient would be NaN.
    return forces[known] - batch.forces[known]


def loss_sums(energy: Tensor, forces: Tensor, batch: Batch, per_atom: bool = True) -> LossSums:
    """Sums and counts of the loss terms for ``energy [n_systems]`` eV and
    ``forces [n_atoms, 3]`` eV/Å predicted on ``batch``."""
    d_energy = energy_errors(energy, batch, per_atom)
    d_forces = force_errors(forces, batch)
    return LossSums(d_energy.abs().sum(), d_forces.pow(2).sum(),
                    int(d_energy.shape[0]), int(d_forces.shape[0]))


def combine(sums: LossSums, n_energy: float | Tensor, n_forces: float | Tensor,
            lambda_e: float, lambda_f: float) -> Tensor:
    """``lambda_e * sums.energy / n_energy + lambda_f * sums.forces / n_forces`` (float64).

    The counts may be those of a larger (global) batch; a zero count makes its term zero.
    """
    n_energy = torch.as_tensor(n_energy, dtype=torch.float64).clamp(min=1)
    n_forces = torch.as_tensor(n_forces, dtype=torch.float64).clamp(min=1)
    return (lambda_e * sums.energy.to(torch.float64) / n_energy
            + lambda_f * sums.forces.to(torch.float64) / n_forces)


def energy_force_loss(energy: Tensor, forces: Tensor, batch: Batch, lambda_e: float = 1.0,
                      lambda_f: float = 10.0, per_atom: bool = True) -> Tensor:
    """The paper's loss (Eq. 4) of one batch on its own, a float64 scalar."""
    sums = loss_sums(energy, forces, batch, per_atom)
    return combine(sums, sums.n_energy, sums.n_forces, lambda_e, lambda_f)
