"""``force2geo active-learn``: relax with the model, label what it got wrong, fine-tune, repeat."""

from __future__ import annotations

import argparse
import json

from force2geo.errors import InputError

DESCRIPTION = """\
Active learning of a potential against its oracle (the GOLF loop). Each round draws
--molecules fresh molecules of the pool, relaxes each from every --start with the current
model (batched BFGS, every step kept), sends conformations to the oracle (force2geo label),
and fine-tunes the model (force2geo train --init, cosine schedule, EMA) on all labels so far
plus a replay sample of the base data (--replay molecules of --base). The next round starts
from the fine-tuned model; after the last round the final model relaxes one more fresh draw.

What is labelled (--select):
  last    the end of each relaxation (default): where a wrong minimum stops the walk
  random  one uniformly drawn step of each relaxation (the baseline it is measured against)
The ends are labelled in either case: their oracle energies score each round with the
paper's metrics (pct_T, pct_success, pct_div, pct_FWT) against the pool's own oracle minima
(the last frame of --oracle-stage), so each round's record shows how the model it started
from relaxes fresh molecules.

OUT/active_learn.json records the config, and per round the oracle calls, the metrics and
the model files; rerun the same command after a kill and it goes on where it stopped.
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "active-learn", help="improve a potential by active learning against its oracle",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True,
                        help="checkpoint of force2geo train (or its run folder) to start from")
    parser.add_argument("--pool", required=True, metavar="STORE",
                        help="store of the molecules to relax (starts and oracle minima)")
    parser.add_argument("--pool-part", metavar="SPLIT.json:PART",
                        help="draw only from this split part of the pool")
    parser.add_argument("--base", required=True, metavar="STORE",
                        help="the model's training store (replayed while fine-tuning)")
    parser.add_argument("--base-part", metavar="SPLIT.json:PART",
                        help="replay only this split part of the base (e.g. its train part)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT", help="run folder")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--molecules", type=int, default=100, help="molecules per round")
    parser.add_argument("--start", action="append", dest="starts", metavar="STAGE:first|last",
                        help="start frames (repeatable; default xtb:first and etkdg:first)")
    parser.add_argument("--select", choices=("last", "random"), default="last")
    parser.add_argument("--oracle", choices=("xtb", "dft"), default="xtb")
    parser.add_argument("--oracle-stage", default="xtb",
                        help="pool stage whose last frame is the oracle's minimum")
    parser.add_argument("--replay", type=int, default=2000, help="base molecules replayed")
    parser.add_argument("--replay-every", type=int, default=2,
                        help="keep every k-th frame of a replayed path (and its last)")
    parser.add_argument("--train-stages", nargs="+", default=["xtb"],
                        help="base stages to replay")
    parser.add_argument("--train-steps", type=int, default=300, help="fine-tuning steps per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--lambda-e", type=float, default=1.0)
    parser.add_argument("--lambda-f", type=float, default=10.0)
    parser.add_argument("--fmax", type=float, default=0.05, help="relaxation fmax, eV/Å")
    parser.add_argument("--relax-steps", type=int, default=300)
    parser.add_argument("--max-label-force", type=float, default=20.0,
                        help="labels with a larger oracle force (eV/Å) stay out of training")
    parser.add_argument("--workers", type=int, default=0, help="oracle processes (0: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.set_defaults(func=run)


def run(args) -> int:
    import torch

    from force2geo.active import ActiveConfig, active_learn

    if args.threads:
        torch.set_num_threads(args.threads)
    options = {k: v for k, v in vars(args).items()
               if k not in ("func", "command", "verbose", "starts")}
    options["train_stages"] = tuple(options["train_stages"])
    if args.starts:
        options["starts"] = tuple(args.starts)
    try:
        config = ActiveConfig(**options)
    except ValueError as exc:
        raise InputError("active-learn", str(exc)) from None
    record = active_learn(config)
    rows = [(f"round {r['round']}", r["metrics_before"]["all"], r["oracle_calls"])
            for r in record["rounds"]]
    rows.append(("final", record["final"]["metrics"]["all"], record["final"]["oracle_calls"]))
    for name, metrics, calls in rows:
        shown = {k: round(metrics[k], 1) for k in ("pct_T", "pct_success", "pct_div", "pct_FWT")
                 if metrics.get(k) is not None}
        print(f"{name:9s} {json.dumps(shown)}  oracle calls {json.dumps(calls)}")
    print(f"record: {config.output}/active_learn.json")
    return 0
