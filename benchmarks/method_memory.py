"""Peak memory of mask learning against the step count K: blockmask's per-step trainer against the
DiP-GO-style whole-chain optimiser (with and without gradient checkpointing), issue 17.

    python benchmarks/method_memory.py --model mnist-ddpm --model mnist-dit -o docs/results/methods-memory

Each (model, method, K) runs in a fresh process (so that its peak is its own): the model is loaded
and runs one warm-up forward, then ``ru_maxrss`` is read ("base"); then the method learns a mask
at batch ``--batch`` — ours ``--iters`` iterations per step at every step, global ``--iters``
optimisation iterations through all K steps — and the peak resident memory is read again. "ours
(budget refinement)" is the other half of a ``--target-macs`` run: the calibration run that records
the trajectory (one state per step: latents, unit caches, scheduler) on the ``RefineConfig.batch``
calibration seeds, which the local search re-runs from (its memory grows with K; the per-step
trainer's does not). The
growth (peak − base) is the memory the learning itself needs. Global runs also record their
autograd-graph estimate (saved tensors of one step × K). Writes results.csv / results.md (pandas)
and memory.html / memory.png (plotly).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

METHODS = ("ours (per step)", "ours (budget refinement)", "global", "global + checkpointing")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(model: str, method: str, k: int, batch: int, iters: int) -> dict:
    import torch

    from blockmask.workbench import Workbench
    from blockmask.hooks.discover import example_call

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    wb = Workbench.load(model)
    _ = wb.units, wb.macs, wb.graph
    with torch.no_grad():
        example_call(wb.model, batch=batch)()
    base = _rss_mb()
    t0 = time.perf_counter()
    extra = {}
    if method == "ours (budget refinement)":
        from blockmask.learning import refine as rf
        from blockmask.learning.run import RefineConfig
        from blockmask.sampling.sample import SamplingRun

        rc = RefineConfig()
        calib = rf.Calibration(SamplingRun(wb.model, num_steps=k, scheduler=wb.scheduler(), seed=rc.seed,
                                           batch=rc.batch), decode=wb.images)
        calib._run(wb.baseline("fora", steps=k, interval=2), 0, None, record=True)
        extra = {"batch": rc.batch}
    elif method.startswith("ours"):
        from blockmask.learning.train import TrainConfig
        from blockmask.learning.run import train_once

        train_once(wb, TrainConfig(steps=k, iters=iters, batch=batch), progress=False)
    else:
        from blockmask.learning.methods.global_opt import GlobalConfig

        _, meta = wb.method("global", steps=k, target_macs=0.5,
                            config=GlobalConfig(iters=iters, batch=batch, checkpoint="checkpoint" in method))
        extra = {"graph_estimate_mb": meta["memory"]["graph_bytes_estimate"] / 2**20}
    return {"model": model, "method": method, "K": k, "batch": batch, "iters": iters, "base_rss_mb": base,
            "peak_rss_mb": _rss_mb(), "growth_mb": _rss_mb() - base, "seconds": time.perf_counter() - t0, **extra}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", action="append", help="bundled model (repeatable; default mnist-ddpm)")
    ap.add_argument("--steps", default="10,25,50,100", help="comma-separated K")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=1)
    ap.add_argument("--child", nargs=3, metavar=("MODEL", "METHOD", "K"), help=argparse.SUPPRESS)
    ap.add_argument("--methods", help=f"comma-separated subset of: {', '.join(METHODS)} (rows of the others in "
                                      "OUTPUT/results.csv are kept)")
    ap.add_argument("--redraw", action="store_true", help="only rewrite the table and plot from OUTPUT/results.csv")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.batch, args.iters)))
        return 0
    if not args.output:
        ap.error("-o/--output is required")
    if args.redraw:
        write(Path(args.output))
        return 0
    import pandas as pd

    rows = []
    for model in args.model or ["mnist-ddpm"]:
        for method in [m.strip() for m in args.methods.split(",")] if args.methods else METHODS:
            for k in (int(v) for v in args.steps.split(",")):
                cmd = [sys.executable, __file__, "--child", model, method, str(k), "--batch", str(args.batch),
                       "--iters", str(args.iters)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
                if line is None:
                    print(out.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"{model} {method} K={k} failed")
                rows.append(json.loads(line[7:]))
                r = rows[-1]
                print(f"{model} {method} K={k}: peak {r['peak_rss_mb']:.0f} MB, growth {r['growth_mb']:.0f} MB, "
                      f"{r['seconds']:.1f}s", flush=True)
    dest = Path(args.output)
    dest.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    if args.methods and (dest / "results.csv").exists():
        old = pd.read_csv(dest / "results.csv")
        df = pd.concat([old[~old.method.isin(df.method)], df], ignore_index=True)
    df.to_csv(dest / "results.csv", index=False)
    write(dest)
    return 0


def write(dest: Path) -> None:
    """results.md and memory.html / memory.png from DEST/results.csv."""
    import pandas as pd
    import plotly.express as px

    df = pd.read_csv(dest / "results.csv")
    table = df.pivot_table(index=["model", "K"], columns="method", values="growth_mb").round(0).reset_index()
    batches = ", ".join(f"{m} {b}" for m, b in df.groupby("method").batch.first().items())
    (dest / "results.md").write_text(
        "Memory the learning needs (MB): peak RSS minus RSS after loading the model, fresh process per cell; "
        f"batch: {batches}; {df.iters.iloc[0]} iteration(s).\n\n" + table.to_markdown(index=False) + "\n")
    fig = px.line(df, x="K", y="growth_mb", color="method", facet_col="model", markers=True,
                  labels={"growth_mb": "peak memory of learning (MB above the loaded model)", "K": "sampling steps K"},
                  title="Peak memory against K: per-step learning (ours) vs whole-chain optimisation (DiP-GO-style)")
    fig.update_layout(template="plotly_white", width=1100, height=500)
    fig.write_html(dest / "memory.html", include_plotlyjs="cdn")
    try:
        fig.write_image(dest / "memory.png")
    except Exception as e:  # kaleido needs a Chromium
        print(f"no PNG: {str(e).splitlines()[0][:120]}", file=sys.stderr)
    print((dest / "results.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
