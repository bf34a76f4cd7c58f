#!/usr/bin/env bash
# The language-model table of docs/LM.md: every method at 90/80/70/60% of SmolLM2-135M's params, recovery included.
# One (budget, method) per run and per hold of the machine-wide lock (each run: load, cut, recover, measure; about
# 20 to 45 minutes on 2 cores), each writing docs/lm/table/METHOD-BUDGET.json; then the table and the plot.
# Usage: bash scripts/lm_table.sh [STEPS]   (STEPS: training steps in all, default 96: after the cut for every
# method but plain SVD; lorita spends a third of them on its induce step before the cut)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-96}"
py="${PYTHON:-.venv/bin/python}"
lock="${LOCK:-}"  # a lock file shared with other heavy jobs on the machine, if any
out=docs/lm/table
mkdir -p "$out"
run() {  # run COMMAND...: under the lock when one is given
  if [ -n "$lock" ]; then flock "$lock" "$@"; else "$@"; fi
}
for budget in 0.9 0.8 0.7 0.6; do
  for method in plain whitened whitened-update lorita width; do
    file="$out/$method-$budget.json"
    [ -s "$file" ] && continue  # done in an earlier call
    extra=(--steps "$steps")
    [ "$method" = plain ] && extra=(--steps 0)  # plain SVD: the cut alone
    [ "$method" = lorita ] && extra+=(--induce-steps $((steps / 3)))  # equal total steps: a third before the cut
    run "$py" benchmarks/lm_compress.py --budgets "$budget" --methods "$method" "${extra[@]}" \
      --report fortunes-val python-docs-val fortunes-test python-docs-test licenses --eval-tokens 8192 --speed \
      --json "$file"
  done
done
"$py" benchmarks/lm_report.py "$out"/*.json --text licenses --plot docs/lm/ppl-vs-params.png
