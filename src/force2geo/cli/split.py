"""``force2geo split``: train/valid/test splits and diverse selections of a store's trajectories.

    force2geo split STORE -o SPLIT.json --method random|scaffold [--fractions 0.8 0.1 0.1]
                    [--seed 42] [--exclude OTHER_STORE [--exclude-parts test]]
    force2geo split GROWN_STORE -o SPLIT.json --method random --extend OLD_SPLIT.json
    force2geo split STORE -o SPLIT.json --method random --hold-out BENCHMARK.inchikeys.txt
    force2geo split STORE -o SEL.json --method maxmin --k 1000 [--from SPLIT.json:test]

Indices in the output are trajectory indices of STORE; the file records the store's
fingerprint so that later commands can refuse a split made for other data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from force2geo.atomic import file_sha256
from force2geo.data import splits
from force2geo.data.store import TrajectoryStore
from force2geo.errors import InputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "split", help="split a store's trajectories, or pick a diverse subset",
        description="Write a JSON file of trajectory indices: a random or Bemis-Murcko "
        "scaffold train/valid/test split, or a MaxMin diversity selection on Morgan "
        "fingerprints (Tanimoto distance), optionally without molecules found in another "
        "store (by InChIKey or PubChem CID).",
    )
    parser.add_argument("store", help="trajectory store folder")
    parser.add_argument("-o", "--output", required=True, help="JSON file to write")
    parser.add_argument("--method", required=True, choices=(*splits.SPLIT_METHODS, "maxmin"))
    parser.add_argument("--fractions", nargs="+", type=float, metavar="F",
                        default=list(splits.DEFAULT_FRACTIONS),
                        help="train valid test fractions, summing to 1 (default 0.8 0.1 0.1)")
    parser.add_argument("--seed", type=int, default=42,
                        help="random seed: the permutation (random) or first pick (maxmin)")
    parser.add_argument("--k", type=int, help="molecules to pick (maxmin)")
    parser.add_argument("--from", dest="source", metavar="FILE[:PART]",
                        help="pick only among the trajectories of this split file part (maxmin)")
    parser.add_argument("--radius", type=int, default=2, help="Morgan radius (maxmin)")
    parser.add_argument("--n-bits", type=int, default=2048, help="fingerprint bits (maxmin)")
    parser.add_argument("--extend", metavar="OLD_SPLIT.json|KEYS.txt",
                        help="random split that keeps this earlier split of a smaller store "
                        "(molecules matched by InChIKey keep their part; new ones are split "
                        "with --fractions and --seed), or puts every molecule of an InChIKey "
                        "list (one per line, e.g. a model card's *.inchikeys.txt) in train, "
                        "so that a model warm-started from that model is never validated or "
                        "tested on its training molecules")
    parser.add_argument("--hold-out", metavar="KEYS.txt",
                        help="random split that puts every molecule of this InChIKey list in "
                        "test, never in train or valid (molecules kept for held-out checks, "
                        "e.g. a benchmark set)")
    parser.add_argument("--exclude", metavar="OTHER_STORE",
                        help="drop molecules that occur in this store (InChIKey or CID)")
    parser.add_argument("--exclude-parts", nargs="+", choices=splits.PARTS, default=["test"],
                        help="parts that lose those molecules (default: test)")
    parser.add_argument("--first-block", action="store_true",
                        help="match InChIKeys by connectivity block only (ignores stereo)")
    parser.add_argument("--force", action="store_true", help="replace an existing output file")
    parser.set_defaults(func=run)


def run(args) -> int:
    fractions = _check_arguments(args)
    output = Path(args.output)
    if not output.parent.is_dir():
        raise InputError(output, f"folder {output.parent} does not exist")
    if output.exists() and not args.force:
        raise InputError(output, "exists; pass --force to replace it")
    store = TrajectoryStore(args.store)
    other = TrajectoryStore(args.exclude) if args.exclude else None
    if args.method == "maxmin":
        parts, meta = _select(args, store, other)
    else:
        parts, meta = _split(args, fractions, store, other)
    splits.save_split(output, parts, meta)
    line = "  ".join(f"{name} {len(ix):,}" for name, ix in parts.items()) + f"  -> {output}"
    if other is not None:
        removed = ", ".join(f"{n} from {name}" for name, n in meta["exclude"]["removed"].items())
        line += f"  (removed as found in {other.path}: {removed})"
    print(line)
    return 0


def _check_arguments(args) -> tuple[float, float, float]:
    """Refuse contradictory or out-of-range options before any work; return the fractions."""
    try:
        fractions = splits.check_fractions(args.fractions)
    except ValueError as exc:
        raise InputError("--fractions", str(exc)) from None
    if args.method == "maxmin":
        if args.k is None:
            raise InputError("--k", "required with --method maxmin (how many molecules to pick)")
        if args.k < 1:
            raise InputError("--k", f"must be at least 1, got {args.k}")
        if args.radius < 0 or args.n_bits < 1:
            raise InputError("--radius/--n-bits", "need radius >= 0 and at least 1 bit")
    elif args.k is not None or args.source is not None:
        raise InputError("--k/--from", "only used with --method maxmin")
    return fractions


def _split(args, fractions, store: TrajectoryStore, other: TrajectoryStore | None):
    settings = {"fractions": list(fractions)}
    hold_out = getattr(args, "hold_out", None)
    if (args.extend is not None or hold_out is not None) and args.method != "random":
        raise InputError("--extend/--hold-out", "only with --method random")
    if hold_out is not None and args.extend is not None and \
            Path(args.extend).suffix.lower() == ".json":
        raise InputError("--hold-out", "cannot be combined with --extend OLD_SPLIT.json")
    if hold_out is not None:
        placed = {}
        if args.extend is not None:
            placed = dict.fromkeys(splits.read_inchikeys(args.extend), "train")
            settings["extends"] = {"inchikeys": str(args.extend), "part": "train",
                                   "n_keys": len(placed), "sha256": file_sha256(args.extend)}
        keys = splits.read_inchikeys(hold_out)
        clash = sorted(k for k in keys if placed.get(k) == "train")
        if clash:
            raise InputError(hold_out, f"{len(clash)} molecule(s) are also in --extend's "
                             f"train list, e.g. {clash[0]}")
        placed.update(dict.fromkeys(keys, "test"))
        parts = splits.place_and_split(store, placed, fractions, args.seed)
        settings["hold_out"] = {"inchikeys": str(hold_out), "part": "test", "n_keys": len(keys),
                                "sha256": file_sha256(hold_out)}
    elif args.extend is not None:
        if Path(args.extend).suffix.lower() == ".json":
            previous, meta = splits.load_split(args.extend)
            if "store" not in meta:
                raise InputError(args.extend, "records no store to match its molecules in")
            parts = splits.extend_split(store, previous, meta["store"], fractions, args.seed)
            settings["extends"] = {"split": str(args.extend), "store": meta["store"],
                                   "store_fingerprint": meta.get("store_fingerprint")}
        else:
            keys = splits.read_inchikeys(args.extend)
            parts = splits.place_and_split(store, dict.fromkeys(keys, "train"), fractions,
                                           args.seed)
            settings["extends"] = {"inchikeys": str(args.extend), "part": "train",
                                   "n_keys": len(keys),
                                   "sha256": file_sha256(args.extend)}
    else:
        parts = splits.split_store(store, args.method, fractions, args.seed)
    if args.method == "random":
        settings["seed"] = args.seed
    if other is not None:
        clean = splits.store_leakage_mask(store, other, first_block=args.first_block)
        removed = {}
        for name in args.exclude_parts:
            keep = clean[parts[name]]
            removed[name] = int((~keep).sum())
            parts[name] = parts[name][keep]
        settings["exclude"] = _exclusion_meta(other, removed, args.first_block)
    return parts, splits.split_meta(store, args.method, **settings)


def _select(args, store: TrajectoryStore, other: TrajectoryStore | None):
    candidates = _candidates(args.source, store)
    settings = {"k": args.k, "seed": args.seed, "radius": args.radius, "n_bits": args.n_bits,
                "from": args.source}
    if other is not None:
        keep = splits.store_leakage_mask(store, other, candidates, args.first_block)
        settings["exclude"] = _exclusion_meta(other, {"candidates": int((~keep).sum())},
                                              args.first_block)
        candidates = candidates[keep]
    if args.k > candidates.shape[0]:
        raise InputError("--k", f"{args.k:,} is more than the {candidates.shape[0]:,} "
                         f"candidate molecules of {args.source or store.path}")
    picks = splits.select_store(store, args.k, args.seed, candidates, args.radius, args.n_bits)
    return {"selected": picks}, splits.split_meta(store, "maxmin", **settings)


def _candidates(source: str | None, store: TrajectoryStore) -> np.ndarray:
    """Trajectory indices named by ``FILE[:PART]`` (all of the store when None)."""
    if source is None:
        return np.arange(store.n_trajectories, dtype=np.int64)
    return splits.read_part(source, store)


def _exclusion_meta(other: TrajectoryStore, removed: dict[str, int], first_block: bool) -> dict:
    return {"store": str(other.path), "store_fingerprint": other.fingerprint,
            "match": "inchikey-first-block or cid" if first_block else "inchikey or cid",
            "removed": removed}
