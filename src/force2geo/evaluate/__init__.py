"""Evaluation of MLIP geometry optimisation against a quantum-chemistry oracle (paper §4.2,
Appendix A.2): pure metric functions (:mod:`.metrics`), the choice of D_opt and of start
and reference geometries (:mod:`.selection`), oracle single points in a process pool
(:mod:`.oracle`), the resumable runner (:mod:`.runner`) and the report (:mod:`.report`).

Importing this package does not import torch, tblite or PySCF.
"""

from force2geo.evaluate.metrics import (
    PAPER_TABLE3,
    energy_percentage,
    geo_opt_metrics,
    heavy_atom_rmsd,
    kabsch_rmsd,
    molecule_metrics,
    residual_energy_kcal,
)

__all__ = [
    "PAPER_TABLE3",
    "energy_percentage",
    "geo_opt_metrics",
    "heavy_atom_rmsd",
    "kabsch_rmsd",
    "molecule_metrics",
    "residual_energy_kcal",
]
