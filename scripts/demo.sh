#!/usr/bin/env bash
# The main job on its embedded default: set up, then run the whole pipeline on the twelve
# built-in demo molecules: SMILES -> RDKit conformer (ETKDG + MMFF94) -> relaxation with the
# shipped PaiNN potential (batched BFGS, fmax 0.05 eV/Å) -> HOMO-LUMO gap from the shipped
# property model on the relaxed geometry. Writes OUT/predictions.csv (one row per molecule,
# with status and uncertainty columns), OUT/predictions.xyz (relaxed geometries),
# OUT/predictions.json (run record) and a short report with a histogram.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-demo}
mkdir -p "$OUT"
.venv/bin/force2geo predict builtin:demo -o "$OUT/predictions.csv" --overwrite --no-progress
column -s, -t < "$OUT/predictions.csv" 2>/dev/null || cat "$OUT/predictions.csv"
