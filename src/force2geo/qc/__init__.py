"""Quantum chemistry: engines (GFN2-xTB via tblite, DFT via PySCF, MMFF via RDKit), the
relaxation protocol for one molecule, input molecules, parallel trajectory generation
(:mod:`~force2geo.qc.generate`), oracle labels for any geometries
(:mod:`~force2geo.qc.label`), geometries sampled near minima (:mod:`~force2geo.qc.sample`),
joining stores (:mod:`~force2geo.qc.merge`) and ``--shard I/N`` (:mod:`~force2geo.qc.shard`).

Importing this package does not import tblite or PySCF; engines do when first built.
"""

from force2geo.qc.engines import (
    DFTEngine,
    Engine,
    EngineCalculator,
    MMFFEngine,
    QCError,
    Result,
    XTBEngine,
)
from force2geo.qc.molecules import Molecule, Selection, load, read_smi
from force2geo.qc.protocol import ProtocolConfig, relax_molecule

__all__ = [
    "DFTEngine", "Engine", "EngineCalculator", "MMFFEngine", "Molecule", "ProtocolConfig",
    "QCError", "Result", "Selection", "XTBEngine", "load", "read_smi", "relax_molecule",
]
