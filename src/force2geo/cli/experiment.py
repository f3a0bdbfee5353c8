"""``force2geo experiment SPEC.yaml -o OUT``: run a reproducible experiment spec."""

from __future__ import annotations

from force2geo.cli.common import add_threads_option


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "experiment", help="run an experiment spec (YAML): property runs, tables, plots",
        description="Run the property-prediction experiment a YAML spec describes (dataset, "
        "splits, runs of scratch training, Force2Prop, geometry fine-tuning or denoising "
        "pre-training, and the tables and plots to make), writing OUT/tables.md, "
        "OUT/tables.json, the plots, OUT/experiment.json (spec and its SHA-256, dataset "
        "fingerprint, splits, versions, every run's result) and one folder per run under "
        "OUT/runs/<split>/<run>. Rerunning the same command skips finished runs and resumes "
        "a stopped one. The spec format is documented in force2geo.finetune.experiment; "
        "the specs of the paper's tables are in experiments/.")
    parser.add_argument("spec", metavar="SPEC.yaml", help="experiment spec")
    parser.add_argument("-o", "--output", dest="out", metavar="OUT",
                        help="report folder (default: reports/<spec name>)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the spec, make the splits, list the runs; train nothing")
    parser.add_argument("--device", help="override every run's device (auto, cpu, cuda:N)")
    parser.add_argument("--split", action="append", dest="splits", metavar="NAME",
                        help="run only the runs on this split of the spec (repeatable; "
                        "default all), e.g. one split per process or machine, each with "
                        "its own OUT")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from force2geo.cli.common import set_threads
    from force2geo.finetune.experiment import load_spec, render_table, run_experiment

    set_threads(args.threads)
    spec = load_spec(args.spec)
    out = Path(args.out or Path("reports") / spec.name)
    record = run_experiment(spec, out, dry_run=args.dry_run, device=args.device,
                            only_splits=args.splits)
    if args.dry_run:
        chosen = [r for r in spec.runs if args.splits is None or r.split in args.splits]
        print(f"{len(chosen)} run(s); splits {record['splits']}")
        return 0
    import json

    for table in json.loads((out / "tables.json").read_text()):
        print(render_table(table), end="\n\n")
    print(f"-> {out} ({record['seconds']:.0f} s)")
    return 0
