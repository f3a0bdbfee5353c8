"""Continuous-batching relaxation of many molecules with a force function.

:func:`relax_iter` keeps a batch of at most ``batch_atoms`` atoms on one device. Each
iteration evaluates energy and forces of the whole batch once, retires the molecules that
converged, reached the step limit or diverged (yielding their results), admits waiting
molecules into the freed room, and moves the rest one optimizer step. Molecules join in
input order; results come out in the order molecules finish (:func:`relax` restores input
order).

Steps are counted as ASE counts them: ``n_steps`` position updates, ``n_steps + 1``
energy+force evaluations, and a molecule already converged at its start has 0 steps.
Optimizer arithmetic is float64 whatever the model precision.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from force2geo.relax.convergence import CODES, RUNNING, classify, max_force
from force2geo.relax.optimizers import INITIAL_HESSIANS, Optimizer, make_optimizer
from force2geo.relax.state import ATOM, SYSTEM, BatchState, concat

# (positions [n_atoms, 3] Å float64, atomic_numbers [n_atoms], system_idx [n_atoms],
#  n_systems) -> (energy [n_systems] eV float64, forces [n_atoms, 3] eV/Å float64)
ForceFn = Callable[[Tensor, Tensor, Tensor, int], tuple[Tensor, Tensor]]

ENGINE_SCOPES = {"positions": ATOM, "atomic_numbers": ATOM, "forces": ATOM,
                 "index": SYSTEM, "energy": SYSTEM, "start_energy": SYSTEM,
                 "n_steps": SYSTEM}


@dataclass(frozen=True)
class RelaxConfig:
    """How to relax: ``optimizer`` (bfgs, lbfgs, fire, ASE defaults), convergence at
    ``fmax`` eV/Å or ``max_steps`` position updates, at most ``batch_atoms`` atoms per
    batch (a larger molecule runs alone), divergence limits ``max_neighbor_distance`` Å
    and ``max_energy_rise`` eV (see :mod:`force2geo.relax.convergence`), and whether to
    keep every molecule's ``trajectory``. ``initial_hessian`` (BFGS only): ``identity``,
    ASE's ``70 * I`` eV/Å^2, or ``lindh``, a model Hessian of each start geometry
    (:mod:`force2geo.relax.hessian`)."""

    optimizer: str = "bfgs"
    fmax: float = 0.05
    max_steps: int = 500
    batch_atoms: int = 4096
    max_neighbor_distance: float = 5.0
    max_energy_rise: float = 10.0
    trajectory: bool = False
    initial_hessian: str = "identity"

    def __post_init__(self) -> None:
        if self.initial_hessian not in INITIAL_HESSIANS:
            raise ValueError(f"initial_hessian must be one of {INITIAL_HESSIANS}, got "
                             f"{self.initial_hessian!r}")
        if self.initial_hessian != "identity" and self.optimizer != "bfgs":
            raise ValueError(f"initial_hessian {self.initial_hessian!r} needs the bfgs "
                             f"optimizer, not {self.optimizer!r}")
        if self.fmax <= 0:
            raise ValueError(f"fmax must be > 0 eV/Å, got {self.fmax}")
        if self.max_steps < 0:
            raise ValueError(f"max_steps must be >= 0, got {self.max_steps}")
        if self.batch_atoms < 1:
            raise ValueError(f"batch_atoms must be >= 1, got {self.batch_atoms}")

    def make_optimizer(self) -> Optimizer:
        """The optimizer this config names, with its initial Hessian for BFGS."""
        options = {"initial_hessian": self.initial_hessian} if self.optimizer == "bfgs" else {}
        return make_optimizer(self.optimizer, **options)

    def limits(self) -> dict[str, float]:
        return {"fmax": self.fmax, "max_steps": self.max_steps,
                "max_neighbor_distance": self.max_neighbor_distance,
                "max_energy_rise": self.max_energy_rise}


@dataclass
class RelaxResult:
    """One relaxed molecule: ``index`` in the input, final ``positions [n_atoms, 3]`` Å,
    ``energy`` eV and ``forces [n_atoms, 3]`` eV/Å there, ``fmax`` eV/Å, ``n_steps``,
    ``status`` (converged, step_limit or diverged) and, when asked for, every evaluated
    geometry: ``trajectory`` = (positions ``[k, n_atoms, 3]``, energy ``[k]``, forces
    ``[k, n_atoms, 3]``) with ``k = n_steps + 1``. A molecule that was never relaxed
    (:func:`force2geo.relax.screen.failed_result`) has status ``failed`` and a
    ``reason``."""

    index: int
    atomic_numbers: np.ndarray
    positions: np.ndarray
    energy: float
    forces: np.ndarray
    fmax: float
    n_steps: int
    status: str
    trajectory: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
    reason: str = ""

    @property
    def converged(self) -> bool:
        return self.status == "converged"


@dataclass
class RelaxStats:
    """Counters of one run: force evaluations, molecules evaluated in total, wall time in
    the force function and in the optimizer (s)."""

    evaluations: int = 0
    molecule_evaluations: int = 0
    force_s: float = 0.0
    optimizer_s: float = 0.0


def potential_force_fn(potential: torch.nn.Module, dtype: torch.dtype | None = None) -> ForceFn:
    """A :data:`ForceFn` over a :class:`~force2geo.models.Potential`: positions are cast to
    ``dtype`` (default: the potential's parameter dtype) and forces taken by
    :func:`~force2geo.models.energy_and_forces`, then returned as float64."""
    from force2geo.models import Batch, energy_and_forces

    if dtype is None:
        dtype = next((p.dtype for p in potential.parameters()), torch.float64)

    def evaluate(positions, atomic_numbers, system_idx, n_systems):
        batch = Batch(positions.to(dtype), atomic_numbers, system_idx, n_systems)
        energy, forces = energy_and_forces(potential, batch)
        return energy.to(torch.float64), forces.to(torch.float64)

    return evaluate


def _admit(waiting: deque, starts: Sequence, room: int, empty: bool,
           optimizer: Optimizer, device: torch.device) -> BatchState | None:
    """A state of the waiting molecules that fit in ``room`` atoms (input order; the
    first one always, when the batch is ``empty``), with fresh optimizer fields."""
    chosen: list[int] = []
    while waiting:
        n = len(starts[waiting[0]][0])
        if n > room and not (empty and not chosen):
            break
        chosen.append(waiting.popleft())
        room -= n
    if not chosen:
        return None
    z = [np.asarray(starts[i][0], dtype=np.int64).reshape(-1) for i in chosen]
    pos = [np.asarray(starts[i][1], dtype=np.float64).reshape(-1, 3) for i in chosen]
    sizes = torch.tensor([len(a) for a in z], dtype=torch.long, device=device)
    k = len(chosen)
    engine_fields = {
        "positions": torch.as_tensor(np.concatenate(pos), device=device),
        "atomic_numbers": torch.as_tensor(np.concatenate(z), device=device),
        "forces": torch.zeros(int(sizes.sum()), 3, dtype=torch.float64, device=device),
        "index": torch.tensor(chosen, dtype=torch.long, device=device),
        "energy": torch.zeros(k, dtype=torch.float64, device=device),
        "start_energy": torch.full((k,), torch.nan, dtype=torch.float64, device=device),
        "n_steps": torch.zeros(k, dtype=torch.long, device=device),
    }
    fresh = optimizer.fresh(BatchState(sizes, engine_fields, ENGINE_SCOPES))
    return BatchState(sizes, {**engine_fields, **fresh}, {**ENGINE_SCOPES, **optimizer.scopes})


def _results(state: BatchState, done: Tensor, codes: Tensor, fmax: Tensor,
             frames: dict[int, list]) -> list[RelaxResult]:
    """Results of the molecules where ``done`` is True, copied to the CPU; their recorded
    ``frames`` (if any) are taken out of the dict."""
    finished = state.select(done)
    split = finished.sizes.tolist()
    arrays = {name: torch.split(finished[name].cpu(), split)
              for name in ("positions", "atomic_numbers", "forces")}
    per_system = {"energy": finished["energy"].cpu().tolist(),
                  "n_steps": finished["n_steps"].cpu().tolist(),
                  "fmax": fmax[done].cpu().tolist(), "code": codes[done].cpu().tolist()}
    out = []
    for k, index in enumerate(finished["index"].cpu().tolist()):
        taken = frames.pop(index, None)
        trajectory = None
        if taken is not None:
            trajectory = (np.stack([f[0] for f in taken]), np.array([f[1] for f in taken]),
                          np.stack([f[2] for f in taken]))
        out.append(RelaxResult(
            index=index, atomic_numbers=arrays["atomic_numbers"][k].numpy(),
            positions=arrays["positions"][k].numpy(), energy=per_system["energy"][k],
            forces=arrays["forces"][k].numpy(), fmax=per_system["fmax"][k],
            n_steps=per_system["n_steps"][k], status=CODES[per_system["code"][k]],
            trajectory=trajectory))
    return out


def _record_frames(state: BatchState, frames: dict[int, list]) -> None:
    """Append the current geometry, energy and forces of every molecule to its list in
    ``frames`` (only when trajectories are asked for: this copies the batch to the CPU)."""
    split = state.sizes.tolist()
    positions = torch.split(state["positions"].cpu(), split)
    forces = torch.split(state["forces"].cpu(), split)
    energy = state["energy"].cpu().tolist()
    for k, index in enumerate(state["index"].cpu().tolist()):
        frames.setdefault(index, []).append(
            (positions[k].numpy().copy(), energy[k], forces[k].numpy().copy()))


def _evaluate(state: BatchState, force_fn: ForceFn, stats: RelaxStats) -> None:
    t0 = time.perf_counter()
    energy, forces = force_fn(state["positions"], state["atomic_numbers"], state.system_idx,
                              state.n_systems)
    state["energy"] = energy.detach().to(torch.float64)
    state["forces"] = forces.detach().to(torch.float64)
    fresh = torch.isnan(state["start_energy"])
    state["start_energy"] = torch.where(fresh, state["energy"], state["start_energy"])
    stats.evaluations += 1
    stats.molecule_evaluations += state.n_systems
    stats.force_s += time.perf_counter() - t0


def _check_starts(starts: Sequence[tuple[np.ndarray, np.ndarray]]) -> None:
    for k, (z, positions) in enumerate(starts):
        n = np.asarray(z).reshape(-1).shape[0]
        if n == 0 or np.shape(positions) != (n, 3):
            raise ValueError(f"molecule {k}: {n} atomic numbers but positions of shape "
                             f"{np.shape(positions)} (need at least one atom, [n, 3])")


def relax_iter(force_fn: ForceFn, starts: Sequence[tuple[np.ndarray, np.ndarray]],
               config: RelaxConfig = RelaxConfig(), optimizer: Optimizer | None = None,
               device: torch.device | str = "cpu",
               stats: RelaxStats | None = None) -> Iterator[RelaxResult]:
    """Relax every ``(atomic_numbers [n], positions [n, 3] Å)`` of ``starts``; yield one
    :class:`RelaxResult` per molecule as it finishes.

    ``optimizer`` defaults to ``config.make_optimizer()``; pass one to change its
    parameters. ``stats`` (a :class:`RelaxStats`) collects evaluation counts and timings.
    A molecule whose forces go non-finite is retired as diverged; the others go on.
    """
    _check_starts(starts)
    device = torch.device(device)
    optimizer = optimizer or config.make_optimizer()
    stats = stats if stats is not None else RelaxStats()
    waiting = deque(range(len(starts)))
    state: BatchState | None = None
    limits = config.limits()
    frames: dict[int, list] = {}  # index -> [(positions, energy, forces)], if asked for
    while waiting or (state is not None and state.n_systems):
        room = config.batch_atoms - (state.n_atoms if state is not None else 0)
        joining = _admit(waiting, starts, room, state is None or state.n_systems == 0,
                         optimizer, device)
        if joining is not None:
            state = joining if state is None else concat([state, joining])
        _evaluate(state, force_fn, stats)
        if config.trajectory:
            _record_frames(state, frames)
        fmax = max_force(state, state["forces"])
        codes = classify(state, fmax, state["energy"], state["start_energy"],
                         state["n_steps"], limits)
        done = codes != CODES.index(RUNNING)
        if bool(done.any()):
            yield from _results(state, done, codes, fmax, frames)
            state = state.select(~done)
        if state.n_systems == 0:
            continue
        t0 = time.perf_counter()
        state["positions"] = state["positions"] + optimizer.step(state)
        state["n_steps"] = state["n_steps"] + 1
        stats.optimizer_s += time.perf_counter() - t0


def relax(force_fn: ForceFn, starts: Sequence[tuple[np.ndarray, np.ndarray]],
          config: RelaxConfig = RelaxConfig(), optimizer: Optimizer | None = None,
          device: torch.device | str = "cpu",
          stats: RelaxStats | None = None) -> list[RelaxResult]:
    """:func:`relax_iter`, collected in input order."""
    results: list[RelaxResult | None] = [None] * len(starts)
    for result in relax_iter(force_fn, starts, config, optimizer, device, stats):
        results[result.index] = result
    return results
