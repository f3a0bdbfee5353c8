"""A trained model records the elements of its training data, through every checkpoint.

The store (conftest) holds H C N O molecules; a split whose training part has no nitrogen
makes a model that must say it knows H C O only, however N shows up in validation."""

import os

import numpy as np
import pytest
import torch

from force2geo.data.splits import save_split, split_meta
from force2geo.data.store import TrajectoryStore
from force2geo.training import TrainConfig, fit, load_potential
from force2geo.training.checkpoint import (
    checkpoint_elements,
    load_checkpoint,
    potential_from_checkpoint,
)
from force2geo.training.data import snapshot_elements


@pytest.fixture(scope="module")
def no_nitrogen_run(xtb_store, tmp_path_factory):
    """A 2-step run whose training part holds no nitrogen (validation does)."""
    root = tmp_path_factory.mktemp("elements")
    store = TrajectoryStore(xtb_store)
    smiles = store.identifiers("smiles")
    train = [k for k, s in enumerate(smiles) if "N" not in s]
    valid = [k for k, s in enumerate(smiles) if "N" in s]
    split = save_split(root / "split.json", {"train": train, "valid": valid},
                       split_meta(store, "test: no nitrogen in training"))
    config = TrainConfig(data=str(xtb_store), run_dir=str(root / "run"), split=str(split),
                         max_steps=2, epochs=1, batch_size=8, device="cpu", plots=False,
                         model_config={"hidden_channels": 8, "num_layers": 1, "num_rbf": 4,
                                       "cutoff": 4.0})
    fit(config)
    return config


def test_snapshot_elements_reads_only_the_snapshots_asked_for(xtb_store):
    store = TrajectoryStore(xtb_store)
    assert snapshot_elements(store, np.arange(store.n_snapshots)) == (1, 6, 7, 8)
    water = store.trajectory_snapshots(store.identifiers("name").index("water"))
    assert snapshot_elements(store, water) == (1, 8)
    assert snapshot_elements(store, np.empty(0, dtype=np.int64)) == ()


def test_checkpoint_records_the_training_elements(no_nitrogen_run):
    checkpoint = load_checkpoint(os.path.join(no_nitrogen_run.run_dir, "last.pt"))
    assert checkpoint["elements"] == [1, 6, 8]
    assert load_potential(os.path.join(no_nitrogen_run.run_dir, "last.pt")).elements == (1, 6, 8)


def test_old_checkpoint_without_elements_reads_them_off_its_references(no_nitrogen_run):
    """A file written before checkpoints recorded elements: the elements with a fitted
    (non-zero) reference energy, which the fit gives only to elements of its data."""
    checkpoint = load_checkpoint(os.path.join(no_nitrogen_run.run_dir, "last.pt"))
    del checkpoint["elements"]
    assert checkpoint_elements(checkpoint) == (1, 6, 8)
    assert potential_from_checkpoint(checkpoint).elements == (1, 6, 8)
    checkpoint["atom_refs"] = torch.zeros_like(checkpoint["atom_refs"])
    assert checkpoint_elements(checkpoint) is None  # nothing to tell: unknown


def test_warm_start_and_resume_keep_what_the_model_saw(no_nitrogen_run, tmp_path):
    """A warm start on data with nitrogen knows H C N O (its source's and its own); a
    run resumed from a checkpoint keeps the checkpoint's elements."""
    source = os.path.join(no_nitrogen_run.run_dir, "last.pt")
    warm = no_nitrogen_run.replace(run_dir=str(tmp_path / "warm"), init=source, split=None,
                                   split_fractions=(1.0, 0.0, 0.0), max_steps=1)
    fit(warm)
    assert load_checkpoint(tmp_path / "warm" / "last.pt")["elements"] == [1, 6, 7, 8]
    store = TrajectoryStore(warm.data)
    water = store.identifiers("name").index("water")
    only_water = save_split(tmp_path / "water.json", {"train": [water]},
                            split_meta(store, "test: water only"))
    narrow = warm.replace(run_dir=str(tmp_path / "narrow"), split=str(only_water),
                          init=str(tmp_path / "warm" / "last.pt"))
    fit(narrow)  # trained on water only, but started from a model that knew H C N O
    assert load_checkpoint(tmp_path / "narrow" / "last.pt")["elements"] == [1, 6, 7, 8]
