"""Entry point of the ``force2geo`` command.

Each sub-command lives in its own module with ``add_parser(subparsers)``, which registers
a parser whose default ``func`` takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys

from force2geo import __version__
from force2geo.errors import Force2GeoError

# Sub-command modules, in the order ``force2geo --help`` lists them.
COMMANDS = ("generate", "label", "sample", "merge", "convert", "info", "split", "train",
            "active_learn", "relax", "evaluate", "benchmark", "dataset", "finetune", "experiment",
            "predict")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="force2geo",
        description="Molecular geometries from machine-learning interatomic potentials: "
        "relaxation datasets, MLIP training, batched relaxation, property prediction.",
    )
    parser.add_argument("--version", action="version", version=f"force2geo {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"force2geo.cli.{name}").add_parser(subparsers)
    return parser


def _terminate(signum, frame):
    raise KeyboardInterrupt  # SIGTERM (schedulers, `kill`) stops as cleanly as Ctrl-C


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        signal.signal(signal.SIGTERM, _terminate)
        return int(args.func(args) or 0)
    except Force2GeoError as exc:
        print(f"force2geo {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"force2geo {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
