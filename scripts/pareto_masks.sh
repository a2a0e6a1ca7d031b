#!/usr/bin/env bash
# The shipped Pareto set of learned masks (assets/masks/MODEL-NNNsteps-bNN.json): one budget run per
# MAC budget B (per-step training, best rule or learned mask within B on calibration seeds 1000..,
# then local refinement; blockmask/learning/run.py; the previous budget's mask is among the starts). On the
# 2-core CPU, one thread: about 4-8 min per mask at K=50, 15-30 min at K=100.
#   [STEPS=50] [PASSES=2] [BUDGETS="35 45 55 65 75"] [EXTRA="--device cuda"] bash scripts/pareto_masks.sh [MODEL ...]
#   (default models: mnist-ddpm mnist-dit; the K=100 set was made with STEPS=100 PASSES=1)
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
steps=${STEPS:-50}
passes=${PASSES:-2}
budgets=${BUDGETS:-35 45 55 65 75}
extra=${EXTRA:-}
models=("${@:-mnist-ddpm mnist-dit}")
k=$(printf '%03d' "$steps")
for model in ${models[@]}; do
  prev=""
  for b in $budgets; do
    out="assets/masks/${model}-${k}steps-b${b}.json"
    t0=$(date +%s)
    # the next lower budget's mask is a start candidate too: the set never gets worse as the budget grows
    start=(); [ -n "$prev" ] && [ -f "$prev" ] && start=(--start-from "$prev")
    blockmask train "$model" --steps "$steps" --iters 10 --target-macs "0.$b" --calib-batch 16 \
      --refine-passes "$passes" "${start[@]}" -o "$out" --json $extra > /dev/null
    prev=$out
    python -c "import json,sys; d=json.load(open('$out')); c=d['meta']['calibration']; print('$out', round(d['meta']['macs']['ratio'],4), c['start'], round(c.get('refine',{}).get('gain_db',0),2), 'dB', $(date +%s)-$t0, 's')"
  done
done
# held-out PSNR of every mask (meta.heldout: 32 samples from seed 5000), shown by the apps' preset lists
for model in ${models[@]}; do python scripts/mask_heldout.py assets/masks/${model}-${k}steps-b[0-9][0-9].json; done
