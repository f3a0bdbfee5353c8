"""One command from molecular graphs to properties: ``force2geo predict`` (issue 6).

SMILES (or SDF / extxyz geometries) -> RDKit conformer (ETKDG, MMFF94 pre-optimised) ->
batched MLIP relaxation (the shipped potential unless named; an ensemble adds its spread)
-> a property model on the relaxed geometry (the shipped HOMO-LUMO gap model unless
named; an ensemble adds its spread) -> one CSV row per molecule, the relaxed geometries,
a run record and a short report. One molecule's failure never stops the others.

* :mod:`.inputs` — :func:`read_candidates`: input molecules, each with a start geometry
  or the reason it has none.
* :mod:`.pipeline` — :class:`PredictConfig`, :func:`predict_candidates` (relaxation and
  property prediction in batches), :class:`MoleculePrediction`.
* :mod:`.output` — the CSV columns and the geometry records; :mod:`.report` — the
  Markdown report and histogram.
* :mod:`.run` — :func:`predict_file`, the whole run from an input to its files.
"""

from force2geo.predict.inputs import Candidate, read_candidates
from force2geo.predict.pipeline import (
    PREDICT_STATUSES,
    MoleculePrediction,
    PredictConfig,
    PredictionRun,
    predict_candidates,
)
from force2geo.predict.run import predict_file

__all__ = [
    "PREDICT_STATUSES",
    "Candidate",
    "MoleculePrediction",
    "PredictConfig",
    "PredictionRun",
    "predict_candidates",
    "predict_file",
    "read_candidates",
]
