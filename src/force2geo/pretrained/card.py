"""The model card: a Markdown page rendered from the facts JSON of
:mod:`force2geo.pretrained.facts`, next to the weights.

Every number on the card comes from the facts; a section whose facts are missing says so
rather than being left out, so a card never looks more complete than the evidence.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from force2geo.atomic import write_text

CARD = "MODEL_CARD.md"
ERROR_ROWS = (("energy_mae", "energy MAE", "meV/atom"),
              ("energy_mae_total", "energy MAE per molecule", "meV"),
              ("force_mae", "force MAE (components)", "meV/Å"),
              ("force_rmse", "force RMSE (components)", "meV/Å"),
              ("force_cos", "force cosine similarity", ""))
RELAX_ROWS = (("pct_T", "pct_T (%)"), ("pct_success", "pct_success (%)"),
              ("pct_div", "pct_div (%)"), ("pct_FWT", "pct_FWT (%)"))


def _number(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**20:.2f} MiB" if n_bytes >= 2**20 else f"{n_bytes / 2**10:.1f} KiB"


def _sizes(atoms: dict) -> str:
    if not atoms:
        return "no molecules"
    return f"{atoms['min']} to {atoms['max']} atoms per molecule (mean {atoms['mean']:.1f})"


def _relax_settings(relax: dict | None) -> str:
    if not relax:
        return "settings not recorded"
    return (f"{relax['optimizer'].upper()}, fmax {relax['fmax']} eV/Å, at most "
            f"{relax['max_steps']} steps")


def _model_section(facts: dict) -> list[str]:
    model = facts["model"]
    config = ", ".join(f"{k}={v}" for k, v in model["config"].items())
    lines = ["## Model", "",
             f"- Backbone: {model['backbone']} ({config}); {model['parameters']:,} parameters, "
             f"{model['dtype']}.",
             "- Output: total energy E = sum over atoms of (network term + per-element "
             f"reference energy) in {facts['units']['energy']}; forces F = -dE/dx in "
             f"{facts['units']['forces']}; positions in {facts['units']['positions']}.",
             f"- Labels: {facts['level_of_theory'] or 'see training data'}."]
    if model.get("elements"):
        lines.append(f"- Elements it was trained on: {' '.join(model['elements'])}. relax, "
                     "predict, evaluate and the ASE calculator refuse a molecule with any "
                     "other (status failed, with the reason).")
    if model["ensemble"]:
        lines.append(f"- Ensemble of {len(model['files'])} members: the mean is the model; "
                     "the spread (energy_std eV, forces_std eV/Å) flags uncertain molecules.")
    lines += ["", "| file | SHA-256 | size |", "| --- | --- | --- |"]
    lines += [f"| `{f['file']}` | `{f['sha256']}` | {_size(f['size'])} |"
              for f in model["files"]]
    return lines + [""]


def _data_section(facts: dict) -> list[str]:
    data = facts["training_data"]
    levels = ", ".join(f"{stage}: {level}" for stage, level in data["level_of_theory"].items())
    lines = ["## Training data", "",
             f"- Sources: {'; '.join(data['sources']) or 'not recorded'}.",
             f"- Snapshot stages used (level of theory): {levels}.",
             f"- Store fingerprint `{data['store_fingerprint']}`; split: {data['split']}.",
             f"- Elements: {', '.join(data['elements'])}; {_sizes(data['atoms_per_molecule'])}.",
             "",
             "| part | molecules (InChIKeys) | trajectories | snapshots |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {name} | {c['molecules']:,} | {c['trajectories']:,} | {c['snapshots']:,} |"
              for name, c in data["parts"].items()]
    init = data.get("init")
    if init:
        digest = f" (SHA-256 `{init['sha256']}`)" if init.get("sha256") else ""
        named = f", exported as {init['exported_as']}" if init.get("exported_as") else ""
        lines += ["", f"Warm start: training began from the weights of `{init['checkpoint']}`"
                  f"{digest}{named}; the molecules that model was trained on count as seen "
                  "too."]
    keys = data.get("inchikeys")
    if keys:
        where = (f"listed in `{keys['file']}`" if keys.get("file")
                 else "list not shipped (too large)")
        lines += ["", f"InChIKeys of the {' and '.join(keys['parts'])} parts: "
                  f"{keys['count']:,} molecules, {where}; SHA-256 of the sorted list (one key "
                  f"per line, each ending in a newline) `{keys['sha256']}`. Check a test set "
                  "for leakage against it (`force2geo.pretrained.inchikey_digest`)."]
    return lines + [""]


def _errors_section(facts: dict) -> list[str]:
    members = facts["model"]["members"]
    heads = [f"validation ({m['file']})" for m in members] + ["test (held out)"]
    columns = [m.get("validation") or {} for m in members] + [facts.get("test") or {}]
    lines = ["## Energy and force errors", "",
             "Validation: the split part that chose the checkpoint (slightly optimistic). "
             "Test: never seen in training or selection"
             + (", scored on the ensemble mean." if facts["model"]["ensemble"] else "."), "",
             "| metric | " + " | ".join(heads) + " |",
             "| --- |" + " --- |" * len(heads)]
    for key, label, unit in ERROR_ROWS:
        digits = 3 if key == "force_cos" else 1
        values = " | ".join(_number(c.get(key), digits) for c in columns)
        lines.append(f"| {label}{f' ({unit})' if unit else ''} | {values} |")
    return lines + [""]


def _relaxation_section(facts: dict) -> list[str]:
    relax = facts.get("relaxation")
    if not relax:
        return ["## Geometry optimisation", "", "Not evaluated.", ""]
    paper = relax.get("paper_table3") or {}
    lines = ["## Geometry optimisation", "",
             f"MLIP relaxations ({_relax_settings(relax.get('relax'))}) of "
             f"{relax.get('n_molecules')} molecules from {relax.get('molecules_from')}, "
             f"starting at {relax.get('start')}, scored by "
             f"{relax.get('oracle')} single points (paper §4.2, A.2; report: "
             f"`{relax.get('report')}`).", "",
             "| metric | this model | paper Table 3 (PaiNN, DFT oracle) |",
             "| --- | --- | --- |"]
    lines += [f"| {label} | {_number(relax.get(key))} | {_number(paper.get(key))} |"
              for key, label in RELAX_ROWS]
    lines += ["", f"Median MLIP steps {_number(relax['mlip_steps']['median'], 1)}, median "
              f"heavy-atom RMSD to the reference minimum "
              f"{_number(relax['rmsd_heavy_A']['median'], 3)} Å, median residual energy "
              f"{_number(relax['e_res_kcal_per_mol']['median'])} kcal/mol. The paper's "
              "numbers use another oracle, data and starts: a scale, not a like-for-like "
              "comparison.", ""]
    return lines


def render_model_card(facts: dict) -> str:
    """The Markdown text of the card of ``facts``."""
    data = facts["training_data"]
    lines = [f"# {facts['name']}", "", facts.get("description") or "", "",
             *_model_section(facts), *_data_section(facts), *_errors_section(facts),
             *_relaxation_section(facts),
             "## Intended use and limits", "",
             f"Geometry relaxation and energies of neutral, closed-shell molecules made of "
             f"{', '.join(data['elements'])} of the sizes above, at the level of theory of "
             "its labels (not DFT where the labels are xTB). Outside that domain errors grow "
             "without warning, unless an ensemble's spread flags them.", "",
             "## License", "", f"{facts.get('license', 'MIT')}.", "",
             "## Reproduce", "", "```bash", *(facts.get("reproduce") or
                                             ["# commands not recorded"]), "```", "",
             f"Card written by force2geo {facts.get('force2geo_version')}."]
    return "\n".join(lines).rstrip() + "\n"


def write_model_card(facts: dict | str | os.PathLike, folder: str | os.PathLike,
                     file_name: str = CARD) -> Path:
    """Render ``facts`` (a dict or a facts JSON file) to ``folder/file_name``, atomically."""
    if not isinstance(facts, dict):
        facts = json.loads(Path(facts).read_text())
    return write_text(Path(folder) / file_name, render_model_card(facts))


def make_model_card(name: str, folder: str | os.PathLike | None = None,
                    evaluation: str | os.PathLike | None = None,
                    store: str | os.PathLike | None = None, commands=(),
                    test_errors: bool = True) -> Path:
    """Gather the facts of registered model ``name`` (see
    :func:`~force2geo.pretrained.facts.collect_facts`), write ``NAME.facts.json``, the
    InChIKey list (when small) and the card into ``folder``, and record the card in the
    registry. Returns the card's path."""
    import dataclasses

    from force2geo.atomic import write_json
    from force2geo.pretrained.facts import collect_facts, write_inchikeys
    from force2geo.pretrained.registry import read_registry, register, weights_dir

    folder = Path(folder or weights_dir())
    facts, seen = collect_facts(name, folder, evaluation, store, commands, test_errors)
    facts["training_data"]["inchikeys"] = write_inchikeys(seen, folder, name)
    write_json(folder / f"{name}.facts.json", facts, indent=1)
    card = write_model_card(facts, folder)
    register(dataclasses.replace(read_registry(folder)[name], card=card.name), folder)
    return card
