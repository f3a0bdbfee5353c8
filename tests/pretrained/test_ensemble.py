"""The ensemble: its energy and forces are the members' means, its spread is zero for
identical members and equals an independent numpy computation otherwise."""

import copy

import numpy as np
import pytest
import torch
from shipped import store_batch

from force2geo.models import energy_and_forces
from force2geo.pretrained import Ensemble, uncertainty
from force2geo.pretrained.ensemble import calibrate_flag
from force2geo.relax import potential_force_fn
from force2geo.training.checkpoint import load_potential


@pytest.fixture(scope="module")
def members(ema_run, plain_run):
    """Two different tiny PaiNNs in float64 (one per training run)."""
    return [load_potential(ema_run / "best.pt", dtype=torch.float64),
            load_potential(plain_run / "best.pt", dtype=torch.float64)]


def test_mean_and_spread_against_the_members(members, store_path):
    batch = store_batch(store_path, torch.float64)
    ensemble = Ensemble(members)
    outputs = [energy_and_forces(m, batch) for m in members]
    e = np.stack([o[0].numpy() for o in outputs])  # [2, n_systems]
    f = np.stack([o[1].numpy() for o in outputs])  # [2, n_atoms, 3]
    prediction = ensemble.predict(batch)
    np.testing.assert_allclose(prediction.energy.numpy(), e.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(prediction.forces.numpy(), f.mean(0), rtol=0, atol=1e-12)
    np.testing.assert_allclose(prediction.energy_std.numpy(), e.std(0), rtol=1e-10)
    atom = np.sqrt(f.var(0).sum(-1))  # [n_atoms]: norm of the per-component std
    idx = batch.system_idx.numpy()
    expected = np.array([atom[idx == s].max() for s in range(batch.n_systems)])
    np.testing.assert_allclose(prediction.forces_std.numpy(), expected, rtol=1e-10)
    assert (prediction.energy_std > 0).all() and (prediction.forces_std > 0).all()
    # As a potential: forward is the mean energy, and forces by autograd are the mean forces.
    energy, forces = energy_and_forces(ensemble, batch)
    np.testing.assert_allclose(energy.numpy(), e.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(forces.numpy(), f.mean(0), rtol=0, atol=1e-12)


def test_identical_members_have_no_spread(members, store_path):
    batch = store_batch(store_path, torch.float64)
    ensemble = Ensemble([members[0], copy.deepcopy(members[0]), copy.deepcopy(members[0])])
    prediction = ensemble.predict(batch)
    assert torch.equal(prediction.energy_std, torch.zeros_like(prediction.energy_std))
    assert torch.equal(prediction.forces_std, torch.zeros_like(prediction.forces_std))
    single, forces = energy_and_forces(members[0], batch)
    torch.testing.assert_close(prediction.energy, single, rtol=0, atol=1e-10)
    torch.testing.assert_close(prediction.forces, forces, rtol=0, atol=1e-12)


def test_one_molecule_uncertainty_and_the_relaxation_force_function(members, store_path):
    batch = store_batch(store_path, torch.float64)
    ensemble = Ensemble(members)
    n = int((batch.system_idx == 0).sum())
    z, positions = batch.atomic_numbers[:n].numpy(), batch.positions[:n].numpy()
    flags = uncertainty(ensemble, z, positions)
    prediction = ensemble.predict(batch)
    assert flags["energy_std"] == pytest.approx(float(prediction.energy_std[0]), rel=1e-10)
    assert flags["forces_std"] == pytest.approx(float(prediction.forces_std[0]), rel=1e-10)
    assert uncertainty(members[0], z, positions) == {}
    energy, forces = potential_force_fn(ensemble)(batch.positions, batch.atomic_numbers,
                                                  batch.system_idx, batch.n_systems)
    torch.testing.assert_close(energy, prediction.energy, rtol=0, atol=1e-10)
    torch.testing.assert_close(forces, prediction.forces, rtol=0, atol=1e-12)


def test_an_ensemble_needs_two_members(members):
    with pytest.raises(ValueError, match="at least 2"):
        Ensemble(members[:1])


def test_first_member_drives_and_the_others_score_the_end(members, store_path):
    """drive='first': the relaxation's energy and forces are member 0's alone (one
    evaluation per step); the spread at the end still comes from every member, and a
    calibrated threshold turns it into the 'uncertain' flag."""
    batch = store_batch(store_path, torch.float64)
    driven = Ensemble(members, drive="first", flag_forces_std=1e-9)
    energy, forces = energy_and_forces(driven, batch)
    first_e, first_f = energy_and_forces(members[0], batch)
    torch.testing.assert_close(energy, first_e, rtol=0, atol=0)
    torch.testing.assert_close(forces, first_f, rtol=0, atol=0)
    n = int((batch.system_idx == 0).sum())
    z, positions = batch.atomic_numbers[:n].numpy(), batch.positions[:n].numpy()
    flags = uncertainty(driven, z, positions)
    assert flags["forces_std"] == pytest.approx(uncertainty(Ensemble(members), z,
                                                            positions)["forces_std"])
    assert flags["uncertain"] is True
    assert uncertainty(Ensemble(members, flag_forces_std=1e9), z, positions)["uncertain"] \
        is False
    with pytest.raises(ValueError, match="drive"):
        Ensemble(members, drive="vote")
    with pytest.raises(ValueError, match="flag_forces_std"):
        Ensemble(members, flag_forces_std=0.0)


def test_calibrated_flag_catches_bad_results_within_its_false_alarm_budget():
    """Good results' spreads 0.01..0.10, bad ones 0.05..0.50: the threshold is the good
    spreads' 80 % quantile, so 2 of 10 good ones and every bad one above it are flagged."""
    good = np.linspace(0.01, 0.10, 10)
    bad = np.linspace(0.05, 0.50, 10)
    result = calibrate_flag(np.concatenate([good, bad, [np.nan]]),
                            [False] * 10 + [True] * 10 + [True], max_false_alarm=0.2)
    assert result["flag_forces_std"] == pytest.approx(0.08)
    assert result["false_alarm"] == pytest.approx(0.2)
    assert result["catch"] == pytest.approx((bad > 0.08).mean())
    assert (result["n_good"], result["n_bad"]) == (10, 10)  # the NaN spread is left out
    with pytest.raises(ValueError, match="good"):
        calibrate_flag([0.1, 0.2], [True, True])
