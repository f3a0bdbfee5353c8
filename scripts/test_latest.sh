#!/usr/bin/env bash
# Not in CI: lint and run the test suite against the newest release of every dependency
# (no constraints file; torch still 2.13.0), in a fresh venv of its own (.venv-latest), so
# that a release that breaks force2geo shows up here before users meet it. When it
# passes, refresh requirements/constraints.txt (README, "Pinned installs").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-latest
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
install=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${install[@]}" --upgrade pip
"${install[@]}" "torch==2.13.0" -e ".[dev,mace]"
"$VENV/bin/python" -m pip freeze --exclude-editable > "$VENV/versions.txt"
echo "newest releases installed: $VENV/versions.txt"
"$VENV/bin/ruff" check src tests benchmarks scripts
"$VENV/bin/python" -m pytest -q "$@"
