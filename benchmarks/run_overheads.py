"""Where a FORA whole run's time goes besides the model's own work, on a DiT (issue 26: time saved per
MAC saved):

    OMP_NUM_THREADS=1 python benchmarks/run_overheads.py mnist-dit --reuse forecast
    OMP_NUM_THREADS=1 python benchmarks/run_overheads.py mnist-dit --batch 1 --runs 30   # Python's share

FORA N=``--interval`` K=``--steps`` whole runs as :class:`paced.PacedRun` times them (set-up, calls,
finish), each run alone, after a warm-up run of each kind; medians over ``--runs`` of:

* ``set-up``: the masked run's time outside its model calls (execution, hooks, plans; finish) and the
  plain run's (its scheduler and noise);
* ``gate tables``: time in :meth:`blockmask.hooks.shortcuts.GateTable._make` per run (it runs inside the
  first call);
* ``run sums``: time in :meth:`blockmask.hooks.runsums.RunSums.take` per computed step, its in-place
  passes (``addcmul_``) per computed step and the median pass in µs;
* ``lean``: the run with every unit hooked (as before :mod:`blockmask.hooks.lean`) minus the lean run
  beside it (which goes first alternates), median and range of the paired differences;
* ``non-block call``: the plain model's call with every block passing its input on (embeddings, final
  norm and projection): what a reused step cannot skip.

Wall time on a shared CPU drifts by tens of percent: read sizes, not small differences
(``paced_calls.py`` and ``frontier_speed.py`` interleave the runs they compare).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_table import condition_for  # noqa: E402
from paced import PacedRun, Spec, schedule_arguments, twin_of  # noqa: E402

from blockmask.core import baselines  # noqa: E402
from blockmask.core.errors import BlockmaskError  # noqa: E402
from blockmask.hooks import runsums, shortcuts  # noqa: E402
from blockmask.hooks.execution import MaskedExecution  # noqa: E402
from blockmask.workbench import Workbench  # noqa: E402


class Clock:
    """Seconds spent in wrapped functions, by name (and the in-place passes of run sums' ``take``)."""

    def __init__(self):
        self.spent: dict[str, float] = {}
        self.passes: list[float] = []
        self.inside = False

    def wrap(self, owner, name: str, key: str) -> None:
        real = getattr(owner, name)

        def timed(*args, **kwargs):
            t0, self.inside = time.perf_counter(), key == "take"
            try:
                return real(*args, **kwargs)
            finally:
                self.inside = False
                self.spent[key] = self.spent.get(key, 0.0) + time.perf_counter() - t0

        setattr(owner, name, timed)

    def wrap_passes(self) -> None:
        real = torch.Tensor.addcmul_

        def timed(t, *args, **kwargs):
            t0 = time.perf_counter()
            out = real(t, *args, **kwargs)
            if self.inside:
                self.passes.append(time.perf_counter() - t0)
            return out

        torch.Tensor.addcmul_ = timed


def one_run(wb, model, spec: Spec, *, batch: int, condition, lean: bool = True) -> tuple[float, float]:
    """(seconds of the whole run as :class:`PacedRun` counts them, seconds of its model calls)."""
    run = PacedRun(wb, model, spec, seed=2, batch=batch, condition=condition)
    real = MaskedExecution.whole_run
    MaskedExecution.whole_run = lambda ex, calls=None: (real(ex, calls), setattr(ex, "lean", lean), ex)[2]
    calls = 0.0
    try:
        with torch.no_grad():
            for c in range(run.start()):
                before = run.seconds
                run.call(c)
                calls += run.seconds - before
            run.finish()
    finally:
        MaskedExecution.whole_run = real
    return run.seconds, calls


def non_block_call(wb, twin, *, batch: int, condition, repeats: int) -> float:
    """Median seconds of the plain model's call with every block passing its input on."""
    blocks = list(getattr(twin, runsums.CHAINS[type(twin).__name__]))
    cfg = twin.config
    x = torch.randn(batch, cfg.in_channels, cfg.sample_size, cfg.sample_size)
    labels = torch.as_tensor(list(condition.class_labels or [0] * batch)[:batch])
    t = torch.full((batch,), 500)
    for b in blocks:
        b.forward = lambda hidden_states, *args, **kwargs: hidden_states
    out = []
    try:
        with torch.no_grad():
            for _ in range(repeats + 3):
                t0 = time.perf_counter()
                twin(x, timestep=t, class_labels=labels)
                out.append(time.perf_counter() - t0)
    finally:
        for b in blocks:
            del b.forward
    return float(np.median(out[3:]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    schedule_arguments(ap)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    try:
        if min(args.interval, args.steps, args.batch, args.runs) < 1:
            raise BlockmaskError("--interval, --steps, --batch and --runs must be at least 1")
        wb = Workbench.load(args.model)
        if type(wb.model).__name__ not in runsums.CHAINS:
            raise BlockmaskError(f"{args.model} is not a DiT whose blocks run as a chain (run sums)")
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    residual = np.array([u.residual for u in wb.units])
    mask = baselines.fora(args.steps, len(wb.units), interval=args.interval, keep=residual)
    computed = int(mask.all(axis=1).sum())
    twin, cond = twin_of(wb.model), condition_for(wb, args.batch, wb.default_guidance)
    fora, plain = Spec(args.steps, mask, args.reuse), Spec(args.steps)
    clock = Clock()
    real = (shortcuts.GateTable._make, runsums.RunSums.take, torch.Tensor.addcmul_)
    clock.wrap(shortcuts.GateTable, "_make", "make")
    clock.wrap(runsums.RunSums, "take", "take")
    clock.wrap_passes()
    rows = {"setup": [], "plain setup": [], "make": [], "take": [], "passes": [], "pass": [], "lean": []}
    try:
        for r in range(args.runs + 1):  # a warm-up of each first; the lean run and the other in turn
            full = one_run(wb, wb.model, fora, batch=args.batch, condition=cond, lean=False) if r % 2 else None
            clock.spent.clear()
            clock.passes.clear()
            run = one_run(wb, wb.model, fora, batch=args.batch, condition=cond)
            spent, passes = dict(clock.spent), list(clock.passes)
            full = full or one_run(wb, wb.model, fora, batch=args.batch, condition=cond, lean=False)
            base = one_run(wb, twin, plain, batch=args.batch, condition=cond)
            if r == 0:
                continue
            rows["setup"].append(run[0] - run[1])
            rows["plain setup"].append(base[0] - base[1])
            rows["make"].append(spent.get("make", 0.0))
            rows["take"].append(spent.get("take", 0.0) / max(computed, 1))
            rows["passes"].append(len(passes) / max(computed, 1))
            rows["pass"].append(float(np.median(passes)) if passes else 0.0)
            rows["lean"].append(full[0] - run[0])
    finally:
        shortcuts.GateTable._make, runsums.RunSums.take, torch.Tensor.addcmul_ = real
    nb = non_block_call(wb, twin, batch=args.batch, condition=cond, repeats=20)
    med = {k: float(np.median(v)) for k, v in rows.items()}
    print(f"{args.model}: fora N={args.interval} K={args.steps} {args.reuse}, batch {args.batch}, one thread, "
          f"medians of {args.runs} runs")
    print(f"  set-up and finish: masked {med['setup'] * 1e3:.2f} ms, plain {med['plain setup'] * 1e3:.2f} ms per run")
    print(f"  gate tables: {med['make'] * 1e3:.2f} ms per run")
    print(f"  run sums: {med['take'] * 1e3:.3f} ms per computed step, {med['passes']:.1f} passes of "
          f"{med['pass'] * 1e6:.1f} µs")
    print(f"  lean: every unit hooked costs {med['lean'] * 1e3:+.2f} ms per run (paired, "
          f"{min(rows['lean']) * 1e3:+.2f} to {max(rows['lean']) * 1e3:+.2f})")
    print(f"  non-block call: {nb * 1e3:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
