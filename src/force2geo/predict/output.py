"""The files of ``force2geo predict``: the CSV table, the relaxed geometries, the record.

``OUT.csv``: one row per input molecule, in input order, with the columns of
:func:`columns` (units in :func:`column_units`): ``index`` (0-based input position),
``name``, ``smiles``, ``n_atoms``, ``status`` (converged, step_limit, diverged, failed),
``reason`` (why it failed, or a note), ``start`` (etkdg, mmff or input), ``n_steps``,
``fmax`` eV/Å, ``energy`` eV, ``energy_std`` eV and ``forces_std`` eV/Å (a potential
ensemble's spread; else empty), ``uncertain`` (true/false: the spread is above the
ensemble's calibrated flag threshold; empty without one), the property
``<target>_<unit>`` (e.g. ``gap_eV``) and ``<target>_<unit>_std`` (a property ensemble's
spread; else empty). A number that does not exist for a molecule is an empty cell.

Geometries (extxyz, or SDF with the input's bonds): one record per molecule with a relaxed
geometry (converged or step_limit; failed and diverged ones have none), carrying ``index``
(the CSV row), the row's numbers and the relaxation's keys (see
:mod:`force2geo.relax.output`) and forces (extxyz).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import replace

from force2geo.atomic import write_text
from force2geo.predict.pipeline import MoleculePrediction
from force2geo.relax.output import extxyz_record, output_format, sdf_record

FIXED = ("index", "name", "smiles", "n_atoms", "status", "reason", "start", "n_steps",
         "fmax", "energy", "energy_std", "forces_std", "uncertain")
UNITS = {"fmax": "eV/Å", "energy": "eV", "energy_std": "eV", "forces_std": "eV/Å"}
DECIMALS = 6


def property_column(target: str, unit: str = "eV") -> str:
    """The CSV column of a property: ``gap`` in eV is ``gap_eV``."""
    return f"{target}_{unit}"


def columns(target: str, unit: str = "eV") -> list[str]:
    column = property_column(target, unit)
    return [*FIXED, column, f"{column}_std"]


def column_units(target: str, unit: str = "eV") -> dict[str, str]:
    column = property_column(target, unit)
    return {**UNITS, column: unit, f"{column}_std": unit}


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.{DECIMALS}f}"


def row(molecule: MoleculePrediction, target: str, unit: str = "eV") -> dict[str, str]:
    """The CSV row of one molecule (strings; empty where a number does not exist)."""
    c, r = molecule.candidate, molecule.result
    column = property_column(target, unit)
    relaxed = molecule.relaxed
    return {
        "index": str(molecule.index), "name": c.name, "smiles": c.smiles,
        "n_atoms": "" if molecule.n_atoms is None else str(molecule.n_atoms),
        "status": molecule.status, "reason": molecule.reason, "start": c.start,
        "n_steps": "" if r is None else str(r.n_steps),
        "fmax": _number(r.fmax if relaxed else None),
        "energy": _number(r.energy if relaxed else None),
        "energy_std": _number(molecule.energy_std),
        "forces_std": _number(molecule.forces_std),
        "uncertain": "" if molecule.uncertain is None else str(molecule.uncertain).lower(),
        column: _number(molecule.value), f"{column}_std": _number(molecule.value_std),
    }


def write_csv(path: str | os.PathLike, molecules: list[MoleculePrediction], target: str,
              unit: str = "eV") -> None:
    """``path``: the header and one row per molecule, in the given order (atomically)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns(target, unit), lineterminator="\n")
    writer.writeheader()
    writer.writerows(row(m, target, unit) for m in molecules)
    write_text(path, text.getvalue())


def geometry_info(molecule: MoleculePrediction, target: str, unit: str = "eV") -> dict:
    """Keys of a molecule's geometry record: the input record's own, ``index``, ``name``,
    ``smiles``, ``start`` and the numbers of its row that exist (the relaxation's own keys
    are added by :func:`force2geo.relax.output.result_info`)."""
    c = molecule.candidate
    column = property_column(target, unit)
    extra = {"energy_std": molecule.energy_std, "forces_std": molecule.forces_std,
             "uncertain": molecule.uncertain,
             column: molecule.value, f"{column}_std": molecule.value_std}
    return {**c.molecule.info, "index": molecule.index, "name": c.name, "smiles": c.smiles,
            "start": c.start, **{k: v for k, v in extra.items() if v is not None}}


def write_geometries(path: str | os.PathLike, molecules: list[MoleculePrediction],
                     target: str, unit: str = "eV") -> int:
    """The relaxed geometries (see the module docstring) to ``path`` (.xyz/.extxyz or
    .sdf), atomically; returns how many records were written."""
    record = extxyz_record if output_format(path) == "extxyz" else sdf_record
    parts = []
    for m in molecules:
        if m.relaxed:
            start = replace(m.candidate.molecule, info=geometry_info(m, target, unit))
            parts.append(record(start, m.result))
    write_text(path, "".join(parts))
    return len(parts)
