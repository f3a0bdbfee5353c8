"""The short report of a ``force2geo predict`` run: Markdown summary and a histogram.

``<REPORT>/<stem>.report.md``: molecules per status, median relaxation steps, the
distribution of the predicted property (n, mean, std, min, median, max), the models and
timings, the failed molecules with their reasons and, for ensembles, the molecules with
the largest spread. ``<REPORT>/<stem>.<column>.png``: a histogram of the property.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import numpy as np

from force2geo.atomic import write_text
from force2geo.plotting import pyplot, save_figure
from force2geo.predict.output import property_column
from force2geo.predict.pipeline import PREDICT_STATUSES, MoleculePrediction, PredictionRun

LISTED = 20  # failed / most uncertain molecules listed at most


def property_summary(values: list[float]) -> dict[str, float | int | None]:
    """``n``, ``mean``, ``std`` (population), ``min``, ``median``, ``max`` of ``values``."""
    if not values:
        return {"n": 0, "mean": None, "std": None, "min": None, "median": None, "max": None}
    array = np.asarray(values, dtype=np.float64)
    return {"n": int(array.size), "mean": float(array.mean()), "std": float(array.std()),
            "min": float(array.min()), "median": float(np.median(array)),
            "max": float(array.max())}


def relaxation_summary(run: PredictionRun) -> dict:
    """Molecules per status and the median steps of the relaxed (not diverged) ones."""
    steps = [m.result.n_steps for m in run.molecules if m.relaxed]
    return {"molecules": len(run.molecules), "status_counts": run.status_counts(),
            "median_steps": statistics.median(steps) if steps else None}


def histogram(values: list[float], target: str, unit: str, path: Path) -> Path:
    """A histogram of the predicted ``values`` (``unit``) of ``target``, saved to ``path``."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.hist(values, bins=max(5, min(40, len(values) // 2)), color="#3a7ca5",
            edgecolor="white")
    ax.set_xlabel(f"predicted {target} ({unit})")
    ax.set_ylabel("molecules")
    ax.set_title(f"{len(values)} molecules")
    fig.tight_layout()
    return save_figure(fig, path)


def write_report(folder: str | os.PathLike, stem: str, run: PredictionRun, record: dict
                 ) -> Path:
    """Write the report of ``run`` (``record``: the run record of OUT.json) into
    ``folder``; returns the Markdown file's path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    target, unit = record["property"]["target"], record["property"]["unit"]
    column = property_column(target, unit)
    values = [m.value for m in run.molecules if m.value is not None]
    figure = None
    if values:
        figure = histogram(values, target, unit, folder / f"{stem}.{column}.png")
    lines = _summary_lines(record, run, column, values)
    if figure is not None:
        lines += ["", f"![{column}]({figure.name})"]
    lines += _failed_lines(run.molecules) + _uncertain_lines(run.molecules, column)
    lines += _model_lines(record)
    return write_text(folder / f"{stem}.report.md", "\n".join(lines) + "\n")


def _fmt(value, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def _summary_lines(record: dict, run: PredictionRun, column: str, values: list) -> list[str]:
    relax = relaxation_summary(run)
    counts = relax["status_counts"]
    lines = [f"# force2geo predict: {record['input']['path']}", "",
             f"{relax['molecules']} molecules; relaxation fmax {record['config']['relax']['fmax']}"
             f" eV/Å, at most {record['config']['relax']['max_steps']} steps; "
             f"{record['timings']['total_s']:.1f} s in all.", "",
             "| status | molecules |", "| --- | ---: |"]
    lines += [f"| {s} | {counts.get(s, 0)} |" for s in PREDICT_STATUSES]
    stats = property_summary(values)
    lines += ["", f"Median relaxation steps (converged and step-limit molecules): "
              f"{relax['median_steps']}", "",
              f"| {column} | n | mean | std | min | median | max |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
              f"| predicted | {stats['n']} | " + " | ".join(
                  _fmt(stats[k]) for k in ("mean", "std", "min", "median", "max")) + " |"]
    return lines


def _failed_lines(molecules: list[MoleculePrediction]) -> list[str]:
    bad = [m for m in molecules if m.status in ("failed", "diverged")]
    if not bad:
        return []
    lines = ["", "## Molecules without a prediction", "", "| # | name | status | reason |",
             "| ---: | --- | --- | --- |"]
    lines += [f"| {m.index} | {m.candidate.name} | {m.status} | {m.reason} |"
              for m in bad[:LISTED]]
    if len(bad) > LISTED:
        lines.append(f"\n... and {len(bad) - LISTED} more (see the CSV).")
    return lines


def _uncertain_lines(molecules: list[MoleculePrediction], column: str) -> list[str]:
    """The molecules with the largest force spread (potential ensemble) or property
    spread (property ensemble)."""
    spread = [m for m in molecules if m.forces_std is not None or m.value_std is not None]
    if not spread:
        return []
    spread.sort(key=lambda m: (m.forces_std or 0.0, m.value_std or 0.0), reverse=True)
    lines = ["", "## Largest ensemble spread", "",
             f"| # | name | forces_std (eV/Å) | energy_std (eV) | {column}_std |",
             "| ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {m.index} | {m.candidate.name} | {_fmt(m.forces_std)} | "
              f"{_fmt(m.energy_std)} | {_fmt(m.value_std)} |" for m in spread[:LISTED // 2]]
    return lines


def _model_lines(record: dict) -> list[str]:
    lines = ["", "## Models", ""]
    for role, key in (("potential", "model"), ("property model", "property")):
        for f in record[key]["files"]:
            lines.append(f"- {role}: `{f['path']}` (sha256 {f['sha256'][:12]}…)")
    timings = record["timings"]
    lines += ["", "Wall time (s): " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}"
                                                  for k, v in timings.items())]
    return lines
