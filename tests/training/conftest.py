"""A tiny store of real GFN2-xTB labels (tblite) for the training tests.

Eight small molecules, each at an RDKit ETKDG geometry and at a few randomly displaced
copies of it (so forces are far from zero), labelled with GFN2-xTB energies (eV) and
forces (eV/Å). One more molecule carries energies only (forces NaN): the loss and metrics
must leave its forces out.
"""

import numpy as np
import pytest

from force2geo.data.store import TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.qc.engines import XTBEngine
from force2geo.qc.protocol import embed, prepare

MOLECULES = {
    "water": "O", "methane": "C", "ammonia": "N", "methanol": "CO",
    "formaldehyde": "C=O", "ethylene": "C=C", "acetonitrile": "CC#N", "ethanol": "CCO",
}
ENERGY_ONLY = {"hydrogen-cyanide": "C#N"}
N_GEOMETRIES = 6
DISPLACEMENT = 0.06  # Å, standard deviation of the random displacements


def label(engine, smiles, name, seed, with_forces=True):
    mol = prepare(smiles)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    start = embed(mol, seed)
    rng = np.random.default_rng(seed)
    positions = [start] + [start + rng.normal(scale=DISPLACEMENT, size=start.shape)
                           for _ in range(N_GEOMETRIES - 1)]
    results = [engine.compute(z, p) for p in positions]
    forces = np.array([r.forces for r in results]) if with_forces else None
    return Trajectory(z, np.array(positions), [r.energy for r in results], forces,
                      "xtb" if with_forces else "input", smiles=smiles, name=name)


@pytest.fixture(scope="session")
def xtb_store(tmp_path_factory):
    """Path of the store: 8 labelled trajectories (48 snapshots) + 1 energy-only (6)."""
    path = tmp_path_factory.mktemp("training") / "xtb-store"
    engine = XTBEngine()
    with TrajectoryWriter(path, source="test: GFN2-xTB on displaced ETKDG geometries") as w:
        for k, (name, smiles) in enumerate(MOLECULES.items()):
            w.add(label(engine, smiles, name, seed=k))
        for name, smiles in ENERGY_ONLY.items():
            w.add(label(engine, smiles, name, seed=99, with_forces=False))
    return path


@pytest.fixture
def tiny_painn():
    """A PaiNN small enough to train in a test: hidden 16, 2 layers."""
    return {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0}
