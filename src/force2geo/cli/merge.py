"""``force2geo merge STORE... -o OUT``: join trajectory stores into a new one."""

from __future__ import annotations

import argparse

DESCRIPTION = """\
Join trajectory stores (for example the per-shard stores of `force2geo generate` or
`force2geo label` runs with --shard I/N) into a new store OUT, in the order given.

Checks: the stores use the same units, and a stage found in several stores has one level
of theory in all of them (as their label.json / generate.json / merge.json records name
it; stores without a record count as unknown). Duplicates (a trajectory with the same
molecule name and the same geometries, stages and charge as an earlier one) are refused,
or with --skip-duplicates left out and named in OUT/merge.json. The failure logs are
joined into OUT/failures.jsonl. OUT/merge.json records the inputs (path, fingerprint,
counts, their run records), stage levels, duplicates and versions. OUT is written under a
temporary name and renamed into place when complete."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "merge", help="join trajectory stores (checks levels, no duplicates)",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stores", metavar="STORE", nargs="+", help="trajectory store folders")
    parser.add_argument("-o", "--output", metavar="OUT", required=True,
                        help="the new store folder")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUT if it exists (only a trajectory store)")
    parser.add_argument("--skip-duplicates", action="store_true",
                        help="keep the first of duplicate trajectories instead of refusing")
    parser.set_defaults(func=run)


def run(args) -> int:
    from force2geo.qc.merge import merge

    stats = merge(args.stores, args.output, overwrite=args.overwrite,
                  skip_duplicates=args.skip_duplicates)
    print(f"{args.output}: {stats.trajectories} trajectories, {stats.snapshots} snapshots "
          f"from {stats.stores} stores; {stats.duplicates} duplicates left out")
    return 0
