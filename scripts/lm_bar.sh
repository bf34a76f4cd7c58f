#!/usr/bin/env bash
# The bar of docs/LM.md, as a user meets it: `lorita compress smollm2-135m --params 0.8` timed from start to end, then
# the run scored by `lorita evaluate` on English text that no step calibrated or trained on (Debian's licence texts).
# Writes docs/lm/bar/: the command's output, its wall time (and peak memory where /usr/bin/time exists), the run's
# results.json and one evaluation JSON per text. The model itself (about 540 MB) stays in the run folder.
# Usage: bash scripts/lm_bar.sh [RUN_FOLDER [COMPRESS FLAGS...]]   (default runs/lm-bar-0.8; must not exist yet)
#   e.g. OUT=docs/lm/bar-r30 bash scripts/lm_bar.sh runs/lm-bar-0.8-r30 --recovery-minutes 30
# Heavy: give it the machine (14 minutes at the defaults on an idle 2-core machine, docs/LM.md).
set -euo pipefail
cd "$(dirname "$0")/.."
lorita="${LORITA:-.venv/bin/lorita}"
run="${1:-runs/lm-bar-0.8}"
shift || true
out="${OUT:-docs/lm/bar}"
mkdir -p "$out"
timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -v -o "$out/compress-time.txt")
start=$(date +%s)
echo "# $(date -u '+%F %T') UTC: lorita compress smollm2-135m --params 0.8 --out $run --no-progress $*" > "$out/compress.log"
"${timer[@]}" "$lorita" compress smollm2-135m --params 0.8 --out "$run" --no-progress "$@" >> "$out/compress.log" 2>&1
end=$(date +%s)
echo "# wall time: $((end - start)) s" >> "$out/compress.log"
cp "$run/results.json" "$out/results.json"
for text in GPL-3 Apache-2.0; do
  "$lorita" evaluate "$run" --text "/usr/share/common-licenses/$text" --json > "$out/evaluate-$text.json"
  cat "$out/evaluate-$text.json"
done
