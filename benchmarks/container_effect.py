"""What the whole-container shortcut (blockmask/hooks/containers.py) changes in wall time, per
schedule a planned frontier answers some budget with (issue 26: time saved per MAC saved):

    OMP_NUM_THREADS=1 python benchmarks/container_effect.py mnist-ddpm --frontier docs/results/frontier-cpu/mnist-ddpm -o OUT.csv

For each masked schedule some budget gets (``frontier_speed.py --answers``'s), the same schedule runs
twice in one process, each run on its own copy of the model's modules over one set of weights
(benchmarks/paced.py ``twin_of``): with the container hooks and without them. The two runs' model calls
go in turn (``paced.interleaved``), ``--rounds`` rounds after a warm-up, the order alternating.
Reported: the median (min–max) over rounds of time with / time without, the number of calls the
containers served from their patterns in a run, and whether the two runs' images are equal bit for bit.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_table import condition_for, guidance_of  # noqa: E402
from frontier_speed import answered_plans, frontier_arguments, frontier_results, schedules  # noqa: E402
from paced import PacedRun, interleaved, twin_of  # noqa: E402

from blockmask.core.errors import BlockmaskError  # noqa: E402
from blockmask.hooks import containers  # noqa: E402
from blockmask.io.files import atomic_write_text  # noqa: E402
from blockmask.workbench import Workbench  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    frontier_arguments(ap, rounds=5)
    args = ap.parse_args(argv)
    folder = Path(args.frontier)
    try:
        if min(args.rounds, args.batch) < 1:
            raise BlockmaskError("--rounds and --batch must be at least 1")
        results = frontier_results(folder)
        wb = Workbench.load(args.model)
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    results = results[(results.kind == "plan") & results.name.isin(answered_plans(results))]
    guidance = guidance_of(wb)
    plans, _ = schedules(wb, folder, results, guidance)
    twin, cond = twin_of(wb.model), condition_for(wb, args.batch, guidance)
    real_install, real_serve = containers.install, containers.ContainerHook.serve
    served = [0]

    def serve(self, pattern, called, wanted):
        served[0] += 1
        return real_serve(self, pattern, called, wanted)

    containers.install = lambda ex: [] if ex.model is twin else real_install(ex)  # the twin: no containers
    containers.ContainerHook.serve = serve
    rows = []
    try:
        for p in plans.values():
            spec, res = p["spec"], p["result"]
            if spec.mask is None:
                continue
            ratios, same = [], True
            for r in range(-1, args.rounds):  # a warm-up round first
                served[0] = 0
                on = PacedRun(wb, wb.model, spec, seed=2 + max(r, 0), batch=args.batch, condition=cond)
                off = PacedRun(wb, twin, spec, seed=2 + max(r, 0), batch=args.batch, condition=cond)
                a, b = interleaved(on, off, a_first=r % 2 == 0)
                same = same and np.array_equal(a, b)
                if r >= 0:
                    ratios.append(on.seconds / off.seconds)
            rows.append({"schedule": res["name"], "schedule_provenance": res.provenance, "macs_ratio": res.macs_ratio,
                         "with_over_without": float(np.median(ratios)), "min": min(ratios), "max": max(ratios),
                         "calls_served_per_run": served[0], "same_images": same, "rounds": args.rounds,
                         "batch": args.batch})
            print(rows[-1], flush=True)
    finally:
        containers.install, containers.ContainerHook.serve = real_install, real_serve
    atomic_write_text(Path(args.output), pd.DataFrame(rows).to_csv(index=False, float_format="%.4f"))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
