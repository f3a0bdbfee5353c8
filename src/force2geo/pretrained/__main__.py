"""``python -m force2geo.pretrained export|card``: make a shipped model (the last steps of
``scripts/make_pretrained.sh``)."""

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
    register(Entry(args.name, files, args.description, args.level_of_theory, kind=kind),
             folder)
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


def card(args) -> None:
    from force2geo.pretrained.card import make_model_card

    path = make_model_card(args.name, args.folder, args.evaluation, args.data, args.commands,
                           test_errors=not args.no_test_errors)
    print(path)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        {"export": export, "card": card}[args.task](args)
    except Force2GeoError as exc:
        print(f"force2geo.pretrained {args.task}: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
