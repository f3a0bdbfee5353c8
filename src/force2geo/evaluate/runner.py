"""Evaluate MLIP relaxations against a quantum-chemistry oracle (paper §4.2, A.2).

:func:`evaluate_relaxation` runs, for the molecules of D_opt (see :mod:`.selection`):

1. the MLIP relaxation of every start ``c_0`` to ``c_T`` (batched BFGS of
   :mod:`force2geo.relax`), each result cached to ``REPORT_DIR/mlip.jsonl``;
2. the oracle single points at ``c_0``, ``c_T``, ``c_gt`` (or the oracle's own relaxation
   of ``c_0`` when there is no stored ``c_gt``) in a process pool, each molecule cached to
   ``REPORT_DIR/oracle.jsonl``;
3. the metrics and the report (:mod:`.report`).

A killed run resumes: the same command reuses the recorded D_opt and every cached
molecule. A folder holding a run with another model, store or settings is refused unless
``overwrite`` (which starts afresh). ``REPORT_DIR/evaluate.json`` records the run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from force2geo import __version__
from force2geo.atomic import file_sha256
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.evaluate import report
from force2geo.evaluate.cache import JsonlCache, write_json
from force2geo.evaluate.metrics import FWT_FMAX, MIN_DROP, SUCCESS_KCAL
from force2geo.evaluate.oracle import OracleConfig, OracleTask, config_dict, run_oracle
from force2geo.evaluate.selection import Case, choose_molecules, make_case
from force2geo.relax.engine import RelaxConfig
from force2geo.units import UNITS

logger = logging.getLogger(__name__)

RECORD = "evaluate.json"
MLIP_CACHE = "mlip.jsonl"
ORACLE_CACHE = "oracle.jsonl"
REFERENCES = ("stage", "oracle")


@dataclass(frozen=True)
class EvalConfig:
    """What to evaluate and how.

    Molecules: snapshots of ``stage``; start at snapshot ``start`` of it (0 = first);
    ``reference`` ``stage`` (its last snapshot, when after the start; else the oracle
    makes it) or ``oracle`` (always made by the oracle). D_opt: ``k`` molecules picked by
    MaxMin (``seed``) from ``split`` (``FILE:PART``) or the whole store, or the trajectories
    of ``select`` (a selection file). ``relax``: the MLIP relaxation; ``oracle``: the
    oracle; ``workers`` oracle processes (0: one per CPU core). Thresholds:
    ``success_kcal`` kcal/mol, ``fwt_fmax`` eV/Å, ``min_drop`` eV (see :mod:`.metrics`).
    """

    stage: str = "xtb"
    start: int = 0
    reference: str = "stage"
    k: int = 100
    seed: int = 42
    split: str | None = None
    select: str | None = None
    relax: RelaxConfig = field(default_factory=RelaxConfig)
    oracle: OracleConfig = field(default_factory=OracleConfig)
    workers: int = 0
    success_kcal: float = SUCCESS_KCAL
    fwt_fmax: float = FWT_FMAX
    min_drop: float = MIN_DROP

    def __post_init__(self) -> None:
        if self.reference not in REFERENCES:
            raise ValueError(f"reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.split is not None and self.select is not None:
            raise ValueError("give a split part to pick from or a selection, not both")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["oracle"] = config_dict(self.oracle)
        return out


def _signature(config: EvalConfig, store: TrajectoryStore, model_files: list[Path]) -> dict:
    """What must not change between a run and its resumption (workers may)."""
    settings = config.to_dict()
    settings.pop("workers")
    digests = [file_sha256(path) for path in model_files]
    return {"store_fingerprint": store.fingerprint,
            "model_sha256": digests[0] if len(digests) == 1 else digests, "config": settings}


def _open_folder(folder: Path, signature: dict, overwrite: bool) -> dict | None:
    """The record of the run to resume in ``folder`` (None: start afresh)."""
    if folder.exists() and not folder.is_dir():
        raise InputError(folder, "exists and is not a folder")
    path = folder / RECORD
    if not path.exists():
        return None
    if overwrite:
        for name in (RECORD, MLIP_CACHE, ORACLE_CACHE, *report.OUTPUTS):
            (folder / name).unlink(missing_ok=True)
        return None
    previous = report.read_json(path)
    if previous.get("signature") != signature:
        old = previous.get("signature") or {}
        changed = [key for key in signature if old.get(key) != signature[key]]
        if "config" in changed:
            settings = old.get("config") or {}
            changed += [f"config.{k}" for k in signature["config"]
                        if settings.get(k) != signature["config"][k]]
        raise InputError(folder, f"holds an evaluation with a different {', '.join(changed)}; "
                         "pass --overwrite to replace it, or choose another folder")
    return previous


def _relax_missing(cases: list[Case], cache: JsonlCache, potential, config: RelaxConfig,
                   device, progress: bool) -> None:
    """Relax with the MLIP every case not yet in ``cache``; cache each as it finishes.

    A case the model cannot treat (:func:`force2geo.relax.screen.screen`) is cached as
    ``failed`` with its ``reason`` and no geometry (NaN): the oracle cannot score a c_T
    there, so the metrics count it as diverged."""
    from tqdm import tqdm

    from force2geo.pretrained.ensemble import uncertainty
    from force2geo.relax import potential_force_fn, relax_iter
    from force2geo.relax.screen import FAILED, screen

    todo = [case for case in cases if case.trajectory not in cache]
    if not todo:
        return
    bar = tqdm(total=len(cases), initial=len(cases) - len(todo), unit="mol", desc="MLIP relax",
               disable=not progress, dynamic_ncols=True)
    relax = []
    for case in todo:
        reason = screen(case.atomic_numbers, case.c0, potential)
        if reason is None:
            relax.append(case)
            continue
        nowhere = np.full_like(case.c0, np.nan, dtype=np.float64).tolist()
        cache.add({"trajectory": case.trajectory, "positions": nowhere, "energy": None,
                   "fmax": None, "n_steps": 0, "status": FAILED, "reason": reason})
        bar.update(1)
    starts = [(case.atomic_numbers, case.c0) for case in relax]
    for result in relax_iter(potential_force_fn(potential), starts, config, device=device):
        spread = uncertainty(potential, result.atomic_numbers, result.positions, device)
        cache.add({"trajectory": relax[result.index].trajectory,
                   "positions": result.positions.tolist(), "energy": float(result.energy),
                   "fmax": float(result.fmax), "n_steps": int(result.n_steps),
                   "status": result.status, **spread})
        bar.update(1)
    bar.close()


def _oracle_missing(cases: list[Case], mlip: JsonlCache, cache: JsonlCache,
                    config: EvalConfig, progress: bool) -> None:
    """Oracle single points of every case not yet in ``cache``; cache each as it comes."""
    tasks = [OracleTask(case.trajectory, case.atomic_numbers, case.charge, case.c0,
                        np.array(mlip[case.trajectory]["positions"], dtype=np.float64),
                        case.c_gt, config.oracle)
             for case in cases if case.trajectory not in cache]
    workers = config.workers or os.cpu_count() or 1
    run_oracle(tasks, workers, cache.add, progress)


def _versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"force2geo": __version__, "python": platform.python_version()}
    for package in ("torch", "numpy", "ase", "rdkit", "tblite", "pyscf"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def evaluate_relaxation(model: str | os.PathLike | None, store: str | os.PathLike,
                        report_dir: str | os.PathLike, config: EvalConfig = EvalConfig(),
                        device: str = "cpu", overwrite: bool = False,
                        progress: bool = True) -> dict:
    """Run the evaluation (see the module docstring); return ``metrics.json``'s content.

    ``model``: anything :func:`force2geo.pretrained.resolve_model` takes (None: the shipped
    model)."""
    from force2geo.pretrained import DEFAULT, model_files, resolve_model

    started = time.perf_counter()
    folder = Path(report_dir)
    store = TrajectoryStore(store)
    files = model_files(model)
    model = os.fspath(model) if model is not None else DEFAULT
    signature = _signature(config, store, files)
    previous = _open_folder(folder, signature, overwrite)
    if previous is not None:
        chosen = [int(j) for j in previous["trajectories"]]
        logger.info("%s: resuming an evaluation of %d molecules", folder, len(chosen))
    else:
        chosen = choose_molecules(store, config.stage, config.k, config.seed, config.split,
                                  config.select).tolist()
    cases = [make_case(store, j, config.stage, config.start, config.reference) for j in chosen]
    record = {"command": "force2geo evaluate relax", "status": "running", "model": str(model),
              "store": str(store.path), "signature": signature, "device": str(device),
              "workers": config.workers, "units": dict(UNITS), "versions": _versions(),
              "trajectories": chosen}
    potential = resolve_model(model, device=device)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RECORD, record)
    with JsonlCache(folder / MLIP_CACHE) as mlip, JsonlCache(folder / ORACLE_CACHE) as oracle:
        _relax_missing(cases, mlip, potential, config.relax, device, progress)
        _oracle_missing(cases, mlip, oracle, config, progress)
        rows = report.molecule_rows(cases, mlip.records, oracle.records)
    metrics = report.write_report(folder, rows, config.to_dict(), str(model), str(store.path))
    record.update(status="finished", wall_s=round(time.perf_counter() - started, 3))
    write_json(folder / RECORD, record)
    return metrics
