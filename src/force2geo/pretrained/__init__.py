"""Shipped models: the registry, loading with integrity checks, export, ensembles, cards.

* :func:`resolve_model` turns any way of naming a model into a ready potential: None (the
  default shipped model :data:`DEFAULT`), a shipped model's name, a checkpoint of
  ``force2geo train`` or its run folder, an exported file, or the paper's released PaiNN
  checkpoint; a list of them makes an :class:`Ensemble`. ``force2geo relax``, ``force2geo
  evaluate``, :class:`~force2geo.relax.PotentialCalculator` and :func:`force2geo.load_model`
  all go through it.
* :func:`load_property_model` does the same for property models (``force2geo predict``'s
  HOMO-LUMO gap head, default :data:`DEFAULT_PROPERTY`; registry entries of ``kind``
  ``property``), several making a :class:`PropertyEnsemble` (:mod:`.properties`).
* :func:`load_pretrained` loads a shipped model after checking every file's SHA-256
  against ``registry.json`` (:mod:`.registry`).
* :func:`export_pretrained` strips a training checkpoint (of a potential or a property
  model) to float32 inference weights (:mod:`.export`); :func:`register` lists them as a
  shipped model.
* :class:`Ensemble`: mean energy and forces of several potentials and their spread
  (:mod:`.ensemble`).
* :func:`make_model_card` / :func:`write_model_card`: the model card from facts read off
  the files, the data and the evaluation (:mod:`.facts`, :mod:`.card`).

The whole reproduction of the default model is ``scripts/make_pretrained.sh``; the
command-line steps it uses are ``python -m force2geo.pretrained export|card``.
"""

from force2geo.pretrained.card import make_model_card, render_model_card, write_model_card
from force2geo.pretrained.ensemble import Ensemble, EnsemblePrediction, uncertainty
from force2geo.pretrained.export import export_pretrained
from force2geo.pretrained.facts import collect_facts, inchikey_digest
from force2geo.pretrained.properties import (
    PropertyEnsemble,
    load_property_model,
    property_identity,
)
from force2geo.pretrained.registry import (
    DEFAULT,
    DEFAULT_PROPERTY,
    KINDS,
    Entry,
    WeightFile,
    load_pretrained,
    model_files,
    model_identity,
    read_registry,
    register,
    resolve_model,
    weights_dir,
)

__all__ = [
    "DEFAULT",
    "DEFAULT_PROPERTY",
    "KINDS",
    "Ensemble",
    "EnsemblePrediction",
    "Entry",
    "PropertyEnsemble",
    "WeightFile",
    "collect_facts",
    "export_pretrained",
    "inchikey_digest",
    "load_pretrained",
    "load_property_model",
    "make_model_card",
    "model_files",
    "model_identity",
    "property_identity",
    "read_registry",
    "register",
    "render_model_card",
    "resolve_model",
    "uncertainty",
    "weights_dir",
    "write_model_card",
]
