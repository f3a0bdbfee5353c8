"""``force2geo label INPUT... -o STORE``: oracle energies and forces for any geometries."""

from __future__ import annotations

import os

from force2geo.cli.common import HelpFormatter, add_pool_run_options
from force2geo.errors import InputError

DESCRIPTION = """\
Compute oracle energies (eV) and forces (eV/Å) for geometries and store them as their own
stage of a trajectory store (default stage name: xtb-label or dft-label), ready for
`force2geo train --data STORE --stages xtb-label`. Oracles: GFN2-xTB (tblite, the default)
or DFT (--oracle dft: B3LYP/6-31G* by PySCF with density fitting). Energies are total
energies at the same level and settings as `force2geo generate`'s xtb/dft stages.

INPUT: extended or plain XYZ (.xyz/.extxyz), SDF (.sdf/.sd/.mol), optionally .gz, such as
`force2geo relax` outputs and --trajectory files and `force2geo sample` outputs; or a
trajectory store folder (--stage picks its stages, --frames the frames of each
trajectory). Consecutive frames of one molecule (same traj_id/mol_id/index/name/smiles
key, or SDF title, and same atoms) are stored as one trajectory. Charge: the extxyz
charge= key, else its smiles= key's formal charge, else 0; SDF formal charges; a store's.

Rerunning on the same STORE resumes: geometries already labelled or failed (keyed by a
hash of atomic numbers, positions and charge) are skipped, and a geometry met twice is
labelled once. Failures (unreadable records, odd electron counts, overlapping atoms,
SCF failures) go to STORE/failures.jsonl with a reason; the run record (inputs with
SHA-256, oracle, settings, versions, counts) to STORE/label.json.

For a cluster job array, give each task --shard I/N (I = 0..N-1) and its own STORE, then
join the stores with `force2geo merge`."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "label", help="oracle energies and forces for any geometries (xTB or DFT)",
        description=DESCRIPTION, formatter_class=HelpFormatter)
    parser.add_argument("inputs", metavar="INPUT", nargs="+",
                        help="xyz/extxyz/sdf files or trajectory store folders")
    parser.add_argument("-o", "--output", metavar="STORE", required=True,
                        help="trajectory store folder (created, or resumed if it exists)")
    oracle = parser.add_argument_group("oracle")
    oracle.add_argument("--oracle", choices=("xtb", "dft"), default="xtb",
                        help="GFN2-xTB (tblite) or DFT (PySCF)")
    oracle.add_argument("--dft-xc", default="b3lyp", help="PySCF functional (--oracle dft)")
    oracle.add_argument("--dft-basis", default="6-31g*", help="PySCF basis (--oracle dft)")
    oracle.add_argument("--stage-name", default=None,
                        help="stage of the labels in STORE; None: xtb-label or dft-label")
    oracle.add_argument("--overlap", type=float, default=0.5,
                        help="refuse a geometry with two atoms closer than this fraction of "
                        "the sum of their covalent radii")
    select = parser.add_argument_group("which geometries")
    select.add_argument("--stage", default=None,
                        help="store inputs: the stage(s) to take frames of, comma list; "
                        "None: all stages")
    select.add_argument("--frames", default="all",
                        help="frames of each trajectory or molecule: all, first, last or "
                        "every:K (every K-th from the first, plus the last)")
    select.add_argument("--shard", metavar="I/N", default=None,
                        help="label only the I-th of N round-robin slices of the input's "
                        "molecules (I from 0)")
    select.add_argument("--limit", type=int, default=None,
                        help="label at most this many geometries in this run (rerun to go on)")
    run_group = add_pool_run_options(parser, "units (molecules)",
                                     "label geometries listed in failures.jsonl again")
    run_group.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                           help="worker processes, one thread each")
    parser.set_defaults(func=run)


def build_configs(args):
    """The oracle config and frame selection that ``args`` ask for."""
    from force2geo.qc.geometries import FrameSelection
    from force2geo.qc.label import LabelConfig

    try:
        config = LabelConfig(oracle=args.oracle, stage_name=args.stage_name or "",
                             dft_xc=args.dft_xc, dft_basis=args.dft_basis,
                             overlap=args.overlap)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None
    stages = None
    if args.stage:
        stages = tuple(s.strip() for s in args.stage.split(",") if s.strip())
    return config, FrameSelection(stages=stages, frames=args.frames)


def run(args) -> int:
    from force2geo.qc.generate import FAILURES
    from force2geo.qc.label import label
    from force2geo.qc.shard import parse_shard

    config, selection = build_configs(args)
    shard = parse_shard(args.shard)
    if args.workers < 1:
        raise InputError("--workers", f"must be >= 1, got {args.workers}")
    if args.limit is not None and args.limit < 0:
        raise InputError("--limit", f"must be >= 0, got {args.limit}")
    stats = label(args.inputs, args.output, config, selection, workers=args.workers,
                  shard=shard, limit=args.limit, retry_failed=args.retry_failed,
                  flush_every=args.flush_every, flush_seconds=args.flush_seconds,
                  progress=not args.no_progress)
    print(f"{args.output}: {stats.written} geometries labelled ({config.level}, stage "
          f"{config.stage_name}), {stats.failed} failed, {stats.skipped} already done, "
          f"{stats.duplicates} duplicates, {stats.deferred} left by --limit, of "
          f"{stats.requested}; {stats.wall_s:.1f} s")
    if stats.failed:
        print(f"failures and their reasons: {os.path.join(args.output, FAILURES)}")
    return 0
