"""Oracle single points of one molecule (real tblite / PySCF): energies in eV at the right
geometries, a reference made by the oracle's own BFGS, failures recorded per geometry."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from force2geo.evaluate.oracle import OracleConfig, OracleTask, run_oracle, score

WATER_Z = np.array([8, 1, 1])
WATER = np.array([[0.0, 0.0, 0.0], [0.99, 0.0, 0.0], [-0.26, 0.95, 0.0]])  # stretched, Å


def rotated(positions, seed=1):
    return positions @ Rotation.random(random_state=seed).as_matrix().T + 2.0


def test_xtb_single_points_and_made_reference():
    task = OracleTask(7, WATER_Z, 0, WATER, rotated(WATER), None, OracleConfig("xtb"))
    out = score(task)
    assert out["trajectory"] == 7 and out["errors"] == {}
    # GFN2-xTB water is about -5.07 Hartree = -138 eV: a Hartree slip would show
    assert -139.0 < out["e0"] < -137.0
    assert out["e_t"] == pytest.approx(out["e0"], abs=1e-6)  # same molecule, moved
    assert out["fmax_t"] == pytest.approx(out["fmax0"], abs=1e-5) and out["fmax0"] > 0.1
    assert out["gt_source"] == "oracle" and out["gt_steps"] > 0
    assert out["e_gt"] < out["e0"] - 1e-3 and out["fmax_gt"] < 0.05
    assert np.shape(out["gt_positions"]) == (3, 3)


def test_failures_are_recorded_per_geometry():
    broken = rotated(WATER)
    broken[1, 0] = np.nan  # a diverged MLIP geometry
    out = score(OracleTask(0, WATER_Z, 0, WATER, broken, WATER, OracleConfig("xtb")))
    assert set(out["errors"]) == {"c_t"} and "non-finite" in out["errors"]["c_t"]
    assert np.isnan(out["e_t"]) and np.isfinite(out["e0"]) and np.isfinite(out["e_gt"])
    assert out["gt_source"] == "stage"
    # an element GFN2-xTB has no parameters for fails at every geometry
    out = score(OracleTask(1, np.array([118]), 0, np.zeros((1, 3)), np.zeros((1, 3)),
                           np.zeros((1, 3)), OracleConfig("xtb")))
    assert set(out["errors"]) == {"c0", "c_t", "c_gt"}
    assert "no parameters" in out["errors"]["c0"]


def test_pool_returns_every_task():
    tasks = [OracleTask(k, WATER_Z, 0, WATER, rotated(WATER, k), WATER, OracleConfig("xtb"))
             for k in range(3)]
    got = []
    run_oracle(tasks, workers=2, on_result=got.append, progress=False)
    assert sorted(r["trajectory"] for r in got) == [0, 1, 2]
    energies = [r["e_t"] for r in got]
    assert max(energies) - min(energies) < 1e-6


def test_unknown_oracle_is_refused():
    with pytest.raises(ValueError, match="oracle"):
        OracleConfig("ccsd")


@pytest.mark.slow
def test_dft_oracle_b3lyp_water():
    task = OracleTask(0, WATER_Z, 0, WATER, rotated(WATER), None, OracleConfig("dft"))
    out = score(task)
    assert out["errors"] == {}
    # B3LYP/6-31G* water: about -76.41 Hartree = -2079.2 eV
    assert out["e0"] == pytest.approx(-76.41 * 27.2114, abs=0.5)
    assert out["e_t"] == pytest.approx(out["e0"], abs=1e-5)
    assert out["e_gt"] < out["e0"] and out["fmax_gt"] < 0.05
