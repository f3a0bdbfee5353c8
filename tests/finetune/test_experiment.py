"""force2geo experiment: a spec with scratch, Force2Prop-style init from another run, a
denoising pre-training run and a sweep trains every run once, tabulates the results each
run wrote, plots the sweep, resumes without retraining, and refuses bad specs clearly."""

import json

import numpy as np
import pytest
from finetune_data import TINY_PAINN, xtb_dataset

from force2geo.cli.main import main
from force2geo.errors import InputError
from force2geo.finetune.experiment import load_spec, parse_spec

SPEC = """
name: tiny
dataset: {dataset}
splits:
  random: {{method: random, fractions: [0.5, 0.25, 0.25], seed: 3}}
  scaffold: {{method: random, fractions: [0.5, 0.25, 0.25], seed: 4}}  # acyclic: no scaffolds
defaults: {{model: painn, model_config: {model_config}, epochs: 2, batch_size: 4,
           target: gap, lr: 0.002}}
runs:
  - {{name: scratch}}
  - {{name: denoise, kind: denoise, noise_std: 0.05, splits: [random]}}
  - {{name: from-denoise, init: "run:denoise", splits: [random]}}
  - {{name: finetuned, init: "run:scratch", train_geometry: rdkit, eval_geometry: rdkit}}
  - {{name: sizes, sweep: {{train_fraction: [0.5, 1.0]}}, splits: [random]}}
tables:
  - title: Gap MAE
    rows: {{PaiNN: scratch, Denoising w/ PaiNN: from-denoise, RDKit: finetuned}}
    metrics: [valid_mae, test_mae]
plots:
  - {{file: sizes.png, x: train_fraction, y: valid_mae, series: {{scratch: sizes}},
     splits: [random]}}
"""


@pytest.fixture(scope="module")
def spec_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("experiment")
    xtb_dataset().save(folder / "dataset")
    path = folder / "spec.yaml"
    path.write_text(SPEC.format(dataset=folder / "dataset", model_config=json.dumps(TINY_PAINN)))
    return path


def test_experiment_runs_tabulates_plots_and_resumes(spec_file, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["experiment", str(spec_file), "-o", str(out), "--threads", "1"]) == 0
    record = json.loads((out / "experiment.json").read_text())
    expected = {"random/scratch", "scaffold/scratch", "random/denoise", "random/from-denoise",
                "random/finetuned", "scaffold/finetuned", "random/sizes/train_fraction=0.5",
                "random/sizes/train_fraction=1.0"}
    assert set(record["runs"]) == expected
    assert record["dataset"]["fingerprint"] == xtb_dataset().fingerprint
    assert record["spec_sha256"] == load_spec(spec_file).sha256
    assert record["versions"]["torch"]
    # Each table cell is the result.json of its run, per split.
    tables = json.loads((out / "tables.json").read_text())
    row = {r["label"]: r["values"] for r in tables[0]["rows"]}
    for split in ("random", "scaffold"):
        result = json.loads((out / "runs" / split / "scratch" / "result.json").read_text())
        assert row["PaiNN"][f"{split} test_mae"] == result["test_mae"]
    assert row["Denoising w/ PaiNN"]["scaffold valid_mae"] is None  # not run there
    assert "| Denoising w/ PaiNN |" in (out / "tables.md").read_text()
    # run: inits resolve to the source run's best checkpoint on the same split.
    init = json.loads((out / "runs" / "random" / "finetuned" / "result.json").read_text())
    assert init["init"]["path"].endswith("runs/random/scratch/best.pt")
    assert init["eval_geometry"] == "rdkit"
    half = json.loads((out / "runs/random/sizes/train_fraction=0.5/result.json").read_text())
    full = json.loads((out / "runs/random/sizes/train_fraction=1.0/result.json").read_text())
    assert half["n_train"] < full["n_train"]
    assert (out / "sizes.png").stat().st_size > 1000
    # A rerun trains nothing: every result file is left as it was.
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/result.json")}
    assert main(["experiment", str(spec_file), "-o", str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.glob("runs/**/result.json")} == stamps
    assert "Gap MAE" in capsys.readouterr().out


def test_one_split_runs_alone_into_its_own_report(spec_file, tmp_path, capsys):
    out = tmp_path / "scaffold-only"
    assert main(["experiment", str(spec_file), "-o", str(out), "--split", "scaffold",
                 "--threads", "1"]) == 0
    record = json.loads((out / "experiment.json").read_text())
    assert set(record["runs"]) == {"scaffold/scratch", "scaffold/finetuned"}
    assert set(record["splits"]) == {"scaffold"} and not (out / "splits/random.json").exists()
    table = json.loads((out / "tables.json").read_text())[0]
    assert table["columns"] == ["scaffold valid_mae", "scaffold test_mae"]
    assert record["plots"] == [] and not (out / "sizes.png").exists()  # a random-only plot
    assert main(["experiment", str(spec_file), "-o", str(out), "--split", "other"]) == 1
    assert "['other'] not in the spec" in capsys.readouterr().err


@pytest.mark.parametrize("change, message", [
    ({"runs": [{"name": "a", "lr": -1}]}, "run a: lr"),
    ({"runs": [{"name": "a", "colour": 1}]}, "unknown key"),
    ({"runs": [{"name": "a", "init": "run:b"}]}, "names no run"),
    ({"runs": [{"name": "a"}, {"name": "a"}]}, "repeat"),
    ({"tables": [{"rows": {"x": "nope"}}]}, "unknown run"),
    ({"runs": [{"name": "a", "splits": ["other"]}]}, "unknown split"),
])
def test_bad_specs_are_refused_with_the_reason(change, message):
    raw = {"name": "t", "dataset": "d", "runs": [{"name": "a"}], **change}
    with pytest.raises(ValueError, match=message):
        parse_spec(raw)


def test_spec_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InputError, match="bad.yaml"):
        load_spec(bad)
    with pytest.raises(InputError, match="no such file"):
        load_spec(tmp_path / "missing.yaml")


def test_exclude_list_drops_pretraining_molecules_from_valid_and_test(spec_file, tmp_path):
    from force2geo.finetune.experiment import run_experiment

    dataset = xtb_dataset()
    keys = tmp_path / "pretraining.inchikeys.txt"
    keys.write_text("\n".join(dataset.inchikeys[:6]) + "\n")
    spec = load_spec(spec_file)
    plain = run_experiment(spec, tmp_path / "plain", dry_run=True)
    spec = parse_spec({**spec.source, "exclude": str(keys)})
    record = run_experiment(spec, tmp_path / "excluded", dry_run=True)
    from force2geo.data.splits import load_split

    parts, _ = load_split(tmp_path / "excluded" / "splits" / "random.json")
    assert not set(parts["valid"]) & set(range(6)) and not set(parts["test"]) & set(range(6))
    sizes, before = record["splits"]["random"]["sizes"], plain["splits"]["random"]["sizes"]
    assert sizes["train"] == before["train"]
    assert sizes["valid"] + sizes["test"] < before["valid"] + before["test"]


def test_a_store_split_file_maps_onto_the_dataset(tmp_path):
    """splits: {name: {file: ...}}: a split of the store the dataset came from (e.g. the
    MLIP's own), applied through the dataset's source indices, exclude still applied."""
    from finetune_data import xtb_paths

    from force2geo.data.splits import random_split, save_split, split_meta
    from force2geo.data.store import TrajectoryStore, TrajectoryWriter
    from force2geo.data.trajectory import Trajectory
    from force2geo.finetune import from_store
    from force2geo.finetune.experiment import run_experiment

    with TrajectoryWriter(tmp_path / "store", source="tests: xTB paths") as writer:
        for name, smiles, key, z, path in xtb_paths():
            writer.add(Trajectory(z, path.positions, path.energy, path.forces, "xtb",
                                  smiles=smiles, name=name, inchikey=key,
                                  properties={"gap": path.result.gap}))
    store = TrajectoryStore(tmp_path / "store")
    dataset = from_store(store, "gap", rdkit=False, progress=False,
                         indices=range(1, store.n_trajectories))  # trajectory 0 left out
    dataset.save(tmp_path / "dataset")
    parts = random_split(store.n_trajectories, (0.5, 0.25, 0.25), seed=5)
    save_split(tmp_path / "split.json", parts, split_meta(store, "random", seed=5))
    excluded = next(int(j) for j in parts["test"] if j != 0)
    keys = tmp_path / "keys.txt"
    keys.write_text(store.identifiers("inchikey")[excluded] + "\n")
    spec = parse_spec({"name": "t", "dataset": str(tmp_path / "dataset"), "exclude": str(keys),
                       "splits": {"mlip": {"file": str(tmp_path / "split.json")}},
                       "runs": [{"name": "a"}]})
    run_experiment(spec, tmp_path / "out", dry_run=True)
    from force2geo.finetune.experiment import _file_split

    mapped = _file_split(tmp_path / "split.json", dataset, str(keys))
    source = dataset.source_indices
    for part in ("train", "valid", "test"):
        expected = set(parts[part].tolist()) - {0} - ({excluded} if part != "train" else set())
        assert set(source[mapped[part]].tolist()) == expected, part
    with pytest.raises(ValueError, match="stands alone"):
        parse_spec({"name": "t", "dataset": "d", "runs": [{"name": "a"}],
                    "splits": {"x": {"file": "f", "seed": 1}}})
    # exclude: SPLIT.json:PART names the pre-training molecules by a part of a store split.
    spec = parse_spec({"name": "t", "dataset": str(tmp_path / "dataset"),
                       "exclude": f"{tmp_path / 'split.json'}:train",
                       "splits": {"r": {"method": "random", "fractions": [0.4, 0.3, 0.3]}},
                       "runs": [{"name": "a"}]})
    run_experiment(spec, tmp_path / "out-part", dry_run=True)
    from force2geo.data.splits import load_split

    own, _ = load_split(tmp_path / "out-part" / "splits" / "r.json")
    held_out = set(source[np.concatenate([own["valid"], own["test"]])].tolist())
    assert held_out and not held_out & set(parts["train"].tolist())
    for bad, message in ((f"{tmp_path / 'split.json'}:nope", "no part 'nope'"),
                         (f"{tmp_path / 'out-part' / 'splits' / 'r.json'}:train",
                          "split file of the dataset's store")):
        spec = parse_spec({**spec.source, "exclude": bad})
        with pytest.raises(InputError, match=message):
            run_experiment(spec, tmp_path / "out-bad", dry_run=True)
