"""Active learning of a potential against its oracle (the GOLF loop of Tsypin et al. 2024).

Each round, composed of the library's own pieces (no new relaxation or training loop):

1. **relax** a fresh draw of pool molecules with the current model (the batched engine,
   one relaxation per start: by default the start of the stored xTB path, near the ETKDG
   conformer, and the raw ETKDG conformer), keeping every step;
2. **label** with the oracle (:func:`force2geo.qc.label.label`) every end point: these
   single points score the round (pct_T, pct_success, pct_div, pct_FWT against the pool
   store's own oracle minimum) and, with ``select="last"``, are the new training data;
   ``select="random"`` instead labels one uniformly drawn step of each path (the
   comparison the criterion is measured against);
3. **fine-tune** with :func:`force2geo.training.fit` from the current model
   (``TrainConfig.init``, the path of ``force2geo train --init``) on every label so far
   plus a fixed replay sample of the base data, so that the model does not forget the
   paths it learnt from.

Criterion ``last``: the end point of a model's relaxation is where its errors hurt (a false
minimum stops the walk there) and where it is least likely to have seen data; GOLF adds
such frames (and those where a cheap surrogate's energy rises) to its training set.

Layout of OUT (every step resumes: rerun the same command after a kill)::

    active_learn.json          config, and per round: draw, oracle calls, metrics, model
    replay/                    the replay store (made once)
    round-NN/endpoints.extxyz, selected.extxyz   geometries sent to the oracle
    round-NN/labels/           their labels (a store, stage <oracle>-label)
    round-NN/train/            round store: replay + labels of rounds 1..NN
    round-NN/run/              the fine-tuning run (best.pt is the next round's model)
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from force2geo import atomic
from force2geo.data.splits import read_part
from force2geo.data.store import TrajectoryStore, TrajectoryWriter
from force2geo.data.trajectory import Trajectory
from force2geo.errors import InputError
from force2geo.qc.protocol import fmax_of

log = logging.getLogger(__name__)

RECORD = "active_learn.json"
SELECTIONS = ("last", "random")
FIRST_LAST = ("first", "last")


@dataclass(frozen=True)
class ActiveConfig:
    """One active-learning run.

    ``model``: a checkpoint of ``force2geo train`` (or its run folder); ``pool``: a store
    whose trajectories give the starts and, as the last frame of their ``oracle_stage``,
    the oracle's own minimum; ``pool_part``: ``SPLIT.json:PART`` of it to draw from (all
    when None); ``base``/``base_part``: the data the model was trained on, ``replay``
    molecules of which (every ``replay_every``-th frame and the last) are replayed.
    Per round ``molecules`` are drawn and relaxed from each of ``starts``
    (``STAGE:first|last``). Fine-tuning: ``train_steps`` optimizer steps of
    ``batch_size`` at ``lr`` (cosine to 10 %), energy/force weights ``lambda_e``/
    ``lambda_f``, on the stages ``train_stages`` (the oracle label stage is added); labels
    whose largest oracle force exceeds ``max_label_force`` eV/Å (a blown-up end point)
    are kept out of training, where one would dominate the squared force loss.
    """

    model: str
    pool: str
    base: str
    output: str
    pool_part: str | None = None
    base_part: str | None = None
    rounds: int = 3
    molecules: int = 100
    starts: tuple[str, ...] = ("xtb:first", "etkdg:first")
    select: str = "last"
    oracle: str = "xtb"
    oracle_stage: str = "xtb"
    replay: int = 2000
    replay_every: int = 2
    train_stages: tuple[str, ...] = ("xtb",)
    train_steps: int = 300
    batch_size: int = 32
    lr: float = 3e-4
    lambda_e: float = 1.0
    lambda_f: float = 10.0
    fmax: float = 0.05
    relax_steps: int = 300
    max_label_force: float = 20.0
    workers: int = 0
    seed: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", tuple(self.starts))
        object.__setattr__(self, "train_stages", tuple(self.train_stages))
        if self.select not in SELECTIONS:
            raise ValueError(f"select must be one of {SELECTIONS}, got {self.select!r}")
        for start in self.starts:
            stage, _, frame = start.partition(":")
            if not stage or frame not in FIRST_LAST:
                raise ValueError(f"start {start!r}: expected STAGE:first or STAGE:last")
        for name in ("rounds", "molecules", "replay_every", "train_steps", "batch_size",
                     "relax_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.replay < 0:
            raise ValueError(f"replay must be >= 0, got {self.replay}")

    @property
    def label_stage(self) -> str:
        return f"{self.oracle}-label"


@dataclass
class Relaxation:
    """One relaxation of one pool molecule from one start: its oracle energies at the
    start ``e0`` and the pool's minimum ``e_gt`` (eV), the path (positions ``[k, n, 3]``),
    the MLIP's status and steps; ``e_t``/``fmax_t`` are filled once the end is labelled."""

    name: str
    start: str
    atomic_numbers: np.ndarray
    charge: int
    path: np.ndarray
    status: str
    n_steps: int
    e0: float
    e_gt: float
    e_t: float = float("nan")
    fmax_t: float = float("nan")
    meta: dict = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.start}"


# --------------------------------------------------------------------------- pieces


def _indices(store: TrajectoryStore, part: str | None) -> np.ndarray:
    if part is None:
        return np.arange(store.n_trajectories)
    return np.asarray(read_part(part, store), dtype=np.int64)


def _frame(traj: Trajectory, start: str) -> int | None:
    """Index in ``traj`` of the start ``STAGE:first|last`` (None if it has no such stage)."""
    stage, _, which = start.partition(":")
    ks = [k for k, s in enumerate(traj.stages) if s == stage]
    if not ks:
        return None
    return ks[0] if which == "first" else ks[-1]


def draw(config: ActiveConfig, round_no: int, pool: TrajectoryStore) -> list[int]:
    """The pool trajectories of round ``round_no`` (1-based): seeded, never drawn before,
    among those that have an ``oracle_stage`` (the others, e.g. labelled single points,
    have no minimum to score against)."""
    candidates = _indices(pool, config.pool_part)
    if config.oracle_stage in pool.stage_names:
        scored = np.unique(pool.snapshot_trajectory()[pool.select(config.oracle_stage)])
    else:
        scored = np.empty(0, dtype=np.int64)
    candidates = np.intersect1d(candidates, scored)
    order = np.random.default_rng(config.seed).permutation(candidates)
    first = (round_no - 1) * config.molecules
    if first >= order.shape[0]:
        raise InputError(config.pool, f"the pool has {order.shape[0]} molecules, too few for "
                         f"round {round_no} of {config.molecules}")
    return sorted(int(j) for j in order[first:first + config.molecules])


def build_replay(config: ActiveConfig, target: Path) -> int:
    """Write the replay store (``config.replay`` seeded base molecules, every
    ``replay_every``-th frame of ``train_stages`` and the last); returns its snapshots."""
    if (target / "manifest.json").exists():
        return TrajectoryStore(target).n_snapshots
    base = TrajectoryStore(config.base)
    picks = np.random.default_rng(config.seed + 1).permutation(_indices(base, config.base_part))
    tmp = target.with_name(target.name + ".partial")
    with TrajectoryWriter(tmp, source=f"force2geo active-learn replay of {base.path}",
                          overwrite=True) as writer:
        for j in sorted(int(j) for j in picks[:config.replay]):
            traj = base.trajectory(j)
            ks = [k for k, s in enumerate(traj.stages) if s in config.train_stages]
            if not ks:
                continue
            writer.add(traj.take(sorted(set(ks[::config.replay_every]) | {ks[-1]})))
    os.replace(tmp, target)
    return TrajectoryStore(target).n_snapshots


def relax_pool(config: ActiveConfig, model: str, pool: TrajectoryStore,
               picks: list[int]) -> list[Relaxation]:
    """Relax every picked molecule from every start with ``model``; keep each path."""
    import torch

    from force2geo.relax import RelaxConfig, potential_force_fn, relax
    from force2geo.training import load_potential

    potential = load_potential(model, "cpu", torch.float32).eval()
    jobs = []
    for j in picks:
        traj = pool.trajectory(j)
        ends = [k for k, s in enumerate(traj.stages) if s == config.oracle_stage]
        if not ends:
            continue
        for start in config.starts:
            k = _frame(traj, start)
            if k is None:
                continue
            e0 = float(traj.energy[k]) if traj.stages[k] == config.oracle_stage else float("nan")
            traj.name = traj.name or f"traj{j}"
            jobs.append((traj, start, k, e0, float(traj.energy[ends[-1]])))
    relax_config = RelaxConfig(fmax=config.fmax, max_steps=config.relax_steps, trajectory=True)
    results = relax(potential_force_fn(potential),
                    [(t.atomic_numbers, t.positions[k]) for t, _, k, _, _ in jobs], relax_config)
    out = []
    for (traj, start, _, e0, e_gt), result in zip(jobs, results, strict=True):
        out.append(Relaxation(traj.name, start, traj.atomic_numbers,
                              traj.charge, result.trajectory[0], result.status,
                              result.n_steps, e0, e_gt,
                              meta={"smiles": traj.smiles, "inchikey": traj.inchikey}))
    return out


def write_frames(path: Path, relaxations: list[Relaxation], frames: list[int],
                 with_start: bool = False, role: str = "end") -> None:
    """An extxyz of frame ``frames[i]`` of each path, named ``<name>@<start>#<role>`` (and,
    with ``with_start``, its first frame too, ``#start``, for starts without an oracle
    energy); each frame is its own molecule."""
    from ase import Atoms
    from ase.io import write

    images = []
    for r, k in zip(relaxations, frames, strict=True):
        wanted = [(role, k)] + ([("start", 0)] if with_start and not np.isfinite(r.e0) else [])
        for kind, frame in wanted:
            atoms = Atoms(numbers=r.atomic_numbers, positions=r.path[frame])
            atoms.info.update(name=f"{r.key}#{kind}", charge=r.charge, smiles=r.meta["smiles"],
                              inchikey=r.meta["inchikey"])
            images.append(atoms)
    tmp = path.with_name(path.name + ".partial")
    write(tmp, images, format="extxyz")
    os.replace(tmp, path)


def read_labels(store_path: Path, stage: str) -> dict[str, tuple[float, float]]:
    """``{name: (energy eV, fmax eV/Å)}`` of every labelled geometry of a label store."""
    out = {}
    if not (store_path / "manifest.json").exists():
        return out
    for traj in TrajectoryStore(store_path).trajectories():
        for k, s in enumerate(traj.stages):
            if s == stage:
                out[traj.name] = (float(traj.energy[k]), fmax_of(traj.forces[k]))
    return out


def choose_frames(config: ActiveConfig, relaxations: list[Relaxation], round_no: int
                  ) -> list[int]:
    """Per path, the frame to label for training: its end (``last``) or a seeded uniform
    draw over its frames (``random``)."""
    if config.select == "last":
        return [r.path.shape[0] - 1 for r in relaxations]
    rng = np.random.default_rng([config.seed, round_no])
    return [int(rng.integers(r.path.shape[0])) for r in relaxations]


def round_metrics(relaxations: list[Relaxation]) -> dict:
    """The paper's metrics of the round's relaxations (oracle at the ends vs the pool's
    minima), per start and over all, plus the MLIP's steps and statuses."""
    from force2geo.evaluate.metrics import geo_opt_metrics

    out = {}
    for start in sorted({r.start for r in relaxations}) + ["all"]:
        chosen = [r for r in relaxations if start in ("all", r.start)]
        metrics = geo_opt_metrics([r.e0 for r in chosen], [r.e_t for r in chosen],
                                  [r.e_gt for r in chosen], [r.fmax_t for r in chosen])
        statuses: dict[str, int] = {}
        for r in chosen:
            statuses[r.status] = statuses.get(r.status, 0) + 1
        out[start] = {**metrics, "mlip_steps_median": float(np.median([r.n_steps
                                                                        for r in chosen])),
                      "mlip_status": statuses}
    return out


def _label(config: ActiveConfig, extxyz: Path, store: Path) -> int:
    """Label ``extxyz`` into ``store`` (resumes); the oracle calls it holds in all (labels
    and failures, over every run)."""
    from force2geo.qc.generate import read_failures
    from force2geo.qc.label import LabelConfig, label

    label([extxyz], store, LabelConfig(oracle=config.oracle), workers=config.workers or None,
          progress=False)
    return TrajectoryStore(store).n_snapshots + len(read_failures(store))


def _round_store(config: ActiveConfig, out: Path, round_no: int) -> Path:
    """Replay + every round's training labels so far, as one store (made once)."""
    target = out / f"round-{round_no:02d}" / "train"
    if (target / "manifest.json").exists():
        return target
    sources = [out / "replay"] + [out / f"round-{r:02d}" / "labels" for r in
                                  range(1, round_no + 1)]
    tmp = target.with_name("train.partial")
    with TrajectoryWriter(tmp, source="force2geo active-learn: replay + labels",
                          overwrite=True) as writer:
        if (sources[0] / "manifest.json").exists():
            writer.extend(TrajectoryStore(sources[0]).trajectories())
        for source in sources[1:]:
            if (source / "manifest.json").exists():
                for traj in TrajectoryStore(source).trajectories():
                    keep = [k for k, f in enumerate(traj.forces)
                            if fmax_of(f) <= config.max_label_force]
                    if keep:
                        writer.add(traj.take(keep))
    os.replace(tmp, target)
    return target


def fine_tune(config: ActiveConfig, init: str, store: Path, run_dir: Path) -> str:
    """Fine-tune ``init`` on ``store`` with the one training loop; the new best checkpoint."""
    from force2geo.training import TrainConfig, fit, resume_config

    steps_per_epoch = max(1, int(0.95 * TrajectoryStore(store).n_snapshots) //
                          config.batch_size)
    epochs = max(1, -(-config.train_steps // steps_per_epoch))
    if (run_dir / "last.pt").exists():
        if not _finished(run_dir):
            fit(resume_config(run_dir), resume=True)
    else:
        model, model_config = _checkpoint_model(init)
        train = TrainConfig(
            data=str(store), run_dir=str(run_dir), model=model, model_config=model_config,
            stages=(*config.train_stages, config.label_stage), split_fractions=(0.95, 0.05, 0.0),
            split_seed=config.seed, epochs=epochs, max_steps=config.train_steps,
            schedule_steps=config.train_steps,
            batch_size=config.batch_size, lr=config.lr, lambda_e=config.lambda_e,
            lambda_f=config.lambda_f, schedule="cosine", lr_floor=0.1, ema_decay=0.99,
            seed=config.seed, device="cpu", log_every=20, ckpt_every=100, plots=False,
            init=init)
        fit(train)
    best = run_dir / "best.pt"
    return str(best if best.exists() else run_dir / "last.pt")


def _finished(run_dir: Path) -> bool:
    path = run_dir / "metrics.jsonl"
    return path.exists() and '"kind": "final"' in path.read_text()


def _checkpoint_model(path: str) -> tuple[str, dict]:
    from force2geo.training import load_checkpoint

    model = load_checkpoint(path)["model"]
    return model["name"], dict(model["config"])


# --------------------------------------------------------------------------- the loop


def _resolve(model: str) -> str:
    path = Path(model)
    if path.is_dir():
        for name in ("best.pt", "last.pt"):
            if (path / name).exists():
                return str(path / name)
        raise InputError(path, "holds no best.pt or last.pt of force2geo train")
    if not path.exists():
        raise InputError(path, "no such checkpoint (give a force2geo train checkpoint or "
                         "run folder)")
    return str(path)


def _load_record(out: Path, config: ActiveConfig) -> dict:
    path = out / RECORD
    if path.exists():
        record = json.loads(path.read_text())
        if record["config"] != json.loads(json.dumps(asdict(config))):
            raise InputError(path, "was made with other settings; resume with the same "
                             "options or choose another output folder")
        return record
    return {"config": asdict(config), "rounds": []}


def score(config: ActiveConfig, folder: Path, round_no: int, model: str,
          end_store: Path) -> tuple[list[Relaxation], dict, int]:
    """Relax round ``round_no``'s draw with ``model`` and label the ends (and starts
    without an oracle energy) into ``end_store``: the relaxations, their metrics and the
    oracle calls made."""
    folder.mkdir(parents=True, exist_ok=True)
    pool = TrajectoryStore(config.pool)
    relaxations = relax_pool(config, model, pool, draw(config, round_no, pool))
    ends = [r.path.shape[0] - 1 for r in relaxations]
    write_frames(folder / "endpoints.extxyz", relaxations, ends, with_start=True)
    calls = _label(config, folder / "endpoints.extxyz", end_store)
    labels = read_labels(end_store, config.label_stage)
    for r in relaxations:
        r.e_t, r.fmax_t = labels.get(f"{r.key}#end", (float("nan"), float("nan")))
        if not np.isfinite(r.e0):
            r.e0 = labels.get(f"{r.key}#start", (float("nan"), 0.0))[0]
    return relaxations, round_metrics(relaxations), calls


def run_round(config: ActiveConfig, out: Path, round_no: int, model: str) -> dict:
    """One round (resumable piece by piece); returns its record."""
    folder = out / f"round-{round_no:02d}"
    end_store = folder / ("labels" if config.select == "last" else "endpoints")
    relaxations, metrics, end_calls = score(config, folder, round_no, model, end_store)
    calls = {"endpoints": end_calls}
    if config.select == "random":
        write_frames(folder / "selected.extxyz", relaxations,
                     choose_frames(config, relaxations, round_no), role="pick")
        calls["selected"] = _label(config, folder / "selected.extxyz", folder / "labels")
    store = _round_store(config, out, round_no)
    new_model = fine_tune(config, model, store, folder / "run")
    return {"round": round_no, "model_in": model, "model_out": new_model,
            "molecules": len({r.name for r in relaxations}), "relaxations": len(relaxations),
            "oracle_calls": calls, "train_snapshots": TrajectoryStore(store).n_snapshots,
            "metrics_before": metrics}


def active_learn(config: ActiveConfig) -> dict:
    """Run (or resume) every round; returns the run record (also in OUT/active_learn.json)."""
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    record = _load_record(out, config)
    atomic.write_json(out / RECORD, record, indent=1)
    record["replay_snapshots"] = build_replay(config, out / "replay")
    model = _resolve(record["rounds"][-1]["model_out"] if record["rounds"] else config.model)
    for round_no in range(len(record["rounds"]) + 1, config.rounds + 1):
        log.info("active learning: round %d of %d from %s", round_no, config.rounds, model)
        entry = run_round(config, out, round_no, model)
        record["rounds"].append(entry)
        atomic.write_json(out / RECORD, record, indent=1)
        model = entry["model_out"]
    if "final" not in record:  # the last model on a fresh draw, to compare with round 1's
        final = out / "final"
        _, metrics, calls = score(config, final, config.rounds + 1, model, final / "endpoints")
        record["final"] = {"model": model, "oracle_calls": {"endpoints": calls},
                           "metrics": metrics}
        atomic.write_json(out / RECORD, record, indent=1)
    return record
