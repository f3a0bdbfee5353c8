"""Real ingredients for the shipped-model tests: a tiny store of GFN2-xTB labels (tblite),
two tiny PaiNNs trained on it by ``force2geo.training.fit`` (one float64 with an EMA, one
float32 without), and a weights folder holding exported, registered models.

The weights folder is configuration, not a mock: ``WEIGHTS_DIR`` is pointed at a temporary
folder that holds real exported files and a real ``registry.json``.
"""

import numpy as np
import pytest
from rdkit import Chem
from shipped import train

from force2geo.data.store import TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.pretrained import registry
from force2geo.qc.engines import XTBEngine
from force2geo.qc.protocol import embed, prepare

MOLECULES = {"water": "O", "methane": "C", "ammonia": "N", "methanol": "CO",
             "formaldehyde": "C=O", "ethylene": "C=C", "acetonitrile": "CC#N", "ethanol": "CCO"}
N_GEOMETRIES = 4


@pytest.fixture(scope="session")
def store_path(tmp_path_factory):
    """8 molecules x 4 geometries (ETKDG + 3 displaced copies), GFN2-xTB energy and forces,
    SMILES and InChIKey."""
    path = tmp_path_factory.mktemp("pretrained") / "store"
    engine = XTBEngine()
    with TrajectoryWriter(path, source="test: GFN2-xTB on displaced ETKDG geometries") as w:
        for k, (name, smiles) in enumerate(MOLECULES.items()):
            mol = prepare(smiles)
            z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
            start = embed(mol, k)
            rng = np.random.default_rng(k)
            positions = [start] + [start + rng.normal(scale=0.06, size=start.shape)
                                   for _ in range(N_GEOMETRIES - 1)]
            results = [engine.compute(z, p) for p in positions]
            w.add(Trajectory(z, np.array(positions), [r.energy for r in results],
                             np.array([r.forces for r in results]), "xtb", smiles=smiles,
                             inchikey=Chem.MolToInchiKey(mol), name=name))
    return path


@pytest.fixture(scope="session")
def ema_run(store_path, tmp_path_factory):
    """A float64 run that kept an EMA of its weights (decay 0.9)."""
    return train(store_path, tmp_path_factory.mktemp("runs") / "ema", dtype="float64",
                 ema_decay=0.9, seed=0)


@pytest.fixture(scope="session")
def plain_run(store_path, tmp_path_factory):
    """A float32 run without EMA, another seed."""
    return train(store_path, tmp_path_factory.mktemp("runs") / "plain", dtype="float32",
                 seed=1)


@pytest.fixture
def weights(monkeypatch, tmp_path):
    """An empty weights folder standing in for the package's."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.delenv(registry.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(registry, "WEIGHTS_DIR", folder)
    return folder
