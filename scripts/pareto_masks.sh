#!/usr/bin/env bash
# The shipped Pareto set of learned masks (assets/masks/MODEL-050steps-bNN.json): one budget run per
# MAC budget B (per-step training, best rule or learned mask within B on calibration seeds 1000..,
# then local refinement; blockmask/train_run.py). About 4-8 min per mask on the 2-core CPU.
#   bash scripts/pareto_masks.sh [MODEL ...]      (default: mnist-ddpm mnist-dit)
set -euo pipefail
cd "$(dirname "$0")/.."
models=("${@:-mnist-ddpm mnist-dit}")
for model in ${models[@]}; do
  for b in 35 45 55 65 75; do
    out="assets/masks/${model}-050steps-b${b}.json"
    blockmask train "$model" --steps 50 --iters 10 --target-macs "0.$b" --calib-batch 16 --refine-passes 2 \
      -o "$out" --json > /dev/null
    python -c "import json,sys; d=json.load(open('$out')); c=d['meta']['calibration']; print('$out', round(d['meta']['macs']['ratio'],4), c['start'], round(c['refine']['gain_db'],2), 'dB')"
  done
done
# held-out PSNR of every mask (meta.heldout: 32 samples from seed 5000), shown by the apps' preset lists
for model in ${models[@]}; do python scripts/mask_heldout.py assets/masks/${model}-050steps-b*.json; done
