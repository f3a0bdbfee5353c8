"""The loss (Eq. 4-6) against a hand computation, metrics in meV/atom and meV/Å on a known
case, exactness over a split whatever the batching, and the training config."""

import json
import math

import numpy as np
import pytest
import torch

from force2geo.data.store import TrajectoryStore
from force2geo.models import Batch, Potential, build_backbone
from force2geo.training import (
    MetricSums,
    SnapshotLoader,
    TrainConfig,
    energy_force_loss,
    evaluate,
    loss_sums,
)
from force2geo.training.losses import combine

NAN = float("nan")


def hand_case():
    """Two molecules (2 and 3 atoms); atom 3 has an unknown force label.

    Energy errors +0.5 eV (2 atoms) and -0.3 eV (3 atoms): per atom 0.25 and 0.1 eV/atom.
    Force errors of the known atoms: (0.1,0,0), (0,0.2,0), (0,0,0.3), (0.1,0.1,0.1) eV/Å,
    squared norms 0.01, 0.04, 0.09, 0.03.
    """
    true_forces = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -2.0],
                                [NAN, NAN, NAN], [0.5, -0.5, 1.0]], dtype=torch.float64)
    errors = torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.2, 0.0], [0.0, 0.0, 0.3],
                           [5.0, 5.0, 5.0], [0.1, 0.1, 0.1]], dtype=torch.float64)
    batch = Batch(
        positions=torch.zeros(5, 3, dtype=torch.float64),
        atomic_numbers=torch.tensor([1, 1, 6, 1, 1]),
        system_idx=torch.tensor([0, 0, 1, 1, 1]),
        n_systems=2,
        energy=torch.tensor([-10.0, -20.0], dtype=torch.float64),
        forces=true_forces,
    )
    energy_pred = torch.tensor([-9.5, -20.3], dtype=torch.float64)
    return batch, energy_pred, true_forces + errors


def test_loss_equals_hand_computation():
    batch, energy, forces = hand_case()
    # L_E = (0.25 + 0.1) / 2 = 0.175 eV/atom; L_F = (0.01 + 0.04 + 0.09 + 0.03) / 4 = 0.0425
    loss = energy_force_loss(energy, forces, batch, lambda_e=1.0, lambda_f=10.0)
    assert float(loss) == pytest.approx(0.175 + 10 * 0.0425, rel=1e-12)
    # per molecule (eV): (0.5 + 0.3) / 2 = 0.4
    total = energy_force_loss(energy, forces, batch, lambda_e=2.0, lambda_f=1.0, per_atom=False)
    assert float(total) == pytest.approx(2 * 0.4 + 0.0425, rel=1e-12)


def test_unknown_forces_are_masked_and_keep_gradients_finite():
    batch, energy, forces = hand_case()
    forces = forces.clone().requires_grad_(True)
    sums = loss_sums(energy, forces, batch)
    assert (sums.n_energy, sums.n_forces) == (2, 4)
    combine(sums, 2, 4, 1.0, 1.0).backward()
    assert torch.isfinite(forces.grad).all()
    assert torch.all(forces.grad[3] == 0)  # the unlabelled atom gets no gradient
    # d/dF of mean squared error: 2 * error / 4
    assert torch.allclose(forces.grad[0], torch.tensor([0.05, 0.0, 0.0], dtype=torch.float64))


def test_global_counts_split_the_loss_exactly():
    """Two halves, each divided by the counts of the whole, add up to the whole's loss."""
    batch, energy, forces = hand_case()
    whole = energy_force_loss(energy, forces, batch, 1.0, 10.0)
    first = Batch(batch.positions[:2], batch.atomic_numbers[:2], batch.system_idx[:2], 1,
                  energy=batch.energy[:1], forces=batch.forces[:2])
    second = Batch(batch.positions[2:], batch.atomic_numbers[2:], batch.system_idx[2:] - 1, 1,
                   energy=batch.energy[1:], forces=batch.forces[2:])
    parts = [loss_sums(energy[:1], forces[:2], first), loss_sums(energy[1:], forces[2:], second)]
    total = sum(combine(p, 2, 4, 1.0, 10.0) for p in parts)
    assert float(total) == pytest.approx(float(whole), rel=1e-14)


def test_metrics_units_on_a_known_case():
    batch, energy, forces = hand_case()
    sums = MetricSums()
    sums.add(energy, forces, batch)
    m = sums.result(lambda_e=1.0, lambda_f=10.0)
    assert m["energy_mae"] == pytest.approx(175.0)  # meV/atom
    assert m["energy_mae_total"] == pytest.approx(400.0)  # meV per molecule
    # components: sum of squares 0.17 over 4 atoms x 3 components
    assert m["force_rmse"] == pytest.approx(1000 * math.sqrt(0.17 / 12))  # 119.0 meV/Å
    assert m["force_mae"] == pytest.approx(1000 * 0.9 / 12)  # 75 meV/Å
    known = [0, 1, 2, 4]
    f_true, f_pred = batch.forces[known].numpy(), forces[known].numpy()
    cos = np.sum(f_true * f_pred, 1) / np.linalg.norm(f_true, axis=1) / np.linalg.norm(f_pred,
                                                                                         axis=1)
    assert m["force_cos"] == pytest.approx(cos.mean())
    assert m["loss"] == pytest.approx(0.175 + 10 * 0.0425)
    assert (m["n_energy"], m["n_force_atoms"]) == (2, 4)


def test_metrics_do_not_depend_on_batching(xtb_store, tiny_painn):
    """Sums then divide: batches of 1, of 7, or cut by an atom budget give the same
    numbers (a mean of batch means would not: batches differ in size)."""
    store = TrajectoryStore(xtb_store)
    torch.manual_seed(0)
    potential = Potential(build_backbone("painn", **tiny_painn)).double()
    config = TrainConfig(data=str(xtb_store), run_dir="unused")
    indices = np.arange(store.n_snapshots)
    results = []
    for batch_size, max_atoms in ((1, None), (7, None), (64, 20)):
        loader = SnapshotLoader(store, indices, batch_size, max_atoms, shuffle=False,
                                dtype=torch.float64)
        results.append(evaluate(potential, loader, config)[0])
    for key in ("energy_mae", "force_rmse", "force_mae", "force_cos", "loss"):
        values = [r[key] for r in results]
        assert values == pytest.approx([values[0]] * 3, rel=1e-12), key
    assert results[0]["n_energy"] == store.n_snapshots
    # the energy-only molecule (the last trajectory) has no force labels
    assert results[0]["n_force_atoms"] == sum(store.trajectory(j).n_atoms * 6
                                              for j in range(store.n_trajectories - 1))


def test_config_json_round_trip_and_checks(tmp_path, tiny_painn):
    config = TrainConfig(data=tmp_path / "store", run_dir=tmp_path / "run",
                         model_config=tiny_painn, stages=["xtb"], ema_decay=0.99, max_atoms=64)
    path = tmp_path / "config.json"
    path.write_text(config.to_json())
    again = TrainConfig.from_json(path)
    assert again == config
    assert json.loads(path.read_text())["stages"] == ["xtb"]
    with pytest.raises(ValueError, match="model_config: painn has no option"):
        TrainConfig(data="s", run_dir="r", model_config={"hidden": 3})
    with pytest.raises(ValueError, match="energy_loss"):
        TrainConfig(data="s", run_dir="r", energy_loss="mse")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"data": "s", "run_dir": "r", "learning_rate": 1.0})
