"""Batched and continuously batched relaxations give each molecule its lone result."""

import numpy as np
import pytest
import torch

from force2geo.models import Batch, energy_and_forces
from force2geo.relax import RelaxConfig, RelaxStats, potential_force_fn, relax, relax_iter


@pytest.fixture(scope="module")
def alone(potential, starts):
    """Each molecule relaxed on its own, per optimizer."""
    fn = potential_force_fn(potential)
    return {name: [relax(fn, [s], RelaxConfig(optimizer=name))[0] for s in starts]
            for name in ("bfgs", "lbfgs", "fire")}


def assert_same(results, reference):
    assert [r.index for r in results] == list(range(len(reference)))
    for r, ref in zip(results, reference, strict=True):
        assert r.status == ref.status == "converged"
        assert r.n_steps == ref.n_steps
        np.testing.assert_allclose(r.positions, ref.positions, atol=1e-7)
        assert r.energy == pytest.approx(ref.energy, abs=1e-9)


@pytest.mark.parametrize("name", ["bfgs", "lbfgs", "fire"])
def test_one_batch_equals_each_alone(potential, starts, alone, name):
    results = relax(potential_force_fn(potential), starts, RelaxConfig(optimizer=name))
    assert_same(results, alone[name])


@pytest.mark.parametrize("name", ["bfgs", "lbfgs"])
def test_continuous_batching_within_atom_budget(potential, starts, alone, name):
    """With room for two or three molecules at a time, molecules join as others leave
    (so they start at different steps, sharing e.g. the L-BFGS history ring), and every
    batch evaluated stays within the budget."""
    fn = potential_force_fn(potential)
    seen = []

    def counted(positions, atomic_numbers, system_idx, n_systems):
        seen.append(positions.shape[0])
        return fn(positions, atomic_numbers, system_idx, n_systems)

    stats = RelaxStats()
    results = relax(counted, starts, RelaxConfig(optimizer=name, batch_atoms=45), stats=stats)
    assert_same(results, alone[name])
    assert max(seen) <= 45
    assert stats.molecule_evaluations == sum(r.n_steps + 1 for r in results)
    assert stats.evaluations < stats.molecule_evaluations  # really batched


def test_molecule_larger_than_budget_runs_alone(potential, starts, alone):
    results = relax(potential_force_fn(potential), starts[:3], RelaxConfig(batch_atoms=10))
    assert_same(results, alone["bfgs"][:3])


def test_results_stream_as_molecules_finish(potential, starts):
    order = [r.index for r in relax_iter(potential_force_fn(potential), starts)]
    assert sorted(order) == list(range(len(starts)))
    assert order != list(range(len(starts)))  # finishing order differs from input order


def test_result_energy_and_fmax_are_the_potentials(potential, starts):
    """Energy (eV) and fmax (eV/Å) reported are those of the potential at the returned
    geometry, recomputed independently."""
    results = relax(potential_force_fn(potential), starts[:4])
    for (z, _), r in zip(starts[:4], results, strict=True):
        batch = Batch.from_arrays([z], [r.positions], dtype=torch.float64)
        energy, forces = energy_and_forces(potential, batch)
        assert r.energy == pytest.approx(float(energy[0]), abs=1e-9)
        fmax = float(torch.linalg.vector_norm(forces, dim=-1).max())
        assert r.fmax == pytest.approx(fmax, abs=1e-9)
        assert r.fmax < 0.05
        np.testing.assert_allclose(r.forces, forces.numpy(), atol=1e-9)
        assert r.energy < float(energy_and_forces(potential, Batch.from_arrays(
            [z], [starts[results.index(r)][1]], dtype=torch.float64))[0][0])


def test_step_limit_and_converged_start(potential, starts, alone):
    fn = potential_force_fn(potential)
    limited = relax(fn, starts[:2], RelaxConfig(max_steps=3))
    assert [r.status for r in limited] == ["step_limit", "step_limit"]
    assert [r.n_steps for r in limited] == [3, 3]
    assert all(not r.converged and r.fmax >= 0.05 for r in limited)
    # Restarting at a minimum: converged with zero steps, geometry unchanged.
    minimum = alone["bfgs"][0]
    again = relax(fn, [(starts[0][0], minimum.positions)])[0]
    assert again.status == "converged" and again.n_steps == 0
    np.testing.assert_array_equal(again.positions, minimum.positions)


def test_trajectory_holds_every_evaluation(potential, starts):
    r = relax(potential_force_fn(potential), starts[:1], RelaxConfig(trajectory=True))[0]
    positions, energy, forces = r.trajectory
    assert positions.shape == (r.n_steps + 1, len(starts[0][0]), 3)
    np.testing.assert_array_equal(positions[0], starts[0][1])
    np.testing.assert_array_equal(positions[-1], r.positions)
    assert energy[-1] == r.energy and energy[0] > energy[-1]
    np.testing.assert_array_equal(forces[-1], r.forces)
