"""Shipped property models: resolving, loading, ensembles and export.

A property model is a :class:`~force2geo.finetune.model.PropertyModel` saved by
``force2geo finetune`` (a ``force2geo-property-checkpoint`` file of kind ``property``:
weights, target normalisation, the run's config). It is shipped like a potential: an
exported file in the weights folder, registered with ``kind: "property"`` (see
:mod:`.registry`).

* :func:`load_property_model` turns any way of naming one into a ready model: None (the
  default :data:`~force2geo.pretrained.registry.DEFAULT_PROPERTY`), a shipped name, a
  property checkpoint (``best.pt`` of ``force2geo finetune``) or its run folder, an
  exported file, or a list of them (a :class:`PropertyEnsemble`).
* :func:`property_identity`: what a spec names (files, SHA-256, target, geometries), for
  run records.
* :func:`export_property`: a property checkpoint stripped to float32 inference weights,
  normalisation and config (called by :func:`~force2geo.pretrained.export_pretrained`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch import Tensor, nn

from force2geo import __version__
from force2geo.errors import InputError
from force2geo.pretrained.ensemble import ensemble_members
from force2geo.pretrained.registry import WeightFile, model_files

EXPORT_KEYS = ("format", "format_version", "kind", "units", "config", "model",
               "normalisation", "data", "init", "metrics")


class PropertyEnsemble(nn.Module):
    """The mean of several property models (at least two) of the same target.

    Members of different dtypes are all cast to float64 (they see the same positions).
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = ensemble_members(members)
        self.needs_2d = any(m.needs_2d for m in members)

    def forward(self, pb) -> Tensor:
        """Mean property of every molecule of the PropertyBatch ``pb``, ``[n_systems]`` eV."""
        return self.predict(pb)[0]

    @torch.no_grad()
    def predict(self, pb) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, both ``[n_systems]`` eV: the members' mean and their population
        standard deviation (zero when they agree)."""
        values = torch.stack([m(pb).to(torch.float64) for m in self.members])
        return values.mean(dim=0), values.std(dim=0, correction=0)


def property_files(spec: str | os.PathLike | Sequence | None = None,
                   folder: str | os.PathLike | None = None) -> list[Path]:
    """The files a property-model ``spec`` names (see :func:`load_property_model`);
    shipped ones checked against the registry's SHA-256."""
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    if not items:
        raise InputError("property model", "an empty list of models")
    return [p for item in items for p in model_files(item, folder, kind="property")]


def read_property_checkpoint(path: str | os.PathLike) -> dict:
    """A property checkpoint of kind ``property`` (not a denoising pre-training, whose
    property head is untrained); :class:`InputError` naming the file otherwise."""
    from force2geo.finetune.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(path)
    if checkpoint.get("kind") != "property":
        raise InputError(path, f"a {checkpoint.get('kind')!r} checkpoint, not a trained "
                         "property model (its property head is untrained)")
    return checkpoint


def load_property_model(spec: str | os.PathLike | Sequence | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                        folder: str | os.PathLike | None = None):
    """The property model ``spec`` names, ready for inference (eval mode, on ``device``,
    in ``dtype``, default: the stored one).

    ``spec``: None (the shipped default property model), a shipped property model's name,
    a property checkpoint of ``force2geo finetune`` or its run folder (``best.pt``), an
    exported file, or a list of these, which makes a :class:`PropertyEnsemble`. A shipped
    name with several files is an ensemble too. Members must predict the same target.
    """
    from force2geo.finetune.checkpoint import model_from_checkpoint

    checkpoints = [(p, read_property_checkpoint(p)) for p in property_files(spec, folder)]
    targets = {c["normalisation"]["target"] for _, c in checkpoints}
    if len(targets) > 1:
        raise InputError("property model", f"the members predict different targets "
                         f"({', '.join(sorted(targets))}): an ensemble needs one")
    members = []
    for _, checkpoint in checkpoints:
        model = model_from_checkpoint(checkpoint)
        members.append((model if dtype is None else model.to(dtype)).to(device))
    return members[0] if len(members) == 1 else PropertyEnsemble(members).eval()


def property_identity(spec: str | os.PathLike | Sequence | None = None,
                      folder: str | os.PathLike | None = None) -> dict:
    """What the property-model ``spec`` names, for run records: the spec as given, the
    ``target`` and its ``unit``, and per file its absolute path, SHA-256, the geometry it
    was trained and validated on, and its best validation / test MAE (eV) when recorded."""
    from force2geo.atomic import file_sha256

    files = []
    for path in property_files(spec, folder):
        checkpoint = read_property_checkpoint(path)
        config, metrics = checkpoint["config"], checkpoint.get("metrics") or {}
        files.append({"path": str(path.resolve()), "sha256": file_sha256(path),
                      "backbone": checkpoint["model"]["backbone"],
                      "train_geometry": ("mixed" if config.get("geometry_finetune")
                                         else config.get("train_geometry")),
                      "eval_geometry": config.get("eval_geometry"),
                      "valid_mae": metrics.get("valid_mae"), "test_mae": metrics.get("test_mae"),
                      "export": checkpoint.get("export")})
        normalisation = checkpoint["normalisation"]
    items = list(spec) if isinstance(spec, (list, tuple)) else [spec]
    given = [None if s is None else os.fspath(s) for s in items]
    return {"spec": given if isinstance(spec, (list, tuple)) else given[0],
            "target": normalisation["target"], "unit": normalisation.get("unit", "eV"),
            "files": files}


def is_property_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a property checkpoint (any kind) rather than a potential."""
    from force2geo.finetune.checkpoint import is_property_checkpoint
    from force2geo.models import fairchem

    return is_property_checkpoint(fairchem.read_torch_file(path))


def inference_property_checkpoint(checkpoint: dict, name: str, source: dict) -> dict:
    """The exported dict of a property ``checkpoint``: float32 weights, normalisation,
    config, data fingerprint and metrics; no optimizer, scheduler or RNG state.
    ``source`` describes the file it came from (``source``, ``source_sha256``)."""
    from force2geo.finetune.checkpoint import model_from_checkpoint

    model = model_from_checkpoint(checkpoint).float()
    progress = checkpoint.get("progress") or {}
    return {
        **{key: checkpoint.get(key) for key in EXPORT_KEYS},
        "force2geo_version": __version__,
        "torch_version": str(torch.__version__),
        "dtype": "float32",
        "model_state": {k: v.detach().clone().contiguous()
                        for k, v in model.state_dict().items()},
        "optimizer": None, "scheduler": None, "rng": None,
        "progress": {key: progress[key] for key in ("step", "epoch", "best_epoch")
                     if key in progress},
        "export": {
            "name": name, **source, "weights": "plain",
            "trained_with": {"force2geo": checkpoint.get("force2geo_version"),
                             "torch": checkpoint.get("torch_version"),
                             "dtype": checkpoint.get("dtype")},
            "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
    }


def export_property(path: Path, name: str, target: Path) -> WeightFile:
    """Export the property checkpoint ``path`` to ``target`` (atomically; left as it is
    when it already holds the export of this very source file). Refuses an exported file
    and a denoising checkpoint."""
    from force2geo.atomic import file_sha256
    from force2geo.training.checkpoint import save_checkpoint

    checkpoint = read_property_checkpoint(path)
    if checkpoint.get("export") is not None:
        raise InputError(path, "is already an exported model")
    source = {"source": os.fspath(path), "source_sha256": file_sha256(path)}
    if not _same_export(target, source["source_sha256"]):
        target.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(inference_property_checkpoint(checkpoint, name, source), target)
    return WeightFile(file=target.name, sha256=file_sha256(target),
                      size=target.stat().st_size)


def _same_export(target: Path, source_sha256: str) -> bool:
    """Whether ``target`` already holds the export of the file with ``source_sha256``."""
    if not target.is_file():
        return False
    try:
        existing = read_property_checkpoint(target)
    except InputError:
        return False
    return (existing.get("export") or {}).get("source_sha256") == source_sha256
