"""Markdown summary of a frontier folder written by ``benchmarks/frontier.py`` (docs/RESULTS.md's
frontier tables come from this):

    python benchmarks/frontier_report.py DIR [--speed SPEED.csv] [--before OLD_RESULTS.csv]

Prints: the issue-26 counts on the test seeds (fewer-steps points matched at <= 1.02x MACs, rule
points beaten by >= 0.5 dB at <= their MACs), which family each budget gets how often, the largest
validation gain of a learned or refined candidate over the best non-learned one, the peers nobody
met, one row per planned budget with the schedule that budget gets (``Frontier.at_budget``: the
budget's own plan, or a plan for a smaller budget that validation rates higher), and (``--speed``)
the wall-time rows of ``benchmarks/frontier_speed.py`` (paced runs: time saved per MAC saved against
the planned MACs and against the MACs counted on the timed run itself), and (``--before``: an earlier
``results.csv`` of the same frontier, e.g. ``git show REV:DIR/results.csv``) what each budget got
before and gets now, with the change of its test PSNR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from blockmask.learning.frontierfile import answered


def report(df: pd.DataFrame, speed: pd.DataFrame | None = None) -> str:
    plans = df[df.kind == "plan"].sort_values("budget")
    fs, ru = df[df.kind == "peer fewer-steps"], df[df.kind == "peer rule"]
    met = lambda t: t.met_by.fillna("").astype(str) != ""  # noqa: E731
    out = [f"- fewer-steps points matched (PSNR >= at <= 1.02x MACs, test seeds): **{int(met(fs).sum())} of {len(fs)}**",
           f"- rule points beaten by >= 0.5 dB at <= their MACs (test seeds): **{int(met(ru).sum())} of {len(ru)}**"]
    missed = pd.concat([fs[~met(fs)], ru[~met(ru)]])
    if len(missed):
        out.append("- not met: " + "; ".join(f"{r['name']} ({r.macs_ratio:.1%}, {r.test_psnr:.2f} dB)"
                                               for _, r in missed.iterrows()))
    plans = plans.reset_index(drop=True)
    ans = answer_rows(plans)
    sup = int((ans.name != plans.name).sum())
    fam, own = ans.family.value_counts(), plans.family.value_counts()
    out.append(f"- the answer's family over {len(plans)} budgets: " + ", ".join(f"{k} {v}" for k, v in fam.items())
               + " (each budget's own plan: " + ", ".join(f"{k} {v}" for k, v in own.items())
               + f"; {sup} own plans superseded by a plan for a smaller budget with a better validation PSNR)")
    if "reuse" in plans:
        out.append(f"- with forecast reuse (blockmask.core.forecast): {int((ans.reuse == 'forecast').sum())} of "
                   f"{len(plans)} answers")
    lg = plans.learning_gain_db.dropna()
    if len(lg):
        best = plans.loc[lg.idxmax()]
        out.append(f"- learned or refined over the best non-learned candidate, validation: median {lg.median():+.2f} dB, "
                   f"largest {lg.max():+.2f} dB (budget {best.budget:.1%}); validated at {len(lg)} budgets")
    d = (plans.test_psnr - plans.valid_psnr).abs()
    out.append(f"- test vs validation PSNR of the schedules: mean |difference| {d.mean():.2f} dB, largest {d.max():.2f}")
    out += ["", "| budget | answer (family) | K | MACs | validation PSNR | test PSNR | gain over fewer steps at its "
            "own budget, validation [95% CI] | this budget's own plan, where superseded (validation / test PSNR) |",
            "|---|---|---|---|---|---|---|---|"]
    for (_, p), (_, r) in zip(plans.iterrows(), ans.iterrows()):
        own_plan = "" if p["name"] == r["name"] else f"{p.provenance} ({p.valid_psnr:.2f} / {p.test_psnr:.2f} dB)"
        out.append(f"| {p.budget:.1%} | {r.provenance} ({r.family}) | {int(r.steps)} | {r.macs_ratio:.1%} | "
                   f"{r.valid_psnr:.2f} | {r.test_psnr:.2f} | {r.gain_over_fewer_steps_db:+.2f} "
                   f"[{r.gain_low_db:+.2f}, {r.gain_high_db:+.2f}] | {own_plan} |")
    out += ["", "| peer | MACs | test PSNR | met by |", "|---|---|---|---|"]
    for _, r in pd.concat([ru, fs]).iterrows():
        out.append(f"| {r['name']} | {r.macs_ratio:.1%} | {r.test_psnr:.2f} | {r.met_by if met(r.to_frame().T).iloc[0] else '—'} |")
    if speed is not None and len(speed):
        vs = speed[speed.comparison.str.endswith("vs frontier")]
        if len(vs):
            out += ["", "| peer (real package) | its MACs, validation PSNR | frontier schedule at that PSNR | its MACs, "
                    "validation PSNR | peer time / schedule time, median (min–max) |", "|---|---|---|---|---|"]
            for _, r in vs.iterrows():
                out.append(f"| {r.peer} | {r.peer_macs_ratio:.1%}, {r.peer_valid_psnr:.2f} dB | {r.schedule_provenance} | "
                           f"{r.macs_ratio:.1%}, {r.valid_psnr:.2f} dB | {r.deepcache_over_schedule:.2f}× "
                           f"({r.ratio_min:.2f}–{r.ratio_max:.2f}) |")
        pv = speed[speed.comparison == "plain vs schedule"]
        if len(pv):
            masked = pv[pv.schedule_family != "fewer-steps"]
            out += ["", f"Per MAC saved (time saved / MACs saved), masked schedules: median "
                        f"{masked.saved_per_mac_saved.median():.2f}, min {masked.saved_per_mac_saved.min():.2f} "
                        f"({len(masked)} schedules); fewer steps: median {pv[pv.schedule_family == 'fewer-steps'].saved_per_mac_saved.median():.2f}",
                    "", "| schedule (family) | MACs | speedup, median (min–max) | efficiency | time saved / MACs saved |"
                        " the same, against the timed run's counted MACs |",
                    "|---|---|---|---|---|---|"]
            run = pv.get("saved_per_run_mac_saved", pd.Series(float("nan"), index=pv.index))
            if run.notna().any():
                out[-4] += (f"; against the timed runs' own counted MACs (the stricter figure), masked: median "
                            f"{run[masked.index].median():.3f}, min {run[masked.index].min():.3f}")
            for (_, r), rr in zip(pv.iterrows(), run):
                out.append(f"| {r.schedule_provenance} ({r.schedule_family}) | {r.macs_ratio:.1%} | {r.speedup:.2f}× "
                           f"({r.speedup_min:.2f}–{r.speedup_max:.2f}) | {r.efficiency:.2f} | {r.saved_per_mac_saved:.3f} | "
                           f"{'—' if pd.isna(rr) else f'{rr:.3f}'} |")
    return "\n".join(out)


def answer_rows(plans: pd.DataFrame) -> pd.DataFrame:
    """For each row of ``plans`` (sorted by budget, index 0..n-1), the row of the plan
    :meth:`Frontier.at_budget` answers its budget with."""
    return plans.set_index("name").loc[answered(plans)].reset_index()


def answers(df: pd.DataFrame) -> pd.DataFrame:
    """One row per planned budget: the budget and the plan :meth:`Frontier.at_budget` answers it with (its
    provenance, MACs, validation and test PSNR)."""
    plans = df[df.kind == "plan"].sort_values("budget").reset_index(drop=True)
    got = answer_rows(plans)
    return pd.DataFrame({"budget": plans.budget.round(6), "provenance": got.provenance, "macs_ratio": got.macs_ratio,
                         "valid_psnr": got.valid_psnr, "test_psnr": got.test_psnr})


def before_after(before: pd.DataFrame, now: pd.DataFrame) -> str:
    """What each budget (of both frontiers) got before and gets now, and how its test PSNR moved."""
    m = answers(before).merge(answers(now), on="budget", suffixes=("_before", "_now"))
    d = (m.test_psnr_now - m.test_psnr_before).round(2) + 0.0  # (+ 0.0: no "-0.00" for a rescored tie)
    out = [f"- {len(m)} budgets in both: the answer changed at {int((m.provenance_before != m.provenance_now).sum())}; "
           f"its test PSNR moved by a median {d.median():+.2f} dB (min {d.min():+.2f}, max {d.max():+.2f}), its validation "
           f"PSNR by a median {(m.valid_psnr_now - m.valid_psnr_before).median().round(2) + 0.0:+.2f} dB",
           "", "| budget | before: answer, MACs (validation / test PSNR) | now: answer, MACs (validation / test PSNR) "
           "| test PSNR change |", "|---|---|---|---|"]
    for (_, r), dd in zip(m.iterrows(), d):
        out.append(f"| {r.budget:.1%} | {r.provenance_before}, {r.macs_ratio_before:.1%} ({r.valid_psnr_before:.2f} / "
                   f"{r.test_psnr_before:.2f}) | {r.provenance_now}, {r.macs_ratio_now:.1%} ({r.valid_psnr_now:.2f} / "
                   f"{r.test_psnr_now:.2f}) | {dd:+.2f} dB |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--speed", help="benchmarks/frontier_speed.py's CSV")
    ap.add_argument("--before", help="an earlier results.csv of this frontier: what each budget got then")
    args = ap.parse_args(argv)
    path = Path(args.folder) / "results.csv"
    if not path.is_file():
        print(f"error: {path} not found", file=sys.stderr)
        return 2
    for extra in (args.speed, args.before):
        if extra and not Path(extra).is_file():
            print(f"error: {extra} not found", file=sys.stderr)
            return 2
    speed = pd.read_csv(args.speed) if args.speed else None
    df = pd.read_csv(path)
    print(report(df, speed))
    if args.before:
        print("\n" + before_after(pd.read_csv(args.before), df))
    return 0


if __name__ == "__main__":
    sys.exit(main())
