#!/usr/bin/env bash
# The tables of docs/RESULTS.md: Table 1 in miniature (both bundled models) and the ablations of
# Tables 4-5 (mnist-ddpm). N and K are arguments so that a GPU run can use N >= 5000:
#   bash scripts/results_tables.sh [N_DDPM] [N_DIT] [K]
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
N_DDPM=${1:-256}; N_DIT=${2:-200}; K=${3:-50}
A=docs/results/ablation-masks; mkdir -p "$A"
L=${LAMBDA_DDPM:-0.5}
# Ablation masks (mnist-ddpm, K steps): Gumbel sampling, constant λ, no bimodal term.
blockmask train mnist-ddpm --steps "$K" --iters 20 --batch 4 --lambda "$L" --sampler gumbel -o "$A/gumbel.json" --json > /dev/null &
blockmask train mnist-ddpm --steps "$K" --iters 20 --batch 4 --lambda "$L" --lambda-mode constant -o "$A/constant-lambda.json" --json > /dev/null &
wait
blockmask train mnist-ddpm --steps "$K" --iters 20 --batch 4 --lambda "$L" --beta 0 -o "$A/no-bimodal.json" --json > /dev/null
M=assets/masks/mnist-ddpm-$(printf %03d "$K")steps.json
T=assets/masks/mnist-dit-$(printf %03d "$K")steps.json
blockmask eval mnist-ddpm --steps "$K" --mask "learned=$M" --ablate-rectify --deepcache 2,3 --fora 2 --uniform 2 \
  --random-matched --fewer-steps --num-samples "$N_DDPM" --batch 64 --bench-batch 8 --bench-repeats 2 \
  -o "docs/results/mnist-ddpm-$K" &
blockmask eval mnist-dit --steps "$K" --guidance-scale 3 --mask "learned=$T" --ablate-rectify --fora 2,3 \
  --random-matched --fewer-steps --num-samples "$N_DIT" --batch 50 --bench-batch 8 --bench-repeats 2 \
  -o "docs/results/mnist-dit-$K" &
wait
blockmask eval mnist-ddpm --steps "$K" --mask "learned (random sampling)=$M" --mask "Gumbel sampling=$A/gumbel.json" \
  --mask "constant λ=$A/constant-lambda.json" --mask "no bimodal loss=$A/no-bimodal.json" \
  --num-samples "$N_DDPM" --batch 64 --bench-batch 8 --bench-repeats 2 -o "docs/results/mnist-ddpm-$K-ablations"
