"""Time the per-step mask trainer on a paper-size model (issue 29, item 3): DiT-XL/2-256, 100 DDIM
steps, bf16, the default recipe (random init: the time does not depend on the weights).

    python benchmarks/gpu_train_time.py --out train_time.json --budget 150
    python benchmarks/gpu_train_time.py --dry-run --out /tmp/t.json     # tiny DiT on the CPU (CI)

Writes, after every learned step: seconds per step, the peak GPU memory of that step (memory must stay
flat in K) and, when the time budget ends the run early, the projected time of the whole mask
(setup + mean step time × K), labelled as a projection.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from blockmask.workbench import Workbench, resolve_device
from blockmask.sampling.distributed import device_name
from blockmask.io.files import atomic_write_text
from blockmask.learning.train import TrainConfig
from blockmask.learning.run import train_once

ROOT = Path(__file__).resolve().parents[1]


class _Budget(Exception):
    """The time budget ended the run (not an error)."""


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "tests/configs/reference/dit-xl-2-256.json"))
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--dtype", default="bf16")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--budget", type=float, default=150.0, help="seconds of training before stopping early")
    ap.add_argument("--dry-run", action="store_true", help="tiny DiT on the CPU, 4 steps")
    ap.add_argument("--out", default="train_time.json")
    args = ap.parse_args(argv)
    device = resolve_device("cpu" if args.dry_run else args.device)
    config = ROOT / "tests/configs/tiny-dit.json" if args.dry_run else Path(args.config)
    steps = 4 if args.dry_run else args.steps
    dtype = "fp32" if args.dry_run else args.dtype
    t0 = time.perf_counter()
    wb = Workbench.load(f"config:{config}", device=device, dtype=dtype)
    load_s = time.perf_counter() - t0
    cfg = TrainConfig(steps=steps)
    per_step: list[dict] = []
    result = {"device": device_name(device), "torch": torch.__version__, "model": config.name, "steps": steps,
              "dtype": dtype, "config": cfg.to_json(), "load_s": load_s, "per_step": per_step}
    cuda = device.type == "cuda"
    start = time.perf_counter()
    last = [start]

    def save(**extra):
        result.update(extra)
        atomic_write_text(Path(args.out), json.dumps(result, indent=1))

    def on_step(rep):
        now = time.perf_counter()
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
        per_step.append({"k": rep.k, "seconds": now - last[0], "kept": rep.kept, "peak_mem_gb": peak})
        last[0] = now
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        save()
        if now - start > args.budget and rep.k + 1 < steps:
            raise _Budget

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        train_once(wb, cfg, callback=on_step, progress=False)
        finished = True
    except _Budget:
        finished = False
    total = time.perf_counter() - start
    done = len(per_step)
    step_s = [p["seconds"] for p in per_step[1:]] or [p["seconds"] for p in per_step]
    first = per_step[0]["seconds"] if per_step else 0.0
    mean = sum(step_s) / max(len(step_s), 1)
    projected = total if finished else total + mean * max(0, steps - 1 - done)  # row 0 is not learned
    peaks = [p["peak_mem_gb"] for p in per_step if p["peak_mem_gb"] is not None]
    save(finished=finished, steps_done=done, wall_s=total, mean_step_s=mean, first_step_s=first,
         whole_mask_s=projected, whole_mask_is_projection=not finished,
         peak_mem_gb_first_last=[peaks[0], peaks[-1]] if peaks else None)
    print(json.dumps({k: v for k, v in result.items() if k != "per_step"}, indent=1))


if __name__ == "__main__":
    main()
