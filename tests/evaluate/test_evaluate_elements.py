"""``evaluate relax`` with a model that does not know one of the molecules' elements:
that molecule fails with the reason (no MLIP geometry, so the metrics count it as
diverged), and the others are relaxed and scored."""

import csv
import json

import torch

from force2geo.cli.main import main
from force2geo.data.store import TrajectoryStore
from force2geo.training.checkpoint import load_checkpoint, save_checkpoint


def test_a_molecule_with_an_unseen_element_fails_and_counts_as_diverged(
        qc_store, checkpoint, tmp_path):
    """The same trained weights, recorded as trained on H C O only: methylamine (N)
    must fail."""
    narrow = load_checkpoint(checkpoint)
    assert narrow["elements"] == [1, 6, 7, 8]
    narrow["elements"] = [1, 6, 8]
    save_checkpoint(narrow, tmp_path / "no-nitrogen.pt")
    out = tmp_path / "report"
    assert main(["evaluate", "relax", "--model", str(tmp_path / "no-nitrogen.pt"), "--data",
                 str(qc_store), "-o", str(out), "--no-progress", "--device", "cpu",
                 "--workers", "1", "--steps", "3"]) == 0
    with open(out / "molecules.csv", newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    amine = rows["methylamine"]
    assert amine["mlip_status"] == "failed" and amine["mlip_steps"] == "0"
    assert amine["mlip_reason"] == ("element N (Z=7) not in the model's training elements "
                                    "H C O")
    assert amine["e_t"] == "" and amine["diverged"] == "True" and amine["success"] == "False"
    assert amine["e0"] != "" and amine["e_gt"] != ""  # the references are still scored
    for name in ("ethanol", "acetic-acid", "acetaldehyde"):
        assert rows[name]["mlip_status"] in ("converged", "step_limit")
        assert rows[name]["mlip_reason"] == "" and int(rows[name]["mlip_steps"]) > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mlip_status_counts"]["failed"] == 1 and metrics["n_div"] >= 1
    assert TrajectoryStore(qc_store).n_trajectories == len(rows) == 4
    assert torch.equal(narrow["atom_refs"], load_checkpoint(checkpoint)["atom_refs"])
