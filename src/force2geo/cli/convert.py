"""``force2geo convert SOURCE STORE``: import a dataset file or release into a store."""

from __future__ import annotations

import re
import sys

from tqdm import tqdm

from force2geo.data.convert import ERRORS_FILE, convert
from force2geo.data.readers import FORMATS
from force2geo.errors import InputError

MAX_PRINTED_ERRORS = 20
_INT = re.compile(r"[+-]?\d+")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="import a dataset (file or release folder) into a trajectory store",
        description="Read SOURCE in any known format (detected unless --format names it) and "
        "write its trajectories to the store folder STORE, converted to eV, Å and eV/Å. "
        "A new store appears only when the whole conversion succeeded. Bad records are "
        f"skipped and reported: the first {MAX_PRINTED_ERRORS} on stderr, all of them as "
        f"JSON lines in STORE/{ERRORS_FILE}.",
    )
    parser.add_argument("source", help="input file, or the folder of a dataset release")
    parser.add_argument("store", help="trajectory store folder to create (or append to)")
    parser.add_argument("--format", choices=list(FORMATS), help="input format (default: detect)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--append", action="store_true", help="add to an existing store")
    mode.add_argument("--overwrite", action="store_true",
                      help="replace an existing store (once the new one is complete)")
    parser.add_argument("--limit", type=_positive_int, metavar="N",
                        help="write at most N trajectories")
    parser.add_argument("--stages", nargs="+", metavar="STAGE",
                        help="keep only snapshots of these stages (e.g. pm3 hf dft1 dft2); "
                        "also passed to readers that take a 'stages' option")
    parser.add_argument("--strict", action="store_true",
                        help="abort (writing nothing) on the first bad record")
    parser.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                        help="reader option, e.g. -o energy_key=E -o energy_unit=hartree "
                        "(true/false/none/numbers are parsed); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=run)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def _value(text: str):
    """A reader option value: true/false/none, an int, a float, else the text itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    if _INT.fullmatch(text.strip()):
        return int(text)
    try:
        return float(text)
    except ValueError:
        return text


def parse_options(items: list[str]) -> dict:
    """``["key=value", ...]`` -> ``{key: value}``; a malformed item is an input error."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InputError(None, f"reader option {item!r} is not KEY=VALUE")
        options[key.strip()] = _value(value)
    return options


class _ErrorPrinter:
    """Prints the first bad records as one line each, then a pointer to the full list."""

    def __init__(self, store: str):
        self.store = store
        self.count = 0

    def __call__(self, err: InputError) -> None:
        self.count += 1
        if self.count <= MAX_PRINTED_ERRORS:
            tqdm.write(f"skipped: {err}", file=sys.stderr)
        elif self.count == MAX_PRINTED_ERRORS + 1:
            tqdm.write(f"skipped: more bad records; all are listed in "
                       f"{self.store}/{ERRORS_FILE}", file=sys.stderr)


def run(args) -> int:
    stages = [s for item in args.stages or [] for s in item.split(",") if s]
    stats = convert(
        args.source, args.store, args.format, append=args.append, overwrite=args.overwrite,
        limit=args.limit, stages=stages or None, strict=args.strict,
        options=parse_options(args.option), on_error=_ErrorPrinter(args.store),
        progress=not args.no_progress,
    )
    print(f"{stats.format}: {stats.summary()}")
    return 0
