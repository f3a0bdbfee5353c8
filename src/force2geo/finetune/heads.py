"""Output heads on top of a backbone's atom features: a property readout and per-atom
displacement heads.

* :class:`PropertyHead` — an MLP on each atom's scalar features, pooled per molecule
  (sum or mean): one number per molecule, in standardised units (the model scales it).
* :class:`VectorDisplacementHead` — two gated equivariant blocks (Schütt et al. 2021) on
  PaiNN's scalar and vector features: one vector per atom. Rotation-equivariant because
  vectors are only scaled by invariant gates and mixed linearly across channels;
  translation-invariant because the features are.
* :class:`PairDisplacementHead` — for backbones with scalar features only (SchNet):
  ``d_i = sum_j phi(h_i, h_j, rbf(d_ij)) * envelope(d_ij) * (r_j - r_i)`` over the radius
  graph. ``phi`` is invariant, ``r_j - r_i`` rotates with the molecule and ignores
  translations, so the sum is equivariant and translation-invariant.

Shapes: ``n_nodes`` atoms (3D backbones) or heavy-atom nodes (2D graphs); positions in Å;
displacements in Å.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from force2geo.models.graph import radius_graph
from force2geo.models.layers import GaussianSmearing, scatter_sum, xavier_linear

READOUTS = ("mean", "sum")


class PropertyHead(nn.Module):
    """``h [n_nodes, H] -> [n_systems]``: ``Linear(H, H/2) - SiLU - Linear(H/2, 1)`` per node,
    then the sum or the mean over the nodes of each molecule (``readout``)."""

    def __init__(self, hidden_channels: int, readout: str = "mean"):
        super().__init__()
        if readout not in READOUTS:
            raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
        self.readout = readout
        half = max(hidden_channels // 2, 1)
        self.mlp = nn.Sequential(xavier_linear(nn.Linear(hidden_channels, half)), nn.SiLU(),
                                 xavier_linear(nn.Linear(half, 1)))

    def forward(self, scalars: Tensor, node_system: Tensor, n_systems: int) -> Tensor:
        per_node = self.mlp(scalars).squeeze(-1)  # [n_nodes]
        pooled = scatter_sum(per_node, node_system, n_systems)
        if self.readout == "sum":
            return pooled
        counts = torch.bincount(node_system, minlength=n_systems).clamp(min=1)
        return pooled / counts.to(pooled.dtype)


def _norm(vectors: Tensor) -> Tensor:
    """``|v|`` over the spatial axis of ``[n, 3, c]`` -> ``[n, c]``; ``sqrt(|v|^2 + eps)``
    because the gradient of ``torch.norm`` is NaN at zero (atoms without neighbours)."""
    return torch.sqrt(vectors.square().sum(dim=1) + 1e-8)


class GatedEquivariantBlock(nn.Module):
    """Gated equivariant block (Schütt et al. 2021, Fig. 3): ``(x [n, c_in], v [n, 3, c_in])
    -> (x' [n, c_out], v' [n, 3, c_out])`` with ``v' = gate(x, |W1 v|) * W2 v``."""

    def __init__(self, in_channels: int, out_channels: int, scalar_activation: bool = True):
        super().__init__()
        self.out_channels = out_channels
        self.vec1_proj = xavier_linear(nn.Linear(in_channels, in_channels, bias=False))
        self.vec2_proj = xavier_linear(nn.Linear(in_channels, out_channels, bias=False))
        self.update_net = nn.Sequential(
            xavier_linear(nn.Linear(2 * in_channels, in_channels)), nn.SiLU(),
            xavier_linear(nn.Linear(in_channels, 2 * out_channels)))
        self.act = nn.SiLU() if scalar_activation else nn.Identity()

    def forward(self, x: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        invariants = torch.cat([x, _norm(self.vec1_proj(v))], dim=-1)
        x_out, gate = self.update_net(invariants).split(self.out_channels, dim=-1)
        return self.act(x_out), gate.unsqueeze(1) * self.vec2_proj(v)


class VectorDisplacementHead(nn.Module):
    """PaiNN features ``x [n_atoms, H]``, ``vec [n_atoms, 3, H]`` -> ``[n_atoms, 3]`` Å."""

    def __init__(self, hidden_channels: int):
        super().__init__()
        half = max(hidden_channels // 2, 1)
        self.blocks = nn.ModuleList([GatedEquivariantBlock(hidden_channels, half),
                                     GatedEquivariantBlock(half, 1, scalar_activation=False)])

    def forward(self, scalars: Tensor, vectors: Tensor, positions: Tensor,
                system_idx: Tensor) -> Tensor:
        x, v = scalars, vectors
        for block in self.blocks:
            x, v = block(x, v)
        return v.squeeze(-1)


class PairDisplacementHead(nn.Module):
    """Scalar features ``h [n_atoms, H]`` and positions -> ``[n_atoms, 3]`` Å:
    ``d_i = sum_j phi(h_i, h_j, rbf(d_ij)) * c(d_ij) * (r_j - r_i)`` over neighbours within
    ``cutoff`` Å, ``c`` the cosine cutoff (so ``d`` is smooth as neighbours come and go)."""

    def __init__(self, hidden_channels: int, cutoff: float, num_rbf: int = 32):
        super().__init__()
        self.cutoff = float(cutoff)
        self.rbf = GaussianSmearing(0.0, self.cutoff, num_rbf)
        self.target_proj = xavier_linear(nn.Linear(hidden_channels, hidden_channels))
        self.source_proj = xavier_linear(nn.Linear(hidden_channels, hidden_channels,
                                                   bias=False))
        self.rbf_proj = xavier_linear(nn.Linear(num_rbf, hidden_channels, bias=False))
        self.out = nn.Sequential(nn.SiLU(), xavier_linear(nn.Linear(hidden_channels, 1)))

    def forward(self, scalars: Tensor, vectors: Tensor | None, positions: Tensor,
                system_idx: Tensor) -> Tensor:
        graph = radius_graph(positions, system_idx, self.cutoff)
        src, dst = graph.edge_index  # messages j=src -> i=dst
        d = graph.distances  # [n_edges]
        pair = (self.target_proj(scalars)[dst] + self.source_proj(scalars)[src]
                + self.rbf_proj(self.rbf(d)))
        envelope = 0.5 * (torch.cos(d * (math.pi / self.cutoff)) + 1.0)
        weight = self.out(pair).squeeze(-1) * envelope  # [n_edges]
        # unit_vectors * distances = r_j - r_i, the displacement from target to source.
        edge_vectors = graph.unit_vectors * d.unsqueeze(-1)
        return scatter_sum(weight.unsqueeze(-1) * edge_vectors, dst, positions.shape[0])
