#!/usr/bin/env bash
# Set up a virtualenv in .venv with torch==2.13.0 first (CPU wheel here), then lorita.
# Usage: bash scripts/setup.sh [EXTRAS]   (EXTRAS like "all" or "test"; default "all")
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-all}"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: an unpinned torch would pull gigabytes of CUDA packages.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[${extras}]"
