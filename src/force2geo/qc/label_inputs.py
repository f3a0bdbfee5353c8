"""Readers of ``force2geo label`` inputs: extxyz / plain xyz, SDF and trajectory stores.

Each yields :class:`~force2geo.qc.geometries.Unit` and
:class:`~force2geo.qc.geometries.Unreadable` items in input order (see
:mod:`force2geo.qc.geometries` for grouping, charges and keys). Records are cut from the
text first and parsed one by one, so a malformed record is reported with its file, record
number and reason, and the records after it are still read.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from force2geo import atomic
from force2geo.errors import InputError
from force2geo.qc.geometries import (
    GROUP_KEYS,
    FrameSelection,
    Record,
    Unit,
    Unreadable,
    group_records,
    units_of,
)

XYZ_SUFFIXES = (".xyz", ".extxyz")
SDF_SUFFIXES = (".sdf", ".sd", ".mol")
CHARGE_KEYS = ("charge", "total_charge")
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, OSError)


def input_format(path: Path) -> str:
    """``store``, ``xyz`` or ``sdf`` for an input path; InputError when none fits."""
    from force2geo.data.shard import MANIFEST

    if not path.exists():
        raise InputError(path, "no such file or folder")
    if path.is_dir():
        if (path / MANIFEST).is_file():
            return "store"
        raise InputError(path, f"a folder but not a trajectory store (no {MANIFEST})")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(XYZ_SUFFIXES):
        return "xyz"
    if name.endswith(SDF_SUFFIXES):
        return "sdf"
    raise InputError(path, "cannot tell the format: give .xyz/.extxyz, .sdf/.sd/.mol "
                     "(optionally .gz) or a trajectory store folder")


def describe_input(path: str | Path) -> dict:
    """The provenance of one input: path, format, and SHA-256 (files) or fingerprint
    (stores)."""
    path = Path(path)
    kind = input_format(path)
    out = {"path": str(path), "format": kind}
    if kind == "store":
        from force2geo.data.store import TrajectoryStore

        out["fingerprint"] = TrajectoryStore(path).fingerprint
    else:
        out["sha256"] = atomic.file_sha256(path)
    return out


def read_geometries(path: str | Path, selection: FrameSelection | None = None
                    ) -> list[Unit | Unreadable]:
    """Units and unreadable records of one input, in input order.

    A missing path, an unknown format, an empty file or an unknown store stage raise
    :class:`InputError`; a bad record becomes an :class:`Unreadable`.
    """
    path, selection = Path(path), selection or FrameSelection()
    kind = input_format(path)
    if kind == "store":
        return store_units(path, selection)
    reader = xyz_records if kind == "xyz" else sdf_records
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
        items = group_records(reader(path, handle), selection)
    if not items:
        raise InputError(path, "empty file (no records)")
    return items


def _stem(path: Path) -> str:
    name = path.name.removesuffix(".gz")
    return name.rsplit(".", 1)[0] if "." in name else name


# --------------------------------------------------------------------------- xyz


def _parse_frame(text: str):
    """ASE atoms of one frame's text; ValueError with the reason when it cannot be read."""
    import ase.io

    try:
        return ase.io.read(io.StringIO(text), format="extxyz")
    except KeyError as exc:  # ase's symbol -> number lookup
        symbol = exc.args[0] if exc.args else None
        if isinstance(symbol, str) and symbol.isalpha() and len(symbol) <= 3:
            raise ValueError(f"unknown element {symbol!r}") from None
        raise ValueError(f"cannot parse frame (KeyError: {exc})") from None
    except _PARSE_ERRORS as exc:
        raise ValueError(f"cannot parse frame ({type(exc).__name__}: {exc})") from None


def _value(info: dict, key: str):
    """``info[key]`` unless absent or a bare word of a plain xyz comment (ASE reads those
    as True)."""
    value = info.get(key)
    return None if value is None or isinstance(value, (bool, np.bool_)) else value


def info_charge(info: dict) -> int:
    """The charge of an extxyz frame: its ``charge``/``total_charge`` key, else its
    ``smiles`` key's formal charge, else 0. ValueError when the key is not an integer."""
    for key in CHARGE_KEYS:
        value = _value(info, key)
        if value is None:
            continue
        try:
            charge = float(value)
        except (TypeError, ValueError):
            charge = float("nan")
        if not abs(charge - round(charge)) <= 1e-6:  # NaN fails too
            raise ValueError(f"{key} {value!r} is not an integer")
        return int(round(charge))
    smiles = _value(info, "smiles")
    if isinstance(smiles, str):
        charge = smiles_charge(smiles)
        if charge is not None:
            return charge
    return 0


def _group(info: dict):
    for key in GROUP_KEYS:
        value = _value(info, key)
        if value is not None:
            return key, str(value)
    return None


def _xyz_record(atoms, stem: str, number: int, source: str) -> Record:
    info = atoms.info
    name, index = _value(info, "name"), _value(info, "index")
    if name is None:
        name = f"{stem}-{index}" if index is not None else f"{stem}-{number}"
    cid = _value(info, "cid")
    return Record(_group(info), str(name), np.asarray(atoms.numbers), info_charge(info),
                  np.asarray(atoms.positions), source,
                  smiles=str(_value(info, "smiles") or ""),
                  inchikey=str(_value(info, "inchikey") or ""),
                  cid=int(cid) if isinstance(cid, (int, np.integer)) and cid >= 0 else None)


def xyz_records(path: Path, lines: Iterable[str]) -> Iterator[Record | Unreadable]:
    """The frames of an extended (or plain) XYZ text, one record each."""
    from force2geo.data.readers.extxyz import split_frames

    stem = _stem(path)
    for frame in split_frames(lines):
        source = f"{path}#{frame.number}"
        if frame.problem:
            yield Unreadable(source, f"line {frame.line}: {frame.problem}")
            continue
        try:
            yield _xyz_record(_parse_frame(frame.text), stem, frame.number, source)
        except ValueError as exc:
            yield Unreadable(source, f"line {frame.line}: {exc}")


# --------------------------------------------------------------------------- SDF


def text_records(lines: Iterable[str]) -> Iterator[tuple[int, str]]:
    """(1-based number, text) of the ``$$$$``-separated records of an SDF text."""
    held: list[str] = []
    number = 0
    for line in lines:
        if line.strip() == "$$$$":
            number += 1
            yield number, "".join(held)
            held = []
        else:
            held.append(line)
    if any(line.strip() for line in held):
        yield number + 1, "".join(held)


def _sdf_problem(block: str) -> str:
    """Why RDKit could not read a molfile record, as far as the text tells."""
    from ase.data import chemical_symbols

    lines = block.splitlines()
    if len(lines) < 4:
        return "too short for a molfile record (no counts line)"
    if "V3000" in lines[3]:
        return "RDKit cannot parse this V3000 record"
    try:
        n_atoms = int(lines[3][0:3])
    except ValueError:
        return f"malformed counts line {lines[3].strip()!r}"
    for line in lines[4:4 + n_atoms]:
        symbol = line[31:34].strip()
        if symbol and symbol not in chemical_symbols:
            return f"unknown element {symbol!r}"
    return "RDKit cannot parse the record (malformed atom, bond or property block)"


def _identifiers(mol) -> tuple[str, str]:
    """(SMILES without hydrogens, InChIKey) of a record, empty when it does not sanitise."""
    from rdkit import Chem

    try:
        copy = Chem.Mol(mol)
        Chem.SanitizeMol(copy)
        return Chem.MolToSmiles(Chem.RemoveHs(copy)), Chem.MolToInchiKey(copy)
    except (ValueError, RuntimeError):
        return "", ""


def sdf_records(path: Path, lines: Iterable[str]) -> Iterator[Record | Unreadable]:
    """The records of an SDF text; the title groups consecutive conformers."""
    from rdkit import Chem, RDLogger

    stem = _stem(path)
    RDLogger.DisableLog("rdApp.*")
    try:
        for number, block in text_records(lines):
            source = f"{path}#{number}"
            mol = Chem.MolFromMolBlock(block, sanitize=False, removeHs=False)
            if mol is None or mol.GetNumAtoms() == 0:
                reason = "record has no atoms" if mol is not None else _sdf_problem(block)
                yield Unreadable(source, reason)
                continue
            title = block.splitlines()[0].strip()
            smiles, inchikey = _identifiers(mol)
            z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
            yield Record(("title", title) if title else None, title or f"{stem}-{number}",
                         z, int(Chem.GetFormalCharge(mol)),
                         np.array(mol.GetConformer().GetPositions()), source,
                         smiles=smiles, inchikey=inchikey)
    finally:
        RDLogger.EnableLog("rdApp.*")


def smiles_charge(smiles: str) -> int | None:
    """The formal charge of a SMILES string, or None when RDKit cannot parse it."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(smiles, sanitize=False)
    finally:
        RDLogger.EnableLog("rdApp.*")
    return None if mol is None else int(Chem.GetFormalCharge(mol))


# --------------------------------------------------------------------------- stores


def store_units(path: Path, selection: FrameSelection) -> list[Unit]:
    """Units of a store's trajectories: frames of ``selection.stages`` (all stages when
    None), then ``selection.frames`` of each trajectory."""
    from force2geo.data.store import TrajectoryStore

    store = TrajectoryStore(path)
    stages = selection.stages
    if stages is not None:
        unknown = sorted(set(stages) - set(store.stage_names))
        if unknown:
            raise InputError(path, f"no stage(s) {unknown} in this store; it has "
                             f"{', '.join(store.stage_names)}")
    out: list[Unit] = []
    for j in range(store.n_trajectories):
        traj = store.trajectory(j)
        frames = [k for k, s in enumerate(traj.stages) if stages is None or s in stages]
        if not frames:
            continue
        name = traj.key or f"{path.name}-{j}"
        records = [Record(j, name, traj.atomic_numbers, traj.charge, traj.positions[k],
                          f"{path}#trajectory {j} frame {k}", traj.smiles, traj.inchikey,
                          traj.cid) for k in frames]
        out.extend(units_of(records, selection))
    if not out:
        raise InputError(path, f"no frames of stage(s) {', '.join(stages or ['any'])}")
    return out
