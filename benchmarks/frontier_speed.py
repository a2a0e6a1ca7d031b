"""Wall time of a planned frontier against the real peers (issue 26, "Wall time, CPU, same process,
interleaved"), from the files ``benchmarks/frontier.py --dense`` wrote:

    python benchmarks/frontier_speed.py mnist-ddpm --frontier DIR -o OUT.csv   # vs the real DeepCache
    python benchmarks/frontier_speed.py mnist-dit  --frontier DIR -o OUT.csv   # speedup per MAC saved
    python benchmarks/frontier_speed.py config:tests/configs/tiny-unet.json --frontier DIR -o OUT.csv --rounds 1

**U-Nets:** for each real DeepCache point (PyPI ``DeepCache`` on a diffusers ``DDPMPipeline``, branches
0 and 1, intervals 2, 3, 5, at K_ref steps), the frontier's schedule at its fidelity is the cheapest
planned schedule (by MACs) whose *validation* PSNR is at least the DeepCache point's validation PSNR
(the choice sees no test seed; both test PSNRs are reported). Rows: ``deepcache_over_schedule`` =
DeepCache's time / the schedule's time (> 1: the schedule is faster).

**Transformers (and U-Nets too):** every distinct planned schedule against the plain K_ref-step run:
``speedup`` (plain time / schedule time), ``efficiency`` = speedup × MAC ratio, and
``saved_per_mac_saved`` = (1 − t/t_plain) / (1 − MAC ratio), the fraction of the MACs saved that
comes back as time (1.0: all of it). With ``--pace steps`` also ``run_macs_ratio``, the MACs of the
timed code's own run counted with FlopCounterMode (:func:`paced.counted_macs`; below the planned ratio
where the shortcuts skip work the planner's per-unit costs count, e.g. the norms of a FORA step and
the gates' timestep embeddings), and ``saved_per_run_mac_saved`` against it (the stricter figure).

``--answers``: time only the masked schedules the frontier answers some budget with
(``Frontier.at_budget``, :func:`blockmask.learning.frontierfile.answered`), not a budget's own plan that
a cheaper plan with a better validation PSNR supersedes (no budget gets it). Plain fewer-steps plans
stay (every ``--fewer-steps-every``-th): they cost exactly their MACs, so their rows show the
measurement's own error.

Timing: one process, ``--threads`` threads, a warm-up of each, then ``--rounds`` rounds of the pair in
alternating order; medians and (min–max) of the per-round ratios; batch ``--batch``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from budget_table import condition_for, deepcache_rows, guidance_of, our_rows  # noqa: E402
from paced import Spec, counted_macs, paced_ratio, twin_of  # noqa: E402

from blockmask.workbench import Workbench  # noqa: E402
from blockmask.core.errors import BlockmaskError  # noqa: E402
from blockmask.io.files import atomic_write_text  # noqa: E402
from blockmask.io.maskfile import MaskFile  # noqa: E402
from blockmask.learning.frontierfile import answered  # noqa: E402


def ratio(a, b, *, rounds: int, batch: int) -> dict:
    """Median (min, max) over rounds of time(a) / time(b), interleaved, order alternating."""
    a.run(1, batch), b.run(1, batch)  # warm-up
    out = []
    for r in range(rounds):
        times = {}
        for row in ((a, b) if r % 2 == 0 else (b, a)):
            t0 = time.perf_counter()
            row.run(2 + r, batch)
            times[id(row)] = time.perf_counter() - t0
        out.append(times[id(a)] / times[id(b)])
    return {"median": float(np.median(out)), "min": float(min(out)), "max": float(max(out)), "rounds": rounds}


def schedules(wb, folder: Path, results: pd.DataFrame, guidance: float) -> tuple[dict, dict]:
    """The planned schedules, distinct by (steps, mask): {key: {"row", "result"}} (the cheapest
    budget's results row for each), and {plan file name: key}."""
    out: dict[tuple, dict] = {}
    names: dict[str, tuple] = {}
    for _, r in results[results.kind == "plan"].sort_values("macs_ratio").iterrows():
        mf = MaskFile.load(folder / r["name"])
        mask = None if mf.mask.all() else mf.mask
        key = names[r["name"]] = (mf.mask.shape[0], None if mask is None else mask.tobytes(), mf.reuse)
        if key not in out:
            row = our_rows(wb, mf.mask.shape[0], {r["name"]: mask}, r["family"], guidance=guidance, reuse=mf.reuse)[0]
            out[key] = {"row": row, "result": r, "spec": Spec(mf.mask.shape[0], mask, mf.reuse)}
    return out, names


def frontier_arguments(ap, *, rounds: int) -> None:
    """The options this benchmark and ``container_effect.py`` share: the model, the frontier folder, the
    CSV to write, rounds and batch."""
    ap.add_argument("model")
    ap.add_argument("--frontier", required=True, help="benchmarks/frontier.py's output folder")
    ap.add_argument("-o", "--output", required=True, help="CSV to write")
    ap.add_argument("--rounds", type=int, default=rounds)
    ap.add_argument("--batch", type=int, default=8)


def frontier_results(folder: Path) -> pd.DataFrame:
    """``folder``'s results.csv; a BlockmaskError where there is none."""
    if not (folder / "results.csv").is_file():
        raise BlockmaskError(f"{folder}/results.csv not found: run benchmarks/frontier.py --dense -o {folder}")
    return pd.read_csv(folder / "results.csv")


def answered_plans(results: pd.DataFrame) -> set[str]:
    """The names of the plans some budget gets (``Frontier.at_budget``: :func:`answered` on the plans in
    budget order), not a budget's own plan that a plan for a smaller budget supersedes."""
    return set(answered(results[results.kind == "plan"].sort_values("budget").reset_index(drop=True)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    frontier_arguments(ap, rounds=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pace", choices=("runs", "steps"), default="runs",
                    help="plain vs schedule: whole runs in turn (runs), or the two runs' model calls in turn, "
                         "each run on its own model copy (steps: benchmarks/paced.py)")
    ap.add_argument("--fewer-steps-every", type=int, default=1, metavar="N",
                    help="time every N-th plain fewer-steps schedule only (all masked ones are timed)")
    ap.add_argument("--answers", action="store_true",
                    help="time only the masked schedules some budget gets (Frontier.at_budget), not superseded own "
                         "plans (fewer steps stay: the control)")
    args = ap.parse_args(argv)
    folder = Path(args.frontier)
    try:
        if min(args.rounds, args.batch, args.threads, args.fewer_steps_every) < 1:
            raise BlockmaskError("--rounds, --batch, --threads and --fewer-steps-every must be at least 1")
        results = frontier_results(folder)
        wb = Workbench.load(args.model)
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    if args.answers:  # the masked plans some budget gets; fewer steps (the control) and the peers' rows stay
        results = results[(results.kind != "plan") | (results.family == "fewer-steps")
                          | results.name.isin(answered_plans(results))]
    guidance = guidance_of(wb)
    plans, names = schedules(wb, folder, results, guidance)
    plan_rows = results[results.kind == "plan"]
    ref = int(MaskFile.load(folder / plan_rows.iloc[0]["name"]).meta["plan"]["budget"]["ref_steps"])
    plain = our_rows(wb, ref, {"plain": None}, "plain", guidance=guidance)[0]
    rows = []
    if type(wb.model).__name__ == "UNet2DModel":
        dc = {r.name: r for r in deepcache_rows(wb, ref, (0, 1), (2, 3, 5), guidance=guidance)}
        for _, peer in results[results.kind == "peer rule"].iterrows():
            ok = plan_rows[plan_rows.valid_psnr >= peer.valid_psnr].sort_values("macs_ratio")
            if peer["name"] not in dc or ok.empty:
                continue
            best = ok.iloc[0]
            r = ratio(dc[peer["name"]], plans[names[best["name"]]]["row"], rounds=args.rounds, batch=args.batch)
            rows.append({"comparison": f"{peer['name']} vs frontier", "peer": peer["name"],
                         "peer_macs_ratio": peer.macs_ratio, "peer_valid_psnr": peer.valid_psnr,
                         "peer_test_psnr": peer.test_psnr, "schedule": best["name"], "schedule_family": best.family,
                         "schedule_provenance": best.provenance, "macs_ratio": best.macs_ratio,
                         "valid_psnr": best.valid_psnr, "test_psnr": best.test_psnr,
                         "deepcache_over_schedule": r["median"], "ratio_min": r["min"], "ratio_max": r["max"],
                         "rounds": r["rounds"], "batch": args.batch, "threads": args.threads})
            print(rows[-1], flush=True)
    if args.pace == "steps":
        twin = twin_of(wb.model)  # the plain run's own modules (no hook on them, ever), the same weights
        cond = condition_for(wb, args.batch, guidance)
    plain_macs = None  # (--pace steps) the plain run's MACs, counted as the schedules' are
    fewer = [k for k in plans if k[1] is None]
    keep = set(fewer[::args.fewer_steps_every])
    for key, p in plans.items():
        if key[1] is None and key not in keep:
            continue
        res = p["result"]
        name = res["name"]
        if args.pace == "steps":
            r = paced_ratio(wb, twin, Spec(ref), p["spec"], rounds=args.rounds, batch=args.batch, condition=cond)
            if plain_macs is None:
                plain_macs = counted_macs(wb, twin, Spec(ref), batch=args.batch, condition=cond)
            counted = counted_macs(wb, wb.model, p["spec"], batch=args.batch, condition=cond) / plain_macs
        else:
            r = ratio(plain, p["row"], rounds=args.rounds, batch=args.batch)
            counted = float("nan")
        saved_macs = 1 - res.macs_ratio
        rows.append({"comparison": "plain vs schedule", "schedule": name, "schedule_family": res.family,
                     "schedule_provenance": res.provenance, "steps": res.steps, "macs_ratio": res.macs_ratio,
                     "valid_psnr": res.valid_psnr, "test_psnr": res.test_psnr, "speedup": r["median"],
                     "speedup_min": r["min"], "speedup_max": r["max"], "efficiency": r["median"] * res.macs_ratio,
                     "saved_per_mac_saved": (1 - 1 / r["median"]) / saved_macs if saved_macs > 1e-9 else float("nan"),
                     "run_macs_ratio": counted,
                     "saved_per_run_mac_saved": (1 - 1 / r["median"]) / (1 - counted) if counted < 1 - 1e-9
                     else float("nan"),
                     "rounds": r["rounds"], "batch": args.batch, "threads": args.threads, "pace": args.pace})
        print(rows[-1], flush=True)
    atomic_write_text(Path(args.output), pd.DataFrame(rows).to_csv(index=False, float_format="%.4f"))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
