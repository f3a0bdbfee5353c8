"""Quantum-chemistry (and force-field) engines behind one small interface.

An engine maps a molecule to energy, forces and frontier orbitals::

    engine.compute(atomic_numbers [n_atoms], positions [n_atoms, 3] Å, charge) -> Result

with ``Result.energy`` in eV, ``Result.forces [n_atoms, 3]`` in eV/Å and ``homo``/``lumo``
in eV (NaN for a force field). Engines speak Hartree and Bohr (or kcal/mol) internally;
every conversion goes through :mod:`force2geo.units`. They raise :class:`QCError` when a
calculation cannot give a trustworthy answer (SCF not converged, unsupported element).

tblite and PySCF are imported when an engine is first built, not when this module is
imported, so that a worker process can limit its threads first.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
from ase.calculators.calculator import Calculator, all_changes

from force2geo.errors import Force2GeoError
from force2geo.units import (
    ANGSTROM_TO_BOHR,
    HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
    HARTREE_TO_EV,
    KCAL_PER_MOL_TO_EV,
)

GFN2_MAX_Z = 86  # GFN2-xTB is parametrised for H to Rn.


class QCError(Force2GeoError):
    """A calculation failed for a reason worth reporting (and recording) per molecule.

    ``stage`` names the protocol stage ("input", "etkdg", "mmff", "xtb", "dft") when known.
    """

    def __init__(self, reason: str, stage: str | None = None):
        self.reason = reason
        self.stage = stage
        super().__init__(reason if stage is None else f"{stage}: {reason}")


@dataclass(frozen=True)
class Result:
    """One single point: ``energy`` eV, ``forces [n_atoms, 3]`` eV/Å, ``homo``/``lumo`` eV."""

    energy: float
    forces: np.ndarray
    homo: float = float("nan")
    lumo: float = float("nan")

    @property
    def gap(self) -> float:
        return self.lumo - self.homo


class Engine(ABC):
    """Energy, forces and frontier orbitals of one molecule at one geometry."""

    name: str = "engine"

    @abstractmethod
    def compute(self, atomic_numbers: np.ndarray, positions: np.ndarray,
                charge: int = 0) -> Result:
        """Single point at ``positions [n_atoms, 3]`` Å; raise :class:`QCError` on failure."""


def frontier_orbitals(energies: np.ndarray, occupations: np.ndarray) -> tuple[float, float]:
    """HOMO and LUMO (same unit as ``energies``) of a closed-shell, spin-summed occupation.

    An orbital counts as occupied when it holds more than one electron, which also reads
    Fermi-smeared occupations (tblite) correctly. Energies must be sorted ascending.
    """
    energies = np.asarray(energies, dtype=np.float64).reshape(-1)
    occupied = np.asarray(occupations, dtype=np.float64).reshape(-1) > 1.0
    n_occ = int(occupied.sum())
    if n_occ == 0 or n_occ == energies.shape[0]:
        return float("nan"), float("nan")
    return float(energies[n_occ - 1]), float(energies[n_occ])


def _check_shapes(atomic_numbers, positions) -> tuple[np.ndarray, np.ndarray]:
    z = np.asarray(atomic_numbers, dtype=np.int64).reshape(-1)
    pos = np.asarray(positions, dtype=np.float64)
    if pos.shape != (z.shape[0], 3):
        raise ValueError(f"positions have shape {pos.shape}, expected ({z.shape[0]}, 3)")
    return z, pos


class XTBEngine(Engine):
    """GFN2-xTB through tblite (closed shell, electronic temperature 300 K).

    The last tblite calculator and wavefunction are kept and reused as the SCF guess
    while the atoms and charge stay the same, which saves iterations along a relaxation.
    """

    name = "GFN2-xTB"

    def __init__(self, method: str = "GFN2-xTB", accuracy: float = 1.0, max_iter: int = 250):
        from tblite.interface import Calculator as TBLiteCalculator

        self._calculator_class = TBLiteCalculator
        self.method = method
        self.accuracy = accuracy
        self.max_iter = max_iter
        self._key: tuple | None = None
        self._calc = None
        self._previous = None

    def _calculator(self, z: np.ndarray, pos_bohr: np.ndarray, charge: int):
        key = (tuple(z.tolist()), int(charge))
        if key != self._key:
            calc = self._calculator_class(self.method, z, pos_bohr, charge=float(charge), uhf=0)
            calc.set("verbosity", 0)
            calc.set("accuracy", self.accuracy)
            calc.set("max-iter", self.max_iter)
            self._key, self._calc, self._previous = key, calc, None
        else:
            self._calc.update(positions=pos_bohr)
        return self._calc

    def compute(self, atomic_numbers, positions, charge: int = 0) -> Result:
        from tblite.exceptions import TBLiteRuntimeError, TBLiteValueError

        z, pos = _check_shapes(atomic_numbers, positions)
        if z.min() < 1 or z.max() > GFN2_MAX_Z:
            bad = sorted(set(z[(z < 1) | (z > GFN2_MAX_Z)].tolist()))
            raise QCError(f"{self.method} has no parameters for atomic number(s) {bad}")
        try:
            calc = self._calculator(z, pos * ANGSTROM_TO_BOHR, charge)
            result = calc.singlepoint(self._previous, copy=True)
        except (TBLiteRuntimeError, TBLiteValueError) as exc:
            self._key = None  # rebuild from scratch next time
            raise QCError(f"{self.method} failed: {str(exc).strip()}") from None
        self._previous = result
        energy_h = float(result["energy"])
        gradient = np.asarray(result["gradient"], dtype=np.float64)  # [n_atoms, 3] Eh/Bohr
        if not (np.isfinite(energy_h) and np.all(np.isfinite(gradient))):
            raise QCError(f"{self.method} returned a non-finite energy or gradient")
        homo, lumo = frontier_orbitals(result["orbital-energies"], result["orbital-occupations"])
        return Result(
            energy=energy_h * HARTREE_TO_EV,
            forces=-gradient * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
            homo=homo * HARTREE_TO_EV,
            lumo=lumo * HARTREE_TO_EV,
        )


class DFTEngine(Engine):
    """Restricted Kohn-Sham DFT through PySCF, B3LYP/6-31G* with density fitting by default.

    ``cart=True`` uses Cartesian (6D) d shells, as the 6-31G* basis was defined and as
    GAMESS (PubChemQC) and Gaussian use it. PySCF's ``"b3lyp"`` uses VWN-RPA correlation
    (as Gaussian); GAMESS' B3LYP uses VWN5 (``xc="b3lyp5"`` here).
    """

    def __init__(self, xc: str = "b3lyp", basis: str = "6-31g*", density_fit: bool = True,
                 cart: bool = True, max_cycle: int = 100, conv_tol: float = 1e-9):
        from pyscf import dft, gto  # noqa: F401  (fail early when PySCF is missing)

        self.xc = xc
        self.basis = basis
        self.density_fit = density_fit
        self.cart = cart
        self.max_cycle = max_cycle
        self.conv_tol = conv_tol
        self.name = f"{xc.upper()}/{basis.upper()}"
        self._guess_key: tuple | None = None
        self._guess_dm = None

    def _molecule(self, z: np.ndarray, pos: np.ndarray, charge: int):
        from pyscf import gto
        from pyscf.lib.exceptions import BasisNotFoundError

        atoms = [(int(zi), tuple(p)) for zi, p in zip(z, pos, strict=True)]
        try:
            with warnings.catch_warnings():  # PySCF's advice to install basis-set-exchange
                warnings.simplefilter("ignore", UserWarning)
                return gto.M(atom=atoms, basis=self.basis, charge=int(charge), spin=0,
                             unit="Angstrom", cart=self.cart, verbose=0)
        except BasisNotFoundError:
            raise QCError(f"basis {self.basis} has no functions for atomic number(s) "
                          f"{sorted(set(z.tolist()))}") from None
        except RuntimeError as exc:  # odd electron count with spin=0, for example
            raise QCError(f"cannot build the molecule for PySCF: {exc}") from None

    def compute(self, atomic_numbers, positions, charge: int = 0) -> Result:
        from pyscf import dft

        z, pos = _check_shapes(atomic_numbers, positions)
        mol = self._molecule(z, pos, charge)
        mf = dft.RKS(mol)
        mf.xc = self.xc
        mf.max_cycle = self.max_cycle
        mf.conv_tol = self.conv_tol
        if self.density_fit:
            mf = mf.density_fit()
        key = (tuple(z.tolist()), int(charge))
        dm0 = self._guess_dm if key == self._guess_key else None
        energy_h = float(mf.kernel(dm0=dm0))
        if not mf.converged:
            self._guess_key = None
            raise QCError(f"{self.name} SCF not converged in {self.max_cycle} cycles")
        self._guess_key, self._guess_dm = key, mf.make_rdm1()
        gradient = np.asarray(mf.nuc_grad_method().kernel(), dtype=np.float64)  # Eh/Bohr
        homo, lumo = frontier_orbitals(mf.mo_energy, mf.mo_occ)
        return Result(
            energy=energy_h * HARTREE_TO_EV,
            forces=-gradient * HARTREE_PER_BOHR_TO_EV_PER_ANGSTROM,
            homo=homo * HARTREE_TO_EV,
            lumo=lumo * HARTREE_TO_EV,
        )


class MMFFEngine(Engine):
    """MMFF94 from RDKit for one molecule (its topology fixes the force field).

    RDKit reports kcal/mol and kcal/(mol Å); they are converted to eV and eV/Å here.
    Frontier orbitals are NaN: a force field has none.
    """

    name = "MMFF94"

    def __init__(self, mol, variant: str = "MMFF94"):
        from rdkit import Chem
        from rdkit.Chem import rdForceFieldHelpers

        if mol.GetNumConformers() == 0:  # RDKit builds force fields from a conformer
            mol = Chem.Mol(mol)
            mol.AddConformer(Chem.Conformer(mol.GetNumAtoms()), assignId=True)
        props = rdForceFieldHelpers.MMFFGetMoleculeProperties(mol, mmffVariant=variant)
        if props is None:
            raise QCError(f"{variant} has no parameters for this molecule", stage="mmff")
        self.name = variant
        self._z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
        self._ff = rdForceFieldHelpers.MMFFGetMoleculeForceField(mol, props)

    def compute(self, atomic_numbers, positions, charge: int = 0) -> Result:
        z, pos = _check_shapes(atomic_numbers, positions)
        if not np.array_equal(z, self._z):
            raise ValueError("MMFFEngine was built for a different molecule")
        flat = pos.reshape(-1).tolist()
        energy = self._ff.CalcEnergy(flat) * KCAL_PER_MOL_TO_EV
        gradient = np.asarray(self._ff.CalcGrad(flat), dtype=np.float64).reshape(-1, 3)
        return Result(energy=float(energy), forces=-gradient * KCAL_PER_MOL_TO_EV)


class EngineCalculator(Calculator):
    """An ASE calculator over an :class:`Engine`; ``last_result`` keeps the orbitals."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, engine: Engine, charge: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.engine = engine
        self.charge = int(charge)
        self.last_result: Result | None = None

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        result = self.engine.compute(self.atoms.numbers, self.atoms.positions, self.charge)
        self.last_result = result
        self.results = {
            "energy": result.energy,
            "free_energy": result.energy,
            "forces": np.array(result.forces, dtype=np.float64),
        }
