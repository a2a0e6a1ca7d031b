"""A planned frontier for one model, scored against the peers of issue 26's "Done when" on held-out
*test* seeds: disjoint from the planner's calibration seeds (its screening) and validation seeds (its
final choice), so no choice was made on them.

    python benchmarks/frontier.py mnist-ddpm --ref-steps 50 --budgets 0.25,0.35,0.45,0.55,0.65,0.75,0.85 -o DIR
    python benchmarks/frontier.py mnist-dit --ref-steps 50 -o DIR --device cuda
    python benchmarks/frontier.py config:tests/configs/tiny-unet.json -o DIR --dry-run   # CI, seconds

Writes ``DIR/MODEL-NNNref-frontier.json`` (:class:`blockmask.learning.frontierfile.Frontier`: every point
below with its mask, the file the apps read), ``DIR/MODEL-NNNref-bBB-plan.json`` (mask files; metadata ``family`` and ``plan``: provenance,
calibration and validation figures) and ``DIR/results.csv``: one row per planned schedule and per
peer point — plain DDIM at every K' from 13 to 45 (scaled to --ref-steps), DeepCache branches 0
and 1 at intervals 2, 3, 5 (U-Nets; blockmask's DeepCache mask gives the real package's images bit
for bit, tests/test_peers.py) and FORA 2, 3 and block caching 2, 3 (transformers), all at K_ref.
Columns: MACs against the plain K_ref-step run (MacProfile on the rectified mask), validation PSNR
(what the planner saw) and test PSNR (``--test`` samples from ``--test-seed`` on); a peer row says
which schedule matches it on the test seeds (fewer steps: PSNR ≥ at ≤ 1.02× its MACs) or beats it
(rules: +0.5 dB at ≤ its MACs). Prints the counts.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from blockmask.workbench import Workbench
from blockmask.learning.candidates import Candidate
from blockmask.core.errors import BlockmaskError
from blockmask.learning.frontiercompute import peer_row
from blockmask.learning.frontierfile import build, peer_points
from blockmask.io.files import atomic_write_text
from blockmask.io.maskfile import MaskFile
from blockmask.learning.planner import Planner, psnr_db
from blockmask.learning.planscore import Group
from blockmask.learning.sweep import frontier_budgets, sweep

def planned_row(path: Path, pl: Planner, test: Group) -> dict:
    """A results row for a schedule planned earlier (its mask file), judged on the test seeds."""
    mf = MaskFile.load(path)
    meta, v = mf.meta["plan"], mf.meta["plan"]["validation"]
    c = Candidate(path.name, mf.meta["family"], mf.mask.shape[0], None if mf.mask.all() else mf.mask, 0.0,
                  {"reuse": mf.reuse})
    return {"kind": "plan", "name": path.name, "family": c.family, "provenance": meta["provenance"]["name"],
            "reuse": mf.reuse,
            "budget": meta["budget"]["value"], "steps": c.steps, "macs_ratio": pl.macs_ratio(c.steps, c.mask),
            "valid_psnr": v["psnr"], "test_psnr": psnr_db(pl.scorer.errors(test, c)),
            "calib_psnr": meta["calibration"]["psnr"], "gain_over_fewer_steps_db": v["gain_over_fewer_steps_db"],
            "gain_low_db": v["interval_db"][0], "gain_high_db": v["interval_db"][1],
            "learning_gain_db": (v.get("learning_gain_db") or {}).get("gain_db"), "plan_seconds": meta["plan_seconds"]}


def schedule_row(s, b: float, out: Path, stem: str, ref: int, pl: Planner, test: Group) -> dict:
    """Write the schedule's mask file (as soon as it is planned: a stopped run keeps what it
    finished) and judge it on the test seeds."""
    path = out / f"{stem}-{ref:03d}ref-b{b * 100:05.2f}-plan.json".replace(".", "p", 1)
    s.to_mask_file(path)
    print(f"{path.name}: {s.provenance['name']} ({s.family}), MACs {s.macs_ratio:.3f}, validation "
          f"{s.validation['psnr']:.2f} dB, {s.plan_seconds:.0f}s", flush=True)
    held_out = Candidate(path.name, s.family, s.steps, None if s.mask.all() else s.mask, s.cost, {"reuse": s.reuse})
    return {"kind": "plan", "name": path.name, "family": s.family, "provenance": s.provenance["name"],
            "reuse": s.reuse,
            "budget": b, "steps": s.steps, "macs_ratio": s.macs_ratio, "valid_psnr": s.validation["psnr"],
            "test_psnr": psnr_db(pl.scorer.errors(test, held_out)), "calib_psnr": s.calibration["psnr"],
            "gain_over_fewer_steps_db": s.validation["gain_over_fewer_steps_db"],
            "gain_low_db": s.validation["interval_db"][0], "gain_high_db": s.validation["interval_db"][1],
            "learning_gain_db": s.validation.get("learning_gain_db", {}).get("gain_db"),
            "plan_seconds": s.plan_seconds}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--ref-steps", type=int, default=50)
    ap.add_argument("--budgets", default="0.25,0.35,0.45,0.55,0.65,0.75,0.85")
    ap.add_argument("-o", "--output", required=True, help="output folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--calib", type=int, default=64)
    ap.add_argument("--valid", type=int, default=128)
    ap.add_argument("--test", type=int, default=128, help="held-out samples that judge the frontier")
    ap.add_argument("--test-seed", type=int, default=20_000)
    ap.add_argument("--chunk", type=int, default=64, help="samples per sampling run (one generator seed each)")
    ap.add_argument("--no-learn", action="store_true")
    ap.add_argument("--refine-seconds", type=float, default=40.0, help="wall-clock cap of each refinement")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="seconds: plan no further budget after this (the peers are still scored)")
    ap.add_argument("--plans", metavar="DIR",
                    help="plan nothing: judge the schedules planned earlier (DIR/MODEL-*-plan.json) and the peers on "
                         "the test seeds (peers' validation PSNR left out)")
    ap.add_argument("--dense", action="store_true",
                    help="the dense frontier (blockmask.learning.sweep): every K'/K_ref from 13 to 45 (scaled), every rule "
                         "peer's own MAC point and --budgets, from one shared pool; refinement at the rule points")
    ap.add_argument("--mask-every", type=int, default=1,
                    help="--dense: fit rules and learned masks at every Nth budget (and the rule points)")
    ap.add_argument("--screen", type=int, default=16, help="samples of the first calibration chunk (screening, refinement)")
    ap.add_argument("--refine-top", type=int, default=2, help="starts refined per refined budget")
    ap.add_argument("--peer-stride", type=int, default=1,
                    help="score every Nth plain fewer-steps K' (and the last) as a peer; 1 (default): every K'")
    ap.add_argument("--dry-run", action="store_true",
                    help="tiny sizes (CI): 4+4 samples, K_ref <= 6, no learning or refinement")
    args = ap.parse_args(argv)
    try:
        budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    except ValueError:
        print(f"error: --budgets takes comma-separated fractions, got {args.budgets!r}", file=sys.stderr)
        return 2
    if args.peer_stride < 1:
        print(f"error: --peer-stride must be >= 1, got {args.peer_stride}", file=sys.stderr)
        return 2
    ref = min(args.ref_steps, 6) if args.dry_run else args.ref_steps
    opts = dict(calib=4, valid=4, chunk=4, learn=False, refine_top=0, screen_keep=2, neighbours=0,
                validate_top=1) if args.dry_run else \
        dict(calib=args.calib, valid=args.valid, chunk=args.chunk, learn=not args.no_learn,
             refine_seconds=args.refine_seconds, refine_top=args.refine_top, screen=args.screen)
    out = Path(args.output)
    try:
        out.mkdir(parents=True, exist_ok=True)
        wb = Workbench.load(args.model, device=args.device)
        pl = Planner(wb, ref_steps=ref, **opts)
        for b in budgets:  # every budget checked before any work
            pl.check(b)
        test = Group("test", args.test_seed, 4 if args.dry_run else args.test, pl.valid.chunk)
        if set(test.seeds) & (set(pl.calib.seeds) | set(pl.valid.seeds)):
            raise BlockmaskError(f"test seeds {test.seeds[0]}..{test.seeds[-1]} overlap the planner's seeds")
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    stem = Path(args.model[len("config:"):]).stem if args.model.startswith("config:") else args.model
    rows = []
    t0 = time.perf_counter()
    if args.plans:
        rows.extend(planned_row(p, pl, test) for p in sorted(Path(args.plans).glob(f"{stem}-*-plan.json")))
    peers = peer_points(wb, ref, args.peer_stride)
    if args.dense and not args.plans:
        points = sorted({round(pl.macs_ratio(c.steps, c.mask), 12) for c in peers if c.family == "rule"})
        budgets = frontier_budgets(ref, extra=[*points, *budgets])
        if args.dry_run:
            budgets = budgets[:: max(1, len(budgets) // 3)]
        print(f"dense frontier: {len(budgets)} budgets, refined at the {len(points)} rule points", flush=True)
        for b, s in zip(budgets, sweep(pl, budgets, refine_at=points, mask_every=args.mask_every)):
            rows.append(schedule_row(s, b, out, stem, ref, pl, test))
    for b in [] if args.plans or args.dense else budgets:
        if args.time_limit is not None and time.perf_counter() - t0 > args.time_limit:
            print(f"time limit: budget {b:g} and later not planned", flush=True)
            break
        rows.append(schedule_row(pl.plan(b), b, out, stem, ref, pl, test))
    plan_s = time.perf_counter() - t0
    plans = list(rows)
    for c in peers:  # matched / beaten as in the apps' quick frontiers (blockmask.learning.frontiercompute)
        rows.append(peer_row(pl, c, test, plans, valid=not args.plans))
    pl.close()
    df = pd.DataFrame(rows)
    atomic_write_text(out / "results.csv", df.to_csv(index=False, float_format="%.4f"))
    if any(r["kind"] == "plan" for r in plans):  # the one file the apps read (blockmask.learning.frontierfile)
        build(out, wb, stem, meta={"command": "python benchmarks/frontier.py " + " ".join(argv or sys.argv[1:]),
                                   "device": str(wb.device), "test_seed": args.test_seed, "test_samples": test.samples,
                                   "calibration_seeds": pl.calib.seeds, "validation_seeds": pl.valid.seeds}
              ).save(out / f"{stem}-{ref:03d}ref-frontier.json")
    fs, ru = df[df.kind == "peer fewer-steps"], df[df.kind == "peer rule"]
    print(df.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{stem}, K_ref={ref}, {wb.device}: {len(plans)} schedule(s) planned in {plan_s:.0f}s; "
          f"on {len(test.seeds)} test chunk(s): fewer-steps points matched {int((fs.met_by != '').sum())}/{len(fs)}; "
          f"rule points beaten by >= 0.5 dB {int((ru.met_by != '').sum())}/{len(ru)}; wrote {out}/results.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
