"""Input molecules for ``force2geo generate``: ``.smi`` files and built-in sets.

A molecule is a :class:`Molecule` ``(name, smiles)``; names are unique within one input
because the store and the failure log key on them (that is what makes resuming safe).

Built-in sets come from data that RDKit's wheel ships, so they work offline:

- ``builtin:nci``  ``rdkit/Data/NCI/first_5K.smi``: ``SMILES<TAB>NCI number`` (4,999 lines);
  names ``nci-<number>``.
- ``builtin:wehi`` ``rdkit/Data/Pains/test_data/wehi_mols.csv``: quoted ``"SMILES","WEHI-id"``
  rows, no header (10,000 screening compounds); names are the WEHI ids.
- ``builtin:all``  both, NCI first.
- ``builtin:demo`` :data:`DEMO`, twelve small drug-like molecules picked from those files
  by :func:`demo_rule` and embedded here so the demo needs no parsing.

Built-in sets are filtered to neutral, closed-shell, single-fragment molecules made of
the allowed elements (H C N O F S Cl by default) within a heavy-atom range, deduplicated
by InChIKey (first occurrence wins), in file order.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase.data import chemical_symbols

from force2geo.errors import InputError

DEFAULT_ELEMENTS: tuple[str, ...] = ("H", "C", "N", "O", "F", "S", "Cl")
# Every element GFN2-xTB is parametrised for (H to Rn): no filter, for inputs whose elements a
# model decides on (it refuses those it was not trained on, per molecule).
ANY_ELEMENTS: tuple[str, ...] = tuple(chemical_symbols[1:87])
BUILTIN_SETS = ("nci", "wehi", "all", "demo")


class Molecule(NamedTuple):
    """One input molecule: a unique ``name`` and its ``smiles``."""

    name: str
    smiles: str


# Chosen by demo_rule() from builtin:all (tests check it still picks exactly these).
DEMO: tuple[Molecule, ...] = (
    Molecule("nci-3989", "CC(=O)NC1=C(O)C=CC=C1"),
    Molecule("nci-1588", "CC1=NC(=NC=C1)O"),
    Molecule("nci-1865", "NC(=O)COC1=CC=CC=C1"),
    Molecule("nci-3812", "O=C1NC2=CC=CC=C2O1"),
    Molecule("nci-2763", "NC(=O)NNC1=CC=CC=C1"),
    Molecule("nci-4676", "COC1=C(N)C=C(N)C=C1"),
    Molecule("nci-3982", "O1C=NC2=C1C=CC=C2"),
    Molecule("nci-3842", "ON(N=O)C1=CC=CC=N1"),
    Molecule("nci-1317", "OC1=CC=C(C=C1)[N+]([O-])=O"),
    Molecule("nci-2144", "OCCC1=CC=CC=N1"),
    Molecule("nci-760", "NC1=NC(=C2C=NNC2=N1)O"),
    Molecule("nci-1534", "NC1=C(O)C=CC=C1"),
)


# --------------------------------------------------------------------------- .smi files


def unique_names(names: Iterable[str]) -> list[str]:
    """Make names unique deterministically: a repeat of ``x`` becomes ``x-2``, ``x-3``, ..."""
    names = list(names)
    taken = set(names)
    seen: set[str] = set()
    out = []
    for name in names:
        if name in seen:
            k = 2
            while f"{name}-{k}" in taken:
                k += 1
            name = f"{name}-{k}"
            taken.add(name)
        seen.add(name)
        out.append(name)
    return out


GEOMETRY_HINT = ("to start from geometries, relax them with 'force2geo relax', label them "
                 "with 'force2geo label' or import them with 'force2geo convert'")
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_XYZ_ATOM = re.compile(rf"^[A-Za-z]{{1,3}}(?:\s+{_NUMBER}){{3}}(?:\s+{_NUMBER})*$")
_SDF_LINE = re.compile(r"^(?:M  END|\$\$\$\$)$|\bV[23]000$")


def _geometry_line(line: str) -> str:
    """What a stripped line of a geometry file looks like ("" for anything else): an XYZ
    atom count (no SMILES is digits alone), an atom with coordinates, or an SDF line."""
    if line.isdigit():
        return "an XYZ atom count"
    if _XYZ_ATOM.match(line):
        return "an atom with coordinates"
    if _SDF_LINE.search(line):
        return "a line of an SDF/MOL file"
    return ""


def not_a_smiles_list(path: Path) -> str:
    """Why ``path`` is a folder or a file of geometries that a reader of
    :mod:`force2geo.data.readers` takes ("" when it is none of them)."""
    from force2geo.data.readers import FORMATS, reader

    if path.is_dir():
        return "a folder"
    for name in FORMATS:
        if reader(name).detect(path):
            return f"a file of geometries ({name} format)"
    return ""


def read_smi(path: str | os.PathLike) -> list[Molecule]:
    """Molecules of a ``.smi`` file: one ``SMILES [name]`` per line.

    The SMILES ends at the first space or tab; the rest of the line (stripped) is the
    name. Blank lines and lines starting with ``#`` are skipped. A line without a name
    is called ``<file stem>-<line number>``; repeated names get ``-2``, ``-3``, ...
    SMILES are not parsed here: a bad one becomes a recorded failure downstream. A line
    that only a geometry file has (an XYZ atom count or atom line, an SDF line) is an
    :class:`InputError`: the file is not a SMILES list.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except UnicodeDecodeError as exc:
        raise InputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    raw: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        looks_like = _geometry_line(line)
        if looks_like:
            raise InputError(path, f"{looks_like}, not 'SMILES [name]': not a SMILES list; "
                             f"{GEOMETRY_HINT}", record=f"line {number}")
        parts = line.split(None, 1)
        name = parts[1].strip() if len(parts) > 1 else f"{path.stem}-{number}"
        raw.append((name, parts[0]))
    if not raw:
        raise InputError(path, "no molecules (only blank or comment lines)")
    names = unique_names(name for name, _ in raw)
    return [Molecule(name, smiles) for name, (_, smiles) in zip(names, raw, strict=True)]


# --------------------------------------------------------------------------- built-in sets


def rdkit_data_dir() -> Path:
    from rdkit import RDConfig

    return Path(RDConfig.RDDataDir)


def _raw_nci() -> Iterator[Molecule]:
    path = rdkit_data_dir() / "NCI" / "first_5K.smi"
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2:
            yield Molecule(f"nci-{parts[1]}", parts[0])


def _raw_wehi() -> Iterator[Molecule]:
    path = rdkit_data_dir() / "Pains" / "test_data" / "wehi_mols.csv"
    with open(path, newline="") as handle:
        for row in csv.reader(handle):
            if len(row) >= 2:
                yield Molecule(row[1].strip(), row[0].strip())


RAW_SOURCES = {"nci": (_raw_nci,), "wehi": (_raw_wehi,), "all": (_raw_nci, _raw_wehi)}


@dataclass(frozen=True)
class Selection:
    """Filters for built-in sets (``min_heavy``/``max_heavy`` count non-hydrogen atoms)."""

    elements: tuple[str, ...] = DEFAULT_ELEMENTS
    min_heavy: int = 1
    max_heavy: int = 30
    limit: int | None = None
    seed: int = 42


def rejection(mol, elements: Iterable[str]) -> str | None:
    """Why an RDKit molecule is outside the supported chemistry, or None when it is fine.

    Checks allowed elements, a single fragment and a closed shell. The net charge is
    the caller's business: built-in sets keep neutral molecules only, while the protocol
    computes charged ones with their formal charge.
    """
    from rdkit import Chem

    allowed = set(elements) | {"H"}
    bad = sorted({a.GetSymbol() for a in mol.GetAtoms()} - allowed)
    if bad:
        return f"element(s) {', '.join(bad)} not supported (allowed: {' '.join(elements)})"
    if len(Chem.GetMolFrags(mol)) > 1:
        return "more than one fragment (salt or mixture)"
    if any(a.GetNumRadicalElectrons() for a in mol.GetAtoms()):
        return "open shell (radical electrons) not supported"
    return None


def _passes(mol, selection: Selection) -> bool:
    from rdkit import Chem

    if mol is None:
        return False
    heavy = mol.GetNumHeavyAtoms()
    if not selection.min_heavy <= heavy <= selection.max_heavy:
        return False
    if Chem.GetFormalCharge(mol) != 0:
        return False
    return rejection(mol, selection.elements) is None


def filtered(raw: Iterable[Molecule], selection: Selection) -> Iterator[tuple[Molecule, object]]:
    """``(molecule, rdkit mol)`` of the raw molecules that pass, deduplicated by InChIKey."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        seen: set[str] = set()
        for molecule in raw:
            mol = Chem.MolFromSmiles(molecule.smiles)
            if not _passes(mol, selection):
                continue
            key = Chem.MolToInchiKey(mol)
            if not key or key in seen:
                continue
            seen.add(key)
            yield molecule, mol
    finally:
        RDLogger.EnableLog("rdApp.*")


def sample(molecules: list[Molecule], limit: int | None, seed: int) -> list[Molecule]:
    """``limit`` molecules drawn with ``seed``, kept in their input order (all when None)."""
    if limit is None or limit >= len(molecules):
        return list(molecules)
    if limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(len(molecules), size=limit, replace=False))
    return [molecules[i] for i in keep]


def builtin(name: str, selection: Selection = Selection()) -> list[Molecule]:
    """The built-in set ``name`` (``nci``, ``wehi``, ``all`` or ``demo``), filtered."""
    if name == "demo":
        return sample(list(DEMO), selection.limit, selection.seed)
    if name not in RAW_SOURCES:
        raise InputError(f"builtin:{name}", f"unknown built-in set; choose from "
                         f"{', '.join('builtin:' + s for s in BUILTIN_SETS)}")
    raw = (m for source in RAW_SOURCES[name] for m in source())
    chosen = [m for m, _ in filtered(raw, selection)]
    return sample(chosen, selection.limit, selection.seed)


def demo_rule() -> list[Molecule]:
    """The rule that picked :data:`DEMO`: small, ringed, drug-like, by InChIKey order.

    From ``builtin:all`` (default elements, 6-11 heavy atoms): molecules with 12-20 atoms
    including hydrogens, at least one ring, at least one N and one O, no S or Cl (fast
    xTB); sorted by InChIKey, the first twelve.
    """
    from rdkit import Chem

    picked = []
    raw = (m for source in RAW_SOURCES["all"] for m in source())
    for molecule, mol in filtered(raw, Selection(min_heavy=6, max_heavy=11)):
        n_atoms = mol.GetNumAtoms() + sum(a.GetTotalNumHs() for a in mol.GetAtoms())
        symbols = {a.GetSymbol() for a in mol.GetAtoms()}
        if (12 <= n_atoms <= 20 and mol.GetRingInfo().NumRings() > 0
                and {"N", "O"} <= symbols and not {"S", "Cl"} & symbols):
            picked.append((Chem.MolToInchiKey(mol), molecule))
    picked.sort()
    return [molecule for _, molecule in picked[:12]]


def load(spec: str, selection: Selection = Selection()) -> list[Molecule]:
    """Molecules named by ``spec``: ``builtin:<set>`` or a ``.smi`` file path.

    Heavy-atom and element filters apply to built-in sets only: molecules of a user's
    file all go to the protocol, which records the ones it rejects with a reason.
    ``limit``/``seed`` sampling applies to both.
    """
    if spec.startswith("builtin:"):
        return builtin(spec.split(":", 1)[1], selection)
    path = Path(spec)
    if not path.exists():
        raise InputError(path, "no such file (give a .smi file or builtin:"
                         f"{'|'.join(BUILTIN_SETS)})")
    why = not_a_smiles_list(path)
    if why:
        raise InputError(path, f"{why}, not a SMILES list (one 'SMILES [name]' per line); "
                         f"{GEOMETRY_HINT}")
    return sample(read_smi(path), selection.limit, selection.seed)
