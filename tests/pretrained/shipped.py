"""Helpers of the shipped-model tests: train a tiny PaiNN, ship runs into a weights folder,
read the whole test store as one batch."""

import numpy as np
import torch

from force2geo.data.store import TrajectoryStore
from force2geo.models import Batch
from force2geo.pretrained import Entry, export_pretrained, register

TINY = {"hidden_channels": 16, "num_layers": 2, "num_rbf": 8, "cutoff": 4.0}


def train(store_path, run_dir, **options):
    from force2geo.training import TrainConfig, fit

    config = TrainConfig(data=str(store_path), run_dir=str(run_dir), epochs=1,
                         batch_size=8, lr=5e-3, device="cpu", plots=False,
                         split_fractions=(0.5, 0.25, 0.25), model_config=TINY, **options)
    fit(config)
    return run_dir


def ship(folder, name, runs):
    """Export ``runs`` into ``folder`` and register them as ``name`` (an ensemble when
    several); returns the Entry."""
    several = len(runs) > 1
    files = tuple(export_pretrained(run, name, folder, f"{name}-{k}.pt" if several else None)
                  for k, run in enumerate(runs))
    entry = Entry(name, files, "a tiny test model", "GFN2-xTB (tblite)")
    register(entry, folder)
    return entry


def store_batch(store_path, dtype=torch.float64) -> Batch:
    """Every snapshot of the store as one batch."""
    store = TrajectoryStore(store_path)
    return Batch.from_store(store.read(np.arange(store.n_snapshots)), dtype=dtype)
