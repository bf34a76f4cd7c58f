#!/usr/bin/env bash
# Fresh machine to the main job in one command: bash scripts/demo.sh [lorita demo args]
# Installs Fashion-MNIST from Debian when possible (else the demo falls back to digits).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d /usr/share/datasets/fashion-mnist ] && command -v apt-get >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
      || echo "note: could not install dataset-fashion-mnist; the demo will use digits"
  else
    echo "note: run 'sudo apt-get install dataset-fashion-mnist' for Fashion-MNIST"
  fi
fi
bash scripts/setup.sh cli,data,prune   # prune: the Torch-Pruning + FT column of the headline
exec .venv/bin/lorita demo "$@"
