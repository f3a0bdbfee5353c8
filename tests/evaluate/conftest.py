"""Shared fixtures of the evaluation tests: a tiny store made by the force2geo xTB protocol
(ETKDG -> MMFF94 -> GFN2-xTB BFGS, real tblite) and a tiny PaiNN trained on its xTB
snapshots for a few seconds with force2geo.training (a real checkpoint file)."""

import pytest
import torch

from force2geo.data.store import TrajectoryWriter
from force2geo.qc.protocol import relax_molecule
from force2geo.training import TrainConfig, fit

MOLECULES = {"ethanol": "CCO", "acetic-acid": "CC(=O)O", "methylamine": "CN",
             "acetaldehyde": "CC=O"}


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tiny models gain nothing from intra-op threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def qc_store(tmp_path_factory):
    """Path of a store of four protocol trajectories (stages etkdg, mmff, xtb)."""
    path = tmp_path_factory.mktemp("evaluate") / "store"
    with TrajectoryWriter(path, source="test: force2geo xTB protocol") as writer:
        for name, smiles in MOLECULES.items():
            writer.add(relax_molecule(smiles, name))
    return path


@pytest.fixture(scope="session")
def checkpoint(qc_store, tmp_path_factory):
    """Path of the last checkpoint of a tiny PaiNN trained on the xTB snapshots."""
    run_dir = tmp_path_factory.mktemp("evaluate-run") / "run"
    config = TrainConfig(
        data=str(qc_store), run_dir=str(run_dir), stages=("xtb",), device="cpu",
        model_config={"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0},
        epochs=8, batch_size=8, lr=5e-3, split_fractions=(1.0, 0.0, 0.0), plots=False)
    fit(config)
    return run_dir / "last.pt"
