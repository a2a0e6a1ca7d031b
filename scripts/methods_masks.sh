#!/usr/bin/env bash
# Masks of the other methods (docs/METHODS_COMPARED.md) for the bundled models at K=50, budgets 35..75%.
#   bash scripts/methods_masks.sh [MODEL ...]      (default: mnist-ddpm mnist-dit; MNIST via $BLOCKMASK_MNIST)
set -euo pipefail
models=("${@:-mnist-ddpm}")
[ $# -eq 0 ] && models=(mnist-ddpm mnist-dit)
for model in "${models[@]}"; do
  out=docs/results/methods-$model-50/masks
  mkdir -p "$out"
  for b in 35 45 55 65 75; do
    for kind in feature-change router global; do
      [ -f "$out/$kind-b$b.json" ] && continue
      blockmask method "$kind" "$model" --steps 50 --target-macs "0.$b" -o "$out/$kind-b$b.json" --json \
        > "$out/$kind-b$b.log" 2>/dev/null
      python -c "import json,sys; d=json.load(open(sys.argv[1])); print(sys.argv[1], d['macs_ratio'], round(d['train_seconds'],1))" "$out/$kind-b$b.log"
    done
  done
done
