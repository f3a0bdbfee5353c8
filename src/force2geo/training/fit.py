"""The training loop: :func:`train_step`, :func:`evaluate` and :func:`fit`, top to bottom.

``fit(config)`` trains a :class:`~force2geo.models.Potential` on the energies and forces of
a trajectory store and writes, in ``config.run_dir`` (rank 0 only)::

    config.json          the TrainConfig
    metrics.jsonl/.csv   train records every log_every steps; valid records per epoch
    last.pt              every ckpt_every steps, at each epoch end and at the end
    best.pt              whenever the validation loss improves
    learning_curve.png, parity.png

Data parallelism: launched by ``torchrun``, each process trains on its own slice of every
global batch (see :mod:`.data`); the loss of each process is divided by the label counts
of the *global* batch and multiplied by the world size, so DDP's gradient average is
exactly the gradient of the paper's loss over the global batch.

Resume (``fit(config, resume=True)``) restores weights, optimizer, scheduler, EMA, RNGs and
the loader position from ``last.pt`` and continues as if never stopped.
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from force2geo import atomic
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.models import Potential, build_backbone, energy_and_forces, fit_atom_refs
from force2geo.models.batch import Batch
from force2geo.models.potential import normalize_elements
from force2geo.training import plots
from force2geo.training.checkpoint import (
    DTYPES,
    checkpoint_elements,
    load_checkpoint,
    make_checkpoint,
    model_description,
    potential_from_checkpoint,
    restore_rng,
    save_checkpoint,
)
from force2geo.training.config import TrainConfig
from force2geo.training.data import SnapshotLoader, snapshot_elements, split_snapshots
from force2geo.training.distributed import (
    DistInfo,
    all_reduce_sum,
    init_distributed,
    shutdown,
    world_size,
)
from force2geo.training.ema import EMA
from force2geo.training.losses import combine, loss_sums
from force2geo.training.metrics import MetricSums
from force2geo.training.runlog import RunLog, read_records

logger = logging.getLogger(__name__)

# Reference energies are a least-squares fit with one unknown per element: a sample of
# this many training snapshots pins them down as well as all of them would.
REF_FIT_SNAPSHOTS = 20_000
PARITY_SNAPSHOTS = 2_000
# Options that may differ between a run and its resumption: they do not change the
# trajectory of the optimisation, only how long it goes on, where, and how it is logged.
RESUMABLE_CHANGES = ("epochs", "max_steps", "max_minutes", "device", "log_every", "ckpt_every",
                     "run_dir", "data", "plots")


# --------------------------------------------------------------------------- pieces


def build_potential(config: TrainConfig, atom_refs=None, elements=None) -> Potential:
    """The untrained Potential of ``config`` (backbone + ``atom_refs [119]`` eV, training
    ``elements``) in its dtype."""
    backbone = build_backbone(config.model, **config.model_config)
    return Potential(backbone, atom_refs, elements).to(DTYPES[config.dtype])


def warm_start_potential(config: TrainConfig) -> Potential:
    """The Potential of ``config`` with the weights, reference energies and training
    elements of the checkpoint ``config.init`` (its EMA weights when it kept them)."""
    source = load_checkpoint(config.init)
    wanted = model_description(config.model, config.model_config)
    if source["model"] != wanted:
        have = source["model"]
        raise InputError(config.init, f"holds a {have['name']} backbone with config "
                         f"{have['config']}, not the {wanted['name']} {wanted['config']} this "
                         "run asks for; pass the same --model and --model-option values")
    potential = build_potential(config, source["atom_refs"], checkpoint_elements(source))
    trained = potential_from_checkpoint(source).to(DTYPES[config.dtype])
    potential.load_state_dict(trained.state_dict())
    return potential.train()


def fit_reference_energies(store: TrajectoryStore, indices: np.ndarray, seed: int = 0,
                           max_snapshots: int = REF_FIT_SNAPSHOTS) -> np.ndarray:
    """Per-element reference energies ``[119]`` eV, least squares over (a seeded sample of
    at most ``max_snapshots`` of) the snapshots ``indices``."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.shape[0] > max_snapshots:
        pick = np.random.default_rng(seed).choice(indices.shape[0], max_snapshots, replace=False)
        indices = np.sort(indices[pick])
    arrays = store.read(indices)
    atomic_numbers = np.split(arrays["atomic_numbers"], np.cumsum(arrays["n_atoms"])[:-1])
    try:
        return fit_atom_refs(atomic_numbers, arrays["energy"])
    except ValueError as exc:
        raise InputError(store.path, f"cannot fit reference energies: {exc}") from None


def train_step(model: torch.nn.Module, batch: Batch, optimizer: torch.optim.Optimizer,
               config: TrainConfig, ema: EMA | None = None) -> dict[str, float]:
    """One optimizer step on ``batch`` (this process's part of the global batch).

    ``model`` is the Potential or its DistributedDataParallel wrapper. Returns the loss of
    the global batch and its energy (eV/atom or eV) and force ((eV/Å)^2) terms, and the
    gradient norm before clipping.
    """
    model.train()
    energy, forces = energy_and_forces(model, batch, create_graph=True)
    sums = loss_sums(energy, forces, batch, per_atom=config.energy_loss == "per_atom")
    counts = torch.tensor([sums.n_energy, sums.n_forces], dtype=torch.float64,
                          device=energy.device)
    all_reduce_sum(counts)
    loss = world_size() * combine(sums, counts[0], counts[1], config.lambda_e, config.lambda_f)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    max_norm = config.grad_clip if config.grad_clip is not None else math.inf
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    if ema is not None:
        ema.update()
    terms = torch.stack([sums.energy.detach().to(torch.float64),
                         sums.forces.detach().to(torch.float64)])
    all_reduce_sum(terms)
    terms = (terms / counts.clamp(min=1)).tolist()
    return {"loss": config.lambda_e * terms[0] + config.lambda_f * terms[1],
            "energy_loss": terms[0], "force_loss": terms[1], "grad_norm": float(grad_norm)}


def evaluate(potential: Potential, loader: SnapshotLoader, config: TrainConfig,
             keep: int = 0) -> tuple[dict[str, float], dict[str, np.ndarray] | None]:
    """Metrics of ``potential`` over every batch of ``loader`` (added over ranks), see
    :mod:`.metrics`. With ``keep > 0`` also returns reference and predicted per-atom
    energies less reference energies (eV/atom) and forces (eV/Å) of this rank's first
    ``keep`` snapshots (for parity plots)."""
    potential.eval()
    device = potential.atom_refs.device
    sums = MetricSums(device)
    kept: dict[str, list] = {"energy_true": [], "energy_pred": [], "forces_true": [],
                             "forces_pred": []}
    n_kept = 0
    for batch in loader:
        batch = batch.to(device)
        energy, forces = energy_and_forces(potential, batch)
        sums.add(energy, forces, batch)
        if n_kept < keep:
            _keep(kept, energy, forces, batch, potential.reference_energy(batch))
            n_kept += batch.n_systems
    metrics = sums.all_reduce().result(config.lambda_e, config.lambda_f,
                                       config.energy_loss == "per_atom")
    if keep <= 0:
        return metrics, None
    return metrics, {k: np.concatenate(v) if v else np.empty(0) for k, v in kept.items()}


def _keep(kept: dict, energy, forces, batch: Batch, references) -> None:
    """Per-atom energies less the reference energies (what the network itself learns;
    raw totals would only show the composition) and the known forces."""
    n_atoms = batch.atoms_per_system().to(torch.float64)
    kept["energy_true"].append(((batch.energy - references) / n_atoms).cpu().numpy())
    kept["energy_pred"].append(((energy - references) / n_atoms).detach().cpu().numpy())
    known = torch.isfinite(batch.forces).all(dim=-1)
    kept["forces_true"].append(batch.forces[known].double().cpu().numpy())
    kept["forces_pred"].append(forces[known].double().cpu().numpy())


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
    """ReduceLROnPlateau (stepped once per epoch on the validation loss), or a per-step
    linear warm-up then half cosine from ``lr`` to ``lr * lr_floor`` over ``schedule_steps``
    steps, by default ``epochs`` epochs (``max_steps``/``max_minutes`` only cut a run short,
    so a resumed run follows the same schedule)."""
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=config.plateau_factor,
            patience=config.plateau_patience)
    total = config.schedule_steps or config.epochs * max(steps_per_epoch, 1)
    warmup, floor = config.warmup_steps, config.lr_floor

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        done = min(1.0, (step - warmup) / max(total - warmup, 1))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * done))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def resume_config(run_dir: str | os.PathLike, **changes) -> TrainConfig:
    """The config of the run in ``run_dir`` (from ``last.pt``), with ``changes`` applied
    (only :data:`RESUMABLE_CHANGES` may differ for an exact resume)."""
    checkpoint = load_checkpoint(Path(run_dir) / "last.pt")
    return TrainConfig.from_dict(checkpoint["config"]).replace(run_dir=os.fspath(run_dir),
                                                               **changes)


# --------------------------------------------------------------------------- the run


@dataclass
class _Run:
    """Everything a running fit holds; ``progress`` is what checkpoints record of it."""

    config: TrainConfig
    info: DistInfo
    potential: Potential
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | torch.optim.lr_scheduler.ReduceLROnPlateau
    ema: EMA | None
    train_loader: SnapshotLoader
    valid_loader: SnapshotLoader | None
    log: RunLog
    data: dict
    progress: dict = field(default_factory=lambda: {
        "step": 0, "best_metric": math.inf, "epoch_loss_sum": 0.0, "epoch_steps": 0})
    started: float = field(default_factory=time.perf_counter)

    @property
    def eval_model(self) -> Potential:
        return self.potential if self.ema is None else self.ema.model

    def done(self) -> bool:
        cap = self.config.max_steps
        if cap is not None and self.progress["step"] >= cap:
            return True
        if self.config.max_minutes is None:
            return False
        # Clocks differ between ranks: all stop as soon as one is out of time.
        late = time.perf_counter() - self.started >= 60.0 * self.config.max_minutes
        flag = torch.tensor([float(late)], device=self.potential.atom_refs.device)
        return bool(all_reduce_sum(flag).item() > 0)


def fit(config: TrainConfig, resume: bool = False) -> dict:
    """Train as ``config`` says (resuming from ``run_dir/last.pt`` when ``resume``).

    Returns a summary: final ``step`` and ``epoch``, ``best_metric`` (validation loss) and
    the final validation ``metrics`` (None without a validation split).
    """
    info, device = init_distributed(config.device)
    try:
        run = _start(config, resume, info, device)
        _train(run)
        return _finish(run)
    finally:
        shutdown(info)


def _start(config: TrainConfig, resume: bool, info: DistInfo, device) -> _Run:
    run_dir = Path(config.run_dir)
    checkpoint = load_checkpoint(run_dir / "last.pt") if resume else None
    if checkpoint is not None:
        _check_same_run(config, checkpoint, run_dir / "last.pt")
    else:
        _check_new_run_dir(run_dir, create=info.is_main)
    store = TrajectoryStore(config.data)
    if checkpoint is not None and checkpoint["data"]["fingerprint"] != store.fingerprint:
        raise InputError(run_dir / "last.pt", f"was trained on data with fingerprint "
                         f"{checkpoint['data']['fingerprint']}, but {store.path} has "
                         f"fingerprint {store.fingerprint}")
    parts = split_snapshots(store, config.split, config.split_fractions, config.split_seed,
                            config.stages)
    if parts["train"].size == 0:
        raise InputError(store.path, f"no training snapshots (stages {list(config.stages)})")
    torch.manual_seed(config.seed)
    if checkpoint is not None:
        potential = build_potential(config, checkpoint["atom_refs"],
                                    checkpoint_elements(checkpoint))
    elif config.init is not None:
        potential = warm_start_potential(config)
    else:
        potential = build_potential(config, fit_reference_energies(store, parts["train"],
                                                                    config.seed))
    # The model knows what it saw: the elements of this run's training data, and those
    # of the model it started from.
    seen = snapshot_elements(store, parts["train"])
    potential.elements = normalize_elements([*(potential.elements or ()), *seen])
    potential = potential.to(device)
    run = _assemble(config, info, potential, store, parts)
    if checkpoint is not None:
        _restore(run, checkpoint, run_dir / "last.pt")
    if info.world_size > 1:
        # The force loss's double backward returns the [1, k] weight gradient of the
        # output layer with strides (1, 1) instead of (k, 1): the same memory layout for a
        # dimension of size one, so DDP's performance warning about it is moot.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
        run.model = DistributedDataParallel(potential)
    run.log = RunLog(run_dir, info.is_main, run.progress["step"] if checkpoint else None)
    if info.is_main:
        _write_text(run_dir / "config.json", config.to_json() + "\n")
    return run


def _assemble(config: TrainConfig, info: DistInfo, potential: Potential,
              store: TrajectoryStore, parts: dict) -> _Run:
    """Optimizer, scheduler, EMA and loaders around a freshly built potential."""
    optimizer = torch.optim.Adam(potential.parameters(), lr=config.lr, betas=(0.9, 0.999))
    dtype = DTYPES[config.dtype]
    train = SnapshotLoader(store, parts["train"], config.batch_size, config.max_atoms,
                           shuffle=True, seed=config.seed, rank=info.rank,
                           world_size=info.world_size, dtype=dtype)
    scheduler = make_scheduler(optimizer, config, len(train))
    valid = None
    if parts.get("valid") is not None and parts["valid"].size:
        valid = SnapshotLoader(store, parts["valid"], config.batch_size, config.max_atoms,
                               shuffle=False, rank=info.rank, world_size=info.world_size,
                               drop_uneven=False, dtype=dtype)
    data = {"path": str(store.path), "fingerprint": store.fingerprint,
            "n_snapshots": store.n_snapshots, "stages": list(config.stages),
            **{f"n_{name}": int(ix.size) for name, ix in parts.items()}}
    ema = EMA(potential, config.ema_decay) if config.ema_decay is not None else None
    return _Run(config, info, potential, potential, optimizer, scheduler, ema, train, valid,
                None, data)


def _check_new_run_dir(run_dir: Path, create: bool) -> None:
    """Refuse a folder that holds a run (every rank checks, so all fail alike)."""
    for name in ("last.pt", "metrics.jsonl"):
        if (run_dir / name).exists():
            raise InputError(run_dir, f"already holds a run ({name}); resume it, or choose "
                             "another output folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise InputError(run_dir, "exists and is not a folder")
    if create:
        run_dir.mkdir(parents=True, exist_ok=True)


def _check_same_run(config: TrainConfig, checkpoint: dict, path: Path) -> None:
    saved, current = checkpoint["config"], config.to_dict()
    changed = [k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k]]
    if changed:
        raise InputError(path, f"cannot resume exactly with a different {', '.join(changed)} "
                         f"(only {', '.join(RESUMABLE_CHANGES)} may change)")


def _restore(run: _Run, checkpoint: dict, path: Path) -> None:
    run.potential.load_state_dict(checkpoint["model_state"])
    run.optimizer.load_state_dict(checkpoint["optimizer"])
    run.scheduler.load_state_dict(checkpoint["scheduler"])
    if run.ema is not None:
        run.ema.load_state_dict(checkpoint["ema"])
    run.train_loader.load_state_dict(checkpoint["loader"], path)
    run.progress.update(checkpoint["progress"])
    restore_rng(checkpoint["rng"])


def _save(run: _Run, name: str, metrics: dict | None = None) -> None:
    if not run.info.is_main:
        return
    progress = {**run.progress, "epoch": run.train_loader.epoch}
    checkpoint = make_checkpoint(
        config=run.config, potential=run.potential, optimizer=run.optimizer,
        scheduler=run.scheduler, ema=run.ema, loader=run.train_loader, progress=progress,
        data=run.data, metrics=metrics)
    save_checkpoint(checkpoint, Path(run.config.run_dir) / name)


# --------------------------------------------------------------------------- loop


def _train(run: _Run) -> None:
    config, loader = run.config, run.train_loader
    while loader.epoch < config.epochs and not run.done():
        bar = tqdm(total=len(loader), initial=loader.batch, unit="batch", leave=False,
                   desc=f"epoch {loader.epoch + 1}/{config.epochs}",
                   disable=not run.info.is_main, dynamic_ncols=True)
        stopped = False
        for batch in loader.epoch_batches():
            batch = batch.to(run.potential.atom_refs.device)
            out = train_step(run.model, batch, run.optimizer, config, run.ema)
            _after_step(run, out)
            bar.update(1)
            bar.set_postfix(loss=f"{out['loss']:.4g}")
            if run.done():
                stopped = True
                break
        bar.close()
        if not stopped:
            _end_epoch(run)


def _after_step(run: _Run, out: dict) -> None:
    progress, config = run.progress, run.config
    progress["step"] += 1
    progress["epoch_loss_sum"] += out["loss"]
    progress["epoch_steps"] += 1
    if config.schedule != "plateau":
        run.scheduler.step()
    step = progress["step"]
    if step % config.log_every == 0:
        run.log.write({"kind": "train", "step": step, "epoch": run.train_loader.epoch,
                       "lr": run.optimizer.param_groups[0]["lr"], **out,
                       "seconds": round(time.perf_counter() - run.started, 3)})
    if step % config.ckpt_every == 0:
        _save(run, "last.pt")


def _end_epoch(run: _Run) -> None:
    """Validate, step the scheduler, move to the next epoch, write checkpoints."""
    progress = run.progress
    metrics = None
    if run.valid_loader is not None:
        metrics, _ = evaluate(run.eval_model, run.valid_loader, run.config)
        monitor = metrics["loss"]
    else:  # no validation split: the mean training loss of the epoch decides
        monitor = progress["epoch_loss_sum"] / max(progress["epoch_steps"], 1)
    if run.config.schedule == "plateau":
        run.scheduler.step(monitor)
    epoch = run.train_loader.epoch
    run.train_loader.end_epoch()
    progress["epoch_loss_sum"], progress["epoch_steps"] = 0.0, 0
    kind = "valid" if metrics is not None else "epoch"  # "epoch": loss is the train mean
    run.log.write({"kind": kind, "step": progress["step"], "epoch": epoch + 1,
                   "lr": run.optimizer.param_groups[0]["lr"], "loss": monitor,
                   **(metrics or {}), "seconds": round(time.perf_counter() - run.started, 3)})
    if run.info.is_main and metrics is not None:
        logger.info("epoch %d: valid loss %.4g, energy MAE %.2f meV/atom, force RMSE "
                    "%.1f meV/Å", epoch + 1, monitor, metrics["energy_mae"],
                    metrics["force_rmse"])
    if monitor < progress["best_metric"]:
        progress["best_metric"] = monitor
        _save(run, "best.pt", metrics)
    _save(run, "last.pt", metrics)


def _finish(run: _Run) -> dict:
    """Final validation, last checkpoint, plots; the summary :func:`fit` returns."""
    metrics, points = None, None
    if run.valid_loader is not None:
        metrics, points = evaluate(run.eval_model, run.valid_loader, run.config,
                                   keep=PARITY_SNAPSHOTS)
    run.log.write({"kind": "final", "step": run.progress["step"],
                   "epoch": run.train_loader.epoch, **(metrics or {})})
    _save(run, "last.pt", metrics)
    if run.info.is_main and run.config.plots:
        run_dir = Path(run.config.run_dir)
        plots.learning_curve(read_records(run_dir), run_dir / "learning_curve.png")
        if points is not None:
            plots.parity(points["energy_true"], points["energy_pred"], points["forces_true"],
                         points["forces_pred"], run_dir / "parity.png", metrics)
    run.log.close()
    return {"run_dir": run.config.run_dir, "step": run.progress["step"],
            "epoch": run.train_loader.epoch, "best_metric": run.progress["best_metric"],
            "metrics": metrics}


def _write_text(path: Path, text: str) -> None:
    atomic.write_text(path, text)
