"""Machine-learning interatomic potentials in pure torch.

A backbone maps ``(positions [n_atoms, 3] Å, atomic_numbers [n_atoms], system_idx
[n_atoms])`` to one energy contribution per atom (eV); :class:`Potential` adds per-element
reference energies and sums per molecule; :func:`energy_and_forces` is the one place
forces are taken, as ``-dE/dx`` by autograd.
"""

from __future__ import annotations

from torch import nn

from force2geo.models.batch import Batch
from force2geo.models.graph import Graph, neighbor_pairs, radius_graph
from force2geo.models.mace import MACE, MACEConfig, mace_available
from force2geo.models.painn import PaiNN, PaiNNConfig
from force2geo.models.painn_foundation import FoundationPaiNN, FoundationPaiNNConfig
from force2geo.models.potential import (
    Potential,
    composition_matrix,
    element_names,
    elements_from_refs,
    energy_and_forces,
    fit_atom_refs,
    unsupported_elements,
)
from force2geo.models.schnet import SchNet, SchNetConfig

# name -> backbone class; each class carries its frozen config dataclass as ``Config``.
# "painn_foundation" is the architecture of the paper's released PaiNN (no cutoff envelope).
MODELS: dict[str, type[nn.Module]] = {"painn": PaiNN, "painn_foundation": FoundationPaiNN,
                                      "schnet": SchNet}
# Backbones from optional packages: registered only where the package is installed.
OPTIONAL_MODELS = {"mace": "mace-torch (pip install 'force2geo[mace]')"}
if mace_available():
    MODELS["mace"] = MACE


def build_backbone(name: str, **config) -> nn.Module:
    """The backbone ``name`` (a key of :data:`MODELS`) built from its config's fields."""
    if name in OPTIONAL_MODELS and name not in MODELS:
        raise ValueError(f"model {name!r} needs {OPTIONAL_MODELS[name]}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {sorted(MODELS)}")
    cls = MODELS[name]
    return cls(cls.Config(**config))


__all__ = [
    "MODELS",
    "OPTIONAL_MODELS",
    "Batch",
    "FoundationPaiNN",
    "FoundationPaiNNConfig",
    "Graph",
    "MACE",
    "MACEConfig",
    "PaiNN",
    "PaiNNConfig",
    "Potential",
    "SchNet",
    "SchNetConfig",
    "build_backbone",
    "composition_matrix",
    "element_names",
    "elements_from_refs",
    "energy_and_forces",
    "fit_atom_refs",
    "neighbor_pairs",
    "radius_graph",
    "unsupported_elements",
]
