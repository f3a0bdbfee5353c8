"""Real ingredients for the predict tests: two tiny PaiNN potentials and two tiny PaiNN
gap models trained on real GFN2-xTB data (see ../finetune/finetune_data.py), and a
weights folder where they are exported and registered.

The weights folder is configuration, not a mock: ``FORCE2GEO_WEIGHTS`` points at a
temporary folder holding real exported files and a real ``registry.json``.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "finetune"))

from predict_data import train_potential, train_property  # noqa: E402

from force2geo.pretrained import registry  # noqa: E402


@pytest.fixture(scope="session")
def store(tmp_path_factory):
    from finetune_data import write_xtb_store

    return write_xtb_store(tmp_path_factory.mktemp("predict") / "store")


@pytest.fixture(scope="session")
def mlip_runs(store, tmp_path_factory):
    """Two potentials of different seeds (run folders of force2geo train)."""
    root = tmp_path_factory.mktemp("mlip")
    return [train_potential(store, root / f"seed{seed}", seed) for seed in (0, 1)]


@pytest.fixture(scope="session")
def property_runs(tmp_path_factory):
    """Two gap models of different seeds (run folders of fit_property)."""
    root = tmp_path_factory.mktemp("property")
    return [train_property(root / f"seed{seed}", seed) for seed in (0, 1)]


@pytest.fixture
def weights(monkeypatch, tmp_path):
    """An empty weights folder named by FORCE2GEO_WEIGHTS (the package's is not used)."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv(registry.WEIGHTS_ENV, str(folder))
    return folder
