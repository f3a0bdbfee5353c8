"""``force2geo train``: train an MLIP on the energies and forces of a trajectory store.

    force2geo train --data STORE --model painn --epochs N -o RUN_DIR [options]
    force2geo train -o RUN_DIR --resume [--epochs N] [--max-steps N] [--device D]
    torchrun --nproc-per-node 4 -m force2geo.cli.main train --data STORE -o RUN_DIR ...

Options left out take their values from ``--config FILE.json`` (a TrainConfig as JSON)
when given, else the defaults of :class:`force2geo.training.TrainConfig` (the paper's:
Adam, lr 1e-3, 64 molecules per batch, ReduceLROnPlateau with patience 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from force2geo.cli import common
from force2geo.errors import InputError

logger = logging.getLogger(__name__)

# The options --resume accepts: the ones that leave the optimisation path unchanged.
RESUME_OPTIONS = {"epochs": "--epochs", "max_steps": "--max-steps",
                  "max_minutes": "--max-minutes", "device": "--device",
                  "log_every": "--log-every", "ckpt_every": "--ckpt-every", "data": "--data",
                  "plots": "--no-plots"}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a potential (PaiNN, SchNet) on energies and forces of a store",
        description="Train an MLIP on the energy and force labels of a trajectory store "
        "(loss: lambda_E * L1 energy + lambda_F * mean squared per-atom force error). Writes "
        "config.json, metrics.jsonl/.csv, last.pt, best.pt and plots to RUN_DIR. Under "
        "torchrun it trains data-parallel (DDP; NCCL on GPUs, gloo on CPUs).",
        argument_default=argparse.SUPPRESS,
    )
    parser.add_argument("-o", "--output", dest="run_dir", required=True, metavar="RUN_DIR",
                        help="folder for checkpoints, metrics and plots")
    parser.add_argument("--data", metavar="STORE", help="trajectory store folder")
    parser.add_argument("--config", dest="config_file", metavar="FILE.json",
                        help="a TrainConfig as JSON; options given here override it")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR exactly from its last.pt")
    common.add_threads_option(parser)
    _add_model_options(parser)
    _add_data_options(parser)
    _add_optimisation_options(parser)
    parser.set_defaults(func=run)


def _add_model_options(parser) -> None:
    group = parser.add_argument_group("model")
    # Not argparse choices: listing MODELS would import torch for every `force2geo` call.
    group.add_argument("--model", help="backbone: painn (default), painn_foundation (the "
                       "architecture of the paper's released PaiNN), schnet, or mace when "
                       "force2geo[mace] is installed")
    group.add_argument("--model-option", dest="model_config", action="append",
                       metavar="KEY=VALUE",
                       help="a field of the backbone's config, e.g. hidden_channels=64 "
                       "(repeatable; defaults: the paper's PaiNN)")
    group.add_argument("--init", metavar="CKPT",
                       help="start from the weights and reference energies of this "
                       "checkpoint (warm start: fresh optimizer and schedule); the backbone "
                       "options must match it")
    group.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    group.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")


def _add_data_options(parser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--stages", nargs="+", metavar="STAGE",
                       help="train on snapshots of these stages only (default: all)")
    group.add_argument("--split", metavar="FILE",
                       help="split file of trajectory indices (force2geo split); default: "
                       "a random split by trajectory")
    group.add_argument("--split-fractions", nargs=3, type=float, metavar=("TRAIN", "VALID",
                       "TEST"), help="fractions of the random split (default 0.8 0.1 0.1)")
    group.add_argument("--split-seed", type=int, help="seed of the random split (default 42)")
    group.add_argument("--batch-size", type=int,
                       help="molecules per batch per process (default 64)")
    group.add_argument("--max-atoms", type=int, help="at most this many atoms per batch")


def _add_optimisation_options(parser) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, help="default 10")
    group.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    group.add_argument("--max-minutes", type=float,
                       help="stop after this many minutes of training (a checkpoint is kept)")
    group.add_argument("--lr", type=float, help="Adam learning rate (default 1e-3)")
    group.add_argument("--lambda-e", type=float, help="energy loss weight (default 1)")
    group.add_argument("--lambda-f", type=float, help="force loss weight (default 10)")
    group.add_argument("--energy-loss", choices=("per_atom", "total"),
                       help="L1 on energy per atom (eV/atom, default) or per molecule (eV)")
    group.add_argument("--plateau-patience", type=int,
                       help="epochs without improvement before the lr drops (default 2)")
    group.add_argument("--plateau-factor", type=float, help="lr factor on plateau (0.8)")
    group.add_argument("--schedule", choices=("plateau", "cosine"),
                       help="plateau (default): ReduceLROnPlateau per epoch; cosine: per "
                       "step from --lr to --lr * --lr-floor over --epochs (--max-steps and "
                       "--max-minutes only cut it short)")
    group.add_argument("--lr-floor", type=float, help="cosine's final lr factor (0.01)")
    group.add_argument("--warmup-steps", type=int, help="cosine's linear warm-up steps (0)")
    group.add_argument("--schedule-steps", type=int,
                       help="cosine's length in steps (default: --epochs epochs)")
    group.add_argument("--ema-decay", type=float, help="keep an EMA of the weights")
    group.add_argument("--grad-clip", type=float,
                       help="max gradient norm (default 10; 0 turns clipping off)")
    group.add_argument("--seed", type=int, help="model initialisation and shuffling seed")
    group.add_argument("--log-every", type=int, help="steps between train records (10)")
    group.add_argument("--ckpt-every", type=int, help="steps between last.pt saves (500)")
    group.add_argument("--no-plots", dest="plots", action="store_false",
                       help="skip the PNG plots at the end")


def run(args) -> int:
    from force2geo.training import TrainConfig, fit

    common.set_threads(args.threads)
    options = _options(args)
    resume = getattr(args, "resume", False)
    try:
        if resume:
            config = _resume_config(args, options)
        else:
            config = TrainConfig.from_dict({**_base(args), **options})
    except InputError:
        raise
    except (TypeError, ValueError) as exc:  # an impossible value, caught by TrainConfig
        raise InputError(getattr(args, "config_file", None) or "options", str(exc)) from None
    import torch

    if config.device == "cpu" or (config.device == "auto" and not torch.cuda.is_available()):
        from force2geo.models.cpu import keep_freed_memory

        keep_freed_memory()  # large message tensors reused, not page-faulted per step
    summary = fit(config, resume=resume)
    _report(summary)
    return 0


def _resume_config(args, options: dict):
    """The saved config of RUN_DIR with the few options a resume may change."""
    from force2geo.training import resume_config

    extra = sorted(set(options) - set(RESUME_OPTIONS) - {"run_dir"})
    if extra or hasattr(args, "config_file"):
        given = [f"--{name.replace('_', '-')}" for name in extra] or ["--config"]
        raise InputError("--resume", "continues with the run's saved config; only "
                         f"{', '.join(RESUME_OPTIONS.values())} may be given (got "
                         f"{', '.join(given)})")
    return resume_config(options.pop("run_dir"), **options)


def _base(args) -> dict:
    """The config file's values, or nothing; ``data`` is required in the end."""
    base = {}
    if hasattr(args, "config_file"):
        try:
            with open(args.config_file) as handle:
                base = json.load(handle)
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(args.config_file, f"not a readable JSON config ({exc})") from None
        if not isinstance(base, dict):
            raise InputError(args.config_file, "must hold a JSON object of training options")
    if "data" not in base and not hasattr(args, "data"):
        raise InputError("--data", "required (the trajectory store to train on)")
    return base


def _options(args) -> dict:
    """The options given on the command line, under their TrainConfig names."""
    skip = {"func", "command", "verbose", "config_file", "resume", "threads"}
    options = {k: v for k, v in vars(args).items() if k not in skip}
    if "model_config" in options:
        options["model_config"] = dict(_key_value(item) for item in options["model_config"])
    if "grad_clip" in options and options["grad_clip"] == 0:
        options["grad_clip"] = None
    if "stages" in options:
        options["stages"] = tuple(options["stages"])
    return options


def _key_value(item: str) -> tuple[str, object]:
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise InputError("--model-option", f"expected KEY=VALUE, got {item!r}")
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text
    return key.strip(), value


def _report(summary: dict) -> None:
    if int(os.environ.get("RANK", "0")) != 0:
        return
    line = f"trained {summary['step']} steps ({summary['epoch']} epochs)"
    metrics = summary.get("metrics")
    if metrics:
        line += (f"; valid energy MAE {metrics['energy_mae']:.2f} meV/atom, force RMSE "
                 f"{metrics['force_rmse']:.1f} meV/Å, force MAE {metrics['force_mae']:.1f} "
                 f"meV/Å, cos {metrics['force_cos']:.3f}")
    print(f"{line} -> {summary['run_dir']}")
