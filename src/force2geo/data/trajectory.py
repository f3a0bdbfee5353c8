"""One molecule and its ordered geometry-optimisation snapshots.

Units: positions in Å, energies in eV, forces in eV/Å, orbital properties in eV.
A label that the source does not have is NaN (forces of a bare geometry, for example);
a label the source has but that is not finite is an input error, caught by ``validate``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from force2geo.errors import InputError

# Known stages, in protocol order. PubChemQCR: pm3 -> hf -> dft1 -> dft2.
# Made here: etkdg -> mmff -> xtb -> dft. "input" is a geometry read with no protocol.
STAGES: tuple[str, ...] = (
    "pm3", "hf", "dft1", "dft2", "etkdg", "mmff", "xtb", "dft", "input",
)
MAX_ATOMIC_NUMBER = 118


@dataclass
class Trajectory:
    """A molecule (atomic numbers, charge, identifiers) and its snapshots.

    Shapes: ``atomic_numbers [n_atoms]``, ``positions [n_snapshots, n_atoms, 3]``,
    ``energy [n_snapshots]``, ``forces [n_snapshots, n_atoms, 3]``, ``stages`` one
    name per snapshot.
    """

    atomic_numbers: np.ndarray
    positions: np.ndarray
    energy: np.ndarray
    forces: np.ndarray
    stages: list[str]
    charge: int = 0
    cid: int | None = None
    smiles: str = ""
    inchikey: str = ""
    name: str = ""
    properties: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.uint8).reshape(-1)
        n_atoms = self.atomic_numbers.shape[0]
        self.positions = np.asarray(self.positions, dtype=np.float64).reshape(-1, n_atoms, 3)
        n_snapshots = self.positions.shape[0]
        self.energy = np.asarray(self.energy, dtype=np.float64).reshape(n_snapshots)
        if self.forces is None:
            self.forces = np.full((n_snapshots, n_atoms, 3), np.nan)
        self.forces = np.asarray(self.forces, dtype=np.float64).reshape(n_snapshots, n_atoms, 3)
        if isinstance(self.stages, str):
            self.stages = [self.stages] * n_snapshots
        self.stages = list(self.stages)
        self.charge = int(self.charge)
        self.properties = {k: float(v) for k, v in self.properties.items()}

    @property
    def n_atoms(self) -> int:
        return int(self.atomic_numbers.shape[0])

    @property
    def n_snapshots(self) -> int:
        return int(self.positions.shape[0])

    @property
    def key(self) -> str:
        """A stable identifier: the name, else the CID, else the InChIKey."""
        if self.name:
            return self.name
        if self.cid is not None:
            return str(self.cid)
        return self.inchikey

    def select(self, stages: str | list[str]) -> Trajectory | None:
        """The snapshots of the given stage(s), or None when there are none."""
        wanted = {stages} if isinstance(stages, str) else set(stages)
        keep = [i for i, s in enumerate(self.stages) if s in wanted]
        return self.take(keep) if keep else None

    def take(self, indices) -> Trajectory:
        """The snapshots ``indices`` (in that order) of the same molecule."""
        keep = [int(i) for i in indices]
        return Trajectory(
            self.atomic_numbers, self.positions[keep], self.energy[keep], self.forces[keep],
            [self.stages[i] for i in keep], self.charge, self.cid, self.smiles,
            self.inchikey, self.name, dict(self.properties),
        )

    def validate(
        self, path: str | None = None, record: object = None, require: tuple[str, ...] = ()
    ) -> Trajectory:
        """Raise :class:`InputError` naming ``path``/``record`` if the data is unusable.

        ``require`` names labels the source provides ("energy", "forces"): those must be
        finite in every snapshot (a NaN energy read from a file is an error, not "absent").
        """

        def fail(reason: str) -> None:
            raise InputError(path, reason, record if record is not None else self.key or None)

        if self.n_atoms == 0:
            fail("molecule has no atoms")
        if self.n_snapshots == 0:
            fail("trajectory has no snapshots")
        z = self.atomic_numbers
        if z.min() < 1 or z.max() > MAX_ATOMIC_NUMBER:
            fail(f"unknown atomic number(s) {sorted(set(z[(z < 1) | (z > 118)].tolist()))}")
        if len(self.stages) != self.n_snapshots:
            fail(f"{len(self.stages)} stage labels for {self.n_snapshots} snapshots")
        if not np.all(np.isfinite(self.positions)):
            fail("non-finite coordinates")
        for label in require:
            bad = ~np.isfinite(getattr(self, label).reshape(self.n_snapshots, -1)).all(axis=1)
            if bad.any():
                fail(f"non-finite {label} in snapshot(s) {np.flatnonzero(bad)[:5].tolist()}")
        for name, value in self.properties.items():
            if np.isinf(value):
                fail(f"property {name!r} is infinite")
        return self

    def __repr__(self) -> str:
        stages = sorted(set(self.stages), key=self.stages.index)
        return (
            f"Trajectory({self.key!r}, n_atoms={self.n_atoms}, "
            f"n_snapshots={self.n_snapshots}, stages={stages})"
        )
