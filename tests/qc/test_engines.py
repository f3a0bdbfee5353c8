"""Engines: real tblite, PySCF and RDKit MMFF; forces against finite differences in eV/Å."""

import numpy as np
import pytest
from ase import Atoms

from force2geo.errors import Force2GeoError
from force2geo.qc.engines import (
    DFTEngine,
    EngineCalculator,
    MMFFEngine,
    QCError,
    XTBEngine,
    frontier_orbitals,
)
from force2geo.qc.protocol import embed, prepare
from force2geo.units import HARTREE_TO_EV

WATER_Z = np.array([8, 1, 1])
WATER_X = np.array([[0.0, 0.0, 0.117], [0.0, 0.757, -0.470], [0.0, -0.757, -0.470]])
METHANE_Z = np.array([6, 1, 1, 1, 1])
METHANE_X = np.array([[0.0, 0.0, 0.0], [0.63, 0.63, 0.63], [-0.63, -0.63, 0.63],
                      [-0.63, 0.63, -0.63], [0.66, -0.60, -0.64]])  # slightly distorted


def ethanol():
    mol = prepare("CCO")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return mol, z, embed(mol, seed=7)


def finite_difference_forces(engine, z, x, h, coordinates, charge=0):
    """-dE/dx (eV/Å) by central differences of the engine's energy (eV) for (atom, axis)."""
    out = []
    for atom, axis in coordinates:
        plus, minus = x.copy(), x.copy()
        plus[atom, axis] += h
        minus[atom, axis] -= h
        e_plus = engine.compute(z, plus, charge).energy
        e_minus = engine.compute(z, minus, charge).energy
        out.append(-(e_plus - e_minus) / (2 * h))
    return np.array(out)


def all_coordinates(n_atoms):
    return [(a, c) for a in range(n_atoms) for c in range(3)]


@pytest.mark.parametrize("name", ["water", "methane", "ethanol"])
def test_xtb_forces_are_minus_energy_gradient_in_ev_per_angstrom(name):
    if name == "water":
        z, x = WATER_Z, WATER_X
    elif name == "methane":
        z, x = METHANE_Z, METHANE_X
    else:
        _, z, x = ethanol()
    engine = XTBEngine()
    result = engine.compute(z, x)
    numeric = finite_difference_forces(engine, z, x, 1e-3, all_coordinates(len(z)))
    # A Bohr/Hartree slip would be off by factors of 0.53 or 27: far outside 2e-4 eV/Å.
    np.testing.assert_allclose(result.forces.ravel(), numeric, atol=2e-4)
    assert np.abs(result.forces).max() > 0.05  # not at a minimum: the check has teeth


def test_xtb_water_energy_and_orbitals_in_ev():
    result = XTBEngine().compute(WATER_Z, WATER_X)
    # GFN2-xTB water is about -5.070 Hartree.
    assert result.energy / HARTREE_TO_EV == pytest.approx(-5.0704, abs=2e-3)
    assert result.energy == pytest.approx(-137.97, abs=0.1)
    assert -14.0 < result.homo < -10.0 and result.homo < result.lumo
    assert 12.0 < result.gap < 17.0
    assert result.gap == pytest.approx(result.lumo - result.homo)


def test_xtb_charge_reaches_the_calculation():
    engine = XTBEngine()
    mol = prepare("C[NH3+]")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    x = embed(mol, seed=1)
    cation = engine.compute(z, x, charge=1)  # 18 electrons, closed shell
    anion = engine.compute(z, x, charge=-1)  # 20 electrons, closed shell
    assert abs(anion.energy - cation.energy) > 0.5
    assert anion.homo > cation.homo + 10.0  # two more electrons raise the orbitals by eVs
    # The cached calculator is rebuilt when the charge changes back.
    assert engine.compute(z, x, charge=1).energy == pytest.approx(cation.energy, abs=1e-6)
    assert XTBEngine().compute(z, x, charge=1).energy == pytest.approx(cation.energy, abs=1e-6)


def test_xtb_unsupported_element_raises_qcerror():
    with pytest.raises(QCError, match="no parameters for atomic number"):
        XTBEngine().compute(np.array([87, 1]), np.array([[0.0, 0, 0], [2.0, 0, 0]]))
    assert issubclass(QCError, Force2GeoError)


def test_frontier_orbitals_reads_smeared_occupations():
    energies = np.array([-1.0, -0.5, -0.3, 0.1, 0.4])
    assert frontier_orbitals(energies, [2.0, 2.0, 1.98, 0.02, 0.0]) == (-0.3, 0.1)
    assert frontier_orbitals(energies, [2.0, 2.0, 0.0, 0.0, 0.0]) == (-0.5, -0.3)
    homo, lumo = frontier_orbitals(energies, [0.0] * 5)
    assert np.isnan(homo) and np.isnan(lumo)


def test_mmff_forces_are_converted_from_kcal_per_mol():
    mol, z, x = ethanol()
    engine = MMFFEngine(mol)
    result = engine.compute(z, x)
    numeric = finite_difference_forces(engine, z, x, 1e-4, all_coordinates(len(z)))
    np.testing.assert_allclose(result.forces.ravel(), numeric, atol=1e-4)
    assert np.isnan(result.homo)
    with pytest.raises(ValueError, match="different molecule"):
        engine.compute(WATER_Z, WATER_X)


def test_ase_calculator_adapter_matches_engine():
    engine = XTBEngine()
    atoms = Atoms(numbers=WATER_Z, positions=WATER_X)
    atoms.calc = EngineCalculator(engine)
    expected = XTBEngine().compute(WATER_Z, WATER_X)
    assert atoms.get_potential_energy() == pytest.approx(expected.energy, abs=1e-8)
    np.testing.assert_allclose(atoms.get_forces(), expected.forces, atol=1e-8)
    assert atoms.calc.last_result.gap == pytest.approx(expected.gap)


def test_dft_water_single_point_b3lyp_631gs():
    engine = DFTEngine()
    result = engine.compute(WATER_Z, WATER_X)
    # B3LYP/6-31G* water near its minimum: about -76.408 Hartree.
    assert result.energy / HARTREE_TO_EV == pytest.approx(-76.408, abs=5e-3)
    assert -9.0 < result.homo < -7.0 and 8.0 < result.gap < 11.0
    coordinates = [(0, 2), (1, 1)]
    numeric = finite_difference_forces(engine, WATER_Z, WATER_X, 5e-3, coordinates)
    analytic = np.array([result.forces[a, c] for a, c in coordinates])
    assert np.abs(analytic).min() > 0.3
    np.testing.assert_allclose(analytic, numeric, atol=3e-3)


def test_dft_failures_raise_qcerror():
    with pytest.raises(QCError, match="SCF not converged in 2 cycles"):
        DFTEngine(max_cycle=2).compute(WATER_Z, WATER_X)
    with pytest.raises(QCError, match="basis 6-31g\\* has no functions"):
        DFTEngine().compute(np.array([54]), np.zeros((1, 3)))
