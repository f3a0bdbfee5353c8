"""``force2geo info STORE``: what a trajectory store holds."""

from __future__ import annotations

import json

from force2geo.data.store import TrajectoryStore


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="summarise a trajectory store",
        description="Print counts per stage, molecule sizes, elements, properties, units "
        "and sources of a trajectory store.",
    )
    parser.add_argument("store", help="trajectory store folder")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--verify", action="store_true",
                        help="also check every shard file against its SHA-256 checksum")
    parser.set_defaults(func=run)


def format_summary(summary: dict) -> str:
    lines = [
        f"store        {summary['path']}",
        f"trajectories {summary['trajectories']:,}",
        f"snapshots    {summary['snapshots']:,} in {summary['shards']} shard(s)",
    ]
    for stage, count in summary["snapshots_per_stage"].items():
        lines.append(f"  {stage:<10} {count:,}")
    if summary["atoms_per_molecule"]:
        a = summary["atoms_per_molecule"]
        lines.append(f"atoms/mol    min {a['min']}  mean {a['mean']}  max {a['max']}")
    lines.append("elements     " + " ".join(f"{k}:{v}" for k, v in summary["elements"].items()))
    if summary["properties"]:
        lines.append("properties   " + ", ".join(summary["properties"]) + " (eV)")
    units = summary["units"]
    lines.append(f"units        energy {units['energy']}, positions {units['positions']}, "
                 f"forces {units['forces']}")
    lines.append("sources      " + ("; ".join(summary["sources"]) or "-"))
    lines.append(f"fingerprint  {summary['fingerprint']}")
    return "\n".join(lines)


def run(args) -> int:
    store = TrajectoryStore(args.store)
    if args.verify:
        store.verify()
    summary = store.summary()
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if args.verify and not args.json:
        print("verified     all shard checksums match")
    return 0
