"""Readers of the real dataset formats, behind one contract.

Each reader module defines::

    detect(path: Path) -> bool
        True when ``path`` (a file, or the folder holding a release's files) is in this format.
    read(path: Path, on_error=None, **options) -> Iterator[Trajectory]
        Yield validated trajectories in eV / Å / eV/Å. A bad record raises
        :class:`~force2geo.errors.InputError` naming file and record; when ``on_error``
        is given it is called with that error instead and reading goes on. Problems with
        the whole input (missing path, empty file, unreadable container) always raise.

Formats are tried by ``detect`` in the order of :data:`FORMATS` when none is named.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError

# name -> module; dataset releases (folders) before generic single-file formats.
FORMATS: dict[str, str] = {
    "pubchemqcr": "force2geo.data.readers.pubchemqcr",
    "molecule3d": "force2geo.data.readers.molecule3d",
    "qm9": "force2geo.data.readers.qm9",
    "nabla2dft": "force2geo.data.readers.nabla2dft",
    "extxyz": "force2geo.data.readers.extxyz",
    "asedb": "force2geo.data.readers.asedb",
    "sdf": "force2geo.data.readers.sdf",
}


def reader(name: str):
    if name not in FORMATS:
        raise ValueError(f"unknown format {name!r}; choose from {', '.join(FORMATS)}")
    return importlib.import_module(FORMATS[name])


def detect_format(path: str | os.PathLike) -> str:
    """The name of the format of ``path``; raise :class:`InputError` if none fits."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    for name in FORMATS:
        if reader(name).detect(path):
            return name
    raise InputError(path, f"cannot tell the format; name one of: {', '.join(FORMATS)}")


def read(path: str | os.PathLike, format: str | None = None,
         on_error: Callable[[InputError], None] | None = None, **options) -> Iterator[Trajectory]:
    """Yield the trajectories of ``path`` in the named (or detected) format."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    return reader(format or detect_format(path)).read(path, on_error=on_error, **options)
