"""The potential: a backbone's atomic energies plus per-element reference energies.

``E_total = sum_i (backbone_i + ref[Z_i])`` in eV, and ``F = -dE_total/dx`` in eV/Å, taken
by autograd in :func:`energy_and_forces`, the one place forces are computed (training,
relaxation and the ASE calculator all call it).

A potential records ``elements``, the atomic numbers of its training data: nothing it
computes for another element means anything, so every entry point refuses such a molecule
with :func:`unsupported_elements`'s reason instead of relaxing it.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Iterable, Sequence

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

    ``elements``: the atomic numbers the model was trained on (ascending tuple), or None
    when unknown (a model built in code, or a file that does not say). Checkpoints carry
    it (not the state dict, so older weights still load).
    """

    def __init__(self, backbone: nn.Module, atom_refs: Sequence[float] | Tensor | None = None,
                 elements: Iterable[int] | None = None):
        super().__init__()
        self.backbone = backbone
        self.elements = normalize_elements(elements)
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


def normalize_elements(elements: Iterable[int] | None) -> tuple[int, ...] | None:
    """``elements`` as an ascending tuple of distinct atomic numbers in 1..118 (None stays
    None: unknown)."""
    if elements is None:
        return None
    out = tuple(sorted({int(z) for z in elements}))
    if out and (out[0] < 1 or out[-1] >= N_ELEMENT_SLOTS):
        raise ValueError(f"elements must be atomic numbers 1..118, got {list(out)}")
    return out


def elements_from_refs(atom_refs: Sequence[float] | Tensor) -> tuple[int, ...] | None:
    """The elements a potential that does not record them was trained on, read off its
    reference energies: those with a non-zero reference (:func:`fit_atom_refs` gives 0 to
    elements absent from the data). None when every reference is 0 (nothing to tell)."""
    refs = np.asarray(torch.as_tensor(atom_refs).detach().cpu(), dtype=np.float64)
    present = np.flatnonzero(refs != 0.0)
    return tuple(int(z) for z in present) if present.size else None


def element_names(elements: Iterable[int]) -> str:
    """``"H C N O"``: chemical symbols of atomic numbers, space-separated."""
    from ase.data import chemical_symbols

    return " ".join(chemical_symbols[int(z)] if 0 < int(z) < len(chemical_symbols)
                    else f"Z={int(z)}" for z in elements)


def unsupported_elements(model: nn.Module, atomic_numbers) -> str | None:
    """Why ``model`` (a :class:`Potential`, an Ensemble, any module with ``elements``)
    cannot treat a molecule of ``atomic_numbers [n_atoms]``: e.g. ``"element Br (Z=35) not
    in the model's training elements H C N O F S Cl"``; None when it can.

    A model that does not record its elements (``elements`` None) refuses nothing; it
    warns once that unseen elements cannot be told apart.
    """
    elements = getattr(model, "elements", None)
    if elements is None:
        warnings.warn("the model does not record the elements it was trained on: molecules "
                      "with elements it never saw cannot be refused", stacklevel=2)
        return None
    present = np.unique(np.asarray(atomic_numbers, dtype=np.int64).reshape(-1))
    known = set(elements)
    unseen = [int(z) for z in present if int(z) not in known]
    if not unseen:
        return None
    listed = ", ".join(f"{element_names([z])} (Z={z})" for z in unseen)
    noun = "element" if len(unseen) == 1 else "elements"
    return f"{noun} {listed} not in the model's training elements {element_names(elements)}"


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
