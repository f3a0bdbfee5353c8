"""fit_property, Force2Prop, geometry fine-tuning, denoising pre-training and the CLI, on
real GFN2-xTB gaps of a dozen small molecules (see finetune_data.py) with tiny models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from finetune_data import TINY_GIN, TINY_PAINN, train_mlip, write_xtb_store
from finetune_data import xtb_dataset as make_dataset

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError
from force2geo.finetune.checkpoint import load_property_model
from force2geo.finetune.config import PropertyTrainConfig
from force2geo.finetune.denoise import DenoiseConfig, pretrain_denoising
from force2geo.finetune.runs import read_records
from force2geo.finetune.train import build_model, evaluate, fit_property
from force2geo.training.checkpoint import load_potential

SPLIT = {"train": np.arange(8), "valid": np.arange(8, 10), "test": np.arange(10, 12)}
FAST = {"model_config": TINY_PAINN, "device": "cpu", "progress": False, "lr": 5e-3}


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


@pytest.fixture(scope="module")
def mlip(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlip")
    return train_mlip(write_xtb_store(root / "store"), root / "painn", "painn", TINY_PAINN)


def state(path) -> dict:
    return torch.load(path, weights_only=True)["model_state"]


def backbone_of(model_state: dict) -> dict:
    prefix = "encoder.backbone."
    return {k[len(prefix):]: v for k, v in model_state.items() if k.startswith(prefix)}


def test_overfits_a_handful_and_writes_a_self_describing_run(dataset, tmp_path):
    split = {"train": np.arange(8), "valid": np.arange(8), "test": np.arange(8, 12)}
    config = PropertyTrainConfig(epochs=60, batch_size=8, **FAST)
    result = fit_property(config, dataset, split, tmp_path)
    # Seeded (init, batch order) and one thread: the same numbers every run. Over seeds 0-5:
    # valid MAE / spread 0.018-0.035 (< 0.1), first epoch's train MAE / valid MAE 27-44 (> 5).
    spread = dataset.target("gap")[:8].std()  # ~4.5 eV
    assert result["valid_mae"] < 0.1 * spread, result
    records = read_records(tmp_path)
    assert [r["epoch"] for r in records] == list(range(1, 61))
    assert records[0]["train_mae"] > 5 * result["valid_mae"]
    assert PropertyTrainConfig.from_json(tmp_path / "config.json") == config
    assert json.loads((tmp_path / "result.json").read_text()) == result
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["kind"] == "property" and best["units"]["properties"] == "eV"
    assert best["data"]["fingerprint"] == dataset.fingerprint
    assert best["normalisation"]["mean"] == pytest.approx(dataset.target("gap")[:8].mean())
    model = load_property_model(tmp_path / "best.pt")
    again = evaluate(model, dataset, split["valid"], "ground_truth", "gap")
    assert again["mae"] == pytest.approx(result["valid_mae"], rel=1e-6)
    assert result["n_train"] == 8 and result["best_epoch"] == best["progress"]["best_epoch"]


def test_force2prop_with_a_frozen_backbone_trains_the_heads_only(dataset, mlip, tmp_path):
    mlip_backbone = load_potential(mlip).backbone.state_dict()
    config = PropertyTrainConfig(init=str(mlip), freeze_backbone=True, epochs=3, batch_size=4,
                                 **FAST)
    initial, _ = build_model(config, torch.float32)
    result = fit_property(config, dataset, SPLIT, tmp_path / "frozen")
    assert result["init"]["kind"] == "mlip" and result["freeze_backbone"]
    trained = state(tmp_path / "frozen" / "last.pt")
    for key, value in backbone_of(trained).items():
        assert torch.equal(value, mlip_backbone[key]), key
    heads = [k for k in trained if k.startswith("property_head.")]
    assert any(not torch.equal(trained[k], initial.state_dict()[k]) for k in heads)

    fit_property(config.replace(freeze_backbone=False), dataset, SPLIT, tmp_path / "full")
    full = backbone_of(state(tmp_path / "full" / "last.pt"))
    assert any(not torch.equal(full[k], mlip_backbone[k]) for k in full)


def test_resume_continues_identically(dataset, tmp_path):
    config = PropertyTrainConfig(epochs=3, batch_size=3, geometry_finetune=True,
                                 eval_geometry="mlip", **FAST)
    straight = fit_property(config, dataset, SPLIT, tmp_path / "straight")
    stopped = fit_property(config.replace(max_steps=4), dataset, SPLIT, tmp_path / "resumed")
    assert stopped["stopped"] == "max_steps" and stopped["steps"] == 4  # mid-epoch 2
    resumed = fit_property(config, dataset, SPLIT, tmp_path / "resumed", resume=True)
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    for key, value in a["model_state"].items():
        assert torch.equal(value, b["model_state"][key]), key
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])

    def without_time(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert without_time(read_records(tmp_path / "straight")) == without_time(
        read_records(tmp_path / "resumed"))
    assert resumed["valid_mae"] == straight["valid_mae"]
    with pytest.raises(InputError, match="lr"):
        fit_property(config.replace(lr=1e-3), dataset, SPLIT, tmp_path / "resumed",
                     resume=True)
    with pytest.raises(InputError, match="already holds a run"):
        fit_property(config, dataset, SPLIT, tmp_path / "resumed")


def test_geometry_finetuning_starts_from_the_pretrained_predictor(dataset, tmp_path):
    """Seeded, one thread: deterministic. Pre-training selects on its own training molecules
    so that best.pt is its fitted end, and fine-tuning steps at 1e-3, so the first epoch
    stays near that end: over seeds 0-5 its train MAE is 0.14-0.23 of a from-scratch first
    epoch's (< 0.5), and 1 - cos lies in 0.68-1.17 (within 0-2)."""
    pretrain = PropertyTrainConfig(epochs=30, batch_size=4, **FAST)
    fitted = {"train": SPLIT["train"], "valid": SPLIT["train"], "test": SPLIT["test"]}
    fit_property(pretrain, dataset, fitted, tmp_path / "gt")
    before = load_property_model(tmp_path / "gt" / "best.pt")
    config = PropertyTrainConfig(init=str(tmp_path / "gt" / "best.pt"), geometry_finetune=True,
                                 eval_geometry="mlip", epochs=4, batch_size=4,
                                 **{**FAST, "lr": 1e-3})
    result = fit_property(config, dataset, SPLIT, tmp_path / "geo")
    assert result["init"]["kind"] == "property" and result["train_geometry"] == "mixed"
    assert result["eval_geometry"] == "mlip"
    after = torch.load(tmp_path / "geo" / "last.pt", weights_only=True)
    assert after["normalisation"]["mean"] == pytest.approx(float(before.target_mean))
    first = read_records(tmp_path / "gt")[0]["train_mae"]  # from scratch: ~ the spread
    records = read_records(tmp_path / "geo")
    assert records[0]["train_mae"] < 0.5 * first  # it starts where pre-training ended
    geo = [r["train_geo_loss"] for r in records]
    assert all(0.0 < g < 2.0 for g in geo)  # 1 - cos, averaged over atoms


def test_train_fraction_and_molecules_without_the_eval_geometry(tmp_path):
    dataset = make_dataset()
    dataset.clear_geometry("mlip", [9])
    config = PropertyTrainConfig(epochs=1, batch_size=4, train_fraction=0.5,
                                 eval_geometry="mlip", **FAST)
    result = fit_property(config, dataset, SPLIT, tmp_path / "a")
    assert result["n_train"] == 4 and result["n_valid"] == 1
    assert result["dropped"] == {"train": 0, "valid": 1, "test": 0}
    other = fit_property(config.replace(seed=1), dataset, SPLIT, tmp_path / "b")
    digest = [torch.load(tmp_path / p / "last.pt", weights_only=True)["data"]["split_digest"]
              for p in ("a", "b")]
    assert other["n_train"] == 4 and digest[0] != digest[1]


def test_an_empty_test_part_is_logged_as_na(dataset, tmp_path, caplog):
    split = {"train": np.arange(8), "valid": np.arange(8, 12), "test": np.arange(0)}
    with caplog.at_level("INFO", logger="force2geo.finetune.train"):
        result = fit_property(PropertyTrainConfig(epochs=1, batch_size=8, **FAST), dataset,
                              split, tmp_path)
    assert result["test_mae"] is None and result["n_test"] == 0
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch 1")]
    assert len(line) == 1 and line[0].endswith("test MAE n/a eV"), line


def test_gin_baseline_trains_on_2d_graphs(dataset, tmp_path):
    config = PropertyTrainConfig(model="gin", epochs=3, batch_size=4,
                                 **{**FAST, "model_config": TINY_GIN})
    result = fit_property(config, dataset, SPLIT, tmp_path)
    assert result["model"]["backbone"] == "gin" and np.isfinite(result["test_mae"])
    with pytest.raises(InputError, match="3D backbone"):
        fit_property(config.replace(geometry_finetune=True), dataset, SPLIT, tmp_path / "x")


def test_denoising_pretraining_lowers_its_loss_and_inits_a_predictor(dataset, tmp_path):
    config = DenoiseConfig(model_config={**TINY_PAINN, "hidden_channels": 32}, noise_std=0.1,
                           epochs=60, batch_size=4, lr=2e-3, device="cpu", progress=False)
    result = pretrain_denoising(config, dataset, tmp_path / "dn")
    assert result["n_structures"] == len(dataset)
    loss = [r["train_loss"] for r in read_records(tmp_path / "dn")]
    # Seeded noise and init, one thread: deterministic. Over seeds 0-5 the first epoch's
    # loss is 0.87-1.12 (a mean over ~200 noise components of 12 molecules), the last five
    # epochs' mean 0.57-0.66 of the first five's (< 0.85).
    assert loss[0] == pytest.approx(1.0, abs=0.3)  # predicting ~0 for unit-variance noise
    assert np.mean(loss[-5:]) < 0.85 * np.mean(loss[:5])
    assert result["best_loss"] == min(loss)
    pretrained = state(tmp_path / "dn" / "best.pt")
    fine = PropertyTrainConfig(init=str(tmp_path / "dn" / "best.pt"), epochs=1, max_steps=1,
                               **FAST)
    model, init = build_model(fine, torch.float32)
    assert init["kind"] == "denoising"
    for key, value in model.state_dict().items():
        if key.startswith(("encoder.", "displacement_head.")):
            assert torch.equal(value, pretrained[key]), key

    store = TrajectoryStore(write_xtb_store(tmp_path / "store"))
    on_store = pretrain_denoising(config.replace(epochs=1), store, tmp_path / "dn-store")
    assert on_store["n_structures"] == store.n_trajectories == len(dataset)


def test_cli_trains_resumes_and_denoises(dataset, tmp_path, capsys):
    folder = dataset.save(tmp_path / "dataset")
    run = tmp_path / "run"
    common = ["--model-option", "hidden_channels=16", "--model-option", "num_layers=2",
              "--batch-size", "4", "--device", "cpu", "--no-progress", "--lr", "5e-3",
              "--threads", "1"]
    assert main(["finetune", str(folder), "-o", str(run), "--epochs", "2", *common]) == 0
    assert "valid MAE" in capsys.readouterr().out
    assert (run / "split.json").is_file() and (run / "best.pt").is_file()
    assert main(["finetune", str(folder), "-o", str(run), "--resume", "--epochs", "3",
                 *common]) == 0
    assert json.loads((run / "result.json").read_text())["epochs"] == 3
    assert main(["finetune", str(folder), "-o", str(run), "--epochs", "2", *common]) == 1
    assert "already holds a run" in capsys.readouterr().err
    assert main(["finetune", str(folder), "-o", str(tmp_path / "dn"), "--denoise-pretrain",
                 "--epochs", "1", *common]) == 0
    assert "denoising" in capsys.readouterr().out
