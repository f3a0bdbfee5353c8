"""``predict_file``: the whole ``force2geo predict`` run, from an input file to its outputs.

For ``-o OUT.csv`` it writes, next to each other (every file atomically)::

    OUT.csv                 one row per input molecule (force2geo.predict.output)
    OUT.xyz                 relaxed geometries (or --geometries PATH, .xyz/.extxyz/.sdf)
    OUT.json                the run record: input, models with SHA-256, config, versions,
                            units of the columns, status counts, timings
    REPORT/OUT.report.md    summary and histogram (REPORT: OUT's folder unless given)
    REPORT/OUT.<column>.png
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import torch

from force2geo.atomic import write_json
from force2geo.errors import InputError
from force2geo.predict.inputs import read_candidates
from force2geo.predict.output import column_units, write_csv, write_geometries
from force2geo.predict.pipeline import PredictConfig, PredictionRun, predict_candidates
from force2geo.predict.report import property_summary, relaxation_summary, write_report


def output_paths(output: str | os.PathLike, geometries: str | os.PathLike | None = None,
                 report: str | os.PathLike | None = None) -> dict[str, Path]:
    """The files of a run writing ``output`` (a .csv): ``csv``, ``geometries``, ``record``
    and ``report`` (the report's folder)."""
    output = Path(output)
    if output.suffix.lower() != ".csv":
        raise InputError(output, "the output table must end in .csv")
    geometries = Path(geometries) if geometries is not None else output.with_suffix(".xyz")
    if geometries.suffix.lower() not in (".xyz", ".extxyz", ".sdf"):
        raise InputError(geometries, "geometries must end in .xyz, .extxyz or .sdf")
    return {"csv": output, "geometries": geometries, "record": output.with_suffix(".json"),
            "report": Path(report) if report is not None else output.parent}


def input_identity(spec: str) -> dict:
    """The input as given, and for a file its absolute path, size and modification time."""
    if spec.startswith("builtin:"):
        return {"path": spec}
    path = Path(spec)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    stat = path.stat()
    return {"path": spec, "absolute": str(path.resolve()), "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns}


def versions() -> dict[str, str]:
    import numpy
    import rdkit

    from force2geo import __version__

    return {"force2geo": __version__, "torch": str(torch.__version__),
            "rdkit": rdkit.__version__, "numpy": numpy.__version__,
            "python": platform.python_version()}


def predict_file(input_spec: str, output: str | os.PathLike, model=None, property_model=None,
                 config: PredictConfig | None = None,
                 geometries: str | os.PathLike | None = None,
                 report: str | os.PathLike | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 overwrite: bool = False) -> dict:
    """Relax the molecules of ``input_spec`` with the potential ``model`` and predict the
    property with ``property_model``; write the files of the module docstring and return
    the run record.

    ``model``: anything :func:`force2geo.pretrained.resolve_model` takes (None: the
    shipped potential; a list: an ensemble, with ``energy_std``/``forces_std`` per
    molecule). ``property_model``: anything
    :func:`force2geo.pretrained.load_property_model` takes (None: the shipped property
    model; a list: an ensemble, with the property's std). ``config``: default
    :class:`PredictConfig()`. Models are loaded before any molecule is embedded, so a
    missing one fails at once.
    """
    from force2geo.pretrained import (
        load_property_model,
        model_identity,
        property_identity,
        resolve_model,
    )

    started = time.perf_counter()
    config = config or PredictConfig()
    paths = output_paths(output, geometries, report)
    if paths["csv"].exists() and not overwrite:
        raise InputError(paths["csv"], "exists; pass --overwrite to replace it")
    record = {"command": "force2geo predict", "input": input_identity(input_spec),
              "model": model_identity(model), "property": property_identity(property_model)}
    potential = resolve_model(model, device=device, dtype=dtype)
    predictor = load_property_model(property_model, device=device)
    t0 = time.perf_counter()
    candidates = read_candidates(input_spec, config.start, config.seed, config.elements,
                                 config.allow_charged, config.progress)
    inputs_s = time.perf_counter() - t0
    run = predict_candidates(candidates, potential, predictor, config, device, dtype)
    target, unit = record["property"]["target"], record["property"]["unit"]
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
    write_csv(paths["csv"], run.molecules, target, unit)
    n_geometries = write_geometries(paths["geometries"], run.molecules, target, unit)
    timings = {"inputs_s": inputs_s, **run.timings,
               "total_s": time.perf_counter() - started}
    record.update(_run_record(run, config, paths, n_geometries, target, unit),
                  device=str(device), dtype=None if dtype is None else str(dtype),
                  timings=timings)
    report_path = write_report(paths["report"], paths["csv"].stem, run, record)
    record["outputs"]["report"] = str(report_path)
    write_json(paths["record"], record, indent=1)
    return record


def _run_record(run: PredictionRun, config: PredictConfig, paths: dict[str, Path],
                n_geometries: int, target: str, unit: str) -> dict:
    from force2geo.units import UNITS

    values = [m.value for m in run.molecules if m.value is not None]
    return {
        "config": asdict(config), "units": dict(UNITS),
        "columns": column_units(target, unit), "versions": versions(),
        "outputs": {"csv": str(paths["csv"]), "geometries": str(paths["geometries"]),
                    "geometry_records": n_geometries, "record": str(paths["record"])},
        **relaxation_summary(run), "property_summary": property_summary(values),
        "force_evaluations": run.stats.evaluations, "force_s": run.stats.force_s,
        "optimizer_s": run.stats.optimizer_s,
    }
