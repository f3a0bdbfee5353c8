#!/usr/bin/env bash
# Set up, lint, and run the test suite (slow tests excluded; run them with: -m slow).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/python -m pytest -q "$@"
