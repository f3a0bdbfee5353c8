"""Input molecules of ``force2geo predict``, each ready to relax or failed with a reason.

Unlike ``force2geo relax`` (which stops at the first bad record), one molecule's problem
never stops the batch here: a SMILES that RDKit cannot parse, an element outside the
supported set, a net charge, or an ETKDG embedding failure makes a :class:`Candidate`
without a start geometry and with the reason.

* ``.smi`` files and ``builtin:SET``: RDKit molecule with hydrogens, ETKDGv3 conformer
  (seeded), then, with ``start="mmff"``, an MMFF94 BFGS pre-optimisation (fmax 0.05 eV/Å,
  as ``force2geo generate`` makes the starts the shipped potential was trained from). A
  molecule MMFF94 has no parameters for starts from its ETKDG conformer (noted).
* SDF, extxyz and stores: read by :func:`force2geo.relax.inputs.read_inputs` (a record
  RDKit or ASE cannot read there is still an error naming the file and record); each
  molecule starts from its geometry as given (``start="input"``).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from force2geo.qc.molecules import DEFAULT_ELEMENTS
from force2geo.relax.inputs import StartMolecule

STARTS = ("etkdg", "mmff")
MMFF_FMAX = 0.05  # eV/Å, as the MMFF stage of force2geo generate
MMFF_MAX_STEPS = 1000


@dataclass
class Candidate:
    """One input molecule: its ``name``, ``smiles`` ("" when unknown), the
    :class:`~force2geo.relax.inputs.StartMolecule` to relax (None: failed), how its start
    geometry was made (``etkdg``, ``mmff`` or ``input``) and a ``reason`` (why it failed,
    or a note)."""

    name: str
    smiles: str
    molecule: StartMolecule | None
    start: str = ""
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.molecule is not None


def is_smiles_input(spec: str) -> bool:
    return spec.startswith("builtin:") or spec.lower().endswith(".smi")


def read_candidates(spec: str, start: str = "mmff", seed: int = 42,
                    elements: tuple[str, ...] = DEFAULT_ELEMENTS, allow_charged: bool = False,
                    progress: bool = False) -> list[Candidate]:
    """The molecules of ``spec`` in input order (see the module docstring): ``.smi``,
    ``builtin:SET``, SDF, extxyz or a trajectory store. ``elements``: the chemistry the
    models know; ``allow_charged``: relax ions too (force2geo potentials are charge-blind
    and the shipped ones were trained on neutral molecules)."""
    if start not in STARTS:
        raise ValueError(f"start must be one of {STARTS}, got {start!r}")
    if is_smiles_input(spec):
        from force2geo.qc.molecules import load

        molecules = load(spec)
        bar = tqdm(molecules, unit="mol", desc="conformers",
                   disable=not progress or not sys.stderr.isatty())
        return [from_smiles(m.name, m.smiles, start, seed, elements, allow_charged)
                for m in bar]
    from force2geo.relax.inputs import read_inputs

    stem = Path(spec).name.split(".")[0]
    return [from_record(m, f"{stem}-{k + 1}", elements, allow_charged)
            for k, m in enumerate(read_inputs(spec))]


def from_smiles(name: str, smiles: str, start: str = "mmff", seed: int = 42,
                elements: tuple[str, ...] = DEFAULT_ELEMENTS,
                allow_charged: bool = False) -> Candidate:
    """A :class:`Candidate` of one SMILES: conformer made here, or the reason it failed."""
    from rdkit import Chem

    from force2geo.qc.engines import QCError
    from force2geo.qc.protocol import embed, prepare

    try:
        mol = prepare(smiles, elements)
        charge = Chem.GetFormalCharge(mol)
        if charge and not allow_charged:
            return Candidate(name, smiles, None, reason=_charge_reason(charge))
        positions = embed(mol, seed)
    except QCError as exc:
        return Candidate(name, smiles, None, reason=str(exc))
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    used, note = "etkdg", ""
    if start == "mmff":
        try:
            positions, used = _mmff(mol, z, positions, charge), "mmff"
        except QCError as exc:
            note = f"{exc}: relaxed from the ETKDG conformer"
    molecule = StartMolecule(z, positions, {"name": name, "smiles": smiles}, mol)
    return Candidate(name, smiles, molecule, used, note)


def _mmff(mol, z: np.ndarray, positions: np.ndarray, charge: int) -> np.ndarray:
    """The MMFF94 BFGS minimum near ``positions`` (ASE BFGS, as force2geo generate)."""
    from force2geo.qc.engines import MMFFEngine
    from force2geo.qc.protocol import relax_path

    path = relax_path(MMFFEngine(mol), z, positions, charge, MMFF_FMAX, MMFF_MAX_STEPS)
    return np.array(path.positions[-1], dtype=np.float64)


def _charge_reason(charge: int) -> str:
    return (f"input: net charge {charge:+d} (force2geo potentials are charge-blind and "
            "trained on neutral molecules; --allow-charged relaxes it anyway)")


def from_record(molecule: StartMolecule, default_name: str,
                elements: tuple[str, ...] = DEFAULT_ELEMENTS,
                allow_charged: bool = False) -> Candidate:
    """A :class:`Candidate` of a record read with its geometry (SDF, extxyz, store): its
    name and SMILES from the record (the SMILES of its RDKit molecule for SDF), refused
    with a reason when an element is outside ``elements`` or it carries a net charge."""
    from ase.data import chemical_symbols

    info = molecule.info
    name = str(info.get("name") or default_name)
    smiles = str(info.get("smiles") or _smiles_of(molecule.mol))
    symbols = {chemical_symbols[int(z)] for z in molecule.atomic_numbers}
    unknown = sorted(symbols - set(elements) - {"H"})
    if unknown:
        return Candidate(name, smiles, None, reason=f"input: element(s) {', '.join(unknown)} "
                         f"not supported (allowed: {' '.join(elements)})")
    charge = _charge_of(molecule)
    if charge and not allow_charged:
        return Candidate(name, smiles, None, reason=_charge_reason(charge))
    return Candidate(name, smiles, molecule, "input")


def _smiles_of(mol) -> str:
    """Canonical SMILES of an RDKit molecule (hydrogens removed), "" when none or unsure."""
    if mol is None:
        return ""
    from rdkit import Chem

    try:
        return Chem.MolToSmiles(Chem.RemoveHs(mol))
    except (ValueError, RuntimeError):
        return ""


def _charge_of(molecule: StartMolecule) -> int:
    if molecule.mol is not None:
        from rdkit import Chem

        return int(Chem.GetFormalCharge(molecule.mol))
    try:
        return int(molecule.info.get("charge", 0) or 0)
    except (TypeError, ValueError):
        return 0
