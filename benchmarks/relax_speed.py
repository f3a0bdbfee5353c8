"""Throughput of the batched relaxation engine vs a loop of ``ase.optimize.BFGS``.

Same potential (a paper-size PaiNN: hidden 128, 4 layers, 128 RBF, 4.5 Å; random
weights), same molecules (>= 100 of 15-40 atoms with hydrogens from ``builtin:nci``,
RDKit ETKDG conformers), same work: every molecule takes exactly ``--steps`` BFGS steps
(``fmax`` is set unreachably low and the divergence checks are off, so both sides stop at
the step limit; a random-weight model has no meaningful minimum to converge to).

Reported, per side: wall time and molecules/s; for the engine also the time inside the
force function (model evaluation), inside the optimizer step, and the rest (bookkeeping:
status checks, batch changes, copies). The model-evaluation bound is the same number of
energy+force evaluations on the same batches, alone, with nothing else around them.

Not a test. Run: ``python benchmarks/relax_speed.py [--molecules 100] [--steps 20]
[--threads 1] [--device cpu] [--batch-atoms 4096] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch
from ase import Atoms
from ase.optimize import BFGS as AseBFGS

from force2geo.models import Batch, PaiNN, Potential, energy_and_forces
from force2geo.models.cpu import keep_freed_memory
from force2geo.qc.molecules import Selection, builtin
from force2geo.qc.protocol import embed, prepare
from force2geo.relax import (
    PotentialCalculator,
    RelaxConfig,
    RelaxStats,
    potential_force_fn,
    relax,
)


def starts(n: int, min_atoms: int = 15, max_atoms: int = 40, seed: int = 42):
    """``n`` (atomic numbers, ETKDG positions) of builtin:nci molecules with 15-40 atoms."""
    out = []
    for molecule in builtin("nci", Selection(min_heavy=6, max_heavy=25)):
        mol = prepare(molecule.smiles)
        if not min_atoms <= mol.GetNumAtoms() <= max_atoms:
            continue
        try:
            positions = embed(mol, seed)
        except Exception:  # noqa: BLE001 - a molecule ETKDG cannot embed is just skipped
            continue
        out.append((np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), positions))
        if len(out) == n:
            break
    return out


def engine_run(potential, molecules, steps, batch_atoms, device):
    config = RelaxConfig(fmax=1e-9, max_steps=steps, batch_atoms=batch_atoms,
                         max_neighbor_distance=float("inf"), max_energy_rise=float("inf"))
    stats = RelaxStats()
    t0 = time.perf_counter()
    results = relax(potential_force_fn(potential), molecules, config, device=device,
                    stats=stats)
    _sync(device)
    wall = time.perf_counter() - t0
    assert all(r.n_steps == steps for r in results), "not every molecule ran to the limit"
    return wall, stats


def ase_run(potential, molecules, steps, device):
    calculator = PotentialCalculator(potential, device=device)
    t0 = time.perf_counter()
    for z, positions in molecules:
        atoms = Atoms(numbers=z, positions=positions)
        atoms.calc = calculator
        optimizer = AseBFGS(atoms, logfile=None)
        optimizer.run(fmax=1e-9, steps=steps)
        assert optimizer.nsteps == steps
    return time.perf_counter() - t0


def bound_run(potential, molecules, steps, batch_atoms, device):
    """``steps + 1`` energy+force evaluations of the same batches the engine forms when
    every molecule runs to the same step limit (input order, filled up to the budget)."""
    batches, current, size = [], [], 0
    for z, positions in molecules:
        if current and size + len(z) > batch_atoms:
            batches.append(current)
            current, size = [], 0
        current.append((z, positions))
        size += len(z)
    batches.append(current)
    dtype = next(potential.parameters()).dtype
    prepared = [Batch.from_arrays([m[0] for m in b], [m[1] for m in b], dtype=dtype).to(device)
                for b in batches]
    t0 = time.perf_counter()
    for batch in prepared:
        for _ in range(steps + 1):
            energy_and_forces(potential, batch)
    _sync(device)
    return time.perf_counter() - t0


BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _pin_blas_threads(threads: int) -> None:
    """Run again with numpy's BLAS limited to ``threads`` threads, as torch is.

    ASE's BFGS does its linear algebra in numpy, whose OpenBLAS otherwise starts a thread
    per core: on a shared machine those threads fight for the cores and ASE's loop turns
    several times slower, an artefact the comparison must not profit from. BLAS reads
    the limit only when it loads, hence the new process.
    """
    wanted = str(threads)
    if all(os.environ.get(var) == wanted for var in BLAS_THREAD_VARIABLES):
        return
    env = {**os.environ, **dict.fromkeys(BLAS_THREAD_VARIABLES, wanted)}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--molecules", type=int, default=100)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (more than the free cores stalls badly)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-atoms", type=int, default=4096)
    parser.add_argument("--skip-ase", action="store_true", help="engine and bound only")
    parser.add_argument("--json", default=None, help="also write the numbers here")
    args = parser.parse_args()
    _pin_blas_threads(args.threads)
    if args.device == "cpu":
        keep_freed_memory()  # as the relax command does on CPU
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    potential = Potential(PaiNN()).to(device).eval()
    molecules = starts(args.molecules)
    sizes = [len(z) for z, _ in molecules]
    print(f"{len(molecules)} molecules, {min(sizes)}-{max(sizes)} atoms (mean "
          f"{np.mean(sizes):.1f}); {args.steps} BFGS steps each; PaiNN 128x4, float32; "
          f"{device}, {args.threads} threads; torch {torch.__version__}")
    engine_run(potential, molecules[:4], 2, args.batch_atoms, device)  # warm-up
    # The bound is timed before and after the engine and the faster kept: on a shared
    # machine the load drifts, and the engine should not be charged for it.
    bound = bound_run(potential, molecules, args.steps, args.batch_atoms, device)
    wall, stats = engine_run(potential, molecules, args.steps, args.batch_atoms, device)
    bound = min(bound, bound_run(potential, molecules, args.steps, args.batch_atoms, device))
    rest = wall - stats.force_s - stats.optimizer_s
    n = len(molecules)
    report = {
        "molecules": n, "steps": args.steps, "device": str(device), "threads": args.threads,
        "batch_atoms": args.batch_atoms, "machine": platform.processor() or platform.machine(),
        "engine_s": wall, "engine_molecules_per_s": n / wall,
        "engine_force_s": stats.force_s, "engine_optimizer_s": stats.optimizer_s,
        "engine_other_s": rest, "engine_evaluations": stats.evaluations,
        "optimizer_share": stats.optimizer_s / wall, "non_model_share": 1 - stats.force_s / wall,
        "bound_s": bound,
        "engine_over_bound": wall / bound,
    }
    print(f"engine: {wall:.1f} s, {n / wall:.2f} molecules/s; model {stats.force_s:.1f} s, "
          f"optimizer {stats.optimizer_s:.2f} s ({100 * stats.optimizer_s / wall:.1f}%), "
          f"other {rest:.2f} s; {stats.evaluations} batched evaluations")
    print(f"model-evaluation bound: {bound:.1f} s; engine / bound = {wall / bound:.2f}")
    if not args.skip_ase:
        ase_wall = ase_run(potential, molecules, args.steps, device)
        report.update(ase_s=ase_wall, ase_molecules_per_s=n / ase_wall,
                      speedup_vs_ase=ase_wall / wall)
        print(f"ASE BFGS loop: {ase_wall:.1f} s, {n / ase_wall:.2f} molecules/s; "
              f"engine is {ase_wall / wall:.2f}x faster")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
