"""The ASE calculator is a thin adapter over energy_and_forces."""

import numpy as np
import pytest
import torch
from ase import Atoms

from force2geo.models import Batch, PaiNN, PaiNNConfig, Potential, energy_and_forces
from force2geo.relax import PotentialCalculator


@pytest.fixture(scope="module")
def painn():
    torch.manual_seed(0)
    refs = np.zeros(119)
    refs[[1, 6, 7, 8]] = [-13.6, -1029.0, -1485.0, -2042.0]  # eV, realistic magnitudes
    backbone = PaiNN(PaiNNConfig(hidden_channels=16, num_layers=2, num_rbf=8, cutoff=4.0))
    return Potential(backbone, refs).double().eval()


def test_energy_and_forces_match_the_potential(painn, starts):
    z, positions = starts[0]
    atoms = Atoms(numbers=z, positions=positions)
    atoms.calc = PotentialCalculator(painn)
    energy, forces = energy_and_forces(painn, Batch.from_arrays([z], [positions],
                                                                 dtype=torch.float64))
    assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), abs=1e-9)
    assert atoms.get_potential_energy() < -1000  # references included: total energy, eV
    np.testing.assert_allclose(atoms.get_forces(), forces.numpy(), atol=1e-10)
    assert set(PotentialCalculator.implemented_properties) == {"energy", "forces"}


def test_forces_are_minus_energy_gradient(painn, starts):
    """Central finite differences of the calculator's energy (float64) give its forces."""
    z, positions = starts[1]
    atoms = Atoms(numbers=z, positions=positions)
    atoms.calc = PotentialCalculator(painn)
    forces = atoms.get_forces()
    h = 1e-4
    for atom, axis in [(0, 0), (3, 1), (len(z) - 1, 2)]:
        energies = []
        for sign in (1, -1):
            moved = atoms.copy()
            moved.calc = atoms.calc
            moved.positions[atom, axis] += sign * h
            energies.append(moved.get_potential_energy())
        assert forces[atom, axis] == pytest.approx(-(energies[0] - energies[1]) / (2 * h),
                                                   abs=1e-6)


def test_periodic_cells_are_refused(painn):
    atoms = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]], cell=[5, 5, 5], pbc=True)
    atoms.calc = PotentialCalculator(painn)
    with pytest.raises(ValueError, match="molecules only"):
        atoms.get_potential_energy()
