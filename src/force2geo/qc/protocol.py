"""One molecule's relaxation protocol, after PubChemQC's multi-stage scheme.

SMILES -> RDKit ETKDG conformer -> MMFF94 BFGS pre-optimisation -> GFN2-xTB BFGS
relaxation (ASE BFGS, fmax 0.05 eV/Å, at most 500 steps) -> optionally B3LYP/6-31G*
single points on chosen xTB frames or a B3LYP relaxation.

Snapshot stages and the level of their labels (energy eV, forces eV/Å):

- ``etkdg``: the embedded geometry, labelled with MMFF94 (the level that acts on it next);
- ``mmff``: the MMFF94 BFGS path after it (subsampled to ``max_mmff_frames``, last kept);
- ``xtb``: every GFN2-xTB BFGS step; the first frame is the last MMFF geometry;
- ``dft``: the chosen xTB geometries again (``single``) or the DFT BFGS path starting at
  the last xTB geometry (``relax``), labelled with DFT.

As in PubChemQCR, the last geometry of one stage reappears as the first of the next,
labelled at the next level. Orbital properties (eV): ``xtb_homo``, ``xtb_lumo``,
``xtb_gap`` at the final xTB geometry; ``dft_*`` from the last DFT calculation; ``homo``,
``lumo``, ``gap`` from the highest level computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from force2geo.data.trajectory import Trajectory
from force2geo.qc.engines import (
    GFN2_MAX_Z,
    DFTEngine,
    Engine,
    EngineCalculator,
    MMFFEngine,
    QCError,
    Result,
    XTBEngine,
)
from force2geo.qc.molecules import DEFAULT_ELEMENTS, rejection

DFT_MODES = ("none", "single", "relax")
BOND_FACTOR = 1.2  # a pair is bonded when closer than 1.2 x the sum of covalent radii


@dataclass(frozen=True)
class ProtocolConfig:
    """Settings of :func:`relax_molecule`. Forces in eV/Å.

    ``dft_frames`` (for ``dft="single"``) is a comma list of xTB-stage frames: ``first``,
    ``last``, ``all`` or integer indices (negative count from the end).
    ``max_mmff_frames`` caps the stored MMFF frames (evenly spaced, last kept) so the
    cheap force-field stage does not dominate the data.
    """

    seed: int = 42
    fmax: float = 0.05
    max_steps: int = 500
    mmff_fmax: float = 0.05
    mmff_max_steps: int = 1000
    max_mmff_frames: int = 10
    dft: str = "none"
    dft_frames: str = "last"
    dft_max_steps: int = 200
    dft_xc: str = "b3lyp"
    dft_basis: str = "6-31g*"
    elements: tuple[str, ...] = DEFAULT_ELEMENTS
    check_connectivity: bool = True

    def __post_init__(self) -> None:
        from ase.data import atomic_numbers

        if self.dft not in DFT_MODES:
            raise ValueError(f"dft must be one of {DFT_MODES}, got {self.dft!r}")
        if self.fmax <= 0 or self.mmff_fmax <= 0:
            raise ValueError("fmax and mmff_fmax must be positive (eV/Å)")
        if min(self.max_steps, self.mmff_max_steps, self.dft_max_steps) < 0 \
                or self.max_mmff_frames < 0:
            raise ValueError("step and frame limits must be >= 0")
        object.__setattr__(self, "elements", tuple(self.elements))
        for symbol in self.elements:
            z = atomic_numbers.get(symbol, 0)
            if not 1 <= z <= GFN2_MAX_Z:
                raise ValueError(f"element {symbol!r} is not one GFN2-xTB supports (H to Rn)")
        dft_frame_indices(self.dft_frames, 3)  # raises on a malformed spec


class RelaxPath(NamedTuple):
    """An optimisation path: ``positions [k, n_atoms, 3]`` Å, ``energy [k]`` eV,
    ``forces [k, n_atoms, 3]`` eV/Å, the engine ``result`` at the last frame."""

    positions: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    result: Result
    converged: bool


def dft_frame_indices(spec: str, n_frames: int) -> list[int]:
    """Sorted distinct frame indices in ``range(n_frames)`` named by ``spec``."""
    out: set[int] = set()
    for token in (t.strip() for t in spec.split(",")):
        if token == "first":
            out.add(0)
        elif token == "last":
            out.add(n_frames - 1)
        elif token == "all":
            out.update(range(n_frames))
        else:
            try:
                index = int(token)
            except ValueError:
                raise ValueError(f"dft_frames: {token!r} is not first, last, all or an "
                                 "integer") from None
            if not -n_frames <= index < n_frames:
                index = n_frames - 1 if index > 0 else 0  # clamp to the path
            out.add(index % n_frames)
    return sorted(out)


def relax_path(engine: Engine, atomic_numbers: np.ndarray, positions: np.ndarray,
               charge: int, fmax: float, max_steps: int) -> RelaxPath:
    """Run ASE BFGS on ``engine`` and record every evaluated frame (the start included)."""
    from ase import Atoms
    from ase.optimize import BFGS

    calc = EngineCalculator(engine, charge)
    atoms = Atoms(numbers=atomic_numbers, positions=positions, calculator=calc)
    frames_x, frames_e, frames_f = [], [], []
    converged = False
    for step_converged in BFGS(atoms, logfile=None).irun(fmax=fmax, steps=max_steps):
        converged = step_converged
        frames_x.append(atoms.get_positions())
        frames_e.append(atoms.get_potential_energy())
        frames_f.append(atoms.get_forces())
    return RelaxPath(np.array(frames_x), np.array(frames_e), np.array(frames_f),
                calc.last_result, bool(converged))


def fmax_of(forces: np.ndarray) -> float:
    """Largest per-atom force norm (eV/Å) of ``forces [n_atoms, 3]``, as ASE measures it."""
    return float(np.sqrt((np.asarray(forces) ** 2).sum(axis=-1)).max())


# --------------------------------------------------------------------------- stages


def prepare(smiles: str, elements=DEFAULT_ELEMENTS):
    """Parse and check ``smiles``; return the RDKit molecule with explicit hydrogens."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(smiles) if smiles else None
    finally:
        RDLogger.EnableLog("rdApp.*")
    if mol is None:
        raise QCError(f"unparsable SMILES {smiles!r}", stage="input")
    reason = rejection(mol, elements)
    if reason:
        raise QCError(reason, stage="input")
    return Chem.AddHs(mol)


def embed(mol, seed: int) -> np.ndarray:
    """ETKDGv3 conformer of ``mol`` (with hydrogens): ``positions [n_atoms, 3]`` Å."""
    from rdkit.Chem import rdDistGeom

    params = rdDistGeom.ETKDGv3()
    params.randomSeed = int(seed)
    if rdDistGeom.EmbedMolecule(mol, params) < 0:
        params.useRandomCoords = True  # RDKit's advice when distance geometry fails
        if rdDistGeom.EmbedMolecule(mol, params) < 0:
            raise QCError("ETKDG embedding failed (also from random coordinates)",
                          stage="etkdg")
    return np.array(mol.GetConformer().GetPositions(), dtype=np.float64)


def subsample(n: int, max_frames: int) -> np.ndarray:
    """At most ``max_frames`` evenly spaced indices of ``range(n)``, the last one kept."""
    if n <= max_frames:
        return np.arange(n)
    if max_frames <= 0:
        return np.arange(0)
    if max_frames == 1:
        return np.array([n - 1])
    return np.unique(np.linspace(0, n - 1, max_frames).round().astype(np.int64))


def bond_changes(mol, positions: np.ndarray) -> list[str]:
    """Bonds of ``mol``'s graph broken, or bonds formed, at ``positions [n_atoms, 3]`` Å."""
    from ase.data import covalent_radii

    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    n = z.shape[0]
    graph = np.zeros((n, n), dtype=bool)
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        graph[i, j] = graph[j, i] = True
    radii = covalent_radii[z]
    dist = np.linalg.norm(positions[:, None, :] - positions[None, :, :], axis=-1)
    near = dist < BOND_FACTOR * (radii[:, None] + radii[None, :])
    np.fill_diagonal(near, False)
    symbols = [f"{a.GetSymbol()}{a.GetIdx()}" for a in mol.GetAtoms()]
    changes = []
    for i, j in zip(*np.nonzero(np.triu(graph != near)), strict=True):
        kind = "broken" if graph[i, j] else "formed"
        changes.append(f"{symbols[i]}-{symbols[j]} {kind} ({dist[i, j]:.2f} Å)")
    return changes


def _check_bonds(mol, positions: np.ndarray, stage: str) -> None:
    changes = bond_changes(mol, positions)
    if changes:
        raise QCError("bonds changed during relaxation: " + ", ".join(changes[:4]), stage=stage)


def _dft_stage(config: ProtocolConfig, z: np.ndarray, charge: int, mol,
               xtb: RelaxPath) -> tuple[np.ndarray, np.ndarray, np.ndarray, Result]:
    """DFT snapshots (positions, energy, forces) and the last DFT result."""
    engine = DFTEngine(xc=config.dft_xc, basis=config.dft_basis)
    try:
        if config.dft == "single":
            frames = dft_frame_indices(config.dft_frames, xtb.energy.shape[0])
            results = [engine.compute(z, xtb.positions[i], charge) for i in frames]
            return (xtb.positions[frames], np.array([r.energy for r in results]),
                    np.array([r.forces for r in results]), results[-1])
        path = relax_path(engine, z, xtb.positions[-1], charge, config.fmax,
                          config.dft_max_steps)
    except QCError as exc:
        raise QCError(exc.reason, stage="dft") from None
    if not path.converged:
        raise QCError(f"{engine.name} relaxation not converged in {config.dft_max_steps} "
                      f"steps (fmax {fmax_of(path.forces[-1]):.3f} eV/Å)", stage="dft")
    if config.check_connectivity:
        _check_bonds(mol, path.positions[-1], "dft")
    return path.positions, path.energy, path.forces, path.result


def _orbitals(prefix: str, result: Result) -> dict[str, float]:
    return {f"{prefix}homo": result.homo, f"{prefix}lumo": result.lumo,
            f"{prefix}gap": result.gap}


# --------------------------------------------------------------------------- protocol


def relax_molecule(smiles: str, name: str, config: ProtocolConfig = ProtocolConfig()
                   ) -> Trajectory:
    """Run the protocol on one molecule and return its trajectory (eV, Å, eV/Å).

    Raises :class:`QCError` with ``stage`` set when the molecule is rejected (bad SMILES,
    unsupported element, several fragments, open shell), embedding fails, MMFF has no
    parameters, xTB or DFT does not converge, or bonds change during relaxation.
    """
    from rdkit import Chem

    mol = prepare(smiles, config.elements)
    charge = Chem.GetFormalCharge(mol)
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    start = embed(mol, config.seed)
    mmff = relax_path(MMFFEngine(mol), z, start, charge, config.mmff_fmax,
                      config.mmff_max_steps)
    keep = 1 + subsample(mmff.energy.shape[0] - 1, config.max_mmff_frames)
    try:
        xtb = relax_path(XTBEngine(), z, mmff.positions[-1], charge, config.fmax,
                         config.max_steps)
    except QCError as exc:
        raise QCError(exc.reason, stage="xtb") from None
    if not xtb.converged:
        raise QCError(f"GFN2-xTB relaxation not converged in {config.max_steps} steps "
                      f"(fmax {fmax_of(xtb.forces[-1]):.3f} eV/Å)", stage="xtb")
    if config.check_connectivity:
        _check_bonds(mol, xtb.positions[-1], "xtb")
    parts = [
        ("etkdg", mmff.positions[:1], mmff.energy[:1], mmff.forces[:1]),
        ("mmff", mmff.positions[keep], mmff.energy[keep], mmff.forces[keep]),
        ("xtb", xtb.positions, xtb.energy, xtb.forces),
    ]
    properties = _orbitals("xtb_", xtb.result)
    top = xtb.result
    if config.dft != "none":
        positions, energy, forces, top = _dft_stage(config, z, charge, mol, xtb)
        parts.append(("dft", positions, energy, forces))
        properties.update(_orbitals("dft_", top))
    properties.update(_orbitals("", top))
    return Trajectory(
        atomic_numbers=z,
        positions=np.concatenate([p[1] for p in parts]),
        energy=np.concatenate([p[2] for p in parts]),
        forces=np.concatenate([p[3] for p in parts]),
        stages=[p[0] for p in parts for _ in range(p[2].shape[0])],
        charge=charge,
        smiles=Chem.MolToSmiles(Chem.RemoveHs(mol)),
        inchikey=Chem.MolToInchiKey(mol),
        name=name,
        properties=properties,
    )
