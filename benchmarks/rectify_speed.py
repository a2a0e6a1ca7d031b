"""Rectification at editor sizes against its budget (issue 5: < 100 ms at K = 1000, N = 60), measured
here instead of in the test suite (issue 30: no wall-clock asserts in tests):

    python benchmarks/rectify_speed.py                 # K = 1000, N = 60, budget 100 ms
    python benchmarks/rectify_speed.py --steps 200 --units 20 --repeats 3

Two consumer graphs: a chain (each unit feeds the next) and a window (each unit feeds the next 7, the
last 5 feed the output). A random mask (60% ones, row 0 all ones), one warm-up call, then
``--repeats`` timed calls; prints the first call, the median and the worst, and exits 1 when the
median is over ``--budget-ms``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np

from blockmask.core.graph import ConsumerGraph
from blockmask.core.rectify import rectify


def graphs(n: int) -> dict[str, ConsumerGraph]:
    window = ConsumerGraph(tuple(tuple(range(i + 1, min(i + 8, n))) for i in range(n)),
                           tuple(i >= n - 5 for i in range(n)))
    return {"chain": ConsumerGraph.chain(n), "window": window}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--units", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--budget-ms", type=float, default=100.0)
    args = ap.parse_args(argv)
    if min(args.steps, args.units, args.repeats) < 1 or args.units < 6 or not args.budget_ms > 0:
        print("error: --steps and --repeats must be at least 1, --units at least 6, --budget-ms above 0",
              file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    m = rng.random((args.steps, args.units)) < 0.6
    m[0] = True
    over = False
    for name, g in graphs(args.units).items():
        t0 = time.perf_counter()
        rectify(m, g)
        first = (time.perf_counter() - t0) * 1000
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            rectify(m, g)
            times.append((time.perf_counter() - t0) * 1000)
        med = statistics.median(times)
        over |= med > args.budget_ms
        print(f"{name:6s} K={args.steps} N={args.units}: first {first:.1f} ms, median {med:.1f} ms, "
              f"worst {max(times):.1f} ms (budget {args.budget_ms:g} ms){'  OVER' if med > args.budget_ms else ''}")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
