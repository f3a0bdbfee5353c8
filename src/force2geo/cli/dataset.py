"""``force2geo dataset``: property datasets (geometries + targets) for fine-tuning.

    force2geo dataset build STORE -o DATASET [--target gap] [--limit N] [--seed 42]
                            [--relax-with MODEL [--start early|rdkit] [--fmax ...]]
    force2geo dataset relax DATASET --model MODEL [--start early|rdkit] [--fmax ...]
    force2geo dataset info DATASET [--json] [--verify]
"""

from __future__ import annotations

import json

from force2geo.cli import common
from force2geo.errors import InputError

BUILD = """\
Make a property dataset from a trajectory store ('force2geo generate' output, or a store
converted from QM9, Molecule3D, nabla2DFT or PubChemQCR). Per molecule: the ground-truth
geometry (the last stored frame), an early-stage geometry (the first frame of the final
relaxation stage, where the store has several stages), an RDKit conformer (the store's
etkdg frame, else an ETKDG conformer matched to the ground truth's atom order), every
stored property as a target (eV), and with --relax-with the MLIP-relaxed geometry and its
trajectory. Molecules without a finite --target are left out; meta.json in DATASET
records what was left out and why."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "dataset", help="build and inspect property datasets for fine-tuning",
        description="Property datasets: per molecule alternative geometries (ground truth, "
        "RDKit, early-stage, MLIP-relaxed) and targets in eV.")
    commands = parser.add_subparsers(dest="dataset_command", metavar="SUBCOMMAND",
                                     required=True)
    build = commands.add_parser("build", help="make a dataset from a trajectory store",
                                description=BUILD)
    build.add_argument("store", metavar="STORE", help="trajectory store folder")
    build.add_argument("-o", "--output", metavar="DATASET", required=True,
                       help="dataset folder to write")
    build.add_argument("--target", default="gap",
                       help="property every molecule must have (eV), e.g. gap, xtb_gap")
    build.add_argument("--limit", type=int, default=None, metavar="N",
                       help="only the first N trajectories of the store")
    build.add_argument("--seed", type=int, default=42, help="ETKDG seed of RDKit conformers")
    build.add_argument("--no-rdkit", action="store_true",
                       help="make no RDKit conformers where the store has no etkdg frame")
    build.add_argument("--relax-with", metavar="MODEL", default=None,
                       help="also relax every molecule with this MLIP: " + MODEL_HELP)
    build.add_argument("--overwrite", action="store_true", help="replace DATASET")
    _relax_options(build)
    build.set_defaults(func=run_build)

    relax = commands.add_parser(
        "relax", help="relax a dataset's molecules with an MLIP (fills the mlip geometry)",
        description="Relax molecules of DATASET from their --start geometry with a trained "
        "potential (batched BFGS, as 'force2geo relax') and store the relaxed geometry, the "
        "trajectory and the status; DATASET is rewritten atomically.")
    relax.add_argument("dataset", metavar="DATASET", help="dataset folder")
    relax.add_argument("--model", metavar="MODEL", required=True, help="the MLIP: " + MODEL_HELP)
    relax.add_argument("--only", action="append", metavar="FILE:PART",
                       help="relax only the molecules of this part of a split file of the "
                       "dataset's store (trajectory indices; repeatable)")
    relax.add_argument("--sample", type=int, metavar="N",
                       help="at most N molecules of each --only part, a seeded random sample")
    relax.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    _relax_options(relax)
    relax.set_defaults(func=run_relax)

    info = commands.add_parser("info", help="summarise a dataset")
    info.add_argument("dataset", metavar="DATASET", help="dataset folder")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.add_argument("--verify", action="store_true",
                      help="also check every file's SHA-256 and the data's fingerprint")
    info.set_defaults(func=run_info)


def _relax_options(parser) -> None:
    group = parser.add_argument_group("MLIP relaxation")
    group.add_argument("--start", choices=("early", "rdkit"), default="early",
                       help="geometry the relaxation starts from")
    group.add_argument("--fmax", type=float, default=0.05, help="convergence, eV/Å")
    group.add_argument("--steps", type=int, default=500, help="position updates at most")
    group.add_argument("--optimizer", choices=("bfgs", "lbfgs", "fire"), default="bfgs")
    group.add_argument("--batch-atoms", type=int, default=4096, help="atoms per batch at most")
    group.add_argument("--keep-frames", type=int, default=None, metavar="K",
                       help="keep at most K frames of each trajectory (default all)")
    group.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    group.add_argument("--no-progress", action="store_true", help="hide progress bars")
    common.add_threads_option(group)


def _chosen(dataset, args) -> list[int] | None:
    """Dataset indices of the --only parts (each sampled down to --sample), or None."""
    import numpy as np

    from force2geo.finetune.splits import split_file_part

    if not getattr(args, "only", None):
        return None
    rng = np.random.default_rng(args.seed)
    chosen: set[int] = set()
    for spec in args.only:
        picked = split_file_part(spec, dataset, store_only=True).tolist()
        if args.sample is not None and len(picked) > args.sample:
            picked = rng.choice(picked, args.sample, replace=False).tolist()
        chosen.update(int(i) for i in picked)
    return sorted(chosen)


MODEL_HELP = ("a shipped model's name (e.g. force2geo-painn-xtb), a checkpoint of 'force2geo "
              "train' or its run folder, or an exported model file")


def _relax(dataset, model: str, args) -> dict:
    from force2geo.finetune.relaxation import relax_geometries
    from force2geo.pretrained import model_identity, resolve_model
    from force2geo.relax import RelaxConfig

    try:
        config = RelaxConfig(optimizer=args.optimizer, fmax=args.fmax, max_steps=args.steps,
                             batch_atoms=args.batch_atoms, trajectory=True)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None
    device = common.device(args.device)
    potential = resolve_model(model, device=device)
    return relax_geometries(dataset, potential, args.start, config, indices=_chosen(dataset, args),
                            progress=not args.no_progress, device=device,
                            keep_frames=args.keep_frames, model=model_identity(model))


def run_build(args) -> int:
    from force2geo.finetune.build import from_store

    common.set_threads(args.threads)
    dataset = from_store(args.store, args.target, limit=args.limit, rdkit=not args.no_rdkit,
                         seed=args.seed, progress=not args.no_progress)
    if args.relax_with:
        _relax(dataset, args.relax_with, args)
    dataset.save(args.output, overwrite=args.overwrite)
    build = dataset.meta["build"]
    print(f"{args.output}: {len(dataset)} molecules ({build['requested'] - build['kept']} "
          f"without {args.target} left out; {build['rdkit_failures']} without an RDKit "
          f"conformer)")
    print(format_summary(dataset.summary()))
    return 0


def run_relax(args) -> int:
    from force2geo.finetune.dataset import PropertyDataset

    common.set_threads(args.threads)
    dataset = PropertyDataset.load(args.dataset, mmap=False)
    record = _relax(dataset, args.model, args)
    dataset.save(args.dataset, overwrite=True)
    print(f"{args.dataset}: relaxed {record['relaxed']} molecules from {args.start} "
          f"({record['status_counts']}), {len(record['skipped_no_start'])} without a start "
          f"geometry, median {record['median_steps']} steps")
    return 0


def format_summary(summary: dict) -> str:
    lines = [f"molecules    {summary['molecules']:,}"]
    if summary["atoms_per_molecule"]:
        a = summary["atoms_per_molecule"]
        lines.append(f"atoms/mol    min {a['min']}  mean {a['mean']:.1f}  max {a['max']}")
    lines.append("geometries   " + "  ".join(f"{g}:{n}" for g, n in
                                             summary["geometries"].items()))
    for name, stats in summary["targets"].items():
        if stats["n"]:
            lines.append(f"  {name:<10} n {stats['n']}  mean {stats['mean']:.4f}  std "
                         f"{stats['std']:.4f}  [{stats['min']:.4f}, {stats['max']:.4f}] eV")
        else:
            lines.append(f"  {name:<10} n 0")
    if summary["relaxed"]:
        lines.append("relaxed      " + "  ".join(f"{s}:{n}" for s, n in
                                                 summary["relaxed"].items())
                     + f"  ({summary['trajectory_frames']:,} frames kept)")
    source = summary.get("source") or {}
    if source:
        lines.append(f"source       {source.get('store')} (fingerprint "
                     f"{source.get('store_fingerprint')})")
    lines.append(f"fingerprint  {summary['fingerprint']}")
    return "\n".join(lines)


def run_info(args) -> int:
    from force2geo.finetune.dataset import PropertyDataset

    dataset = PropertyDataset.load(args.dataset)
    if args.verify:
        dataset.verify()
    summary = dataset.summary()
    print(json.dumps(summary, indent=1) if args.json else format_summary(summary))
    if args.verify and not args.json:
        print("verified     all files match their checksums")
    return 0
