"""Validation metrics of the paper's Table 2, exact over a whole split.

Every metric is a ratio of sums accumulated batch by batch (never a mean of batch means),
and the sums are added over data-parallel ranks before dividing, so the result does not
depend on how the split was cut into batches or shared between processes.

* ``energy_mae`` meV/atom: mean over snapshots of ``|E_hat - E| / n_atoms``;
* ``energy_mae_total`` meV: mean over snapshots of ``|E_hat - E|``;
* ``force_rmse`` / ``force_mae`` meV/Å: over Cartesian components of the atoms with a
  known force (the convention of fairchem's and SchNetPack's force metrics);
* ``force_cos``: mean over those atoms of the cosine between predicted and true force;
* ``loss``: the training loss (Eq. 4) on the whole split.
"""

from __future__ import annotations

import torch
from torch import Tensor

from force2geo.models.batch import Batch
from force2geo.training.distributed import all_reduce_sum
from force2geo.training.losses import energy_errors, force_errors, label_masks

MEV_PER_EV = 1000.0

# Positions in the sums vector.
_FIELDS = ("n_energy", "abs_e_atom", "abs_e", "n_forces", "sq_f", "abs_f", "cos_f")


class MetricSums:
    """Running sums ``[7]`` (float64, on ``device``) of the errors of a split."""

    def __init__(self, device: torch.device | str = "cpu"):
        self.sums = torch.zeros(len(_FIELDS), dtype=torch.float64, device=device)

    def __getitem__(self, name: str) -> float:
        return float(self.sums[_FIELDS.index(name)])

    @torch.no_grad()
    def add(self, energy: Tensor, forces: Tensor, batch: Batch) -> None:
        """Add the errors of ``energy [n_systems]`` eV and ``forces [n_atoms, 3]`` eV/Å."""
        d_atom = energy_errors(energy, batch, per_atom=True)
        d_total = energy_errors(energy, batch, per_atom=False)
        d_forces = force_errors(forces, batch).to(torch.float64)  # [n_known, 3]
        _, known = label_masks(batch)
        cos = torch.nn.functional.cosine_similarity(
            forces[known].to(torch.float64), batch.forces[known].to(torch.float64), dim=-1)
        update = torch.stack([
            torch.tensor(float(d_atom.shape[0]), dtype=torch.float64, device=self.sums.device),
            d_atom.abs().sum(),
            d_total.abs().sum(),
            torch.tensor(float(d_forces.shape[0]), dtype=torch.float64, device=self.sums.device),
            d_forces.pow(2).sum(),
            d_forces.abs().sum(),
            cos.sum(),
        ])
        self.sums += update.to(self.sums.device)

    def all_reduce(self) -> MetricSums:
        """Add the sums of every data-parallel rank (in place); returns self."""
        all_reduce_sum(self.sums)
        return self

    def result(self, lambda_e: float, lambda_f: float, per_atom: bool = True) -> dict[str, float]:
        """The metrics (see the module docstring); NaN where a split has no such label."""
        n_e, abs_e_atom, abs_e, n_f, sq_f, abs_f, cos_f = self.sums.tolist()
        nan = float("nan")
        energy_term = (abs_e_atom if per_atom else abs_e) / n_e if n_e else 0.0
        force_term = sq_f / n_f if n_f else 0.0
        return {
            "loss": lambda_e * energy_term + lambda_f * force_term,
            "energy_mae": MEV_PER_EV * abs_e_atom / n_e if n_e else nan,
            "energy_mae_total": MEV_PER_EV * abs_e / n_e if n_e else nan,
            "force_rmse": MEV_PER_EV * (sq_f / (3 * n_f)) ** 0.5 if n_f else nan,
            "force_mae": MEV_PER_EV * abs_f / (3 * n_f) if n_f else nan,
            "force_cos": cos_f / n_f if n_f else nan,
            "n_energy": int(n_e),
            "n_force_atoms": int(n_f),
        }

