"""The training configuration: one frozen, JSON-serialisable dataclass.

Defaults follow the paper (A.4): Adam (beta 0.9, 0.999), learning rate 1e-3, 64 molecules
per batch, ReduceLROnPlateau with a patience of 2 epochs. The paper gives no loss weights;
the defaults here (``lambda_e=1``, ``lambda_f=10``) balance the gradients of the two terms
near the paper's accuracy: an L1 energy term pulls with a constant 1 per eV/atom, a squared
force term with ``2 * lambda_f * |dF|``, about 1 at ``|dF|`` = 50 meV/Å.

Energy loss (``energy_loss``):

* ``"per_atom"`` (default): ``|E_hat - E| / N_atoms`` in eV/atom, the paper's per-atom
  target. The model still predicts the total energy ``E_total`` (eV); only the loss divides.
* ``"total"``: ``|E_hat - E|`` in eV per molecule.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from force2geo.data.splits import check_fractions
from force2geo.models import MODELS

ENERGY_LOSSES = ("per_atom", "total")
SCHEDULES = ("plateau", "cosine")
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run; ``run_dir`` is where it writes.

    Data: ``data`` (store folder), ``stages`` (snapshot stages to train on; empty = all),
    ``split`` (a split file of trajectory indices, see :mod:`force2geo.data.splits`) or,
    when None, a random split by trajectory with ``split_fractions`` and ``split_seed``.
    Batches: ``batch_size`` molecules (snapshots) per batch *per process*, at most
    ``max_atoms`` atoms per batch when set. Optimisation: ``epochs`` (and ``max_steps``,
    a cap on optimizer steps, and ``max_minutes``, on the wall-clock minutes of the training
    loop in this process, when set), ``lr``, ``grad_clip`` (max global grad norm; None = off),
    ``ema_decay`` (None = no EMA; else the validation and ``best.pt`` use EMA weights),
    ``plateau_patience`` / ``plateau_factor`` (epochs without validation improvement before
    the learning rate is multiplied by the factor) when ``schedule`` is ``"plateau"``; with
    ``"cosine"`` the learning rate instead falls every step from ``lr`` to ``lr * lr_floor``
    along a half cosine over ``schedule_steps`` steps (default: ``epochs`` epochs;
    ``max_steps`` and ``max_minutes`` only cut the run short), after ``warmup_steps`` of
    linear warm-up. ``device``: "auto", "cpu", "cuda" or
    "cuda:N"; ``dtype``: "float32" or "float64" (energies are float64 either way).
    ``init``: a checkpoint of an earlier run whose weights (its EMA weights when it kept
    them) and reference energies start this run (warm start; optimizer, schedule and data
    position start afresh); its backbone must be the one ``model``/``model_config`` name.
    Logging: a train record every ``log_every`` steps, ``last.pt`` every ``ckpt_every``
    steps and at each epoch end; PNG plots at the end unless ``plots`` is False.
    """

    data: str
    run_dir: str
    model: str = "painn"
    model_config: dict = field(default_factory=dict)
    stages: tuple[str, ...] = ()
    split: str | None = None
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_seed: int = 42
    epochs: int = 10
    max_steps: int | None = None
    max_minutes: float | None = None
    batch_size: int = 64
    max_atoms: int | None = None
    lr: float = 1e-3
    lambda_e: float = 1.0
    lambda_f: float = 10.0
    energy_loss: str = "per_atom"
    plateau_patience: int = 2
    plateau_factor: float = 0.8
    schedule: str = "plateau"
    lr_floor: float = 0.01
    warmup_steps: int = 0
    schedule_steps: int | None = None
    ema_decay: float | None = None
    grad_clip: float | None = 10.0
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    log_every: int = 10
    ckpt_every: int = 500
    plots: bool = True
    init: str | None = None

    def __post_init__(self) -> None:
        # Normalise containers so that a config read back from JSON compares equal.
        object.__setattr__(self, "stages", tuple(self.stages))
        object.__setattr__(self, "split_fractions", tuple(float(f) for f in self.split_fractions))
        object.__setattr__(self, "model_config", dict(self.model_config))
        object.__setattr__(self, "data", os.fspath(self.data))
        object.__setattr__(self, "run_dir", os.fspath(self.run_dir))
        self._check()

    def _check(self) -> None:
        """Raise ValueError naming the first field with an impossible value."""
        if self.model not in MODELS:
            raise ValueError(f"model: unknown {self.model!r}; known: {sorted(MODELS)}")
        model_fields = {f.name for f in dataclasses.fields(MODELS[self.model].Config)}
        unknown = sorted(set(self.model_config) - model_fields)
        if unknown:
            raise ValueError(f"model_config: {self.model} has no option(s) {unknown}; "
                             f"known: {sorted(model_fields)}")
        check_fractions(self.split_fractions)
        positive = {"epochs": self.epochs, "batch_size": self.batch_size,
                    "log_every": self.log_every, "ckpt_every": self.ckpt_every,
                    "plateau_patience": self.plateau_patience + 1}
        for name, value in positive.items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be a positive integer, got {value!r}")
        for name in ("max_steps", "max_atoms"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}: must be a positive integer or None, got {value!r}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes: must be positive or None, got {self.max_minutes}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr: must be positive, got {self.lr}")
        if self.lambda_e < 0 or self.lambda_f < 0 or self.lambda_e + self.lambda_f == 0:
            raise ValueError(f"lambda_e, lambda_f: must be >= 0 and not both 0, got "
                             f"{self.lambda_e}, {self.lambda_f}")
        if self.energy_loss not in ENERGY_LOSSES:
            raise ValueError(f"energy_loss: must be one of {ENERGY_LOSSES}, got "
                             f"{self.energy_loss!r}")
        if not 0 < self.plateau_factor < 1:
            raise ValueError(f"plateau_factor: must be in (0, 1), got {self.plateau_factor}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.lr_floor <= 1:
            raise ValueError(f"lr_floor: must be in [0, 1], got {self.lr_floor}")
        if self.schedule_steps is not None and (not isinstance(self.schedule_steps, int)
                                                or self.schedule_steps < 1):
            raise ValueError(f"schedule_steps: must be a positive integer or None, got "
                             f"{self.schedule_steps!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be an integer >= 0, got {self.warmup_steps!r}")
        if self.ema_decay is not None and not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay: must be in (0, 1) or None, got {self.ema_decay}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"grad_clip: must be positive or None, got {self.grad_clip}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype: must be one of {DTYPES}, got {self.dtype!r}")
        if not (self.device in ("auto", "cpu") or self.device.startswith("cuda")):
            raise ValueError(f"device: must be auto, cpu, cuda or cuda:N, got {self.device!r}")

    # -- serialisation
    def to_dict(self) -> dict:
        """Plain JSON types only (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["stages"] = list(self.stages)
        out["split_fractions"] = list(self.split_fractions)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; raises ValueError on unknown keys."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)
