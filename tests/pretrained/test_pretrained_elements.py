"""Shipped and exported models know their training elements: the shipped potential
reports H C N O F S Cl, an export keeps what its checkpoint recorded, an ensemble knows
only what all its members know, and the card says so."""

import copy

import torch
from shipped import ship

from force2geo.models import element_names, unsupported_elements
from force2geo.pretrained import Ensemble, collect_facts, load_pretrained, render_model_card
from force2geo.pretrained.registry import DEFAULT, WEIGHTS_DIR
from force2geo.training.checkpoint import load_checkpoint, load_potential

SHIPPED_ELEMENTS = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)  # H C N O F P S Cl Br I


def test_the_shipped_potential_reports_its_training_elements():
    """v3 records its elements in every member's file (the ensemble: their intersection),
    as its card's training data lists them."""
    model = load_pretrained(DEFAULT, folder=WEIGHTS_DIR)
    assert model.elements == SHIPPED_ELEMENTS
    assert all(member.elements == SHIPPED_ELEMENTS for member in model.members)
    assert unsupported_elements(model, [6, 1, 35]) is None
    assert unsupported_elements(model, [6, 1, 34]) == (
        "element Se (Z=34) not in the model's training elements H C N O F P S Cl Br I")
    assert unsupported_elements(model, [54, 54]).startswith("element Xe (Z=54) not in")


def test_export_and_load_keep_the_elements(weights, ema_run):
    recorded = load_checkpoint(ema_run / "best.pt")["elements"]
    assert recorded and set(recorded) <= {1, 6, 7, 8}
    ship(weights, DEFAULT, [ema_run])
    exported = load_checkpoint(weights / f"{DEFAULT}.pt")
    assert exported["kind"] == "inference" and exported["elements"] == recorded
    assert load_pretrained().elements == tuple(recorded)
    assert load_potential(weights / f"{DEFAULT}.pt", dtype=torch.float64).elements == \
        tuple(recorded)


def test_an_ensemble_knows_what_every_member_knows(ema_run, plain_run):
    members = [load_potential(ema_run / "best.pt", dtype=torch.float64),
               load_potential(plain_run / "best.pt", dtype=torch.float64)]
    wide, narrow, unknown = (copy.deepcopy(members[0]) for _ in range(3))
    wide.elements, narrow.elements, unknown.elements = (1, 6, 7, 8), (1, 6, 8), None
    assert Ensemble([wide, narrow]).elements == (1, 6, 8)
    assert Ensemble([wide, narrow, unknown]).elements == (1, 6, 8)  # unknown restricts nothing
    assert Ensemble([unknown, copy.deepcopy(unknown)]).elements is None
    assert "N (Z=7)" in unsupported_elements(Ensemble([wide, narrow]), [7, 1, 1, 1])
    both = set(members[0].elements) & set(members[1].elements)
    assert Ensemble(members).elements == tuple(sorted(both))


def test_facts_and_card_list_the_elements(weights, ema_run, plain_run):
    ship(weights, "tiny-ensemble", [ema_run, plain_run])
    facts, _ = collect_facts("tiny-ensemble", weights, test_errors=False)
    both = set(load_checkpoint(ema_run / "best.pt")["elements"]) & set(
        load_checkpoint(plain_run / "best.pt")["elements"])
    assert facts["model"]["elements"] == element_names(sorted(both)).split()
    card = render_model_card(facts)
    assert f"Elements it was trained on: {element_names(sorted(both))}." in card
