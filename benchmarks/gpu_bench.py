"""GPU benchmark of masked execution: speedup against the MAC ratio, per execution mode (issue 29).

One prepared command for a short GPU lease (the whole plan fits in about 7 minutes on one H200):

    python benchmarks/gpu_bench.py --out bench.json --deadline 420
    python benchmarks/gpu_bench.py --dry-run --out /tmp/b.json   # tiny configs on the CPU (CI runs this)

Plan (random-init weights: speed does not depend on them): DiT-XL/2-256 (bf16, batch 16, 100 DDIM
steps), DDPM CIFAR-10 (bf16, batch 64, 100 steps), PixArt-Σ at 256 px (bf16, batch 4, 20 steps). Masks:
all-ones, a learned-shape mask at about 50% MACs (sparsity rising, then falling, over the steps;
rectified), on the transformers the same shape skipping whole blocks only ("blocks-shape") and FORA 2,
on the U-Net the DeepCache rule (branch 0, interval 3).
Modes, cheapest to measure first: eager, rowgraph (one CUDA graph per distinct mask row), then, while
the deadline allows, compiled and graph (torch.compile of each unit body, without and with CUDA graphs).

Per row: the median time of a whole sampling run over interleaved rounds (after a warm-up run, which
also captures or compiles), its spread, per-step latency, the MAC ratio, and two speedups:
``speedup`` over the all-ones mask in the *same* mode (the plain model at its best in that mode; in
rowgraph mode that is the whole model as one CUDA graph) and ``speedup_vs_eager`` over the plain model
run eagerly. ``efficiency = speedup × MAC ratio`` (1.0: the time saved is exactly the MACs saved).
Also: capture/compile time (first run minus the median), graphs captured, peak memory, and, for
rowgraph, the largest difference of its final latents from the eager run (same seed) and whether the
all-ones mask reproduces the plain model exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from blockmask.workbench import Workbench, resolve_device
from blockmask.sampling.distributed import device_name
from blockmask.io.files import atomic_write_text
from blockmask.hooks.rowgraph import graph_store, plan_rows
from blockmask.sampling.sample import Condition

ROOT = Path(__file__).resolve().parents[1]
FULL = [  # (name, config, batch, steps, dtype, latent size override)
    ("dit-xl-2-256", "dit-xl-2-256.json", 16, 100, "bf16", None),
    ("ddpm-cifar10-32", "ddpm-cifar10-32.json", 64, 100, "bf16", None),
    ("pixart-sigma-256", "pixart-sigma-xl-2-1024.json", 4, 20, "bf16", 32),
]
DRY = [("tiny-dit", "tiny-dit.json", 2, 6, "fp32", None),
       ("tiny-unet", "tiny-unet.json", 2, 6, "fp32", None),
       ("tiny-pixart", "tiny-pixart.json", 2, 6, "fp32", 4)]
MODE_GROUPS = (("eager", "rowgraph"), ("compiled",), ("graph",))


def learned_shape(wb, steps: int, target: float = 0.5, seed: int = 0, whole_blocks: bool = False) -> np.ndarray:
    """A mask shaped like the learned ones (no skipping at the first steps, most in the middle, less at
    the end), scaled so that its rectified MAC ratio is about ``target``. ``whole_blocks``: only units
    that no other unit encloses are skipped (a transformer block goes as a whole, norms included)."""
    rng = np.random.default_rng(seed)
    k = np.arange(steps)[:, None] / max(steps - 1, 1)
    u = rng.random((steps, len(wb.units)))
    if whole_blocks:
        u[:, [x.parent >= 0 for x in wb.units]] = 1.0  # inner units always "run": their block decides
    lo, hi = 0.0, 1.0
    for _ in range(20):  # bisect the peak skip probability
        peak = (lo + hi) / 2
        m = u >= peak * np.sin(np.pi * k) ** 0.5
        m[0] = True
        m = wb.rectify(m).mask
        lo, hi = (peak, hi) if wb.macs.ratio(m) > target else (lo, peak)
    return m


def masks_for(wb, steps: int) -> dict[str, np.ndarray]:
    masks = {"all-ones": wb.baseline("ones", steps=steps), "learned-shape-50%": learned_shape(wb, steps)}
    if any(u.residual for u in wb.units):  # transformers: whole-block skipping, and FORA
        masks["blocks-shape-50%"] = learned_shape(wb, steps, whole_blocks=True)
        masks["fora-2"] = wb.rectify(wb.baseline("fora", steps=steps, interval=2)).mask
    else:
        masks["deepcache-b0-n3"] = wb.rectify(wb.baseline("deepcache", steps=steps, interval=3, branch=0)).mask
    return masks


def timed_run(wb, mask, steps, batch, mode, cond) -> tuple[float, torch.Tensor]:
    if wb.device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = wb.generate(mask, steps=steps, num_images=batch, condition=cond, mode=mode)
    if wb.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def bench_mode(wb, name, masks, steps, batch, dtype, mode, rounds, cond, plain_eager, ref_out, emit):
    """Interleaved rounds over the masks in one mode; emits one row per mask."""
    dev = wb.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    store0 = graph_store(wb.model, len(wb.units)).stats.captured if mode == "rowgraph" else 0
    first, outs = {}, {}
    for m, mask in masks.items():
        first[m], outs[m] = timed_run(wb, mask, steps, batch, mode, cond)
    times = {m: [] for m in masks}
    for _ in range(rounds):
        for m, mask in masks.items():
            times[m].append(timed_run(wb, mask, steps, batch, mode, cond)[0])
    med = {m: float(np.median(t)) for m, t in times.items()}
    peak = torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda" else None
    for m, mask in masks.items():
        ratio = wb.macs.ratio(mask)
        row = {"model": name, "batch": batch, "steps": steps, "dtype": dtype, "mode": mode, "mask": m,
               "distinct_rows": plan_rows(mask).distinct, "macs_ratio": ratio, "masked_s": med[m],
               "spread_s": [float(min(times[m])), float(max(times[m]))], "rounds": rounds,
               "per_step_ms": 1000 * med[m] / steps, "speedup": med["all-ones"] / med[m],
               "speedup_vs_eager": plain_eager / med[m], "efficiency": med["all-ones"] / med[m] * ratio,
               "first_run_s": first[m], "compile_s": max(0.0, first[m] - med[m]), "peak_mem_gb": peak}
        if mode == "rowgraph":
            row["max_abs_diff_vs_eager"] = float((outs[m].float() - ref_out[m].float()).abs().max())
            row["graphs_captured_total"] = graph_store(wb.model, len(wb.units)).stats.captured - store0
        emit(row)
    if mode == "rowgraph":
        stats = graph_store(wb.model, len(wb.units)).stats
        emit({"model": name, "mode": mode, "mask": "(graph stats)", "captured": stats.captured,
              "failed": stats.failed, "capture_s": stats.capture_s, "errors": stats.errors[:3],
              "all_ones_equals_plain": bool(torch.equal(outs["all-ones"], ref_out["plain"]))})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=str(ROOT / "tests/configs/reference"))
    ap.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU, a few steps")
    ap.add_argument("--modes", default="eager,rowgraph,compiled,graph")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds after the warm-up run")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--deadline", type=float, default=420.0, help="seconds: start no new model/mode after this")
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--models", help="comma-separated subset of the plan's models")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    device = resolve_device("cpu" if args.dry_run else args.device)
    modes = [m for m in args.modes.split(",") if m]
    if device.type != "cuda":  # no CUDA graphs on the CPU: rowgraph runs eagerly there (with a warning)
        modes = [m for m in modes if m not in ("graph", "compiled")]
    configs = ROOT / "tests/configs" if args.dry_run else Path(args.configs)
    plan = DRY if args.dry_run else FULL
    if args.models:
        keep = [m for m in args.models.split(",") if m]
        unknown = sorted(set(keep) - {p[0] for p in plan})
        if unknown:
            raise SystemExit(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(p[0] for p in plan)}")
        plan = [p for p in plan if p[0] in keep]
    rows: list[dict] = []

    def emit(row):  # saved after each row: a run stopped by a time limit keeps what it measured
        rows.append(row)
        print(json.dumps(row), flush=True)
        atomic_write_text(Path(args.out), json.dumps({"device": device_name(device), "torch": torch.__version__,
                                                      "rows": rows}, indent=1))

    loaded = {}
    for group in MODE_GROUPS:
        for name, cfg, batch, steps, dtype, size in plan:
            for mode in [m for m in group if m in modes]:
                if time.perf_counter() - t_start > args.deadline:
                    emit({"model": name, "mode": mode, "skipped": "deadline"})
                    continue
                if name not in loaded:
                    wb = Workbench.load(f"config:{configs / cfg}", device=device, dtype=dtype)
                    if size:  # PixArt at a reduced resolution: same weights, smaller latent
                        wb.model._blockmask_sample_size = size
                    cond = Condition(guidance_scale=1.0)
                    masks = masks_for(wb, steps)
                    timed_run(wb, None, steps, batch, "eager", cond)  # warm-up
                    plain, plain_out = timed_run(wb, None, steps, batch, "eager", cond)
                    ref = {m: timed_run(wb, mk, steps, batch, "eager", cond)[1] for m, mk in masks.items()}
                    ref["plain"] = plain_out
                    loaded[name] = (wb, cond, masks, plain, ref)
                wb, cond, masks, plain, ref = loaded[name]
                bench_mode(wb, name, masks, steps, batch, dtype, mode, 1 if args.dry_run else args.rounds,
                           cond, plain, ref, emit)
    print(f"\n{device_name(device)}\n| model | mode | mask | MACs | speedup (same mode) | efficiency | vs eager plain "
          f"| ms/step | capture s |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "speedup" in r:
            print(f"| {r['model']} b{r['batch']} | {r['mode']} | {r['mask']} | {r['macs_ratio']:.1%} | "
                  f"{r['speedup']:.2f}x | {r['efficiency']:.2f} | {r['speedup_vs_eager']:.2f}x | "
                  f"{r['per_step_ms']:.2f} | {r['compile_s']:.1f} |")


if __name__ == "__main__":
    main()
