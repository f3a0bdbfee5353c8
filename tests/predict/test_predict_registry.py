"""Property models in the registry: export of a finetune checkpoint, kinds, resolving."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from finetune_data import xtb_dataset
from predict_data import ship

from force2geo.errors import InputError
from force2geo.finetune.checkpoint import load_checkpoint, model_from_checkpoint
from force2geo.finetune.model import PropertyModel
from force2geo.pretrained import (
    DEFAULT_PROPERTY,
    Entry,
    PropertyEnsemble,
    export_pretrained,
    load_property_model,
    property_identity,
    read_registry,
    resolve_model,
)
from force2geo.pretrained.__main__ import main as pretrained_main


def test_export_keeps_what_inference_needs(property_runs, tmp_path):
    source_path = property_runs[0] / "best.pt"
    weight = export_pretrained(property_runs[0], "gap", tmp_path)
    exported, source = load_checkpoint(tmp_path / weight.file), load_checkpoint(source_path)
    assert exported["kind"] == "property" and exported["dtype"] == "float32"
    assert exported["optimizer"] is None and exported["rng"] is None
    assert exported["normalisation"] == source["normalisation"]
    assert exported["config"] == source["config"] and exported["model"] == source["model"]
    record = exported["export"]
    assert record["source_sha256"] == hashlib.sha256(source_path.read_bytes()).hexdigest()
    assert weight.size < source_path.stat().st_size
    dataset = xtb_dataset()
    pb = dataset.batch(np.arange(len(dataset)), "ground_truth", target=None)
    with torch.no_grad():
        expected = model_from_checkpoint(source)(pb)
        got = model_from_checkpoint(exported)(pb)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)  # float32 run: same bits


def test_export_again_keeps_the_file_and_refuses_an_exported_one(property_runs, tmp_path):
    first = export_pretrained(property_runs[0], "gap", tmp_path)
    mtime = (tmp_path / first.file).stat().st_mtime_ns
    assert export_pretrained(property_runs[0], "gap", tmp_path) == first
    assert (tmp_path / first.file).stat().st_mtime_ns == mtime
    with pytest.raises(InputError, match="already an exported model"):
        export_pretrained(tmp_path / first.file, "again", tmp_path / "out")


def test_registry_kinds(weights, mlip_runs, property_runs):
    ship(weights, "pot", mlip_runs[:1], "mlip")
    ship(weights, DEFAULT_PROPERTY, property_runs, "property")  # an ensemble of two
    registry = read_registry(weights)
    assert registry["pot"].kind == "mlip" and registry[DEFAULT_PROPERTY].kind == "property"
    assert isinstance(load_property_model(), PropertyEnsemble)
    assert isinstance(load_property_model(property_runs[0]), PropertyModel)
    identity = property_identity()
    assert identity["target"] == "gap" and len(identity["files"]) == 2
    with pytest.raises(InputError, match="is a shipped property model"):
        resolve_model(DEFAULT_PROPERTY)
    with pytest.raises(InputError, match="is a shipped potential"):
        load_property_model("pot")
    with pytest.raises(ValueError, match="kind must be one of"):
        Entry("x", (), kind="energy")


def test_a_registry_without_kinds_lists_potentials(weights, mlip_runs):
    ship(weights, "pot", mlip_runs[:1], "mlip")
    path = weights / "registry.json"
    content = json.loads(path.read_text())
    del content["models"]["pot"]["kind"]
    path.write_text(json.dumps(content))
    assert read_registry(weights)["pot"].kind == "mlip"
    assert resolve_model("pot") is not None


def test_export_command_registers_property_models(weights, mlip_runs, property_runs, capsys):
    assert pretrained_main(["export", str(property_runs[0]), "--name", DEFAULT_PROPERTY,
                            "--folder", str(weights)]) == 0
    assert read_registry(weights)[DEFAULT_PROPERTY].kind == "property"
    capsys.readouterr()
    assert pretrained_main(["export", str(property_runs[0]), str(mlip_runs[0]), "--name",
                            "mixed", "--folder", str(weights)]) == 1
    assert "a mix of potentials and property models" in capsys.readouterr().err
