"""The geometry-optimisation metrics (paper Eq. 10-14) on hand-made energies (eV) and
forces (eV/Å), with the edge cases and the eV -> kcal/mol conversion checked against
numbers worked out by hand."""

import math

import numpy as np
import pytest

from force2geo.evaluate.metrics import (
    diverged,
    energy_percentage,
    geo_opt_metrics,
    molecule_metrics,
    residual_energy_kcal,
)

NAN = math.nan
# 1 eV = 96.485 kJ/mol = 23.0605 kcal/mol (written out here, not taken from force2geo.units)
KCAL_PER_EV = 96.48533212 / 4.184


def test_energy_percentage_eq11():
    e0 = [-100.0, -100.0, -100.0, -100.0]
    e_t = [-100.5, -101.2, -99.9, -100.0]
    e_gt = [-101.0, -101.0, -101.0, -101.0]
    # (E0 - ET) / (E0 - Egt): half way, beyond the reference, uphill, no progress
    np.testing.assert_allclose(energy_percentage(e0, e_t, e_gt), [50.0, 120.0, -10.0, 0.0],
                               atol=1e-9)


def test_energy_percentage_leaves_out_no_drop_and_failures():
    e0 = [-10.0, -10.0, -10.0, -10.0, NAN]
    e_t = [-10.0005, -10.0, -10.004, NAN, -10.0]
    e_gt = [-10.0005, -9.9, -10.002, -10.1, -10.1]
    pct = energy_percentage(e0, e_t, e_gt, min_drop=1e-3)
    # drop 0.5 meV (below 1 meV), reference above the start, a 2 meV drop (kept),
    # oracle failed at c_T, oracle failed at c_0
    assert np.isnan(pct[[0, 1, 3, 4]]).all()
    assert pct[2] == pytest.approx(200.0, rel=1e-6)
    # the boundary itself is kept (binary-exact numbers: a drop of 2**-10 eV)
    drop = 2.0**-10
    assert energy_percentage([-8.0], [-8.0 - drop / 2], [-8.0 - drop], min_drop=drop)[0] == 50.0
    assert energy_percentage([-10.0], [-10.0002], [-10.0005], min_drop=1e-4)[0] == \
        pytest.approx(40.0, rel=1e-6)


def test_residual_energy_is_in_kcal_per_mol():
    assert residual_energy_kcal([1.0], [0.0])[0] == pytest.approx(KCAL_PER_EV, rel=1e-9)
    assert residual_energy_kcal([-5.0], [-5.1])[0] == pytest.approx(0.1 * KCAL_PER_EV)
    assert residual_energy_kcal([-5.1], [-5.0])[0] == pytest.approx(-0.1 * KCAL_PER_EV)


def test_success_threshold_is_one_kcal_per_mol_not_one_ev():
    # 0.040 eV = 0.922 kcal/mol (success), 0.045 eV = 1.038 kcal/mol (not), and a
    # residual below zero (a lower minimum than the reference) is a success
    e_gt = np.array([-50.0, -50.0, -50.0])
    e_t = e_gt + np.array([0.040, 0.045, -0.010])
    e0 = e_gt + 1.0
    m = molecule_metrics(e0, e_t, e_gt, [0.01, 0.01, 0.01])
    assert m["success"].tolist() == [True, False, True]
    np.testing.assert_allclose(m["e_res_kcal"], [0.9224, 1.0377, -0.2306], atol=1e-4)


def test_divergence_and_force_convergence_flags():
    e0 = [-20.0, -20.0, -20.0, -20.0]
    e_t = [-19.99, -20.0, NAN, -20.5]
    assert diverged(e0, e_t).tolist() == [True, False, True, False]
    e_gt = [-21.0] * 4
    fmax_t = [0.049, 0.05, NAN, 0.2]
    m = molecule_metrics(e0, e_t, e_gt, fmax_t)
    assert m["fwt"].tolist() == [True, False, False, False]  # strictly below 0.05 eV/Å
    assert m["diverged"].tolist() == [True, False, True, False]
    # a force failure at c_T counts as an oracle failure there, hence diverged
    m = molecule_metrics([-20.0], [-20.5], [-21.0], [NAN])
    assert m["diverged"].tolist() == [True] and m["success"].tolist() == [False]
    assert np.isnan(m["pct"][0])


def test_geo_opt_metrics_on_a_hand_made_set():
    # six molecules, E in eV; expectations worked out by hand below
    e0 = [-100.0, -100.0, -100.0, -100.0, NAN, -100.0]
    e_t = [-100.9, -100.5, -99.0, NAN, -100.0, -100.0]
    e_gt = [-101.0, -101.0, -101.0, -101.0, -101.0, -100.0]
    fmax_t = [0.01, 0.30, 0.02, NAN, 0.01, 0.04]
    out = geo_opt_metrics(e0, e_t, e_gt, fmax_t)
    # molecule 4: failed at c_0 -> not scored; five scored molecules
    assert out["n_molecules"] == 6 and out["n_scored"] == 5 and out["n_reference_failed"] == 1
    # pct: 90, 50, -100; molecule 3 failed at c_T, molecule 6 has E0 - Egt = 0
    assert out["n_pct"] == 3 and out["n_pct_oracle_failed"] == 1
    assert out["n_pct_small_drop"] == 1
    assert out["pct_T"] == pytest.approx((90.0 + 50.0 - 100.0) / 3)
    # E_res: 0.1 eV (2.31 kcal/mol), 0.5 eV, 2 eV, failed, 0 eV -> one success of five
    assert out["n_success"] == 1 and out["pct_success"] == pytest.approx(20.0)
    # diverged: molecule 3 (E_T > E_0) and molecule 4 (oracle failed at c_T)
    assert out["n_div"] == 2 and out["pct_div"] == pytest.approx(40.0)
    # forces below 0.05 eV/Å: molecules 1, 3 and 6
    assert out["n_FWT"] == 3 and out["pct_FWT"] == pytest.approx(60.0)


def test_success_boundary_in_ev_matches_the_paper_threshold():
    one_kcal_in_ev = 1.0 / KCAL_PER_EV  # 0.04336 eV
    e_gt = np.array([-7.0, -7.0])
    e_t = e_gt + np.array([0.999, 1.001]) * one_kcal_in_ev
    out = geo_opt_metrics(e_gt + 1.0, e_t, e_gt, [0.0, 0.0])
    assert out["n_success"] == 1


def test_no_scored_molecule_gives_nan_not_an_error():
    out = geo_opt_metrics([NAN, NAN], [-1.0, -1.0], [-2.0, NAN], [0.0, 0.0])
    assert out["n_scored"] == 0
    assert all(math.isnan(out[name]) for name in ("pct_T", "pct_success", "pct_div",
                                                   "pct_FWT"))
    empty = geo_opt_metrics([], [], [], [])
    assert empty["n_molecules"] == 0 and math.isnan(empty["pct_T"])


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="four"):
        geo_opt_metrics([1.0, 2.0], [1.0], [1.0, 2.0], [0.0, 0.0])
