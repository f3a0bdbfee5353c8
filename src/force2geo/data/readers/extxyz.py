"""Multi-frame extended XYZ (``.xyz``, ``.extxyz``, optionally ``.gz``), read with ase.io.

extxyz has no unit convention: energies are taken as eV, positions as Å and forces as
eV/Å, so convert a file in other units before importing it.

Where the labels come from, per frame (first match wins):

- energy: the ``energy`` ase puts in the frame's calculator results, else the first of
  :data:`ENERGY_KEYS` in ``atoms.info``; absent -> NaN (unknown). Option ``energy_key``
  names the one key to use instead.
- forces: the calculator's ``forces`` column, else the first of :data:`FORCES_KEYS` in
  ``atoms.arrays``; absent -> NaN. Option ``forces_key`` names the one column instead.
- stage from info ``stage`` (else ``"input"``); charge from ``charge`` or
  ``total_charge``; ``name``, ``smiles``, ``inchikey``, ``cid`` when present; properties
  ``homo``, ``lumo``, ``gap`` (alias ``homo_lumo_gap``) in eV.

Consecutive frames with the same grouping key, the same atomic numbers and the same
charge form one trajectory. The key is the info entry named by option ``group_by``, by
default the first of :data:`GROUP_KEYS` a frame has; ``group_by=False`` (or ``"none"``)
makes every frame its own trajectory, as does a frame without the key.

The file is split into frames here (by the atom-count line) and each frame is parsed on
its own, so one malformed frame is reported (file, frame number, line) and the frames
after it are still read.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import ase.io
import numpy as np

from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError

SUFFIXES = (".xyz", ".extxyz")
ENERGY_KEYS = ("energy", "REF_energy", "total_energy", "dft_energy", "DFT_energy")
FORCES_KEYS = ("forces", "REF_forces", "force", "dft_forces", "DFT_forces")
GROUP_KEYS = ("traj_id", "mol_id", "name", "smiles")
CHARGE_KEYS = ("charge", "total_charge")
STRING_KEYS = ("name", "smiles", "inchikey")
PROPERTY_KEYS = {"homo": "homo", "lumo": "lumo", "gap": "gap", "homo_lumo_gap": "gap"}
_PARSE_ERRORS = (ValueError, KeyError, IndexError, TypeError, OSError)


class Frame(NamedTuple):
    """One frame's text as cut from the file, or the reason it could not be cut."""

    number: int  # 1-based
    line: int  # 1-based line of the atom-count line
    text: str
    problem: str | None


# --------------------------------------------------------------------------- detection


def _open_text(path: Path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _atom_count(line: str) -> int | None:
    """The atom count if ``line`` is a lone non-negative integer, else None."""
    token = line.strip()
    return int(token) if token.isdigit() else None


def detect(path: Path) -> bool:
    """An ``.xyz``/``.extxyz`` file (or ``.gz`` of one) whose first line is an atom count,
    or that is blank (so that reading it reports the empty file)."""
    path = Path(path)
    name = path.name.lower().removesuffix(".gz")
    if not path.is_file() or not name.endswith(SUFFIXES):
        return False
    try:
        with _open_text(path) as handle:
            for line in handle:
                if line.strip():
                    return _atom_count(line) is not None
    except (OSError, EOFError):
        return False
    return True


# --------------------------------------------------------------------------- frames


def split_frames(lines: Iterable[str]) -> Iterator[Frame]:
    """Cut an XYZ text into frames by their atom-count lines, without parsing atoms.

    A frame that ends early (an atom-count line where an atom line is due, or the end of
    the file) and text where an atom-count line is due are yielded with a ``problem``;
    cutting then resumes at the next atom-count line.
    """
    number, start, n_atoms, held = 0, 0, 0, []
    skipping = False
    for line_no, line in enumerate(lines, 1):
        if held:
            if len(held) >= 2 and _atom_count(line) is not None:
                yield Frame(number, start, "", f"header says {n_atoms} atoms but only "
                            f"{len(held) - 2} atom lines follow")
                held = []
            else:
                held.append(line)
                if len(held) == n_atoms + 2:
                    yield Frame(number, start, "".join(held), None)
                    held = []
                continue
        if not line.strip():
            continue
        count = _atom_count(line)
        if count is None:
            if not skipping:
                number += 1
                found = line.strip()[:40]
                yield Frame(number, line_no, "", f"expected an atom count, found {found!r}")
            skipping = True
            continue
        skipping = False
        number, start, n_atoms, held = number + 1, line_no, count, [line]
    if held:
        yield Frame(number, start, "", f"file ends inside the frame: header says {n_atoms} "
                    f"atoms, {max(len(held) - 2, 0)} atom lines follow")


def _parse(frame: Frame, path: Path):
    if frame.problem:
        raise InputError(path, f"line {frame.line}: {frame.problem}", frame.number)
    try:
        return ase.io.read(io.StringIO(frame.text), format="extxyz")
    except KeyError as exc:  # ase's symbol -> number lookup
        symbol = exc.args[0] if exc.args else None
        if isinstance(symbol, str) and symbol.isalpha() and len(symbol) <= 3:
            reason = f"unknown element {symbol!r}"
        else:
            reason = f"cannot parse frame (KeyError: {exc})"
    except _PARSE_ERRORS as exc:
        reason = f"cannot parse frame ({type(exc).__name__}: {exc})"
    raise InputError(path, f"line {frame.line}: {reason}", frame.number)


# --------------------------------------------------------------------------- labels


def show_value(value) -> str:
    """A value for a message: strings quoted, numbers (numpy ones too) plain."""
    return repr(value) if isinstance(value, str) else str(value)


def _number(value, what: str, path: Path, record) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InputError(path, f"{what} {show_value(value)} is not a number", record) from None


def _labels(atoms, energy_key: str | None, forces_key: str | None, path: Path, record):
    """(energy eV or None, forces [n_atoms, 3] eV/Å or None) of one frame."""
    results = atoms.calc.results if atoms.calc is not None else {}
    energy = forces = None
    for key in (energy_key,) if energy_key else ENERGY_KEYS:
        value = results.get(key, atoms.info.get(key))
        if value is not None:
            energy = _number(value, f"energy {key!r}", path, record)
            break
    for key in (forces_key,) if forces_key else FORCES_KEYS:
        value = results.get(key, atoms.arrays.get(key))
        if value is not None:
            forces = np.asarray(value, dtype=np.float64)
            if forces.shape != (len(atoms), 3):
                raise InputError(path, f"forces {key!r} have shape {forces.shape}, "
                                 f"expected ({len(atoms)}, 3)", record)
            break
    return energy, forces


def info_metadata(info: dict, path: Path, record) -> dict:
    """Stage, charge, identifiers and properties (eV) from an info / key-value mapping."""
    meta: dict = {"stage": str(info.get("stage", "input")), "charge": 0, "properties": {}}
    for key in CHARGE_KEYS:
        if info.get(key) is not None:
            charge = _number(info[key], "charge", path, record)
            if abs(charge - round(charge)) > 1e-6:  # sums of partial charges are near-integer
                raise InputError(path, f"charge {show_value(info[key])} is not an integer", record)
            meta["charge"] = int(round(charge))
            break
    for key in STRING_KEYS:
        if info.get(key) is not None:
            meta[key] = str(info[key])
    if info.get("cid") is not None:
        cid = _number(info["cid"], "cid", path, record)
        if cid != round(cid) or cid < 0:
            raise InputError(path, f"cid {show_value(info['cid'])} is not a non-negative "
                             "integer", record)
        meta["cid"] = int(cid)
    for key, name in PROPERTY_KEYS.items():
        if info.get(key) is not None:
            meta["properties"][name] = _number(info[key], f"property {key!r}", path, record)
    return meta


def group_key(info: dict, group_by: str | bool | None):
    """The grouping key of one frame/row: ``(key, value)``, or None to stand alone."""
    if group_by is False or (isinstance(group_by, str) and group_by.lower() in ("", "none")):
        return None
    keys = GROUP_KEYS if group_by in (None, True) else (group_by,)
    for key in keys:
        if info.get(key) is not None:
            return key, str(info[key])
    return None


def snapshot(numbers, positions, energy, forces, meta: dict, key, path: Path, record):
    """A validated single-snapshot trajectory; a grouping key names it if nothing else does."""
    name = meta.get("name", "")
    if not name and key is not None and key[0] not in ("smiles",):
        name = key[1]
    traj = Trajectory(
        atomic_numbers=np.asarray(numbers), positions=np.asarray(positions)[None],
        energy=[np.nan if energy is None else energy],
        forces=None if forces is None else np.asarray(forces)[None],
        stages=[meta["stage"]], charge=meta["charge"], cid=meta.get("cid"),
        smiles=meta.get("smiles", ""), inchikey=meta.get("inchikey", ""), name=name,
        properties=meta["properties"],
    )
    require = tuple(label for label, v in (("energy", energy), ("forces", forces))
                    if v is not None)
    return traj.validate(path, record, require=require)


# --------------------------------------------------------------------------- grouping


def _merge(parts: list[Trajectory]) -> Trajectory:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    properties: dict[str, float] = {}
    for part in parts:  # later snapshots (closer to the minimum) win
        properties.update(part.properties)

    def first_of(attr: str):
        return next((getattr(p, attr) for p in parts if getattr(p, attr)), getattr(first, attr))

    return Trajectory(
        atomic_numbers=first.atomic_numbers,
        positions=np.concatenate([p.positions for p in parts]),
        energy=np.concatenate([p.energy for p in parts]),
        forces=np.concatenate([p.forces for p in parts]),
        stages=[s for p in parts for s in p.stages],
        charge=first.charge, cid=next((p.cid for p in parts if p.cid is not None), None),
        smiles=first_of("smiles"), inchikey=first_of("inchikey"), name=first_of("name"),
        properties=properties,
    )


def group_consecutive(snapshots: Iterable[tuple[object, Trajectory]]) -> Iterator[Trajectory]:
    """Merge runs of ``(key, single-snapshot trajectory)`` that share key, atoms and charge.

    A key of None never merges. Runs are merged in order, so memory holds one run at most.
    """
    run: list[Trajectory] = []
    run_key = None
    for key, snap in snapshots:
        if (run and key is not None and key == run_key and snap.charge == run[0].charge
                and np.array_equal(snap.atomic_numbers, run[0].atomic_numbers)):
            run.append(snap)
            continue
        if run:
            yield _merge(run)
        run, run_key = [snap], key
    if run:
        yield _merge(run)


# --------------------------------------------------------------------------- read


def _snapshots(path: Path, on_error, group_by, energy_key, forces_key):
    n_frames = 0
    with _open_text(path) as handle:
        for frame in split_frames(handle):
            n_frames += 1
            try:
                atoms = _parse(frame, path)
                energy, forces = _labels(atoms, energy_key, forces_key, path, frame.number)
                meta = info_metadata(atoms.info, path, frame.number)
                key = group_key(atoms.info, group_by)
                item = key, snapshot(atoms.numbers, atoms.positions, energy, forces, meta, key,
                                     path, frame.number)
            except InputError as err:
                if on_error is None:
                    raise
                on_error(err)
                continue
            yield item
    if n_frames == 0:
        raise InputError(path, "empty file (no frames)")


def read(path: Path, on_error: Callable[[InputError], None] | None = None,
         group_by: str | bool | None = None, energy_key: str | None = None,
         forces_key: str | None = None) -> Iterator[Trajectory]:
    """Yield the trajectories of an extended XYZ file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    return group_consecutive(_snapshots(path, on_error, group_by, energy_key, forces_key))
