"""Off-equilibrium geometries around minima: Cartesian noise or normal-mode displacements.

For each trajectory of a store, the last frame of ``stage`` (the minimum of an xTB
relaxation) is displaced ``per_molecule`` times per amplitude, and the geometries are
written to an extxyz file for ``force2geo label``. Amplitude convention, in Å: the
root-mean-square of the 3N Cartesian displacement components (so the per-atom RMSD is
√3 times larger), the same scale as ``benchmarks/off_equilibrium.py``.

* ``displace``: every component is drawn from a Gaussian of standard deviation equal to
  the amplitude (so the RMS equals it on average; each frame records its own ``rms``).
* ``normal-modes``: ``d = Σ_k c_k v_k`` over the vibrational modes ``v_k`` (unit
  eigenvectors of the GFN2-xTB Cartesian Hessian, with translations and rotations projected
  out), ``c_k ~ N(0, 1 / max(κ_k, 0.5 eV/Å²))`` with ``κ_k`` the mode's force constant
  (the shape of a harmonic Boltzmann distribution: soft modes move most), then scaled so
  the RMS equals the amplitude exactly. The Hessian costs 6N xTB gradients (central
  differences of 0.005 Å; about 2 s for 30 atoms on one core), so molecules above
  ``max_hessian_atoms`` atoms are skipped.

Draws are seeded by ``(seed, molecule name, amplitude)``, so a molecule's samples do not
depend on the store's order or on the other amplitudes asked for. Each frame's info keys
name the source (``name``, ``smiles``, ``inchikey``, ``charge``, ``source_trajectory``,
``source_frame``) and the draw (``method``, ``amplitude``, ``sample``, ``rms``, ``seed``);
``OUT.json`` beside the file records the run.
"""

from __future__ import annotations

import os
import sys
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from force2geo import atomic
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.qc.engines import QCError, XTBEngine
from force2geo.qc.generate import _now, _versions
from force2geo.qc.pool import run_tasks

METHODS = ("displace", "normal-modes")
KAPPA_FLOOR = 0.5  # eV/Å²; softer (or negative) modes are weighted as this stiff
HESSIAN_STEP = 0.005  # Å
HESSIAN_ACCURACY = 0.01  # tblite accuracy: SCF noise in forces ~1e-6 eV/Å instead of ~1e-4


@dataclass(frozen=True)
class SampleConfig:
    """What :func:`sample` draws (see the module docstring); amplitudes in Å."""

    method: str = "displace"
    amplitudes: tuple[float, ...] = (0.05, 0.1, 0.2)
    per_molecule: int = 1
    seed: int = 0
    stage: str = "xtb"
    max_hessian_atoms: int = 60

    def __post_init__(self) -> None:
        object.__setattr__(self, "amplitudes", tuple(float(a) for a in self.amplitudes))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not self.amplitudes or not all(a > 0 for a in self.amplitudes):
            raise ValueError(f"amplitudes must be positive (Å), got {self.amplitudes}")
        if self.per_molecule < 1:
            raise ValueError(f"per_molecule must be >= 1, got {self.per_molecule}")


@dataclass
class SampleStats:
    molecules: int = 0
    geometries: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"name", "reason"}


def rms(displacement: np.ndarray) -> float:
    """Root-mean-square over the Cartesian components of ``displacement [n_atoms, 3]`` Å."""
    return float(np.sqrt(np.mean(np.square(displacement))))


# --------------------------------------------------------------------------- normal modes


def xtb_hessian(atomic_numbers: np.ndarray, positions: np.ndarray, charge: int = 0,
                step: float = HESSIAN_STEP) -> np.ndarray:
    """GFN2-xTB Cartesian Hessian ``[3 n_atoms, 3 n_atoms]`` in eV/Å² by central differences
    of forces (6 n_atoms gradients), symmetrised."""
    engine = XTBEngine(accuracy=HESSIAN_ACCURACY)
    x = np.asarray(positions, dtype=np.float64)
    n = x.size
    hessian = np.empty((n, n))
    for i in range(n):
        plus, minus = x.copy().reshape(-1), x.copy().reshape(-1)
        plus[i] += step
        minus[i] -= step
        f_plus = engine.compute(atomic_numbers, plus.reshape(-1, 3), charge).forces
        f_minus = engine.compute(atomic_numbers, minus.reshape(-1, 3), charge).forces
        hessian[i] = -(f_plus - f_minus).reshape(-1) / (2 * step)
    return 0.5 * (hessian + hessian.T)


def rigid_motions(positions: np.ndarray) -> np.ndarray:
    """Orthonormal basis ``[3 n_atoms, r]`` of translations and rotations (r = 6, or 5 for
    a linear molecule, 3 for one atom)."""
    x = np.asarray(positions, dtype=np.float64)
    centred = x - x.mean(axis=0)
    vectors = []
    for axis in np.eye(3):
        vectors.append(np.broadcast_to(axis, x.shape).reshape(-1))
        vectors.append(np.cross(axis, centred).reshape(-1))
    basis, singular, _ = np.linalg.svd(np.stack(vectors, axis=1), full_matrices=False)
    return basis[:, singular > 1e-8 * singular.max()]


def vibrational_modes(hessian: np.ndarray, positions: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Force constants ``κ [m]`` (eV/Å²) and unit modes ``[m, n_atoms, 3]`` of a Cartesian
    Hessian, translations and rotations projected out (m = 3 n_atoms - 6 or - 5)."""
    rigid = rigid_motions(positions)
    projector = np.eye(hessian.shape[0]) - rigid @ rigid.T
    projected = projector @ hessian @ projector
    kappa, vectors = np.linalg.eigh(0.5 * (projected + projected.T))
    rigidness = np.square(rigid.T @ vectors).sum(axis=0)
    vibrational = np.sort(np.argsort(rigidness)[: hessian.shape[0] - rigid.shape[1]])
    return kappa[vibrational], vectors[:, vibrational].T.reshape(len(vibrational), -1, 3)


def normal_mode_displacement(rng: np.random.Generator, kappa: np.ndarray, modes: np.ndarray,
                             amplitude: float) -> np.ndarray:
    """A random combination of ``modes`` with RMS ``amplitude`` (module docstring)."""
    weights = 1.0 / np.sqrt(np.maximum(kappa, KAPPA_FLOOR))
    displacement = np.tensordot(rng.normal(size=kappa.shape) * weights, modes, axes=1)
    return displacement * (amplitude / rms(displacement))


# --------------------------------------------------------------------------- driver


class Minimum(NamedTuple):
    """The last frame ``frame`` of a stage of trajectory ``trajectory``: ``positions
    [n_atoms, 3]`` Å and the molecule's identifiers."""

    trajectory: int
    frame: int
    name: str
    atomic_numbers: np.ndarray
    charge: int
    positions: np.ndarray
    smiles: str = ""
    inchikey: str = ""


def minima(store: TrajectoryStore, stage: str, limit: int | None = None) -> list[Minimum]:
    """The last frame of ``stage`` of each trajectory that has one, at most ``limit``."""
    if stage not in store.stage_names:
        raise InputError(store.path, f"no stage {stage!r}; it has "
                         f"{', '.join(store.stage_names)}")
    out: list[Minimum] = []
    for j in range(store.n_trajectories):
        if limit is not None and len(out) >= limit:
            break
        t = store.trajectory(j)
        frames = [k for k, name in enumerate(t.stages) if name == stage]
        if frames:
            out.append(Minimum(j, frames[-1], t.key or f"trajectory-{j}", t.atomic_numbers,
                               t.charge, t.positions[frames[-1]], t.smiles, t.inchikey))
    return out


def displacements(config: SampleConfig, minimum: Minimum
                  ) -> list[tuple[float, int, np.ndarray]]:
    """``(amplitude, sample, displacement [n_atoms, 3] Å)`` of one molecule; QCError when
    its Hessian cannot be had."""
    z, x = minimum.atomic_numbers, minimum.positions
    modes = None
    if config.method == "normal-modes":
        if len(z) > config.max_hessian_atoms:
            raise QCError(f"{len(z)} atoms > --max-hessian-atoms {config.max_hessian_atoms}")
        if len(z) < 2:
            raise QCError("a single atom has no vibrational modes")
        modes = vibrational_modes(xtb_hessian(z, x, minimum.charge), x)
    out = []
    for amplitude in config.amplitudes:
        rng = np.random.default_rng([config.seed, zlib.crc32(minimum.name.encode()),
                                     round(amplitude * 1e6)])
        for s in range(config.per_molecule):
            if modes is None:
                out.append((amplitude, s, rng.normal(scale=amplitude, size=x.shape)))
            else:
                out.append((amplitude, s, normal_mode_displacement(rng, *modes, amplitude)))
    return out


def _work(task: tuple[SampleConfig, Minimum]) -> tuple[int, list | str]:
    """One molecule in a worker: ``(trajectory, draws)``, or the reason it was skipped."""
    config, minimum = task
    try:
        return minimum.trajectory, displacements(config, minimum)
    except QCError as exc:
        return minimum.trajectory, exc.reason


def _draw_all(config: SampleConfig, found: list[Minimum], workers: int, progress: bool
              ) -> dict[int, list | str]:
    """Draws of every molecule; normal modes in a pool of one-thread workers (xTB
    Hessians: tblite's threads would fight over the cores), Cartesian noise here."""
    tasks = [(config, minimum) for minimum in found]
    if config.method == "displace":
        return dict(_work(task) for task in tasks)
    results: dict[int, list | str] = {}
    run_tasks(_work, tasks, workers, lambda r: results.__setitem__(*r), lambda: None,
              progress=progress, unit="mol")
    return results


def _frame(config: SampleConfig, minimum: Minimum, amplitude: float, s: int, d: np.ndarray):
    from ase import Atoms

    atoms = Atoms(numbers=minimum.atomic_numbers, positions=minimum.positions + d)
    atoms.info.update(name=minimum.name, charge=minimum.charge, method=config.method,
                      amplitude=amplitude, sample=s, rms=rms(d), seed=config.seed,
                      source_trajectory=minimum.trajectory, source_frame=minimum.frame)
    for key in ("smiles", "inchikey"):
        if getattr(minimum, key):
            atoms.info[key] = getattr(minimum, key)
    return atoms


def sample(store_path: str | os.PathLike, out: str | os.PathLike,
           config: SampleConfig = SampleConfig(), limit: int | None = None,
           workers: int | None = None, progress: bool = True) -> SampleStats:
    """Write displaced geometries around the minima of ``store_path`` to the extxyz ``out``
    (atomically) and its run record to ``out.json``; ``limit`` caps the molecules and
    ``workers`` processes compute normal-mode Hessians."""
    import ase.io

    out = Path(out)
    if not out.name.lower().endswith((".xyz", ".extxyz")):
        raise InputError(out, "output must end in .xyz or .extxyz")
    store = TrajectoryStore(store_path)
    found = minima(store, config.stage, limit)
    draws = _draw_all(config, found, max(1, int(workers or os.cpu_count() or 1)), progress)
    stats, images = SampleStats(), []
    for minimum in found:
        drawn = draws[minimum.trajectory]
        if isinstance(drawn, str):
            stats.skipped.append({"name": minimum.name, "reason": drawn})
            continue
        stats.molecules += 1
        images.extend(_frame(config, minimum, a, s, d) for a, s, d in drawn)
    if not images:
        raise InputError(store_path, f"no geometries sampled ({len(stats.skipped)} "
                         f"molecules skipped, e.g. {stats.skipped[:1]})")
    with atomic.atomic_open(out, "w", encoding="utf-8") as handle:
        ase.io.write(handle, images, format="extxyz")
    stats.geometries = len(images)
    atomic.write_json(out.with_name(out.name + ".json"),
                      _record(config, store, limit, out, stats), indent=1)
    return stats


def _record(config: SampleConfig, store: TrajectoryStore, limit: int | None, out: Path,
            stats: SampleStats) -> dict:
    return {"created": _now(), "command": " ".join(sys.argv), "config": asdict(config),
            "store": str(store.path), "store_fingerprint": store.fingerprint,
            "limit": limit, "output_sha256": atomic.file_sha256(out),
            "amplitude_convention": "RMS over the 3N Cartesian components, Å",
            "counts": {"molecules": stats.molecules, "geometries": stats.geometries,
                       "skipped": len(stats.skipped)},
            "skipped": stats.skipped, "units": {"positions": "Angstrom"},
            "versions": _versions()}
