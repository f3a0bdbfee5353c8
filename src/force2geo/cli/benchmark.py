"""``force2geo benchmark``: comparisons run on your own data.

    force2geo benchmark models --data STORE -o OUT_DIR [--models painn schnet mace]
        (--steps N | --minutes M) [--model-option NAME.KEY=VALUE ...] [--seed 42]

``models`` trains every backbone with the same budget on the same split and batches and
writes a Table-2-style comparison (OUT_DIR/table.md, printed, and OUT_DIR/table.json).
Each benchmark is one sub-command here, with its own ``add_<name>_parser``.
"""

from __future__ import annotations

import argparse
import json

from force2geo.errors import InputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "benchmark", help="compare models on your data (benchmark models)",
        description="Benchmarks run on your own data. Choose one below.")
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK")
    add_models_parser(benchmarks)
    parser.set_defaults(func=lambda args: _help(parser))


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def add_models_parser(benchmarks) -> None:
    parser = benchmarks.add_parser(
        "models", help="train each backbone with the same budget and tabulate its accuracy",
        description="Train each backbone with one budget (optimizer steps or minutes) and "
        "otherwise identical options (store, split, seed, batches, loss), evaluate the best "
        "checkpoint of each on the validation split, and write a table like the paper's "
        "Table 2 (energy MAE meV/atom, force RMSE/MAE meV/Å, force cosine, parameters, "
        "steps, time, inference ms per molecule) to OUT_DIR/table.md and table.json.")
    parser.add_argument("--data", required=True, metavar="STORE", help="trajectory store")
    parser.add_argument("-o", "--output", dest="out_dir", required=True, metavar="OUT_DIR",
                        help="folder for the runs (OUT_DIR/<model>) and the table")
    parser.add_argument("--models", nargs="+", metavar="MODEL",
                        help="backbones to compare (default: every installed one: painn, "
                        "schnet, and mace with force2geo[mace])")
    budget = parser.add_mutually_exclusive_group(required=True)
    budget.add_argument("--steps", type=int, help="optimizer steps per model")
    budget.add_argument("--minutes", type=float, help="wall-clock minutes of training per model")
    parser.add_argument("--model-option", dest="model_options", action="append", default=[],
                        metavar="NAME.KEY=VALUE",
                        help="a field of one model's config, e.g. painn.hidden_channels=64 "
                        "(repeatable; values are JSON where they parse as JSON)")
    parser.add_argument("--seed", type=int, default=42,
                        help="model initialisation and batch order seed (default 42)")
    shared = parser.add_argument_group("training options shared by every model")
    shared.add_argument("--batch-size", type=int, help="molecules per batch (default 64)")
    shared.add_argument("--max-atoms", type=int, help="at most this many atoms per batch")
    shared.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    shared.add_argument("--stages", nargs="+", metavar="STAGE",
                        help="train and validate on these stages only (default: all)")
    shared.add_argument("--split", metavar="FILE",
                        help="split file (force2geo split); default: a random split, seed 42")
    shared.add_argument("--split-fractions", nargs=3, type=float,
                        metavar=("TRAIN", "VALID", "TEST"),
                        help="fractions of the random split (default 0.8 0.1 0.1)")
    shared.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    shared.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    shared.add_argument("--plots", action="store_true", help="learning-curve and parity "
                        "plots in each run folder")
    parser.set_defaults(func=run_models)


def run_models(args) -> int:
    import torch

    from force2geo.training.benchmark import BenchmarkConfig, benchmark_models, markdown_table

    try:
        config = BenchmarkConfig(**_benchmark_options(args))
    except (TypeError, ValueError) as exc:  # an impossible value, caught by the configs
        raise InputError("options", str(exc)) from None
    device = config.train_options.get("device", "auto")
    if device == "cpu" or (device == "auto" and not torch.cuda.is_available()):
        from force2geo.models.cpu import keep_freed_memory

        keep_freed_memory()  # as `force2geo train` does on CPU
    table = benchmark_models(config)
    print(markdown_table(table), end="")
    print(f"-> {config.out_dir}/table.md, {config.out_dir}/table.json")
    return 0


def _benchmark_options(args) -> dict:
    """BenchmarkConfig fields from the parsed arguments."""
    options = {"data": args.data, "out_dir": args.out_dir, "steps": args.steps,
               "minutes": args.minutes, "seed": args.seed,
               "model_options": _model_options(args.model_options)}
    if args.models is not None:
        options["models"] = tuple(args.models)
    shared = {name: getattr(args, name) for name in
              ("batch_size", "max_atoms", "lr", "split", "dtype", "device")
              if getattr(args, name) is not None}
    for name in ("stages", "split_fractions"):
        if getattr(args, name) is not None:
            shared[name] = tuple(getattr(args, name))
    if args.plots:
        shared["plots"] = True
    options["train_options"] = shared
    return options


def _model_options(items: list[str]) -> dict[str, dict]:
    """``["painn.hidden_channels=64", ...]`` -> ``{"painn": {"hidden_channels": 64}}``."""
    options: dict[str, dict] = {}
    for item in items:
        target, sep, text = item.partition("=")
        name, dot, key = target.partition(".")
        if not sep or not dot or not name.strip() or not key.strip():
            raise InputError("--model-option", f"expected NAME.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options.setdefault(name.strip(), {})[key.strip()] = value
    return options
