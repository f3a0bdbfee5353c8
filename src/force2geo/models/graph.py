"""Neighbour lists in pure torch: radius graphs within each molecule of a concatenated batch.

Molecules are concatenated: ``positions [n_atoms, 3]`` (Å) and ``system_idx [n_atoms]``
(which molecule each atom belongs to). Atoms of different molecules never interact.

Candidate pairs are enumerated per molecule, so the cost is O(sum of n_i^2) over the
molecules of the batch, never O(n_atoms^2) over the whole batch, and the candidates are
processed in chunks of at most ``max_pairs`` so one large molecule cannot exhaust memory.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

# 2**24 candidate pairs is ~200 MB of float32 work space: fine on CPU and on any GPU.
DEFAULT_MAX_PAIRS = 1 << 24
_MIN_DISTANCE = 1e-9  # Å; guards the unit vector of two atoms placed on the same point


class Graph(NamedTuple):
    """A directed radius graph, every neighbour pair present in both directions.

    ``edge_index [2, n_edges]``: row 0 the source atom j, row 1 the target atom i (messages
    flow j -> i and are summed at i, as in PyG / fairchem). Edges ``[:n_pairs]`` hold each
    unordered pair once, edges ``[n_pairs:]`` the same pairs reversed, in the same order,
    so ``n_edges == 2 * n_pairs`` and models may compute pair quantities once.
    ``distances [n_edges]`` in Å, ``unit_vectors [n_edges, 3]`` point from target to
    source: ``(pos[j] - pos[i]) / |pos[j] - pos[i]|``. Both carry gradients to positions.
    """

    edge_index: Tensor
    distances: Tensor
    unit_vectors: Tensor
    n_pairs: int


def neighbor_pairs(
    positions: Tensor, system_idx: Tensor, cutoff: float, max_pairs: int = DEFAULT_MAX_PAIRS
) -> Tensor:
    """Each unordered pair of atoms of one molecule closer than ``cutoff`` (Å), once.

    ``positions [n_atoms, 3]``, ``system_idx [n_atoms]`` (any order: atoms of a molecule
    need not be contiguous). Returns ``pairs [2, n_pairs]`` (long, no gradient, no self
    pairs), sorted by the first atom's position within its molecule.
    """
    if positions.ndim != 2 or positions.shape[-1] != 3:
        raise ValueError(f"positions must be [n_atoms, 3], got {tuple(positions.shape)}")
    if system_idx.shape != positions.shape[:1]:
        raise ValueError(
            f"system_idx {tuple(system_idx.shape)} does not match positions "
            f"{tuple(positions.shape)}"
        )
    device = positions.device
    n_atoms = positions.shape[0]
    if n_atoms == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    with torch.no_grad():
        order = torch.argsort(system_idx, stable=True)
        pos = positions.detach()[order]  # [n_atoms, 3], molecules contiguous
        sys_sorted = system_idx[order]
        counts = torch.bincount(sys_sorted)
        end = torch.cumsum(counts, 0)[sys_sorted]  # one past the last atom of my molecule
        n_later = end - torch.arange(n_atoms, device=device) - 1  # partners j > i
        chunks = [
            _pairs_within(pos, n_later, a, b, cutoff * cutoff)
            for a, b in _row_chunks(n_later, max_pairs)
        ]
        if not chunks:
            return torch.zeros(2, 0, dtype=torch.long, device=device)
        return order[torch.cat(chunks, dim=1)]


def _row_chunks(n_later: Tensor, max_pairs: int) -> list[tuple[int, int]]:
    """Split atom rows into ranges [a, b) whose candidate pair counts stay <= max_pairs."""
    n_atoms = n_later.shape[0]
    cumulative = torch.cumsum(n_later, 0).cpu()
    total = int(cumulative[-1])
    if total <= max_pairs:
        return [(0, n_atoms)] if total > 0 else []
    bounds = [0]
    while bounds[-1] < n_atoms:
        done = int(cumulative[bounds[-1] - 1]) if bounds[-1] > 0 else 0
        b = int(torch.searchsorted(cumulative, done + max_pairs, right=True))
        bounds.append(max(b, bounds[-1] + 1))  # a single row always fits: n - 1 pairs
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def _pairs_within(pos: Tensor, n_later: Tensor, a: int, b: int, cutoff_sq: float) -> Tensor:
    """Pairs (i, j), a <= i < b, j > i in i's molecule, closer than the cutoff."""
    device = pos.device
    counts = n_later[a:b]
    rows = torch.repeat_interleave(torch.arange(a, b, device=device), counts)
    # Position of each candidate within its row: 0, 1, ..., counts[row] - 1.
    row_start = torch.cumsum(counts, 0) - counts
    within = torch.arange(rows.shape[0], device=device) - torch.repeat_interleave(
        row_start, counts
    )
    cols = rows + 1 + within
    d2 = (pos[cols] - pos[rows]).square().sum(dim=-1)
    keep = d2 < cutoff_sq
    return torch.stack([rows[keep], cols[keep]])


def radius_graph(
    positions: Tensor, system_idx: Tensor, cutoff: float, max_pairs: int = DEFAULT_MAX_PAIRS
) -> Graph:
    """The radius graph of a concatenated batch, with differentiable edge geometry.

    ``positions [n_atoms, 3]`` Å, ``system_idx [n_atoms]``, ``cutoff`` Å. See
    :class:`Graph` for the layout of the result.
    """
    pairs = neighbor_pairs(positions, system_idx, cutoff, max_pairs)
    edge_index = torch.cat([pairs, pairs.flip(0)], dim=1)
    vectors = positions[pairs[0]] - positions[pairs[1]]  # [n_pairs, 3] source - target
    distances = torch.linalg.vector_norm(vectors, dim=-1)
    unit = vectors / distances.clamp_min(_MIN_DISTANCE).unsqueeze(-1)
    return Graph(
        edge_index=edge_index,
        distances=torch.cat([distances, distances]),
        unit_vectors=torch.cat([unit, -unit]),
        n_pairs=int(pairs.shape[1]),
    )
