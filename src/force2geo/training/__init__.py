"""Training MLIPs on energies and forces: config, data loading, loss, metrics, the fit
loop, checkpoints and data-parallel training (DDP via torchrun).

Typical use::

    from force2geo.training import TrainConfig, fit, load_potential

    summary = fit(TrainConfig(data="store/", run_dir="runs/painn", epochs=9))
    potential = load_potential("runs/painn/best.pt")
"""

from force2geo.training.checkpoint import load_checkpoint, load_potential, save_checkpoint
from force2geo.training.config import TrainConfig
from force2geo.training.data import SnapshotLoader, make_batches, split_snapshots
from force2geo.training.fit import build_potential, evaluate, fit, resume_config, train_step
from force2geo.training.losses import energy_force_loss, loss_sums
from force2geo.training.metrics import MetricSums

__all__ = [
    "MetricSums",
    "SnapshotLoader",
    "TrainConfig",
    "build_potential",
    "energy_force_loss",
    "evaluate",
    "fit",
    "load_checkpoint",
    "load_potential",
    "loss_sums",
    "make_batches",
    "resume_config",
    "save_checkpoint",
    "split_snapshots",
    "train_step",
]
