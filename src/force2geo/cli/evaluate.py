"""``force2geo evaluate relax``: MLIP geometry optimisation scored by a QC oracle."""

from __future__ import annotations

from pathlib import Path

from force2geo.cli import common
from force2geo.errors import InputError

RELAX_DESCRIPTION = """\
Relax molecules of a store with a machine-learning potential (--model: a shipped model's
name, a checkpoint of 'force2geo train' or its run folder, an exported model or the paper's
released PaiNN checkpoint; default: the shipped model) and score the results with a
quantum-chemistry oracle, as in the paper (§4.2, Appendix A.2, Table 3).

For each molecule of D_opt: the start c_0 is snapshot --start of stage --stage (default:
the first); the reference minimum c_gt is the stage's last snapshot (when after the
start; else, or with --reference oracle, the oracle relaxes c_0 with ASE BFGS to
0.05 eV/Å). The MLIP relaxes c_0 to c_T (batched --optimizer, --fmax, --steps). The oracle
(GFN2-xTB or B3LYP/6-31G*) computes single points at c_0, c_T and c_gt in --workers
single-threaded processes.

Metrics: pct_T, the mean of 100 (E_0 - E_T) / (E_0 - E_gt) (molecules with E_0 - E_gt
< 1 meV or no oracle energy at c_T left out); pct_success, E_T - E_gt < 1 kcal/mol;
pct_div, the oracle failed at c_T or E_T > E_0; pct_FWT, the oracle's max atomic force at
c_T < 0.05 eV/Å. A molecule whose reference single points fail is left out of all four.
Also the heavy-atom RMSD between c_T and c_gt (Kabsch alignment) and the MLIP's steps.

D_opt: the trajectories of --select, or --k picked by MaxMin diversity (Morgan
fingerprints, Tanimoto distance) from --split FILE:PART (or the whole store).

REPORT_DIR gets molecules.csv, metrics.json, report.txt, residual_energy.png and
mlip_steps.png. Results are cached there per molecule: rerun the same command after a
kill and it goes on where it stopped."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="evaluate a potential (geometry optimisation against a QC oracle)",
        description="Evaluate a trained potential.")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    relax = tasks.add_parser(
        "relax", help="MLIP relaxations scored by a QC oracle (pct_T, pct_success, ...)",
        description=RELAX_DESCRIPTION, formatter_class=common.HelpFormatter)
    relax.add_argument("--model", metavar="MODEL", default=None,
                       help="shipped model name or checkpoint; None: the shipped model")
    relax.add_argument("--data", metavar="STORE", required=True, help="trajectory store")
    chooser = relax.add_mutually_exclusive_group()
    chooser.add_argument("--split", metavar="FILE:PART",
                         help="pick D_opt among this split part (e.g. split.json:test)")
    chooser.add_argument("--select", metavar="FILE",
                         help="evaluate these trajectories (force2geo split --method maxmin)")
    relax.add_argument("--k", type=int, default=100, help="molecules to pick by MaxMin")
    relax.add_argument("--seed", type=int, default=42, help="first MaxMin pick")
    relax.add_argument("--oracle", choices=("xtb", "dft"), default="xtb",
                       help="GFN2-xTB (tblite) or B3LYP/6-31G* (PySCF)")
    relax.add_argument("--stage", default="xtb", help="stage of the start and reference")
    relax.add_argument("--start", default="first", metavar="first|FRAME",
                       help="start snapshot within the stage (negative: from the end)")
    relax.add_argument("--reference", choices=("stage", "oracle"), default="stage",
                       help="c_gt: the stage's last snapshot, or always made by the oracle")
    relax.add_argument("--fmax", type=float, default=0.05, help="MLIP convergence, eV/Å")
    relax.add_argument("--steps", type=int, default=500, help="MLIP position updates at most")
    relax.add_argument("--optimizer", choices=("bfgs", "lbfgs", "fire"), default="bfgs")
    relax.add_argument("--initial-hessian", choices=("identity", "lindh"), default="identity",
                       help="BFGS's start: ASE's 70 eV/Å^2 * I or the Lindh model Hessian")
    relax.add_argument("--batch-atoms", type=int, default=4096, help="atoms per MLIP batch")
    relax.add_argument("--device", default="auto", help="MLIP device: auto, cpu, cuda[:N]")
    relax.add_argument("--workers", type=int, default=0,
                       help="oracle processes (0: one per CPU core)")
    relax.add_argument("-o", "--output", metavar="REPORT_DIR", required=True,
                       help="folder of the report and the per-molecule caches")
    relax.add_argument("--overwrite", action="store_true",
                       help="discard an earlier evaluation in REPORT_DIR")
    relax.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    common.add_threads_option(relax)
    relax.set_defaults(func=run)


def _config(args):
    from force2geo.evaluate.oracle import OracleConfig
    from force2geo.evaluate.runner import EvalConfig
    from force2geo.evaluate.selection import parse_start
    from force2geo.relax import RelaxConfig

    try:
        relax = RelaxConfig(optimizer=args.optimizer, fmax=args.fmax, max_steps=args.steps,
                            batch_atoms=args.batch_atoms, initial_hessian=args.initial_hessian)
        return EvalConfig(stage=args.stage, start=parse_start(args.start),
                          reference=args.reference, k=args.k, seed=args.seed,
                          split=args.split, select=args.select, relax=relax,
                          oracle=OracleConfig(args.oracle), workers=args.workers)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None


def run(args) -> int:
    from force2geo.evaluate.report import TEXT_NAME
    from force2geo.evaluate.runner import evaluate_relaxation

    common.set_threads(args.threads)
    config = _config(args)
    if config.k < 1:
        raise InputError("--k", f"must be at least 1, got {config.k}")
    device = common.device(args.device)
    if device.type == "cpu":
        from force2geo.models.cpu import keep_freed_memory

        keep_freed_memory()  # as force2geo relax: reuse large message tensors
    evaluate_relaxation(args.model, args.data, args.output, config, device=device,
                        overwrite=args.overwrite, progress=not args.no_progress)
    print((Path(args.output) / TEXT_NAME).read_text(), end="")
    print(f"-> {args.output}")
    return 0
