"""An ensemble of potentials: the mean as the model, the spread as an uncertainty flag.

:class:`Ensemble` is a drop-in potential: its ``forward`` is the members' mean total
energy, so :func:`~force2geo.models.energy_and_forces`, the batched relaxation and the ASE
calculator use it unchanged, and its forces ``-d(mean E)/dx`` are the mean of the members'
forces. :meth:`Ensemble.predict` also returns the spread across members:

* ``energy_std [n_systems]`` eV: the standard deviation of the members' total energies;
* ``forces_std [n_systems]`` eV/Å: for each atom the norm of the per-component standard
  deviation of its force, ``sqrt(sum_xyz var_members(F_xyz))``; its maximum over the
  molecule's atoms.

Standard deviations are the population ones (divide by the number of members): the spread
of these members, zero when they agree, not an estimate for a larger ensemble.

Two settings (a shipped ensemble keeps them in its registry entry, see
:mod:`.registry`):

* ``drive``: ``"mean"`` (default) moves atoms along the members' mean forces; ``"first"``
  lets the first member alone drive a relaxation (one evaluation per step instead of one
  per member) while the others only score the end point, in :func:`uncertainty`;
* ``flag_forces_std`` (eV/Å): a result whose ``forces_std`` is above it is flagged
  ``uncertain``; calibrated against the oracle's errors on held-out molecules
  (:func:`calibrate_flag`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from force2geo.models import Batch, Potential, energy_and_forces


@dataclass
class EnsemblePrediction:
    """Mean ``energy [n_systems]`` eV (float64) and ``forces [n_atoms, 3]`` eV/Å, and
    their spread ``energy_std [n_systems]`` eV and ``forces_std [n_systems]`` eV/Å (see
    the module docstring); all detached, float64."""

    energy: Tensor
    forces: Tensor
    energy_std: Tensor
    forces_std: Tensor


DRIVES = ("mean", "first")


def ensemble_members(members: Sequence[nn.Module]) -> nn.ModuleList:
    """At least two members in one dtype (all cast to float64 when they differ: they see
    the same positions)."""
    if len(members) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
    if len({next(m.parameters()).dtype for m in members}) > 1:
        members = [m.to(torch.float64) for m in members]
    return nn.ModuleList(members)


class Ensemble(nn.Module):
    """The mean of several :class:`~force2geo.models.Potential` members (at least two).

    The members see the same positions, so they share one dtype: members of different
    dtypes are all cast to float64. Its ``elements`` are those every member was trained
    on (see :attr:`elements`).
    """

    def __init__(self, members: Sequence[Potential], drive: str = "mean",
                 flag_forces_std: float | None = None):
        super().__init__()
        if drive not in DRIVES:
            raise ValueError(f"drive must be one of {DRIVES}, got {drive!r}")
        if flag_forces_std is not None and not flag_forces_std > 0:
            raise ValueError(f"flag_forces_std must be > 0 eV/Å, got {flag_forces_std}")
        self.members = ensemble_members(members)
        self.drive = drive
        self.flag_forces_std = flag_forces_std

    @property
    def elements(self) -> tuple[int, ...] | None:
        """The atomic numbers every member was trained on (the intersection of the
        members' ``elements``; a member that does not record them restricts nothing);
        None when no member records them."""
        known = [set(m.elements) for m in self.members if m.elements is not None]
        return tuple(sorted(set.intersection(*known))) if known else None

    def forward(self, batch: Batch) -> Tensor:
        """Total energy per system, ``[n_systems]`` eV, float64: the members' mean, or the
        first member's when it alone drives (``drive="first"``)."""
        if self.drive == "first":
            return self.members[0](batch)
        return torch.stack([member(batch) for member in self.members]).mean(dim=0)

    @torch.no_grad()
    def _spread(self, energies: Tensor, forces: Tensor, batch: Batch) -> tuple[Tensor, Tensor]:
        """``energies [n_members, n_systems]``, ``forces [n_members, n_atoms, 3]`` ->
        (energy_std, forces_std), both ``[n_systems]``."""
        energy_std = energies.std(dim=0, correction=0)
        atom_std = forces.std(dim=0, correction=0).norm(dim=-1)  # [n_atoms]
        forces_std = torch.zeros(batch.n_systems, dtype=atom_std.dtype, device=atom_std.device)
        forces_std = forces_std.scatter_reduce(0, batch.system_idx, atom_std, "amax",
                                               include_self=False)
        return energy_std, forces_std

    def predict(self, batch: Batch) -> EnsemblePrediction:
        """Mean energy and forces of ``batch`` and their spread across members."""
        outputs = [energy_and_forces(member, batch) for member in self.members]
        energies = torch.stack([e for e, _ in outputs])  # [n_members, n_systems]
        forces = torch.stack([f.to(torch.float64) for _, f in outputs])
        energy_std, forces_std = self._spread(energies, forces, batch)
        return EnsemblePrediction(energies.mean(dim=0), forces.mean(dim=0), energy_std,
                                  forces_std)


def uncertainty(model: nn.Module, atomic_numbers: np.ndarray, positions: np.ndarray,
                device: torch.device | str = "cpu", dtype: torch.dtype | None = None
                ) -> dict[str, float]:
    """``{"energy_std": eV, "forces_std": eV/Å}`` of one molecule (``atomic_numbers [n]``,
    ``positions [n, 3]`` Å) when ``model`` is an :class:`Ensemble`, with ``uncertain``
    (bool) when it has a calibrated ``flag_forces_std``; {} otherwise."""
    if not isinstance(model, Ensemble):
        return {}
    if dtype is None:
        dtype = next(model.parameters()).dtype
    batch = Batch.from_arrays([atomic_numbers], [positions], dtype=dtype).to(device)
    prediction = model.predict(batch)
    out = {"energy_std": float(prediction.energy_std[0]),
           "forces_std": float(prediction.forces_std[0])}
    if model.flag_forces_std is not None:
        out["uncertain"] = bool(out["forces_std"] > model.flag_forces_std)
    return out


def calibrate_flag(forces_std, bad, max_false_alarm: float = 0.2) -> dict:
    """The ``flag_forces_std`` threshold (eV/Å) that flags at most ``max_false_alarm`` of
    the good results, from held-out molecules' spreads ``forces_std [n]`` and whether the
    oracle found each result ``bad [n]`` (e.g. above 1 kcal/mol of its minimum, or
    diverged). Returns the threshold and how it does on these molecules: the share of bad
    results it flags (``catch``), of good ones it flags (``false_alarm``), counts."""
    spread = np.asarray(forces_std, dtype=np.float64)
    bad = np.asarray(bad, dtype=bool)
    known = np.isfinite(spread)
    spread, bad = spread[known], bad[known]
    good = spread[~bad]
    if good.size == 0 or bad.size == 0:
        raise ValueError("need spreads of at least one good and one molecule in all")
    if not 0 <= max_false_alarm < 1:
        raise ValueError(f"max_false_alarm must be in [0, 1), got {max_false_alarm}")
    allowed = int(np.floor(max_false_alarm * good.size + 1e-9))  # good results it may flag
    threshold = max(float(np.sort(good)[good.size - allowed - 1]), 1e-6)
    flagged = spread > threshold
    return {"flag_forces_std": threshold,
            "catch": float(flagged[bad].mean()) if bad.any() else float("nan"),
            "false_alarm": float(flagged[~bad].mean()),
            "n_bad": int(bad.sum()), "n_good": int((~bad).sum())}
