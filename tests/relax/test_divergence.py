"""A molecule that blows up is flagged as diverged and never disturbs the others."""

import numpy as np
import pytest
import torch
from relax_potentials import BondedRepulsion, Poisoned, Pulled

from force2geo.models import Potential
from force2geo.relax import BatchState, RelaxConfig, potential_force_fn, relax
from force2geo.relax.convergence import CODES, classify, farthest_neighbor_distance
from force2geo.relax.state import ATOM

SULFUR, CHLORINE = 16, 17


@pytest.fixture(scope="module")
def clean(potential, starts):
    return relax(potential_force_fn(potential), starts, RelaxConfig(batch_atoms=60))


def check_others(results, clean, bad):
    for r, ref in zip(results, clean, strict=True):
        if r.index == bad:
            continue
        assert r.status == "converged" and r.n_steps == ref.n_steps
        np.testing.assert_allclose(r.positions, ref.positions, atol=1e-7)


def test_nan_model_output_flags_only_that_molecule(starts, clean):
    poisoned = Potential(Poisoned(BondedRepulsion(), SULFUR)).double()
    results = relax(potential_force_fn(poisoned), starts, RelaxConfig(batch_atoms=60))
    bad = next(k for k, (z, _) in enumerate(starts) if SULFUR in z)
    assert results[bad].status == "diverged" and results[bad].n_steps == 0
    assert np.isnan(results[bad].energy)
    check_others(results, clean, bad)


@pytest.mark.parametrize("name", ["bfgs", "fire"])
def test_atom_flying_off_is_diverged(starts, clean, name):
    """A constant 30 eV/Å pull on the Cl atom tears chloroethanol apart: once some atom is
    more than 5 Å from every other atom, the molecule is retired as diverged."""
    pulled = Potential(Pulled(BondedRepulsion(), CHLORINE)).double()
    results = relax(potential_force_fn(pulled), starts,
                    RelaxConfig(optimizer=name, batch_atoms=60))
    bad = next(k for k, (z, _) in enumerate(starts) if CHLORINE in z)
    assert results[bad].status == "diverged"
    positions = results[bad].positions
    distances = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert distances.min(axis=1).max() > 5.0
    assert np.isfinite(results[bad].energy)  # not a NaN: the flying-apart test caught it
    if name == "bfgs":
        check_others(results, clean, bad)


def state_of(positions_list):
    sizes = torch.tensor([len(p) for p in positions_list])
    positions = torch.tensor(np.concatenate(positions_list))
    return BatchState(sizes, {"positions": positions}, {"positions": ATOM})


def test_farthest_neighbor_distance():
    line = np.array([[0.0, 0, 0], [1.0, 0, 0], [7.0, 0, 0]])  # last atom 6 Å from the next
    pair = np.array([[0.0, 0, 0], [0.0, 0, 1.5]])
    single = np.zeros((1, 3))
    broken = np.array([[0.0, 0, 0], [np.nan, 0, 0]])
    state = state_of([line, pair, single, broken])
    spread = farthest_neighbor_distance(state, state["positions"]).numpy()
    np.testing.assert_allclose(spread[:3], [6.0, 1.5, 0.0])
    assert np.isnan(spread[3])


def test_classify_priorities():
    """Per molecule: diverged (non-finite, flying apart, energy rise) beats converged,
    which beats the step limit."""
    compact = np.array([[0.0, 0, 0], [1.0, 0, 0]])
    state = state_of([compact] * 6)
    limits = {"fmax": 0.05, "max_steps": 10, "max_neighbor_distance": 5.0,
              "max_energy_rise": 10.0}
    fmax = torch.tensor([0.01, 0.2, 0.2, 0.01, np.nan, 0.01], dtype=torch.float64)
    energy = torch.tensor([-5.0, -5.0, -5.0, 6.0, -5.0, np.inf], dtype=torch.float64)
    start = torch.full((6,), -5.0, dtype=torch.float64)  # molecule 3 rose by 11 eV
    steps = torch.tensor([3, 3, 10, 3, 3, 3])
    codes = classify(state, fmax, energy, start, steps, limits)
    assert [CODES[c] for c in codes] == ["converged", "running", "step_limit", "diverged",
                                         "diverged", "diverged"]
    far = state_of([np.array([[0.0, 0, 0], [5.5, 0, 0]])])
    codes = classify(far, fmax[:1], energy[:1], start[:1], steps[:1], limits)
    assert CODES[int(codes[0])] == "diverged"
