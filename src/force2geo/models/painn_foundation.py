"""The PaiNN of the paper's released foundation model, in pure torch.

The paper pre-trained PaiNN on PubChemQCR with code adapted from the OC20 (fairchem 1.10)
PaiNN, and its fine-tuning code wraps it the same way (``painn_foundation.py`` of the
Force2Geo release in divelab/AIRS). Message and update blocks are OC20's, so they are
reused from :mod:`force2geo.models.painn`, but five changes make it compute a different
function from an OC20 PaiNN with the same weights:

1. Atom embedding: a plain table ``atom_emb.weight [num_elements=80, h]`` whose row is the
   atomic number Z itself (OC20: row Z - 1 of ``atom_emb.embeddings.weight``).
2. Radial basis: ``num_rbf`` Gaussians of the distance in Å, centres
   ``linspace(0, cutoff, num_rbf)`` (the buffer ``radial_basis.offset``), width one spacing,
   and **no envelope** (OC20: Gaussians of d / cutoff times a polynomial envelope). The
   energy therefore jumps when a neighbour crosses the cutoff: the Gaussian centred on the
   cutoff is still 1 there. Forces never see the jump; relaxations may, rarely.
3. Activation SiLU (OC20: SiLU / 0.6).
4. Vector messages use the displacement ``r_i - r_j`` in Å, not the unit vector.
5. No fitted scale factors after the updates (OC20: ``upd_out_scalar_scale_i``).

Neighbours: the release uses torch_cluster's radius graph capped at 100 neighbours per
atom; here there is no cap. They agree unless an atom has more than 100 neighbours within
the cutoff, which no molecule at chemical density has at 4.5 Å.

Units: positions Å; the output is one energy per atom in eV. The release reports the
*mean* of these per molecule (eV/atom); see :mod:`force2geo.models.fairchem`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from force2geo.models.graph import radius_graph
from force2geo.models.layers import ScaledSiLU
from force2geo.models.painn import PaiNNMessage, PaiNNUpdate


@dataclass(frozen=True)
class FoundationPaiNNConfig:
    """Hyper-parameters of the released model; the defaults are the paper's (A.4).

    ``num_elements``: rows of the embedding table, atomic numbers 1..num_elements - 1.
    ``cutoff`` in Å.
    """

    hidden_channels: int = 128
    num_layers: int = 4
    num_rbf: int = 128
    cutoff: float = 4.5
    num_elements: int = 80


class ElementTable(nn.Embedding):
    """One learned vector per element, row ``Z`` for atomic number ``Z`` (row 0 unused)."""

    def forward(self, atomic_numbers: Tensor) -> Tensor:
        if atomic_numbers.numel() and (
            int(atomic_numbers.min()) < 1 or int(atomic_numbers.max()) >= self.num_embeddings
        ):
            bad = atomic_numbers[(atomic_numbers < 1) | (atomic_numbers >= self.num_embeddings)]
            raise ValueError(f"atomic numbers {sorted(set(bad.tolist()))} outside the model's "
                             f"elements 1..{self.num_embeddings - 1}")
        return super().forward(atomic_numbers)


class DistanceGaussians(nn.Module):
    """``exp(coeff * (d - offset_k)^2)`` for centres ``offset = linspace(0, cutoff, n)`` Å
    and ``coeff = -1 / (2 spacing^2)``: ``forward(d [n_edges] Å) -> [n_edges, n]``.

    The centres are a buffer, as in the release (its state holds them); ``coeff`` is
    computed from the float32 centres exactly as the release computes it.
    """

    def __init__(self, num_rbf: int, cutoff: float):
        super().__init__()
        if num_rbf < 2:
            raise ValueError(f"need at least 2 Gaussians, got {num_rbf}")
        offset = torch.linspace(0.0, cutoff, num_rbf, dtype=torch.float32)
        self.coeff = -0.5 / (offset[1] - offset[0]).item() ** 2
        self.register_buffer("offset", offset)

    def forward(self, d: Tensor) -> Tensor:
        return torch.exp(self.coeff * (d.unsqueeze(-1) - self.offset).square())


def _plain_silu(sequential: nn.Sequential) -> nn.Sequential:
    """Swap every SiLU / 0.6 of ``sequential`` for a plain SiLU, in place."""
    for index, layer in enumerate(sequential):
        if isinstance(layer, ScaledSiLU):
            sequential[index] = nn.SiLU()
    return sequential


class FoundationPaiNN(nn.Module):
    """The released foundation PaiNN: ``forward(positions, atomic_numbers, system_idx) ->
    [n_atoms]`` eV, one energy per atom. Parameter names are the release's, so its state
    dict (prefixes stripped) loads as it is."""

    Config = FoundationPaiNNConfig

    def __init__(self, config: FoundationPaiNNConfig | None = None):
        super().__init__()
        config = config or FoundationPaiNNConfig()
        self.config = config
        h = config.hidden_channels
        self.cutoff = config.cutoff
        self.atom_emb = ElementTable(config.num_elements, h)
        self.radial_basis = DistanceGaussians(config.num_rbf, config.cutoff)
        self.message_layers = nn.ModuleList(
            PaiNNMessage(h, config.num_rbf) for _ in range(config.num_layers)
        )
        self.update_layers = nn.ModuleList(PaiNNUpdate(h) for _ in range(config.num_layers))
        for message, update in zip(self.message_layers, self.update_layers, strict=True):
            _plain_silu(message.x_proj)
            _plain_silu(update.xvec_proj)
        self.out_energy = nn.Sequential(nn.Linear(h, h // 2), nn.SiLU(), nn.Linear(h // 2, 1))
        self.inv_sqrt_2 = 2.0 ** -0.5

    def representation(self, positions: Tensor, atomic_numbers: Tensor,
                       system_idx: Tensor) -> tuple[Tensor, Tensor]:
        """Scalar ``[n_atoms, h]`` and vector ``[n_atoms, 3, h]`` features of every atom."""
        graph = radius_graph(positions, system_idx, self.cutoff)
        src, dst = graph.edge_index
        # The release feeds raw displacements r_i - r_j (target minus source) where OC20
        # feeds unit vectors; the sign only flips every vector feature, not the energy.
        graph = graph._replace(unit_vectors=positions[dst] - positions[src])  # [n_edges, 3]
        rbf = self.radial_basis(graph.distances[: graph.n_pairs])  # [n_pairs, n_rbf]

        x = self.atom_emb(atomic_numbers)
        vec = None  # all zero until the first message
        for message, update in zip(self.message_layers, self.update_layers, strict=True):
            dx, dvec = message(x, vec, graph, rbf)
            x = (x + dx) * self.inv_sqrt_2
            vec = dvec if vec is None else vec + dvec
            dx, dvec = update(x, vec)
            x = x + dx
            vec = vec + dvec
        if vec is None:
            vec = x.new_zeros(x.shape[0], 3, x.shape[1])
        return x, vec

    def forward(self, positions: Tensor, atomic_numbers: Tensor, system_idx: Tensor) -> Tensor:
        x, _ = self.representation(positions, atomic_numbers, system_idx)
        return self.out_energy(x).squeeze(-1)
