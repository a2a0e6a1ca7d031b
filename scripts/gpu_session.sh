#!/usr/bin/env bash
# Everything this project does with one short GPU lease, in priority order, as one command
# (~8 min on one H100/H200; each stage is time-boxed and its results are packed as soon as they exist):
#   1. mnist-dit: continue training from the bundled weights (batch 256, bf16)        -> dit/
#   2. in parallel: the mnist-ddpm tables at N=5000 (100 and 50 DDIM steps, ablations) -> results/
#   3. on the new mnist-dit weights: its masks (50/100 steps) and the DiT table at N=5000
#      (classifier accuracy afterwards, on the CPU: python scripts/dit_accuracy.py)
#   4. benchmarks/gpu_bench.py on DiT-XL/2-256 (random init) with what time is left  -> gpu_bench.json
# Usage, on the GPU machine from the repo root:  bash scripts/gpu_session.sh OUTDIR [DEADLINE_S] [DIT_MINUTES]
# Needs MNIST in $BLOCKMASK_MNIST, blockmask importable and `blockmask` on PATH (see docs/GPU.md for the
# exact device command: wheels for diffusers/torch-fidelity/plotly carried in .whl/).
# Results come back as OUTDIR/results.tgz.part-* (split to stay under 16 MB per file) and OUTDIR/log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?OUTDIR}; DEADLINE=${2:-480}; DIT_MIN=${3:-3}
# overridable for a CPU rehearsal of the whole flow (e.g. DEV=cpu N=8 BENCH_BATCH=2 DIT_STEPS=3 BATCH=8)
DEV=${DEV:-cuda}; N=${N:-5000}; BENCH_BATCH=${BENCH_BATCH:-256}; DIT_STEPS=${DIT_STEPS:-0}; BATCH=${BATCH:-500}
W=$(mktemp -d /tmp/gpu-results.XXXX)
mkdir -p "$W/results" "$W/masks" "$W/logs"
T0=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*"; }
pack() {  # whole archive each time: parts of an older pack never mix with a newer one
  local tmp="$OUT/.pack"; rm -rf "$tmp"; mkdir -p "$tmp"
  tar czf "$tmp/results.tgz" -C "$W" . && rm -f "$OUT"/results.tgz.part-* \
    && split -b 15000000 "$tmp/results.tgz" "$OUT/results.tgz.part-"; rm -rf "$tmp"
}
stage() {  # stage NAME SECONDS CMD... : run with a time box, log to logs/NAME.log
  local name=$1 secs=$2; shift 2
  local lim=$(( secs < $(left) ? secs : $(left) ))
  if [ "$lim" -le 5 ]; then log "skip $name (no time left)"; return 1; fi
  log "start $name (limit ${lim}s)"
  timeout -k 5 "$lim" "$@" > "$W/logs/$name.log" 2>&1; local rc=$?
  log "end $name rc=$rc"; tail -n 3 "$W/logs/$name.log" | sed "s/^/    $name| /"
  return $rc
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee "$W/gpu.txt"
python3 -c "import torch, diffusers, torch_fidelity; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" \
  | tee -a "$W/gpu.txt"

SKIP_DDPM=${SKIP_DDPM:-0}; SKIP_BENCH=${SKIP_BENCH:-0}  # 1: leave out stage 2 / stage 4 (a second, shorter lease)
if [ "$SKIP_DDPM" = 0 ]; then
# 0. smoke + reference statistics of the FID extractor (shared by every table; computed once)
stage prime 90 blockmask eval mnist-ddpm --device "$DEV" --steps 4 --num-samples 16 --batch 16 --bench-batch 2 \
  --bench-repeats 1 -o "$W/prime" || log "prime failed: see logs/prime.log"
rm -f "$W/prime/pareto.html"

# 2. mnist-ddpm tables in the background (they share the GPU with the DiT training; both are small)
(
  export EXTRA="--device $DEV --batch $BATCH --bench-batch $BENCH_BATCH"
  for t in "ddpm100 $N" "table1-ddpm $N 50" "ablations $N 50"; do
    set -- $t; name=$1
    stage "table-$name" 400 bash scripts/results_tables.sh "$@"
    for d in docs/results/mnist-ddpm-*; do
      [ -f "$d/results.csv" ] && grep -q ",$N," "$d/results.csv" && mkdir -p "$W/results/$(basename "$d")" \
        && cp "$d"/results.csv "$d"/results.md "$W/results/$(basename "$d")/"
    done
  done
) &
BG=$!
else BG=""; fi

# 1. mnist-dit training (continues from the committed EMA weights)
rm -rf /tmp/dit-init && cp -r assets/models/mnist-dit /tmp/dit-init
stage dit-train $(( DIT_MIN * 60 + 60 )) python3 scripts/train_bundled.py --model mnist-dit --device "$DEV" --bf16 \
    --batch 256 --lr 3e-4 --warmup 100 --minutes "$DIT_MIN" --max-steps "$DIT_STEPS" --init /tmp/dit-init --out /tmp/dit-new
if grep -q '"final": true' /tmp/dit-new/training.json 2>/dev/null; then  # weights saved (even if the grid failed)
  mkdir -p "$W/dit" && cp -r /tmp/dit-new/. "$W/dit/" && cp -r /tmp/dit-new/. assets/models/mnist-dit/
  pack
  # 3. masks and the DiT table on the new weights (accuracy: scripts/dit_accuracy.py, on the CPU afterwards)
  EXTRA="--device $DEV" stage dit-masks 150 bash scripts/bundled_masks.sh dit \
    && cp assets/masks/mnist-dit-*steps.json "$W/masks/"
  pack
  EXTRA="--device $DEV --batch $BATCH --bench-batch $BENCH_BATCH" stage table-dit 150 bash scripts/results_tables.sh table1-dit "$N" 50 \
    && for d in docs/results/mnist-dit-50-g*; do mkdir -p "$W/results/$(basename "$d")" \
         && cp "$d"/results.{csv,md} "$W/results/$(basename "$d")/"; done
  pack
fi

# 4. GPU benchmark of masked execution (issue #7), with the time that is left
if [ "$SKIP_BENCH" = 0 ]; then
[ "$DEV" = cpu ] && GB="--dry-run --models tiny-dit" || GB="--models dit-xl-2-256"
# shellcheck disable=SC2086
stage gpu-bench $(( $(left) - 20 )) python3 benchmarks/gpu_bench.py $GB --modes eager,graph,compiled \
  --repeats 2 --out "$W/gpu_bench.json"
fi
[ -n "$BG" ] && wait "$BG"
pack
log "done"
