"""Self-describing, safely loadable training checkpoints.

A checkpoint is one explicit dict of tensors and plain Python values (no pickled objects),
saved with ``torch.save`` under a temporary name, synced and renamed (a crash leaves the
previous checkpoint intact), and read with ``torch.load(weights_only=True)``, which runs no
code from the file. Keys:

``format``, ``format_version``, ``force2geo_version``, ``torch_version``, ``units``;
``config`` (the :class:`~force2geo.training.config.TrainConfig` as a dict); ``model``
(backbone ``name`` and its full ``config``); ``model_state`` (the Potential's weights);
``atom_refs`` (``[119]`` eV float64, index = atomic number); ``elements`` (the atomic
numbers of the training data, ascending; older files lack it, see
:func:`checkpoint_elements`); ``ema`` (or None);
``optimizer``; ``scheduler``; ``rng`` (torch, CUDA, numpy, python); ``loader`` (position);
``progress`` (step, epoch, best metric, ...); ``data`` (store path and fingerprint,
snapshot counts); ``metrics`` (the last validation metrics, or None).
"""

from __future__ import annotations

import dataclasses
import os
import random
from pathlib import Path

import numpy as np
import torch

from force2geo import __version__
from force2geo.errors import InputError
from force2geo.models import MODELS, Potential, build_backbone, elements_from_refs, fairchem
from force2geo.units import UNITS

FORMAT = "force2geo-checkpoint"
FORMAT_VERSION = 1
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------- RNG


def rng_state() -> dict:
    """The states of torch (CPU and CUDA), numpy's global and python's ``random`` RNGs,
    as tensors and plain values."""
    # numpy's *global* legacy RNG is what third-party code draws from; force2geo itself
    # uses seeded Generators. Its state is only reachable through the legacy API.
    kind, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    legacy = (np_state["kind"], np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
              np_state["has_gauss"], np_state["cached"])
    np.random.set_state(legacy)  # noqa: NPY002  (see rng_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# --------------------------------------------------------------------------- write


def model_description(name: str, model_config: dict) -> dict:
    """``{"name", "config"}`` with every field of the backbone's config filled in, so the
    checkpoint rebuilds the same model even if the defaults change later."""
    config = MODELS[name].Config(**model_config)
    return {"name": name, "config": dataclasses.asdict(config)}


def make_checkpoint(*, config, potential: Potential, optimizer, scheduler, ema, loader,
                    progress: dict, data: dict, metrics: dict | None = None) -> dict:
    """The checkpoint dict of a training run at this moment (see the module docstring)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "force2geo_version": __version__,
        "torch_version": str(torch.__version__),  # TorchVersion is not a plain str
        "units": dict(UNITS),
        "config": config.to_dict(),
        "model": model_description(config.model, config.model_config),
        "model_state": potential.state_dict(),
        "atom_refs": potential.atom_refs.detach().cpu().clone(),
        "elements": None if potential.elements is None else list(potential.elements),
        "ema": None if ema is None else ema.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "loader": loader.state_dict(),
        "progress": dict(progress),
        "data": dict(data),
        "metrics": None if metrics is None else dict(metrics),
    }


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> Path:
    """Write ``checkpoint`` to ``path`` atomically (temporary name, fsync, rename)."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as handle:
            torch.save(checkpoint, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


# --------------------------------------------------------------------------- read


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint safely (``weights_only=True``: tensors and plain values only).

    Raises :class:`InputError` naming the file when it is missing, damaged, holds
    anything but tensors and plain values, or is not a force2geo checkpoint.
    """
    path = Path(path)
    checkpoint = fairchem.read_torch_file(path)  # weights-only: tensors and plain values
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise InputError(path, f"not a {FORMAT} file")
    if checkpoint.get("format_version", 0) > FORMAT_VERSION:
        raise InputError(path, f"checkpoint format {checkpoint['format_version']} is newer "
                         f"than this force2geo ({FORMAT_VERSION}); upgrade force2geo")
    return checkpoint


def checkpoint_elements(checkpoint: dict) -> tuple[int, ...] | None:
    """The atomic numbers a checkpoint's model was trained on: its ``elements`` record, or,
    in a file written before checkpoints recorded them, the elements with a non-zero
    reference energy (the fit gives 0 to elements absent from the training data; None
    when all are 0)."""
    if "elements" in checkpoint:
        elements = checkpoint["elements"]
        return None if elements is None else tuple(int(z) for z in elements)
    return elements_from_refs(checkpoint["atom_refs"])


def potential_from_checkpoint(checkpoint: dict, use_ema: bool = True) -> Potential:
    """The Potential a checkpoint describes, with its weights (the EMA weights when the
    run kept an average and ``use_ema``) and training elements, in the run's dtype, on
    the CPU, in eval mode."""
    description = checkpoint["model"]
    backbone = build_backbone(description["name"], **description["config"])
    potential = Potential(backbone, checkpoint["atom_refs"], checkpoint_elements(checkpoint))
    dtype = DTYPES[checkpoint["config"]["dtype"]]
    potential = potential.to(dtype)
    ema = checkpoint.get("ema")
    state = ema["model"] if use_ema and ema is not None else checkpoint["model_state"]
    potential.load_state_dict(state)
    return potential.eval()


def load_potential(path: str | os.PathLike, device: str | torch.device = "cpu",
                   dtype: torch.dtype | None = None, use_ema: bool = True) -> Potential:
    """A trained :class:`~force2geo.models.Potential` from a checkpoint file, for inference.

    ``dtype`` defaults to the dtype the model was trained in; ``use_ema`` picks the
    averaged weights when the run kept them. The reference energies stay float64.
    A PaiNN checkpoint in the OC20 / fairchem layout or the paper's released foundation
    model is recognised by its keys and loaded by
    :func:`~force2geo.models.fairchem.load_fairchem_painn` (float32 unless ``dtype``).
    """
    if fairchem.is_fairchem_checkpoint(path):
        return fairchem.load_fairchem_painn(path, dtype=dtype or torch.float32, device=device)
    potential = potential_from_checkpoint(load_checkpoint(path), use_ema)
    if dtype is not None:
        potential = potential.to(dtype)
    return potential.to(device)
