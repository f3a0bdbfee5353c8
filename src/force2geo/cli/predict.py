"""``force2geo predict INPUT -o OUT.csv``: conformer -> MLIP relaxation -> property."""

from __future__ import annotations

from force2geo.cli import common
from force2geo.errors import InputError

DESCRIPTION = """\
From molecules to a property in one command: an RDKit conformer of each SMILES (ETKDG,
then MMFF94 unless --start etkdg), relaxed by a machine-learning potential (--model,
batched BFGS until fmax < --fmax eV/Å or --steps), then a property model (--property-model)
applied to the relaxed geometry. One molecule's failure (bad SMILES, unsupported element or
charge, embedding failure, diverged relaxation) gives its row a status and a reason; it
never stops the others.

INPUT: a .smi file ('SMILES [name]' per line), builtin:SET (e.g. builtin:demo), an SDF
file or a multi-frame extxyz file (geometries used as given).

Outputs (OUT.csv names them all):
  OUT.csv      one row per input molecule, in input order: index, name, smiles, n_atoms,
               status (converged, step_limit, diverged, failed), reason, start, n_steps,
               fmax (eV/Å), energy (eV), energy_std (eV), forces_std (eV/Å) (a potential
               ensemble's spread, else empty), the property (e.g. gap_eV) and its std (a
               property-model ensemble's spread, else empty); empty cells where no number
               exists
  OUT.xyz      the relaxed geometries (--geometries PATH for another name, or .sdf)
  OUT.json     run record: input, models with SHA-256, settings, versions, timings
  REPORT/OUT.report.md and REPORT/OUT.<property>.png: summary table and histogram
               (REPORT: OUT's folder unless --report)

MODEL (default: the shipped potential force2geo-painn-xtb): a shipped name, a checkpoint of
'force2geo train' or its run folder, an exported model or the paper's released PaiNN;
repeat --model for an ensemble. PROPERTY_MODEL (default: the shipped force2geo-gap-xtb): a
shipped property model's name, a property checkpoint of 'force2geo finetune' (best.pt) or
its run folder, or an exported one; repeat it for an ensemble."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="SMILES/SDF -> conformer -> MLIP relaxation -> property (CSV)",
        description=DESCRIPTION, formatter_class=common.HelpFormatter)
    parser.add_argument("input", metavar="INPUT", help=".smi, builtin:SET, .sdf or .xyz")
    parser.add_argument("-o", "--output", metavar="OUT.csv", required=True,
                        help="the table of results (.csv)")
    parser.add_argument("--model", metavar="MODEL", action="append", default=None,
                        help="potential (repeat for an ensemble); None: the shipped one")
    parser.add_argument("--property-model", metavar="PROPERTY_MODEL", action="append",
                        default=None, help="property model (repeat for an ensemble); "
                        "None: the shipped one")
    parser.add_argument("--geometries", metavar="PATH", default=None,
                        help="relaxed geometries (.xyz/.extxyz/.sdf); None: OUT.xyz")
    parser.add_argument("--report", metavar="DIR", default=None,
                        help="folder of the report; None: OUT's folder")
    parser.add_argument("--fmax", type=float, default=0.05, help="convergence, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="position updates at most")
    parser.add_argument("--start", choices=("mmff", "etkdg"), default="mmff",
                        help="start geometry of a SMILES: ETKDG then MMFF94, or ETKDG only")
    parser.add_argument("--seed", type=int, default=42, help="ETKDG seed")
    parser.add_argument("--allow-charged", action="store_true",
                        help="relax ions too (the potentials do not see the charge)")
    parser.add_argument("--batch-atoms", type=int, default=4096,
                        help="atoms per relaxation batch at most")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.csv and the rest")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    common.add_threads_option(parser)
    parser.set_defaults(func=run)


def _spec(values: list[str] | None):
    """None, one spec, or a list (an ensemble) from a repeatable option."""
    if not values:
        return None
    return values[0] if len(values) == 1 else list(values)


def _config(args):
    from force2geo.predict import PredictConfig
    from force2geo.relax import RelaxConfig

    try:
        relax = RelaxConfig(fmax=args.fmax, max_steps=args.steps, batch_atoms=args.batch_atoms)
        return PredictConfig(relax=relax, start=args.start, seed=args.seed,
                             allow_charged=args.allow_charged,
                             progress=not args.no_progress)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None


def run(args) -> int:
    from force2geo.predict import predict_file

    common.set_threads(args.threads)
    config = _config(args)
    record = predict_file(args.input, args.output, _spec(args.model),
                          _spec(args.property_model), config, args.geometries, args.report,
                          common.device(args.device), overwrite=args.overwrite)
    _summary(record)
    return 0


def _summary(record: dict) -> None:
    from force2geo.predict.output import property_column

    counts = ", ".join(f"{n} {s}" for s, n in record["status_counts"].items())
    stats = record["property_summary"]
    column = property_column(record["property"]["target"], record["property"]["unit"])
    spread = (f"{column} {stats['mean']:.3f} ± {stats['std']:.3f} (min {stats['min']:.3f}, "
              f"max {stats['max']:.3f})" if stats["n"] else f"no {column} predicted")
    steps = "" if record["median_steps"] is None else f"median {record['median_steps']} steps; "
    outputs = record["outputs"]
    print(f"{outputs['csv']}: {record['molecules']} molecules ({counts}); {steps}{spread}; "
          f"{record['timings']['total_s']:.1f} s")
    print(f"geometries {outputs['geometries']}, record {outputs['record']}, report "
          f"{outputs['report']}")
