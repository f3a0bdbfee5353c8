"""``force2geo sample STORE -o OUT.extxyz``: off-equilibrium geometries around minima."""

from __future__ import annotations

import argparse
import os

from force2geo.errors import InputError

DESCRIPTION = """\
Displace the minimum of each trajectory (the last frame of --stage) of a store and write
the geometries to an extxyz file, to be labelled with `force2geo label OUT.extxyz -o STORE2`.
--per-molecule geometries are drawn per molecule and amplitude.

Amplitude (Å): the root-mean-square of the 3N Cartesian displacement components (the
per-atom RMSD is √3 times larger); the scale of benchmarks/off_equilibrium.py.
  displace      every component ~ N(0, amplitude²): the RMS equals the amplitude on
                average (each frame records its own 'rms' key).
  normal-modes  d = Σ c_k v_k over the vibrational modes v_k of the GFN2-xTB Hessian
                (translations and rotations projected out), c_k ~ N(0, 1/max(κ_k, 0.5
                eV/Å²)) with κ_k the mode's force constant (harmonic-Boltzmann shape: soft
                modes move most), scaled so that the RMS equals the amplitude exactly.
                The Hessian costs 6N xTB gradients per molecule (about 2 s for 30
                atoms on one core); molecules above --max-hessian-atoms are skipped.

Draws are seeded by (--seed, molecule name, amplitude). Info keys of each frame: name,
smiles, inchikey, charge, source_trajectory, source_frame, method, amplitude, sample, rms,
seed. OUT.json beside OUT records the run (config, store fingerprint, counts, versions)."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample", help="displaced / normal-mode geometries around a store's minima",
        description=DESCRIPTION, formatter_class=_Formatter)
    parser.add_argument("store", metavar="STORE", help="trajectory store folder")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="extxyz file to write (.xyz or .extxyz)")
    parser.add_argument("--stage", default="xtb",
                        help="stage whose last frame is the minimum")
    parser.add_argument("--method", choices=("displace", "normal-modes"), default="displace",
                        help="Gaussian Cartesian noise or normal-mode combinations")
    parser.add_argument("--amplitudes", default="0.05,0.1,0.2",
                        help="comma list of RMS displacements, Å per Cartesian component")
    parser.add_argument("--per-molecule", type=int, default=1,
                        help="geometries per molecule and amplitude")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws")
    parser.add_argument("--limit", type=int, default=None,
                        help="sample only the first this many molecules of the store")
    parser.add_argument("--max-hessian-atoms", type=int, default=60,
                        help="normal-modes: skip molecules with more atoms")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="normal-modes: worker processes (one thread each) for Hessians")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Show defaults and keep the description's line breaks."""


def run(args) -> int:
    from pathlib import Path

    from force2geo.qc.sample import SampleConfig, sample

    try:
        amplitudes = tuple(float(a) for a in args.amplitudes.split(",") if a.strip())
        config = SampleConfig(method=args.method, amplitudes=amplitudes,
                              per_molecule=args.per_molecule, seed=args.seed,
                              stage=args.stage, max_hessian_atoms=args.max_hessian_atoms)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None
    if Path(args.output).exists() and not args.overwrite:
        raise InputError(args.output, "exists; pass --overwrite to replace it")
    if args.workers < 1:
        raise InputError("--workers", f"must be >= 1, got {args.workers}")
    stats = sample(args.store, args.output, config, limit=args.limit, workers=args.workers,
                   progress=not args.no_progress)
    print(f"{args.output}: {stats.geometries} geometries around {stats.molecules} minima "
          f"({config.method}, amplitudes {', '.join(map(str, config.amplitudes))} Å); "
          f"{len(stats.skipped)} molecules skipped")
    return 0
