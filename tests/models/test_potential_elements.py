"""The training elements a Potential records, and the one check that refuses others."""

import numpy as np
import pytest
import torch

from force2geo.models import (
    Potential,
    build_backbone,
    element_names,
    elements_from_refs,
    unsupported_elements,
)

TINY = {"hidden_channels": 8, "num_layers": 1, "num_rbf": 4, "cutoff": 4.0}


def potential(elements=None, refs=None) -> Potential:
    return Potential(build_backbone("painn", **TINY), refs, elements)


def test_elements_are_kept_sorted_and_survive_casts():
    model = potential([8, 1, 6, 1])
    assert model.elements == (1, 6, 8)
    assert model.double().to("cpu").elements == (1, 6, 8)
    assert "elements" not in dict(model.state_dict())  # older weights still load
    with pytest.raises(ValueError, match="1..118"):
        potential([0, 1])


def test_reason_names_each_unseen_element_and_the_known_ones():
    model = potential([1, 6, 7, 8, 9, 16, 17])
    assert unsupported_elements(model, np.array([6, 1, 1, 8])) is None
    assert unsupported_elements(model, [6, 35, 1]) == (
        "element Br (Z=35) not in the model's training elements H C N O F S Cl")
    assert unsupported_elements(model, [54, 35, 6]) == (
        "elements Br (Z=35), Xe (Z=54) not in the model's training elements H C N O F S Cl")
    assert unsupported_elements(model, torch.tensor([53])).startswith("element I (Z=53)")


def test_a_model_that_does_not_say_refuses_nothing_but_warns():
    with pytest.warns(UserWarning, match="does not record the elements"):
        assert unsupported_elements(potential(), [54, 1]) is None


def test_elements_from_refs_are_those_with_a_reference():
    refs = np.zeros(119)
    refs[[1, 6, 17]] = [-13.6, -1029.0, -12577.0]
    assert elements_from_refs(refs) == (1, 6, 17)
    assert elements_from_refs(torch.as_tensor(refs)) == (1, 6, 17)
    assert elements_from_refs(np.zeros(119)) is None
    assert element_names([1, 6, 17]) == "H C Cl"
