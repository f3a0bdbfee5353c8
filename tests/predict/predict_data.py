"""Helpers of the predict tests: tiny models trained on the real GFN2-xTB data of
../finetune/finetune_data.py, registration of exported models, CSV reading."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from finetune_data import TINY_PAINN, xtb_dataset

from force2geo.pretrained import Entry, export_pretrained, register

# a .smi file: good molecules around a bad SMILES and an unsupported element
SMI = """\
O water
C1CC( broken
CCO ethanol
CBr bromomethane
C=O formaldehyde
"""
NAMES = ["water", "broken", "ethanol", "bromomethane", "formaldehyde"]
SPLIT = {"train": np.arange(8), "valid": np.arange(8, 10), "test": np.arange(10, 12)}


def train_potential(store: Path, run_dir: Path, seed: int) -> Path:
    """A tiny PaiNN trained 2 epochs on the xTB relaxation paths (its run folder)."""
    from force2geo.training import TrainConfig, fit

    config = TrainConfig(data=str(store), run_dir=str(run_dir), model="painn",
                         model_config=TINY_PAINN, epochs=2, batch_size=16, lr=5e-3,
                         device="cpu", plots=False, split_fractions=(0.8, 0.2, 0.0),
                         seed=seed)
    fit(config)
    return run_dir


def train_property(run_dir: Path, seed: int) -> Path:
    """A tiny PaiNN gap model trained 3 epochs on the xTB minima (its run folder)."""
    from force2geo.finetune.config import PropertyTrainConfig
    from force2geo.finetune.train import fit_property

    config = PropertyTrainConfig(model="painn", model_config=TINY_PAINN, epochs=3,
                                 batch_size=4, lr=5e-3, device="cpu", progress=False,
                                 seed=seed, target="gap")
    fit_property(config, xtb_dataset(), SPLIT, run_dir)
    return run_dir


def ship(folder: Path, name: str, runs: list[Path], kind: str) -> Entry:
    """Export ``runs`` into ``folder`` and register them as ``name`` of ``kind``."""
    several = len(runs) > 1
    files = tuple(export_pretrained(run, name, folder, f"{name}-{k}.pt" if several else None)
                  for k, run in enumerate(runs))
    entry = Entry(name, files, "a tiny test model", "GFN2-xTB (tblite)", kind=kind)
    register(entry, folder)
    return entry


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def number(text: str) -> float | None:
    return None if text == "" else float(text)
