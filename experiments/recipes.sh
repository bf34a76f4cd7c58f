#!/usr/bin/env bash
# The recipe grid of docs/RESULTS.md: `lorita demo` once per setting, every column (plain and LoRITa alike)
# trained with that setting, so each column gets the same tuning effort; then the table of every setting
# tried, choices made on validation data only (experiments/recipes.py).
# Usage: bash experiments/recipes.sh [OUT_ROOT] [extra lorita demo flags]
#   (about 8 minutes per setting on 2 idle CPU cores; six settings)
set -euo pipefail
root="${1:-runs/recipes}"; shift || true
mkdir -p "$root"
setting() {  # name, then the setting's flags
  local name="$1"; shift
  .venv/bin/lorita demo --out "$root/$name" --overwrite --no-progress "$@" > "$root/$name.log" 2>&1 \
    || { echo "$name failed: see $root/$name.log"; return; }
}
for wd in 0.0005 0.001 0.002; do setting "wd$wd" --weight-decay "$wd" "$@"; done
# warm start (docs/METHOD.md section 5's calibration): plain 8 epochs, then LoRITa from that model for 4
setting warm8-wd0.002 --warm-start-epochs 8 --warm-start-lr 0.02 --warm-start-weight-decay 0.002 "$@"
setting warm6-wd0.005 --warm-start-epochs 6 --warm-start-lr 0.02 --warm-start-weight-decay 0.005 "$@"
setting balanced --init balanced "$@"
.venv/bin/python experiments/recipes.py "$root"/*/results.json
