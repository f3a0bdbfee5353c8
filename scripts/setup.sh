#!/usr/bin/env bash
# Create .venv and install force2geo with its dependencies at the exact versions of
# requirements/constraints.txt (idempotent). The constraints are compiled by uv from
# pyproject.toml's ranges and requirements/pins.in (torch 2.13.0: the CPU wheel this
# machine kind carries; an unpinned torch would pull a multi-GB CUDA build); how to
# refresh them: the first line of that file and the README. Installing needs pip only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
install=(.venv/bin/python -m pip install --quiet --disable-pip-version-check
         --constraint requirements/constraints.txt)
"${install[@]}" pip  # the pinned pip installs the rest
# [mace]: the optional MACE backbone, installed here so that CI tests it (30-80 s more).
"${install[@]}" -e ".[dev,mace]"
