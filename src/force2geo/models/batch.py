"""The one batch type the models eat: many molecules concatenated atom by atom.

Atom-scoped fields: ``positions [n_atoms, 3]`` Å, ``atomic_numbers [n_atoms]``,
``system_idx [n_atoms]``, ``forces [n_atoms, 3]`` eV/Å. System-scoped fields:
``charge [n_systems]`` (e), ``energy [n_systems]`` eV. Energies stay float64 whatever the
model precision: total energies reach 1e4-1e5 eV, where float32 loses meV.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Batch:
    """Concatenated molecules; labels (``charge``, ``energy``, ``forces``) are optional.

    Unknown labels inside a present field are NaN (forces of a bare geometry, say).
    """

    positions: Tensor
    atomic_numbers: Tensor
    system_idx: Tensor
    n_systems: int
    charge: Tensor | None = None
    energy: Tensor | None = None
    forces: Tensor | None = None

    def __post_init__(self) -> None:
        n_atoms = self.positions.shape[0]
        if self.positions.shape != (n_atoms, 3):
            raise ValueError(f"positions must be [n_atoms, 3], got {tuple(self.positions.shape)}")
        for name in ("atomic_numbers", "system_idx"):
            if getattr(self, name).shape != (n_atoms,):
                raise ValueError(f"{name} must be [{n_atoms}], got "
                                 f"{tuple(getattr(self, name).shape)}")
        if n_atoms and not 0 <= int(self.system_idx.min()) <= int(self.system_idx.max()) \
                < self.n_systems:
            raise ValueError(f"system_idx must lie in [0, {self.n_systems}), got "
                             f"{int(self.system_idx.min())}..{int(self.system_idx.max())}")
        per_system = {"charge": (self.n_systems,), "energy": (self.n_systems,),
                      "forces": (n_atoms, 3)}
        for name, shape in per_system.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must be {list(shape)}, got {tuple(value.shape)}")

    @property
    def n_atoms(self) -> int:
        return int(self.positions.shape[0])

    @property
    def device(self) -> torch.device:
        return self.positions.device

    def atoms_per_system(self) -> Tensor:
        """Number of atoms of each molecule, ``[n_systems]``."""
        return torch.bincount(self.system_idx, minlength=self.n_systems)

    def to(self, device: torch.device | str | None = None,
           dtype: torch.dtype | None = None) -> Batch:
        """A copy on ``device``; ``dtype`` applies to positions and forces (energy stays
        float64)."""

        def move(value: Tensor | None, cast: bool) -> Tensor | None:
            if value is None:
                return None
            return value.to(device=device, dtype=dtype if cast else None)

        return dataclasses.replace(
            self,
            positions=move(self.positions, True),
            atomic_numbers=move(self.atomic_numbers, False),
            system_idx=move(self.system_idx, False),
            charge=move(self.charge, False),
            energy=move(self.energy, False),
            forces=move(self.forces, True),
        )

    # -- constructors
    @classmethod
    def from_arrays(
        cls,
        atomic_numbers: Sequence[np.ndarray],
        positions: Sequence[np.ndarray],
        energy: Sequence[float] | None = None,
        forces: Sequence[np.ndarray] | None = None,
        charge: Sequence[int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> Batch:
        """Molecule by molecule: ``atomic_numbers[k] [n_k]``, ``positions[k] [n_k, 3]`` Å,
        ``energy[k]`` eV, ``forces[k] [n_k, 3]`` eV/Å, ``charge[k]`` e."""
        if len(atomic_numbers) != len(positions):
            raise ValueError(f"{len(atomic_numbers)} atomic-number arrays for "
                             f"{len(positions)} position arrays")
        z = [np.asarray(a, dtype=np.int64).reshape(-1) for a in atomic_numbers]
        sizes = np.array([len(a) for a in z], dtype=np.int64)
        flat = {
            "atomic_numbers": _cat(z, (0,), np.int64),
            "positions": _cat(positions, (0, 3), np.float64),
            "system_idx": np.repeat(np.arange(len(z)), sizes),
            "n_atoms": sizes,
        }
        if energy is not None:
            flat["energy"] = np.asarray(energy, dtype=np.float64).reshape(-1)
        if forces is not None:
            flat["forces"] = _cat(forces, (0, 3), np.float64)
        if charge is not None:
            flat["charge"] = np.asarray(charge, dtype=np.int64).reshape(-1)
        return cls.from_store(flat, dtype=dtype)

    @classmethod
    def from_atoms(cls, atoms_list: Sequence, dtype: torch.dtype = torch.float32) -> Batch:
        """From ASE ``Atoms``. Energy and forces come from an attached calculator's stored
        results (NaN for molecules without them; nothing is computed); the charge from
        ``atoms.info["charge"]`` (default 0)."""
        energy, forces = [], []
        for atoms in atoms_list:
            results = atoms.calc.results if atoms.calc is not None else {}
            energy.append(float(results.get("energy", np.nan)))
            forces.append(np.asarray(results.get("forces", np.full((len(atoms), 3), np.nan))))
        has_energy = not np.all(np.isnan(energy))
        has_forces = not all(np.all(np.isnan(f)) for f in forces)
        return cls.from_arrays(
            [a.numbers for a in atoms_list],
            [a.positions for a in atoms_list],
            energy=energy if has_energy else None,
            forces=forces if has_forces else None,
            charge=[int(a.info.get("charge", 0)) for a in atoms_list],
            dtype=dtype,
        )

    @classmethod
    def from_store(cls, arrays: Mapping[str, np.ndarray],
                   dtype: torch.dtype = torch.float32) -> Batch:
        """From the dict of :meth:`force2geo.data.store.TrajectoryStore.read` (keys
        ``atomic_numbers``, ``positions``, ``system_idx``, ``n_atoms`` and optionally
        ``energy``, ``forces``, ``charge``)."""
        n_systems = int(len(arrays["n_atoms"]))

        def tensor(key: str, kind: torch.dtype) -> Tensor | None:
            if key not in arrays:
                return None
            return torch.as_tensor(np.asarray(arrays[key])).to(kind)

        return cls(
            positions=tensor("positions", dtype),
            atomic_numbers=tensor("atomic_numbers", torch.long),
            system_idx=tensor("system_idx", torch.long),
            n_systems=n_systems,
            charge=tensor("charge", torch.long),
            energy=tensor("energy", torch.float64),
            forces=tensor("forces", dtype),
        )


def _cat(arrays: Sequence[np.ndarray], empty_shape: tuple[int, ...], kind) -> np.ndarray:
    if len(arrays) == 0:
        return np.zeros(empty_shape, dtype=kind)
    return np.concatenate([np.asarray(a, dtype=kind).reshape((-1,) + empty_shape[1:])
                           for a in arrays])
