"""Batched geometry optimisation with a machine-learning potential (paper §2.3).

Many molecules are relaxed at once on one device (:func:`relax`, :func:`relax_iter`) with
BFGS, L-BFGS or FIRE following ASE's semantics, with continuous batching within an atom
budget and a per-molecule status (converged, step_limit, diverged; ``failed`` for a
molecule :func:`screen` refuses: an element the model never saw, a non-finite coordinate,
overlapping atoms). The optimizers work on
a :class:`BatchState` and a force function, never on a trainer; :class:`PotentialCalculator`
exposes the same potential to ASE. BFGS may start from a model Hessian of each start
geometry (:func:`lindh_hessian`) instead of ASE's ``70 * I``; :mod:`force2geo.relax.shards`
shares a large input among the processes of a ``torchrun`` job.
"""

from __future__ import annotations

from force2geo.relax.calculator import PotentialCalculator
from force2geo.relax.convergence import CONVERGED, DIVERGED, STATUSES, STEP_LIMIT
from force2geo.relax.engine import (
    ForceFn,
    RelaxConfig,
    RelaxResult,
    RelaxStats,
    potential_force_fn,
    relax,
    relax_iter,
)
from force2geo.relax.hessian import lindh_hessian
from force2geo.relax.optimizers import (
    BFGS,
    FIRE,
    INITIAL_HESSIANS,
    LBFGS,
    OPTIMIZERS,
    Optimizer,
    make_optimizer,
)
from force2geo.relax.screen import FAILED, screen
from force2geo.relax.state import ATOM, SYSTEM, BatchState, Scope, concat

__all__ = [
    "ATOM",
    "BFGS",
    "CONVERGED",
    "DIVERGED",
    "FAILED",
    "FIRE",
    "INITIAL_HESSIANS",
    "LBFGS",
    "OPTIMIZERS",
    "STATUSES",
    "STEP_LIMIT",
    "SYSTEM",
    "BatchState",
    "ForceFn",
    "Optimizer",
    "PotentialCalculator",
    "RelaxConfig",
    "RelaxResult",
    "RelaxStats",
    "Scope",
    "concat",
    "lindh_hessian",
    "make_optimizer",
    "potential_force_fn",
    "relax",
    "relax_iter",
    "screen",
]
