"""∇²DFT (nablaDFT): conformations of MOSES drug-like molecules at ωB97X-D/def2-SVP.

Files of the release (``AIRI-Institute/nablaDFT``; the Force2Geo fine-tuning code reads the
same two)::

    <split>.db      # ASE SQLite database, one row per conformation
    summary.csv     # (or summary.csv.gz) one row per conformation of the whole dataset

A database row has ``numbers``, ``positions`` (Å), ``data["energy"]`` (a number or a
one-element list) and ``data["forces"]`` (``[n_atoms, 3]``), and key-value pairs
``moses_id``, ``conformation_id`` and ``smiles``. Units are those of the database's
metadata ``_property_unit_dict`` / ``_distance_unit`` when present (the release writes
``Hartree``, ``Hartree/Ang`` and ``Ang``), else the release's Hartree, Hartree/Å and Å.
Note that the v2 ``*_formation_energy*`` databases store the formation energy (total
minus the atoms' energies), which is what is read; the total is in summary.csv.

``summary.csv`` starts with an unnamed index column, then ``MOSES id``, ``CONFORMER id``,
..., ``DFT TOTAL ENERGY``, ..., ``DFT HOMO``, ``DFT LUMO``, ``DFT HOMO-LUMO GAP``, ...,
``SMILES``, ``SPLITS``; energies in Hartree.

Each conformation is its own one-snapshot trajectory, stage ``"dft"``, named
``moses_<moses_id>_conf_<conformation_id>``: conformations are separate equilibrium-ish
geometries, not steps of one optimisation, so they are not grouped. Its properties
``homo``, ``lumo``, ``gap`` and ``total_energy`` (eV) come from the summary row with the
same ``(MOSES id, CONFORMER id)``. The summary is optional: option ``summary`` names it,
``None`` (default) uses ``summary.csv[.gz]`` beside the database if there is one, and
``False`` reads no properties. When a summary is used, a conformation missing from it is
a record error. A folder input reads every ∇²DFT database in it (sorted by name) and must
hold the summary.

The summary of the full release is ~12.7 M rows; it is streamed once and only the rows of
the conformations being read are kept. Rows of the database are read in pages by id, so
memory stays flat however large the database.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import sqlite3
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path

import ase.db
import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.units import HARTREE_PER_ANGSTROM_TO_EV_PER_ANGSTROM, hartree_to_ev

SUMMARY_NAMES = ("summary.csv", "summary.csv.gz")
ID_COLUMNS = ("MOSES id", "CONFORMER id")
# our property name -> summary.csv column (Hartree)
SUMMARY_COLUMNS = {"homo": "DFT HOMO", "lumo": "DFT LUMO", "gap": "DFT HOMO-LUMO GAP",
                   "total_energy": "DFT TOTAL ENERGY"}
REQUIRED_SUMMARY = (*ID_COLUMNS, "DFT HOMO-LUMO GAP")
PAGE_ROWS = 1000
SQLITE_MAGIC = b"SQLite format 3\x00"

# unit named in the database metadata -> factor to eV, eV/Å, Å
_ENERGY_UNITS = {"hartree": hartree_to_ev(1.0), "ha": hartree_to_ev(1.0), "ev": 1.0}
_FORCE_UNITS = {"hartree/ang": HARTREE_PER_ANGSTROM_TO_EV_PER_ANGSTROM,
                "hartree/angstrom": HARTREE_PER_ANGSTROM_TO_EV_PER_ANGSTROM,
                "ev/ang": 1.0, "ev/angstrom": 1.0}
_DISTANCE_UNITS = {"ang": 1.0, "angstrom": 1.0}
_ROW_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def _is_nabla_db(path: Path) -> bool:
    """An ASE SQLite database whose rows carry the key ``moses_id`` (one indexed query)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(16) != SQLITE_MAGIC:
                return False
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
            found = con.execute("SELECT 1 FROM keys WHERE key = 'moses_id' LIMIT 1").fetchone()
    except (OSError, sqlite3.Error):
        return False
    return found is not None


def databases(path: str | os.PathLike) -> list[Path]:
    """The ∇²DFT databases of ``path``: itself, or those in a folder, sorted by name."""
    path = Path(path)
    if path.is_file():
        return [path]
    return sorted(p for p in path.glob("*.db") if p.is_file() and _is_nabla_db(p))


def detect(path: Path) -> bool:
    """True for an ASE database with ``moses_id`` keys, or a folder holding one and the
    summary."""
    path = Path(path)
    if path.is_file():
        return _is_nabla_db(path)
    return path.is_dir() and _summary_beside(path) is not None and bool(databases(path))


def _summary_beside(folder: Path) -> Path | None:
    for name in SUMMARY_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


# --------------------------------------------------------------------------- summary


def _open_text(path: Path):
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), newline="")
    return open(path, newline="")


def _summary_columns(path: Path, header: list[str]) -> tuple[list[int], dict[str, int]]:
    """Positions of the id columns and of the property columns present in ``header``."""
    missing = [c for c in REQUIRED_SUMMARY if c not in header]
    if missing:
        raise InputError(path, "empty file" if not header else
                         f"missing column(s) {missing}; header starts {header[:6]}")
    ids = [header.index(c) for c in ID_COLUMNS]
    return ids, {ours: header.index(c) for ours, c in SUMMARY_COLUMNS.items() if c in header}


def check_summary(path: str | os.PathLike) -> Path:
    """Raise :class:`InputError` unless ``path`` is a readable summary with the needed
    columns (reads the header only)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file (the ∇²DFT summary)")
    try:
        with _open_text(path) as handle:
            _summary_columns(path, [h.strip() for h in next(csv.reader(handle), [])])
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise InputError(path, f"unreadable: {err}") from err
    return path


def read_summary(path: str | os.PathLike,
                 wanted: set[tuple[int, int]] | None = None) -> dict[tuple[int, int], dict]:
    """``{(moses_id, conformation_id): {"homo", "lumo", "gap", "total_energy"}}`` in eV
    from summary.csv[.gz], streamed; only the ``wanted`` conformations are kept when given.
    A column other than the ids and the gap may be absent (its property is then left out).
    """
    path = check_summary(path)
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        ids, columns = _summary_columns(path, [h.strip() for h in next(reader, [])])
        found = {}
        for line, row in enumerate(reader, start=2):
            try:
                key = (int(row[ids[0]]), int(row[ids[1]]))
                if wanted is not None and key not in wanted:
                    continue
                found[key] = {ours: hartree_to_ev(float(row[i])) for ours, i in columns.items()}
            except (IndexError, ValueError) as err:
                raise InputError(path, f"unreadable row: {err}", record=f"line {line}") from err
    return found


# --------------------------------------------------------------------------- database


def _pages(db, include_data: bool = True, columns="all") -> Iterator:
    """All rows of an ASE database in id order, fetched ``PAGE_ROWS`` at a time (ASE's own
    ``select`` fetches every row of a query at once)."""
    last = 0
    while True:
        page = list(db.select(f"id>{last}", sort="id", limit=PAGE_ROWS,
                              include_data=include_data, columns=columns))
        if not page:
            return
        yield from page
        last = page[-1].id


def _factors(db, path: Path) -> tuple[float, float, float]:
    """Factors of energy, forces and distances to eV, eV/Å and Å, from the metadata units
    (only those the release uses, or ours, are accepted)."""
    meta = db.metadata or {}
    units = meta.get("_property_unit_dict", {}) or {}
    chosen = []
    for table, given, default in ((_ENERGY_UNITS, units.get("energy"), "hartree"),
                                  (_FORCE_UNITS, units.get("forces"), "hartree/ang"),
                                  (_DISTANCE_UNITS, meta.get("_distance_unit"), "ang")):
        unit = str(given or default).strip().lower()
        if unit not in table:
            raise InputError(path, f"unsupported unit {given!r} in the database metadata")
        chosen.append(table[unit])
    return tuple(chosen)


def _conformation(row) -> tuple[int, int]:
    pairs = row.key_value_pairs
    return int(pairs["moses_id"]), int(pairs["conformation_id"])


@lru_cache(maxsize=65536)
def _from_smiles(smiles: str) -> tuple[str, int]:
    """(InChIKey, formal charge) of a SMILES, or ("", 0) when RDKit cannot read it."""
    with BlockLogs():
        mol = Chem.MolFromSmiles(smiles) if smiles else None
        if mol is None:
            return "", 0
        return Chem.MolToInchiKey(mol), Chem.GetFormalCharge(mol)


def _trajectory(row, factors, properties: dict[str, float]) -> Trajectory:
    to_ev, to_ev_per_a, to_a = factors
    moses_id, conformation_id = _conformation(row)
    energy = np.asarray(row.data["energy"], dtype=np.float64).reshape(-1)
    if energy.shape != (1,):
        raise ValueError(f"data['energy'] holds {energy.size} values, not one")
    forces = np.asarray(row.data["forces"], dtype=np.float64)
    if forces.shape != (row.natoms, 3):
        raise ValueError(f"data['forces'] has shape {forces.shape}, not ({row.natoms}, 3)")
    smiles = str(row.key_value_pairs.get("smiles", ""))
    inchikey, charge = _from_smiles(smiles)
    return Trajectory(
        atomic_numbers=row.numbers,
        positions=to_a * np.asarray(row.positions, dtype=np.float64),
        energy=to_ev * energy,
        forces=to_ev_per_a * forces,
        stages="dft",
        charge=charge,
        smiles=smiles,
        inchikey=inchikey,
        name=f"moses_{moses_id}_conf_{conformation_id}",
        properties=properties,
    )


def _record(row) -> str:
    pairs = row.key_value_pairs
    return (f"id {row.id} (moses_id {pairs.get('moses_id')}, "
            f"conformation_id {pairs.get('conformation_id')})")


def _wanted(db, limit: int | None) -> set[tuple[int, int]]:
    """The (moses_id, conformation_id) of the rows that will be read (no data blobs)."""
    wanted = set()
    for i, row in enumerate(_pages(db, include_data=False, columns=["id", "key_value_pairs"])):
        if limit is not None and i >= limit:
            break
        try:
            wanted.add(_conformation(row))
        except _ROW_ERRORS:
            continue
    return wanted


def _report(error: InputError, on_error: Callable[[InputError], None] | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def _summary_path(path: Path, summary) -> Path | None:
    if summary is False:
        return None
    if summary is not None:
        return Path(summary)
    found = _summary_beside(path if path.is_dir() else path.parent)
    if found is None and path.is_dir():
        raise InputError(path, f"no {' or '.join(SUMMARY_NAMES)} in this folder")
    return found


def read(path: Path, on_error: Callable[[InputError], None] | None = None, *,
         summary: str | os.PathLike | bool | None = None,
         limit: int | None = None) -> Iterator[Trajectory]:
    """Yield one single-snapshot trajectory per conformation (see the module docstring).

    ``limit`` stops after that many database rows were looked at (bad ones included). A
    row without its ids, energy or forces, with a non-finite label, or missing from the
    summary is a record error ``id I (moses_id M, conformation_id C)``; a missing or empty
    file, a database without ∇²DFT rows or an unsupported unit fails the whole input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    files = databases(path)
    if not files:
        raise InputError(path, "no ∇²DFT database (ASE .db with moses_id keys) in this folder")
    for file in files:
        if file.stat().st_size == 0:
            raise InputError(file, "empty file")
        if not _is_nabla_db(file):
            raise InputError(file, "not a ∇²DFT database (no ASE rows with a moses_id key)")
    summary_file = _summary_path(path, summary)
    if summary_file is not None:
        check_summary(summary_file)
    return _read(files, summary_file, on_error, limit)


def _read(files: list[Path], summary_file: Path | None, on_error, limit):
    seen = 0
    for file in files:
        db = ase.db.connect(file, type="db")
        factors = _factors(db, file)
        remaining = None if limit is None else limit - seen
        table = None
        if summary_file is not None:
            table = read_summary(summary_file, _wanted(db, remaining))
        for row in _pages(db):
            if limit is not None and seen >= limit:
                return
            seen += 1
            try:
                yield _row_trajectory(row, file, factors, table, summary_file)
            except InputError as err:
                _report(err, on_error)


def _row_trajectory(row, file: Path, factors, table, summary_file) -> Trajectory:
    record = _record(row)
    try:
        key = _conformation(row)
        trajectory = _trajectory(row, factors, {})
    except KeyError as err:
        raise InputError(file, f"missing {err}", record) from err
    except _ROW_ERRORS as err:
        raise InputError(file, str(err), record) from err
    if table is not None:
        if key not in table:
            raise InputError(summary_file, "conformation not in the summary", record)
        trajectory.properties = dict(table[key])
    return trajectory.validate(str(file), record, require=("energy", "forces"))
