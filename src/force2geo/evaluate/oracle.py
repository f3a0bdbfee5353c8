"""Oracle single points for the evaluation, one molecule per task, in a process pool.

For each molecule the oracle (GFN2-xTB through tblite, or B3LYP/6-31G* through PySCF)
computes energy (eV) and forces (eV/Å) at the start ``c_0``, at the MLIP-relaxed ``c_T``
and at the stored reference ``c_gt``; when there is no stored reference it makes one by
relaxing ``c_0`` itself with ASE BFGS (fmax 0.05 eV/Å, at most 500 steps). One engine per
molecule computes ``c_0``, ``c_T``, ``c_gt`` in that order, so the SCF guesses and the
results do not depend on which worker ran which molecule before.

Workers are ``spawn``-ed processes with one thread each (the thread variables are set
before tblite or PySCF is imported). A failed calculation is recorded per geometry in the
result's ``errors``; it never stops the run. This module imports no torch, so workers
start quickly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from force2geo.qc.engines import DFTEngine, Engine, QCError, XTBEngine
from force2geo.qc.pool import single_threaded_pool
from force2geo.qc.protocol import fmax_of, relax_path

ORACLES = ("xtb", "dft")


@dataclass(frozen=True)
class OracleConfig:
    """Which oracle (``xtb``: GFN2-xTB; ``dft``: B3LYP/6-31G* with density fitting) and how
    it makes a missing reference: ASE BFGS to ``fmax`` eV/Å in at most ``max_steps``."""

    name: str = "xtb"
    fmax: float = 0.05
    max_steps: int = 500

    def __post_init__(self) -> None:
        if self.name not in ORACLES:
            raise ValueError(f"oracle must be one of {ORACLES}, got {self.name!r}")
        if self.fmax <= 0 or self.max_steps < 0:
            raise ValueError("oracle fmax must be > 0 eV/Å and max_steps >= 0")

    def engine(self) -> Engine:
        return XTBEngine() if self.name == "xtb" else DFTEngine()

    def level(self) -> str:
        return "GFN2-xTB (tblite)" if self.name == "xtb" else "B3LYP/6-31G* (PySCF, DF)"


@dataclass(frozen=True)
class OracleTask:
    """One molecule: ``trajectory`` index, ``atomic_numbers [n]``, ``charge``, and
    geometries ``c0``, ``c_t``, ``c_gt`` (``[n, 3]`` Å; ``c_gt`` None: make it)."""

    trajectory: int
    atomic_numbers: np.ndarray
    charge: int
    c0: np.ndarray
    c_t: np.ndarray
    c_gt: np.ndarray | None
    config: OracleConfig


def _failure(exc: Exception) -> str:
    if isinstance(exc, QCError):
        return exc.reason
    return f"internal: {type(exc).__name__}: {exc}"


def _single_point(engine: Engine, task: OracleTask, positions: np.ndarray
                  ) -> tuple[float, float]:
    """Energy (eV) and max atomic force norm (eV/Å) at ``positions``."""
    if not np.isfinite(positions).all():
        raise QCError("geometry has non-finite coordinates")
    result = engine.compute(task.atomic_numbers, positions, task.charge)
    return float(result.energy), fmax_of(result.forces)


def _reference(engine: Engine, task: OracleTask, out: dict) -> None:
    """Fill ``e_gt``, ``fmax_gt`` (and, when the oracle makes it, ``gt_positions`` and
    ``gt_steps``) of ``out``."""
    if task.c_gt is not None:
        out["e_gt"], out["fmax_gt"] = _single_point(engine, task, task.c_gt)
        return
    config = task.config
    path = relax_path(engine, task.atomic_numbers, task.c0, task.charge, config.fmax,
                      config.max_steps)
    out["gt_steps"] = int(path.energy.shape[0] - 1)
    if not path.converged:
        raise QCError(f"oracle relaxation of c_0 not converged in {config.max_steps} steps "
                      f"(fmax {fmax_of(path.forces[-1]):.3f} eV/Å)")
    out["gt_positions"] = path.positions[-1].tolist()
    out["e_gt"], out["fmax_gt"] = float(path.energy[-1]), fmax_of(path.forces[-1])


def score(task: OracleTask) -> dict:
    """Oracle results of one molecule, JSON-ready: ``trajectory``, ``e0``, ``e_t``,
    ``e_gt`` (eV), ``fmax0``, ``fmax_t``, ``fmax_gt`` (eV/Å), ``gt_source`` (``stage`` or
    ``oracle``), ``gt_positions`` (``[n, 3]`` Å when made), ``gt_steps``, and ``errors``
    (geometry -> reason). A failed value is NaN (None in JSON)."""
    nan = math.nan
    out = {"trajectory": task.trajectory, "e0": nan, "fmax0": nan, "e_t": nan, "fmax_t": nan,
           "e_gt": nan, "fmax_gt": nan,
           "gt_source": "stage" if task.c_gt is not None else "oracle",
           "gt_positions": None, "gt_steps": None, "errors": {}}
    try:
        engine = task.config.engine()
    except Exception as exc:  # an oracle that cannot start fails every geometry alike
        out["errors"] = dict.fromkeys(("c0", "c_t", "c_gt"), _failure(exc))
        return out
    geometries = (("c0", task.c0, ("e0", "fmax0")), ("c_t", task.c_t, ("e_t", "fmax_t")))
    for where, positions, keys in geometries:
        try:
            out.update(zip(keys, _single_point(engine, task, positions), strict=True))
        except Exception as exc:  # one bad geometry must not end a long evaluation
            out["errors"][where] = _failure(exc)
    try:
        _reference(engine, task, out)
    except Exception as exc:
        out["errors"]["c_gt"] = _failure(exc)
    return out


def run_oracle(tasks: Sequence[OracleTask], workers: int,
               on_result: Callable[[dict], None], progress: bool = True) -> None:
    """:func:`score` every task and pass each result to ``on_result`` as it comes (in
    completion order). ``workers`` > 1: a ``spawn`` pool of single-threaded processes;
    1: in this process."""
    if not tasks:
        return
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), unit="mol", desc="oracle", disable=not progress,
               dynamic_ncols=True)
    try:
        for result in _results(tasks, workers):
            on_result(result)
            bar.update(1)
    finally:
        bar.close()


def _results(tasks: Sequence[OracleTask], workers: int) -> Iterable[dict]:
    if workers <= 1:
        yield from map(score, tasks)
        return
    pool = single_threaded_pool(min(workers, len(tasks)))
    try:
        yield from pool.imap_unordered(score, tasks)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def config_dict(config: OracleConfig) -> dict:
    return {**asdict(config), "level": config.level()}
