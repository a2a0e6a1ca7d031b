#!/usr/bin/env bash
# The tables of docs/RESULTS.md: Table 1 in miniature and the ablations of Tables 4-5.
#   bash scripts/results_tables.sh table1-ddpm N K      # mnist-ddpm: learned vs baselines, N samples, K steps
#   bash scripts/results_tables.sh table1-dit N K       # mnist-dit (guidance $GUIDANCE_DIT, default 1 = no CFG)
#   bash scripts/results_tables.sh ablations N K        # mnist-ddpm: ablation masks (trained here) vs learned
#   bash scripts/results_tables.sh ddpm100 N            # mnist-ddpm, 100 steps: shipped mask (λ=2.5), λ=2, baselines
#   MODEL=mnist-ldm bash scripts/results_tables.sh table1-latent N K   # mnist-ldm | mnist-pixart at their own
#       guidance: learned ($MASK, default the shipped b45 mask), FORA, DeepCache (U-Net), DDIM fewer steps, random
# Rows are cached by content (.cache/blockmask-eval), so re-running a table only computes new rows.
# N >= 1000 on CPU, N >= 5000 on a GPU (add --device cuda through $EXTRA).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
WHAT=${1:?table1-ddpm | table1-dit | table1-latent | ablations | ddpm100}; N=${2:-1000}; K=${3:-50}
KK=$(printf %03d "$K")
EXTRA=${EXTRA:-}
case "$WHAT" in
table1-ddpm)
  # shellcheck disable=SC2086
  S=docs/results/ablation-masks/sensitivity.json  # made by the ablations table (K=50)
  SENS=(); [ "$K" = 50 ] && [ -f "$S" ] && SENS=(--mask "learned, sensitivity norm (λ=3)=$S")
  blockmask eval mnist-ddpm --steps "$K" --mask "learned=assets/masks/mnist-ddpm-${KK}steps.json" "${SENS[@]}" \
    --deepcache 2,3 --fewer-steps --random-matched --num-samples "$N" --batch 50 --bench-batch 8 \
    --bench-repeats 2 $EXTRA -o "docs/results/mnist-ddpm-$K"
  ;;
table1-dit)
  G=${GUIDANCE_DIT:-1.0}  # the shipped DiT masks are trained at guidance 1 (scripts/bundled_masks.sh)
  M=${MASK_DIT:-assets/masks/mnist-dit-${KK}steps.json}
  S=docs/results/ablation-masks/mnist-dit-050steps-sensitivity.json  # --feature-norm sensitivity --target-macs 0.5
  SENS=(); [ "$K" = 50 ] && [ "$G" = 1.0 ] && [ -f "$S" ] && SENS=(--mask "learned, sensitivity norm=$S")
  # shellcheck disable=SC2086
  blockmask eval mnist-dit --steps "$K" --guidance-scale "$G" --mask "learned=$M" "${SENS[@]}" \
    --fora 2,3 --fewer-steps --random-matched --num-samples "$N" --batch 50 --bench-batch 8 --bench-repeats 2 \
    $EXTRA -o "docs/results/mnist-dit-$K-g$G"
  ;;
table1-latent)
  M=${MODEL:?MODEL=mnist-ldm or mnist-pixart}
  MK=${MASK:-assets/masks/${M}-${KK}steps-b45.json}
  DC=(); [ "$M" = mnist-ldm ] && DC=(--deepcache 2,3)
  # shellcheck disable=SC2086
  blockmask eval "$M" --steps "$K" --mask "learned=$MK" "${DC[@]}" --fora 2,3 --fewer-steps --random-matched \
    --num-samples "$N" --batch 50 --bench-batch 8 --bench-repeats 2 $EXTRA -o "${OUTDIR:-docs/results}/$M-$K"
  ;;
ablations)
  A=docs/results/ablation-masks; mkdir -p "$A"
  L=${LAMBDA_DDPM:-2.0}
  T="blockmask train mnist-ddpm --steps $K --iters 20 --batch 4 --lambda $L --json"
  [ -f "$A/gumbel.json" ] || $T --sampler gumbel -o "$A/gumbel.json" > /dev/null
  [ -f "$A/constant-lambda.json" ] || $T --lambda-mode constant -o "$A/constant-lambda.json" > /dev/null
  [ -f "$A/no-bimodal.json" ] || $T --beta 0 -o "$A/no-bimodal.json" > /dev/null
  [ -f "$A/count-sparsity.json" ] || $T --sparsity count -o "$A/count-sparsity.json" > /dev/null
  [ -f "$A/sensitivity.json" ] || blockmask train mnist-ddpm --steps "$K" --iters 20 --batch 4 --lambda 3 \
    --feature-norm sensitivity --json -o "$A/sensitivity.json" > /dev/null
  # shellcheck disable=SC2086
  blockmask eval mnist-ddpm --steps "$K" --mask "learned=assets/masks/mnist-ddpm-${KK}steps.json" --ablate-rectify \
    --mask "Gumbel sampling=$A/gumbel.json" --mask "constant λ=$A/constant-lambda.json" \
    --mask "no bimodal loss=$A/no-bimodal.json" --mask "count sparsity (Eq. 6)=$A/count-sparsity.json" \
    --mask "sensitivity norm (λ=3)=$A/sensitivity.json" --deepcache 2,3 \
    --num-samples "$N" --batch 64 --bench-batch 8 --bench-repeats 2 $EXTRA -o "docs/results/mnist-ddpm-$K-ablations"
  ;;
ddpm100)
  # shellcheck disable=SC2086
  blockmask eval mnist-ddpm --steps 100 --mask "learned (λ=2.5)=assets/masks/mnist-ddpm-100steps.json" \
    --mask "learned (λ=2)=docs/results/ablation-masks/mnist-ddpm-100steps-lambda2.json" --deepcache 3,4 --fewer-steps \
    --fora 2,3 --uniform 2 --random-matched --ablate-rectify --num-samples "$N" --batch 64 --bench-batch 8 --bench-repeats 2 $EXTRA -o docs/results/mnist-ddpm-100
  ;;
*) echo "unknown table $WHAT (table1-ddpm | table1-dit | table1-latent | ablations | ddpm100)" >&2; exit 2 ;;
esac
