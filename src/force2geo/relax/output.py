"""Relaxed molecules to extxyz or SDF, in input order, resumable after a kill.

Results arrive in the order molecules finish; :class:`OrderedOutput` holds them until every
earlier molecule is there, then appends them to ``OUTPUT.partial`` (and their trajectories
to ``TRAJECTORY.partial``) and records in ``OUTPUT.partial.json`` how many molecules and
bytes are complete. A killed run leaves those files; the next run with the same input and
settings truncates them to the recorded sizes (dropping a half-written record) and goes on
after the last complete molecule. At the end the partial files are renamed into place.

Each output record carries the input record's own keys (extxyz info or SD properties) plus
``converged``, ``n_steps``, ``fmax`` (eV/Å), ``energy`` (eV) and ``status``. A molecule that
was not relaxed (status ``failed``, :mod:`force2geo.relax.screen`) keeps its input geometry
and has a ``reason`` instead of ``fmax``, ``energy`` and forces. An input key with one of
these names is kept as ``input_<key>``. (ASE's extxyz reader moves ``energy``
from ``atoms.info`` into ``atoms.calc.results``; the file holds it as a frame key.)
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms

from force2geo.errors import InputError
from force2geo.relax.engine import RelaxResult
from force2geo.relax.inputs import StartMolecule
from force2geo.relax.screen import FAILED

RESULT_KEYS = ("converged", "n_steps", "fmax", "energy", "status", "reason")
FORMATS = {".xyz": "extxyz", ".extxyz": "extxyz", ".sdf": "sdf"}


def output_format(path: str | os.PathLike) -> str:
    """``extxyz`` or ``sdf`` from the file name of ``path``; InputError otherwise."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise InputError(path, f"output must end in {', '.join(FORMATS)}")
    return FORMATS[suffix]


def result_info(molecule: StartMolecule, result: RelaxResult) -> dict:
    """The input record's keys (renamed ``input_<key>`` where they clash) + the result's
    (a failed molecule's ``reason`` instead of numbers it does not have)."""
    info = {}
    for key, value in molecule.info.items():
        info[f"input_{key}" if key in RESULT_KEYS else key] = value
    if result.status == FAILED:
        info.update(converged=False, n_steps=0, status=result.status, reason=result.reason)
        return info
    info.update(converged=result.converged, n_steps=int(result.n_steps),
                fmax=float(result.fmax), energy=float(result.energy), status=result.status)
    return info


def extxyz_record(molecule: StartMolecule, result: RelaxResult) -> str:
    """One extxyz frame: final geometry, its forces (eV/Å; none for a failed molecule)
    and :func:`result_info`."""
    atoms = Atoms(numbers=result.atomic_numbers, positions=result.positions)
    atoms.info.update(_plain(result_info(molecule, result)))
    if result.status != FAILED:
        atoms.arrays["forces"] = np.asarray(result.forces, dtype=np.float64)
    text = io.StringIO()
    ase.io.write(text, atoms, format="extxyz")
    return text.getvalue()


def _plain(info: dict) -> dict:
    """Values extxyz can write: numbers, bools and strings (others as text)."""
    out = {}
    for key, value in info.items():
        if isinstance(value, (bool, int, float, str, np.integer, np.floating, np.bool_)):
            out[key] = value
        elif isinstance(value, np.ndarray):
            out[key] = value
        else:
            out[key] = str(value)
    return out


def sdf_record(molecule: StartMolecule, result: RelaxResult) -> str:
    """One SDF record: the input's molecule (or bonds perceived from the geometry) at the
    final geometry, with :func:`result_info` as SD properties."""
    from rdkit import Chem
    from rdkit.Geometry import Point3D

    if molecule.mol is not None:
        mol = Chem.Mol(molecule.mol)
    elif result.status == FAILED:  # its geometry is no ground for perceiving bonds
        mol = _atoms_only(result.atomic_numbers)
    else:
        mol = _mol_from_geometry(result)
    if mol.GetNumConformers() == 0:
        mol.AddConformer(Chem.Conformer(mol.GetNumAtoms()), assignId=True)
    conformer = mol.GetConformer()
    conformer.Set3D(True)
    for k, (x, y, z) in enumerate(np.asarray(result.positions, dtype=float)):
        conformer.SetAtomPosition(k, Point3D(x, y, z))
    info = result_info(molecule, result)
    if "name" in info:
        mol.SetProp("_Name", str(info["name"]))
    for key, value in info.items():
        if key != "name":
            mol.SetProp(key, _sd_value(value))
    text = io.StringIO()
    writer = Chem.SDWriter(text)
    writer.SetKekulize(False)
    writer.write(mol)
    writer.close()
    return text.getvalue()


def _sd_value(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "True" if value else "False"
    if isinstance(value, (float, np.floating)):
        return repr(float(value))
    return str(value)


def _atoms_only(atomic_numbers: np.ndarray):
    """An RDKit molecule of these atoms and no bonds."""
    from rdkit import Chem

    mol = Chem.RWMol()
    for z in atomic_numbers:
        mol.AddAtom(Chem.Atom(int(z)))
    return mol.GetMol()


def _mol_from_geometry(result: RelaxResult):
    """An RDKit molecule with bonds perceived from interatomic distances (no orders)."""
    from rdkit import Chem
    from rdkit.Chem import rdDetermineBonds

    symbols = [Chem.GetPeriodicTable().GetElementSymbol(int(z)) for z in result.atomic_numbers]
    lines = [str(len(symbols)), ""] + [f"{s} {x:.8f} {y:.8f} {z:.8f}"
                                       for s, (x, y, z) in zip(symbols, result.positions,
                                                               strict=True)]
    mol = Chem.MolFromXYZBlock("\n".join(lines) + "\n")
    rdDetermineBonds.DetermineConnectivity(mol)
    return mol


def trajectory_records(index: int, molecule: StartMolecule, result: RelaxResult) -> str:
    """All evaluated geometries of one relaxation as extxyz frames (input ``index``,
    ``step``, ``energy`` eV, ``forces`` eV/Å, and the input's ``name`` when it has one);
    none for a molecule that was not relaxed."""
    if result.trajectory is None:
        return ""
    positions, energy, forces = result.trajectory
    text = io.StringIO()
    for k in range(len(energy)):
        atoms = Atoms(numbers=result.atomic_numbers, positions=positions[k])
        atoms.info.update(index=index, step=k, energy=float(energy[k]))
        if "name" in molecule.info:
            atoms.info["name"] = str(molecule.info["name"])
        atoms.arrays["forces"] = forces[k]
        ase.io.write(text, atoms, format="extxyz")
    return text.getvalue()


def _truncate(path: Path, size: int) -> None:
    with open(path, "ab") as handle:
        if handle.tell() < size:
            raise InputError(path, f"shorter ({handle.tell()} bytes) than its index says "
                             f"({size}); delete it and its .json to start over")
        handle.truncate(size)


class OrderedOutput:
    """Writes results in input order to ``output`` (and ``trajectory``), resumably.

    ``signature`` (plain JSON) identifies the run: a partial output of a run with another
    signature is refused. Use as a context manager: on a normal exit the files are renamed
    into place; on an exception they stay, ready to resume. ``index_offset`` is added to
    the input index written with each trajectory frame (a shard's first input index).
    """

    def __init__(self, output: str | os.PathLike, signature: dict,
                 trajectory: str | os.PathLike | None = None, overwrite: bool = False):
        self.output = Path(output)
        self.format = output_format(self.output)
        self.trajectory = Path(trajectory) if trajectory is not None else None
        if self.trajectory is not None and output_format(self.trajectory) != "extxyz":
            raise InputError(self.trajectory, "trajectory output must be .xyz or .extxyz")
        self.signature = json.loads(json.dumps(signature))
        self.partial = self.output.with_name(self.output.name + ".partial")
        self.index_path = self.output.with_name(self.output.name + ".partial.json")
        self.done = 0
        self.index_offset = 0
        self.pending: dict[int, tuple[StartMolecule, RelaxResult]] = {}
        self._prepare(overwrite)

    def _targets(self) -> list[tuple[str, Path]]:
        out = [("output", self.partial)]
        if self.trajectory is not None:
            out.append(("trajectory", self.trajectory.with_name(self.trajectory.name
                                                                + ".partial")))
        return out

    def _prepare(self, overwrite: bool) -> None:
        if self.index_path.exists() and not overwrite:
            index = json.loads(self.index_path.read_text())
            if index.get("signature") != self.signature:
                raise InputError(self.index_path, "an interrupted run with other input or "
                                 "settings; rerun it as it was, or pass --overwrite")
            for name, path in self._targets():
                _truncate(path, int(index["bytes"][name]))
            self.done = int(index["done"])
            return
        if self.output.exists() and not overwrite:
            raise InputError(self.output, "exists; pass --overwrite to replace it")
        for _, path in self._targets():
            path.write_bytes(b"")
        self._commit()

    def _commit(self) -> None:
        """Record how many molecules and bytes are complete (a small JSON, replaced
        atomically after the data it describes is written and closed)."""
        sizes = {name: path.stat().st_size for name, path in self._targets()}
        index = {"done": self.done, "bytes": sizes, "signature": self.signature}
        tmp = self.index_path.with_name(self.index_path.name + ".tmp")
        tmp.write_text(json.dumps(index, indent=1))
        os.replace(tmp, self.index_path)

    def add(self, index: int, molecule: StartMolecule, result: RelaxResult) -> int:
        """Take the result of input molecule ``index``; write every result now in order.
        Returns how many were written by this call."""
        self.pending[index] = (molecule, result)
        ready = []  # (index, molecule, result)
        while self.done + len(ready) in self.pending:
            k = self.done + len(ready)
            ready.append((k, *self.pending.pop(k)))
        if not ready:
            return 0
        record = extxyz_record if self.format == "extxyz" else sdf_record
        with open(self.partial, "a", encoding="utf-8") as handle:
            handle.write("".join(record(m, r) for _, m, r in ready))
        if self.trajectory is not None:
            with open(self._targets()[1][1], "a", encoding="utf-8") as handle:
                handle.write("".join(trajectory_records(self.index_offset + k, m, r)
                                     for k, m, r in ready))
        self.done += len(ready)
        self._commit()
        return len(ready)

    def finish(self) -> None:
        """Rename the complete partial files into place and drop the index."""
        if self.pending:
            raise RuntimeError(f"results {sorted(self.pending)[:5]} wait for earlier ones")
        self._commit()
        finals = [self.output] + ([self.trajectory] if self.trajectory is not None else [])
        for (_, partial), final in zip(self._targets(), finals, strict=True):
            os.replace(partial, final)
        self.index_path.unlink()

    def __enter__(self) -> OrderedOutput:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error the index is left as last committed: a record being written when
        # the error struck may be incomplete, and the next run truncates it away.
        if exc_type is None:
            self.finish()
