"""Time of one denoiser call at a reuse step, against the plain call (issue 26: time saved per MAC
saved on the DiT):

    OMP_NUM_THREADS=1 python benchmarks/feeder_step.py mnist-dit
    python benchmarks/feeder_step.py config:tests/configs/tiny-dit.json --reps 3 --rounds 1   # seconds

Rows: the plain call (no hooks); a FORA reuse step (every ``attn1`` and ``ff`` reused, the blocks
run) as blockmask runs it (blockmask.hooks.shortcuts and blockmask.hooks.feeders), with its caches
held or forecast, with the feeders only (no shortcuts), with neither; a block-caching reuse step
(every block reused), held or forecast. Each reuse step follows three computed steps on other inputs.
Each row is timed ``--reps`` calls in a row, ``--rounds`` rounds interleaved; medians and (min–max)
in ms, and each reuse step's time and MACs as a fraction of the plain call's. Same images with and
without the feeders and shortcuts is tested (tests/test_feeders.py, tests/test_shortcuts.py), not
timed here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from blockmask.hooks import feeders, shortcuts
from blockmask.workbench import Workbench
from blockmask.core.errors import BlockmaskError
from blockmask.hooks.execution import MaskedExecution
from blockmask.adapters import adapter_for
from blockmask.sampling.sample import Condition, build_conditioning


WARM = 3  # computed steps before the timed reuse step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    try:
        if min(args.batch, args.reps, args.rounds, args.threads) < 1:
            raise BlockmaskError("--batch, --reps, --rounds and --threads must be at least 1")
        wb = Workbench.load(args.model)
        if not feeders.feeders_of(wb.model, wb.units):
            raise BlockmaskError(f"{args.model} has no feeders (blockmask.hooks.feeders.FEEDERS)")
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    model, n = wb.model, len(wb.units)
    adapter = adapter_for(model)
    g = torch.Generator().manual_seed(0)
    cond, _ = build_conditioning(model, args.batch, Condition(), g)
    x = torch.randn((args.batch, *adapter.latent_shape(model)), generator=g)
    t = torch.full((args.batch,), 500)

    def call(k: int = 0):  # k > 0: another input and timestep (the computed steps before the timed one)
        return adapter.forward(model, x + k if k else x, t - 10 * k if k else t, cond)
    residual = np.array([u.residual for u in wb.units])
    ones = np.ones((WARM + 1, n), bool)
    fora, blocks = ones.copy(), ones.copy()
    fora[WARM, ~residual] = False
    blocks[WARM, residual] = False
    table, short = dict(feeders.FEEDERS), dict(shortcuts.SHORTCUTS)
    masks = {"fora": fora, "fora + forecast": fora, "fora, feeders": fora, "fora, neither": fora,
             "blocks": blocks, "blocks + forecast": blocks}

    @torch.no_grad()
    def timed(kind: str) -> float:
        if kind == "plain":
            t0 = time.perf_counter()
            for _ in range(args.reps):
                call()
            return (time.perf_counter() - t0) / args.reps
        feeders.FEEDERS = {} if kind == "fora, neither" else table
        shortcuts.SHORTCUTS = {} if kind in ("fora, feeders", "fora, neither") else short
        reuse = "forecast" if kind.endswith("forecast") else "hold"
        try:
            with MaskedExecution(model, masks[kind], reuse=reuse) as ex:
                ex.fixed_mask = True
                for k in range(WARM):  # computed steps (a forecast needs two), on other inputs
                    ex.set_step(k)
                    call(k)
                ex.set_step(WARM)
                t0 = time.perf_counter()
                for _ in range(args.reps):
                    call()
                return (time.perf_counter() - t0) / args.reps
        finally:
            feeders.FEEDERS, shortcuts.SHORTCUTS = table, short

    kinds = ["plain", *masks]
    for k in kinds:  # warm-up
        timed(k)
    res = {k: [] for k in kinds}
    for r in range(args.rounds):
        for k in (kinds if r % 2 == 0 else kinds[::-1]):
            res[k].append(timed(k) * 1000)
    plain = statistics.median(res["plain"])
    full = wb.macs.per_step(ones[:1])[0]
    print(f"{args.model}: batch {args.batch}, {args.threads} thread(s), {args.reps} calls × {args.rounds} rounds")
    for k, v in res.items():
        mac = 1.0 if k == "plain" else wb.macs.per_step(masks[k][WARM:])[0] / full
        med = statistics.median(v)
        print(f"  {k:18s} {med:8.2f} ms ({min(v):.2f}–{max(v):.2f})   time {med / plain:.3f}   MACs {mac:.3f} of plain")
    return 0


if __name__ == "__main__":
    sys.exit(main())
