#!/usr/bin/env bash
# The bundled models' planned frontiers (issue 26) on one short GPU lease: one process per model,
# all at once (the MNIST models leave an H200 mostly idle), each time-boxed; results packed into
# OUTDIR/frontier.tgz (mask files, results.csv and the log of each model).
#   bash scripts/gpu_frontier.sh OUTDIR [TIME_LIMIT_S=230] [REF_STEPS=50]
set -u
out=${1:?usage: gpu_frontier.sh OUTDIR [TIME_LIMIT_S] [REF_STEPS]}
limit=${2:-230}
ref=${3:-50}
work=$(mktemp -d)
export PYTHONUNBUFFERED=1 TQDM_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-3}
dev=${DEV:-cuda}
for m in ${MODELS:-mnist-ddpm mnist-dit mnist-ldm mnist-pixart}; do
  timeout $((limit + ${PEER_S:-70})) python3 benchmarks/frontier.py "$m" --device "$dev" --ref-steps "$ref" \
    --budgets "${BUDGETS:-0.25,0.35,0.45,0.55,0.65,0.75,0.85}" --calib "${CALIB:-64}" --valid "${VALID:-128}" \
    --test "${TEST:-128}" --chunk "${CHUNK:-64}" --refine-seconds "${REFINE_S:-10}" --time-limit "$limit" \
    ${EXTRA:-} -o "$work/$m" > "$work/$m.log" 2>&1 &
done
wait
tar czf "$out/frontier.tgz" -C "$work" .
for m in ${MODELS:-mnist-ddpm mnist-dit mnist-ldm mnist-pixart}; do tail -n 4 "$work/$m.log"; done
