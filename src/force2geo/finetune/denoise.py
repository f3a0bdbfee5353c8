"""Coordinate-denoising pre-training (Zaidi et al. 2022), the paper's alternative to
supervised MLIP pre-training (A.5.2).

Equilibrium geometries ``x`` are perturbed, ``x~ = x + sigma * eps`` with ``eps ~ N(0, 1)``
per coordinate and ``sigma = noise_std`` Å, and the model's displacement head predicts
``eps`` for every atom (mean squared error). The equilibrium geometries are the ground
truths of a :class:`~force2geo.finetune.dataset.PropertyDataset` or the last frame of each
trajectory of a :class:`~force2geo.data.store.TrajectoryStore` (its relaxed minimum).

``pretrain_denoising(config, data, run_dir)`` writes ``config.json``, ``metrics.jsonl``
(mean training loss per epoch), ``last.pt``, ``best.pt`` (lowest epoch loss) and
``result.json`` in ``run_dir``; the checkpoints are property checkpoints of kind
``denoising``, so ``PropertyTrainConfig(init=RUN_DIR/best.pt)`` fine-tunes their backbone
with a new property head, as it does an MLIP's. Resumable like :func:`fit_property`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from force2geo import atomic
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.finetune import checkpoint as ckpt
from force2geo.finetune import runs
from force2geo.finetune.config import DTYPES as DTYPE_NAMES
from force2geo.finetune.dataset import PropertyBatch, PropertyDataset
from force2geo.finetune.losses import denoising_loss
from force2geo.finetune.model import BACKBONES, PropertyModel
from force2geo.models import Batch
from force2geo.training.checkpoint import DTYPES, restore_rng
from force2geo.training.distributed import resolve_device


@dataclass(frozen=True)
class DenoiseConfig:
    """A denoising pre-training run. ``noise_std`` sigma in Å (Zaidi et al.: 0.04 Å);
    the other fields mean what they mean in
    :class:`~force2geo.finetune.config.PropertyTrainConfig`."""

    model: str = "painn"
    model_config: dict = field(default_factory=dict)
    noise_std: float = 0.04
    epochs: int = 10
    max_minutes: float | None = None
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 5e-4
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    ckpt_every: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_config", dict(self.model_config))
        if self.model not in BACKBONES or BACKBONES[self.model].displacement is None:
            raise ValueError(f"model: denoising needs a 3D backbone, got {self.model!r}")
        if not (math.isfinite(self.noise_std) and self.noise_std > 0):
            raise ValueError(f"noise_std: must be positive, got {self.noise_std}")
        for name in ("epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer")
        if not self.lr > 0 or self.dtype not in DTYPE_NAMES:
            raise ValueError(f"lr must be positive and dtype one of {DTYPE_NAMES}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> DenoiseConfig:
        return dataclasses.replace(self, **changes)


class EquilibriumGeometries:
    """Clean structures to perturb: ``structures(indices) -> (atomic numbers, positions Å)``
    per structure, from a property dataset (ground truths) or a store (last frames)."""

    def __init__(self, data: PropertyDataset | TrajectoryStore):
        self.data = data
        if isinstance(data, PropertyDataset):
            self.available = np.flatnonzero(data.has("ground_truth"))
        else:
            self.available = np.arange(data.n_trajectories)

    @property
    def fingerprint(self) -> str:
        return self.data.fingerprint

    def structures(self, indices: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if isinstance(self.data, PropertyDataset):
            return ([self.data.atomic_numbers(int(i)) for i in indices],
                    [self.data.positions(int(i), "ground_truth") for i in indices])
        last = [int(self.data.trajectory_snapshots(int(j))[-1]) for j in indices]
        arrays = self.data.read(last)
        cuts = np.cumsum(arrays["n_atoms"])[:-1]
        return (np.split(arrays["atomic_numbers"].astype(np.int64), cuts),
                np.split(arrays["positions"].astype(np.float64), cuts))


def noisy_batch(source: EquilibriumGeometries, indices: np.ndarray, rng: np.random.Generator,
                noise_std: float, device, dtype) -> tuple[PropertyBatch, torch.Tensor]:
    """The perturbed structures as a batch, and the unit noise ``eps [n_atoms, 3]``."""
    numbers, clean = source.structures(indices)
    eps = [rng.standard_normal(p.shape) for p in clean]
    noisy = [p + noise_std * e for p, e in zip(clean, eps, strict=True)]
    batch = Batch.from_arrays(numbers, noisy, dtype=dtype).to(device)
    noise = torch.as_tensor(np.concatenate(eps), dtype=dtype, device=device)
    return PropertyBatch(batch, None, None, None, np.asarray(indices)), noise


@dataclass
class _Run:
    config: DenoiseConfig
    source: EquilibriumGeometries
    indices: np.ndarray
    model: PropertyModel
    optimizer: torch.optim.Optimizer
    device: torch.device
    run_dir: Path
    data: dict
    clock: runs.Clock = field(default_factory=runs.Clock)
    log: runs.MetricsLog | None = None
    progress: dict = field(default_factory=lambda: {
        "epoch": 0, "batch": 0, "step": 0, "loss_sum": 0.0, "best_loss": math.inf,
        "first_loss": None, "last_loss": None, "seconds": 0.0})


def pretrain_denoising(config: DenoiseConfig, data: PropertyDataset | TrajectoryStore,
                       run_dir, indices=None, resume: bool = False) -> dict:
    """Pre-train ``config.model`` by coordinate denoising on the equilibrium geometries of
    ``data`` (``indices``: dataset molecules or store trajectories; default all, e.g. pass
    a split's training part). Returns the contents of ``result.json``."""
    run = _start(config, data, Path(run_dir), indices, resume)
    stopped = "epochs"
    while run.progress["epoch"] < config.epochs:
        stopped = _run_epoch(run)
        if stopped is not None:
            _save(run, runs.LAST)
            break
        _end_epoch(run)
        stopped = "epochs"
    p = run.progress
    result = {"first_epoch_loss": p["first_loss"], "last_epoch_loss": p["last_loss"],
              "best_loss": p["best_loss"] if p["first_loss"] is not None else None,
              "epochs": p["epoch"], "steps": p["step"], "stopped": stopped,
              "seconds": round(run.clock.seconds(), 3), "n_structures": int(run.indices.size),
              "noise_std": config.noise_std, "model": run.model.description(),
              "data_fingerprint": run.data["fingerprint"]}
    atomic.write_json(run.run_dir / runs.RESULT, result, indent=1)
    return result


def _start(config: DenoiseConfig, data, run_dir: Path, indices, resume: bool) -> _Run:
    last = run_dir / runs.LAST
    saved = ckpt.load_checkpoint(last) if resume else None
    if saved is not None:
        runs.check_same_run(saved["config"], config.to_dict(), last)
    else:
        runs.check_new_run_dir(run_dir)
    source = EquilibriumGeometries(data)
    chosen = source.available if indices is None else np.intersect1d(
        np.asarray(indices, dtype=np.int64), source.available)
    if chosen.size == 0:
        raise InputError(getattr(data, "path", "data"), "no equilibrium geometries to denoise")
    digest = runs.split_digest({"train": chosen})
    info = {"fingerprint": source.fingerprint, "split_digest": digest, "n_train": int(chosen.size)}
    torch.manual_seed(config.seed)
    model = PropertyModel.build(config.model, config.model_config)
    device = resolve_device(config.device)
    model = model.to(DTYPES[config.dtype]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    run = _Run(config, source, chosen, model, optimizer, device, run_dir, info)
    if saved is not None:
        runs.check_same_data(saved, info, last)
        model.load_state_dict(saved["model_state"])
        optimizer.load_state_dict(saved["optimizer"])
        run.progress.update(saved["progress"])
        run.clock = runs.Clock(run.progress["seconds"])
        restore_rng(saved["rng"])
    run.log = runs.MetricsLog(run_dir, run.progress["epoch"] if saved else None)
    atomic.write_json(run_dir / runs.CONFIG, config.to_dict(), indent=2)
    return run


def _run_epoch(run: _Run) -> str | None:
    config, progress = run.config, run.progress
    epoch, dtype = progress["epoch"], DTYPES[config.dtype]
    batches = runs.epoch_batches(run.indices, config.batch_size, config.seed, epoch)
    bar = runs.progress_bar(len(batches), progress["batch"],
                            f"denoise {epoch + 1}/{config.epochs}", config.progress)
    try:
        for b in range(progress["batch"], len(batches)):
            pb, noise = noisy_batch(run.source, batches[b], runs.batch_rng(config.seed, epoch, b),
                                    config.noise_std, run.device, dtype)
            run.model.train()
            _, predicted = run.model.predict_with_displacement(pb)
            loss = denoising_loss(predicted, noise)
            run.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            run.optimizer.step()
            progress["loss_sum"] += loss.item() * len(batches[b])
            progress["batch"], progress["step"] = b + 1, progress["step"] + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if config.ckpt_every and progress["step"] % config.ckpt_every == 0:
                _save(run, runs.LAST)
            stopped = runs.stop_reason(config, progress["step"], run.clock)
            if stopped is not None:
                return stopped
    finally:
        bar.close()
    return None


def _end_epoch(run: _Run) -> None:
    progress = run.progress
    loss = progress["loss_sum"] / run.indices.size
    progress["epoch"] += 1
    progress["batch"], progress["loss_sum"] = 0, 0.0
    if progress["first_loss"] is None:
        progress["first_loss"] = loss
    progress["last_loss"] = loss
    record = {"epoch": progress["epoch"], "step": progress["step"], "train_loss": loss,
              "seconds": round(run.clock.seconds(), 3)}
    run.log.write(record)
    if loss < progress["best_loss"]:
        progress["best_loss"] = loss
        _save(run, runs.BEST, record)
    _save(run, runs.LAST, record)


def _save(run: _Run, name: str, metrics: dict | None = None) -> None:
    run.progress["seconds"] = run.clock.seconds()
    checkpoint = ckpt.make_checkpoint(
        kind="denoising", config=run.config.to_dict(), model=run.model,
        dtype=run.config.dtype, normalisation={"noise_std": run.config.noise_std, "unit": "Å"},
        data=run.data, init={"kind": "scratch"}, progress=run.progress, metrics=metrics,
        optimizer=run.optimizer)
    ckpt.save(checkpoint, run.run_dir / name)
