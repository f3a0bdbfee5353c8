"""Property training, Force2Prop fine-tuning and geometry fine-tuning: :func:`fit_property`.

``fit_property(config, dataset, split, run_dir)`` trains a
:class:`~force2geo.finetune.model.PropertyModel` on ``split["train"]`` of a
:class:`~force2geo.finetune.dataset.PropertyDataset`, evaluates the MAE (eV) on the
``valid`` and ``test`` parts after every epoch, and writes, in ``run_dir``::

    config.json     the PropertyTrainConfig
    metrics.jsonl   one record per epoch: lr, train loss / MAE (/ geometry loss),
                    valid and test MAE (eV), seconds
    best.pt         the model of the epoch with the lowest validation MAE
    last.pt         the latest state (every epoch end, every ckpt_every steps, at a stop)
    result.json     valid / test MAE at the best epoch, part sizes, seconds, provenance

Molecules lacking the input geometry (``train_geometry``, or the ground truth when
geometry fine-tuning; ``eval_geometry`` for valid / test) or the target are left out of
their part; ``result.json`` counts them. ``fit_property(..., resume=True)`` continues the
run from ``last.pt`` exactly: batch order and noise are seeded per (epoch, batch).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from force2geo import atomic
from force2geo.errors import InputError
from force2geo.finetune import checkpoint as ckpt
from force2geo.finetune import runs
from force2geo.finetune.config import PropertyTrainConfig
from force2geo.finetune.dataset import PropertyBatch, PropertyDataset
from force2geo.finetune.geometry import mixed_inputs
from force2geo.finetune.losses import geometry_alignment_loss, property_loss
from force2geo.finetune.model import PropertyModel
from force2geo.training.checkpoint import DTYPES, restore_rng
from force2geo.training.distributed import resolve_device

logger = logging.getLogger(__name__)
PARTS = ("train", "valid", "test")


# --------------------------------------------------------------------------- steps


def train_step(model: PropertyModel, pb: PropertyBatch, optimizer: torch.optim.Optimizer,
               geo_weight: float | None = None) -> dict[str, float]:
    """One optimizer step. ``geo_weight`` None: L1 property loss only; else Eq. 8, ``L1 +
    geo_weight * L_geo`` with displacement targets ``pb.ground_truth - positions``.
    Returns the loss, the batch MAE (eV) and the geometry loss."""
    model.train()
    if geo_weight is None:
        predicted, geo = model(pb), None
        loss = mae = property_loss(predicted, pb.targets)
    else:
        predicted, displacement = model.predict_with_displacement(pb)
        mae = property_loss(predicted, pb.targets)
        geo = geometry_alignment_loss(displacement, pb.ground_truth - pb.batch.positions)
        loss = mae + geo_weight * geo
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    out = {"loss": loss.item(), "mae": mae.item()}
    if geo is not None:
        out["geo_loss"] = geo.item()
    return out


@torch.no_grad()
def predict(model: PropertyModel, dataset: PropertyDataset, indices, geometry: str,
            batch_size: int = 256, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Predicted property of molecules ``indices`` at ``geometry``, ``[n]`` float64 eV."""
    model.eval()
    indices = np.asarray(indices, dtype=np.int64)
    out = [np.empty(0)]
    for start in range(0, len(indices), batch_size):
        pb = dataset.batch(indices[start : start + batch_size], geometry, target=None,
                           with_2d=model.needs_2d, device=device, dtype=dtype)
        out.append(model(pb).double().cpu().numpy())
    return np.concatenate(out)


def evaluate(model: PropertyModel, dataset: PropertyDataset, indices, geometry: str,
             target: str, batch_size: int = 256, device: torch.device | str = "cpu",
             dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """``{"mae", "rmse", "n"}`` (eV) of the predictions against the dataset's target
    (``mae`` and ``rmse`` None for no molecules)."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size == 0:
        return {"mae": None, "rmse": None, "n": 0}
    error = predict(model, dataset, indices, geometry, batch_size, device, dtype) \
        - dataset.target(target)[indices]
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt(np.mean(error ** 2))),
            "n": int(indices.size)}


# --------------------------------------------------------------------------- data


def usable_parts(dataset: PropertyDataset, split: dict, config: PropertyTrainConfig
                 ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """The parts restricted to molecules with the needed geometry and a finite target
    (train subsampled to ``train_fraction``), and how many each part lost."""
    target = dataset.target(config.target)
    needs = {"train": "ground_truth" if config.geometry_finetune else config.train_geometry,
             "valid": config.eval_geometry, "test": config.eval_geometry}
    parts, dropped = {}, {}
    for name in PARTS:
        indices = np.asarray(split.get(name, []), dtype=np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= len(dataset)):
            raise InputError("split", f"indices out of range for {len(dataset)} molecules",
                             record=name)
        keep = dataset.has(needs[name])[indices] & np.isfinite(target[indices])
        parts[name], dropped[name] = indices[keep], int((~keep).sum())
    parts["train"] = runs.subsample(parts["train"], config.train_fraction, config.seed)
    if parts["train"].size == 0:
        raise InputError("split", f"no training molecules with a {needs['train']!r} geometry "
                         f"and a {config.target!r} target")
    return parts, dropped


def _train_batch(run: _Run, indices: np.ndarray, rng: np.random.Generator) -> PropertyBatch:
    c = run.config
    positions, geometry = None, c.train_geometry
    if c.geometry_finetune:
        positions, _ = mixed_inputs(run.dataset, indices, rng, c.noise_std, c.p_ground_truth)
        geometry = "ground_truth"
    return run.dataset.batch(indices, geometry, c.target, with_2d=run.model.needs_2d,
                             positions=positions, device=run.device, dtype=run.dtype)


# --------------------------------------------------------------------------- the run


@dataclass
class _Run:
    config: PropertyTrainConfig
    dataset: PropertyDataset
    parts: dict
    model: PropertyModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.StepLR
    device: torch.device
    dtype: torch.dtype
    run_dir: Path
    data: dict
    init: dict
    clock: runs.Clock = field(default_factory=runs.Clock)
    log: runs.MetricsLog | None = None
    progress: dict = field(default_factory=lambda: {
        "epoch": 0, "batch": 0, "step": 0, "sums": [0.0, 0.0, 0.0], "best_valid": math.inf,
        "best_epoch": None, "best_metrics": None, "seconds": 0.0})

    def evaluate(self, part: str) -> dict:
        return evaluate(self.model, self.dataset, self.parts[part], self.config.eval_geometry,
                        self.config.target, self.config.batch_size, self.device, self.dtype)


def fit_property(config: PropertyTrainConfig, dataset: PropertyDataset, split: dict,
                 run_dir, resume: bool = False) -> dict:
    """Train as ``config`` says on ``split`` (``{"train", "valid", "test"}`` -> dataset
    indices); returns the contents of ``result.json``."""
    run = _start(config, dataset, split, Path(run_dir), resume)
    stopped = _train(run)
    return _finish(run, stopped)


def build_model(config: PropertyTrainConfig, dtype: torch.dtype) -> tuple[PropertyModel, dict]:
    """The model a run starts from (seeded), and where its weights came from."""
    torch.manual_seed(config.seed)
    if config.init is not None:
        model, init = ckpt.initial_model(config.init, config.readout, dtype)
    else:
        model = PropertyModel.build(config.model, config.model_config, config.readout)
        model, init = model.to(dtype), {"kind": "scratch", "backbone": config.model}
    if config.geometry_finetune and model.displacement_head is None:
        raise InputError(config.init or "model", f"geometry fine-tuning needs a 3D backbone; "
                         f"{model.backbone_name} has no displacement head")
    if config.freeze_backbone:
        model.freeze_backbone()
    return model, init


def _start(config: PropertyTrainConfig, dataset: PropertyDataset, split: dict,
           run_dir: Path, resume: bool) -> _Run:
    last = run_dir / runs.LAST
    saved = ckpt.load_checkpoint(last) if resume else None
    if saved is not None:
        runs.check_same_run(saved["config"], config.to_dict(), last)
    else:
        runs.check_new_run_dir(run_dir)
    parts, dropped = usable_parts(dataset, split, config)
    data = {"fingerprint": dataset.fingerprint, "split_digest": runs.split_digest(parts),
            **{f"n_{name}": int(ix.size) for name, ix in parts.items()},
            "dropped": dropped}
    dtype, device = DTYPES[config.dtype], resolve_device(config.device)
    if saved is not None:  # the architecture of the checkpoint; weights restored below
        runs.check_same_data(saved, data, last)
        model, init = ckpt.model_from_checkpoint(saved).train(), saved["init"]
        if config.freeze_backbone:
            model.freeze_backbone()
    else:
        model, init = build_model(config, dtype)
    if saved is None and init["kind"] != "property":  # a property checkpoint brings its own
        values = dataset.target(config.target)[parts["train"]]
        std = float(values.std())
        model.set_target_normalisation(float(values.mean()), std if std > 0 else 1.0)
    model = model.to(device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=config.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_step, config.lr_gamma)
    run = _Run(config, dataset, parts, model, optimizer, scheduler, device, dtype, run_dir,
               data, init)
    if saved is not None:
        _restore(run, saved)
    run.log = runs.MetricsLog(run_dir, run.progress["epoch"] if saved else None)
    atomic.write_text(run_dir / runs.CONFIG, config.to_json() + "\n")
    return run


def _restore(run: _Run, saved: dict) -> None:
    run.model.load_state_dict(saved["model_state"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    run.progress.update(saved["progress"])
    run.clock = runs.Clock(run.progress["seconds"])
    restore_rng(saved["rng"])


def _save(run: _Run, name: str, metrics: dict | None = None) -> None:
    run.progress["seconds"] = run.clock.seconds()
    model = run.model
    normalisation = {"target": run.config.target, "mean": float(model.target_mean),
                     "std": float(model.target_std), "unit": "eV"}
    checkpoint = ckpt.make_checkpoint(
        kind="property", config=run.config.to_dict(), model=model, dtype=run.config.dtype,
        normalisation=normalisation, data=run.data, init=run.init, progress=run.progress,
        metrics=metrics, optimizer=run.optimizer, scheduler=run.scheduler)
    ckpt.save(checkpoint, run.run_dir / name)


# --------------------------------------------------------------------------- loop


def _train(run: _Run) -> str:
    """Epochs until done; returns why it stopped: epochs, max_steps or max_minutes."""
    while run.progress["epoch"] < run.config.epochs:
        stopped = _run_epoch(run)
        if stopped is not None:
            _save(run, runs.LAST)
            return stopped
        _end_epoch(run)
    return "epochs"


def _run_epoch(run: _Run) -> str | None:
    config, progress = run.config, run.progress
    epoch = progress["epoch"]
    batches = runs.epoch_batches(run.parts["train"], config.batch_size, config.seed, epoch)
    geo_weight = config.geo_weight if config.geometry_finetune else None
    bar = runs.progress_bar(len(batches), progress["batch"],
                            f"epoch {epoch + 1}/{config.epochs}", config.progress)
    try:
        for b in range(progress["batch"], len(batches)):
            pb = _train_batch(run, batches[b], runs.batch_rng(config.seed, epoch, b))
            out = train_step(run.model, pb, run.optimizer, geo_weight)
            sums = progress["sums"]
            sums[0] += out["loss"] * len(batches[b])
            sums[1] += out["mae"] * len(batches[b])
            sums[2] += out.get("geo_loss", 0.0) * len(batches[b])
            progress["batch"], progress["step"] = b + 1, progress["step"] + 1
            bar.update(1)
            bar.set_postfix(mae=f"{out['mae']:.4f}")
            if config.ckpt_every and progress["step"] % config.ckpt_every == 0:
                _save(run, runs.LAST)
            stopped = runs.stop_reason(config, progress["step"], run.clock)
            if stopped is not None:
                return stopped
    finally:
        bar.close()
    return None


def _end_epoch(run: _Run) -> None:
    """Evaluate, step the scheduler, log, keep the best model, save last.pt."""
    progress, config = run.progress, run.config
    n_train = max(run.parts["train"].size, 1)
    loss, mae, geo = (s / n_train for s in progress["sums"])
    valid, test = run.evaluate("valid"), run.evaluate("test")
    lr = run.optimizer.param_groups[0]["lr"]
    run.scheduler.step()
    progress["epoch"] += 1
    progress["batch"], progress["sums"] = 0, [0.0, 0.0, 0.0]
    record = {"epoch": progress["epoch"], "step": progress["step"], "lr": lr,
              "train_loss": loss, "train_mae": mae, "valid_mae": valid["mae"],
              "valid_rmse": valid["rmse"], "test_mae": test["mae"], "test_rmse": test["rmse"],
              "seconds": round(run.clock.seconds(), 3)}
    if config.geometry_finetune:
        record["train_geo_loss"] = geo
    run.log.write(record)
    logger.info("epoch %d: train MAE %.4f eV, valid MAE %s eV, test MAE %s eV",
                progress["epoch"], mae, _mae_text(valid["mae"]), _mae_text(test["mae"]))
    monitor = valid["mae"] if valid["n"] else mae  # no validation part: the train MAE
    if monitor < progress["best_valid"]:
        progress["best_valid"], progress["best_epoch"] = monitor, progress["epoch"]
        progress["best_metrics"] = {k: record[k] for k in record if k != "lr"}
        _save(run, runs.BEST, record)
    _save(run, runs.LAST, record)


def _mae_text(mae: float | None) -> str:
    """An MAE for the log; ``n/a`` for an empty part."""
    return "n/a" if mae is None else f"{mae:.4f}"


def _finish(run: _Run, stopped: str) -> dict:
    """Write result.json (metrics of the best epoch) and return it."""
    progress = run.progress
    best = progress["best_metrics"]
    if best is None:  # stopped before the first epoch ended: judge the current weights
        valid, test = run.evaluate("valid"), run.evaluate("test")
        best = {"epoch": progress["epoch"], "valid_mae": valid["mae"], "test_mae": test["mae"]}
        _save(run, runs.BEST, best)
    result = {
        "valid_mae": best["valid_mae"], "test_mae": best["test_mae"],
        "best_epoch": best["epoch"], "epochs": progress["epoch"], "steps": progress["step"],
        "stopped": stopped, "seconds": round(run.clock.seconds(), 3),
        "n_train": run.data["n_train"], "n_valid": run.data["n_valid"],
        "n_test": run.data["n_test"], "dropped": run.data["dropped"],
        "target": run.config.target, "unit": "eV", "train_geometry": (
            "mixed" if run.config.geometry_finetune else run.config.train_geometry),
        "eval_geometry": run.config.eval_geometry, "model": run.model.description(),
        "init": run.init, "freeze_backbone": run.config.freeze_backbone,
        "dataset_fingerprint": run.data["fingerprint"],
    }
    atomic.write_json(run.run_dir / runs.RESULT, result, indent=1)
    return result
