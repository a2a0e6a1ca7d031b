#!/usr/bin/env bash
# `--steps auto` masks (the budget planner, blockmask/learning/planner.py: the step count K and the mask for a MAC
# budget B relative to the plain 50-step model), for the comparison with DDIM with fewer steps in
# docs/RESULTS.md. For a whole frontier with the peers scored: benchmarks/frontier.py.
#   [BUDGETS="35 45 55"] [REF=50] bash scripts/auto_masks.sh [MODEL ...]   -> docs/results/steps-auto/
# then:  python benchmarks/budget_table.py --model MODEL --steps 50 -o docs/results/budgets-MODEL-50 \
#          --only auto- --merge --extra "learned, K auto (blockmask)=docs/results/steps-auto/MODEL-auto-b*.json"
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
budgets=${BUDGETS:-35 45 55}
ref=${REF:-50}
models=("${@:-mnist-ddpm mnist-dit}")
mkdir -p docs/results/steps-auto
for model in ${models[@]}; do
  for b in $budgets; do
    out="docs/results/steps-auto/${model}-auto-b${b}.json"
    t0=$(date +%s)
    blockmask train "$model" --steps auto --ref-steps "$ref" --target-macs "0.$b" -o "$out" --json > /dev/null
    python -c "import json; d=json.load(open('$out')); p=d['meta']['plan']; print('$out', 'K =', d['num_steps'], p['provenance']['name'], round(p['macs_ratio_vs_ref'], 4), 'validation', round(p['validation']['psnr'], 2), 'dB', $(date +%s)-$t0, 's')"
  done
done
