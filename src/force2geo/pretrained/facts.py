"""The facts of a model card, gathered from the files themselves, never typed by hand.

:func:`collect_facts` reads a registered model's weight files (their backbone, training
config, data fingerprint, validation metrics), reopens the trajectory store they were
trained on (refused unless its fingerprint matches) to count the molecules, trajectories
and snapshots of each split part and list the InChIKeys the model saw, optionally scores
the model on the held-out test part, and reads an ``evaluate relax`` report. The result is
plain JSON; :func:`~force2geo.pretrained.card.write_model_card` renders it.

**InChIKey list.** The keys of every molecule whose snapshots trained the model or chose
its checkpoint (the train and valid parts), unique, sorted, one per line, each line ending
in a newline. Its SHA-256 is :func:`inchikey_digest`, equal to ``sha256sum`` of the list
file, so a user can check whether a molecule was seen, or that a list is the one meant.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from force2geo.atomic import file_sha256, write_text
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.models import element_names
from force2geo.pretrained.registry import read_registry, shipped_files
from force2geo.training.checkpoint import (
    checkpoint_elements,
    load_checkpoint,
    potential_from_checkpoint,
)
from force2geo.training.data import SnapshotLoader, split_trajectories
from force2geo.training.metrics import MetricSums

SEEN_PARTS = ("train", "valid")
KEYS_FILE_LIMIT = 512 * 1024  # bytes: a larger key list ships as its hash only
RELAXATION_KEYS = ("pct_T", "pct_success", "pct_div", "pct_FWT", "n_molecules", "n_scored",
                   "n_reference_failed", "oracle_failures", "mlip_status_counts")
SUMMARY_KEYS = ("mlip_steps", "rmsd_heavy_A", "e_res_kcal_per_mol")


# --------------------------------------------------------------------------- InChIKeys


def inchikey_text(keys: Iterable[str]) -> str:
    """The unique non-empty ``keys``, sorted, one per line (each line ends in a newline)."""
    return "".join(f"{key}\n" for key in sorted({k for k in keys if k}))


def inchikey_digest(keys: Iterable[str]) -> str:
    """SHA-256 (hex) of :func:`inchikey_text` of ``keys``."""
    return hashlib.sha256(inchikey_text(keys).encode("ascii")).hexdigest()


def write_inchikeys(keys: Iterable[str], folder: str | os.PathLike, name: str,
                    limit: int = KEYS_FILE_LIMIT) -> dict:
    """``{"count", "sha256", "file"}`` of the key list; the list is written to
    ``folder/NAME.inchikeys.txt`` when at most ``limit`` bytes (else ``file`` is None)."""
    text = inchikey_text(keys)
    out = {"count": text.count("\n"), "sha256": hashlib.sha256(text.encode()).hexdigest(),
           "parts": list(SEEN_PARTS), "file": None}
    if len(text.encode()) <= limit:
        out["file"] = write_text(Path(folder) / f"{name}.inchikeys.txt", text).name
    return out


# --------------------------------------------------------------------------- data


def _levels(store: TrajectoryStore, stages: Sequence[str]) -> dict[str, str]:
    """Level of theory of each stage trained on, from the store's generate.json (the stage
    name itself where the store does not say)."""
    record = store.path / "generate.json"
    levels = json.loads(record.read_text()).get("levels", {}) if record.is_file() else {}
    return {stage: levels.get(stage, "not recorded in the store") for stage in stages}


def open_training_store(checkpoint: dict, store: str | os.PathLike | None = None
                        ) -> TrajectoryStore:
    """The store the checkpoint was trained on (``store`` overrides its recorded path);
    :class:`InputError` unless its fingerprint is the recorded one."""
    data = checkpoint.get("data") or {}
    path = store or data.get("path")
    if path is None:
        raise InputError("model", "records no training data; pass the store")
    opened = TrajectoryStore(path)
    if data.get("fingerprint") not in (None, opened.fingerprint):
        raise InputError(path, f"has fingerprint {opened.fingerprint}, but the model was "
                         f"trained on {data['fingerprint']}: not the same data")
    return opened


def split_parts(checkpoint: dict, store: TrajectoryStore) -> dict[str, dict[str, np.ndarray]]:
    """Per part: ``trajectories`` with snapshots of the trained stages, and ``snapshots``."""
    config = checkpoint["config"]
    stages = tuple(config.get("stages") or ()) or None
    parts = split_trajectories(store, config.get("split"), config.get("split_fractions",
                               (0.8, 0.1, 0.1)), config.get("split_seed", 42))
    owner = store.snapshot_trajectory()
    out = {}
    for name, trajectories in parts.items():
        snapshots = store.select(stages, trajectories=trajectories)
        out[name] = {"snapshots": snapshots, "trajectories": np.unique(owner[snapshots])}
    return out


def data_facts(checkpoint: dict, store: TrajectoryStore,
               parts: dict[str, dict[str, np.ndarray]]) -> tuple[dict, list[str]]:
    """The training-data section of the card, and the InChIKeys of :data:`SEEN_PARTS`."""
    config = checkpoint["config"]
    stages = list(config.get("stages") or store.stage_names)
    keys = store.identifiers("inchikey")
    counts = {}
    for name, part in parts.items():
        part_keys = {keys[t] for t in part["trajectories"].tolist() if keys[t]}
        counts[name] = {"trajectories": int(part["trajectories"].size),
                        "molecules": len(part_keys), "snapshots": int(part["snapshots"].size)}
    seen = [keys[t] for name in SEEN_PARTS if name in parts
            for t in parts[name]["trajectories"].tolist()]
    summary = store.summary()
    split = config.get("split") or (f"random by trajectory, fractions "
                                    f"{config.get('split_fractions')}, seed "
                                    f"{config.get('split_seed')}")
    facts = {"store": str(store.path), "store_fingerprint": store.fingerprint,
             "sources": list(summary["sources"]), "stages": stages,
             "level_of_theory": _levels(store, stages), "split": split, "parts": counts,
             "elements": sorted(summary["elements"]),
             "atoms_per_molecule": summary["atoms_per_molecule"],
             "init": init_facts(config.get("init"))}
    return facts, seen


def init_facts(init: str | None) -> dict | None:
    """The checkpoint a warm-started run began from: its path, SHA-256 and, when it was an
    exported model, the name it was exported under (None for a cold start)."""
    if init is None:
        return None
    out = {"checkpoint": init, "sha256": None, "exported_as": None}
    if Path(init).is_file():
        out["sha256"] = file_sha256(init)
        export = load_checkpoint(init).get("export") or {}
        out["exported_as"] = export.get("name")
    return out


# --------------------------------------------------------------------------- errors


def split_errors(model: torch.nn.Module, store: TrajectoryStore, snapshots: np.ndarray,
                 batch_size: int = 32) -> dict[str, float]:
    """Energy and force errors of ``model`` (a Potential or an Ensemble, on the CPU) over
    ``snapshots`` of ``store``: the metrics of :mod:`force2geo.training.metrics`."""
    from force2geo.models import energy_and_forces

    dtype = next(model.parameters()).dtype
    loader = SnapshotLoader(store, snapshots, batch_size, shuffle=False, drop_uneven=False,
                            dtype=dtype)
    sums = MetricSums()
    for batch in loader:
        energy, forces = energy_and_forces(model, batch)
        sums.add(energy, forces, batch)
    result = sums.result(lambda_e=1.0, lambda_f=1.0)
    result.pop("loss")
    return result


# --------------------------------------------------------------------------- relaxation


def relaxation_facts(report_dir: str | os.PathLike) -> dict:
    """The headline numbers of a ``force2geo evaluate relax`` report folder."""
    path = Path(report_dir) / "metrics.json"
    if not path.is_file():
        raise InputError(path, "no such file (not a finished 'force2geo evaluate relax' run)")
    metrics = json.loads(path.read_text())
    config = metrics.get("config", {})
    out = {key: metrics.get(key) for key in RELAXATION_KEYS}
    out.update({key: {"median": (metrics.get(key) or {}).get("median"),
                      "mean": (metrics.get(key) or {}).get("mean")} for key in SUMMARY_KEYS})
    out.update(report=str(report_dir), oracle=(config.get("oracle") or {}).get("level"),
               molecules_from=config.get("split") or config.get("select") or "the whole store",
               start=f"snapshot {config.get('start')} of stage {config.get('stage')!r}",
               relax=config.get("relax"), paper_table3=metrics.get("paper_table3"))
    return out


# --------------------------------------------------------------------------- all


def _model_facts(entry, checkpoints: list[dict]) -> dict:
    first = checkpoints[0]
    n_parameters = sum(p.numel() for p in potential_from_checkpoint(first).parameters())
    known = [set(e) for e in map(checkpoint_elements, checkpoints) if e is not None]
    elements = sorted(set.intersection(*known)) if known else None  # as an Ensemble's
    members = [{"file": f.file, "step": (c.get("progress") or {}).get("step"),
                "seed": c["config"].get("seed"), "validation": c.get("metrics"),
                "export": c.get("export")} for f, c in zip(entry.files, checkpoints,
                                                            strict=True)]
    return {"backbone": first["model"]["name"], "config": first["model"]["config"],
            "parameters": n_parameters, "dtype": first["config"].get("dtype"),
            "elements": None if elements is None else element_names(elements).split(),
            "ensemble": entry.is_ensemble, "members": members,
            "files": [{"file": f.file, "sha256": f.sha256, "size": f.size}
                      for f in entry.files],
            "training_config": {k: v for k, v in first["config"].items()
                                if k not in ("data", "run_dir", "split", "init", "device")}}


def collect_facts(name: str, folder: str | os.PathLike | None = None,
                  evaluation: str | os.PathLike | None = None,
                  store: str | os.PathLike | None = None, commands: Sequence[str] = (),
                  test_errors: bool = True) -> tuple[dict, list[str]]:
    """The facts of registered model ``name`` in ``folder`` (see the module docstring) and
    the InChIKeys it saw. ``evaluation``: an ``evaluate relax`` report folder; ``store``
    overrides the store path the files record; ``commands``: how to reproduce it."""
    from force2geo import __version__
    from force2geo.pretrained.registry import load_pretrained

    paths = shipped_files(name, folder)  # raises when unregistered, missing or damaged
    entry = read_registry(folder)[name]
    checkpoints = [load_checkpoint(p) for p in paths]
    fingerprints = {(c.get("data") or {}).get("fingerprint") for c in checkpoints}
    if len(fingerprints) > 1:
        raise InputError(paths[0].parent, f"the members of {name} were trained on different "
                         f"data (fingerprints {sorted(map(str, fingerprints))})")
    opened = open_training_store(checkpoints[0], store)
    parts = split_parts(checkpoints[0], opened)
    data, seen = data_facts(checkpoints[0], opened, parts)
    facts = {"name": name, "description": entry.description, "license": entry.license,
             "units": entry.units, "level_of_theory": entry.level_of_theory,
             "model": _model_facts(entry, checkpoints), "training_data": data,
             "test": None, "relaxation": None, "reproduce": list(commands),
             "force2geo_version": __version__}
    if test_errors and "test" in parts and parts["test"]["snapshots"].size:
        model = load_pretrained(name, folder=folder)
        facts["test"] = split_errors(model, opened, parts["test"]["snapshots"])
    if evaluation is not None:
        facts["relaxation"] = relaxation_facts(evaluation)
    return facts, seen
