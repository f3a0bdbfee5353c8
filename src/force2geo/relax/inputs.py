"""Start geometries for ``force2geo relax``, with each record's own metadata kept.

:func:`read_inputs` turns an INPUT into a list of :class:`StartMolecule`, in input order:

* a ``.smi`` file (``SMILES [name]`` per line) or ``builtin:SET``
  (:mod:`force2geo.qc.molecules`): RDKit ETKDGv3 conformer with hydrogens (seeded);
  ``info`` = ``name``, ``smiles``;
* an SDF file (``.sdf``/``.sd``/``.mol``, optionally ``.gz``): every record as written
  (explicit hydrogens, Å); ``info`` = the title (``name``) and every SD property;
* an extended XYZ file: every frame is one molecule; ``info`` = the frame's own info keys;
* a trajectory store, or any other format :mod:`force2geo.data.readers` reads: the first
  (``frame="first"``) or last snapshot of each trajectory; ``info`` = its name, smiles,
  inchikey, cid, stage and properties.

Problems name the file and the record (1-based) and stop before any relaxation.
"""

from __future__ import annotations

import gzip
import io
from dataclasses import dataclass, field
from pathlib import Path

import ase.io
import numpy as np

from force2geo.errors import InputError
from force2geo.relax.shards import share_range

FRAMES = ("first", "last")


@dataclass
class StartMolecule:
    """``atomic_numbers [n]``, ``positions [n, 3]`` Å, the record's own ``info``, and an
    RDKit molecule with hydrogens when the input had one (SMILES, SDF) for SDF output."""

    atomic_numbers: np.ndarray
    positions: np.ndarray
    info: dict = field(default_factory=dict)
    mol: object | None = None

    @property
    def start(self) -> tuple[np.ndarray, np.ndarray]:
        return self.atomic_numbers, self.positions


def _from_smiles(spec: str, seed: int, skip: int,
                 share: tuple[int, int]) -> list[StartMolecule | None]:
    """Conformers of a .smi file or built-in set; only the molecules of the ``share``
    (rank, world size) after its first ``skip`` are embedded, the others left as None
    (another process's, or already relaxed in an interrupted run). Every SMILES is
    checked (parsed, one fragment, closed shell); which elements may be relaxed is the
    model's to say (:mod:`force2geo.relax.screen`), per molecule."""
    from force2geo.qc.engines import QCError
    from force2geo.qc.molecules import ANY_ELEMENTS, load
    from force2geo.qc.protocol import embed, prepare

    molecules = load(spec)
    first, last = share_range(len(molecules), *share)
    out: list[StartMolecule | None] = []
    for number, molecule in enumerate(molecules, 1):
        try:
            mol = prepare(molecule.smiles, ANY_ELEMENTS)
            if not first + skip < number <= last:
                out.append(None)
                continue
            positions = embed(mol, seed)
        except QCError as exc:
            raise InputError(spec, f"{molecule.name}: {exc}", number) from None
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        out.append(StartMolecule(z, positions, {"name": molecule.name,
                                                "smiles": molecule.smiles}, mol))
    return out


def _open(path: Path, mode: str):
    return gzip.open(path, mode) if path.name.lower().endswith(".gz") else open(path, mode)


def _from_sdf(path: Path) -> list[StartMolecule]:
    from rdkit import Chem

    out = []
    with _open(path, "rb") as handle:
        supplier = Chem.ForwardSDMolSupplier(handle, sanitize=False, removeHs=False)
        for number, mol in enumerate(supplier, 1):
            if mol is None:
                raise InputError(path, "RDKit cannot parse the record", number)
            if mol.GetNumConformers() == 0:
                raise InputError(path, "record has no coordinates", number)
            try:
                Chem.SanitizeMol(mol)
            except ValueError:  # keep it as written; only its geometry is relaxed
                mol.UpdatePropertyCache(strict=False)
            info = {"name": mol.GetProp("_Name").strip()} if mol.HasProp("_Name") else {}
            info.update({key: mol.GetProp(key) for key in mol.GetPropNames()})
            z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
            positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64)
            out.append(StartMolecule(z, positions, info, mol))
    if not out:
        raise InputError(path, "empty file (no SDF records)")
    return out


def _from_extxyz(path: Path) -> list[StartMolecule]:
    from force2geo.data.readers.extxyz import split_frames

    out = []
    with _open(path, "rt") as handle:
        for frame in split_frames(handle):
            if frame.problem:
                raise InputError(path, f"line {frame.line}: {frame.problem}", frame.number)
            try:
                atoms = ase.io.read(io.StringIO(frame.text), format="extxyz")
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise InputError(path, f"line {frame.line}: cannot parse frame "
                                 f"({type(exc).__name__}: {exc})", frame.number) from None
            info = dict(atoms.info)
            if atoms.calc is not None and "energy" in atoms.calc.results:
                info["energy"] = float(atoms.calc.results["energy"])
            out.append(StartMolecule(np.array(atoms.numbers, dtype=np.int64),
                                     np.array(atoms.positions, dtype=np.float64), info))
    if not out:
        raise InputError(path, "empty file (no frames)")
    return out


def _from_trajectories(path: Path, frame: str) -> list[StartMolecule]:
    from force2geo.data.readers import read
    from force2geo.data.shard import MANIFEST
    from force2geo.data.store import TrajectoryStore

    if (path / MANIFEST).is_file():
        trajectories = TrajectoryStore(path).trajectories()
    else:
        trajectories = read(path)
    out = []
    for traj in trajectories:
        k = 0 if frame == "first" else traj.n_snapshots - 1
        info = {"name": traj.name, "smiles": traj.smiles, "inchikey": traj.inchikey,
                "cid": traj.cid, "stage": traj.stages[k], "charge": traj.charge,
                **traj.properties}
        info = {key: value for key, value in info.items() if value not in (None, "")}
        out.append(StartMolecule(traj.atomic_numbers.astype(np.int64),
                                 np.array(traj.positions[k], dtype=np.float64), info))
    if not out:
        raise InputError(path, "no trajectories")
    return out


def read_inputs(spec: str, seed: int = 42, frame: str = "first", skip: int = 0,
                share: tuple[int, int] = (0, 1)) -> list[StartMolecule | None]:
    """The molecules of ``spec`` (see the module docstring) in input order. ``seed`` seeds
    ETKDG for SMILES input; ``frame`` picks the snapshot of a store's trajectories. SMILES
    are embedded only within ``share`` = (rank, world size), a :func:`share_range` of the
    input, and after its first ``skip`` (already done); the others are None."""
    if frame not in FRAMES:
        raise ValueError(f"frame must be one of {FRAMES}, got {frame!r}")
    if spec.startswith("builtin:"):
        return _from_smiles(spec, seed, skip, share)
    path = Path(spec)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    suffix = path.name.lower().removesuffix(".gz")
    if suffix.endswith(".smi"):
        return _from_smiles(spec, seed, skip, share)
    from force2geo.data.readers import detect_format, reader

    if path.is_file() and reader("sdf").detect(path):
        return _from_sdf(path)
    if path.is_file() and reader("extxyz").detect(path):
        return _from_extxyz(path)
    if path.is_dir() or detect_format(path):
        return _from_trajectories(path, frame)
    raise InputError(path, "cannot tell the format")  # detect_format raises first
