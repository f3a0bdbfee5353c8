"""Train/valid/test splits of a property dataset, with leakage removal (paper A.3).

The split rules are :mod:`force2geo.data.splits`' (random: a seeded permutation;
scaffold: Bemis-Murcko groups, largest first). Molecules of the valid and test parts
that occur in the MLIP's pretraining data (same InChIKey, or same CID where both know
it) are dropped, as the paper drops Molecule3D test molecules found in PubChemQCR.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from force2geo.data.splits import (
    DEFAULT_FRACTIONS,
    SPLIT_METHODS,
    load_split,
    random_split,
    remove_leakage,
    scaffold_split,
)
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.finetune.dataset import PropertyDataset

log = logging.getLogger(__name__)

Pretraining = TrajectoryStore | str | os.PathLike | Sequence[str]


def leakage_mask(dataset: PropertyDataset, pretraining: Pretraining,
                 first_block: bool = False) -> np.ndarray:
    """``[n]`` bool: True for molecules of ``dataset`` absent from ``pretraining`` (a
    store, its path, or a list of InChIKeys), by InChIKey and CID (see
    :func:`force2geo.data.splits.remove_leakage`; ``first_block`` compares only the
    14-character connectivity block)."""
    if isinstance(pretraining, (str, os.PathLike)):
        pretraining = TrajectoryStore(pretraining)
    if isinstance(pretraining, TrajectoryStore):
        return remove_leakage(dataset.inchikeys, pretraining.identifiers("inchikey"),
                              dataset.cids, pretraining.cids(), first_block=first_block)
    return remove_leakage(dataset.inchikeys, list(pretraining), first_block=first_block)


def split_dataset(dataset: PropertyDataset, method: str = "random",
                  fractions: Sequence[float] = DEFAULT_FRACTIONS, seed: int = 42, *,
                  pretraining: Pretraining | None = None,
                  first_block: bool = False) -> dict[str, np.ndarray]:
    """``{"train", "valid", "test"}`` -> sorted int64 dataset indices.

    ``method``: ``random`` (uses ``seed``) or ``scaffold`` (deterministic, from the
    SMILES). With ``pretraining``, valid and test molecules found there are removed
    (train keeps them: they leak nothing into the evaluation); a scaffold split then
    places every scaffold group holding a pretraining molecule in train, so that valid
    and test are drawn from the leakage-free groups alone (see
    :func:`force2geo.data.splits.scaffold_split`, ``train_only``).
    """
    keep = None if pretraining is None else leakage_mask(dataset, pretraining, first_block)
    if method == "random":
        split = random_split(len(dataset), fractions, seed)
    elif method == "scaffold":
        split = scaffold_split(dataset.smiles, fractions,
                               train_only=None if keep is None else ~keep)
    else:
        raise ValueError(f"unknown split method {method!r}; choose from "
                         f"{', '.join(SPLIT_METHODS)}")
    if keep is not None:
        for part in ("valid", "test"):
            dropped = int((~keep[split[part]]).sum())
            if dropped:
                log.info("%s: %d molecule(s) also in the pretraining data removed", part,
                         dropped)
            split[part] = split[part][keep[split[part]]]
    return split


def split_file_parts(path: str | os.PathLike, dataset: PropertyDataset, *,
                     store_only: bool = False) -> dict[str, np.ndarray]:
    """The parts of a split file as sorted int64 dataset indices.

    The file splits either the store the dataset was built from (trajectory indices, e.g.
    the MLIP's own split; molecules the dataset left out are dropped) or, unless
    ``store_only``, the dataset itself (``meta.index == "dataset"``). InputError naming the
    file when it was made for another store or dataset.
    """
    parts, meta = load_split(path)
    if meta.get("index") == "dataset":
        if store_only:
            raise InputError(path, "needs a split file of the dataset's store (trajectory "
                             "indices), not of the dataset")
        if meta.get("dataset_fingerprint") != dataset.fingerprint:
            raise InputError(path, "was made for another dataset")
        return parts
    source = dataset.meta.get("source", {}).get("store_fingerprint")
    if meta.get("store_fingerprint") not in (None, source):
        raise InputError(path, f"splits a store with fingerprint {meta.get('store_fingerprint')}"
                         f", but the dataset was built from {source}")
    position = {int(j): i for i, j in enumerate(dataset.source_indices) if j >= 0}
    return {k: np.array(sorted(position[int(j)] for j in v if int(j) in position),
                        dtype=np.int64) for k, v in parts.items()}


def split_file_part(spec: str, dataset: PropertyDataset, *, store_only: bool = False
                    ) -> np.ndarray:
    """``FILE:PART`` -> that part of :func:`split_file_parts` (InputError for no such part)."""
    path, _, part = spec.rpartition(":")
    parts = split_file_parts(path or spec, dataset, store_only=store_only)
    if part not in parts:
        raise InputError(path, f"no part {part!r}; it holds {', '.join(parts)}")
    return parts[part]


def split_meta(dataset: PropertyDataset, method: str, **settings) -> dict:
    """The ``meta`` of a split file of ``dataset`` (for
    :func:`force2geo.data.splits.save_split`): method, settings, dataset fingerprint."""
    return {"method": method, **settings, "index": "dataset",
            "dataset_fingerprint": dataset.fingerprint, "n_molecules": len(dataset)}
