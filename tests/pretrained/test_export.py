"""Export of training checkpoints: the exported float32 file computes what the checkpoint's
chosen weights compute, records where it came from, and is a smaller, loadable checkpoint."""

import hashlib

import pytest
import torch
from shipped import store_batch

from force2geo.errors import InputError
from force2geo.models import energy_and_forces
from force2geo.pretrained import export_pretrained
from force2geo.training.checkpoint import load_checkpoint, load_potential


def outputs(potential, store_path):
    """Energies [n] eV (float64) and forces [n_atoms, 3] eV/Å of every stored snapshot."""
    dtype = next(potential.parameters()).dtype
    energy, forces = energy_and_forces(potential, store_batch(store_path, dtype))
    return energy.double(), forces.double()


def assert_same(a, b, atol_e=2e-4, atol_f=2e-4):
    """Float32 tolerance: energies of ~-500 eV to a few 1e-4 eV, forces to 2e-4 eV/Å."""
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=atol_e)
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=atol_f)


def test_exported_ema_weights_give_the_checkpoints_ema_outputs(ema_run, store_path, tmp_path):
    weight = export_pretrained(ema_run, "tiny", tmp_path)
    exported = load_potential(tmp_path / weight.file)
    assert all(p.dtype == torch.float32 for p in exported.parameters())
    assert exported.atom_refs.dtype == torch.float64
    ema = outputs(load_potential(ema_run / "best.pt", use_ema=True), store_path)
    plain = outputs(load_potential(ema_run / "best.pt", use_ema=False), store_path)
    got = outputs(exported, store_path)
    assert_same(got, ema)
    # The EMA and the raw weights differ by far more than float32 rounding: the test
    # would notice the wrong set being exported.
    assert (ema[1] - plain[1]).abs().max() > 100 * (got[1] - ema[1]).abs().max()
    plain_file = export_pretrained(ema_run, "tiny-plain", tmp_path, use_ema=False)
    assert_same(outputs(load_potential(tmp_path / plain_file.file), store_path), plain)


def test_float32_run_exports_bit_for_bit(plain_run, store_path, tmp_path):
    weight = export_pretrained(plain_run / "last.pt", "tiny", tmp_path, "other-name.pt")
    assert weight.file == "other-name.pt"
    exported = outputs(load_potential(tmp_path / weight.file), store_path)
    original = outputs(load_potential(plain_run / "last.pt"), store_path)
    assert torch.equal(exported[0], original[0]) and torch.equal(exported[1], original[1])


def test_exported_file_records_its_origin_and_nothing_to_resume(ema_run, tmp_path):
    weight = export_pretrained(ema_run, "tiny", tmp_path)
    path = tmp_path / weight.file
    assert weight.size == path.stat().st_size
    assert weight.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    source = load_checkpoint(ema_run / "best.pt")  # a run folder stands for its best.pt
    exported = load_checkpoint(path)
    for key in ("optimizer", "scheduler", "rng", "loader"):
        assert key not in exported
    assert exported["kind"] == "inference" and exported["ema"] is None
    assert exported["config"]["dtype"] == "float32"
    assert exported["data"]["fingerprint"] == source["data"]["fingerprint"]
    assert exported["metrics"] == source["metrics"] and exported["units"]["energy"] == "eV"
    record = exported["export"]
    assert record["weights"] == "ema" and record["trained_with"]["dtype"] == "float64"
    source_bytes = (ema_run / "best.pt").read_bytes()
    assert record["source_sha256"] == hashlib.sha256(source_bytes).hexdigest()
    assert weight.size < len(source_bytes) / 2
    assert exported["progress"]["step"] == source["progress"]["step"] == 2


def test_refuses_an_exported_file_and_a_foreign_one(ema_run, tmp_path):
    weight = export_pretrained(ema_run, "tiny", tmp_path)
    with pytest.raises(InputError, match="already an exported model"):
        export_pretrained(tmp_path / weight.file, "again", tmp_path / "out")
    foreign = tmp_path / "painn.pth"
    torch.save({"atom_emb.weight": torch.zeros(3, 4)}, foreign)
    with pytest.raises(InputError, match="not a force2geo-checkpoint"):
        export_pretrained(foreign, "x", tmp_path / "out")
    with pytest.raises(InputError, match="no such checkpoint file or run folder"):
        export_pretrained(tmp_path / "nowhere", "x", tmp_path / "out")


def test_exporting_again_keeps_the_file(ema_run, tmp_path):
    first = export_pretrained(ema_run, "tiny", tmp_path)
    assert export_pretrained(ema_run, "tiny", tmp_path) == first
    plain = export_pretrained(ema_run, "tiny", tmp_path, use_ema=False)  # other weights
    assert plain.sha256 != first.sha256
    assert load_checkpoint(tmp_path / plain.file)["export"]["weights"] == "plain"

