"""SchNet (Schütt et al. 2018) in pure torch, with PyG-style module names.

Continuous-filter convolutions: a filter network maps Gaussian-expanded distances to
per-channel weights, smoothly cut off with a cosine; messages are neighbour features times
filters, summed per atom. Units: positions Å, output per-atom energies eV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from force2geo.models.graph import Graph, radius_graph
from force2geo.models.layers import GaussianSmearing, ShiftedSoftplus, scatter_sum, xavier_linear


@dataclass(frozen=True)
class SchNetConfig:
    """SchNet hyper-parameters. ``cutoff`` in Å; atomic numbers 1..num_elements - 1."""

    hidden_channels: int = 128
    num_filters: int = 128
    num_interactions: int = 6
    num_gaussians: int = 50
    cutoff: float = 4.5
    num_elements: int = 100


class CFConv(nn.Module):
    """Continuous-filter convolution: ``lin2(sum_j lin1(h)_j * W_ij)``."""

    def __init__(self, hidden_channels: int, num_filters: int):
        super().__init__()
        self.lin1 = xavier_linear(nn.Linear(hidden_channels, num_filters, bias=False))
        self.lin2 = xavier_linear(nn.Linear(num_filters, hidden_channels))

    def forward(self, h: Tensor, graph: Graph, filters: Tensor) -> Tensor:
        """``h [n_atoms, hidden]``, ``filters [n_pairs, num_filters]`` shared by both
        directions of each pair. Returns ``[n_atoms, hidden]``."""
        src, dst = graph.edge_index
        x = self.lin1(h)
        messages = (x[src].view(2, graph.n_pairs, -1) * filters).view(src.shape[0], -1)
        return self.lin2(scatter_sum(messages, dst, x.shape[0]))


class InteractionBlock(nn.Module):
    """Filter network, convolution, activation and a linear layer (one SchNet update)."""

    def __init__(self, hidden_channels: int, num_gaussians: int, num_filters: int,
                 cutoff: float):
        super().__init__()
        self.cutoff = cutoff
        self.mlp = nn.Sequential(
            xavier_linear(nn.Linear(num_gaussians, num_filters)),
            ShiftedSoftplus(),
            xavier_linear(nn.Linear(num_filters, num_filters)),
        )
        self.conv = CFConv(hidden_channels, num_filters)
        self.act = ShiftedSoftplus()
        self.lin = xavier_linear(nn.Linear(hidden_channels, hidden_channels))

    def forward(self, h: Tensor, graph: Graph, expanded: Tensor, envelope: Tensor) -> Tensor:
        """``expanded [n_pairs, num_gaussians]``, ``envelope [n_pairs]`` -> update of h."""
        filters = self.mlp(expanded) * envelope.unsqueeze(-1)
        return self.lin(self.act(self.conv(h, graph, filters)))


class SchNet(nn.Module):
    """SchNet backbone: ``forward(positions, atomic_numbers, system_idx) -> [n_atoms]`` eV."""

    Config = SchNetConfig

    def __init__(self, config: SchNetConfig | None = None):
        super().__init__()
        config = config or SchNetConfig()
        self.config = config
        self.cutoff = config.cutoff
        h = config.hidden_channels
        self.embedding = nn.Embedding(config.num_elements, h)
        self.distance_expansion = GaussianSmearing(0.0, config.cutoff, config.num_gaussians)
        self.interactions = nn.ModuleList(
            InteractionBlock(h, config.num_gaussians, config.num_filters, config.cutoff)
            for _ in range(config.num_interactions)
        )
        self.lin1 = xavier_linear(nn.Linear(h, h // 2))
        self.act = ShiftedSoftplus()
        self.lin2 = xavier_linear(nn.Linear(h // 2, 1))

    def representation(self, positions: Tensor, atomic_numbers: Tensor,
                       system_idx: Tensor) -> Tensor:
        """Atom features ``[n_atoms, hidden]``."""
        if atomic_numbers.numel() and (
            int(atomic_numbers.min()) < 1 or int(atomic_numbers.max()) >= self.config.num_elements
        ):
            raise ValueError(f"atomic numbers outside the model's elements "
                             f"1..{self.config.num_elements - 1}")
        graph = radius_graph(positions, system_idx, self.cutoff)
        d = graph.distances[: graph.n_pairs]
        expanded = self.distance_expansion(d)  # [n_pairs, num_gaussians]
        envelope = 0.5 * (torch.cos(d * (math.pi / self.cutoff)) + 1.0)
        h = self.embedding(atomic_numbers)
        for interaction in self.interactions:
            h = h + interaction(h, graph, expanded, envelope)
        return h

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        h = self.representation(positions, atomic_numbers, system_idx)
        return self.lin2(self.act(self.lin1(h))).squeeze(-1)
