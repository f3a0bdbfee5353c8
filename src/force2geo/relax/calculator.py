"""An ASE calculator over any force2geo :class:`~force2geo.models.Potential`.

A thin adapter: one molecule becomes a one-system :class:`~force2geo.models.Batch`, and
energy (eV) and forces (eV/Å) come from :func:`~force2geo.models.energy_and_forces`, the
same function the batched relaxation and training use. Periodic cells are not supported:
the potentials are molecular. A molecule with an element the model was not trained on, or
a non-finite coordinate, raises a ValueError saying so (never numbers that mean nothing).
"""

from __future__ import annotations

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from force2geo.models import Batch, Potential, energy_and_forces, unsupported_elements


class PotentialCalculator(Calculator):
    """ASE calculator for a force2geo ``potential`` on ``device``; positions are cast to
    ``dtype`` (default: the potential's parameter dtype) before the model sees them.

    ``results["energy"]`` is the total energy in eV (float), ``results["forces"]`` the
    forces ``[n_atoms, 3]`` in eV/Å (float64 numpy). ``potential`` may be an
    :class:`~force2geo.pretrained.Ensemble` (its mean); :meth:`from_pretrained` loads any
    model by name or file, the shipped one by default.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, potential: Potential | torch.nn.Module, device: torch.device | str = "cpu",
                 dtype: torch.dtype | None = None, **kwargs):
        super().__init__(**kwargs)
        self.device = torch.device(device)
        self.potential = potential.to(self.device).eval()
        if dtype is None:
            dtype = next((p.dtype for p in potential.parameters()), torch.float64)
        self.dtype = dtype

    @classmethod
    def from_pretrained(cls, spec: str | None = None, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None, **kwargs) -> PotentialCalculator:
        """A calculator over the model ``spec`` names (None: the shipped model; see
        :func:`force2geo.pretrained.resolve_model`)."""
        from force2geo.pretrained import resolve_model

        return cls(resolve_model(spec, device=device, dtype=dtype), device, dtype, **kwargs)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if self.atoms.pbc.any():
            raise ValueError("PotentialCalculator handles molecules only (no periodic cell)")
        reason = unsupported_elements(self.potential, self.atoms.numbers)
        if reason is None and not np.isfinite(self.atoms.positions).all():
            reason = "non-finite coordinates"
        if reason is not None:
            raise ValueError(f"PotentialCalculator: {reason}")
        batch = Batch.from_arrays([self.atoms.numbers], [self.atoms.positions],
                                  dtype=self.dtype).to(self.device)
        energy, forces = energy_and_forces(self.potential, batch)
        self.results["energy"] = float(energy[0])
        self.results["forces"] = forces.detach().cpu().numpy().astype(np.float64)
