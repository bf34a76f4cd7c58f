#!/usr/bin/env bash
# The language-model table of docs/LM.md: every method at 90/80/70/60% of SmolLM2-135M's params, each recovered by
# LoRA for the same 3 minutes of wall time (plain SVD: the cut alone), with batch-1 speed; then the tables and the plot.
# Four runs, each writing docs/lm/table/NAME.json (and .log) and skipped when its JSON is complete; about 3 hours
# on 2 idle cores in all. Usage: bash scripts/lm_table.sh   (LOCK=/path/to/lockfile: hold a lock shared with other
# heavy jobs on the machine around each run; CUT_CACHE=DIR: keep each cut there and reuse it in a later call)
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-.venv/bin/python}"
lock="${LOCK:-}"
out=docs/lm/table
mkdir -p "$out"
common=(--budgets 0.9 0.8 0.7 0.6 --report fortunes-val python-docs-val licenses --speed --repeats 3)
recovered=(--steps 1000 --recovery lora --recovery-minutes 3 ${CUT_CACHE:+--cut-cache "$CUT_CACHE"})
run() {  # run NAME ARGS...: one lm_compress.py run into $out/NAME.json, unless a complete one is there
  local name="$1"; shift
  if [ -s "$out/$name.json" ] && "$py" -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(len(d["rows"]) < int(sys.argv[2]))' "$out/$name.json" "$1"; then
    shift; echo "$name: done in an earlier call"; return
  fi
  shift
  local cmd=("$py" benchmarks/lm_compress.py "${common[@]}" "$@" --json "$out/$name.json")
  if [ -n "$lock" ]; then flock "$lock" "${cmd[@]}"; else "${cmd[@]}"; fi > "$out/$name.log" 2>&1
}
run whitened-update-width 8 --methods whitened-update width "${recovered[@]}"
run width-act 4 --methods width-act "${recovered[@]}"
run width-refit 4 --methods width-refit "${recovered[@]}"
run plain 4 --methods plain
"$py" benchmarks/lm_report.py "$out"/*.json --text licenses --plot docs/lm/ppl-vs-params.png > "$out/table-licenses.md"
for text in fortunes-val python-docs-val; do
  "$py" benchmarks/lm_report.py "$out"/*.json --text "$text" > "$out/table-$text.md"
done
