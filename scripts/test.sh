#!/usr/bin/env bash
# Fresh machine to test results in one command: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
# The real data some tests read (Fashion-MNIST, the fortunes text) from Debian when possible; tests skip without it.
if { [ ! -d /usr/share/datasets/fashion-mnist ] || [ ! -d /usr/share/games/fortunes ]; } && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist fortunes) \
      || echo "note: could not install dataset-fashion-mnist and fortunes; the tests that read them skip"
  else
    echo "note: 'sudo apt-get install dataset-fashion-mnist fortunes' for the tests that read real data (they skip)"
  fi
fi
bash scripts/setup.sh test
exec .venv/bin/python -m pytest -q --durations=20 "$@"   # the 20 slowest, to keep the suite fast
