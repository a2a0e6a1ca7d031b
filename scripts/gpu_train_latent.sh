#!/usr/bin/env bash
# Train the bundled latent models mnist-ldm and mnist-pixart on one short GPU lease, as one command
# (~10 min on one H100/H200 by default; each stage is time-boxed, checkpoints every minute, and the
# results are packed into OUTDIR as soon as they exist):
#   1. vae: the AutoencoderKL (VAE_MIN minutes, batch VAE_BATCH)                       -> mnist-vae/
#   2. ldm and pixart at the same time on the same GPU (small models leave it mostly idle; LDM_MIN and
#      PIX_MIN minutes, batch BATCH), both on the stage-1 VAE's latents          -> mnist-ldm/, mnist-pixart/
#   3. the offline classifier on both: accuracy at guidance 1, 1.5, 2, 3, 4 on seed 1; the best becomes the
#      folder's default_guidance_scale; then the quality test's own setting (64 samples, seed 0, that
#      default) is measured and logged; samples.png is redrawn at the default                -> accuracy.txt
# Stage minutes shrink in proportion when DEADLINE_S cannot hold them (plus OVERHEAD_S for start-ups,
# grids and the accuracy step).
# Usage, on the GPU machine from the repo root:  bash scripts/gpu_train_latent.sh OUTDIR [DEADLINE_S=600]
# Needs MNIST in $BLOCKMASK_MNIST and diffusers, safetensors, torchvision, torch-fidelity importable (see
# docs/GPU.md for the device command with carried wheels).
# A CPU rehearsal of the whole flow (about two minutes):
#   DEV=cpu SIZE=tiny VAE_MIN=0.15 LDM_MIN=0.15 PIX_MIN=0.15 VAE_BATCH=8 BATCH=8 DATA_LIMIT=256 NUM=10 \
#     OVERHEAD_S=60 nice -n 10 bash scripts/gpu_train_latent.sh /tmp/latent-rehearsal 300
# Results come back as OUTDIR/results.tgz.part-* (split to stay under 16 MB per file; `cat
# OUTDIR/results.tgz.part-* | tar xzf -`) and OUTDIR/log.txt; then copy mnist-ldm/ and mnist-pixart/ into
# assets/models/ and record their training.json in assets/models/TRAINING.md.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?OUTDIR}; DEADLINE=${2:-600}
DEV=${DEV:-cuda}; SIZE=${SIZE:-small}; DATA_LIMIT=${DATA_LIMIT:-0}; NUM=${NUM:-64}
VAE_MIN=${VAE_MIN:-2}; LDM_MIN=${LDM_MIN:-6}; PIX_MIN=${PIX_MIN:-6}
VAE_BATCH=${VAE_BATCH:-256}; BATCH=${BATCH:-512}; BF16=${BF16---bf16}; OVERHEAD_S=${OVERHEAD_S:-120}
GUIDANCES=${GUIDANCES:-1 1.5 2 3 4}
mkdir -p "$OUT"
W=$(mktemp -d /tmp/latent-results.XXXX)
mkdir -p "$W/logs"
T0=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }
log() { echo "[$(( $(date +%s) - T0 ))s] $*" | tee -a "$W/log.txt"; }
pack() {  # the whole archive each time: parts of an older pack never mix with a newer one (one pack at a time)
  (
    flock 9
    local tmp; tmp=$(mktemp -d /tmp/latent-pack.XXXX)
    # a folder being swapped in while tar reads makes tar fail: the previous parts are then kept
    tar czf "$tmp/results.tgz" -C "$W" . 2>/dev/null && rm -f "$OUT"/results.tgz.part-* \
      && split -b 15000000 "$tmp/results.tgz" "$OUT/results.tgz.part-"; rm -rf "$tmp"
    cp "$W/log.txt" "$OUT/log.txt"
  ) 9>"$W.lock"
}
# scale the stage minutes down when the deadline cannot hold them: vae first, then ldm || pixart
read -r VAE_MIN LDM_MIN PIX_MIN < <(python3 -c "
v, l, p, d, o = $VAE_MIN, $LDM_MIN, $PIX_MIN, $DEADLINE, $OVERHEAD_S
need = 60 * (v + max(l, p))
f = min(1.0, max(d - o, 0) / need) if need else 1.0
print(round(v * f, 3), round(l * f, 3), round(p * f, 3))")
log "stage minutes: vae $VAE_MIN, ldm $LDM_MIN, pixart $PIX_MIN (deadline ${DEADLINE}s, device $DEV, size $SIZE)"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__, \
'cuda', torch.cuda.is_available())"; nproc; } | tee "$W/hardware.txt"

COMMON=(--device "$DEV" --size "$SIZE" --data-limit "$DATA_LIMIT" --ckpt-minutes 1 $BF16)
train() {  # train NAME MINUTES ARGS... : time box = minutes + 90 s for start-up, saving and the grid
  local name=$1 min=$2; shift 2
  local lim; lim=$(python3 -c "print(int($min * 60 + 90))")
  [ "$lim" -gt "$(left)" ] && lim=$(left)
  if [ "$lim" -le 10 ]; then log "skip $name (no time left)"; return 1; fi
  log "start $name ($min min, limit ${lim}s)"
  timeout -k 5 "$lim" python3 scripts/train_latent.py --stage "$name" --minutes "$min" "${COMMON[@]}" "$@" \
    > "$W/logs/$name.log" 2>&1; local rc=$?
  log "end $name rc=$rc"; grep -E "done:|samples.png|error" "$W/logs/$name.log" | tail -n 3 | sed "s/^/    $name| /" \
    | tee -a "$W/log.txt"
  return $rc
}

# 1. the VAE
train vae "$VAE_MIN" --batch "$VAE_BATCH" --lr 1e-3 --warmup 100 --out "$W/mnist-vae"
if ! grep -q '"final": true' "$W/mnist-vae/training.json" 2>/dev/null; then
  log "no finished VAE: stopping"; pack; exit 1
fi
pack

# 2. both denoisers at once on the VAE's latents
train ldm "$LDM_MIN" --batch "$BATCH" --lr 1e-3 --warmup 200 --vae "$W/mnist-vae" --out "$W/mnist-ldm" &
P1=$!
train pixart "$PIX_MIN" --batch "$BATCH" --lr 5e-4 --warmup 200 --vae "$W/mnist-vae" --out "$W/mnist-pixart" &
P2=$!
# pack the checkpoints (written every minute) while they train: a lease that ends early still returns them
( while kill -0 "$P1" 2>/dev/null || kill -0 "$P2" 2>/dev/null; do sleep "${PACK_EVERY_S:-90}"; pack; done ) &
PK=$!
wait "$P1" "$P2"
kill "$PK" 2>/dev/null; wait "$PK" 2>/dev/null
pack

# 3. accuracy with the offline classifier; the default guidance chosen on seed 1, measured on seed 0
for name in ldm pixart; do
  f="$W/mnist-$name"
  [ -f "$f/model_index.json" ] || { log "no mnist-$name folder"; continue; }
  if [ "$(left)" -le 20 ]; then log "skip accuracy of mnist-$name (no time left)"; continue; fi
  # shellcheck disable=SC2086
  timeout -k 5 "$(left)" python3 scripts/dit_accuracy.py --folder "$f" --guidance $GUIDANCES --num "$NUM" \
    --seed 1 --set-default 2>>"$W/logs/accuracy.log" | tee -a "$W/accuracy.txt" "$W/log.txt"
  g=$(python3 -c "import json; print(json.load(open('$f/blockmask.json'))['default_guidance_scale'])")
  timeout -k 5 "$(left)" python3 scripts/dit_accuracy.py --folder "$f" --guidance "$g" --num "$NUM" --seed 0 \
    2>>"$W/logs/accuracy.log" | sed "s/^/mnist-$name test setting: /" | tee -a "$W/accuracy.txt" "$W/log.txt"
  timeout -k 5 "$(left)" python3 scripts/train_latent.py --stage "$name" --samples-only --out "$f" --guidance "$g" \
    > "$W/logs/$name-grid.log" 2>&1 || log "grid of mnist-$name failed: see logs/$name-grid.log"
  pack
done
log "done"
pack
