"""QM9 as torch_geometric downloads it (its ``raw/`` folder).

Files (``torch_geometric.datasets.QM9``: the MoleculeNet ``qm9.zip`` plus figshare file
3195404)::

    gdb9.sdf               # 133,885 molecules, explicit H, B3LYP/6-31G(2df,p) geometry (Å)
    gdb9.sdf.csv           # header, then one row per molecule in SDF order:
                           # mol_id,A,B,C,mu,alpha,homo,lumo,gap,r2,zpve,u0,u298,h298,g298,
                           # cv[,u0_atom,u298_atom,h298_atom,g298_atom]
    uncharacterized.txt    # the 3,054 molecules that failed the geometry consistency check

Energies in ``gdb9.sdf.csv`` (homo, lumo, gap, zpve, u0, u298, h298, g298) are in Hartree
and are converted to eV here. ``uncharacterized.txt`` is text: a few header lines, then
one row per molecule whose first column is its 1-based index in ``gdb9.sdf``; those are
skipped by default (``skip_uncharacterized``), as torch_geometric does.

Each molecule is a one-snapshot trajectory, stage ``"dft"``, named by ``mol_id``
(``gdb_1`` ...), with ``energy`` = U0 (eV; note U0 includes the zero-point energy,
``properties["zpve"]``, so the electronic energy is ``energy - zpve``), forces unknown, and
properties ``homo``, ``lumo``, ``gap``, ``zpve``, ``u0``, ``u298``, ``h298``, ``g298`` in
eV. Row ``i`` of the CSV pairs with molecule ``i`` of the SDF; where the SDF title is set
it must equal ``mol_id``. SMILES and InChIKey come from RDKit where it can sanitize the
molecule (some QM9 zwitterions it cannot; those keep empty identifiers).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.units import hartree_to_ev

SDF = "gdb9.sdf"
CSV = "gdb9.sdf.csv"
UNCHARACTERIZED = "uncharacterized.txt"
ENERGY_COLUMNS = ("homo", "lumo", "gap", "zpve", "u0", "u298", "h298", "g298")  # Hartree
REQUIRED_COLUMNS = ("mol_id", *ENERGY_COLUMNS)


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def detect(path: Path) -> bool:
    """True for a folder with ``gdb9.sdf`` and ``gdb9.sdf.csv``, or for that SDF file
    with the CSV beside it."""
    path = Path(path)
    if path.is_file() and path.name != SDF:
        return False
    folder = _folder(path)
    return (folder / SDF).is_file() and (folder / CSV).is_file()


def uncharacterized_indices(path: str | os.PathLike) -> np.ndarray:
    """The 1-based SDF indices listed in ``uncharacterized.txt`` (a file, or its folder).

    Rows are the lines whose first column is an integer; header, rule and blank lines are
    not. An empty list is an error (the real file lists 3,054).
    """
    path = Path(path)
    file = path if path.is_file() else path / UNCHARACTERIZED
    if not file.is_file():
        raise InputError(file, "no such file (QM9's list of uncharacterized molecules)")
    indices = []
    with open(file) as handle:
        for line in handle:
            fields = line.split()
            if len(fields) >= 2 and fields[0].isdigit():
                indices.append(int(fields[0]))
    if not indices:
        raise InputError(file, "lists no molecule indices")
    return np.asarray(indices, dtype=np.int64)


def _rows(file: Path) -> Iterator[dict[str, str]]:
    """Rows of gdb9.sdf.csv as ``{column: text}``; file and header are checked now."""
    if not file.is_file():
        raise InputError(file, "no such file (QM9 needs its property table)")
    handle = open(file, newline="")
    reader = csv.reader(handle)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        handle.close()
        raise InputError(file, "empty file" if not header else
                         f"missing column(s) {missing}; header is {header}")

    def rows() -> Iterator[dict[str, str]]:
        with handle:
            for row in reader:
                yield dict(zip(header, row, strict=False))

    return rows()


def _identifiers(mol: Chem.Mol) -> tuple[str, str]:
    """(SMILES, InChIKey) of a sanitizable copy of ``mol``, else empty strings."""
    copy = Chem.Mol(mol)
    with BlockLogs():
        try:
            Chem.SanitizeMol(copy)
            return Chem.MolToSmiles(Chem.RemoveHs(copy)), Chem.MolToInchiKey(copy)
        except (Chem.rdchem.MolSanitizeException, RuntimeError, ValueError):
            return "", ""


def _trajectory(mol: Chem.Mol, row: dict[str, str], csv_file: Path, record: str) -> Trajectory:
    try:
        name = row["mol_id"].strip()
        values = {c: hartree_to_ev(float(row[c])) for c in ENERGY_COLUMNS}
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(csv_file, f"unreadable property row: {err}", record) from err
    title = mol.GetProp("_Name").strip() if mol.HasProp("_Name") else ""
    if title and title != name:
        raise InputError(csv_file, f"row is {name!r} but the SDF molecule is {title!r}", record)
    smiles, inchikey = _identifiers(mol)
    return Trajectory(
        atomic_numbers=[atom.GetAtomicNum() for atom in mol.GetAtoms()],
        positions=mol.GetConformer().GetPositions(),
        energy=values["u0"],
        forces=None,
        stages="dft",
        charge=Chem.GetFormalCharge(mol),
        smiles=smiles,
        inchikey=inchikey,
        name=name,
        properties=values,
    )


def _report(error: InputError, on_error: Callable[[InputError], None] | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def read(path: Path, on_error: Callable[[InputError], None] | None = None, *,
         skip_uncharacterized: bool = True, limit: int | None = None) -> Iterator[Trajectory]:
    """Yield one single-snapshot trajectory per QM9 molecule (see the module docstring).

    ``limit`` stops after that many SDF molecules were looked at (skipped and bad ones
    included). A molecule RDKit cannot parse, a bad or missing CSV row, a name mismatch or
    a non-finite U0 is a record error ``index I (gdb_J)``; a missing or empty file fails
    the whole input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    folder = _folder(path)
    sdf = folder / SDF
    if not sdf.is_file():
        raise InputError(sdf, "no such file (QM9's molecules)")
    if sdf.stat().st_size == 0:
        raise InputError(sdf, "empty file")
    skip = set(uncharacterized_indices(folder).tolist()) if skip_uncharacterized else set()
    return _read(sdf, folder / CSV, _rows(folder / CSV), skip, on_error, limit)


def quiet(supplier) -> Iterator[Chem.Mol | None]:
    """The molecules of an RDKit supplier, with RDKit's log silenced only while parsing."""
    iterator, end = iter(supplier), object()
    while True:
        with BlockLogs():
            mol = next(iterator, end)
        if mol is end:
            return
        yield mol


def _read(sdf: Path, csv_file: Path, rows, skip, on_error, limit) -> Iterator[Trajectory]:
    with open(sdf, "rb") as handle:
        supplier = Chem.ForwardSDMolSupplier(handle, removeHs=False, sanitize=False)
        for index, mol in enumerate(quiet(supplier)):
            if limit is not None and index >= limit:
                return
            row = next(rows, None)
            if index + 1 in skip:
                continue
            record = f"index {index}" if row is None else f"index {index} ({row.get('mol_id')})"
            try:
                if row is None:
                    raise InputError(csv_file, "no property row for this molecule", record)
                if mol is None:
                    raise InputError(sdf, "RDKit cannot parse this molecule", record)
                if mol.GetNumAtoms() == 0:
                    raise InputError(sdf, "molecule has no atoms", record)
                yield _trajectory(mol, row, csv_file, record).validate(
                    str(sdf), record, require=("energy",))
            except InputError as err:
                _report(err, on_error)
