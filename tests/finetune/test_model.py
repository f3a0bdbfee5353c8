"""PropertyModel: symmetries, Force2Prop weight transfer, freezing, losses, mixed inputs.

Data: real GFN2-xTB geometries and gaps (see finetune_data.py). Symmetry checks run in
float64 on random rotations, translations and atom permutations of several molecules
batched together.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from finetune_data import TINY_GIN, TINY_PAINN, TINY_SCHNET, train_mlip, write_xtb_store
from finetune_data import xtb_dataset as make_dataset

from force2geo.finetune.dataset import PropertyBatch
from force2geo.finetune.geometry import SOURCES, mixed_inputs
from force2geo.finetune.losses import geometry_alignment_loss
from force2geo.finetune.model import PropertyModel
from force2geo.finetune.train import train_step
from force2geo.models import Batch
from force2geo.models.painn_foundation import FoundationPaiNN, FoundationPaiNNConfig
from force2geo.training.checkpoint import load_potential

CONFIGS = {"painn": TINY_PAINN, "painn_foundation": {"hidden_channels": 16, "num_layers": 2,
                                                     "num_rbf": 16, "cutoff": 4.0},
           "schnet": TINY_SCHNET}
MOLECULES = [3, 7, 10, 4]  # methanol, ethanol, propene, formaldehyde


@pytest.fixture(scope="module")
def dataset():
    return make_dataset()


def rotation(seed: int) -> np.ndarray:
    """A random proper rotation (det +1)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def build(name: str, seed: int = 0, readout: str = "mean") -> PropertyModel:
    torch.manual_seed(seed)
    model = PropertyModel.build(name, CONFIGS[name], readout).double()
    model.set_target_normalisation(5.0, 2.0)
    return model.eval()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_rotation_translation(dataset, name):
    model = build(name)
    base = dataset.batch(MOLECULES, "ground_truth", None, dtype=torch.float64)
    y0, d0 = model.predict_with_displacement(base)
    assert d0.abs().max() > 1e-5  # a zero field would pass any equivariance check
    for seed in range(3):
        r, shift = rotation(seed), np.random.default_rng(seed).normal(size=3) * 5.0
        moved = [dataset.positions(i, "ground_truth") @ r.T + shift for i in MOLECULES]
        pb = dataset.batch(MOLECULES, "ground_truth", None, positions=moved,
                           dtype=torch.float64)
        y, d = model.predict_with_displacement(pb)
        torch.testing.assert_close(y, y0, rtol=0, atol=1e-10)
        expected = d0 @ torch.as_tensor(r).T
        torch.testing.assert_close(d, expected, rtol=1e-8, atol=1e-8 * d0.abs().max().item())


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_atom_permutation(dataset, name):
    """Atoms of the batch shuffled across molecules (system_idx shuffled with them)."""
    model = build(name)
    base = dataset.batch(MOLECULES, "ground_truth", None, dtype=torch.float64)
    y0, d0 = model.predict_with_displacement(base)
    b = base.batch
    perm = torch.as_tensor(np.random.default_rng(1).permutation(b.n_atoms))
    shuffled = Batch(positions=b.positions[perm], atomic_numbers=b.atomic_numbers[perm],
                     system_idx=b.system_idx[perm], n_systems=b.n_systems)
    y, d = model.predict_with_displacement(PropertyBatch(shuffled, None, None, None))
    torch.testing.assert_close(y, y0, rtol=0, atol=1e-10)
    torch.testing.assert_close(d, d0[perm], rtol=1e-8, atol=1e-12)


def test_sum_readout_is_atoms_times_mean(dataset):
    """Same weights: ``sum - mean_shift = n_atoms * (mean-readout - mean_shift)``."""
    mean_model, sum_model = build("painn", readout="mean"), build("painn", readout="sum")
    sum_model.load_state_dict(mean_model.state_dict())
    pb = dataset.batch(MOLECULES, "ground_truth", None, dtype=torch.float64)
    n_atoms = pb.batch.atoms_per_system().double()
    with torch.no_grad():
        torch.testing.assert_close(sum_model(pb) - 5.0, n_atoms * (mean_model(pb) - 5.0))


def test_property_is_target_mean_plus_std_times_head(dataset):
    model = build("schnet")
    pb = dataset.batch(MOLECULES, "ground_truth", None, dtype=torch.float64)
    with torch.no_grad():
        before = model(pb)
        model.set_target_normalisation(-1.0, 4.0)
        torch.testing.assert_close(model(pb), -1.0 + 4.0 * (before - 5.0) / 2.0)
    with pytest.raises(ValueError, match="positive"):
        model.set_target_normalisation(0.0, 0.0)


def test_gin_reads_the_2d_graph_only(dataset):
    torch.manual_seed(0)
    model = PropertyModel.build("gin", TINY_GIN).double().eval()
    assert model.needs_2d and model.displacement_head is None
    at_minimum = dataset.batch(MOLECULES, "ground_truth", None, with_2d=True,
                               dtype=torch.float64)
    at_rdkit = dataset.batch(MOLECULES, "rdkit", None, with_2d=True, dtype=torch.float64)
    y = model(at_minimum)
    assert y.shape == (len(MOLECULES),) and torch.isfinite(y).all()
    torch.testing.assert_close(model(at_rdkit), y, rtol=0, atol=0)
    assert not torch.allclose(y, y[[1, 2, 3, 0]])  # different molecules, different values
    with pytest.raises(ValueError, match="displacement"):
        model.predict_with_displacement(at_minimum)
    with pytest.raises(ValueError, match="2D graphs"):
        model(dataset.batch(MOLECULES, "ground_truth", None, dtype=torch.float64))


# --------------------------------------------------------------------------- Force2Prop


@pytest.fixture(scope="module")
def mlip_checkpoints(tmp_path_factory):
    """Real MLIP checkpoints: PaiNN and SchNet briefly trained on xTB paths, and a
    PaiNN in the paper's released layout (a bare state dict with DDP prefixes)."""
    root = tmp_path_factory.mktemp("mlip")
    store = write_xtb_store(root / "store")
    files = {name: train_mlip(store, root / name, name, CONFIGS[name])
             for name in ("painn", "schnet")}
    torch.manual_seed(3)
    release = FoundationPaiNN(FoundationPaiNNConfig(**CONFIGS["painn_foundation"]))
    files["painn_foundation"] = root / "painn_best_model.pth"
    torch.save({f"module.{k}": v for k, v in release.state_dict().items()},
               files["painn_foundation"])
    return files


@pytest.mark.parametrize("name", ["painn", "schnet", "painn_foundation"])
def test_from_mlip_copies_the_backbone_exactly(dataset, mlip_checkpoints, name):
    path = mlip_checkpoints[name]
    reference = load_potential(path).backbone
    model = PropertyModel.from_mlip(path)
    assert model.backbone_name == name
    own, theirs = model.backbone.state_dict(), reference.state_dict()
    assert own.keys() == theirs.keys()
    for key, value in theirs.items():
        assert torch.equal(own[key], value), key
    pb = dataset.batch(MOLECULES, "ground_truth", None)
    b = pb.batch
    args = (b.positions, b.atomic_numbers, b.system_idx)
    with torch.no_grad():  # the same function of the geometry, not just the same tensors
        torch.testing.assert_close(model.backbone(*args), reference(*args), rtol=0, atol=0)
        assert torch.isfinite(model(pb)).all()


def test_freeze_backbone_keeps_it_in_eval_mode(mlip_checkpoints):
    model = PropertyModel.from_mlip(mlip_checkpoints["painn"])
    model.freeze_backbone()
    model.train()
    assert not model.encoder.training and model.property_head.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head_parameters())


# --------------------------------------------------------------------------- losses


def test_geometry_alignment_loss_by_hand():
    predicted = torch.tensor([[1.0, 0, 0], [0, 2, 0], [1, 1, 0], [3, 3, 3]],
                             requires_grad=True)
    target = torch.tensor([[2.0, 0, 0], [0, 0, 1], [-1, -1, 0], [0, 0, 0]])
    # cosines 1, 0, -1; the last atom has no target direction and is left out
    loss = geometry_alignment_loss(predicted, target)
    assert loss.item() == pytest.approx((0.0 + 1.0 + 2.0) / 3)
    loss.backward()
    assert torch.all(predicted.grad[3] == 0)
    none = geometry_alignment_loss(predicted, torch.zeros(4, 3))
    assert none.item() == 0.0
    none.backward()  # no atom qualifies: still a differentiable zero


def test_train_step_loss_is_l1_plus_weighted_alignment(dataset):
    """Eq. 8 on a real mixed batch, checked against a numpy evaluation of the same model."""
    model = build("painn")
    rng = np.random.default_rng(0)
    positions, _ = mixed_inputs(dataset, MOLECULES, rng, noise_std=0.1, p_ground_truth=0.5)
    pb = dataset.batch(MOLECULES, "ground_truth", "gap", positions=positions,
                       dtype=torch.float64)
    with torch.no_grad():
        y, d = (t.numpy() for t in model.predict_with_displacement(pb))
    target = np.concatenate([dataset.positions(i, "ground_truth").astype(np.float32)
                             for i in MOLECULES]) - np.concatenate(positions)
    cosine = (d * target).sum(1) / np.linalg.norm(d, axis=1) / np.linalg.norm(target, axis=1)
    expected = np.abs(y - dataset.target("gap")[MOLECULES]).mean() + 0.1 * (1 - cosine).mean()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = train_step(model, pb, optimizer, geo_weight=0.1)
    assert out["loss"] == pytest.approx(expected, rel=1e-6)
    assert out["loss"] == pytest.approx(out["mae"] + 0.1 * out["geo_loss"], rel=1e-12)


# --------------------------------------------------------------------------- inputs


def test_mixed_inputs_draws(dataset):
    everything = np.arange(len(dataset))
    noisy, sources = mixed_inputs(dataset, everything, np.random.default_rng(0), 0.1, 1.0)
    assert (sources == SOURCES.index("noisy_ground_truth")).all()
    offsets = np.concatenate([p - dataset.positions(i, "ground_truth")
                              for i, p in zip(everything, noisy, strict=True)])
    # Seeded draws: deterministic. Over generator seeds 0-5 (213 offsets): std 0.093-0.102
    # Å, |mean| <= 0.009 Å; below, the share of noisy inputs at p = 0.5 is 0.45-0.58.
    assert offsets.std() == pytest.approx(0.1, rel=0.15) and abs(offsets.mean()) < 0.02

    frames, sources = mixed_inputs(dataset, everything, np.random.default_rng(0), 0.1, 0.0)
    assert (sources == SOURCES.index("trajectory_frame")).all()
    for i, p in zip(everything, frames, strict=True):
        assert np.abs(dataset.trajectory(i) - p).max(axis=(1, 2)).min() == 0.0

    again, _ = mixed_inputs(dataset, everything, np.random.default_rng(0), 0.1, 0.0)
    assert all(np.array_equal(a, b) for a, b in zip(frames, again, strict=True))
    _, mixed = mixed_inputs(dataset, np.repeat(everything, 20), np.random.default_rng(1),
                            0.1, 0.5)
    assert 0.35 < (mixed == 0).mean() < 0.65


def test_mixed_inputs_fall_back_to_the_mlip_geometry():
    dataset = make_dataset()
    dataset.set_relaxations([0], [None], [None], ["converged"], [0], [0.0])
    positions, sources = mixed_inputs(dataset, [0], np.random.default_rng(2), 0.1, 0.0)
    assert SOURCES[sources[0]] == "mlip"
    np.testing.assert_array_equal(positions[0], dataset.positions(0, "mlip"))
