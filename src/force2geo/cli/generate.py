"""``force2geo generate INPUT -o STORE``: relaxation trajectories by real quantum chemistry."""

from __future__ import annotations

import os

from force2geo.cli.common import HelpFormatter, add_pool_run_options
from force2geo.errors import InputError

DESCRIPTION = """\
Relax molecules with a PubChemQC-like protocol and store every snapshot with energy (eV),
forces (eV/Å) and its stage: RDKit ETKDG conformer -> MMFF94 BFGS pre-optimisation ->
GFN2-xTB (tblite) BFGS to fmax -> optionally B3LYP/6-31G* (PySCF, density fitting) single
points on chosen xTB frames or a DFT relaxation. HOMO, LUMO and gap (eV) at the final
geometry are stored as properties.

INPUT is a .smi file (one 'SMILES [name]' per line; '#' comments) or a built-in set:
builtin:demo (12 small molecules, about a minute), builtin:nci, builtin:wehi, builtin:all
(molecules shipped with RDKit, filtered to neutral single-fragment molecules of --elements
within --min-heavy..--max-heavy heavy atoms, deduplicated by InChIKey).

Rerunning on the same STORE resumes: molecules already stored or listed in
STORE/failures.jsonl are skipped. Failures (with stage and reason) go to
STORE/failures.jsonl; the run record (config, versions, counts, timing) to
STORE/generate.json.

For a cluster job array, give each task --shard I/N (I = 0..N-1) and its own STORE, then
join the stores with `force2geo merge`."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "generate", help="compute relaxation trajectories (RDKit -> MMFF -> xTB -> DFT)",
        description=DESCRIPTION, formatter_class=HelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help="a .smi file or builtin:SET")
    parser.add_argument("-o", "--output", metavar="STORE", required=True,
                        help="trajectory store folder (created, or resumed if it exists)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="worker processes, one thread each")
    parser.add_argument("--seed", type=int, default=42,
                        help="seed of ETKDG embedding and of --limit sampling")
    parser.add_argument("--limit", type=int, default=None,
                        help="relax only this many molecules, sampled with --seed "
                        "(input order kept)")
    parser.add_argument("--shard", metavar="I/N", default=None,
                        help="relax only the I-th of N round-robin slices of the molecules "
                        "(I from 0; after --limit), e.g. one per task of a job array")
    select = parser.add_argument_group("built-in set selection")
    select.add_argument("--elements", default="H,C,N,O,F,S,Cl",
                        help="allowed elements (comma list; any of H..Rn for GFN2-xTB)")
    select.add_argument("--min-heavy", type=int, default=1, help="fewest heavy atoms")
    select.add_argument("--max-heavy", type=int, default=30, help="most heavy atoms")
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--fmax", type=float, default=0.05,
                          help="convergence of xTB and DFT relaxations, max atomic force eV/Å")
    protocol.add_argument("--max-steps", type=int, default=500, help="xTB BFGS steps at most")
    protocol.add_argument("--mmff-fmax", type=float, default=0.05,
                          help="MMFF pre-optimisation convergence, eV/Å")
    protocol.add_argument("--max-mmff-frames", type=int, default=10,
                          help="MMFF frames kept per molecule (evenly spaced, last kept)")
    protocol.add_argument("--dft", choices=("none", "single", "relax"), default="none",
                          help="B3LYP stage: none, single points on --dft-frames, or relax")
    protocol.add_argument("--dft-frames", default="last",
                          help="xTB frames for --dft single: first, last, all, or indices")
    protocol.add_argument("--dft-max-steps", type=int, default=200,
                          help="DFT BFGS steps at most (--dft relax)")
    protocol.add_argument("--dft-xc", default="b3lyp",
                          help="PySCF functional (b3lyp5 = GAMESS/PubChemQC's VWN5 variant)")
    protocol.add_argument("--dft-basis", default="6-31g*", help="PySCF basis set")
    protocol.add_argument("--no-connectivity-check", action="store_true",
                          help="keep molecules whose bonds change during relaxation")
    add_pool_run_options(parser, "molecules", "run molecules listed in failures.jsonl again")
    parser.set_defaults(func=run)


def build_configs(args):
    """The protocol config and molecule selection that ``args`` ask for."""
    from force2geo.qc.molecules import Selection
    from force2geo.qc.protocol import ProtocolConfig

    elements = tuple(e.strip() for e in args.elements.split(",") if e.strip())
    try:
        config = ProtocolConfig(
            seed=args.seed, fmax=args.fmax, max_steps=args.max_steps, mmff_fmax=args.mmff_fmax,
            max_mmff_frames=args.max_mmff_frames, dft=args.dft, dft_frames=args.dft_frames,
            dft_max_steps=args.dft_max_steps, dft_xc=args.dft_xc, dft_basis=args.dft_basis,
            elements=elements, check_connectivity=not args.no_connectivity_check,
        )
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None
    selection = Selection(elements=elements, min_heavy=args.min_heavy,
                          max_heavy=args.max_heavy, limit=args.limit, seed=args.seed)
    return config, selection


def run(args) -> int:
    from force2geo.qc.generate import FAILURES, generate
    from force2geo.qc.molecules import load
    from force2geo.qc.shard import parse_shard

    config, selection = build_configs(args)
    shard = parse_shard(args.shard)
    molecules = load(args.input, selection)
    if args.workers < 1:
        raise InputError("command line", f"--workers must be >= 1, got {args.workers}")
    stats = generate(molecules, args.output, config, workers=args.workers,
                     flush_every=args.flush_every, flush_seconds=args.flush_seconds,
                     retry_failed=args.retry_failed, progress=not args.no_progress,
                     source=f"force2geo generate {args.input}", shard=shard)
    print(f"{args.output}: {stats.written} written, {stats.failed} failed, "
          f"{stats.skipped} already done, of {stats.requested}; {stats.wall_s:.1f} s, "
          f"{stats.molecules_per_hour:.0f} molecules/hour")
    if stats.failed:
        print(f"failures and their reasons: {os.path.join(args.output, FAILURES)}")
    return 0
