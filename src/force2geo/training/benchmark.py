"""Backbones compared on equal terms: the paper's Table 2 on your own store.

:func:`benchmark_models` trains each backbone with :func:`~force2geo.training.fit` under
one budget (the same number of optimizer steps, or the same wall-clock minutes of the
training loop) and otherwise identical training options: same store, split, seed (so the
same batches in the same order), loss and optimizer. It then evaluates each run's best
checkpoint on the validation split and writes, in ``out_dir``::

    <model>/          the training run of each backbone (checkpoints, metrics)
    table.json        the rows, with the config, versions, device and units that made them
    table.md          the same rows as a Markdown table

Columns: parameters; energy MAE (meV/atom); force RMSE, force MAE (meV/Å) and force
cosine over atoms with known forces; optimizer steps and wall-clock seconds of ``fit``;
inference (energy + forces) in ms per molecule, one molecule at a time (median) and in
the validation batches (mean).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from force2geo import __version__
from force2geo.atomic import write_json, write_text
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.models import MODELS, OPTIONAL_MODELS, Potential, energy_and_forces
from force2geo.training.checkpoint import DTYPES, load_checkpoint, load_potential
from force2geo.training.config import TrainConfig
from force2geo.training.data import SnapshotLoader, split_snapshots
from force2geo.training.distributed import resolve_device
from force2geo.training.fit import fit
from force2geo.training.metrics import MetricSums
from force2geo.units import UNITS

logger = logging.getLogger(__name__)

FORMAT = "force2geo-benchmark-models"
FORMAT_VERSION = 1
# The budget ends training; epochs only must not end it first. An epoch has at least one
# step, so ``steps`` epochs always suffice; a minutes budget has no such bound.
UNBOUNDED_EPOCHS = 1_000_000
# TrainConfig fields the benchmark sets itself, per model or from its budget.
RESERVED = ("data", "run_dir", "model", "model_config", "seed", "epochs", "max_steps",
            "max_minutes")
RUN_RECORD = "benchmark_run.json"
COLUMNS = (  # (key, Markdown header, format)
    ("model", "model", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("energy_mae", "energy MAE (meV/atom)", "{:.2f}"),
    ("force_rmse", "force RMSE (meV/Å)", "{:.1f}"),
    ("force_mae", "force MAE (meV/Å)", "{:.1f}"),
    ("force_cos", "force cos", "{:.4f}"),
    ("train_steps", "train steps", "{:,}"),
    ("train_seconds", "train time (s)", "{:.1f}"),
    ("ms_per_molecule", "inference, one (ms/mol)", "{:.2f}"),
    ("ms_per_molecule_batched", "inference, batched (ms/mol)", "{:.2f}"),
)


@dataclass(frozen=True)
class BenchmarkConfig:
    """One comparison: ``models`` trained on the store ``data``, written to ``out_dir``.

    Budget: exactly one of ``steps`` (optimizer steps) and ``minutes`` (wall clock of the
    training loop). ``model_options``: per model, fields of its config, e.g. ``{"painn":
    {"hidden_channels": 64}}``. ``train_options``: :class:`TrainConfig` fields shared by
    every model (batch size, device, split, ...; not those in :data:`RESERVED`). ``seed``:
    model initialisation and batch order. ``inference_molecules``: validation molecules
    timed one at a time.
    """

    data: str
    out_dir: str
    models: tuple[str, ...] = field(default_factory=lambda: tuple(MODELS))
    steps: int | None = None
    minutes: float | None = None
    model_options: dict = field(default_factory=dict)
    train_options: dict = field(default_factory=dict)
    seed: int = 42
    inference_molecules: int = 32

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", os.fspath(self.data))
        object.__setattr__(self, "out_dir", os.fspath(self.out_dir))
        object.__setattr__(self, "models", tuple(self.models))
        object.__setattr__(self, "model_options",
                           {k: dict(v) for k, v in self.model_options.items()})
        object.__setattr__(self, "train_options", dict(self.train_options))
        self._check()

    def _check(self) -> None:
        """Raise ValueError naming the first impossible field."""
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("budget: give exactly one of steps and minutes")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise ValueError(f"steps: must be a positive integer, got {self.steps!r}")
        if self.minutes is not None and not (math.isfinite(self.minutes) and self.minutes > 0):
            raise ValueError(f"minutes: must be positive, got {self.minutes!r}")
        if not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(f"models: need distinct model names, got {list(self.models)}")
        for name in self.models:
            if name in OPTIONAL_MODELS and name not in MODELS:
                raise ValueError(f"models: {name!r} needs {OPTIONAL_MODELS[name]}")
            if name not in MODELS:
                raise ValueError(f"models: unknown {name!r}; known: {sorted(MODELS)}")
        stray = sorted(set(self.model_options) - set(self.models))
        if stray:
            raise ValueError(f"model_options: given for {stray}, which are not among the "
                             f"models benchmarked {list(self.models)}")
        reserved = sorted(set(self.train_options) & set(RESERVED))
        if reserved:
            raise ValueError(f"train_options: {reserved} are set by the benchmark itself")
        if self.inference_molecules < 1:
            raise ValueError(f"inference_molecules: must be >= 1, got "
                             f"{self.inference_molecules}")
        for name in self.models:  # every TrainConfig must be valid before any training
            self.train_config(name)

    def train_config(self, name: str) -> TrainConfig:
        """The training run of model ``name``: identical for every model but the model."""
        options = {"plots": False, **self.train_options}
        return TrainConfig(data=self.data, run_dir=os.path.join(self.out_dir, name),
                           model=name, model_config=self.model_options.get(name, {}),
                           seed=self.seed, epochs=self.steps or UNBOUNDED_EPOCHS,
                           max_steps=self.steps,
                           max_minutes=self.minutes, **options)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["models"] = list(self.models)
        return out


# --------------------------------------------------------------------------- the run


def benchmark_models(config: BenchmarkConfig) -> dict:
    """Train, evaluate and tabulate every model of ``config`` (see the module docstring).

    A model whose run in ``out_dir/<model>`` already finished with the same training
    config is evaluated again, not retrained. Returns the table (what ``table.json``
    holds).
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = config.train_config(config.models[0])
    store = TrajectoryStore(first.data)
    parts = split_snapshots(store, first.split, first.split_fractions, first.split_seed,
                            first.stages)
    valid = parts.get("valid")
    if valid is None or valid.size == 0:
        raise InputError(first.split or store.path, "the benchmark needs validation "
                         "snapshots, and the split has none")
    rows = []
    for name in config.models:
        train_config = config.train_config(name)
        record = _train_or_reuse(train_config)
        row = {"model": name, "train_steps": record["step"],
               "train_seconds": record["seconds"], "epochs": record["epoch"]}
        row |= evaluate_run(Path(train_config.run_dir), store, valid, train_config,
                            config.inference_molecules)
        rows.append(row)
        logger.info("%s: energy MAE %.2f meV/atom, force RMSE %.1f meV/Å after %d steps",
                    name, row["energy_mae"], row["force_rmse"], row["train_steps"])
    table = _table(config, store, parts, rows)
    write_json(out_dir / "table.json", table, indent=2)
    write_text(out_dir / "table.md", markdown_table(table))
    return table


def _train_or_reuse(train_config: TrainConfig) -> dict:
    """``{"step", "epoch", "seconds"}`` of the finished run of ``train_config``: trained
    now, or read back from an earlier benchmark's record in its run folder."""
    run_dir = Path(train_config.run_dir)
    record_path = run_dir / RUN_RECORD
    if record_path.is_file():
        record = json.loads(record_path.read_text())
        if record.get("config") == train_config.to_dict():
            logger.info("%s: reusing the finished run in %s", train_config.model, run_dir)
            return record
        raise InputError(record_path, "holds a run with other training options; choose "
                         "another output folder")
    started = time.perf_counter()
    summary = fit(train_config)
    record = {"config": train_config.to_dict(), "step": summary["step"],
              "epoch": summary["epoch"], "seconds": time.perf_counter() - started}
    write_json(record_path, record, indent=2)
    return record


def best_checkpoint(run_dir: Path) -> Path:
    """The checkpoint of ``run_dir`` with the lowest validation loss: ``best.pt`` (the best
    at an epoch end) or ``last.pt`` (the end of training, often mid-epoch under a budget)."""
    candidates = []
    for name in ("best.pt", "last.pt"):
        path = run_dir / name
        if path.is_file():
            loss = (load_checkpoint(path).get("metrics") or {}).get("loss", math.inf)
            loss = loss if math.isfinite(loss) else math.inf
            candidates.append((loss, len(candidates), path))  # a tie goes to best.pt
    if not candidates:
        raise InputError(run_dir, "holds no checkpoint (best.pt or last.pt)")
    return min(candidates)[2]


def evaluate_run(run_dir: Path, store: TrajectoryStore, valid: np.ndarray,
                 train_config: TrainConfig, inference_molecules: int) -> dict:
    """Parameters, validation metrics and inference times of the best checkpoint."""
    device = resolve_device(train_config.device)
    path = best_checkpoint(run_dir)
    potential = load_potential(path, device=device)
    loader = SnapshotLoader(store, valid, train_config.batch_size, train_config.max_atoms,
                            shuffle=False, drop_uneven=False, dtype=DTYPES[train_config.dtype])
    metrics, seconds = validation_metrics(potential, loader, train_config)
    # Spread over the split: consecutive snapshots are mostly one molecule.
    spread = np.unique(np.linspace(0, valid.size - 1, inference_molecules).astype(np.int64))
    single = single_molecule_ms(potential, loader, valid[spread])
    return {
        "parameters": sum(p.numel() for p in potential.parameters()),
        **{k: metrics[k] for k in ("energy_mae", "energy_mae_total", "force_rmse",
                                   "force_mae", "force_cos", "loss")},
        "ms_per_molecule": single,
        "ms_per_molecule_batched": 1000.0 * seconds / max(metrics["n_energy"], 1),
        "n_valid": metrics["n_energy"],
        "checkpoint": os.path.relpath(path, Path(train_config.run_dir).parent),
    }


def validation_metrics(potential: Potential, loader: SnapshotLoader,
                       train_config: TrainConfig) -> tuple[dict, float]:
    """The metrics of :mod:`.metrics` over ``loader`` and the seconds spent in the model
    (energy and forces), data loading excluded."""
    potential.eval()
    device = potential.atom_refs.device
    sums, seconds = MetricSums(device), 0.0
    for batch in loader:
        batch = batch.to(device)
        started = time.perf_counter()
        energy, forces = energy_and_forces(potential, batch)
        _synchronize(device)
        seconds += time.perf_counter() - started
        sums.add(energy, forces, batch)
    metrics = sums.result(train_config.lambda_e, train_config.lambda_f,
                          train_config.energy_loss == "per_atom")
    return metrics, seconds


def single_molecule_ms(potential: Potential, loader: SnapshotLoader,
                       indices: np.ndarray, warmup: int = 2) -> float:
    """Median milliseconds of one energy + forces call on one molecule, over ``indices``
    (after ``warmup`` untimed calls)."""
    device = potential.atom_refs.device
    batches = [loader.load(indices[k : k + 1]).to(device) for k in range(len(indices))]
    for batch in batches[:warmup]:
        energy_and_forces(potential, batch)
    times = []
    for batch in batches:
        started = time.perf_counter()
        energy_and_forces(potential, batch)
        _synchronize(device)
        times.append(1000.0 * (time.perf_counter() - started))
    return float(np.median(times))


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- output


def _table(config: BenchmarkConfig, store: TrajectoryStore, parts: dict, rows: list) -> dict:
    first = config.train_config(config.models[0])
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "versions": _versions(),
        "device": str(resolve_device(first.device)),
        "torch_threads": torch.get_num_threads(),
        "units": {**UNITS, "energy_mae": "meV/atom", "energy_mae_total": "meV",
                  "force_rmse": "meV/Angstrom", "force_mae": "meV/Angstrom",
                  "train_seconds": "s", "ms_per_molecule": "ms"},
        "config": config.to_dict(),
        "train_config": {k: v for k, v in first.to_dict().items()
                         if k not in ("run_dir", "model", "model_config")},
        "data": {"path": str(store.path), "fingerprint": store.fingerprint,
                 **{f"n_{name}_snapshots": int(ix.size) for name, ix in parts.items()}},
        "rows": rows,
    }


def _versions() -> dict:
    versions = {"force2geo": __version__, "torch": str(torch.__version__)}
    for package in ("mace-torch", "e3nn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def markdown_table(table: dict) -> str:
    """The rows of ``table`` as Markdown, under a line saying what the budget was."""
    config = table["config"]
    budget = (f"{config['steps']} optimizer steps" if config["steps"] is not None
              else f"{config['minutes']:g} minutes of training")
    data = table["data"]
    lines = [f"Budget: {budget} per model, seed {config['seed']}, on {data['path']} "
             f"({data.get('n_valid_snapshots', 0)} validation snapshots), device "
             f"{table['device']}.", "",
             "| " + " | ".join(header for _, header, _ in COLUMNS) + " |",
             "|" + "|".join(" --- " if key == "model" else " ---: " for key, _, _ in COLUMNS)
             + "|"]
    for row in table["rows"]:
        cells = [_cell(row.get(key), fmt) for key, _, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return fmt.format(value)
