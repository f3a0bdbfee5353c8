"""The configuration of a property-training run: one frozen, JSON-serialisable dataclass.

Defaults follow the paper's fine-tuning recipe (A.4): Adam (beta 0.9, 0.999), learning
rate 5e-4, 256 molecules per batch, StepLR with step 40 epochs and gamma 0.5; and its
geometry fine-tuning (§2.4, A.5.3): noise std 0.1 Å, geometry-loss weight 0.1, half of
the inputs noisy ground truths.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from force2geo.finetune.dataset import GEOMETRIES
from force2geo.finetune.heads import READOUTS
from force2geo.finetune.model import BACKBONES

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class PropertyTrainConfig:
    """Everything that defines a property-training run.

    Model: ``model`` (a key of :data:`force2geo.finetune.model.BACKBONES`), ``model_config``
    (fields of its config), ``readout`` (``mean`` or ``sum`` over atoms). ``init``: None
    (random weights), an MLIP or denoising checkpoint (its backbone, new heads:
    Force2Prop), or a property checkpoint (the whole model: geometry fine-tuning); with an
    ``init`` the architecture is the file's and ``model`` / ``model_config`` are unused.
    ``freeze_backbone``: train the heads only.

    Data: ``target`` (a target name of the dataset, eV); ``train_geometry`` and
    ``eval_geometry`` (one of :data:`~force2geo.finetune.dataset.GEOMETRIES`) the inputs
    of training and of validation / test; ``train_fraction`` of the training part, a seeded
    subsample (the data-size sweep). ``geometry_finetune``: train on mixed inputs (noisy
    ground truth with probability ``p_ground_truth``, else a frame of the MLIP
    trajectory; see :mod:`.geometry`) with loss ``L1 + geo_weight * L_geo`` (Eq. 8-9);
    ``train_geometry`` is then unused.

    Optimisation: ``epochs``, ``max_minutes`` (wall-clock budget of the whole run, resumed
    processes included), ``max_steps`` (optimizer steps), ``batch_size`` molecules, ``lr``,
    ``lr_step`` / ``lr_gamma`` (StepLR per epoch), ``seed`` (initialisation, batch order,
    noise, subsample). ``device``: auto, cpu, cuda, cuda:N; ``dtype``: float32 / float64.
    ``ckpt_every``: also save ``last.pt`` every so many steps (None: at epoch ends only).
    ``progress``: show a progress bar (on a terminal).
    """

    model: str = "painn"
    model_config: dict = field(default_factory=dict)
    readout: str = "mean"
    init: str | None = None
    freeze_backbone: bool = False
    target: str = "gap"
    train_geometry: str = "ground_truth"
    eval_geometry: str = "ground_truth"
    train_fraction: float = 1.0
    geometry_finetune: bool = False
    noise_std: float = 0.1
    p_ground_truth: float = 0.5
    geo_weight: float = 0.1
    epochs: int = 100
    max_minutes: float | None = None
    max_steps: int | None = None
    batch_size: int = 256
    lr: float = 5e-4
    lr_step: int = 40
    lr_gamma: float = 0.5
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    ckpt_every: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_config", dict(self.model_config))
        if self.init is not None:
            object.__setattr__(self, "init", os.fspath(self.init))
        self._check()

    def _check(self) -> None:
        """Raise ValueError naming the first field with an impossible value."""
        if self.model not in BACKBONES:
            raise ValueError(f"model: unknown {self.model!r}; known: {sorted(BACKBONES)}")
        known = {f.name for f in dataclasses.fields(BACKBONES[self.model].cls.Config)}
        if self.init is None and set(self.model_config) - known:
            raise ValueError(f"model_config: {self.model} has no option(s) "
                             f"{sorted(set(self.model_config) - known)}; known: {sorted(known)}")
        if self.readout not in READOUTS:
            raise ValueError(f"readout: must be one of {READOUTS}, got {self.readout!r}")
        for name in ("train_geometry", "eval_geometry"):
            if getattr(self, name) not in GEOMETRIES:
                raise ValueError(f"{name}: must be one of {GEOMETRIES}, got "
                                 f"{getattr(self, name)!r}")
        for name in ("epochs", "batch_size", "lr_step"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        for name in ("max_steps", "ckpt_every"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
        ranges = {"train_fraction": (0.0, 1.0, False), "p_ground_truth": (0.0, 1.0, True),
                  "lr_gamma": (0.0, 1.0, False)}
        for name, (low, high, low_ok) in ranges.items():
            value = getattr(self, name)
            if not ((low <= value if low_ok else low < value) and value <= high):
                raise ValueError(f"{name}: must lie in {'[' if low_ok else '('}{low}, {high}], "
                                 f"got {value}")
        for name in ("noise_std", "geo_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes: must be positive or None, got {self.max_minutes}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {DTYPES}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    # -- serialisation
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PropertyTrainConfig:
        """Inverse of :meth:`to_dict`; raises ValueError on unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown property-training option(s) {unknown}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> PropertyTrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes) -> PropertyTrainConfig:
        return dataclasses.replace(self, **changes)
