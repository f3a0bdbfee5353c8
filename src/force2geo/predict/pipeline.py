"""SMILES to answer: MLIP relaxation of every candidate, then a property model on the
relaxed geometries (paper §2.3-2.4: Force2Geo geometries as the input of a 3D property
predictor).

:func:`predict_candidates` takes the :class:`~force2geo.predict.inputs.Candidate` list of
an input, relaxes the ones with a start geometry in one continuous batch
(:func:`force2geo.relax.relax_iter`), and predicts the property of every molecule whose
relaxation did not diverge. It returns one :class:`MoleculePrediction` per candidate in
input order; nothing one molecule does stops the others.

Statuses: ``converged`` / ``step_limit`` (the relaxation's; a step-limit molecule still
gets its property, at the geometry where the relaxation stopped), ``diverged`` (no numbers
but the steps), ``failed`` (the input: bad SMILES, unsupported element or charge,
embedding failure; or a molecule the potential cannot treat, see
:func:`force2geo.relax.screen.screen`: an element it was not trained on, a non-finite
coordinate, overlapping atoms).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm import tqdm

from force2geo.predict.inputs import STARTS, Candidate
from force2geo.qc.molecules import DEFAULT_ELEMENTS
from force2geo.relax import DIVERGED, STEP_LIMIT, RelaxConfig, RelaxResult, RelaxStats
from force2geo.relax.screen import FAILED, screen

if TYPE_CHECKING:
    from force2geo.finetune.dataset import PropertyBatch

PREDICT_STATUSES = ("converged", STEP_LIMIT, DIVERGED, FAILED)
DIVERGED_REASON = ("relaxation diverged (non-finite energy or forces, an atom more than "
                   "{max_neighbor_distance:g} Å from all others, or energy "
                   "{max_energy_rise:g} eV above the start)")


@dataclass(frozen=True)
class PredictConfig:
    """How ``force2geo predict`` works: the ``relax`` settings (fmax eV/Å, steps,
    optimizer, atom budget), how SMILES get a ``start`` geometry (:data:`STARTS`) with ETKDG
    ``seed``, the ``elements`` and whether charged molecules (``allow_charged``) are
    accepted, ``batch_size`` molecules per property-model batch, and ``progress`` bars
    (shown on a terminal only)."""

    relax: RelaxConfig = field(default_factory=RelaxConfig)
    start: str = "mmff"
    seed: int = 42
    elements: tuple[str, ...] = DEFAULT_ELEMENTS
    allow_charged: bool = False
    batch_size: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        if self.start not in STARTS:
            raise ValueError(f"start must be one of {STARTS}, got {self.start!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        object.__setattr__(self, "elements", tuple(self.elements))


@dataclass
class MoleculePrediction:
    """The answer for one input molecule (one CSV row): ``index`` in the input, its
    candidate, the relaxation ``result`` (None: not relaxed), the members' spread at the
    final geometry (``energy_std`` eV, ``forces_std`` eV/Å; ensembles only) and whether it
    is above a calibrated flag threshold (``uncertain``), the predicted property ``value``
    eV and its ensemble spread ``value_std`` eV."""

    index: int
    candidate: Candidate
    result: RelaxResult | None = None
    energy_std: float | None = None
    forces_std: float | None = None
    uncertain: bool | None = None
    value: float | None = None
    value_std: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return FAILED if self.result is None else self.result.status

    @property
    def relaxed(self) -> bool:
        """Whether it has a usable relaxed geometry (converged or step limit)."""
        return self.result is not None and self.result.status != DIVERGED

    @property
    def reason(self) -> str:
        return "; ".join(n for n in [self.candidate.reason, *self.notes] if n)

    @property
    def n_atoms(self) -> int | None:
        molecule = self.candidate.molecule
        return None if molecule is None else len(molecule.atomic_numbers)


@dataclass
class PredictionRun:
    """Every molecule's :class:`MoleculePrediction` in input order, the relaxation's
    :class:`~force2geo.relax.RelaxStats` and wall times (s) of each stage."""

    molecules: list[MoleculePrediction]
    stats: RelaxStats
    timings: dict[str, float]

    def status_counts(self) -> dict[str, int]:
        counts = {s: sum(m.status == s for m in self.molecules) for s in PREDICT_STATUSES}
        return {s: n for s, n in counts.items() if n}


def predict_candidates(candidates: list[Candidate], potential: torch.nn.Module,
                       property_model: torch.nn.Module, config: PredictConfig = PredictConfig(),
                       device: torch.device | str = "cpu",
                       dtype: torch.dtype | None = None) -> PredictionRun:
    """Relax the candidates with ``potential`` (a Potential or an Ensemble, evaluated in
    ``dtype``, default its own) and predict the property with ``property_model`` (a
    PropertyModel or PropertyEnsemble); see the module docstring."""
    molecules = [MoleculePrediction(k, c) for k, c in enumerate(candidates)]
    stats = RelaxStats()
    t0 = time.perf_counter()
    relax_molecules(molecules, potential, config, device, dtype, stats)
    t1 = time.perf_counter()
    predict_properties(molecules, property_model, config.batch_size, device)
    t2 = time.perf_counter()
    return PredictionRun(molecules, stats, {"relax_s": t1 - t0, "property_s": t2 - t1})


def relax_molecules(molecules: list[MoleculePrediction], potential: torch.nn.Module,
                    config: PredictConfig, device, dtype, stats: RelaxStats) -> None:
    """Relax every molecule with a start geometry that the potential can treat in one
    continuous batch; fill in its result, its ensemble spread (Ensembles only) and notes on
    step limits and divergence. The others stay failed, with the reason as a note."""
    from force2geo.pretrained import uncertainty
    from force2geo.relax import potential_force_fn, relax_iter

    todo = []
    for m in (m for m in molecules if m.candidate.ok):
        reason = screen(*m.candidate.molecule.start, potential)
        if reason is None:
            todo.append(m)
        else:
            m.notes.append(reason)
    starts = [m.candidate.molecule.start for m in todo]
    bar = tqdm(total=len(todo), unit="mol", desc="relax",
               disable=not config.progress or not sys.stderr.isatty())
    for result in relax_iter(potential_force_fn(potential, dtype), starts, config.relax,
                             device=device, stats=stats):
        molecule = todo[result.index]
        molecule.result = result
        if result.status == DIVERGED:
            molecule.notes.append(DIVERGED_REASON.format(**config.relax.limits()))
        else:
            spread = uncertainty(potential, result.atomic_numbers, result.positions, device,
                                 dtype)  # {} unless an ensemble
            molecule.energy_std = spread.get("energy_std")
            molecule.forces_std = spread.get("forces_std")
            molecule.uncertain = spread.get("uncertain")
        if result.status == STEP_LIMIT:
            molecule.notes.append(f"not converged in {result.n_steps} steps (fmax "
                                  f"{result.fmax:.3f} eV/Å > {config.relax.fmax:g})")
        bar.update(1)
    bar.close()


@torch.no_grad()
def predict_properties(molecules: list[MoleculePrediction], property_model: torch.nn.Module,
                       batch_size: int = 64, device: torch.device | str = "cpu") -> None:
    """The property of every relaxed molecule at its relaxed geometry, in batches of
    ``batch_size``; a 2D model reads the SMILES instead (a molecule without a usable one
    gets a note and no value)."""
    property_model.eval()
    ready = [m for m in molecules if m.relaxed]
    graphs = _graphs(ready) if property_model.needs_2d else {}
    if property_model.needs_2d:
        ready = [m for m in ready if m.index in graphs]
    dtype = next(property_model.parameters()).dtype
    for start in range(0, len(ready), batch_size):
        chunk = ready[start : start + batch_size]
        pb = property_batch(chunk, graphs, device, dtype)
        values, spread = property_values(property_model, pb)
        for k, m in enumerate(chunk):
            m.value = float(values[k])
            m.value_std = None if spread is None else float(spread[k])


def _graphs(molecules: list[MoleculePrediction]) -> dict[int, tuple]:
    """2D graphs of the molecules' SMILES by input index; a note on each that has none."""
    from force2geo.models.gin import smiles_graph

    graphs = {}
    for m in molecules:
        try:
            graphs[m.index] = smiles_graph(m.candidate.smiles)
        except ValueError as exc:
            m.notes.append(f"the 2D property model cannot read its SMILES ({exc})")
    return graphs


def property_values(model: torch.nn.Module, pb: PropertyBatch
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """``(values, spread)`` ``[n_systems]`` eV: a PropertyEnsemble's mean and population
    std, or one model's values and None (inference: no autograd graph is kept)."""
    from force2geo.pretrained.properties import PropertyEnsemble

    with torch.no_grad():
        if isinstance(model, PropertyEnsemble):
            mean, std = model.predict(pb)
            return mean.double().cpu().numpy(), std.double().cpu().numpy()
        return model(pb).double().cpu().numpy(), None


def property_batch(molecules: list[MoleculePrediction], graphs: dict[int, tuple],
                   device: torch.device | str, dtype: torch.dtype) -> PropertyBatch:
    """A PropertyBatch (no targets) of the relaxed geometries of ``molecules``, with their
    2D graphs when ``graphs`` (by input index) is not empty."""
    from force2geo.finetune.dataset import PropertyBatch
    from force2geo.models import Batch
    from force2geo.models.gin import collate_graphs

    batch = Batch.from_arrays([m.result.atomic_numbers for m in molecules],
                              [m.result.positions for m in molecules], dtype=dtype)
    graph = (collate_graphs([graphs[m.index] for m in molecules]).to(device)
             if graphs else None)
    return PropertyBatch(batch.to(device), None, None, graph,
                         np.array([m.index for m in molecules], dtype=np.int64))
