#!/usr/bin/env bash
# Recipe search for `lorita demo` on Fashion-MNIST. Each variant is one `lorita demo` run;
# the params-kept ratio it reports comes from cuts chosen on VALIDATION data, so comparing
# variants by it never looks at the test split.
# Usage: bash experiments/tune_demo.sh [OUT_ROOT]   (about 5 minutes per variant on 2 idle CPU cores)
set -euo pipefail
root="${1:-runs/tune}"
mkdir -p "$root"
variant() {  # name, then extra flags
  local name="$1"; shift
  .venv/bin/lorita demo --out "$root/$name" --overwrite --no-progress "$@" > "$root/$name.log" 2>&1 \
    || { echo "$name failed: see $root/$name.log"; return; }
  .venv/bin/python experiments/summarize_demo.py "$root/$name/results.json"
}
variant base
variant seed1 --seed 1
variant wd1e-3 --weight-decay 1e-3
variant balanced --init balanced
