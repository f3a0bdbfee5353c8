"""SDF and MOL files (``.sdf``, ``.sd``, ``.mol``, optionally ``.gz``), read with RDKit.

Every record is one single-snapshot trajectory with explicit hydrogens as written
(``removeHs=False``) and coordinates in Å:

- stage from the SD property ``stage``, else ``"input"``; name from the title line
  (``_Name``); charge is the sum of formal charges; SMILES (canonical, implicit H) and
  InChIKey computed by RDKit (empty when RDKit cannot make them); CID from an SD property
  ``cid`` or ``PUBCHEM_COMPOUND_CID``.
- energy from the SD property named by option ``energy_key`` (a record without it is an
  error), in option ``energy_unit`` (``eV``, ``hartree`` or ``kcal/mol``; default eV),
  converted to eV; without ``energy_key`` the energy is NaN (unknown). Forces are NaN.
- numeric SD properties ``homo``, ``lumo``, ``gap`` (any case; also ``homo_lumo_gap``,
  ``homolumogap``) become properties, in option ``property_unit`` (default eV).
- option ``sanitize`` (default True) runs RDKit sanitisation; a record that fails it is
  an error. Records whose coordinates are flat 2D drawings (RDKit reads them as 2D and
  every z is 0) are errors unless ``allow_2d=True``: they are not geometries.

A record RDKit cannot read raises :class:`InputError` naming the file, the record number
(1-based) and RDKit's own message; later records are still read.
"""

from __future__ import annotations

import contextlib
import gzip
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.units import HARTREE_TO_EV, KCAL_PER_MOL_TO_EV

SUFFIXES = (".sdf", ".sd", ".mol")
UNITS_TO_EV = {"ev": 1.0, "hartree": HARTREE_TO_EV, "kcal/mol": KCAL_PER_MOL_TO_EV}
PROPERTY_ALIASES = {"homo": "homo", "lumo": "lumo", "gap": "gap", "homo_lumo_gap": "gap",
                    "homolumogap": "gap"}
CID_KEYS = ("cid", "PUBCHEM_COMPOUND_CID")
_SKIP_LOG = "moving to the beginning of the next molecule"


def detect(path: Path) -> bool:
    """A file named ``.sdf``, ``.sd`` or ``.mol`` (or ``.gz`` of one)."""
    path = Path(path)
    return path.is_file() and path.name.lower().removesuffix(".gz").endswith(SUFFIXES)


# --------------------------------------------------------------------------- RDKit messages


def _capture():
    """Capture RDKit's error log (RDKit >= 2025 has CaptureErrorLog); else do nothing."""
    capture = getattr(rdBase, "CaptureErrorLog", None)
    return capture() if capture is not None else contextlib.nullcontext()


def _rdkit_reason(log) -> str:
    """RDKit's first ERROR line from a capture, or a generic reason."""
    messages = getattr(log, "messages", "") or ""
    for line in str(messages).splitlines():
        if "ERROR:" in line:
            text = line.split("ERROR:", 1)[1].strip()
            if text and _SKIP_LOG not in text:
                return f"RDKit cannot parse the record: {text}"
    return "RDKit cannot parse the record"


def _blocks(handle) -> Iterator[tuple[int, bytes]]:
    """``(first non-blank line number, text)`` of every record, cut at ``$$$$`` lines;
    blank stretches (such as trailing newlines) are not records."""
    held: list[bytes] = []
    start = 0  # 0 while the held lines are all blank
    for line_no, line in enumerate(handle, 1):
        held.append(line)
        if line.strip() == b"$$$$":
            if start:
                yield start, b"".join(held)
            held, start = [], 0
        elif not start and line.strip():
            start = line_no
    if start:
        yield start, b"".join(held)


def _records(path: Path) -> Iterator[tuple[int, int, Chem.Mol | None, str]]:
    """``(record number, first line, unsanitised molecule or None, RDKit's reason)``."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rb") as handle:
        for number, (line, block) in enumerate(_blocks(handle), 1):
            supplier = Chem.ForwardSDMolSupplier(io.BytesIO(block), sanitize=False,
                                                 removeHs=False)
            with _capture() as log:
                mol = next(supplier, None)
            yield number, line, mol, "" if mol is not None else _rdkit_reason(log)


# --------------------------------------------------------------------------- one record


def _number(mol: Chem.Mol, key: str, path: Path, record: int) -> float:
    text = mol.GetProp(key).strip()
    try:
        return float(text)
    except ValueError:
        raise InputError(path, f"SD property {key!r} = {text[:40]!r} is not a number",
                         record) from None


def _identifiers(mol: Chem.Mol, sanitized: bool) -> tuple[str, str]:
    """(canonical SMILES without explicit H, InChIKey); empty where RDKit fails."""
    smiles = inchikey = ""
    with rdBase.BlockLogs():
        try:
            smiles = Chem.MolToSmiles(Chem.RemoveHs(mol, sanitize=sanitized))
        except (ValueError, RuntimeError):
            smiles = ""
        try:
            inchikey = Chem.MolToInchiKey(mol) or ""
        except (ValueError, RuntimeError):
            inchikey = ""
    return smiles, inchikey


def _positions(mol: Chem.Mol, allow_2d: bool, path: Path, record: int) -> np.ndarray:
    if mol.GetNumConformers() == 0:
        raise InputError(path, "record has no coordinates", record)
    conformer = mol.GetConformer()
    positions = np.asarray(conformer.GetPositions(), dtype=np.float64)  # [n_atoms, 3] Å
    if (not allow_2d and not conformer.Is3D() and mol.GetNumAtoms() > 1
            and not np.any(positions[:, 2])):
        raise InputError(path, "2D drawing (all z = 0), not a 3D geometry; "
                         "pass allow_2d=True to import it anyway", record)
    return positions


def _trajectory(mol: Chem.Mol, record: int, path: Path, sanitize: bool,
                energy: tuple[str | None, float], property_factor: float,
                allow_2d: bool) -> Trajectory:
    if sanitize:
        with _capture():
            try:
                Chem.SanitizeMol(mol)
            except ValueError as exc:  # RDKit's MolSanitizeException is a ValueError
                raise InputError(path, f"RDKit sanitisation failed: {exc}", record) from None
    energy_key, energy_factor = energy
    value = np.nan
    if energy_key:
        if not mol.HasProp(energy_key):
            raise InputError(path, f"no SD property {energy_key!r} (energy_key)", record)
        value = _number(mol, energy_key, path, record) * energy_factor
    properties = {}
    for key in mol.GetPropNames():
        name = PROPERTY_ALIASES.get(key.lower())
        if name is not None:
            properties[name] = _number(mol, key, path, record) * property_factor
    cid = next((int(_number(mol, k, path, record)) for k in CID_KEYS if mol.HasProp(k)), None)
    smiles, inchikey = _identifiers(mol, sanitize)
    traj = Trajectory(
        atomic_numbers=[atom.GetAtomicNum() for atom in mol.GetAtoms()],
        positions=_positions(mol, allow_2d, path, record)[None],
        energy=[value], forces=None,
        stages=[mol.GetProp("stage").strip() if mol.HasProp("stage") else "input"],
        charge=Chem.GetFormalCharge(mol), cid=cid, smiles=smiles, inchikey=inchikey,
        name=mol.GetProp("_Name").strip() if mol.HasProp("_Name") else "",
        properties=properties,
    )
    return traj.validate(path, record, require=("energy",) if energy_key else ())


# --------------------------------------------------------------------------- read


def _unit_factor(unit: str, option: str, path: Path) -> float:
    factor = UNITS_TO_EV.get(str(unit).lower())
    if factor is None:
        raise InputError(path, f"{option} {unit!r} is not one of eV, hartree, kcal/mol")
    return factor


def _read(path: Path, on_error, sanitize, energy, property_factor, allow_2d):
    n_records = 0
    for number, line, mol, reason in _records(path):
        n_records = number
        try:
            if mol is None:
                raise InputError(path, f"{reason} (record starts at line {line})", number)
            traj = _trajectory(mol, number, path, sanitize, energy, property_factor, allow_2d)
        except InputError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        yield traj
    if n_records == 0:
        raise InputError(path, "empty file (no SDF records)")


def read(path: Path, on_error: Callable[[InputError], None] | None = None,
         sanitize: bool = True, energy_key: str | None = None, energy_unit: str = "eV",
         property_unit: str = "eV", allow_2d: bool = False) -> Iterator[Trajectory]:
    """Yield one single-snapshot trajectory per SDF record (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    energy = (energy_key, _unit_factor(energy_unit, "energy_unit", path))
    property_factor = _unit_factor(property_unit, "property_unit", path)
    return _read(path, on_error, bool(sanitize), energy, property_factor, bool(allow_2d))
