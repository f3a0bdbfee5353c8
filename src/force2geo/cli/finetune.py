"""``force2geo finetune``: train a property predictor on a property dataset.

    force2geo finetune DATASET -o RUN_DIR [--model painn|schnet|gin] [--init CKPT]
                       [--freeze-backbone] [--train-geometry G] [--eval-geometry G]
                       [--geometry-finetune [--noise-std 0.1] [--geo-weight 0.1]]
                       [--split FILE | --split-method random|scaffold [--exclude STORE]]
                       [--train-fraction F] [--epochs N] [--lr 5e-4] [--batch-size 256] ...
    force2geo finetune -o RUN_DIR --resume DATASET [--split FILE ...] [--epochs N]
    force2geo finetune DATASET|STORE -o RUN_DIR --denoise-pretrain [--noise-std 0.04] ...

The three routes of the paper: training from scratch (the baselines), Force2Prop (``--init``
an MLIP checkpoint, optionally ``--freeze-backbone``) and geometry fine-tuning
(``--geometry-finetune --init`` a property checkpoint trained on ground-truth geometries,
evaluated on ``--eval-geometry mlip`` by default). ``--denoise-pretrain`` instead pre-trains
a backbone by coordinate denoising (Zaidi et al.) on the ground-truth geometries of the
split's training part, or on the last frame of every trajectory of a store; its
``best.pt`` then serves as ``--init``.

Without ``--split`` the split is made here (``--split-method``, default random 0.8/0.1/0.1,
seed 42) and written to ``RUN_DIR/split.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from force2geo.cli import common
from force2geo.errors import InputError

GEOMETRY_CHOICES = ("ground_truth", "rdkit", "early", "mlip")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune", help="train or fine-tune a property predictor (Force2Prop, geometry "
        "fine-tuning, baselines, denoising pre-training)",
        description=__doc__.split("\n\n", 2)[2].replace("``", ""),
        formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("data", metavar="DATASET", help="property dataset folder ('force2geo "
                        "dataset build'); with --denoise-pretrain also a trajectory store")
    parser.add_argument("-o", "--output", dest="run_dir", required=True, metavar="RUN_DIR")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in RUN_DIR exactly from its last.pt")
    parser.add_argument("--denoise-pretrain", action="store_true",
                        help="coordinate-denoising pre-training instead of property training")
    _model_options(parser)
    _data_options(parser)
    _optimisation_options(parser)
    parser.set_defaults(func=run)


def _model_options(parser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", default="painn", help="painn (default), schnet or gin")
    group.add_argument("--model-option", action="append", default=[], metavar="KEY=VALUE",
                       help="a field of the backbone's config, e.g. hidden_channels=64")
    group.add_argument("--readout", choices=("mean", "sum"), default="mean",
                       help="pool atoms by mean (default) or sum")
    group.add_argument("--init", metavar="CKPT", help="start from an MLIP checkpoint "
                       "(Force2Prop), a denoising or a property checkpoint")
    group.add_argument("--freeze-backbone", action="store_true", help="train the heads only")
    group.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    group.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")


def _data_options(parser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--target", default="gap", help="target name (default gap, eV)")
    group.add_argument("--train-geometry", choices=GEOMETRY_CHOICES, default="ground_truth")
    group.add_argument("--eval-geometry", choices=GEOMETRY_CHOICES,
                       help="default ground_truth; mlip with --geometry-finetune")
    group.add_argument("--split", metavar="FILE", help="split file of dataset indices")
    group.add_argument("--split-method", choices=("random", "scaffold"), default="random")
    group.add_argument("--split-fractions", nargs=3, type=float, default=[0.8, 0.1, 0.1],
                       metavar=("TRAIN", "VALID", "TEST"))
    group.add_argument("--split-seed", type=int, default=42)
    group.add_argument("--exclude", metavar="STORE", help="drop valid/test molecules found "
                       "in this store (the MLIP's pretraining data)")
    group.add_argument("--train-fraction", type=float, default=1.0,
                       help="train on a seeded fraction of the training part")
    group.add_argument("--geometry-finetune", action="store_true",
                       help="mixed inputs (noisy ground truth / MLIP trajectory frames) with "
                       "the displacement-alignment loss (paper §2.4)")
    group.add_argument("--noise-std", type=float,
                       help="Å; default 0.1 (geometry fine-tuning) or 0.04 (denoising)")
    group.add_argument("--p-ground-truth", type=float, default=0.5,
                       help="share of noisy ground-truth inputs (default 0.5)")
    group.add_argument("--geo-weight", type=float, default=0.1,
                       help="weight of the alignment loss (default 0.1)")


def _optimisation_options(parser) -> None:
    group = parser.add_argument_group("optimisation")
    group.add_argument("--epochs", type=int, help="default 100 (denoising: 10)")
    group.add_argument("--lr", type=float, default=5e-4)
    group.add_argument("--batch-size", type=int, help="default 256 (denoising: 64)")
    group.add_argument("--lr-step", type=int, default=40, help="StepLR step in epochs")
    group.add_argument("--lr-gamma", type=float, default=0.5, help="StepLR factor")
    group.add_argument("--max-minutes", type=float, help="stop after this wall-clock budget")
    group.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    group.add_argument("--seed", type=int, default=0)
    group.add_argument("--ckpt-every", type=int, help="also save last.pt every N steps")
    group.add_argument("--no-progress", dest="progress", action="store_false")
    common.add_threads_option(group)


def run(args) -> int:
    common.set_threads(args.threads)
    run_dir = Path(args.run_dir)
    if args.denoise_pretrain:
        return _denoise(args, run_dir)
    from force2geo.finetune.config import PropertyTrainConfig
    from force2geo.finetune.train import fit_property

    dataset = _load_dataset(args.data)
    config = _config(PropertyTrainConfig, _property_options(args))
    split = _split(args, dataset, run_dir)
    result = fit_property(config, dataset, split, run_dir, resume=args.resume)
    print(f"best epoch {result['best_epoch']}: valid MAE {_ev(result['valid_mae'])}, test MAE "
          f"{_ev(result['test_mae'])} ({result['target']}, {result['eval_geometry']} "
          f"geometries, {result['n_train']} training molecules) -> {run_dir}")
    return 0


def _property_options(args) -> dict:
    eval_geometry = args.eval_geometry or ("mlip" if args.geometry_finetune else "ground_truth")
    options = {
        "model": args.model, "model_config": _model_config(args.model_option),
        "readout": args.readout, "init": args.init, "freeze_backbone": args.freeze_backbone,
        "target": args.target, "train_geometry": args.train_geometry,
        "eval_geometry": eval_geometry, "train_fraction": args.train_fraction,
        "geometry_finetune": args.geometry_finetune, "p_ground_truth": args.p_ground_truth,
        "geo_weight": args.geo_weight, "lr": args.lr, "lr_step": args.lr_step,
        "lr_gamma": args.lr_gamma, "max_minutes": args.max_minutes,
        "max_steps": args.max_steps, "seed": args.seed, "device": args.device,
        "dtype": args.dtype, "ckpt_every": args.ckpt_every, "progress": args.progress,
    }
    for name in ("noise_std", "epochs", "batch_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    return options


def _denoise(args, run_dir: Path) -> int:
    from force2geo.finetune.denoise import DenoiseConfig, pretrain_denoising

    options = {"model": args.model, "model_config": _model_config(args.model_option),
               "lr": args.lr, "max_minutes": args.max_minutes, "max_steps": args.max_steps,
               "seed": args.seed, "device": args.device, "dtype": args.dtype,
               "ckpt_every": args.ckpt_every, "progress": args.progress}
    for name in ("noise_std", "epochs", "batch_size"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    config = _config(DenoiseConfig, options)
    if (Path(args.data) / "manifest.json").is_file():  # a trajectory store: every trajectory
        from force2geo.data.store import TrajectoryStore

        data, indices = TrajectoryStore(args.data), None
    else:
        data = _load_dataset(args.data)
        indices = _split(args, data, run_dir)["train"]
    result = pretrain_denoising(config, data, run_dir, indices, resume=args.resume)
    print(f"denoising: epoch loss {result['first_epoch_loss']:.4g} -> "
          f"{result['last_epoch_loss']:.4g} over {result['epochs']} epochs -> {run_dir}")
    return 0


def _config(cls, options: dict):
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise InputError("options", str(exc)) from None


def _load_dataset(path: str):
    from force2geo.finetune.dataset import PropertyDataset

    return PropertyDataset.load(path)


def _split(args, dataset, run_dir: Path) -> dict:
    """The split file's parts, or a split made here (saved as RUN_DIR/split.json; on
    --resume the saved one is reused)."""
    import numpy as np

    from force2geo.data.splits import load_split, save_split
    from force2geo.finetune.splits import split_dataset, split_meta

    saved = run_dir / "split.json"
    path = Path(args.split) if args.split else (saved if args.resume else None)
    if path is not None:
        parts, meta = load_split(path)
        expected = meta.get("dataset_fingerprint")
        if expected is not None and expected != dataset.fingerprint:
            raise InputError(path, f"was made for a dataset with fingerprint {expected}, "
                             f"but {args.data} has {dataset.fingerprint}")
        return parts
    settings = {"fractions": list(args.split_fractions), "seed": args.split_seed}
    try:
        split = split_dataset(dataset, args.split_method, args.split_fractions,
                              args.split_seed, pretraining=args.exclude)
    except ValueError as exc:
        raise InputError("--split-fractions", str(exc)) from None
    if saved.exists():  # never overwrite the split of another run
        previous, _ = load_split(saved)
        if previous.keys() != split.keys() or any(
                not np.array_equal(previous[k], split[k]) for k in split):
            raise InputError(saved, "holds a different split (another run?); choose another "
                             "output folder, or pass --split FILE")
        return split
    run_dir.mkdir(parents=True, exist_ok=True)
    save_split(saved, split, split_meta(dataset, args.split_method, **settings,
                                        exclude=args.exclude))
    return split


def _model_config(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise InputError("--model-option", f"expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            out[key.strip()] = text
    return out


def _ev(value) -> str:
    return "n/a" if value is None else f"{value:.4f} eV"
