"""Self-describing property-model checkpoints, and where a run's initial weights come from.

A checkpoint is one dict of tensors and plain values, written atomically by
:func:`force2geo.training.checkpoint.save_checkpoint` and read with
``torch.load(weights_only=True)``. Keys:

``format`` (``force2geo-property-checkpoint``), ``format_version``, ``kind`` (``property``:
a property predictor; ``denoising``: a coordinate-denoising pre-training), ``force2geo_version``,
``torch_version``, ``units``, ``dtype``; ``config`` (the run's config as a dict); ``model``
(:meth:`PropertyModel.description`: backbone name and full config, readout); ``model_state``;
``normalisation`` (``target``, ``mean``, ``std``, ``unit``: the standardisation of the
targets, eV); ``data`` (dataset fingerprint, part sizes, split digest); ``init`` (where the
initial weights came from); ``optimizer``, ``scheduler``, ``rng`` and ``progress`` (to
resume); ``metrics`` (the latest evaluation).

:func:`initial_model` reads any file a run may start from: a property checkpoint (the
whole model, heads and normalisation included: geometry fine-tuning), a denoising
checkpoint or an MLIP checkpoint (the backbone only, new heads: Force2Prop).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from force2geo import __version__
from force2geo.errors import InputError
from force2geo.finetune.model import PropertyModel
from force2geo.models import fairchem
from force2geo.training.checkpoint import DTYPES, rng_state, save_checkpoint
from force2geo.units import UNITS

FORMAT = "force2geo-property-checkpoint"
FORMAT_VERSION = 1
KINDS = ("property", "denoising")


def make_checkpoint(*, kind: str, config: dict, model: PropertyModel, dtype: str,
                    normalisation: dict, data: dict, init: dict, progress: dict,
                    metrics: dict | None = None, optimizer=None, scheduler=None) -> dict:
    """The checkpoint dict of a run at this moment (see the module docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "force2geo_version": __version__,
        "torch_version": str(torch.__version__),
        "units": dict(UNITS),
        "dtype": dtype,
        "config": dict(config),
        "model": model.description(),
        "model_state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "normalisation": dict(normalisation),
        "data": dict(data),
        "init": dict(init),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": rng_state(),
        "progress": dict(progress),
        "metrics": None if metrics is None else dict(metrics),
    }


def save(checkpoint: dict, path: str | os.PathLike) -> Path:
    return save_checkpoint(checkpoint, path)


def is_property_checkpoint(content: object) -> bool:
    return isinstance(content, dict) and content.get("format") == FORMAT


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a property checkpoint safely; :class:`InputError` naming the file otherwise."""
    return _checked(fairchem.read_torch_file(path), path)


def _checked(content: object, path: str | os.PathLike) -> dict:
    if not is_property_checkpoint(content):
        raise InputError(path, f"not a {FORMAT} file")
    if content.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"property checkpoint format {content['format_version']} is "
                         f"newer than this force2geo ({FORMAT_VERSION}); upgrade force2geo")
    return content


def model_from_checkpoint(checkpoint: dict, readout: str | None = None) -> PropertyModel:
    """The checkpoint's model with its weights, in its dtype, on the CPU, in eval mode.

    ``readout`` overrides the saved one; the property head's weights then fit either way.
    """
    description = dict(checkpoint["model"])
    if readout is not None:
        description["readout"] = readout
    model = PropertyModel.from_description(description).to(DTYPES[checkpoint["dtype"]])
    model.load_state_dict(checkpoint["model_state"])
    return model.eval()


def load_property_model(path: str | os.PathLike, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None) -> PropertyModel:
    """A trained :class:`PropertyModel` from a property checkpoint, for inference."""
    model = model_from_checkpoint(load_checkpoint(path))
    if dtype is not None:
        model = model.to(dtype)
    return model.to(device)


def initial_model(path: str | os.PathLike, readout: str, dtype: torch.dtype
                  ) -> tuple[PropertyModel, dict]:
    """The model a run starts from, and a description of where it came from.

    * a property checkpoint: the whole model (heads and target normalisation too);
      ``init["kind"] == "property"``.
    * a denoising checkpoint: its backbone and displacement head, a new property head;
      ``"denoising"``.
    * anything :func:`~force2geo.training.checkpoint.load_potential` reads (force2geo MLIP
      checkpoints, OC20 / released PaiNN files): its backbone, new heads; ``"mlip"``.
    """
    path = Path(path)
    content = fairchem.read_torch_file(path)
    if is_property_checkpoint(content):
        checkpoint = _checked(content, path)
        kind = checkpoint["kind"]
        if kind == "property":
            model = model_from_checkpoint(checkpoint, readout).to(dtype)
        else:
            model = PropertyModel.from_description({**checkpoint["model"], "readout": readout})
            model = model.to(dtype)
            pretrained = {k: v for k, v in checkpoint["model_state"].items()
                          if not k.startswith("property_head.") and not k.startswith("target_")}
            missing = model.load_state_dict(pretrained, strict=False).missing_keys
            lacking = [k for k in missing if not k.startswith(("property_head.", "target_"))]
            if lacking:
                raise InputError(path, f"denoising checkpoint lacks weights {lacking[:5]}")
    else:
        model, kind = PropertyModel.from_mlip(path, readout=readout, dtype=dtype), "mlip"
    return model.train(), {"path": str(path), "kind": kind, "backbone": model.backbone_name}
