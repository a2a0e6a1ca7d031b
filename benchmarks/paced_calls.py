"""Where a masked run's time goes, call by call, against the plain run it is paced with (issue 26:
time saved per MAC saved on the DiT):

    OMP_NUM_THREADS=1 python benchmarks/paced_calls.py mnist-dit                 # FORA N=2, K=50
    OMP_NUM_THREADS=1 python benchmarks/paced_calls.py mnist-dit --rule blocks --reuse forecast
    OMP_NUM_THREADS=1 python benchmarks/paced_calls.py mnist-dit --no-recycle     # caches as fresh tensors
    OMP_NUM_THREADS=1 python benchmarks/paced_calls.py mnist-dit --no-run-sums    # reuse steps sum the caches
    OMP_NUM_THREADS=1 python benchmarks/paced_calls.py mnist-dit --rule blocks --no-chain-cache  # a cache per block

The plain K-step run and the rule's K-step run advance together, one model call of each in turn
(benchmarks/paced.py), so call c of one sits next to call c of the other. Per round: the two runs'
times and their ratio; the median over computed steps of (masked call / the plain call beside it);
the same for reused steps; and each run's time outside its model calls. ``--no-recycle`` runs the
schedule without :meth:`blockmask.hooks.execution.MaskedExecution.whole_run`'s cache buffers (each
step's fresh outputs held as the caches, as before), to show what the buffers change; ``--no-run-sums``
without :mod:`blockmask.hooks.runsums` (each reuse step sums the cached values itself);
``--no-chain-cache`` without :mod:`blockmask.hooks.chaincache` (block caching: each block keeps and
forecasts its own residual).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_table import condition_for  # noqa: E402
from paced import PacedRun, Spec, interleaved, schedule_arguments, twin_of  # noqa: E402

from blockmask.core import baselines  # noqa: E402
from blockmask.core.errors import BlockmaskError  # noqa: E402
from blockmask.hooks import chaincache, runsums  # noqa: E402
from blockmask.workbench import Workbench  # noqa: E402


def timed_calls(run: PacedRun) -> list[float]:
    """Record the seconds of each of ``run``'s model calls (with its scheduler step) into the list returned."""
    out: list[float] = []
    real = run.call

    def call(c: int) -> None:
        before = run.seconds
        real(c)
        out.append(run.seconds - before)

    run.call = call
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    schedule_arguments(ap)
    ap.add_argument("--rule", choices=("fora", "blocks"), default="fora")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-recycle", action="store_true")
    ap.add_argument("--no-run-sums", action="store_true", help="the reuse steps sum their cached values themselves")
    ap.add_argument("--no-chain-cache", action="store_true", help="block caching: a cache per block, not one per chain")
    args = ap.parse_args(argv)
    try:
        if min(args.interval, args.steps, args.batch, args.rounds) < 1:
            raise BlockmaskError("--interval, --steps, --batch and --rounds must be at least 1")
        wb = Workbench.load(args.model)
        residual = np.array([u.residual for u in wb.units])
        if not residual.any():
            raise BlockmaskError(f"{args.model} has no transformer blocks for FORA or block caching")
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    real_plan, real_chain = runsums.plan, chaincache.plan
    if args.no_run_sums:
        runsums.plan = lambda execution, modules: None
    if args.no_chain_cache:
        chaincache.plan = lambda execution: None
    try:
        rounds(wb, args)
    finally:
        runsums.plan, chaincache.plan = real_plan, real_chain
    return 0


def rounds(wb, args) -> None:
    """A warm-up round, then ``args.rounds`` paced rounds, each printed."""
    residual = np.array([u.residual for u in wb.units])
    n = len(wb.units)
    keep = residual if args.rule == "fora" else ~residual  # FORA keeps the blocks, block caching the rest
    mask = baselines.fora(args.steps, n, interval=args.interval, keep=keep)
    computed = mask.all(axis=1)
    twin, cond = twin_of(wb.model), condition_for(wb, args.batch, wb.default_guidance)
    print(f"{args.model}: {args.rule} N={args.interval} K={args.steps} {args.reuse}, batch {args.batch}, one thread"
          + (", no recycling" if args.no_recycle else "") + (", no run sums" if args.no_run_sums else "")
          + (", no chain cache" if args.no_chain_cache else ""))
    for r in range(-1, args.rounds):  # a warm-up round first
        plain = PacedRun(wb, twin, Spec(args.steps), seed=2 + max(r, 0), batch=args.batch, condition=cond)
        masked = PacedRun(wb, wb.model, Spec(args.steps, mask, args.reuse), seed=2 + max(r, 0), batch=args.batch,
                          condition=cond)
        if args.no_recycle:
            start = masked.start
            masked.start = lambda start=start, m=masked: (start(), setattr(m.ex, "recycle", False))[0]
        tp, tm = timed_calls(plain), timed_calls(masked)
        interleaved(plain, masked, a_first=r % 2 == 0)
        if r < 0:
            continue
        tp, tm = np.array(tp), np.array(tm)
        per = tm / tp  # each masked call over the plain call beside it
        print(f"  round {r + 1}: plain {plain.seconds:.3f} s, masked {masked.seconds:.3f} s, ratio "
              f"{masked.seconds / plain.seconds:.4f}; plain call {np.median(tp) * 1e3:.1f} ms; computed / plain "
              f"{np.median(per[computed]):.4f}; reused / plain {np.median(per[~computed]):.4f}; outside calls "
              f"{(plain.seconds - tp.sum()) * 1e3:.1f} / {(masked.seconds - tm.sum()) * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    sys.exit(main())
