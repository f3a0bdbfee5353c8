"""The batched state: padding, and generic removal / addition of molecules."""

import numpy as np
import pytest
import torch

from force2geo.relax import ATOM, SYSTEM, BatchState, Scope, concat
from force2geo.relax.optimizers import BFGS, LBFGS

SCOPES = {"positions": ATOM, "energy": SYSTEM, "block": Scope("system", dof_axes=(1, 2))}


def make(sizes, seed):
    """A state whose ``block`` holds, per molecule, a symmetric [3n, 3n] block padded
    with zeros, and whose positions are random."""
    rng = np.random.default_rng(seed)
    d = 3 * max(sizes)
    blocks = np.zeros((len(sizes), d, d))
    for k, n in enumerate(sizes):
        m = rng.normal(size=(3 * n, 3 * n))
        blocks[k, : 3 * n, : 3 * n] = m + m.T
    fields = {"positions": torch.tensor(rng.normal(size=(sum(sizes), 3))),
              "energy": torch.tensor(rng.normal(size=len(sizes))),
              "block": torch.tensor(blocks)}
    return BatchState(torch.tensor(sizes), fields, SCOPES)


def blocks_of(state):
    """Each molecule's real block, unpadded."""
    return [state["block"][k, : 3 * n, : 3 * n] for k, n in enumerate(state.sizes.tolist())]


def test_pad_unpad_round_trip():
    state = make([2, 5, 1], seed=0)
    padded = state.pad(state["positions"])
    assert padded.shape == (3, 15)
    assert torch.equal(state.unpad(padded), state["positions"])
    # Molecule 0 (2 atoms): its 6 coordinates, then zeros.
    assert torch.equal(padded[0, :6], state["positions"][:2].reshape(-1))
    assert torch.all(padded[0, 6:] == 0) and torch.all(padded[2, 3:] == 0)
    assert state.dof_mask().sum(1).tolist() == [6, 15, 3]


def test_select_and_concat_keep_each_molecules_fields():
    a, b = make([2, 5, 1], seed=1), make([3, 4], seed=2)
    kept = a.select(torch.tensor([True, False, True]))
    assert kept.sizes.tolist() == [2, 1] and kept["block"].shape == (2, 6, 6)  # shrunk
    both = concat([kept, b])
    assert both.sizes.tolist() == [2, 1, 3, 4] and both["block"].shape == (4, 12, 12)
    expected = [blocks_of(a)[0], blocks_of(a)[2]] + blocks_of(b)
    for got, want in zip(blocks_of(both), expected, strict=True):
        assert torch.equal(got, want)
    assert torch.equal(both["positions"], torch.cat([a["positions"][:2],
                                                     a["positions"][7:], b["positions"]]))
    assert torch.equal(both["energy"], torch.cat([a["energy"][[0, 2]], b["energy"]]))
    assert both.system_idx.tolist() == [0, 0, 1, 2, 2, 2, 3, 3, 3, 3]
    # Padding stays zero, which is what lets dof axes grow and shrink by slicing.
    assert torch.all(both["block"][1, 3:, :] == 0) and torch.all(both["block"][1, :, 3:] == 0)


def test_shapes_are_checked():
    state = make([2, 3], seed=3)
    with pytest.raises(ValueError, match="needs 5 rows"):
        state["positions"] = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="3 \\* max_atoms"):
        state["block"] = torch.zeros(2, 6, 6)


@pytest.mark.parametrize("optimizer", [BFGS(), LBFGS(memory=7)])
def test_fresh_optimizer_fields_fit_the_scopes(optimizer):
    sizes = torch.tensor([3, 1, 4])
    joining = BatchState(sizes, {"positions": torch.zeros(8, 3, dtype=torch.float64)},
                         {"positions": ATOM})
    fields = optimizer.fresh(joining)
    assert set(fields) == set(optimizer.scopes)
    state = BatchState(sizes, fields, optimizer.scopes)  # shapes checked on the way in
    if isinstance(optimizer, BFGS):
        hessian = state["bfgs_hessian"]
        assert torch.equal(hessian[1], torch.diag(torch.tensor([70.0] * 3 + [0.0] * 9,
                                                               dtype=torch.float64)))
