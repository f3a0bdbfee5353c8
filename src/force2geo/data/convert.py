"""Import any format of the reader registry into a trajectory store, all or nothing.

:func:`convert` reads ``source`` with the named (or detected) reader and writes the valid
trajectories to ``store``:

- A new store is written to a hidden temporary sibling (``.NAME.converting-PID``) and
  renamed into place only when the whole conversion succeeded; on any error or interrupt
  the temporary folder is removed, so nothing half-written is left. If no valid record is
  found, it is an error and nothing is left either.
- An existing store is refused unless ``append`` (add new shards to it; shards are
  crash-safe, so an abort keeps the whole shards written before it and what was read up
  to the abort) or ``overwrite`` (replace it, again only once the new one is complete).
- Bad records are skipped: each is passed to ``on_error`` and written as one JSON line
  (``path``, ``record``, ``reason``, ``message``, ``format``) to ``STORE/errors.jsonl``,
  appended to on every conversion. With ``strict`` the first bad record aborts instead.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from force2geo.data.readers import detect_format, reader
from force2geo.data.store import DEFAULT_SHARD_SNAPSHOTS, MANIFEST, TrajectoryWriter
from force2geo.errors import InputError

ERRORS_FILE = "errors.jsonl"


@dataclass
class ConvertStats:
    """What one conversion did; ``errors_path`` is None when no record was bad."""

    source: str
    store: str
    format: str
    read: int = 0  # valid trajectories the reader yielded
    written: int = 0  # trajectories written to the store
    snapshots: int = 0  # snapshots written to the store
    skipped: int = 0  # bad records reported by the reader and skipped
    filtered: int = 0  # valid trajectories with no snapshot in the requested stages
    errors_path: str | None = None

    def summary(self) -> str:
        text = (f"read {self.read:,} trajectories, wrote {self.written:,} "
                f"({self.snapshots:,} snapshots) to {self.store}, "
                f"skipped {self.skipped:,} bad record(s)")
        if self.filtered:
            text += f", {self.filtered:,} without the requested stages"
        if self.errors_path:
            text += f"; bad records listed in {self.errors_path}"
        return text


class _ErrorLog:
    """Counts bad records and appends them to ``errors.jsonl``, opened on first use."""

    def __init__(self, folder: Path, fmt: str, stats: ConvertStats,
                 forward: Callable[[InputError], None] | None, bar: tqdm):
        self.path = folder / ERRORS_FILE
        self.format, self.stats, self.forward, self.bar = fmt, stats, forward, bar
        self.handle = None

    def __call__(self, err: InputError) -> None:
        self.stats.skipped += 1
        if self.handle is None:
            self.handle = open(self.path, "a", encoding="utf-8")
        entry = {"path": err.path, "record": err.record, "reason": err.reason,
                 "message": str(err), "format": self.format}
        self.handle.write(json.dumps(entry, default=str) + "\n")
        self.bar.set_postfix(skipped=self.stats.skipped, refresh=False)
        if self.forward is not None:
            self.forward(err)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _check_store(store: Path, append: bool, overwrite: bool) -> bool:
    """Whether ``store`` already holds data; refuse what the flags do not allow."""
    if append and overwrite:
        raise InputError(store, "choose either append or overwrite, not both")
    if not store.exists() or (store.is_dir() and not any(store.iterdir())):
        return False
    is_store = store.is_dir() and (store / MANIFEST).is_file()
    if not is_store:
        raise InputError(store, "exists and is not a trajectory store; choose another path")
    if not (append or overwrite):
        raise InputError(store, "trajectory store exists; pass --append to add to it or "
                         "--overwrite to replace it")
    return True


def _reader_options(module, fmt: str, source: Path, options: dict,
                    stages: Sequence[str] | None) -> dict:
    """Check ``options`` against the reader's ``read`` signature; add ``stages`` if taken."""
    params = inspect.signature(module.read).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    known = [name for name in params if name not in ("path", "on_error")
             and params[name].kind is not inspect.Parameter.VAR_KEYWORD]
    unknown = [name for name in options if name not in known]
    if unknown and not takes_any:
        raise InputError(source, f"format {fmt!r} has no option(s) {', '.join(unknown)} "
                         f"(its options: {', '.join(known) or 'none'})")
    options = dict(options)
    if stages and ("stages" in known or takes_any):
        options["stages"] = list(stages)
    return options


def _make_parents(folder: Path) -> list[Path]:
    """Create ``folder`` and missing parents; return those created, deepest first."""
    created = []
    for parent in [folder, *folder.parents]:
        if parent.exists():
            break
        created.append(parent)
    folder.mkdir(parents=True, exist_ok=True)
    return created


def _pump(trajectories, writer: TrajectoryWriter, stats: ConvertStats,
          stages: Sequence[str] | None, limit: int | None, bar: tqdm) -> None:
    """Write the (stage-selected) trajectories until the reader or ``limit`` runs out."""
    for trajectory in trajectories:
        stats.read += 1
        if stages:
            trajectory = trajectory.select(list(stages))
            if trajectory is None:
                stats.filtered += 1
                continue
        writer.add(trajectory)
        stats.written += 1
        stats.snapshots += trajectory.n_snapshots
        bar.update(1)
        if limit is not None and stats.written >= limit:
            return


def _publish(tmp: Path, store: Path, replace: bool) -> None:
    """Rename the finished ``tmp`` store to ``store``, replacing an old one if asked."""
    trash = None
    if replace and store.exists():
        trash = store.with_name(f".{store.name}.replaced-{os.getpid()}")
        os.rename(store, trash)
    try:
        os.rename(tmp, store)
    except OSError as exc:
        if trash is not None:
            os.rename(trash, store)
        raise InputError(store, f"cannot move the new store into place ({exc}); "
                         "was it created meanwhile?") from None
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


@dataclass
class _Job:
    """One conversion's settings, resolved: where to read, where to write, how."""

    module: object
    source: Path
    target: Path
    in_place: bool
    options: dict
    stages: Sequence[str] | None
    limit: int | None
    strict: bool
    on_error: Callable[[InputError], None] | None
    progress: bool
    shard_snapshots: int


def convert(
    source: str | os.PathLike, store: str | os.PathLike, format: str | None = None, *,
    append: bool = False, overwrite: bool = False, limit: int | None = None,
    stages: Sequence[str] | None = None, strict: bool = False, options: dict | None = None,
    on_error: Callable[[InputError], None] | None = None, progress: bool = False,
    shard_snapshots: int = DEFAULT_SHARD_SNAPSHOTS,
) -> ConvertStats:
    """Import ``source`` (a file or a release folder) into the store folder ``store``.

    ``format`` names a reader of :data:`~force2geo.data.readers.FORMATS` (detected when
    None); ``options`` are passed to that reader (checked against its signature), and
    ``stages`` too when the reader takes it, besides keeping only snapshots of those
    stages. ``limit`` caps the trajectories written. ``progress`` shows a tqdm bar on
    stderr. Raises :class:`InputError` for a bad source, a refused store, a bad record
    under ``strict``, or when no valid record was found. See the module docstring.
    """
    source, store = Path(source), Path(store)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if not source.exists():
        raise InputError(source, "no such file or folder")
    exists = _check_store(store, append, overwrite)
    fmt = format or detect_format(source)
    module = reader(fmt)
    in_place = append and exists
    job = _Job(module, source,
               store if in_place else store.with_name(f".{store.name}.converting-{os.getpid()}"),
               in_place, _reader_options(module, fmt, source, options or {}, stages), stages,
               limit, strict, on_error, progress, shard_snapshots)
    stats = ConvertStats(str(source), str(store), fmt)
    created = [] if in_place else _make_parents(store.parent)
    try:
        _run(job, stats)
        if not in_place:
            _publish(job.target, store, replace=exists)
    except BaseException:
        if not in_place:
            shutil.rmtree(job.target, ignore_errors=True)
            for folder in created:
                if folder.exists() and not any(folder.iterdir()):
                    folder.rmdir()
        raise
    if stats.skipped:
        stats.errors_path = str(store / ERRORS_FILE)
    return stats


def _run(job: _Job, stats: ConvertStats) -> None:
    """Read the source into the store folder ``job.target``; raise if nothing was valid."""
    writer = TrajectoryWriter(job.target, source=f"{stats.format}:{job.source.resolve()}",
                              shard_snapshots=job.shard_snapshots).create()
    bar = tqdm(total=job.limit, unit="traj", desc=f"convert {job.source.name}",
               file=sys.stderr, disable=not job.progress, dynamic_ncols=True)
    errors = _ErrorLog(job.target, stats.format, stats, job.on_error, bar)
    trajectories = None
    try:
        trajectories = job.module.read(job.source, on_error=None if job.strict else errors,
                                       **job.options)
        _pump(trajectories, writer, stats, job.stages, job.limit, bar)
    except InputError as err:
        if job.in_place and stats.written:
            raise InputError(err.path, f"{err.reason} (aborted; the {stats.written} "
                             "trajectories read before it were appended)", err.record) from None
        raise
    finally:
        if hasattr(trajectories, "close"):  # a generator stopped by --limit: close its file
            trajectories.close()
        writer.close()
        errors.close()
        bar.close()
    if stats.written == 0:
        why = f"{stats.skipped} bad record(s)" if stats.skipped else "no records"
        if stats.filtered:
            why += f", {stats.filtered} without stages {', '.join(job.stages)}"
        raise InputError(job.source, f"no valid trajectory to write ({why}); nothing written")
