"""The evaluation report: per-molecule CSV, metrics JSON, a text table and PNG plots.

Files written to the report folder (each atomically):

* ``molecules.csv``: one row per molecule of D_opt (columns in :data:`COLUMNS`; energies
  eV, forces eV/Å, residual kcal/mol, RMSD Å; an empty cell is a value that does not
  exist, such as a failed single point);
* ``metrics.json``: pct_T, pct_success, pct_div, pct_FWT (%), their counts, MLIP step and
  status statistics, RMSD and residual summaries, the paper's Table 3, config and units;
* ``report.txt``: the table printed at the end, ours beside the paper's Table 3;
* ``residual_energy.png`` (histogram of ``E_T - E_gt`` in kcal/mol) and
  ``mlip_steps.png`` (histogram of the MLIP's steps).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path

import numpy as np

from force2geo.errors import InputError
from force2geo.evaluate.cache import number, write_atomic, write_json
from force2geo.evaluate.metrics import (
    METRIC_NAMES,
    PAPER_TABLE3,
    geo_opt_metrics,
    heavy_atom_rmsd,
    molecule_metrics,
)
from force2geo.plotting import pyplot, save_figure
from force2geo.units import UNITS

logger = logging.getLogger(__name__)

CSV_NAME, METRICS_NAME, TEXT_NAME = "molecules.csv", "metrics.json", "report.txt"
RESIDUAL_PLOT, STEPS_PLOT = "residual_energy.png", "mlip_steps.png"
OUTPUTS = (CSV_NAME, METRICS_NAME, TEXT_NAME, RESIDUAL_PLOT, STEPS_PLOT)
COLUMNS = (
    "trajectory", "name", "smiles", "n_atoms", "mlip_status", "mlip_reason", "mlip_steps",
    "mlip_fmax", "mlip_energy", "gt_source", "oracle_gt_steps", "e0", "e_t", "e_gt",
    "oracle_fmax0", "oracle_fmax_t", "oracle_fmax_gt", "scored", "pct", "e_res_kcal",
    "success", "diverged", "fwt", "rmsd_heavy", "energy_std", "forces_std", "uncertain",
    "oracle_errors",
)
BOOL_COLUMNS = ("scored", "success", "diverged", "fwt", "uncertain")
TEXT_COLUMNS = ("name", "smiles", "mlip_status", "mlip_reason", "gt_source", "oracle_errors")


def read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(path, f"not a readable JSON file ({exc})") from None
    if not isinstance(record, dict):
        raise InputError(path, "expected a JSON object")
    return record


def molecule_rows(cases, mlip: dict[int, dict], oracle: dict[int, dict]) -> list[dict]:
    """One dict per case (a :class:`~.selection.Case`) from its cached MLIP and oracle
    records: identifiers, MLIP status (and why it failed)/steps/fmax/energy, oracle
    energies and max forces, and the heavy-atom RMSD between ``c_T`` and ``c_gt`` (Å, NaN
    without a reference)."""
    rows = []
    for case in cases:
        m, o = mlip[case.trajectory], oracle[case.trajectory]
        c_t = np.array(m["positions"], dtype=np.float64)
        c_gt = case.c_gt if case.c_gt is not None else o.get("gt_positions")
        rmsd = math.nan
        if c_gt is not None and "c_gt" not in o["errors"]:
            rmsd = heavy_atom_rmsd(case.atomic_numbers, c_t, np.array(c_gt, dtype=np.float64))
        rows.append({
            "trajectory": case.trajectory, "name": case.name, "smiles": case.smiles,
            "n_atoms": int(case.atomic_numbers.shape[0]), "mlip_status": m["status"],
            "mlip_reason": m.get("reason", ""),
            "mlip_steps": int(m["n_steps"]), "mlip_fmax": number(m["fmax"]),
            "mlip_energy": number(m["energy"]), "gt_source": o["gt_source"],
            "oracle_gt_steps": o.get("gt_steps"),
            "e0": number(o["e0"]), "e_t": number(o["e_t"]), "e_gt": number(o["e_gt"]),
            "oracle_fmax0": number(o["fmax0"]), "oracle_fmax_t": number(o["fmax_t"]),
            "oracle_fmax_gt": number(o["fmax_gt"]), "rmsd_heavy": rmsd,
            "energy_std": m.get("energy_std"), "forces_std": m.get("forces_std"),
            "uncertain": m.get("uncertain"),
            "oracle_errors": "; ".join(f"{k}: {v}" for k, v in o["errors"].items()),
        })
    return rows


def read_rows(folder: str | Path) -> list[dict]:
    """The rows of a report's ``molecules.csv``, typed back: numbers (None when empty),
    booleans, text."""
    path = Path(folder) / CSV_NAME
    try:
        with open(path, newline="") as handle:
            raw = list(csv.DictReader(handle))
    except OSError as exc:
        raise InputError(path, f"cannot read the evaluation's molecules ({exc}); is it a "
                         "finished force2geo evaluate relax folder?") from None
    rows = []
    for record in raw:
        row = {}
        for key, text in record.items():
            if key in TEXT_COLUMNS:
                row[key] = text
            elif text in ("", "None"):
                row[key] = None
            elif key in BOOL_COLUMNS:
                row[key] = text == "True"
            else:
                row[key] = float(text)
        rows.append(row)
    return rows


def _add_flags(rows: list[dict], thresholds: dict) -> dict:
    """Add the per-molecule metric columns to ``rows``; return the summary metrics."""
    e0, e_t, e_gt, fmax_t = (np.array([r[key] for r in rows], dtype=np.float64)
                             for key in ("e0", "e_t", "e_gt", "oracle_fmax_t"))
    per = molecule_metrics(e0, e_t, e_gt, fmax_t, **thresholds)
    for k, row in enumerate(rows):
        row["scored"] = bool(per["scored"][k])
        row["pct"], row["e_res_kcal"] = float(per["pct"][k]), float(per["e_res_kcal"][k])
        for flag in ("success", "diverged", "fwt"):
            row[flag] = bool(per[flag][k]) if row["scored"] else None
    return geo_opt_metrics(e0, e_t, e_gt, fmax_t, **thresholds)


def _stats(values) -> dict:
    """Mean, median, min, max of the finite ``values`` (None when there are none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not v.size:
        return {"n": 0, "mean": None, "median": None, "min": None, "max": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)),
            "min": float(v.min()), "max": float(v.max())}


def summarize(rows: list[dict], thresholds: dict) -> dict:
    """The content of ``metrics.json`` (without config): metrics, counts, statistics."""
    metrics = _add_flags(rows, thresholds)
    statuses = [r["mlip_status"] for r in rows]
    scored = [r for r in rows if r["scored"]]
    return {
        **metrics,
        "mlip_status_counts": {s: statuses.count(s) for s in sorted(set(statuses))},
        "mlip_steps": _stats([r["mlip_steps"] for r in rows]),
        "rmsd_heavy_A": _stats([r["rmsd_heavy"] for r in scored]),
        "e_res_kcal_per_mol": _stats([r["e_res_kcal"] for r in scored]),
        "pct_per_molecule": _stats([r["pct"] for r in scored]),
        "oracle_failures": sum(bool(r["oracle_errors"]) for r in rows),
        "references_made_by_oracle": sum(r["gt_source"] == "oracle" for r in rows),
        "paper_table3": dict(PAPER_TABLE3),
        "forces_std_eV_per_A": _stats([r.get("forces_std") for r in scored
                                       if r.get("forces_std") is not None]),
        "uncertainty_flag": _flag_stats(scored),
    }


def _flag_stats(scored: list[dict]) -> dict | None:
    """How a calibrated ensemble's ``uncertain`` flag did: flagged molecules, and the share
    of bad results (not a success) it flagged (catch) and of good ones (false alarm)."""
    rows = [r for r in scored if r.get("uncertain") is not None]
    if not rows:
        return None
    bad = np.array([not r["success"] for r in rows])
    flagged = np.array([bool(r["uncertain"]) for r in rows])
    return {"n": len(rows), "flagged": int(flagged.sum()), "n_bad": int(bad.sum()),
            "catch": float(flagged[bad].mean()) if bad.any() else None,
            "false_alarm": float(flagged[~bad].mean()) if (~bad).any() else None}


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    return str(value)


def csv_text(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in COLUMNS])
    return out.getvalue()


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def format_table(summary: dict, config: dict) -> str:
    """The text table: our four metrics beside the paper's Table 3, then the counts."""
    oracle = config["oracle"]["level"]
    head = f"{'':28s}" + "".join(f"{name + ' (%)':>17s}" for name in METRIC_NAMES)
    ours = f"{'this model (' + config['oracle']['name'] + ' oracle)':28s}" + "".join(
        f"{_fmt(summary[name]):>17s}" for name in METRIC_NAMES)
    paper = f"{'paper Table 3 (DFT oracle)':28s}" + "".join(
        f"{PAPER_TABLE3[name]:>17.2f}" for name in METRIC_NAMES)
    steps, rmsd, e_res = summary["mlip_steps"], summary["rmsd_heavy_A"], \
        summary["e_res_kcal_per_mol"]
    status = ", ".join(f"{n} {s}" for s, n in summary["mlip_status_counts"].items())
    lines = [
        f"Geometry optimisation (paper §4.2, A.2); oracle {oracle}; start: snapshot "
        f"{config['start']} of stage {config['stage']!r}; reference: {config['reference']}",
        head, ours, paper, "",
        f"molecules {summary['n_molecules']}, scored {summary['n_scored']} "
        f"({summary['n_reference_failed']} with a failed reference, left out); "
        f"{summary['references_made_by_oracle']} references made by the oracle",
        f"pct_T over {summary['n_pct']}, median pct "
        f"{_fmt(summary['pct_per_molecule']['median'])} (left out: "
        f"{summary['n_pct_small_drop']} with "
        f"E_0 - E_gt < {summary['min_drop_eV'] * 1000:g} meV, {summary['n_pct_oracle_failed']} "
        "oracle failures at c_T)",
        f"success: E_res < {summary['success_kcal_per_mol']:g} kcal/mol; FWT: oracle max "
        f"force < {summary['fwt_fmax_eV_per_A']:g} eV/Å",
        f"MLIP: {status}; steps median {_fmt(steps['median'], 1)}, mean "
        f"{_fmt(steps['mean'], 1)}, max {_fmt(steps['max'], 0)}",
        f"E_res (kcal/mol): median {_fmt(e_res['median'], 3)}, mean {_fmt(e_res['mean'], 3)}",
        f"heavy-atom RMSD to c_gt (Å): median {_fmt(rmsd['median'], 3)}, mean "
        f"{_fmt(rmsd['mean'], 3)}, max {_fmt(rmsd['max'], 3)}",
    ]
    return "\n".join(lines) + "\n"


def _histogram(values, path: Path, xlabel: str, title: str,
               marker: tuple[float, str] | None = None, integer: bool = False) -> None:
    """A histogram of the finite ``values`` to the PNG ``path``; ``marker`` is a vertical
    line at ``(x, label)``; ``integer`` gives one bin per integer for a narrow range."""
    plt = pyplot()
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if v.size:
        bins = np.arange(v.min() - 0.5, v.max() + 1.5) if integer and np.ptp(v) < 60 else 30
        ax.hist(v, bins=bins, color="tab:blue", edgecolor="white")
    if marker is not None:
        ax.axvline(marker[0], color="tab:red", linestyle="--", label=marker[1])
        ax.legend()
    ax.set(xlabel=xlabel, ylabel="molecules", title=f"{title} (n = {v.size})")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


def write_report(folder: Path, rows: list[dict], config: dict, model: str,
                 store: str) -> dict:
    """Write every report file to ``folder``; return the metrics dict (``metrics.json``)."""
    thresholds = {"success_kcal": config["success_kcal"], "fwt_fmax": config["fwt_fmax"],
                  "min_drop": config["min_drop"]}
    summary = summarize(rows, thresholds)
    metrics = {**summary, "model": model, "store": store, "config": config,
               "units": {**UNITS, "residual": "kcal/mol", "rmsd": "Angstrom", "pct": "%"}}
    write_atomic(folder / CSV_NAME, csv_text(rows))
    write_json(folder / METRICS_NAME, metrics)
    table = format_table(summary, config)
    write_atomic(folder / TEXT_NAME, table)
    scored = [r for r in rows if r["scored"]]
    _histogram([r["e_res_kcal"] for r in scored], folder / RESIDUAL_PLOT,
               "E(c_T) - E(c_gt) (kcal/mol)", "residual energy",
               marker=(config["success_kcal"], f"{config['success_kcal']:g} kcal/mol (success)"))
    _histogram([r["mlip_steps"] for r in rows], folder / STEPS_PLOT, "MLIP optimizer steps",
               "MLIP relaxation steps", integer=True)
    return metrics
