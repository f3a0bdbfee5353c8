"""An ensemble of potentials: the mean as the model, the spread as an uncertainty flag.

:class:`Ensemble` is a drop-in potential: its ``forward`` is the members' mean total
energy, so :func:`~force2geo.models.energy_and_forces`, the batched relaxation and the ASE
calculator use it unchanged, and its forces ``-d(mean E)/dx`` are the mean of the members'
forces. :meth:`Ensemble.predict` also returns the spread across members:

* ``energy_std [n_systems]`` eV: the standard deviation of the members' total energies;
* ``forces_std [n_systems]`` eV/Å: for each atom the norm of the per-component standard
  deviation of its force, ``sqrt(sum_xyz var_members(F_xyz))``; its maximum over the
  molecule's atoms.

Standard deviations are the population ones (divide by the number of members): the spread
of these members, zero when they agree, not an estimate for a larger ensemble.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from force2geo.models import Batch, Potential, energy_and_forces


@dataclass
class EnsemblePrediction:
    """Mean ``energy [n_systems]`` eV (float64) and ``forces [n_atoms, 3]`` eV/Å, and
    their spread ``energy_std [n_systems]`` eV and ``forces_std [n_systems]`` eV/Å (see
    the module docstring); all detached, float64."""

    energy: Tensor
    forces: Tensor
    energy_std: Tensor
    forces_std: Tensor


def ensemble_members(members: Sequence[nn.Module]) -> nn.ModuleList:
    """At least two members in one dtype (all cast to float64 when they differ: they see
    the same positions)."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    if len({next(m.parameters()).dtype for m in members}) > 1:
        members = [m.to(torch.float64) for m in members]
    return nn.ModuleList(members)


class Ensemble(nn.Module):
    """The mean of several :class:`~force2geo.models.Potential` members (at least two).

    The members see the same positions, so they share one dtype: members of different
    dtypes are all cast to float64. Its ``elements`` are those every member was trained
    on (see :attr:`elements`).
    """

    def __init__(self, members: Sequence[Potential]):
        super().__init__()
        self.members = ensemble_members(members)

    @property
    def elements(self) -> tuple[int, ...] | None:
        """The atomic numbers every member was trained on (the intersection of the
        members' ``elements``; a member that does not record them restricts nothing);
        None when no member records them."""
        known = [set(m.elements) for m in self.members if m.elements is not None]
        return tuple(sorted(set.intersection(*known))) if known else None

    def forward(self, batch: Batch) -> Tensor:
        """Mean total energy per system over the members, ``[n_systems]`` eV, float64."""
        return torch.stack([member(batch) for member in self.members]).mean(dim=0)

    @torch.no_grad()
    def _spread(self, energies: Tensor, forces: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """``energies [n_members, n_systems]``, ``forces [n_members, n_atoms, 3]`` ->
        (energy_std, forces_std), both ``[n_systems]``."""
        energy_std = energies.std(dim=0, correction=0)
        atom_std = forces.std(dim=0, correction=0).norm(dim=-1)  # [n_atoms]
        forces_std = torch.zeros(batch.n_systems, dtype=atom_std.dtype, device=atom_std.device)
        forces_std = forces_std.scatter_reduce(0, batch.system_idx, atom_std, "amax",
                                               include_self=False)
        return energy_std, forces_std

    def predict(self, batch: Batch) -> EnsemblePrediction:
        """Mean energy and forces of ``batch`` and their spread across members."""
        outputs = [energy_and_forces(member, batch) for member in self.members]
        energies = torch.stack([e for e, _ in outputs])  # [n_members, n_systems]
        forces = torch.stack([f.to(torch.float64) for _, f in outputs])
        energy_std, forces_std = self._spread(energies, forces, batch)
        return EnsemblePrediction(energies.mean(dim=0), forces.mean(dim=0), energy_std,
                                  forces_std)


def uncertainty(model: nn.Module, atomic_numbers: np.ndarray, positions: np.ndarray,
                device: torch.device | str = "cpu", dtype: torch.dtype | None = None
                ) -> dict[str, float]:
    """``{"energy_std": eV, "forces_std": eV/Å}`` of one molecule (``atomic_numbers [n]``,
    ``positions [n, 3]`` Å) when ``model`` is an :class:`Ensemble`; {} otherwise."""
    if not isinstance(model, Ensemble):
        return {}
    if dtype is None:
        dtype = next(model.parameters()).dtype
    batch = Batch.from_arrays([atomic_numbers], [positions], dtype=dtype).to(device)
    prediction = model.predict(batch)
    return {"energy_std": float(prediction.energy_std[0]),
            "forces_std": float(prediction.forces_std[0])}
