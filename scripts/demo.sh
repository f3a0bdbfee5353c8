#!/usr/bin/env bash
# The main job on its embedded default: set up, then make a small real relaxation dataset
# (RDKit ETKDG -> MMFF -> GFN2-xTB) from the built-in demo molecules and summarise it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
OUT=${1:-demo}
.venv/bin/force2geo generate builtin:demo -o "$OUT/store"
.venv/bin/force2geo info "$OUT/store"
