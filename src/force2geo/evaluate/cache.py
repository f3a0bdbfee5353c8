"""Crash-safe files of an evaluation folder: JSON-lines caches and atomic writes.

Each cache line is one molecule's result, written and fsynced as soon as it is known, so a
killed run loses at most the line being written; on reading, a torn last line is cut off.
NaN is written as ``null`` (strict JSON) and read back as NaN by :func:`number`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from force2geo.errors import InputError


def strict(value):
    """``value`` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [strict(item) for item in value]
    return value


def number(value) -> float:
    """A float from a JSON value; None (a failed value) is NaN."""
    return math.nan if value is None else float(value)


def write_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` under a temporary name, fsync, then rename."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | os.PathLike, record: dict) -> Path:
    return write_atomic(path, json.dumps(strict(record), indent=1, allow_nan=False) + "\n")


class JsonlCache:
    """Records keyed by ``trajectory`` in a JSON-lines file; :meth:`add` appends one."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[int, dict] = {}
        if self.path.exists():
            self._read()
        self._handle = None

    def _read(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):  # torn by a kill mid-write: drop that line
            cut = data.rfind(b"\n") + 1
            with open(self.path, "r+b") as handle:
                handle.truncate(cut)
            data = data[:cut]
        for number_, line in enumerate(data.decode("utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                key = int(record["trajectory"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise InputError(self.path, f"not a cache line ({exc}); delete the file to "
                                 "recompute it", record=f"line {number_}") from None
            self.records[key] = record

    def __contains__(self, trajectory: int) -> bool:
        return int(trajectory) in self.records

    def __getitem__(self, trajectory: int) -> dict:
        return self.records[int(trajectory)]

    def add(self, record: dict) -> None:
        """Append ``record`` (it must hold ``trajectory``) and fsync it."""
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
        record = strict(record)
        self._handle.write(json.dumps(record, allow_nan=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self.records[int(record["trajectory"])] = record

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def __enter__(self) -> JsonlCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
