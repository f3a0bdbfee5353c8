"""The potential: a backbone's atomic energies plus per-element reference energies.

``E_total = sum_i (backbone_i + ref[Z_i])`` in eV, and ``F = -dE_total/dx`` in eV/Å, taken
by autograd in :func:`energy_and_forces`, the one place forces are computed (training,
relaxation and the ASE calculator all call it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from force2geo.models.batch import Batch
from force2geo.models.layers import scatter_sum

N_ELEMENT_SLOTS = 119  # index = atomic number, 0 unused, up to 118


class Potential(nn.Module):
    """``backbone(positions, atomic_numbers, system_idx) -> [n_atoms]`` eV, plus references.

    ``atom_refs [119]`` eV per element (index = atomic number), e.g. from
    :func:`fit_atom_refs`. The references stay float64 on ``.float()`` / ``.double()`` /
    ``.to()``: totals reach 1e4-1e5 eV, where float32 would cost meV.
    """

    def __init__(self, backbone: nn.Module, atom_refs: Sequence[float] | Tensor | None = None):
        super().__init__()
        self.backbone = backbone
        refs = torch.zeros(N_ELEMENT_SLOTS, dtype=torch.float64)
        if atom_refs is not None:
            refs = torch.as_tensor(np.asarray(atom_refs, dtype=np.float64))
            if refs.shape != (N_ELEMENT_SLOTS,):
                raise ValueError(f"atom_refs must have {N_ELEMENT_SLOTS} entries (index = "
                                 f"atomic number), got shape {tuple(refs.shape)}")
        self.register_buffer("atom_refs", refs)

    def _apply(self, fn, recurse=True):
        refs = self.atom_refs
        super()._apply(fn, recurse)
        # Follow the device of the move or cast, never its dtype (see the class docstring).
        self.atom_refs = refs.to(device=self.atom_refs.device)
        return self

    def atomic_energies(self, batch: Batch) -> Tensor:
        """Backbone contributions ``[n_atoms]`` eV, in the model dtype, without references."""
        return self.backbone(batch.positions, batch.atomic_numbers, batch.system_idx)

    def reference_energy(self, batch: Batch) -> Tensor:
        """Sum of reference energies per system, ``[n_systems]`` eV, float64."""
        return scatter_sum(self.atom_refs[batch.atomic_numbers], batch.system_idx,
                           batch.n_systems)

    def forward(self, batch: Batch) -> Tensor:
        """Total energy per system, ``[n_systems]`` eV, float64."""
        # Summed in float64: a float32 sum of a few hundred terms would already cost meV.
        atomic = self.atomic_energies(batch).to(torch.float64)
        return scatter_sum(atomic + self.atom_refs[batch.atomic_numbers], batch.system_idx,
                           batch.n_systems)


def energy_and_forces(
    potential: Potential, batch: Batch, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    """Total energy ``[n_systems]`` eV (float64) and forces ``-dE/dx [n_atoms, 3]`` eV/Å
    (in the positions' dtype) of every molecule in ``batch``.

    ``create_graph=True`` when training on forces: the forces then stay differentiable with
    respect to the parameters, and the energy keeps its graph. Otherwise both are detached.
    Positions that already require gradients are used as they are (for losses through
    the geometry); others are detached copies, so the caller's tensor is untouched.
    """
    positions = batch.positions
    if not positions.requires_grad:
        positions = positions.detach().requires_grad_(True)
    inputs = dataclasses.replace(batch, positions=positions)
    with torch.enable_grad():
        energy = potential(inputs)
        (gradient,) = torch.autograd.grad(energy.sum(), positions, create_graph=create_graph)
    if not create_graph:
        energy = energy.detach()
    return energy, -gradient


def composition_matrix(atomic_numbers_list: Sequence[np.ndarray]) -> np.ndarray:
    """Element counts ``[n_systems, 119]`` (column = atomic number)."""
    counts = np.zeros((len(atomic_numbers_list), N_ELEMENT_SLOTS), dtype=np.float64)
    for k, z in enumerate(atomic_numbers_list):
        z = np.asarray(z, dtype=np.int64).reshape(-1)
        if z.size and (z.min() < 1 or z.max() >= N_ELEMENT_SLOTS):
            raise ValueError(f"molecule {k}: atomic numbers outside 1..118")
        np.add.at(counts[k], z, 1.0)
    return counts


def fit_atom_refs(atomic_numbers_list: Sequence[np.ndarray],
                  energies: Sequence[float]) -> np.ndarray:
    """Per-element reference energies ``[119]`` eV by least squares on composition.

    Solves ``min || C r - E ||`` over the elements present (``C`` the element counts of
    each molecule, ``E`` its energy in eV); elements absent from the data get 0. Where the
    compositions cannot separate some elements (e.g. only CH4 and C2H8 ratios), the
    minimum-norm solution is returned. Non-finite energies are skipped.
    """
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    if len(atomic_numbers_list) != energies.shape[0]:
        raise ValueError(f"{len(atomic_numbers_list)} molecules for {energies.shape[0]} energies")
    counts = composition_matrix(atomic_numbers_list)
    finite = np.isfinite(energies)
    counts, energies = counts[finite], energies[finite]
    if energies.size == 0:
        raise ValueError("no finite energies to fit reference energies on")
    present = np.flatnonzero(counts.sum(axis=0) > 0)
    solution, *_ = np.linalg.lstsq(counts[:, present], energies, rcond=None)
    refs = np.zeros(N_ELEMENT_SLOTS, dtype=np.float64)
    refs[present] = solution
    return refs
