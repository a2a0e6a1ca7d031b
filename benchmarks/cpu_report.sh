#!/usr/bin/env bash
# CPU measurements quoted in docs/PERFORMANCE.md. Run on an otherwise idle machine:
#   bash benchmarks/cpu_report.sh > cpu_report.txt
set -euo pipefail
cd "$(dirname "$0")/.."
CIFAR=config:tests/configs/reference/ddpm-cifar10-32.json
tmp=$(mktemp -d)
echo "== bench: DDPM CIFAR-10 config, 20 DDIM steps, batch 4, 50%-skipped random mask (rectified)"
blockmask mask random "$CIFAR" --steps 20 --skip 0.5 --seed 0 --rectify -o "$tmp/half.json" >/dev/null
blockmask bench "$CIFAR" --steps 20 --mask "$tmp/half.json" --batch 4 --repeats 3
echo "== bench: same, FORA interval 2 (every unit skipped on odd steps)"
blockmask mask fora "$CIFAR" --steps 20 --interval 2 -o "$tmp/fora.json" >/dev/null
blockmask bench "$CIFAR" --steps 20 --mask "$tmp/fora.json" --batch 4 --repeats 3
echo "== all-ones overhead, mnist-ddpm, 50 steps, batch 8"
python benchmarks/overhead.py --model mnist-ddpm --steps 50 --batch 8 --repeats 7
echo "== sampling time, 8 images x 50 DDIM steps"
python - <<'PY'
import time
from blockmask.workbench import Workbench
from blockmask.sampling.sample import Condition
for spec, cond in (("mnist-ddpm", None), ("mnist-dit", Condition(class_labels=list(range(8)), guidance_scale=3.0))):
    wb = Workbench.load(spec)
    wb.generate(None, steps=5, num_images=8, condition=cond)
    t0 = time.perf_counter(); wb.generate(None, steps=50, num_images=8, condition=cond)
    print(f"{spec}: {time.perf_counter() - t0:.2f} s")
PY
echo "== training memory, mnist-ddpm, K=10 vs K=100 (separate processes, 20 iters, batch 4)"
for k in 10 100; do
  blockmask train mnist-ddpm --steps $k --iters 20 --batch 4 -o "$tmp/m$k.json" --json | python -c "import json,sys; d=json.load(sys.stdin); print('K=$k', 'peak RSS MB', round(d['peak_rss_mb']), 'train s', round(d['train_seconds']), 's/step', round(d['per_step_seconds'], 2))"
done
rm -rf "$tmp"
