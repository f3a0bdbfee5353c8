"""GIN with a virtual node on the 2D molecular graph (the OGB GIN-virtual baseline).

The 2D baseline of the property-prediction experiments (Hu et al. 2020, "Open Graph
Benchmark"; Hu et al. 2021, "OGB-LSC": GIN-virtual on PCQM4M's HOMO-LUMO gap), written
here in pure torch (``index_add_``, no torch_scatter / torch_geometric).

Featurisation (from a SMILES, heavy atoms only, as OGB's ``smiles2graph``): each atom has 9
integer features, each bond 3; every feature is an index into a fixed vocabulary whose
last entry (where there is one) is "anything else":

====  ======================  ==========================================  =====
atom  atomic number           1..118 -> 0..117, else 118                   119
      chirality tag           unspecified, CW, CCW, other, else            5
      degree                  0..10, else                                  12
      formal charge           -5..5, else                                  12
      number of hydrogens     0..8, else                                   10
      radical electrons       0..4, else                                   6
      hybridisation           SP, SP2, SP3, SP3D, SP3D2, else              6
      aromatic                no, yes                                      2
      in a ring               no, yes                                      2
bond  type                    single, double, triple, aromatic, else       5
      stereo                  none, Z, E, cis, trans, any                  6
      conjugated              no, yes                                      2
====  ======================  ==========================================  =====

Each bond appears twice in ``bond_index`` (both directions) with the same features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from force2geo.models.layers import scatter_sum

ATOM_FEATURE_SIZES = (119, 5, 12, 12, 10, 6, 6, 2, 2)
BOND_FEATURE_SIZES = (5, 6, 2)

_CHIRALITY = ("CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER")
_HYBRIDISATION = ("SP", "SP2", "SP3", "SP3D", "SP3D2")
_BOND_TYPE = ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")
_BOND_STEREO = ("STEREONONE", "STEREOZ", "STEREOE", "STEREOCIS", "STEREOTRANS", "STEREOANY")


# --------------------------------------------------------------------------- graphs


@dataclass
class Graph2D:
    """Heavy-atom 2D graphs of ``n_systems`` molecules, concatenated node by node.

    ``atom_features [n_nodes, 9]`` long, ``bond_index [2, n_bonds]`` long (both directions,
    indices into the nodes), ``bond_features [n_bonds, 3]`` long, ``node_system [n_nodes]``
    long (the molecule of each node, 0..n_systems-1).
    """

    atom_features: Tensor
    bond_index: Tensor
    bond_features: Tensor
    node_system: Tensor
    n_systems: int

    @property
    def n_nodes(self) -> int:
        return int(self.atom_features.shape[0])

    def to(self, device: torch.device | str) -> Graph2D:
        return Graph2D(self.atom_features.to(device), self.bond_index.to(device),
                       self.bond_features.to(device), self.node_system.to(device),
                       self.n_systems)


def _index(value, vocabulary: Sequence) -> int:
    """Position of ``value`` in ``vocabulary``, or ``len(vocabulary)`` ("anything else")."""
    return vocabulary.index(value) if value in vocabulary else len(vocabulary)


def _clamped(value: int, low: int, high: int) -> int:
    """``value - low`` for ``low <= value <= high``, else ``high - low + 1`` ("else")."""
    return value - low if low <= value <= high else high - low + 1


def atom_features(atom) -> list[int]:
    """The 9 integer features of an RDKit atom (see the module table)."""
    z = atom.GetAtomicNum()
    return [
        z - 1 if 1 <= z <= 118 else 118,
        _index(str(atom.GetChiralTag()), _CHIRALITY),
        _clamped(atom.GetDegree(), 0, 10),
        _clamped(atom.GetFormalCharge(), -5, 5),
        _clamped(atom.GetTotalNumHs(), 0, 8),
        _clamped(atom.GetNumRadicalElectrons(), 0, 4),
        _index(str(atom.GetHybridization()), _HYBRIDISATION),
        int(atom.GetIsAromatic()),
        int(atom.IsInRing()),
    ]


def bond_features(bond) -> list[int]:
    """The 3 integer features of an RDKit bond (see the module table)."""
    return [
        _index(str(bond.GetBondType()), _BOND_TYPE),
        _index(str(bond.GetStereo()), _BOND_STEREO),
        int(bond.GetIsConjugated()),
    ]


def mol_graph(mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(atom_features [n, 9], bond_index [2, 2 n_bonds], bond_features [2 n_bonds, 3])``
    int64 of an RDKit molecule, hydrogens removed first (they become the "number of
    hydrogens" feature)."""
    from rdkit import Chem

    mol = Chem.RemoveHs(mol)
    atoms = np.array([atom_features(a) for a in mol.GetAtoms()], dtype=np.int64)
    pairs, features = [], []
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        f = bond_features(bond)
        pairs += [(i, j), (j, i)]
        features += [f, f]
    index = np.array(pairs, dtype=np.int64).reshape(-1, 2).T
    return (atoms.reshape(-1, len(ATOM_FEATURE_SIZES)), np.ascontiguousarray(index),
            np.array(features, dtype=np.int64).reshape(-1, len(BOND_FEATURE_SIZES)))


def smiles_graph(smiles: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`mol_graph` of a SMILES; ValueError when RDKit cannot parse it."""
    from rdkit import Chem
    from rdkit.rdBase import BlockLogs

    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    return mol_graph(mol)


def collate_graphs(graphs: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
                   device: torch.device | str = "cpu") -> Graph2D:
    """One :class:`Graph2D` of per-molecule ``(atom_features, bond_index, bond_features)``
    (from :func:`mol_graph`), bond indices shifted to the concatenated node numbering."""
    sizes = np.array([g[0].shape[0] for g in graphs], dtype=np.int64)
    shift = np.cumsum(sizes) - sizes
    n_features = (len(ATOM_FEATURE_SIZES), len(BOND_FEATURE_SIZES))
    atoms = np.concatenate([g[0] for g in graphs]) if graphs else np.zeros((0, n_features[0]))
    index = (np.concatenate([g[1] + s for g, s in zip(graphs, shift, strict=True)], axis=1)
             if graphs else np.zeros((2, 0)))
    bonds = np.concatenate([g[2] for g in graphs]) if graphs else np.zeros((0, n_features[1]))

    def tensor(a: np.ndarray) -> Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=device)

    return Graph2D(tensor(atoms), tensor(index), tensor(bonds),
                   tensor(np.repeat(np.arange(len(graphs)), sizes)), len(graphs))


# --------------------------------------------------------------------------- model


class FeatureEmbedding(nn.Module):
    """Sum of one learned embedding per integer feature (OGB's Atom/BondEncoder):
    ``[n, n_features] long -> [n, hidden]``."""

    def __init__(self, sizes: Sequence[int], hidden: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(size, hidden) for size in sizes)
        for table in self.tables:
            nn.init.xavier_uniform_(table.weight)

    def forward(self, features: Tensor) -> Tensor:
        out = self.tables[0](features[:, 0])
        for k in range(1, len(self.tables)):
            out = out + self.tables[k](features[:, k])
        return out


def _mlp(hidden: int, out_relu: bool) -> nn.Sequential:
    """``Linear(h, 2h) -> BN -> ReLU -> Linear(2h, h)`` [``-> BN -> ReLU``]."""
    layers = [nn.Linear(hidden, 2 * hidden), nn.BatchNorm1d(2 * hidden), nn.ReLU(),
              nn.Linear(2 * hidden, hidden)]
    if out_relu:
        layers += [nn.BatchNorm1d(hidden), nn.ReLU()]
    return nn.Sequential(*layers)


class GINConv(nn.Module):
    """``h_i' = MLP((1 + eps) h_i + sum_j ReLU(h_j + e_ij))`` with learned ``eps`` and a
    bond embedding per layer (OGB's mol GINConv)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.mlp = _mlp(hidden, out_relu=False)
        self.eps = nn.Parameter(torch.zeros(1))
        self.bond_embedding = FeatureEmbedding(BOND_FEATURE_SIZES, hidden)

    def forward(self, h: Tensor, bond_index: Tensor, bond_features: Tensor) -> Tensor:
        source, target = bond_index
        messages = torch.relu(h[source] + self.bond_embedding(bond_features))
        return self.mlp((1 + self.eps) * h + scatter_sum(messages, target, h.shape[0]))


@dataclass(frozen=True)
class GINConfig:
    """GIN-virtual hyper-parameters. Defaults: embedding 300, 5 layers (OGB); no dropout
    and sum pooling as OGB-LSC's GIN-virtual for the PCQM4M HOMO-LUMO gap (OGB's
    ogbg-mol examples use dropout 0.5 and mean pooling)."""

    hidden_channels: int = 300
    num_layers: int = 5
    dropout: float = 0.0
    pooling: str = "sum"
    residual: bool = False

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {self.num_layers}")
        if self.pooling not in ("sum", "mean"):
            raise ValueError(f"pooling must be 'sum' or 'mean', got {self.pooling!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


class GINVirtual(nn.Module):
    """GIN with a virtual node connected to every atom of its molecule.

    Before each layer the virtual node's state is added to every node of its molecule;
    after each layer but the last, the virtual node is updated from the sum of its
    molecule's node states (through an MLP). ``representation(graph)`` gives one
    ``[n_systems, hidden]`` embedding per molecule (sum or mean of the last layer's
    nodes); ``forward(graph)`` maps it linearly to one number per molecule ``[n_systems]``.
    """

    Config = GINConfig

    def __init__(self, config: GINConfig | None = None):
        super().__init__()
        config = config or GINConfig()
        self.config = config
        h = config.hidden_channels
        self.atom_embedding = FeatureEmbedding(ATOM_FEATURE_SIZES, h)
        self.virtual_embedding = nn.Parameter(torch.zeros(h))  # OGB starts it at zero
        self.convs = nn.ModuleList(GINConv(h) for _ in range(config.num_layers))
        self.norms = nn.ModuleList(nn.BatchNorm1d(h) for _ in range(config.num_layers))
        self.virtual_mlps = nn.ModuleList(_mlp(h, out_relu=True)
                                          for _ in range(config.num_layers - 1))
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(h, 1)

    def node_representation(self, graph: Graph2D) -> Tensor:
        """Node states of the last layer, ``[n_nodes, hidden]``."""
        h = self.atom_embedding(graph.atom_features)
        virtual = self.virtual_embedding.expand(graph.n_systems, -1)  # [n_systems, hidden]
        last = len(self.convs) - 1
        for k, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = h + virtual[graph.node_system]
            out = norm(conv(h, graph.bond_index, graph.bond_features))
            out = self.dropout(out if k == last else torch.relu(out))
            if self.config.residual:
                out = out + h
            if k < last:
                pooled = scatter_sum(h, graph.node_system, graph.n_systems) + virtual
                update = self.dropout(self.virtual_mlps[k](pooled))
                virtual = virtual + update if self.config.residual else update
            h = out
        return h

    def representation(self, graph: Graph2D) -> Tensor:
        """One embedding per molecule, ``[n_systems, hidden]``."""
        nodes = self.node_representation(graph)
        pooled = scatter_sum(nodes, graph.node_system, graph.n_systems)
        if self.config.pooling == "mean":
            count = torch.bincount(graph.node_system, minlength=graph.n_systems)
            pooled = pooled / count.clamp(min=1).unsqueeze(-1).to(pooled.dtype)
        return pooled

    def forward(self, graph: Graph2D) -> Tensor:
        """The predicted property of every molecule, ``[n_systems]`` (units of the target
        it was trained on)."""
        return self.head(self.representation(graph)).squeeze(-1)
