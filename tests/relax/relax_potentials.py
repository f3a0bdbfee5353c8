"""Small physical potentials with real minima, for relaxation tests (not for production).

:class:`BondedRepulsion` is a force2geo backbone (``(positions, atomic_numbers,
system_idx) -> [n_atoms]`` eV) with no parameters to train: every pair of atoms of a
molecule closer than about 1.15 times the sum of their covalent radii is a harmonic bond,
every pair farther than 1.45 times that sum repels exponentially, with a smooth switch
between. Bonds need no graph, so the potential works on any concatenated batch; starting
from an ETKDG conformer it has a nearby minimum that BFGS reaches in a few dozen steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from force2geo.data.store import TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.models import Potential
from force2geo.models.graph import neighbor_pairs
from force2geo.qc.engines import MMFFEngine
from force2geo.qc.protocol import embed, prepare

# Molecules the tiny checkpoint is trained on.
TRAIN_SMILES = ["CCO", "CC(=O)O", "c1ccccc1O", "CN", "CC=O", "OCC(O)CO"]
# Single-bond covalent radii, Å (Cordero et al. 2008).
COVALENT_RADII = {1: 0.31, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 16: 1.05, 17: 1.02}


def smoothstep(x: Tensor) -> Tensor:
    """Quintic 0 -> 1 on [0, 1], flat (C2) at both ends."""
    x = x.clamp(0.0, 1.0)
    return x * x * x * (10.0 - 15.0 * x + 6.0 * x * x)


class BondedRepulsion(nn.Module):
    """``E = sum_pairs w k (r - r0)^2 + (1 - w) A exp(-(r - r0) / rho)`` eV, with ``r0`` the
    sum of covalent radii (Å), ``w = 1 - smoothstep((r / r0 - x_on) / (x_off - x_on))``;
    ``k`` eV/Å^2, ``A`` eV, ``rho`` Å. Each pair's energy is split evenly on its atoms."""

    def __init__(self, k: float = 20.0, A: float = 1.0, rho: float = 0.3,
                 x_on: float = 1.15, x_off: float = 1.45, cutoff: float = 6.0):
        super().__init__()
        self.k, self.A, self.rho = k, A, rho
        self.x_on, self.x_off, self.cutoff = x_on, x_off, cutoff
        radii = torch.zeros(119, dtype=torch.float64)
        for z, r in COVALENT_RADII.items():
            radii[z] = r
        self.register_buffer("radii", radii)

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        i, j = neighbor_pairs(positions, system_idx, self.cutoff)
        r = torch.linalg.vector_norm(positions[i] - positions[j], dim=-1)  # [n_pairs]
        r0 = (self.radii[atomic_numbers[i]] + self.radii[atomic_numbers[j]]).to(r.dtype)
        w = 1.0 - smoothstep((r / r0 - self.x_on) / (self.x_off - self.x_on))
        pair = w * self.k * (r - r0) ** 2 + (1.0 - w) * self.A * torch.exp(-(r - r0) / self.rho)
        atomic = positions.new_zeros(positions.shape[0])
        return atomic.index_add(0, i, 0.5 * pair).index_add(0, j, 0.5 * pair)


class Poisoned(nn.Module):
    """``inner``, except that molecules containing element ``poison`` get NaN energies and
    NaN forces (a model blowing up on one molecule of a batch)."""

    def __init__(self, inner: nn.Module, poison: int):
        super().__init__()
        self.inner, self.poison = inner, poison

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        energy = self.inner(positions, atomic_numbers, system_idx)
        n_systems = int(system_idx.max()) + 1 if system_idx.numel() else 0
        hit = torch.zeros(n_systems, device=positions.device).index_add(
            0, system_idx, (atomic_numbers == self.poison).float()) > 0
        nan = torch.where(hit[system_idx], torch.nan, 0.0).to(positions.dtype)
        return energy + nan * positions[:, 0]


class Pulled(nn.Module):
    """``inner`` plus a constant force ``strength`` eV/Å along +x on every atom of element
    ``element``: strong enough to tear it off its molecule."""

    def __init__(self, inner: nn.Module, element: int, strength: float = 30.0):
        super().__init__()
        self.inner, self.element, self.strength = inner, element, strength

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        energy = self.inner(positions, atomic_numbers, system_idx)
        pulled = (atomic_numbers == self.element).to(positions.dtype)
        return energy - self.strength * pulled * positions[:, 0]


def analytic_potential(**options) -> Potential:
    """A float64 :class:`Potential` over :class:`BondedRepulsion` (no reference energies)."""
    return Potential(BondedRepulsion(**options)).double()


def conformer(smiles: str, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``(atomic_numbers [n], positions [n, 3] Å)`` of an ETKDG conformer with hydrogens."""
    mol = prepare(smiles)
    positions = embed(mol, seed)
    return np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), positions


def tiny_checkpoint(root) -> str:
    """Train a tiny float64 PaiNN for 3 steps on MMFF94 energies and forces of displaced
    conformers of TRAIN_SMILES (store in ``root/store``, run in ``root/run``): a real
    model file with a real, if crude, potential energy surface. Returns its last.pt."""
    from force2geo.training import TrainConfig, fit

    with TrajectoryWriter(root / "store", source="test: MMFF94 on displaced conformers") as w:
        for k, smiles in enumerate(TRAIN_SMILES):
            mol = prepare(smiles)
            z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
            start, engine = embed(mol, k), MMFFEngine(mol)
            rng = np.random.default_rng(k)
            geometries = [start + rng.normal(scale=0.05, size=start.shape) for _ in range(6)]
            labels = [engine.compute(z, p) for p in geometries]
            w.add(Trajectory(z, np.array(geometries), [r.energy for r in labels],
                             np.array([r.forces for r in labels]), "mmff", smiles=smiles))
    fit(TrainConfig(data=str(root / "store"), run_dir=str(root / "run"), epochs=1,
                    max_steps=3, batch_size=8, device="cpu", dtype="float64", plots=False,
                    model_config={"hidden_channels": 16, "num_layers": 2, "num_rbf": 8,
                                  "cutoff": 4.0}))
    return str(root / "run" / "last.pt")
