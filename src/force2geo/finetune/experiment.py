"""Reproducible experiments: ``force2geo experiment SPEC.yaml``.

A spec (YAML) names a property dataset, one or more splits, default training options, the
runs, and the tables and plots to make of their results. The runner trains every run (for
every split it applies to) into ``OUT/runs/<split>/<run>``, skips runs that finished, resumes
runs that were stopped, and writes ``OUT/tables.md``, ``OUT/tables.json``, the plots and
``OUT/experiment.json`` (the spec and its SHA-256, the dataset fingerprint, the splits, seeds,
package versions and every run's result). Example (the analog of the paper's Table 6)::

    name: force2prop
    dataset: data/property/xtb          # relative paths: from the current directory
    splits:
      random: {method: random, fractions: [0.8, 0.1, 0.1], seed: 42}
      scaffold: {method: scaffold}
      mlip: {file: data/xtb-split.json}  # a split file of the dataset's store (or dataset)
    exclude: data/xtb-train             # valid/test molecules in this store (or in a
                                        # split file's part, data/xtb-split.json:train, or in a
                                        # text file of InChIKeys) are dropped
    defaults: {target: xtb_gap, epochs: 30, max_minutes: 3}
    runs:
      - {name: gin, model: gin}
      - {name: painn}
      - {name: force2prop, init: data/runs/painn-xtb/best.pt}
      - {name: denoise, kind: denoise, noise_std: 0.04, splits: [random]}
      - {name: denoise-ft, init: "run:denoise", splits: [random]}
      - {name: sizes, sweep: {train_fraction: [0.1, 0.5, 1.0]}}
    tables:
      - title: HOMO-LUMO gap, MAE (eV)
        rows: {GIN-virtual: gin, PaiNN: painn, Force2Prop w/ PaiNN: force2prop}
        metrics: [valid_mae, test_mae]
    plots:
      - {file: sizes.png, x: train_fraction, y: test_mae, series: {scratch: sizes}}

Run fields are those of :class:`~force2geo.finetune.config.PropertyTrainConfig` (``kind:
property``, the default) or :class:`~force2geo.finetune.denoise.DenoiseConfig` (``kind:
denoise``: coordinate-denoising pre-training on the split's training geometries), plus
``name``, ``splits`` (the splits it runs on; default all) and ``sweep`` (one field and its
values: one run per value, named ``name/field=value``). ``init: "run:NAME"`` starts from the
best checkpoint of run NAME on the same split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from force2geo import atomic
from force2geo.data.splits import read_inchikeys
from force2geo.errors import InputError
from force2geo.finetune import runs as run_files
from force2geo.finetune.config import PropertyTrainConfig
from force2geo.finetune.denoise import DenoiseConfig

KINDS = {"property": PropertyTrainConfig, "denoise": DenoiseConfig}
SPEC_KEYS = {"name", "description", "dataset", "splits", "exclude", "defaults", "runs",
             "tables", "plots"}
RUN_KEYS = {"name", "kind", "splits", "sweep"}
SPLIT_KEYS = {"method", "fractions", "seed", "file"}
RUN_PREFIX = "run:"


@dataclass(frozen=True)
class RunSpec:
    """One training run of an experiment on one split; ``options`` are config fields."""

    name: str
    kind: str
    split: str
    options: dict
    base: str                       # the spec's run name (before sweep expansion)
    sweep: tuple[str, object] | None

    @property
    def key(self) -> str:
        return f"{self.split}/{self.name}"


@dataclass(frozen=True)
class ExperimentSpec:
    """A parsed spec: see the module docstring."""

    name: str
    description: str
    dataset: str
    splits: dict
    exclude: str | None
    runs: tuple[RunSpec, ...]
    tables: tuple[dict, ...]
    plots: tuple[dict, ...]
    source: dict                    # the spec as read
    sha256: str


# --------------------------------------------------------------------------- parsing


def load_spec(path: str | os.PathLike) -> ExperimentSpec:
    """Read and check a spec file; errors name the file and the offending entry."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
    except FileNotFoundError:
        raise InputError(path, "no such file") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {exc}") from None
    try:
        return parse_spec(raw, hashlib.sha256(text.encode()).hexdigest())
    except ValueError as exc:
        raise InputError(path, str(exc)) from None


def parse_spec(raw, sha256: str = "") -> ExperimentSpec:
    """An :class:`ExperimentSpec` from the parsed YAML; ValueError says what is wrong."""
    if not isinstance(raw, dict):
        raise ValueError("a spec is a mapping with name, dataset, splits, runs, tables")
    _unknown(raw, SPEC_KEYS, "spec")
    for key in ("name", "dataset", "runs"):
        if key not in raw:
            raise ValueError(f"missing '{key}'")
    splits = _splits(raw.get("splits") or {"random": {"method": "random"}})
    defaults = dict(raw.get("defaults") or {})
    known = set().union(*({f.name for f in dataclasses.fields(c)} for c in KINDS.values()))
    _unknown(defaults, known, "defaults")
    runs = []
    for entry in _list(raw["runs"], "runs"):
        runs.extend(_expand(entry, defaults, splits))
    names = [r.key for r in runs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"run names repeat: {duplicated}")
    _check_inits(runs)
    tables = tuple(_list(raw.get("tables") or [], "tables"))
    plots = tuple(_list(raw.get("plots") or [], "plots"))
    bases = {r.base for r in runs} | {r.name for r in runs}
    for table in tables:
        _check_table(table, bases, splits)
    for plot in plots:
        _check_plot(plot, {r.base for r in runs if r.sweep})
    return ExperimentSpec(str(raw["name"]), str(raw.get("description", "")),
                          str(raw["dataset"]), splits, raw.get("exclude"), tuple(runs), tables,
                          plots, raw, sha256)


def _unknown(mapping: dict, known: set, where: str) -> None:
    unknown = sorted(set(mapping) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}")


def _list(value, where: str) -> list:
    if not isinstance(value, list):
        raise ValueError(f"'{where}' must be a list")
    return value


def _splits(raw) -> dict:
    if not isinstance(raw, dict) or not raw:
        raise ValueError("'splits' must map split names to {method, fractions, seed}")
    splits = {}
    for name, settings in raw.items():
        settings = dict(settings or {})
        _unknown(settings, SPLIT_KEYS, f"splits.{name}")
        if "file" in settings:
            if set(settings) != {"file"}:
                raise ValueError(f"splits.{name}: 'file' stands alone")
            splits[str(name)] = {"method": "file", "file": str(settings["file"])}
            continue
        splits[str(name)] = {"method": settings.get("method", "random"),
                             "fractions": list(settings.get("fractions", (0.8, 0.1, 0.1))),
                             "seed": int(settings.get("seed", 42))}
    return splits


def _expand(entry, defaults: dict, splits: dict) -> list[RunSpec]:
    """One spec entry -> a RunSpec per (split, sweep value), options checked by the config."""
    if not isinstance(entry, dict) or "name" not in entry:
        raise ValueError(f"each run needs a name: {entry!r}")
    name, kind = str(entry["name"]), entry.get("kind", "property")
    if kind not in KINDS:
        raise ValueError(f"run {name}: kind must be one of {sorted(KINDS)}, got {kind!r}")
    fields = {f.name for f in dataclasses.fields(KINDS[kind])}
    _unknown(entry, fields | RUN_KEYS, f"run {name}")
    options = {k: v for k, v in defaults.items() if k in fields}
    options.update({k: v for k, v in entry.items() if k not in RUN_KEYS})
    chosen = entry.get("splits") or list(splits)
    missing = sorted(set(chosen) - set(splits))
    if missing:
        raise ValueError(f"run {name}: unknown split(s) {missing}")
    sweeps = [(None, None)]
    if entry.get("sweep"):
        sweep = entry["sweep"]
        if not isinstance(sweep, dict) or len(sweep) != 1:
            raise ValueError(f"run {name}: sweep is one field and its list of values")
        (field, values), = sweep.items()
        _unknown({field: 0}, fields, f"run {name} sweep")
        sweeps = [(field, value) for value in _list(values, f"run {name} sweep")]
    runs = []
    for split in chosen:
        for field, value in sweeps:
            opts = dict(options) if field is None else {**options, field: value}
            label = name if field is None else f"{name}/{field}={value}"
            _config(kind, opts, label)
            runs.append(RunSpec(label, kind, split, opts, name,
                                None if field is None else (field, value)))
    return runs


def _config(kind: str, options: dict, label: str = ""):
    """The run's config; ``run:`` inits are placeholders until the runner resolves them."""
    options = dict(options, progress=options.get("progress", False))
    if str(options.get("init", "")).startswith(RUN_PREFIX):
        options["init"] = "placeholder"
    try:
        return KINDS[kind](**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"run {label}: {exc}") from None


def _check_inits(runs: list[RunSpec]) -> None:
    keys = {r.key: r for r in runs}
    for run in runs:
        init = str(run.options.get("init", ""))
        if init.startswith(RUN_PREFIX):
            source = keys.get(f"{run.split}/{init[len(RUN_PREFIX):]}")
            if source is None:
                raise ValueError(f"run {run.key}: init {init} names no run on split "
                                 f"{run.split}")
            if runs.index(source) > runs.index(run):
                raise ValueError(f"run {run.key}: init {init} must come earlier in 'runs'")


def _check_table(table, runs: set, splits: dict) -> None:
    if not isinstance(table, dict) or not isinstance(table.get("rows"), dict):
        raise ValueError("each table needs 'rows': {label: run name}")
    _unknown(table, {"title", "rows", "metrics", "splits"}, "table")
    missing = sorted(set(table["rows"].values()) - runs)
    if missing:
        raise ValueError(f"table {table.get('title', '')!r}: unknown run(s) {missing}")
    unknown = sorted(set(table.get("splits") or []) - set(splits))
    if unknown:
        raise ValueError(f"table {table.get('title', '')!r}: unknown split(s) {unknown}")


def _check_plot(plot, swept: set) -> None:
    if not isinstance(plot, dict):
        raise ValueError("each plot is a mapping with file, x, y, series")
    _unknown(plot, {"title", "file", "x", "y", "series", "splits"}, "plot")
    for key in ("file", "x", "series"):
        if key not in plot:
            raise ValueError(f"plot: missing '{key}'")
    missing = sorted(set(plot["series"].values()) - swept)
    if missing:
        raise ValueError(f"plot {plot['file']}: series must name swept runs, not {missing}")


# --------------------------------------------------------------------------- running


def run_experiment(spec: ExperimentSpec, out: str | os.PathLike, *, dry_run: bool = False,
                   progress: bool = True, device: str | None = None,
                   only_splits: Sequence[str] | None = None) -> dict:
    """Run every run of ``spec`` not yet finished in ``out``; write tables, plots and
    ``experiment.json``; return the experiment record. ``only_splits``: run (and tabulate)
    only the runs on these splits, e.g. to run each split in its own process."""
    from force2geo.finetune.dataset import PropertyDataset

    out = Path(out)
    names = list(spec.splits) if only_splits is None else list(dict.fromkeys(only_splits))
    unknown = sorted(set(names) - set(spec.splits))
    if unknown:
        raise InputError("splits", f"{unknown} not in the spec (it has {list(spec.splits)})")
    chosen = [run for run in spec.runs if run.split in names]
    dataset = PropertyDataset.load(spec.dataset)
    splits = {name: _split(spec, name, dataset, out) for name in names}
    record = _record(spec, dataset, splits)
    if dry_run:
        for run in chosen:
            print(f"{run.key}: {run.kind} {json.dumps(run.options, default=str)}")
        return record
    started = time.time()
    results = {}
    for i, run in enumerate(chosen):
        if progress:
            print(f"[{i + 1}/{len(chosen)}] {run.key}", flush=True)
        results[run.key] = _run_one(run, dataset, splits[run.split], out, device)
        record["runs"][run.key] = results[run.key]
        atomic.write_json(out / "experiment.json", record, indent=1)
    record["seconds"] = round(time.time() - started, 1)
    tables = [make_table(t, spec, results, names) for t in spec.tables]
    tables = [t for t in tables if t["columns"]]
    atomic.write_text(out / "tables.md", "\n\n".join(render_table(t) for t in tables) + "\n")
    atomic.write_json(out / "tables.json", tables, indent=1)
    record["plots"] = [make_plot(p, spec, results, out, names) for p in spec.plots
                       if set(p.get("splits") or spec.splits) & set(names)]
    atomic.write_json(out / "experiment.json", record, indent=1)
    return record


def _split(spec: ExperimentSpec, name: str, dataset, out: Path) -> dict:
    """The split ``name`` (saved under OUT/splits/ on first use and reused after)."""
    from force2geo.data.splits import load_split, save_split
    from force2geo.finetune.splits import split_dataset, split_meta

    path = out / "splits" / f"{name}.json"
    if spec.splits[name]["method"] == "file":
        return _file_split(Path(spec.splits[name]["file"]), dataset, spec.exclude)
    if path.exists():
        parts, meta = load_split(path)
        if meta.get("dataset_fingerprint") != dataset.fingerprint:
            raise InputError(path, "was made for another dataset; use a new output folder")
        return parts
    settings = spec.splits[name]
    parts = split_dataset(dataset, settings["method"], settings["fractions"], settings["seed"],
                          pretraining=_pretraining(spec.exclude, dataset))
    path.parent.mkdir(parents=True, exist_ok=True)
    save_split(path, parts, split_meta(dataset, settings["method"],
                                       fractions=settings["fractions"], seed=settings["seed"],
                                       exclude=spec.exclude))
    return parts


def _file_split(path: Path, dataset, exclude: str | None) -> dict:
    """A split file of the store the dataset was built from (trajectory indices, e.g. the
    MLIP's own split, so that no valid/test molecule was pre-trained on) or of the dataset
    itself (``meta.index == "dataset"``), as dataset indices; molecules of the store that
    the dataset left out are dropped, and ``exclude`` still applies to valid and test."""
    from force2geo.finetune.splits import leakage_mask, split_file_parts

    parts = split_file_parts(path, dataset)
    if exclude is not None:
        keep = leakage_mask(dataset, _pretraining(exclude, dataset))
        for part in ("valid", "test"):
            if part in parts:
                parts[part] = parts[part][keep[parts[part]]]
    return parts


def _pretraining(exclude: str | None, dataset):
    """A store folder as it is; ``SPLIT.json:PART`` as the InChIKeys of that part of a
    split file of the dataset's store (e.g. the MLIP's own split and ``train``); a text
    file as its InChIKeys (one per line, e.g. the ``*.inchikeys.txt`` of a model card)."""
    if exclude is None or Path(exclude).is_dir():
        return exclude
    path, _, part = exclude.rpartition(":")
    if path.endswith(".json") and part:
        from force2geo.finetune.splits import split_file_part

        keys = dataset.inchikeys
        return sorted({keys[i] for i in split_file_part(exclude, dataset, store_only=True)})
    return read_inchikeys(exclude)


def _record(spec: ExperimentSpec, dataset, splits: dict) -> dict:
    import rdkit
    import torch

    from force2geo import __version__

    return {"name": spec.name, "description": spec.description, "spec": spec.source,
            "spec_sha256": spec.sha256,
            "dataset": {"path": spec.dataset, "fingerprint": dataset.fingerprint,
                        "n_molecules": len(dataset)},
            "splits": {name: {**spec.splits[name], "sizes": {k: int(v.size)
                                                             for k, v in parts.items()}}
                       for name, parts in splits.items()},
            "exclude": spec.exclude,
            "versions": {"force2geo": __version__, "torch": torch.__version__,
                         "numpy": np.__version__, "rdkit": rdkit.__version__,
                         "python": platform.python_version()},
            "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "runs": {}}


def _run_one(run: RunSpec, dataset, split: dict, out: Path, device: str | None) -> dict:
    """Train one run, or read the result of a finished one."""
    run_dir = out / "runs" / run.split / run.name
    options = dict(run.options, progress=False)
    if device is not None:
        options["device"] = device
    init = str(options.get("init", ""))
    if init.startswith(RUN_PREFIX):
        options["init"] = os.fspath(out / "runs" / run.split / init[len(RUN_PREFIX):]
                                    / run_files.BEST)
    config = KINDS[run.kind](**options)
    result_file = run_dir / run_files.RESULT
    saved = run_dir / run_files.CONFIG
    if result_file.exists() and saved.exists():
        if json.loads(saved.read_text()) != json.loads(json.dumps(config.to_dict())):
            raise InputError(run_dir, "holds a finished run with another config; use a new "
                             "output folder or delete that run")
        return json.loads(result_file.read_text())
    resume = (run_dir / run_files.LAST).exists()
    if run.kind == "denoise":
        from force2geo.finetune.denoise import pretrain_denoising

        return pretrain_denoising(config, dataset, run_dir, indices=split["train"],
                                  resume=resume)
    from force2geo.finetune.train import fit_property

    return fit_property(config, dataset, split, run_dir, resume=resume)


# --------------------------------------------------------------------------- reporting


def make_table(table: dict, spec: ExperimentSpec, results: dict,
               only_splits: Sequence[str] | None = None) -> dict:
    """``{"title", "columns", "rows": [{"label", "run", "values": {column: value}}]}``;
    ``only_splits`` drops the columns of other splits."""
    metrics = list(table.get("metrics") or ["valid_mae", "test_mae"])
    splits = [s for s in table.get("splits") or spec.splits
              if only_splits is None or s in only_splits]
    columns = [f"{split} {metric}" for split in splits for metric in metrics]
    rows = []
    for label, name in table["rows"].items():
        values = {}
        for split in splits:
            result = results.get(f"{split}/{name}")
            for metric in metrics:
                value = None if result is None else result.get(metric)
                values[f"{split} {metric}"] = value
        rows.append({"label": label, "run": name, "values": values})
    return {"title": table.get("title", ""), "columns": columns, "rows": rows}


def render_table(table: dict) -> str:
    """A Markdown table; missing values (run not on that split) print as a dash."""
    lines = [f"### {table['title']}", "", "| | " + " | ".join(table["columns"]) + " |",
             "|---|" + "---:|" * len(table["columns"])]
    for row in table["rows"]:
        cells = [_cell(row["values"][c]) for c in table["columns"]]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def make_plot(plot: dict, spec: ExperimentSpec, results: dict, out: Path,
              only_splits: Sequence[str] | None = None) -> str:
    """One line per (series, split): the swept value against ``y``; returns the file.
    ``only_splits`` leaves the other splits out."""
    from force2geo.plotting import pyplot, save_figure

    plt = pyplot()
    y = plot.get("y", "test_mae")
    splits = [s for s in plot.get("splits") or spec.splits
              if only_splits is None or s in only_splits]
    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 3.6), squeeze=False)
    for ax, split in zip(axes[0], splits, strict=True):
        for label, base in plot["series"].items():
            points = sorted((r.sweep[1], results[r.key].get(y)) for r in spec.runs
                            if r.base == base and r.split == split and r.key in results)
            points = [(x, v) for x, v in points if v is not None]
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", label=label)
        ax.set_xlabel(plot["x"])
        ax.set_ylabel(f"{y} (eV)" if y.endswith("_mae") else y)
        ax.set_title(f"{plot.get('title', '')} ({split})".strip())
        ax.legend()
    path = out / plot["file"]
    save_figure(fig, path)
    return os.fspath(path)
