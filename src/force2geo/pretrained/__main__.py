"""``python -m force2geo.pretrained export|calibrate|card``: make a shipped model (the last
steps of ``scripts/make_pretrained.sh`` and ``scripts/make_potential_v3.sh``)."""

from __future__ import annotations

import argparse
import sys

from force2geo.errors import Force2GeoError

EXPORT = """\
Strip training checkpoints to float32 inference weights (EMA weights when kept) in FOLDER
and register them under NAME in FOLDER/registry.json with their SHA-256. Several sources
make an ensemble (NAME-0.pt, NAME-1.pt, ...). Property checkpoints of 'force2geo finetune'
(best.pt or the run folder) are registered as property models (kind "property"), e.g.
under the name force2geo predict uses by default, force2geo-gap-xtb."""

CARD = """\
Write the model card of registered model NAME: facts read off its files, the store it was
trained on (fingerprint checked), errors on the held-out test part and an 'evaluate relax'
report, into FOLDER/NAME.facts.json, FOLDER/NAME.inchikeys.txt and FOLDER/MODEL_CARD.md."""


CALIBRATE = """\
Set the uncertainty flag of ensemble NAME: the forces_std (members' spread at the relaxed
geometry, eV/Å) above which a result is flagged 'uncertain' in relax, predict and evaluate
outputs. It is the lowest threshold that flags at most --max-false-alarm of the good
results of an 'evaluate relax' run of this ensemble on held-out molecules (bad: diverged, or
more than --bad-kcal above the oracle's minimum); the share of bad results it flags there
(catch) is recorded beside it in the registry."""


def build_parser() -> argparse.ArgumentParser:
    from force2geo.pretrained.registry import DEFAULT

    parser = argparse.ArgumentParser(prog="python -m force2geo.pretrained",
                                     description="Make a shipped force2geo model.")
    tasks = parser.add_subparsers(dest="task", required=True, metavar="TASK")
    export = tasks.add_parser("export", help="export and register weights", description=EXPORT)
    export.add_argument("sources", nargs="+", metavar="CKPT_OR_RUN_DIR")
    export.add_argument("--name", default=DEFAULT, help="registry name")
    export.add_argument("--folder", default=None, help="weights folder (default: the package's)")
    export.add_argument("--description", default="", help="one paragraph for the card")
    export.add_argument("--level-of-theory", default="", help="of the training labels")
    export.add_argument("--plain-weights", action="store_true",
                        help="export the raw weights even where the run kept an EMA")
    export.add_argument("--drive", choices=("mean", "first"), default="mean",
                        help="ensemble: all members drive a relaxation (mean), or the first "
                        "alone while the others score the end point (first)")
    calibrate = tasks.add_parser("calibrate", help="calibrate an ensemble's uncertainty flag",
                                 description=CALIBRATE)
    calibrate.add_argument("--name", default=DEFAULT, help="registry name")
    calibrate.add_argument("--folder", default=None,
                           help="weights folder (default: the package's)")
    calibrate.add_argument("--evaluation", metavar="REPORT_DIR", required=True,
                           help="finished 'force2geo evaluate relax' of this ensemble on "
                           "held-out molecules")
    calibrate.add_argument("--max-false-alarm", type=float, default=0.2,
                           help="share of good results the flag may catch")
    calibrate.add_argument("--bad-kcal", type=float, default=1.0,
                           help="a result this far above the oracle minimum (kcal/mol), or "
                           "diverged, is bad")
    card = tasks.add_parser("card", help="write the model card", description=CARD)
    card.add_argument("--name", default=DEFAULT, help="registry name")
    card.add_argument("--folder", default=None, help="weights folder (default: the package's)")
    card.add_argument("--evaluation", metavar="REPORT_DIR", default=None,
                      help="folder of a finished 'force2geo evaluate relax' run")
    card.add_argument("--data", metavar="STORE", default=None,
                      help="the training store, when not at the path the weights record")
    card.add_argument("--command", action="append", default=[], dest="commands",
                      help="a command that reproduces the model (repeatable, in order)")
    card.add_argument("--no-test-errors", action="store_true",
                      help="skip scoring the model on the held-out test part")
    return parser


def export(args) -> None:
    from force2geo.pretrained.export import export_pretrained
    from force2geo.pretrained.registry import Entry, register, weights_dir

    folder = args.folder or weights_dir()
    kind = source_kind(args.sources)
    several = len(args.sources) > 1
    files = tuple(export_pretrained(source, args.name, folder,
                                    f"{args.name}-{k}.pt" if several else None,
                                    use_ema=not args.plain_weights)
                  for k, source in enumerate(args.sources))
    settings = {"drive": args.drive} if several and kind == "mlip" else {}
    register(Entry(args.name, files, args.description, args.level_of_theory, kind=kind,
                   ensemble=settings), folder)
    for weight in files:
        print(f"{folder}/{weight.file}: {weight.size} bytes, sha256 {weight.sha256}")


def source_kind(sources: list[str]) -> str:
    """``property`` when every source is a property checkpoint (or its run folder),
    ``mlip`` when none is; a mix is an error (one registry entry is one kind)."""
    from force2geo.errors import InputError
    from force2geo.pretrained.properties import is_property_file
    from force2geo.pretrained.registry import run_checkpoint

    kinds = {"property" if is_property_file(run_checkpoint(s)) else "mlip" for s in sources}
    if len(kinds) > 1:
        raise InputError("export", "a mix of potentials and property models; export them "
                         "under two names")
    return kinds.pop()


def calibrate(args) -> None:
    import dataclasses
    import json

    from force2geo.errors import InputError
    from force2geo.evaluate.report import read_rows
    from force2geo.pretrained.ensemble import calibrate_flag
    from force2geo.pretrained.registry import read_registry, register, weights_dir

    folder = args.folder or weights_dir()
    entry = read_registry(folder).get(args.name)
    if entry is None or not entry.is_ensemble:
        raise InputError(args.name, "is not a registered ensemble (export several members)")
    rows = [r for r in read_rows(args.evaluation) if r["scored"] is not None]
    spread = [r.get("forces_std") for r in rows]
    if not rows or all(v is None for v in spread):
        raise InputError(args.evaluation, "has no forces_std column: evaluate the ensemble "
                         "itself (force2geo evaluate relax --model NAME)")
    bad = [bool(r["diverged"]) or r["e_res_kcal"] is None or r["e_res_kcal"] > args.bad_kcal
           for r in rows]
    try:
        result = calibrate_flag([float("nan") if v is None else v for v in spread], bad,
                                args.max_false_alarm)
    except ValueError as exc:
        raise InputError(args.evaluation, str(exc)) from None
    result.update(evaluation=str(args.evaluation), bad_kcal=args.bad_kcal,
                  max_false_alarm=args.max_false_alarm)
    settings = {**entry.ensemble, "flag_forces_std": result["flag_forces_std"],
                "calibration": result}
    register(dataclasses.replace(entry, ensemble=settings), folder)
    print(json.dumps(result, indent=1))


def card(args) -> None:
    from force2geo.pretrained.card import make_model_card

    path = make_model_card(args.name, args.folder, args.evaluation, args.data, args.commands,
                           test_errors=not args.no_test_errors)
    print(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"export": export, "calibrate": calibrate, "card": card}[args.task](args)
    except Force2GeoError as exc:
        print(f"force2geo.pretrained {args.task}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
