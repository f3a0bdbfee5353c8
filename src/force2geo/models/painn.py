"""PaiNN (Schütt et al. 2021) in pure torch, with the Open Catalyst (fairchem) module layout.

Module and parameter names follow the OC20 implementation the paper used (``atom_emb``,
``radial_basis``, ``message_layers.i``, ``update_layers.i``, ``upd_out_scalar_scale_i``,
``out_energy``), so a checkpoint in that layout maps onto this model by name. The
computation is the same; it differs only in how it is scheduled:

* the radial basis and filters are computed once per neighbour pair and shared by both
  directions of the pair;
* the constant scalings of the vector messages are folded into the filter weights,
  not applied per edge;
* the first layer skips the ``vec_j`` term, which is zero there.

One difference: no ``max_neighbors`` cap (OC20 keeps at most 50 neighbours per atom).
Drug-sized molecules (20-40 atoms) have at most ~30 atoms within 4.5 Å, so the two agree
there; large compact molecules can exceed 50, where OC20 would drop some neighbours.

Units: positions Å, output per-atom energies eV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from force2geo.models.graph import Graph, radius_graph
from force2geo.models.layers import (
    RadialBasis,
    ScaledSiLU,
    ScaleFactor,
    scatter_sum,
    xavier_linear,
)


@dataclass(frozen=True)
class PaiNNConfig:
    """PaiNN hyper-parameters; the defaults are the paper's foundation model (A.4).

    ``num_elements``: embeddings for atomic numbers 1..num_elements (83, Bi, as in OC20).
    ``cutoff`` in Å.
    """

    hidden_channels: int = 128
    num_layers: int = 4
    num_rbf: int = 128
    cutoff: float = 4.5
    num_elements: int = 83
    envelope_exponent: int = 5


class AtomEmbedding(nn.Module):
    """One learned vector per element; row ``Z - 1`` for atomic number ``Z``."""

    def __init__(self, emb_size: int, num_elements: int):
        super().__init__()
        self.num_elements = num_elements
        self.embeddings = nn.Embedding(num_elements, emb_size)
        nn.init.uniform_(self.embeddings.weight, -math.sqrt(3.0), math.sqrt(3.0))

    def forward(self, atomic_numbers: Tensor) -> Tensor:
        if atomic_numbers.numel() and (
            int(atomic_numbers.min()) < 1 or int(atomic_numbers.max()) > self.num_elements
        ):
            bad = atomic_numbers[(atomic_numbers < 1) | (atomic_numbers > self.num_elements)]
            raise ValueError(f"atomic numbers {sorted(set(bad.tolist()))} outside the model's "
                             f"elements 1..{self.num_elements}")
        return self.embeddings(atomic_numbers - 1)


class PaiNNMessage(nn.Module):
    """Equivariant message block: scalar and vector messages from neighbours."""

    def __init__(self, hidden_channels: int, num_rbf: int):
        super().__init__()
        h = hidden_channels
        self.hidden_channels = h
        self.x_proj = nn.Sequential(xavier_linear(nn.Linear(h, h)), ScaledSiLU(),
                                    xavier_linear(nn.Linear(h, 3 * h)))
        self.rbf_proj = xavier_linear(nn.Linear(num_rbf, 3 * h))
        self.x_layernorm = nn.LayerNorm(h)
        # OC20 scales the vec_j part of a message by 1/sqrt(3h) and the direction part by
        # 1/sqrt(h). Both commute with the products, so they are folded into the filters.
        self.filter_scales = (1.0, 1 / math.sqrt(3.0 * h), 1 / math.sqrt(h))

    def forward(self, x: Tensor, vec: Tensor | None, graph: Graph,
                rbf: Tensor) -> tuple[Tensor, Tensor]:
        """``x [n_atoms, h]``, ``vec [n_atoms, 3, h]`` (None: all zero), ``rbf [n_pairs,
        n_rbf]`` the radial basis of the first ``n_pairs`` edges, which the reversed edges
        share. Returns ``dx [n_atoms, h]``, ``dvec [n_atoms, 3, h]``."""
        h, n_atoms, n_pairs = self.hidden_channels, x.shape[0], graph.n_pairs
        src, dst = graph.edge_index
        xh_x, xh_vec, xh_dir = self.x_proj(self.x_layernorm(x)).split(h, dim=-1)

        def per_edge(node_part: Tensor, part: int) -> Tensor:
            """node_part[src] * filter, both directions of a pair sharing the filter."""
            return (node_part[src].view(2, n_pairs, h) * self._filter(rbf, part)).view(-1, h)

        # Split before the gather, not after: no edge-sized split/cat in the backward pass.
        dx = scatter_sum(per_edge(xh_x, 0), dst, n_atoms)
        vec_msg = per_edge(xh_dir, 2).unsqueeze(1) * graph.unit_vectors.unsqueeze(-1)
        if vec is not None:  # [n_edges, 3, h]; plain mul + add: addcmul's backward is slower
            vec_msg = vec_msg + vec[src] * per_edge(xh_vec, 1).unsqueeze(1)
        return dx, scatter_sum(vec_msg, dst, n_atoms)

    def _filter(self, rbf: Tensor, part: int) -> Tensor:
        """Part 0 (scalar), 1 (vec_j) or 2 (direction) of ``rbf_proj(rbf)``, scaled:
        ``[n_pairs, h]``. One product per part keeps each filter contiguous; products
        with strided slices of a [n_pairs, 3h] output are several times slower."""
        h, scale = self.hidden_channels, self.filter_scales[part]
        rows = slice(part * h, (part + 1) * h)
        return nn.functional.linear(rbf, self.rbf_proj.weight[rows] * scale,
                                    self.rbf_proj.bias[rows] * scale)


class PaiNNUpdate(nn.Module):
    """Per-atom update mixing scalar features with invariants of the vector features."""

    def __init__(self, hidden_channels: int):
        super().__init__()
        h = hidden_channels
        self.hidden_channels = h
        self.vec_proj = xavier_linear(nn.Linear(h, 2 * h, bias=False))
        self.xvec_proj = nn.Sequential(xavier_linear(nn.Linear(2 * h, h)), ScaledSiLU(),
                                       xavier_linear(nn.Linear(h, 3 * h)))
        self.inv_sqrt_2 = 1 / math.sqrt(2.0)
        self.inv_sqrt_h = 1 / math.sqrt(h)

    def forward(self, x: Tensor, vec: Tensor) -> tuple[Tensor, Tensor]:
        """``x [n_atoms, h]``, ``vec [n_atoms, 3, h]`` -> ``dx``, ``dvec`` of the same shapes."""
        vec1, vec2 = self.vec_proj(vec).split(self.hidden_channels, dim=-1)
        vec_dot = (vec1 * vec2).sum(dim=1) * self.inv_sqrt_h  # [n_atoms, h]
        # sqrt(|v|^2 + eps): torch.norm has a NaN gradient at v = 0.
        vec2_norm = torch.sqrt(vec2.square().sum(dim=1) + 1e-8)
        xvec1, xvec2, xvec3 = self.xvec_proj(torch.cat([x, vec2_norm], dim=-1)).split(
            self.hidden_channels, dim=-1
        )
        dx = torch.addcmul(xvec1, xvec2, vec_dot) * self.inv_sqrt_2
        dvec = xvec3.unsqueeze(1) * vec1
        return dx, dvec


class PaiNN(nn.Module):
    """PaiNN backbone: ``forward(positions, atomic_numbers, system_idx) -> [n_atoms]`` eV,
    one energy contribution per atom (sum them, plus references, for the total)."""

    Config = PaiNNConfig

    def __init__(self, config: PaiNNConfig | None = None):
        super().__init__()
        config = config or PaiNNConfig()
        self.config = config
        h = config.hidden_channels
        self.hidden_channels = h
        self.cutoff = config.cutoff
        self.atom_emb = AtomEmbedding(h, config.num_elements)
        self.radial_basis = RadialBasis(config.num_rbf, config.cutoff, config.envelope_exponent)
        self.message_layers = nn.ModuleList(
            PaiNNMessage(h, config.num_rbf) for _ in range(config.num_layers)
        )
        self.update_layers = nn.ModuleList(PaiNNUpdate(h) for _ in range(config.num_layers))
        for i in range(config.num_layers):
            setattr(self, f"upd_out_scalar_scale_{i}", ScaleFactor())
        self.out_energy = nn.Sequential(xavier_linear(nn.Linear(h, h // 2)), ScaledSiLU(),
                                        xavier_linear(nn.Linear(h // 2, 1)))
        self.inv_sqrt_2 = 1 / math.sqrt(2.0)

    def representation(self, positions: Tensor, atomic_numbers: Tensor,
                       system_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Scalar ``[n_atoms, h]`` and vector ``[n_atoms, 3, h]`` features of every atom."""
        graph = radius_graph(positions, system_idx, self.cutoff)
        rbf = self.radial_basis(graph.distances[: graph.n_pairs])  # [n_pairs, n_rbf]

        x = self.atom_emb(atomic_numbers)
        vec = None  # all zero until the first message
        for i in range(len(self.message_layers)):
            dx, dvec = self.message_layers[i](x, vec, graph, rbf)
            x = (x + dx) * self.inv_sqrt_2
            vec = dvec if vec is None else vec + dvec
            dx, dvec = self.update_layers[i](x, vec)
            x = getattr(self, f"upd_out_scalar_scale_{i}")(x + dx)
            vec = vec + dvec
        if vec is None:
            vec = x.new_zeros(x.shape[0], 3, self.hidden_channels)
        return x, vec

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        x, _ = self.representation(positions, atomic_numbers, system_idx)
        return self.out_energy(x).squeeze(-1)
