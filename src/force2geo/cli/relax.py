"""``force2geo relax INPUT -o OUTPUT [--model MODEL]``: batched MLIP geometry optimisation."""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

from force2geo.atomic import write_json
from force2geo.cli import common
from force2geo.errors import InputError

DESCRIPTION = """\
Relax molecules with a machine-learning potential (--model), many at once on one device:
BFGS (ASE semantics: maxstep 0.2 Å, initial Hessian 70 eV/Å^2), L-BFGS or FIRE, until the
largest atomic force is below --fmax (eV/Å) or --steps position updates. Converged
molecules leave the batch and waiting ones join, within --batch-atoms atoms.

INPUT: a .smi file ('SMILES [name]' per line; an RDKit ETKDG conformer is made) or
builtin:SET, an SDF file, a multi-frame extxyz file (one molecule per frame), or a
trajectory store (the --frame snapshot of each trajectory).

OUTPUT (.xyz/.extxyz or .sdf): the same molecules in the same order, each with the input
record's own keys plus converged, n_steps, fmax (eV/Å), energy (eV) and status
(converged, step_limit, or diverged: non-finite energy or forces, an atom more than 5 Å
from all others, or energy 10 eV above the start). OUTPUT.json records the run.
A molecule the model cannot treat is not relaxed: it keeps its input geometry with status
failed and a reason (an element the model was not trained on, a non-finite coordinate,
or two atoms closer than half the sum of their covalent radii); the others go on.

MODEL (default: the shipped model force2geo-painn-xtb): a shipped model's name, a
checkpoint of 'force2geo train' or its run folder (best.pt), an exported model, or the
paper's released PaiNN checkpoint. When it is an ensemble, each molecule also gets
energy_std (eV) and forces_std (eV/Å, largest over atoms): the members' spread at the
final geometry, an uncertainty flag.

A killed run resumes: rerun the same command and it goes on after the last molecule
written (from OUTPUT.partial and OUTPUT.partial.json).

Large sets: 'torchrun --nproc-per-node N -m force2geo.cli.main relax ...' gives each
process a contiguous share of INPUT on its own device (cuda:LOCAL_RANK, or the CPU),
written to OUTPUT's shard files (OUTPUT stem + .shard-RRR-of-NNN); rank 0 then joins them
into OUTPUT in input order. Rerun the same command with the same N to resume."""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "relax", help="relax molecules with a trained potential (batched BFGS/LBFGS/FIRE)",
        description=DESCRIPTION, formatter_class=common.HelpFormatter,
    )
    parser.add_argument("input", metavar="INPUT", help=".smi, builtin:SET, .sdf, .xyz or store")
    parser.add_argument("-o", "--output", metavar="OUTPUT", required=True,
                        help="relaxed molecules, .xyz/.extxyz or .sdf")
    parser.add_argument("--model", metavar="MODEL", default=None,
                        help="shipped model name or checkpoint; None: the shipped model")
    parser.add_argument("--fmax", type=float, default=0.05, help="convergence, eV/Å")
    parser.add_argument("--steps", type=int, default=500, help="position updates at most")
    parser.add_argument("--optimizer", choices=("bfgs", "lbfgs", "fire"), default="bfgs")
    parser.add_argument("--initial-hessian", choices=("identity", "lindh"), default="identity",
                        help="BFGS's start: ASE's 70 eV/Å^2 * I, or the Lindh model Hessian "
                        "of each start geometry (fewer steps)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--dtype", choices=("model", "float32", "float64"), default="model",
                        help="precision of the model evaluation (optimizer: float64)")
    parser.add_argument("--batch-atoms", type=int, default=4096,
                        help="atoms per batch at most (a larger molecule runs alone)")
    parser.add_argument("--trajectory", metavar="PATH", default=None,
                        help="also write every step of every molecule here (.xyz/.extxyz)")
    parser.add_argument("--seed", type=int, default=42, help="ETKDG seed for SMILES input")
    parser.add_argument("--frame", choices=("first", "last"), default="first",
                        help="snapshot of each stored trajectory to start from")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace OUTPUT and discard an interrupted run's partial files")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    common.add_threads_option(parser)
    parser.set_defaults(func=run)


def load_model(spec: str | None, device, dtype):
    """The potential ``spec`` names (see :func:`force2geo.pretrained.resolve_model`)."""
    from force2geo.pretrained import resolve_model

    return resolve_model(spec, device=device, dtype=dtype)


def _config(args):
    from force2geo.relax import RelaxConfig

    try:
        return RelaxConfig(optimizer=args.optimizer, fmax=args.fmax, max_steps=args.steps,
                           batch_atoms=args.batch_atoms, trajectory=args.trajectory is not None,
                           initial_hessian=args.initial_hessian)
    except ValueError as exc:
        raise InputError("command line", str(exc)) from None


def _identity(path: str) -> dict:
    """What identifies an input or model file: absolute path, size and modification time."""
    if path.startswith("builtin:"):
        return {"path": path}
    p = Path(path).resolve()
    if not p.exists():
        raise InputError(path, "no such file or folder")
    target = p / "manifest.json" if p.is_dir() else p
    stat = target.stat() if target.exists() else p.stat()
    return {"path": str(p), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def run(args) -> int:
    import torch

    from force2geo.pretrained import model_identity
    from force2geo.relax.shards import ShardFiles
    from force2geo.training.distributed import shutdown

    common.set_threads(args.threads)
    config = _config(args)
    info, device = common.distributed(args.device)
    try:
        if device.type == "cpu":
            from force2geo.models.cpu import keep_freed_memory

            keep_freed_memory()  # large message tensors reused, not page-faulted per step
        dtype = None if args.dtype == "model" else getattr(torch, args.dtype)
        signature = {"input": _identity(args.input), "model": model_identity(args.model),
                     "config": asdict(config), "seed": args.seed, "frame": args.frame,
                     "dtype": args.dtype, "trajectory": args.trajectory}
        shard = ShardFiles.of(args.output, args.trajectory, info.rank, info.world_size)
        started = time.perf_counter()
        record = _prepare_shard(args, shard, signature) if info.world_size > 1 else None
        if record is None:
            record = _relax_share(args, config, signature, shard, device, dtype)
            if info.world_size > 1:
                shard.finish(signature, record)
        if info.world_size > 1:
            if not info.is_main:
                return 0
            record = _merge(args, config, signature, shard, time.perf_counter() - started)
        record.pop("signature", None)
        record.pop("steps", None)
        write_json(f"{args.output}.json", record, indent=1)
        _summary(args.output, record)
        return 0
    finally:
        shutdown(info)


def _prepare_shard(args, shard, signature) -> dict | None:
    """Under torchrun: refuse an existing OUTPUT (as one process would); with --overwrite
    drop this rank's old shard. A shard an interrupted job finished is kept, its record
    rewritten to count nothing for this run, and returned. Then wait for every rank, so
    that rank 0 never takes a shard about to be redone for a finished one."""
    from force2geo.training.distributed import barrier

    if Path(args.output).exists() and not args.overwrite:
        raise InputError(args.output, "exists; pass --overwrite to replace it")
    finished = None if args.overwrite else shard.finished(signature)
    if args.overwrite:
        shard.remove()
    if finished is not None:
        finished.update(relaxed_this_run=0, status_counts={}, steps=[], wall_s=0.0,
                        force_evaluations=0, force_s=0.0, optimizer_s=0.0)
        shard.finish(signature, finished)
    barrier()
    return finished


def _relax_share(args, config, signature, shard, device, dtype) -> dict:
    """Relax this process's share of INPUT into its shard (OUTPUT itself in a world of
    one), resuming an interrupted run; return the run record (with the ``steps``)."""
    from tqdm import tqdm

    from force2geo.pretrained import uncertainty
    from force2geo.relax import RelaxStats, potential_force_fn, relax_iter
    from force2geo.relax.inputs import read_inputs
    from force2geo.relax.output import OrderedOutput
    from force2geo.relax.shards import share_range

    potential = load_model(args.model, device, dtype)
    started = time.perf_counter()
    stats, counts, steps = RelaxStats(), {}, []
    share = (shard.rank, shard.world_size)
    with OrderedOutput(shard.output, shard.signature(signature), shard.trajectory,
                       args.overwrite) as out:
        done = out.done  # molecules written by an interrupted run
        molecules = read_inputs(args.input, seed=args.seed, frame=args.frame, skip=done,
                                share=share)
        first, last = share_range(len(molecules), *share)
        out.index_offset = first  # trajectory frames carry the input index
        todo = molecules[first + done:last]
        where = "" if shard.world_size == 1 else f" [rank 0 of {shard.world_size}]"
        bar = tqdm(total=last - first, initial=done, unit="mol", desc="relax" + where,
                   disable=args.no_progress or shard.rank != 0)
        ok = _refuse_unfit(args.input, todo, potential, out, done, counts, bar)
        results = relax_iter(potential_force_fn(potential, dtype), [todo[k].start for k in ok],
                             config, device=device, stats=stats)
        for result in results:
            counts[result.status] = counts.get(result.status, 0) + 1
            steps.append(result.n_steps)
            k = ok[result.index]
            spread = uncertainty(potential, result.atomic_numbers, result.positions, device,
                                 dtype)  # {} unless an ensemble
            molecule = replace(todo[k], info={**todo[k].info, **spread})
            bar.update(out.add(done + k, molecule, result))
        bar.close()
    wall = time.perf_counter() - started
    record = _record(args, config, len(molecules), len(todo), counts, steps, wall, stats)
    record.update(model_files=signature["model"]["files"], share=[first, last], steps=steps)
    return record


def _refuse_unfit(input_spec, todo, potential, out, done, counts, bar) -> list[int]:
    """Write every molecule of ``todo`` (the share's molecules after its first ``done``)
    that the model cannot treat as failed, with its reason (also told on stderr); return
    the positions in ``todo`` of the others, to relax."""
    from tqdm import tqdm

    from force2geo.relax.screen import FAILED, failed_result, screen

    ok = []
    for k, molecule in enumerate(todo):
        reason = screen(*molecule.start, potential)
        if reason is None:
            ok.append(k)
            continue
        counts[FAILED] = counts.get(FAILED, 0) + 1
        record = out.index_offset + done + k + 1
        tqdm.write(f"{input_spec}: record {record}: failed: {reason}", file=sys.stderr)
        bar.update(out.add(done + k, molecule, failed_result(k, *molecule.start, reason)))
    return ok


def _merge(args, config, signature, shard, wall) -> dict:
    """Rank 0: wait for every shard, concatenate them into OUTPUT (input order), and
    return the run record of the whole job."""
    import logging

    from force2geo.relax import RelaxStats
    from force2geo.relax.shards import ShardFiles, merge_shards, wait_for_shards

    shards = [ShardFiles.of(args.output, args.trajectory, r, shard.world_size)
              for r in range(shard.world_size)]
    records = wait_for_shards(shards, signature, log=logging.getLogger(__name__).info)
    merge_shards(shards, args.output, args.trajectory)
    counts: dict[str, int] = {}
    for part in records:
        for status, n in part["status_counts"].items():
            counts[status] = counts.get(status, 0) + n
    stats = RelaxStats(evaluations=sum(p["force_evaluations"] for p in records),
                       force_s=sum(p["force_s"] for p in records),
                       optimizer_s=sum(p["optimizer_s"] for p in records))
    steps = [n for part in records for n in part["steps"]]
    record = _record(args, config, records[0]["molecules"],
                     sum(p["relaxed_this_run"] for p in records), counts, steps, wall, stats)
    record.update(model_files=signature["model"]["files"], world_size=shard.world_size,
                  shards=[{key: part[key] for key in ("share", "relaxed_this_run",
                                                      "status_counts", "wall_s")}
                          for part in records])
    return record


def _record(args, config, n_total, n_run, counts, steps, wall, stats) -> dict:
    import torch

    from force2geo import __version__
    from force2geo.units import UNITS

    return {
        "command": "force2geo relax", "input": os.fspath(args.input), "model": args.model,
        "output": args.output, "trajectory": args.trajectory, "config": asdict(config),
        "device": args.device, "dtype": args.dtype, "seed": args.seed, "frame": args.frame,
        "units": dict(UNITS), "versions": {"force2geo": __version__, "torch": torch.__version__,
                                           "python": platform.python_version()},
        "molecules": n_total, "relaxed_this_run": n_run, "status_counts": counts,
        "median_steps": statistics.median(steps) if steps else None,
        "wall_s": wall, "molecules_per_s": n_run / wall if wall > 0 else None,
        "force_evaluations": stats.evaluations, "force_s": stats.force_s,
        "optimizer_s": stats.optimizer_s,
    }


def _summary(output: str, record: dict) -> None:
    counts = record["status_counts"]
    parts = ", ".join(f"{counts.get(s, 0)} {s}"
                      for s in ("converged", "step_limit", "diverged", "failed"))
    resumed = record["molecules"] - record["relaxed_this_run"]
    print(f"{output}: {record['molecules']} molecules ({resumed} from an earlier run); "
          f"this run: {parts}; median {record['median_steps']} steps; "
          f"{record['wall_s']:.1f} s, {record['molecules_per_s'] or 0:.2f} molecules/s")
