#!/usr/bin/env bash
# Fresh machine to the language experiment in one command: bash scripts/language.sh [lorita experiment args]
# Installs the Debian package fortunes (the text) when possible; runs the reduced GPT recipe (CPU: 642 s, about
# 11 minutes, on 2 cores; docs/RESULTS.md). Shrink it with lorita experiment's own flags, e.g. --set train.epochs=4.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/games/fortunes ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq fortunes) || echo "note: could not install fortunes"
  else
    echo "note: run 'sudo apt-get install fortunes' for the text"
  fi
fi
bash scripts/setup.sh cli
exec .venv/bin/lorita experiment experiments/gpt_fortunes.json --reduced --out runs/gpt-fortunes "$@"
