#!/usr/bin/env bash
# Fresh machine to test results in one command: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q --durations=20 "$@"   # the 20 slowest, to keep the suite fast
