"""How far from a minimum a potential can be trusted: energies and forces of trained models
against GFN2-xTB on geometries displaced from xTB minima.

Molecules: the first ``--molecules`` neutral trajectories of a split part (default the test
part, held out from training) of a store made by ``force2geo generate``; the minimum is the
last frame of each molecule's xTB stage. Every atom is displaced by Gaussian noise of each
``--scales`` (Å per Cartesian component, one seeded draw per molecule and scale), and
GFN2-xTB (tblite) labels the displaced geometry. Per model and scale: median force cosine
(the whole molecule's force vector against xTB's), force RMSE (eV/Å, components), median
|energy error| per atom (meV, total energies), and the fraction of molecules whose forces
point away from xTB's (cosine < 0).

Relaxation paths start near minima, so a model trained on them alone is only tested there;
this shows what happens a little further out (a start from a rough conformer, a large BFGS
step). Not a test. Run: ``python benchmarks/off_equilibrium.py --data STORE --split
SPLIT.json:test --model A.pt --model B.pt [--json benchmarks/results/off_equilibrium.json]``.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import numpy as np
import torch

from force2geo.atomic import file_sha256, write_json
from force2geo.data.splits import read_part
from force2geo.data.store import TrajectoryStore
from force2geo.models import Batch, energy_and_forces
from force2geo.pretrained import resolve_model
from force2geo.qc.engines import QCError, XTBEngine


def minima(store_path: str, part: str, n: int) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, atomic numbers, xTB minimum) of the first ``n`` neutral trajectories of
    ``part`` that have an xTB stage."""
    store = TrajectoryStore(store_path)
    out = []
    for index in read_part(part, store):
        trajectory = store.trajectory(int(index))
        frames = [k for k, stage in enumerate(trajectory.stages) if stage == "xtb"]
        if trajectory.charge == 0 and frames:
            out.append((trajectory.name, trajectory.atomic_numbers,
                        trajectory.positions[frames[-1]]))
        if len(out) == n:
            break
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="store made by force2geo generate")
    parser.add_argument("--split", required=True, help="SPLIT.json:PART to take molecules from")
    parser.add_argument("--model", action="append", required=True, dest="models",
                        help="a model spec (checkpoint, exported file, shipped name); repeat")
    parser.add_argument("--molecules", type=int, default=50)
    parser.add_argument("--scales", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)

    molecules = minima(args.data, args.split, args.molecules)
    engine = XTBEngine()
    cases = []  # (scale, z, displaced positions, xTB result)
    for k, (name, z, minimum) in enumerate(molecules):
        for s, scale in enumerate(args.scales):
            rng = np.random.default_rng([args.seed, k, s])
            displaced = minimum + rng.normal(scale=scale, size=minimum.shape)
            try:
                cases.append((scale, z, displaced, engine.compute(z, displaced)))
            except QCError as exc:
                print(f"{name} at {scale} Å: xTB failed ({exc}); left out")
    results = {}
    for spec in args.models:
        model = resolve_model(spec).double()
        rows = {}
        for scale in args.scales:
            cosines, squared, n_components, energy_errors = [], 0.0, 0, []
            for case_scale, z, positions, reference in cases:
                if case_scale != scale:
                    continue
                energy, forces = energy_and_forces(
                    model, Batch.from_arrays([z], [positions], dtype=torch.float64))
                forces = forces.numpy()
                cosines.append(float((forces * reference.forces).sum() / (
                    np.linalg.norm(forces) * np.linalg.norm(reference.forces))))
                squared += float(((forces - reference.forces) ** 2).sum())
                n_components += forces.size
                energy_errors.append(abs(float(energy[0]) - reference.energy) / len(z) * 1e3)
            rows[str(scale)] = {
                "molecules": len(cosines),
                "force_cos_median": statistics.median(cosines),
                "force_rmse_eV_A": (squared / n_components) ** 0.5,
                "energy_abs_error_meV_per_atom_median": statistics.median(energy_errors),
                "fraction_cos_below_0": sum(c < 0 for c in cosines) / len(cosines)}
        path = Path(spec)
        results[spec] = {"sha256": file_sha256(path) if path.is_file() else None,
                         "scales": rows}
    print(f"{len(molecules)} molecules of {args.split}; displacement std per component (Å)")
    print(f"{'model':48s} {'scale':>6s} {'cos med':>8s} {'F RMSE':>8s} {'|dE| meV/at':>12s} "
          f"{'cos<0':>6s}")
    for spec, result in results.items():
        for scale, row in result["scales"].items():
            print(f"{spec[-48:]:48s} {scale:>6s} {row['force_cos_median']:8.3f} "
                  f"{row['force_rmse_eV_A']:8.3f} "
                  f"{row['energy_abs_error_meV_per_atom_median']:12.1f} "
                  f"{row['fraction_cos_below_0']:6.2f}")
    if args.json:
        write_json(args.json, {"data": args.data, "split": args.split,
                               "molecules": [m[0] for m in molecules], "seed": args.seed,
                               "models": results}, indent=1)


if __name__ == "__main__":
    main()
