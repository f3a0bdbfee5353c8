"""Errors that speak to the user: each names the file, the record and the reason."""

from __future__ import annotations

import os


class Force2GeoError(Exception):
    """Base class of every error force2geo raises on purpose."""


class InputError(Force2GeoError, ValueError):
    """Bad input: a file that is missing, malformed, or holds an invalid record.

    ``str(err)`` is one line: ``PATH[: record R]: REASON``.
    """

    def __init__(self, path: str | os.PathLike | None, reason: str, record: object = None):
        self.path = None if path is None else os.fspath(path)
        self.record = record
        self.reason = reason
        where = self.path or "<input>"
        if record is not None:
            where = f"{where}: record {record}"
        super().__init__(f"{where}: {reason}")


class StoreError(Force2GeoError, OSError):
    """A trajectory store that cannot be read: missing, truncated, corrupt or mismatched."""
