"""Molecule3D: ~3.9 M PubChemQC molecules with their DFT ground-state geometry, as released.

Layout of the release (``divelab/MoleculeX``, ``Molecule3D/preprocess``; the same files are
read by the Force2Geo code in ``divelab/AIRS``)::

    raw/
      combined_mols_0_to_1000000.sdf          # explicit H, Å; one molecule per record
      combined_mols_1000000_to_2000000.sdf
      combined_mols_2000000_to_3000000.sdf
      combined_mols_3000000_to_3899647.sdf
      properties.csv                          # one row per molecule, same order
      random_split_inds.json                  # {"train": [...], "valid": [...], "test": [...]}
      scaffold_split_inds.json

The SDF files are concatenated in the order of their first index (``combined_mols_A_to_B``
holds molecules ``A .. B-1``); row ``i`` of ``properties.csv`` and index ``i`` of the split
files refer to molecule ``i`` of that concatenation, counting molecules RDKit cannot read
(the released loader keeps a placeholder for them). ``properties.csv`` has the columns
``cid, dipole x, dipole y, dipole z, homo, lumo, homolumogap, scf energy``: written from
cclib 1.x parses of the PubChemQC B3LYP/6-31G* logs, so orbital energies and the SCF
energy are in eV and the dipole in Debye.

Each molecule becomes a one-snapshot trajectory, stage ``"dft"`` (the DFT ground-state
geometry), with the CID, SMILES and InChIKey (RDKit), the formal charge, and properties
``homo``, ``lumo``, ``gap`` and ``scf_energy`` (eV). The energy and forces are left
unknown (NaN): the released ``scf energy`` is cclib's *first* SCF energy of the log, which
need not belong to the final geometry, so it is kept as a property only.

A path to one ``combined_mols_A_to_B.sdf`` reads that file alone, paired with rows
``A ..`` of the ``properties.csv`` beside it.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from rdkit import Chem
from rdkit.rdBase import BlockLogs

from force2geo.data.readers.qm9 import quiet
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError

SDF_NAME = re.compile(r"^combined_mols_(\d+)_to_(\d+)\.sdf$")
PROPERTIES = "properties.csv"
PROPERTY_COLUMNS = ("cid", "dipole x", "dipole y", "dipole z", "homo", "lumo",
                    "homolumogap", "scf energy")
# our property name -> properties.csv column; all in eV as released.
PROPERTY_MAP = {"homo": "homo", "lumo": "lumo", "gap": "homolumogap", "scf_energy": "scf energy"}
SPLIT_KINDS = ("random", "scaffold")
SPLIT_PARTS = ("train", "valid", "test")


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def sdf_files(path: str | os.PathLike) -> list[tuple[int, int, Path]]:
    """``(first index, end index, path)`` of the SDF files, sorted by first index: all of a
    folder, or the one file given."""
    path = Path(path)
    candidates = [path] if path.is_file() else list(path.glob("combined_mols_*_to_*.sdf"))
    found = []
    for file in candidates:
        match = SDF_NAME.match(file.name)
        if match and file.is_file():
            found.append((int(match.group(1)), int(match.group(2)), file))
    return sorted(found)


def detect(path: Path) -> bool:
    """True for a folder holding ``properties.csv`` and ``combined_mols_*_to_*.sdf``, or
    for one such SDF file with ``properties.csv`` beside it."""
    path = Path(path)
    if path.is_file() and not SDF_NAME.match(path.name):
        return False
    return (_folder(path) / PROPERTIES).is_file() and bool(sdf_files(path))


def split_indices(path: str | os.PathLike, kind: str = "random") -> dict[str, np.ndarray]:
    """The released split: ``{"train", "valid", "test"}`` -> int64 molecule indices, read
    from ``{kind}_split_inds.json`` in the release folder (``kind``: random or scaffold)."""
    if kind not in SPLIT_KINDS:
        raise ValueError(f"unknown Molecule3D split {kind!r}; choose from {SPLIT_KINDS}")
    file = _folder(Path(path)) / f"{kind}_split_inds.json"
    if not file.is_file():
        raise InputError(file, "no such file (the release's split indices)")
    try:
        with open(file) as handle:
            parts = json.load(handle)
        return {name: np.asarray(parts[name], dtype=np.int64).reshape(-1)
                for name in SPLIT_PARTS}
    except json.JSONDecodeError as err:
        raise InputError(file, f"not valid JSON: {err}") from err
    except KeyError as err:
        raise InputError(file, f"no {err} list (expected {', '.join(SPLIT_PARTS)})") from err
    except (TypeError, ValueError) as err:
        raise InputError(file, f"split lists must hold integer indices: {err}") from err


# --------------------------------------------------------------------------- properties


def _rows(file: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """``(row index, {column: text})`` of properties.csv, streamed. The file and its header
    are checked now, before the first row is asked for."""
    if not file.is_file():
        raise InputError(file, "no such file (Molecule3D needs its properties.csv)")
    handle = open(file, newline="")
    reader = csv.reader(handle)
    header = [h.strip() for h in next(reader, [])]
    missing = [c for c in PROPERTY_COLUMNS if c not in header]
    if missing:
        handle.close()
        raise InputError(file, "empty file" if not header else
                         f"missing column(s) {missing}; header is {header}")

    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        with handle:
            for index, row in enumerate(reader):
                yield index, dict(zip(header, row, strict=False))

    return rows()


def _properties(row: dict[str, str], file: Path, record: str) -> tuple[int, dict[str, float]]:
    try:
        cid = int(row["cid"])
        values = {ours: float(row[theirs]) for ours, theirs in PROPERTY_MAP.items()}
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(file, f"unreadable properties row: {err}", record=record) from err
    return cid, values


# --------------------------------------------------------------------------- molecules


def _molecules(file: Path) -> Iterator[Chem.Mol | None]:
    """Molecules of one SDF file in order, None where RDKit cannot read or sanitize one
    (as the released loader, explicit H kept, sanitized)."""
    with open(file, "rb") as handle:
        yield from quiet(Chem.ForwardSDMolSupplier(handle, removeHs=False, sanitize=True))


def _trajectory(mol: Chem.Mol, cid: int, properties: dict[str, float]) -> Trajectory:
    with BlockLogs():
        smiles = Chem.MolToSmiles(Chem.RemoveHs(mol))
        inchikey = Chem.MolToInchiKey(mol)
    return Trajectory(
        atomic_numbers=[atom.GetAtomicNum() for atom in mol.GetAtoms()],
        positions=mol.GetConformer().GetPositions(),
        energy=np.nan,
        forces=None,
        stages="dft",
        charge=Chem.GetFormalCharge(mol),
        cid=cid,
        smiles=smiles,
        inchikey=inchikey,
        properties=properties,
    )


def _check_start(file: Path, start: int, index: int) -> None:
    if start != index:
        raise InputError(file, f"its name says it starts at molecule {start}, but the files "
                               f"before it hold {index} molecules: rows would be mispaired")


def _indexed(files: list[tuple[int, int, Path]]) -> Iterator[tuple[int, Path, Chem.Mol | None]]:
    """``(molecule index, file, molecule or None)`` across the concatenated files."""
    index = files[0][0]
    for start, _end, file in files:
        _check_start(file, start, index)
        for mol in _molecules(file):
            yield index, file, mol
            index += 1


def _report(error: InputError, on_error: Callable[[InputError], None] | None) -> None:
    if on_error is None:
        raise error
    on_error(error)


def read(path: Path, on_error: Callable[[InputError], None] | None = None, *,
         indices: Iterable[int] | None = None,
         limit: int | None = None) -> Iterator[Trajectory]:
    """Yield one single-snapshot trajectory per molecule of a Molecule3D release.

    ``indices`` keeps only those molecule indices (the numbering of the split files);
    ``limit`` stops after that many molecules were looked at (bad ones included). A
    molecule RDKit cannot read, an unreadable properties row or a missing one is a record
    error ``index I``; files out of order, a missing or empty file, or a bad header fail
    the whole input.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    files = sdf_files(path)
    if not files:
        raise InputError(path, "no combined_mols_*_to_*.sdf files")
    for _start, _end, file in files:
        if file.stat().st_size == 0:
            raise InputError(file, "empty file")
    properties = _folder(path) / PROPERTIES
    rows = _rows(properties)
    wanted = None if indices is None else {int(i) for i in indices}
    whole = path.is_dir() and limit is None and wanted is None
    return _read(files, properties, rows, on_error, wanted, limit, whole)


def _read(files, properties: Path, rows, on_error, wanted, limit, whole: bool):
    """The trajectories; ``whole``: every molecule is read, so leftover rows are an error."""
    first = files[0][0]
    row = next(rows, None)
    while row is not None and row[0] < first:
        row = next(rows, None)
    seen = 0
    for index, file, mol in _indexed(files):
        if limit is not None and seen >= limit:
            return
        seen += 1
        this_row, row = row, next(rows, None)
        if wanted is not None and index not in wanted:
            continue
        record = f"index {index}"
        try:
            if this_row is None:
                raise InputError(properties, "no properties row for this molecule", record)
            cid, values = _properties(this_row[1], properties, record)
            record = f"index {index} (CID {cid})"
            if mol is None:
                raise InputError(file, "RDKit cannot read or sanitize this molecule", record)
            if mol.GetNumAtoms() == 0:
                raise InputError(file, "molecule has no atoms", record)
            yield _trajectory(mol, cid, values).validate(str(file), record)
        except InputError as err:
            _report(err, on_error)
    if whole and row is not None:
        _report(InputError(properties, f"more rows than molecules: row {row[0]} has no "
                                       "molecule in the SDF files"), on_error)
