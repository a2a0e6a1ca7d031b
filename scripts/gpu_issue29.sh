#!/usr/bin/env bash
# Issue 29 on one short GPU lease: the execution-mode benchmark (eager and rowgraph first, for every
# model), the DiT-XL/2 mask-training time, then the torch.compile modes while time is left. Every stage
# is time-boxed and writes its JSON after each row, so a lease that ends early keeps what was measured.
#   bash scripts/gpu_issue29.sh OUTDIR            (on the GPU machine, with the wheels in .whl/)
#   DRY=1 bash scripts/gpu_issue29.sh /tmp/o      (the same flow on the CPU, tiny models, seconds)
set -u
out=${1:?usage: gpu_issue29.sh OUTDIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
dry=()
[ "${DRY:-0}" = 1 ] && dry=(--dry-run)
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$out/gpu.txt" 2>&1
timeout "${BENCH_S:-200}" python3 benchmarks/gpu_bench.py "${dry[@]}" --modes eager,rowgraph --deadline "${BENCH_DEADLINE:-150}" \
  --out "$out/gpu_bench.json" > "$out/bench.log" 2>&1; echo "bench rc=$?" >> "$out/gpu.txt"
timeout "${TRAIN_S:-130}" python3 benchmarks/gpu_train_time.py "${dry[@]}" --budget "${TRAIN_BUDGET:-80}" \
  --out "$out/train_time.json" > "$out/train.log" 2>&1; echo "train rc=$?" >> "$out/gpu.txt"
[ "${DRY:-0}" = 1 ] || timeout "${COMPILE_S:-80}" python3 benchmarks/gpu_bench.py --modes compiled,graph \
  --models ddpm-cifar10-32,dit-xl-2-256 --deadline 30 --rounds 2 --out "$out/gpu_bench_compiled.json" \
  > "$out/bench_compiled.log" 2>&1; echo "compiled rc=$?" >> "$out/gpu.txt"
tail -n 30 "$out/bench.log"; tail -n 12 "$out/train.log"; cat "$out/gpu.txt"
