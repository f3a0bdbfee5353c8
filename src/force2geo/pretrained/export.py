"""Training checkpoints stripped to shippable inference weights.

An exported file is a force2geo checkpoint (same ``format``, read by
:func:`~force2geo.training.checkpoint.load_potential` and usable as ``force2geo train
--init``) holding only what inference and provenance need: the backbone description, the
weights in float32 (the EMA weights when the run kept an average; the reference energies
stay float64), the training elements, the training config (with ``dtype`` float32),
units, the data fingerprint and counts, the last validation metrics, the step and epoch,
and an ``export`` record (source file and its SHA-256, which weights, versions of
training and export). No optimizer, scheduler, RNG or loader state: it cannot be
resumed, and is ~3x smaller.
Property checkpoints of ``force2geo finetune`` are exported alike by
:mod:`force2geo.pretrained.properties`.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from force2geo import __version__
from force2geo.errors import InputError
from force2geo.pretrained.registry import WeightFile, run_checkpoint
from force2geo.training.checkpoint import (
    FORMAT,
    FORMAT_VERSION,
    load_checkpoint,
    potential_from_checkpoint,
    save_checkpoint,
)

KIND = "inference"


def inference_checkpoint(checkpoint: dict, name: str, source: dict,
                         use_ema: bool = True) -> dict:
    """The exported dict of a training ``checkpoint`` (see the module docstring);
    ``source`` describes the file it came from (``file``, ``sha256``)."""
    ema_used = use_ema and checkpoint.get("ema") is not None
    potential = potential_from_checkpoint(checkpoint, use_ema=ema_used).float()
    state = {key: value.detach().clone().contiguous()
             for key, value in potential.state_dict().items()}
    progress = checkpoint.get("progress") or {}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": KIND,
        "force2geo_version": __version__,
        "torch_version": str(torch.__version__),
        "units": dict(checkpoint["units"]),
        "config": {**checkpoint["config"], "dtype": "float32"},
        "model": checkpoint["model"],
        "model_state": state,
        "atom_refs": potential.atom_refs.detach().clone(),
        "elements": None if potential.elements is None else list(potential.elements),
        "ema": None,
        "progress": {key: progress[key] for key in ("step", "epoch") if key in progress},
        "data": dict(checkpoint.get("data") or {}),
        "metrics": None if checkpoint.get("metrics") is None else dict(checkpoint["metrics"]),
        "export": {
            "name": name, **source, "weights": "ema" if ema_used else "plain",
            "trained_with": {"force2geo": checkpoint.get("force2geo_version"),
                             "torch": checkpoint.get("torch_version"),
                             "dtype": checkpoint["config"].get("dtype")},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def export_pretrained(source: str | os.PathLike, name: str, out_folder: str | os.PathLike,
                      file_name: str | None = None, use_ema: bool = True) -> WeightFile:
    """Export the checkpoint ``source`` (a file, or a run folder: its ``best.pt``, else
    ``last.pt``) as inference weights ``out_folder/file_name`` (default ``NAME.pt``),
    written atomically (left as it is when it already holds this very export). Returns the
    file's name, SHA-256 and size in bytes.

    A property checkpoint of ``force2geo finetune`` (or its run folder) is exported by
    :func:`~force2geo.pretrained.properties.export_property` (float32 weights, target
    normalisation, config; ``use_ema`` does not apply). Refuses a checkpoint that is
    neither (the paper's released file needs no export: name it directly).
    """
    from force2geo.atomic import file_sha256
    from force2geo.pretrained.properties import export_property, is_property_file

    path = run_checkpoint(source)
    target = Path(out_folder) / (file_name or f"{name}.pt")
    if is_property_file(path):
        return export_property(path, name, target)
    checkpoint = load_checkpoint(path)
    if checkpoint.get("kind") == KIND:
        raise InputError(path, "is already an exported model")
    info = {"source": os.fspath(path), "source_sha256": file_sha256(path)}
    if not _same_export(target, info["source_sha256"], use_ema, checkpoint):
        target.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(inference_checkpoint(checkpoint, name, info, use_ema), target)
    return WeightFile(file=target.name, sha256=file_sha256(target),
                      size=target.stat().st_size)


def _same_export(target: Path, source_sha256: str, use_ema: bool, checkpoint: dict) -> bool:
    """Whether ``target`` already holds this export (same source file, same weights), so
    that a rerun keeps its bytes and SHA-256 (and the evaluations keyed on them)."""
    if not target.is_file():
        return False
    try:
        existing = load_checkpoint(target)
    except InputError:
        return False
    record = existing.get("export") or {}
    weights = "ema" if use_ema and checkpoint.get("ema") is not None else "plain"
    return (existing.get("kind") == KIND and record.get("source_sha256") == source_sha256
            and record.get("weights") == weights)
