"""Relaxation trajectories for many molecules, in parallel, resumable after a kill.

Layout of the output store folder (a :class:`~force2geo.data.store.TrajectoryStore`)::

    STORE/manifest.json, shard-*/   trajectories, written by the parent process only
    STORE/failures.jsonl            one JSON object per failed molecule:
                                    {"name", "smiles", "stage", "reason"}
    STORE/generate.json             the run record: config, versions, counts, timings

Workers (a ``spawn`` pool, one thread each) run :func:`relax_molecule`; the parent writes
results, flushing a shard every ``flush_every`` molecules or ``flush_seconds``. A killed
run loses at most the unflushed molecules: on restart, names already in the store or in
the failure log are skipped, so nothing is lost or written twice.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from force2geo import __version__, atomic
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.qc.engines import QCError
from force2geo.qc.molecules import Molecule
from force2geo.qc.pool import run_tasks
from force2geo.qc.protocol import ProtocolConfig, relax_molecule
from force2geo.qc.shard import shard_slice, shard_text

log = logging.getLogger(__name__)

FAILURES = "failures.jsonl"
RUN_RECORD = "generate.json"


@dataclass
class GenerateStats:
    """Counts and timing of one :func:`generate` call."""

    requested: int = 0
    skipped: int = 0
    written: int = 0
    failed: int = 0
    wall_s: float = 0.0

    @property
    def processed(self) -> int:
        return self.written + self.failed

    @property
    def molecules_per_hour(self) -> float:
        """Molecules finished (written or failed) per hour of wall time in this run."""
        return 3600.0 * self.processed / self.wall_s if self.wall_s > 0 else 0.0


# --------------------------------------------------------------------------- workers


def _work(task: tuple[Molecule, ProtocolConfig]) -> tuple[str, Trajectory | dict]:
    """Run the protocol on one molecule: ``("ok", trajectory)`` or ``("fail", record)``."""
    molecule, config = task
    try:
        return "ok", relax_molecule(molecule.smiles, molecule.name, config)
    except QCError as exc:
        stage, reason = exc.stage or "unknown", exc.reason
    except Exception as exc:  # a crash on one molecule must not end a days-long run
        stage, reason = "internal", f"{type(exc).__name__}: {exc}"
    return "fail", {"name": molecule.name, "smiles": molecule.smiles,
                    "stage": stage, "reason": reason}


# --------------------------------------------------------------------------- failure log


def read_failures(store_path: str | os.PathLike) -> list[dict]:
    """Records of ``STORE/failures.jsonl``; a torn last line (a kill mid-write) is cut off."""
    path = Path(store_path) / FAILURES
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        with open(path, "r+b") as handle:
            handle.truncate(cut)
        data = data[:cut]
    records = []
    for number, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise InputError(path, f"not a JSON line ({exc.msg})", record=number) from None
    return records


def _rewrite_failures(store_path: Path, records: list[dict]) -> None:
    atomic.write_text(store_path / FAILURES, "".join(json.dumps(r) + "\n" for r in records))


class _FailureLog:
    """Appends one fsynced JSON line per failure, so a kill loses none."""

    def __init__(self, path: Path):
        self._handle = open(path, "a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        self._handle.close()


# --------------------------------------------------------------------------- run record


def _versions() -> dict[str, str]:
    import ase
    import numpy
    import rdkit

    versions = {"force2geo": __version__, "python": platform.python_version(),
                "numpy": numpy.__version__, "ase": ase.__version__, "rdkit": rdkit.__version__}
    from importlib.metadata import PackageNotFoundError, version

    for package in ("tblite", "pyscf"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _levels(config: ProtocolConfig) -> dict[str, str]:
    levels = {"etkdg": "MMFF94", "mmff": "MMFF94", "xtb": "GFN2-xTB"}
    if config.dft != "none":
        levels["dft"] = f"{config.dft_xc.upper()}/{config.dft_basis.upper()} (density fitting)"
    return levels


def _write_record(store_path: Path, record: dict) -> None:
    atomic.write_json(store_path / RUN_RECORD, record, indent=1)


def _check_same_config(store_path: Path, config: ProtocolConfig) -> None:
    path = store_path / RUN_RECORD
    if not path.exists():
        return
    try:
        previous = json.loads(path.read_text()).get("config")
    except json.JSONDecodeError:
        return  # a torn record says nothing; the new run rewrites it
    current = json.loads(json.dumps(asdict(config)))
    if previous is not None and previous != current:
        changed = sorted(k for k in set(previous) | set(current)
                         if previous.get(k) != current.get(k))
        raise InputError(store_path, "was generated with a different protocol config "
                         f"({', '.join(changed)} differ); use a new store to change it")


# --------------------------------------------------------------------------- driver


def _check_unique(molecules: Sequence[Molecule]) -> None:
    names = [m.name for m in molecules]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})[:5]
        raise InputError(None, f"molecule names must be unique; repeated: {dupes}")


def _todo(molecules: Sequence[Molecule], store_path: Path, retry_failed: bool
          ) -> tuple[list[Molecule], int]:
    """The molecules not yet in the store nor in the failure log, and how many were."""
    done = set(TrajectoryStore(store_path).identifiers("name"))
    failures = read_failures(store_path)
    if retry_failed and failures:
        wanted = {m.name for m in molecules}
        _rewrite_failures(store_path, [r for r in failures if r.get("name") not in wanted])
    else:
        done.update(r.get("name") for r in failures)
    todo = [m for m in molecules if m.name not in done]
    return todo, len(molecules) - len(todo)


def _start_record(config: ProtocolConfig, workers: int, source: str | None) -> dict:
    return {"status": "running", "config": asdict(config), "levels": _levels(config),
            "units": {"energy": "eV", "positions": "Angstrom", "forces": "eV/Angstrom",
                      "properties": "eV"},
            "workers": workers, "source": source, "versions": _versions(),
            "started": _now(), "command": " ".join(sys.argv)}


def _finish_record(record: dict, stats: GenerateStats) -> dict:
    if record["status"] == "running":
        record["status"] = "interrupted"
    hours = max(stats.wall_s, 1e-9) / 3600.0
    record.update(finished=_now(), counts=asdict(stats), wall_s=round(stats.wall_s, 3),
                  molecules_per_hour=round(stats.processed / hours, 1),
                  written_per_hour=round(stats.written / hours, 1))
    return record


def generate(molecules: Sequence[Molecule], store_path: str | os.PathLike,
             config: ProtocolConfig | None = None, workers: int | None = None,
             flush_every: int = 16, flush_seconds: float = 30.0, retry_failed: bool = False,
             progress: bool = True, source: str | None = None,
             shard: tuple[int, int] | None = None) -> GenerateStats:
    """Relax ``molecules`` with the protocol and append their trajectories to a store.

    ``workers`` processes (default: all cores) run one molecule each at a time, single
    threaded. Molecules already in the store or in ``failures.jsonl`` are skipped
    (``retry_failed`` runs the failed ones again). A store made with a different
    ``config`` is refused. ``shard = (I, N)`` relaxes only the I-th round-robin slice
    of ``molecules`` (:mod:`force2geo.qc.shard`). Returns counts and wall time.
    """
    store_path = Path(store_path)
    config = config or ProtocolConfig()
    workers = max(1, int(workers or os.cpu_count() or 1))
    started = time.time()
    _check_unique(molecules)
    molecules = shard_slice(molecules, shard)
    _check_same_config(store_path, config)
    # The writer takes the store's lock first: a second generate on it fails here.
    writer = TrajectoryWriter(store_path, source=source or "force2geo generate").create()
    failures = None
    stats = GenerateStats(requested=len(molecules))
    record = {**_start_record(config, workers, source), "shard": shard_text(shard)}
    try:
        todo, stats.skipped = _todo(molecules, store_path, retry_failed)
        failures = _FailureLog(store_path / FAILURES)
        _write_record(store_path, {**record, "counts": asdict(stats)})
        _run_pool(todo, config, workers, writer, failures, stats, flush_every, flush_seconds,
                  progress)
        record["status"] = "finished"
    finally:
        writer.close()
        if failures is not None:
            failures.close()
        stats.wall_s = time.time() - started
        _write_record(store_path, _finish_record(record, stats))
    return stats


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _run_pool(todo: list[Molecule], config: ProtocolConfig, workers: int,
              writer: TrajectoryWriter, failures: _FailureLog, stats: GenerateStats,
              flush_every: int, flush_seconds: float, progress: bool) -> None:
    """Feed ``todo`` to a worker pool; write results as they come back, in the parent."""
    run_tasks(_work, [(m, config) for m in todo], workers,
              lambda result: _take(*result, writer, failures, stats), writer.flush,
              flush_every, flush_seconds, progress, unit="mol",
              postfix=lambda: {"failed": stats.failed})


def _take(status: str, payload, writer: TrajectoryWriter, failures: _FailureLog,
          stats: GenerateStats) -> None:
    if status == "ok":
        writer.add(payload)
        stats.written += 1
    else:
        failures.write(payload)
        stats.failed += 1
        log.debug("failed %s at %s: %s", payload["name"], payload["stage"], payload["reason"])
