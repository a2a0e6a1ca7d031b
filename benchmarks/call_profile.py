"""Where one model call's time goes, op by op (``torch.profiler``), for a masked run's computed and
reused calls and the plain call beside them (issue 26: time saved per MAC saved on the DiT):

    OMP_NUM_THREADS=1 python benchmarks/call_profile.py mnist-dit                  # FORA N=2, K=50
    OMP_NUM_THREADS=1 python benchmarks/call_profile.py mnist-dit --reuse forecast --rows 20
    OMP_NUM_THREADS=1 python benchmarks/call_profile.py mnist-dit --no-gate-tables  # each shortcut's gates per call
    OMP_NUM_THREADS=1 python benchmarks/call_profile.py mnist-ddpm --reuse forecast --batch 8 [--no-containers]

On a model without transformer blocks (a U-Net) the reuse rows reuse every unit (FORA's shape on the
whole model); ``--no-containers`` runs them without :mod:`blockmask.hooks.containers` (each block's own
forward on its units' reused values).

The plain run (on its own modules over the same weights, as benchmarks/paced.py) and the FORA run
advance together as in ``paced_calls.py``; after a warm-up run of each, every ``--every``-th pair of
calls past the first few is profiled: the plain call, the masked call beside it. Printed: per kind of
call (plain, computed, reused) the mean self CPU time per call of the top ``--rows`` ops by input
shapes, and each kind's mean total. Profiling adds its own overhead, and on a shared CPU the same op
drifts by several percent between calls: read where a kind's time goes, not small differences between
kinds (benchmarks/paced_calls.py times those).
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_table import condition_for  # noqa: E402
from paced import PacedRun, Spec, schedule_arguments, twin_of  # noqa: E402

from blockmask.core import baselines  # noqa: E402
from blockmask.core.errors import BlockmaskError  # noqa: E402
from blockmask.hooks import containers, shortcuts  # noqa: E402
from blockmask.workbench import Workbench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    schedule_arguments(ap)
    ap.add_argument("--every", type=int, default=3, help="profile every N-th pair of calls")
    ap.add_argument("--rows", type=int, default=12)
    ap.add_argument("--no-gate-tables", action="store_true", help="the shortcuts compute their gates at every call")
    ap.add_argument("--no-containers", action="store_true", help="no whole-container shortcut (U-Nets' blocks)")
    args = ap.parse_args(argv)
    try:
        if min(args.interval, args.steps, args.batch, args.every, args.rows) < 1:
            raise BlockmaskError("--interval, --steps, --batch, --every and --rows must be at least 1")
        wb = Workbench.load(args.model)
        keep = np.array([u.residual for u in wb.units])  # (none on a U-Net: every unit reused)
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    if args.no_gate_tables:
        shortcuts.GateTable.for_block = classmethod(lambda cls, execution, indices: None)
    if args.no_containers:
        containers.install = lambda execution: []
    mask = baselines.fora(args.steps, len(wb.units), interval=args.interval, keep=keep)
    computed = mask.all(axis=1)
    twin, cond = twin_of(wb.model), condition_for(wb, args.batch, wb.default_guidance)
    ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    calls: collections.Counter = collections.Counter()
    for warm in (True, False):
        plain = PacedRun(wb, twin, Spec(args.steps), seed=2, batch=args.batch, condition=cond)
        masked = PacedRun(wb, wb.model, Spec(args.steps, mask, args.reuse), seed=2, batch=args.batch, condition=cond)
        with torch.no_grad():
            plain.start(), masked.start()
            for c in range(args.steps):
                for kind, run in (("plain", plain), ("computed" if computed[c] else "reused", masked)):
                    if warm or c < 4 or c % args.every:
                        run.call(c)
                        continue
                    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                        run.call(c)
                    calls[kind] += 1
                    for e in prof.key_averages(group_by_input_shape=True):
                        ops[kind][f"{e.key} {e.input_shapes}"] += e.self_cpu_time_total
            plain.finish(), masked.finish()
    print(f"{args.model}: FORA N={args.interval} K={args.steps} {args.reuse}, batch {args.batch}, one thread"
          + (", no gate tables" if args.no_gate_tables else "") + (", no containers" if args.no_containers else "")
          + "; mean self CPU µs per call")
    for kind in ("plain", "computed", "reused"):
        n = calls[kind]
        if not n:
            continue
        print(f"\n{kind}: {n} calls, {sum(ops[kind].values()) / n:.0f} µs of ops per call")
        for key, us in ops[kind].most_common(args.rows):
            print(f"  {us / n:9.1f}  {key[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
