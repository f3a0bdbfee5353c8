"""ASE databases (SQLite ``.db`` or ``.json``), read with :func:`ase.db.connect`.

Each row is one snapshot: ``numbers``, ``positions`` (Å), and, when the row stores them,
``energy`` (eV) and ``forces`` (eV/Å) from the row's calculator columns, else from the
first of :data:`~force2geo.data.readers.extxyz.ENERGY_KEYS` /
:data:`~force2geo.data.readers.extxyz.FORCES_KEYS` found in the row's key-value pairs /
``data``; absent labels are NaN. Option ``energy_key`` / ``forces_key`` names the one key to
use instead. SQLite stores a NaN energy as NULL, so there it reads as absent.

Stage, identifiers and properties come from the key-value pairs exactly as in the extxyz
reader (``stage``, ``name``, ``smiles``, ``inchikey``, ``cid``, ``homo``/``lumo``/``gap``
in eV). The charge is the key ``total_charge``, else the row's charge (ASE reserves the
key ``charge`` for the sum of the initial charges), which must be an integer.

Every row is its own trajectory unless option ``group_by`` names a key (or is ``True`` for
the extxyz default keys): then consecutive rows with the same key value, atoms and charge
form one trajectory. Grouping is off by default because databases often hold conformers of
one molecule, not optimisation steps.

Any ASE database is accepted by :func:`detect`; releases with their own conventions
(∇²DFT) have their own reader, tried first.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import ase.db
import numpy as np

from force2geo.data.readers.extxyz import (
    ENERGY_KEYS,
    FORCES_KEYS,
    group_consecutive,
    group_key,
    info_metadata,
    show_value,
    snapshot,
)
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError

SQLITE_MAGIC = b"SQLite format 3\x00"
_JSON_DB_START = re.compile(rb'\s*\{\s*"(\d+|ids|nextid|metadata)"\s*:')
_DB_ERRORS = (sqlite3.Error, ValueError, KeyError, TypeError, OSError)


def _kind(path: Path) -> str | None:
    """``"db"`` for an SQLite file with ASE's ``systems`` table, ``"json"`` for an ASE
    JSON database, else None."""
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
        return None
    if head.startswith(SQLITE_MAGIC):
        try:
            with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as con:
                found = con.execute("SELECT name FROM sqlite_master WHERE type='table' "
                                    "AND name='systems'").fetchone()
        except sqlite3.Error:
            return None
        return "db" if found else None
    if path.suffix.lower() == ".json" and _JSON_DB_START.match(head):
        return "json"
    return None


def detect(path: Path) -> bool:
    """True for any ASE database file (SQLite with a ``systems`` table, or ASE JSON)."""
    return _kind(Path(path)) is not None


def _label(row, key: str):
    value = row.get(key)
    if value is None:
        value = row.data.get(key) if row.get("data") is not None else None
    return value


def _row_snapshot(row, group_by, energy_key, forces_key, path: Path):
    record = row.id
    energy = forces = None
    for key in (energy_key,) if energy_key else ENERGY_KEYS:
        value = _label(row, key)
        if value is not None:
            try:
                energy = float(value)
            except (TypeError, ValueError):
                raise InputError(path, f"energy {key!r} = {show_value(value)} is not a number",
                                 record) from None
            break
    numbers = np.asarray(row.numbers)
    for key in (forces_key,) if forces_key else FORCES_KEYS:
        value = _label(row, key)
        if value is not None:
            forces = np.asarray(value, dtype=np.float64)
            if forces.shape != (len(numbers), 3):
                raise InputError(path, f"forces {key!r} have shape {forces.shape}, "
                                 f"expected ({len(numbers)}, 3)", record)
            break
    info = dict(row.key_value_pairs)
    if "total_charge" not in info:
        # ASE reserves "charge": it is the sum of the row's initial charges
        info["charge"] = row.charge
    meta = info_metadata(info, path, record)
    key = group_key(info, group_by)
    return key, snapshot(numbers, row.positions, energy, forces, meta, key, path, record)


def _rows(path: Path, kind: str, on_error, group_by, energy_key, forces_key):
    try:
        db = ase.db.connect(str(path), type=kind, create_indices=False, use_lock_file=False)
        rows = iter(db.select())
    except _DB_ERRORS as exc:
        raise InputError(path, f"cannot open ASE database ({type(exc).__name__}: {exc})") \
            from None
    n_rows = 0
    while True:
        try:
            row = next(rows)
        except StopIteration:
            break
        except _DB_ERRORS as exc:
            raise InputError(path, f"cannot read the row after row {n_rows} "
                             f"({type(exc).__name__}: {exc})") from None
        n_rows += 1
        try:
            item = _row_snapshot(row, group_by, energy_key, forces_key, path)
        except InputError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        except _DB_ERRORS as exc:
            err = InputError(path, f"malformed row ({type(exc).__name__}: {exc})", row.id)
            if on_error is None:
                raise err from None
            on_error(err)
            continue
        yield item
    if n_rows == 0:
        raise InputError(path, "empty ASE database (no rows)")


def read(path: Path, on_error: Callable[[InputError], None] | None = None,
         group_by: str | bool | None = False, energy_key: str | None = None,
         forces_key: str | None = None) -> Iterator[Trajectory]:
    """Yield the rows of an ASE database as trajectories (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    kind = _kind(path)
    if kind is None:
        raise InputError(path, "not an ASE database (SQLite with a 'systems' table, or JSON)")
    return group_consecutive(_rows(path, kind, on_error, group_by, energy_key, forces_key))
