"""The registry and the resolver: every way to name a model gives the model it names, and a
missing, damaged or absent shipped model fails with a message that says what to do."""

import hashlib

import numpy as np
import pytest
import torch
from ase import Atoms
from shipped import ship, store_batch

import force2geo
from force2geo.errors import InputError
from force2geo.models import Batch, Potential, energy_and_forces
from force2geo.models.fairchem import pubchemqcr_atom_refs
from force2geo.models.painn_foundation import FoundationPaiNN, FoundationPaiNNConfig
from force2geo.pretrained import (
    DEFAULT,
    Ensemble,
    load_pretrained,
    model_files,
    model_identity,
    read_registry,
    resolve_model,
)
from force2geo.relax import PotentialCalculator
from force2geo.training.checkpoint import load_potential


def energies(model, store_path):
    """Energies [n] eV and forces [n_atoms, 3] eV/Å of every stored snapshot, evaluated in
    the model's dtype, returned in float64."""
    dtype = next(model.parameters()).dtype
    energy, forces = energy_and_forces(model, store_batch(store_path, dtype))
    return energy.double(), forces.double()


def same_model(a, b, store_path, atol=1e-9):
    for x, y in zip(energies(a, store_path), energies(b, store_path), strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def test_no_shipped_model_says_what_to_do(weights):
    for call in (load_pretrained, resolve_model, lambda: model_files(None)):
        with pytest.raises(InputError, match="no shipped model yet") as error:
            call()
        assert "scripts/make_pretrained.sh" in str(error.value) and "--model" in str(error.value)
    with pytest.raises(InputError, match="no such checkpoint file, run folder or shipped"):
        resolve_model("force2geo-schnet-dft")


def test_shipped_model_loads_after_its_checksum(weights, ema_run, store_path):
    entry = ship(weights, DEFAULT, [ema_run])
    assert read_registry()[DEFAULT] == entry and not entry.is_ensemble
    exported = load_potential(weights / f"{DEFAULT}.pt")
    for model in (load_pretrained(), load_pretrained(DEFAULT), resolve_model(),
                  resolve_model(DEFAULT), force2geo.load_model()):
        assert isinstance(model, Potential) and not model.training
        same_model(model, exported, store_path)
    float64 = load_pretrained(dtype=torch.float64)
    assert next(float64.parameters()).dtype == torch.float64


def test_damaged_or_missing_weights_are_refused(weights, ema_run):
    ship(weights, DEFAULT, [ema_run])
    path = weights / f"{DEFAULT}.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="differs from the registry") as error:
        load_pretrained()
    message = str(error.value)
    assert str(path) in message and hashlib.sha256(bytes(data)).hexdigest() in message
    path.unlink()
    with pytest.raises(InputError, match="missing"):
        resolve_model(DEFAULT)


def test_every_kind_of_spec(weights, ema_run, plain_run, store_path, tmp_path):
    ship(weights, "tiny-plain", [plain_run])
    checkpoint = load_potential(plain_run / "best.pt")
    same_model(resolve_model("tiny-plain"), checkpoint, store_path)  # exported float32
    same_model(resolve_model(plain_run), checkpoint, store_path)  # run folder -> best.pt
    same_model(resolve_model(ema_run / "last.pt"), load_potential(ema_run / "last.pt"),
               store_path)
    same_model(resolve_model(str(weights / "tiny-plain.pt")), checkpoint, store_path)
    ensemble = resolve_model([ema_run, "tiny-plain"])  # float64 and float32 members
    assert isinstance(ensemble, Ensemble) and len(ensemble.members) == 2
    assert {p.dtype for p in ensemble.parameters()} == {torch.float64}
    mean = [(a + b) / 2 for a, b in zip(energies(load_potential(ema_run / "best.pt"),
                                                 store_path),
                                        energies(checkpoint.double(), store_path), strict=True)]
    for got, expected in zip(energies(ensemble, store_path), mean, strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-9)
    identity = model_identity([ema_run, "tiny-plain"])
    assert [f["path"] for f in identity["files"]] == [
        str((ema_run / "best.pt").resolve()), str((weights / "tiny-plain.pt").resolve())]
    digest = hashlib.sha256((weights / "tiny-plain.pt").read_bytes()).hexdigest()
    assert identity["files"][1]["sha256"] == digest


def test_the_papers_released_checkpoint(weights, store_path, tmp_path):
    """A bare DDP state dict in the release's layout: E = sum_i (e_i + ref[Z_i]) with the
    PubChemQCR isolated-atom references."""
    torch.manual_seed(3)
    config = FoundationPaiNNConfig(hidden_channels=16, num_layers=2, num_rbf=8, cutoff=4.5)
    backbone = FoundationPaiNN(config).eval()
    with torch.no_grad():
        for parameter in backbone.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))  # no zero-initialised layers
    path = tmp_path / "painn_best_model.pth"
    torch.save({f"module.{k}": v.clone() for k, v in backbone.state_dict().items()}, path)
    expected = Potential(backbone, pubchemqcr_atom_refs()).double()
    loaded = resolve_model(path, dtype=torch.float64)
    same_model(loaded, expected, store_path, atol=1e-8)
    assert energies(loaded, store_path)[0].abs().min() > 1000  # references included


def test_calculator_from_pretrained(weights, ema_run):
    ship(weights, DEFAULT, [ema_run])
    rng = np.random.default_rng(0)
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    atoms.positions += rng.normal(scale=0.02, size=(3, 3))
    atoms.calc = PotentialCalculator.from_pretrained()
    model = load_pretrained()
    batch = Batch.from_arrays([atoms.numbers], [atoms.positions], dtype=torch.float32)
    energy, forces = energy_and_forces(model, batch)
    assert atoms.get_potential_energy() == pytest.approx(float(energy[0]), abs=1e-9)
    np.testing.assert_allclose(atoms.get_forces(), forces.double().numpy(), atol=1e-9)
