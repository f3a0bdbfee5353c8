#!/usr/bin/env bash
# Create .venv and install force2geo with its dependencies (idempotent).
# torch is pinned here, not in pyproject: 2.13.0 is the CPU wheel this machine kind carries;
# an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
# [mace]: the optional MACE backbone, installed here so that CI tests it (30-80 s more).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev,mace]"
