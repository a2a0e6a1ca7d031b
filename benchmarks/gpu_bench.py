"""GPU benchmark of masked execution: speedup vs MAC ratio per execution mode (issue: fast masked
execution). One command, about 10 minutes on one H100/H200:

    python benchmarks/gpu_bench.py --configs tests/configs/reference --out bench.json
    python benchmarks/gpu_bench.py --dry-run          # tiny configs on CPU (what CI runs)

For each model (random init: DiT-XL/2-256 b16 bf16 100 DDIM steps, DDPM CIFAR-10 b64, PixArt-Σ at
256 px) and each mask (all-ones, a 50%-MAC random mask, a learned-style mask whose sparsity varies
over steps) and each mode (eager, compiled, graph): per-step latency, full sampling time, speedup
over the plain model in the same mode, MAC ratio, efficiency = speedup × MAC ratio, compile time
(first run minus steady state) and peak memory.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from blockmask.api import Workbench
from blockmask.sample import Condition

ROOT = Path(__file__).resolve().parents[1]
FULL = [  # (name, config, batch, steps, dtype, guidance)
    ("dit-xl-2-256", "dit-xl-2-256.json", 16, 100, "bf16", 1.0),
    ("ddpm-cifar10-32", "ddpm-cifar10-32.json", 64, 100, "bf16", 1.0),
    ("pixart-sigma-256", "pixart-sigma-xl-2-1024.json", 4, 20, "bf16", 1.0),
]
DRY = [("tiny-dit", str(ROOT / "tests/configs/tiny-dit.json"), 2, 4, "fp32", 1.0),
       ("tiny-unet", str(ROOT / "tests/configs/tiny-unet.json"), 2, 4, "fp32", 1.0),
       ("tiny-pixart-4", str(ROOT / "tests/configs/tiny-pixart.json"), 2, 4, "fp32", 1.0)]
REDUCED = {"pixart-sigma-256": 32, "tiny-pixart-4": 4}  # latent size overrides


def learned_style(wb, steps: int, seed: int = 0) -> np.ndarray:
    """Sparsity rising from 0 at the first steps to ~70% mid-trajectory, lower at the end."""
    rng = np.random.default_rng(seed)
    k = np.arange(steps)[:, None] / max(steps - 1, 1)
    p_skip = 0.7 * np.sin(np.pi * k) ** 0.5
    m = rng.random((steps, len(wb.units))) >= p_skip
    m[0] = True
    return wb.rectify(m).mask


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def run_once(wb, mask, steps, batch, mode, cond) -> float:
    sync(wb.device)
    t0 = time.perf_counter()
    wb.generate(mask, steps=steps, num_images=batch, condition=cond, mode=mode)
    sync(wb.device)
    return time.perf_counter() - t0


def bench_model(name, spec, batch, steps, dtype, guidance, modes, repeats, device, sample_size=None, on_row=None):
    wb = Workbench.load(spec, device=device, dtype=dtype)
    if sample_size:  # PixArt at a reduced resolution: same weights, smaller latent (before MACs are measured)
        wb.model._blockmask_sample_size = sample_size
    cond = Condition(guidance_scale=guidance)
    masks = {"all-ones": wb.baseline("ones", steps=steps),
             "50%-MACs": wb.rectify(wb.baseline("random", steps=steps, macs_ratio=0.5)).mask,
             "learned-style": learned_style(wb, steps)}
    rows = []
    for mode in modes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        first_plain = run_once(wb, None, steps, batch, "eager", cond)
        plain = float(np.median([run_once(wb, None, steps, batch, "eager", cond) for _ in range(repeats)]))
        for mname, mask in masks.items():
            first = run_once(wb, mask, steps, batch, mode, cond)
            times = [run_once(wb, mask, steps, batch, mode, cond) for _ in range(repeats)]
            t = float(np.median(times))
            ratio = wb.macs.ratio(mask)
            rows.append({"model": name, "batch": batch, "steps": steps, "dtype": dtype, "mode": mode, "mask": mname,
                         "macs_ratio": ratio, "plain_s": plain, "masked_s": t, "per_step_ms": 1000 * t / steps,
                         "speedup": plain / t, "efficiency": plain / t * ratio,
                         "compile_s": max(0.0, first - t), "plain_first_s": first_plain,
                         "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None})
            print(json.dumps(rows[-1]), flush=True)
            if on_row is not None:
                on_row(rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=str(ROOT / "tests/configs/reference"))
    ap.add_argument("--dry-run", action="store_true", help="tiny configs on CPU, a few steps")
    ap.add_argument("--modes", default="eager,compiled,graph")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="gpu_bench.json")
    ap.add_argument("--models", help="comma-separated subset of the models (default: all of the plan)")
    args = ap.parse_args()
    from blockmask.api import resolve_device

    device = resolve_device("cpu" if args.dry_run else args.device)
    modes = [m for m in args.modes.split(",") if m]
    if device.type != "cuda":
        modes = [m for m in modes if m != "graph"]
    plan = DRY if args.dry_run else [(n, f"{args.configs}/{c}", b, k, d, g) for n, c, b, k, d, g in FULL]
    if args.models:
        keep = [m for m in args.models.split(",") if m]
        unknown = sorted(set(keep) - {n for n, *_ in plan})
        if unknown:
            raise SystemExit(f"error: unknown model(s) {', '.join(unknown)}; choose from {', '.join(n for n, *_ in plan)}")
        plan = [row for row in plan if row[0] in keep]
    from blockmask.api import device_name
    from blockmask.io import atomic_write_text

    rows = []

    def save():  # after each row: a run stopped by a time limit keeps what it measured
        atomic_write_text(Path(args.out), json.dumps({"device": device_name(device), "rows": rows}, indent=1))

    for name, cfg, batch, steps, dtype, guidance in plan:
        spec = cfg if cfg.startswith("config:") else f"config:{cfg}"
        size = REDUCED.get(name)
        done = len(rows)
        new = bench_model(name, spec, batch, steps, dtype, guidance, modes, 1 if args.dry_run else args.repeats,
                          device, size, on_row=lambda r: (rows.append(r), save()))
        assert len(rows) == done + len(new)
    save()
    print(f"\n{device_name(device)}\n| model | mode | mask | MACs | speedup | efficiency | ms/step | compile s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} b{r['batch']} | {r['mode']} | {r['mask']} | {r['macs_ratio']:.1%} | {r['speedup']:.2f}x | "
              f"{r['efficiency']:.2f} | {r['per_step_ms']:.1f} | {r['compile_s']:.1f} |")


if __name__ == "__main__":
    main()
