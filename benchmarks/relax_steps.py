"""Steps to converge: our batched BFGS from ASE's ``70 * I`` or from the Lindh model
Hessian, against ``ase.optimize.BFGS``, on the same potential from the same starts.

Starts: the first frame of the GFN2-xTB stage of trajectories of a store made by
``force2geo generate`` (the MMFF94-minimised conformer), taken from a split part (by
default the test part, held out from the PaiNN's training); neutral molecules only. The
store is only read. Potentials: GFN2-xTB (tblite, one engine per molecule, as a force
function over the batch) and, when ``--model`` exists, a trained potential.

Per potential and method: median and mean steps, converged count, wall time; and for
each of our methods the final energy minus ASE's (same start, same potential) and the
heavy-atom RMSD to ASE's end point. At fmax 0.05 eV/Å a soft torsion can leave an end
point tenths of an Å and some meV away from its minimum, so both end points are then
polished (our BFGS, ASE semantics, to ``--polish-fmax`` 0.005 eV/Å): two runs reached the
same minimum when the polished energies agree within 1 meV and the polished geometries
within 0.1 Å heavy-atom RMSD. For xTB, the store's own xTB path (ASE BFGS when the store
was made) gives a second check of the ASE step counts.

Wall times are only comparable on an otherwise idle machine (the load average is
recorded); step counts and minima do not depend on it.

Not a test. Run (single thread, as measured):
``python benchmarks/relax_steps.py [--molecules 60] [--model data/runs/painn-xtb/best.pt]
[--json benchmarks/results/relax_steps.json]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.optimize import BFGS as AseBFGS

from force2geo.atomic import file_sha256, write_json
from force2geo.data.splits import read_part
from force2geo.data.store import TrajectoryStore
from force2geo.evaluate.metrics import heavy_atom_rmsd
from force2geo.qc.engines import EngineCalculator, XTBEngine
from force2geo.relax import (
    BFGS,
    PotentialCalculator,
    RelaxConfig,
    RelaxStats,
    potential_force_fn,
    relax,
)

BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def load_starts(store_path: str, part: str, n: int) -> list[dict]:
    """The first ``n`` neutral trajectories of ``part``: name, atomic numbers, the first
    xTB-stage positions (Å), and the store's own xTB path length (ASE steps)."""
    store = TrajectoryStore(store_path)
    out = []
    for j in read_part(part, store):
        traj = store.trajectory(int(j))
        stages = np.array(traj.stages)
        xtb = np.flatnonzero(stages == "xtb")
        if traj.charge != 0 or xtb.size == 0:
            continue
        out.append({"name": traj.name, "z": np.asarray(traj.atomic_numbers, dtype=np.int64),
                    "start": np.asarray(traj.positions[xtb[0]], dtype=np.float64),
                    "store_steps": int(xtb.size - 1),
                    "store_energy": float(traj.energy[xtb[-1]])})
        if len(out) == n:
            break
    return out


class XTBForces:
    """A relaxation force function over GFN2-xTB: each molecule of the batch in turn, with
    one :class:`XTBEngine` per atomic-number sequence (its SCF guess follows the path)."""

    def __init__(self):
        self.engines: dict[tuple, XTBEngine] = {}

    def __call__(self, positions, atomic_numbers, system_idx, n_systems):
        sizes = torch.bincount(system_idx, minlength=n_systems).tolist()
        energies, forces = [], []
        for z, x in zip(torch.split(atomic_numbers, sizes), torch.split(positions, sizes),
                        strict=True):
            key = tuple(z.tolist())
            engine = self.engines.setdefault(key, XTBEngine())
            result = engine.compute(z.numpy(), x.detach().numpy())
            energies.append(result.energy)
            forces.append(torch.from_numpy(result.forces))
        return torch.tensor(energies, dtype=torch.float64), torch.cat(forces)


def ase_loop(make_calculator, starts, fmax, steps) -> tuple[list[dict], float]:
    """``ase.optimize.BFGS`` on each start with its own calculator: results, wall (s)."""
    out, t0 = [], time.perf_counter()
    for start in starts:
        atoms = Atoms(numbers=start["z"], positions=start["start"])
        atoms.calc = make_calculator()
        optimizer = AseBFGS(atoms, logfile=None)
        converged = optimizer.run(fmax=fmax, steps=steps)
        out.append({"steps": int(optimizer.nsteps), "converged": bool(converged),
                    "energy": float(atoms.get_potential_energy()),
                    "positions": atoms.positions.copy()})
    return out, time.perf_counter() - t0


def engine_run(force_fn, starts, config, optimizer) -> tuple[list[dict], float, RelaxStats]:
    """Our batched engine over all starts: results in input order, wall (s), stats."""
    stats, t0 = RelaxStats(), time.perf_counter()
    results = relax(force_fn, [(s["z"], s["start"]) for s in starts], config,
                    optimizer=optimizer, stats=stats)
    wall = time.perf_counter() - t0
    out = [{"steps": int(r.n_steps), "converged": r.converged, "energy": float(r.energy),
            "positions": r.positions} for r in results]
    return out, wall, stats


def polish(force_fn, runs: list[dict], starts: list[dict], fmax: float) -> None:
    """Relax every end point of ``runs`` on to ``fmax`` eV/Å (our BFGS, 70 * I); store
    ``polished_energy`` and ``polished_positions`` in each run."""
    config = RelaxConfig(fmax=fmax, max_steps=2000, batch_atoms=4096)
    results = relax(force_fn, [(s["z"], r["positions"]) for s, r in zip(starts, runs,
                                                                         strict=True)], config)
    for run, result in zip(runs, results, strict=True):
        run["polished_energy"] = float(result.energy) if result.converged else float("nan")
        run["polished_positions"] = result.positions


def same_minimum(runs: list[dict], reference: list[dict], starts: list[dict]) -> dict:
    """How many polished end points coincide with ASE's (|dE| < 1 meV, RMSD < 0.1 Å)."""
    delta = np.array([r["polished_energy"] - a["polished_energy"]
                      for r, a in zip(runs, reference, strict=True)])
    rmsd = np.array([heavy_atom_rmsd(s["z"], r["polished_positions"], a["polished_positions"])
                     for r, a, s in zip(runs, reference, starts, strict=True)])
    same = (np.abs(delta) < 1e-3) & (rmsd < 0.1)
    finite = np.isfinite(delta)
    return {"polished_energy_minus_ase_ev": delta.tolist(), "polished_rmsd_to_ase": rmsd.tolist(),
            "same_minimum": int(same.sum()), "polished": int(finite.sum()),
            "polished_max_abs_de_ev": float(np.abs(delta[finite]).max()) if finite.any() else None,
            "polished_lower_by_1mev": int((delta < -1e-3).sum()),
            "polished_higher_by_1mev": int((delta > 1e-3).sum())}


def summarise(name: str, runs: list[dict], wall: float, reference: list[dict] | None,
              starts: list[dict]) -> dict:
    steps = [r["steps"] for r in runs]
    row = {"method": name, "median_steps": statistics.median(steps),
           "mean_steps": statistics.fmean(steps), "converged": sum(r["converged"] for r in runs),
           "molecules": len(runs), "wall_s": wall, "steps": steps}
    if reference is not None:
        both = [(r, a, s) for r, a, s in zip(runs, reference, starts, strict=True)
                if r["converged"] and a["converged"]]
        delta = np.array([r["energy"] - a["energy"] for r, a, _ in both])  # eV
        rmsd = np.array([heavy_atom_rmsd(s["z"], r["positions"], a["positions"])
                         for r, a, s in both])
        row.update(
            energy_minus_ase_ev=delta.tolist(), rmsd_to_ase=rmsd.tolist(),
            median_abs_de_ev=float(np.median(np.abs(delta))) if delta.size else None,
            max_abs_de_ev=float(np.abs(delta).max()) if delta.size else None,
            n_de_over_1mev=int((np.abs(delta) > 1e-3).sum()),
            n_lower_by_1mev=int((delta < -1e-3).sum()),
            n_rmsd_over_0p1=int((rmsd > 0.1).sum()),
            fewer_steps=int(sum(r["steps"] < a["steps"] for r, a, _ in both)),
            more_steps=int(sum(r["steps"] > a["steps"] for r, a, _ in both)))
    return row


def compare(label: str, force_fn, make_calculator, starts, args) -> list[dict]:
    """ASE BFGS, then our BFGS from 70*I and from the Lindh Hessian (each floor asked)."""
    config = RelaxConfig(fmax=args.fmax, max_steps=args.steps, batch_atoms=args.batch_atoms)
    ase, ase_wall = ase_loop(make_calculator, starts, args.fmax, args.steps)
    polish(force_fn, ase, starts, args.polish_fmax)
    rows = [summarise("ase-bfgs", ase, ase_wall, None, starts)]
    methods = [("identity", BFGS())] + [
        (f"lindh (floor {c:g})", BFGS(initial_hessian="lindh", min_curvature=c))
        for c in args.min_curvature]
    for name, optimizer in methods:
        runs, wall, stats = engine_run(force_fn, starts, config, optimizer)
        row = summarise(name, runs, wall, ase, starts)
        polish(force_fn, runs, starts, args.polish_fmax)
        row.update(same_minimum(runs, ase, starts))
        row.update(force_s=stats.force_s, optimizer_s=stats.optimizer_s)
        rows.append(row)
    for row in rows:
        row["potential"] = label
    return rows


def print_table(rows: list[dict]) -> None:
    head = (f"{'potential':<10} {'method':<19} {'median':>6} {'mean':>6} {'conv':>7} "
            f"{'wall s':>7} {'fewer/more':>10} {'|dE| med':>9} {'|dE| max':>9} "
            f"{'dE>1meV':>7} {'lower':>5} {'rmsd>.1':>7} {'same min':>8} {'pol. lo/hi':>10}")
    print(head)
    for r in rows:
        extra = ""
        if "median_abs_de_ev" in r and r["median_abs_de_ev"] is not None:
            extra = (f" {r['fewer_steps']:>4}/{r['more_steps']:<5} "
                     f"{1e3 * r['median_abs_de_ev']:>7.3f}me "
                     f"{1e3 * r['max_abs_de_ev']:>7.1f}me {r['n_de_over_1mev']:>7} "
                     f"{r['n_lower_by_1mev']:>5} {r['n_rmsd_over_0p1']:>7} "
                     f"{r['same_minimum']:>4}/{r['polished']:<3} "
                     f"{r['polished_lower_by_1mev']:>4}/{r['polished_higher_by_1mev']:<4}")
        print(f"{r['potential']:<10} {r['method']:<19} {r['median_steps']:>6} "
              f"{r['mean_steps']:>6.1f} {r['converged']:>3}/{r['molecules']:<3} "
              f"{r['wall_s']:>7.1f}{extra}")


def _pin_blas_threads(threads: int) -> None:
    """Restart with numpy's BLAS limited to ``threads`` (ASE's BFGS runs in numpy)."""
    wanted = str(threads)
    if all(os.environ.get(var) == wanted for var in BLAS_THREAD_VARIABLES):
        return
    env = {**os.environ, **dict.fromkeys(BLAS_THREAD_VARIABLES, wanted)}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="data/xtb-train")
    parser.add_argument("--part", default="data/xtb-train-split.json:test",
                        help="FILE:PART of the store's trajectories to start from")
    parser.add_argument("--molecules", type=int, default=60)
    parser.add_argument("--model", default="data/runs/painn-xtb/best.pt",
                        help="a trained potential, skipped when the file is missing")
    parser.add_argument("--potentials", nargs="+", default=["xtb", "model"],
                        choices=("xtb", "model"))
    parser.add_argument("--fmax", type=float, default=0.05)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-atoms", type=int, default=4096)
    parser.add_argument("--min-curvature", type=float, nargs="+", default=[1.0],
                        help="eigenvalue floors (eV/Å^2) of the Lindh Hessian to try")
    parser.add_argument("--polish-fmax", type=float, default=0.005,
                        help="eV/Å; end points are relaxed on to this to compare minima")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default="benchmarks/results/relax_steps.json")
    args = parser.parse_args()
    _pin_blas_threads(args.threads)
    torch.set_num_threads(args.threads)
    starts = load_starts(args.store, args.part, args.molecules)
    sizes = [len(s["z"]) for s in starts]
    print(f"{len(starts)} molecules of {args.part} ({min(sizes)}-{max(sizes)} atoms, mean "
          f"{np.mean(sizes):.1f}); fmax {args.fmax} eV/Å, at most {args.steps} steps; "
          f"{args.threads} thread(s); torch {torch.__version__}; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    rows = []
    if "xtb" in args.potentials:
        rows += compare("GFN2-xTB", XTBForces(), lambda: EngineCalculator(XTBEngine()),
                        starts, args)
        print_table(rows)
    if "model" in args.potentials and Path(args.model).exists():
        from force2geo.training.checkpoint import load_potential

        potential = load_potential(args.model)
        rows += compare("model", potential_force_fn(potential),
                        lambda: PotentialCalculator(potential), starts, args)
    print_table(rows)
    model = Path(args.model)
    report = {"store": args.store, "part": args.part, "model": args.model,
              "model_sha256": file_sha256(model) if model.exists() else None,
              "load_average_end": os.getloadavg(),
              "fmax": args.fmax, "max_steps": args.steps, "threads": args.threads,
              "machine": platform.processor() or platform.machine(),
              "torch": torch.__version__, "molecules": [s["name"] for s in starts],
              "atoms": sizes, "store_xtb_steps": [s["store_steps"] for s in starts],
              "rows": rows}
    write_json(args.json, report, indent=1)
    print(f"-> {args.json}")


if __name__ == "__main__":
    main()
