#!/usr/bin/env bash
# Masks of the other methods (docs/METHODS_COMPARED.md) for the bundled models at K=50, budgets 35..75%.
#   bash scripts/methods_masks.sh [MODEL ...]      (default: mnist-ddpm mnist-dit; MNIST via $BLOCKMASK_MNIST)
# feature-change: measured and searched per budget. router: trained once (its training does not depend
# on the budget, as in L2C), then thresholded per budget (--from-scores). global: trained once at B=0.55,
# then thresholded per budget (compute; a DiP-GO run per budget would retrain with that budget's penalty).
set -euo pipefail
models=("$@")
[ $# -eq 0 ] && models=(mnist-ddpm mnist-dit)
run() {  # KIND MODEL BUDGET OUT [extra args]
  local kind=$1 model=$2 b=$3 out=$4; shift 4
  [ -f "$out/$kind-b$b.json" ] && return 0
  if ! blockmask method "$kind" "$model" --steps 50 --target-macs "0.$b" -o "$out/$kind-b$b.json" --json "$@" \
    > "$out/$kind-b$b.log"; then
    echo "FAILED: $kind $model 0.$b"; return 0
  fi
  python -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], round(d['macs_ratio'],4), round(d['train_seconds'],1))" "$out/$kind-b$b.log"
}
for model in "${models[@]}"; do
  out=docs/results/methods-$model-50/masks
  mkdir -p "$out"
  run router "$model" 35 "$out"
  run global "$model" 55 "$out"
  for b in 35 45 55 65 75; do
    run feature-change "$model" "$b" "$out"
    run router "$model" "$b" "$out" --from-scores "$out/router-b35.json"
    run global "$model" "$b" "$out" --from-scores "$out/global-b55.json"
  done
done
