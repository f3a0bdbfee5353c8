"""Write files whole or not at all: a temporary sibling, fsync, then an atomic rename.

Every file force2geo writes for a user (split files, run records, checkpoints, reports)
goes through :func:`atomic_open`, so a crash or an error never leaves a half-written file
under the final name, and an existing file is replaced only by a complete new one.
:func:`file_sha256` gives the digest that records and registries keep of such files.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; rename it into place on success.

    The temporary file keeps ``path``'s suffix (some writers, e.g. matplotlib, look at it).
    On an exception it is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}{path.suffix}"
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
    return Path(path)


def write_json(path: str | os.PathLike, obj, **dump_kwargs) -> Path:
    return write_text(path, json.dumps(obj, **dump_kwargs) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in 16 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()
