"""force2geo's PaiNN against fairchem-core 1.10's PaiNN, same size, same batches, same process.

Both at the paper's size (hidden 128, 4 layers, 128 Gaussians, 4.5 Å), float32, on
batches of 64 drug-like molecules (~27 atoms; RDKit conformers jittered by 0.05 Å, from
``benchmarks/painn_speed.py``). Forces are -dE/dx by autograd of each model's energy
(fairchem with ``regress_forces=False``: its own ``direct_forces=False`` path is wrong).
Measured, with the two models interleaved round by round so that load from other jobs on
a shared machine hits both alike:

* energy + forces of one 29-atom molecule, ms;
* energy + forces of 64 molecules in one batch, molecules/s;
* one training step on 64 molecules (forces with ``create_graph``, L1 energy per atom +
  MSE force loss, backward, Adam), s/step and snapshots/s.

Wall and process CPU time are both reported, with the load average before and after.
Both neighbour lists are built inside every call (fairchem's with torch_cluster).

Runs in the side environment that holds fairchem (see ``verify_fairchem_painn.py`` for
how to make it); force2geo is imported from this checkout's ``src``::

    SIDE/bin/python benchmarks/painn_reference_speed.py [--threads 2] [--rounds 3]
        [--profile] [--plain-malloc] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE)]

from painn_speed import SINGLE, conformer, molecules, timed  # noqa: E402
from verify_fairchem_painn import import_fairchem_painn  # noqa: E402

from force2geo.models import Batch, PaiNN, Potential, energy_and_forces  # noqa: E402
from force2geo.models.cpu import keep_freed_memory  # noqa: E402

SIZE = {"hidden_channels": 128, "num_layers": 4, "num_rbf": 128, "cutoff": 4.5}


class Ours:
    """force2geo's Potential(PaiNN) on a force2geo Batch."""

    name = "force2geo"

    def __init__(self, zs, xs, energy, forces):
        self.model = Potential(PaiNN())
        self.batch = Batch.from_arrays(zs, xs, energy=energy, forces=forces)
        self.n_atoms = self.batch.atoms_per_system().double()

    def energy_forces(self) -> None:
        energy_and_forces(self.model, self.batch)

    def loss(self) -> torch.Tensor:
        energy, forces = energy_and_forces(self.model, self.batch, create_graph=True)
        return ((energy - self.batch.energy) / self.n_atoms).abs().mean() \
            + (forces - self.batch.forces).square().sum(dim=-1).mean()


class Fairchem:
    """fairchem's PaiNN on a torch_geometric Batch of the same molecules."""

    name = "fairchem"

    def __init__(self, zs, xs, energy, forces):
        from torch_geometric.data import Batch as PygBatch
        from torch_geometric.data import Data

        self.model = import_fairchem_painn()(**SIZE, max_neighbors=50, regress_forces=False,
                                   use_pbc=False, otf_graph=True)
        data = [Data(pos=torch.as_tensor(x, dtype=torch.float32),
                     atomic_numbers=torch.as_tensor(z), natoms=len(z))
                for z, x in zip(zs, xs, strict=True)]
        self.batch = PygBatch.from_data_list(data)
        self.energy = torch.as_tensor(np.asarray(energy), dtype=torch.float64)
        self.forces = torch.as_tensor(np.concatenate(forces), dtype=torch.float32)
        self.n_atoms = self.batch.natoms.double()

    def _energy_forces(self, create_graph: bool):
        pos = self.batch.pos.detach().requires_grad_(True)
        self.batch.pos = pos
        energy = self.model(self.batch)["energy"]
        (gradient,) = torch.autograd.grad(energy.sum(), pos, create_graph=create_graph)
        return energy, -gradient

    def energy_forces(self) -> None:
        self._energy_forces(False)

    def loss(self) -> torch.Tensor:
        energy, forces = self._energy_forces(True)
        return ((energy.double() - self.energy) / self.n_atoms).abs().mean() \
            + (forces - self.forces).square().sum(dim=-1).mean()


def train_step(runner) -> Callable[[], None]:
    optimizer = torch.optim.Adam(runner.model.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        runner.loss().backward()
        optimizer.step()

    return step


def build(kind, mols, rng):
    zs, xs = [m[0] for m in mols], [m[1] for m in mols]
    rng = np.random.default_rng(rng)
    return kind(zs, xs, rng.normal(size=len(mols)).tolist(),
                [rng.normal(size=x.shape) for x in xs])


def measure(runners_single, runners_batch, rounds: int, steps: int) -> dict:
    """Interleaved rounds: per round and model, single-molecule, batch and training times."""
    cpu = torch.device("cpu")
    times = {r.name: {"single": [], "batch": [], "train": [], "train_cpu": []}
             for r in runners_batch}
    steppers = {r.name: train_step(r) for r in runners_batch}
    for _ in range(rounds):
        for single, batch in zip(runners_single, runners_batch, strict=True):
            single.model.eval()
            batch.model.eval()
            times[single.name]["single"] += timed(single.energy_forces, 10, cpu).wall
            times[batch.name]["batch"] += timed(batch.energy_forces, 3, cpu).wall
            batch.model.train()
            t = timed(steppers[batch.name], steps, cpu)
            times[batch.name]["train"] += t.wall
            times[batch.name]["train_cpu"] += t.cpu
    return times


def report(times: dict, n_molecules: int) -> dict:
    summary = {}
    for name, t in times.items():
        single, batch = statistics.median(t["single"]), statistics.median(t["batch"])
        train = statistics.median(t["train"])
        summary[name] = {"single_ms": 1e3 * single, "batch_molecules_per_s": n_molecules / batch,
                         "train_s_per_step": train,
                         "train_cpu_s_per_step": statistics.median(t["train_cpu"]),
                         "train_snapshots_per_s": n_molecules / train}
        print(f"{name:10s} 1 molecule e+f {1e3 * single:6.1f} ms | 64 molecules e+f "
              f"{n_molecules / batch:6.1f} molecules/s | train {train:.2f} s/step "
              f"(CPU {summary[name]['train_cpu_s_per_step']:.2f} s), "
              f"{n_molecules / train:.1f} snapshots/s")
    ours, ref = summary["force2geo"], summary["fairchem"]
    summary["speedup"] = {
        "single": ref["single_ms"] / ours["single_ms"],
        "batch": ours["batch_molecules_per_s"] / ref["batch_molecules_per_s"],
        "train": ref["train_s_per_step"] / ours["train_s_per_step"],
    }
    print("speed-up force2geo / fairchem: " + ", ".join(
        f"{k} {v:.2f}x" for k, v in summary["speedup"].items()))
    return summary


def profile(runner) -> None:
    step = train_step(runner)
    step()
    with torch.profiler.profile() as prof:
        step()
    print(f"--- {runner.name}: one training step, top operators by self CPU time")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--plain-malloc", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    kept = False if args.plain_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mols = molecules(args.batch_size, np.random.default_rng(0))
    single = [conformer(SINGLE)]
    n_atoms = sum(len(m[0]) for m in mols)
    load_before = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, keep freed memory: {kept}, "
          f"{len(mols)} molecules ({n_atoms / len(mols):.1f} atoms each), load average "
          f"{load_before[0]:.2f} on {os.cpu_count()} cores")
    kinds = (Ours, Fairchem)
    times = measure([build(k, single, 1) for k in kinds], [build(k, mols, 2) for k in kinds],
                    args.rounds, args.steps)
    summary = report(times, len(mols))
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} (1 min), {load_after[1]:.2f} (5 min)")
    if args.profile:
        for kind in kinds:
            profile(build(kind, mols, 2))
    if args.json:
        summary.update(threads=args.threads, torch=str(torch.__version__), keep_freed_memory=kept,
                       load_average_before=load_before, load_average_after=load_after,
                       molecules=len(mols), atoms=n_atoms)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
