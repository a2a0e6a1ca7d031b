"""Merge schedules re-planned at some budgets (``benchmarks/frontier.py --budgets ... -o NEW``) into a
planned frontier folder (``DIR``, e.g. docs/results/frontier-cpu/MODEL), judged on the same test seeds:

    python benchmarks/frontier_merge.py mnist-ddpm --into docs/results/frontier-cpu/mnist-ddpm --from NEW

A plan row of ``NEW/results.csv`` replaces the row of the same name (the same budget) in
``DIR/results.csv`` and its mask file is copied; the peers' rows (their validation and test PSNR) stay,
their ``met_by`` is recomputed over the merged plans (:func:`blockmask.learning.frontiercompute.met_by`), and
``DIR/MODEL-NNNref-frontier.json`` (the apps' file) is rebuilt; its ``meta["merged"]`` records this
command and the one that planned ``NEW`` (from ``NEW``'s own frontier file). Both runs must have used the same test
seeds and samples (checked on the peers' test PSNR, which must agree).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pandas as pd

from blockmask.workbench import Workbench
from blockmask.core.errors import BlockmaskError
from blockmask.learning.frontiercompute import met_by
from blockmask.learning.frontierfile import Frontier, build
from blockmask.io.files import atomic_write_text


def merge(into: Path, new: Path) -> pd.DataFrame:
    old_df, new_df = pd.read_csv(into / "results.csv"), pd.read_csv(new / "results.csv")
    peers_old = old_df[old_df.kind != "plan"].set_index("name")
    peers_new = new_df[new_df.kind != "plan"].set_index("name")
    common = peers_old.index.intersection(peers_new.index)
    if len(common) == 0 or (peers_old.loc[common, "test_psnr"] - peers_new.loc[common, "test_psnr"]).abs().max() > 1e-3:
        raise BlockmaskError(f"{new} and {into} were not judged on the same test seeds (the peers' test PSNR differ)")
    fresh = new_df[new_df.kind == "plan"]
    for name in fresh.name:
        shutil.copyfile(new / name, into / name)
    plans = pd.concat([old_df[(old_df.kind == "plan") & ~old_df.name.isin(fresh.name)], fresh])
    plans = plans.sort_values("budget").reset_index(drop=True)
    plans["reuse"] = plans["reuse"].fillna("hold") if "reuse" in plans else "hold"
    records = plans.to_dict("records")
    peers = old_df[old_df.kind != "plan"].copy()
    peers["met_by"] = [met_by(r, records) for r in peers.to_dict("records")]
    return pd.concat([plans, peers], ignore_index=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--into", required=True, help="the frontier folder to update")
    ap.add_argument("--from", dest="new", required=True, help="benchmarks/frontier.py's output with the new plans")
    args = ap.parse_args(argv)
    into, new = Path(args.into), Path(args.new)
    stem = Path(args.model[len("config:"):]).stem if args.model.startswith("config:") else args.model
    try:
        for d in (into, new):
            if not (d / "results.csv").is_file():
                raise BlockmaskError(f"{d}/results.csv not found")
        wb = Workbench.load(args.model)
        df = merge(into, new)
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    target = next(iter(sorted(into.glob(f"{stem}-*ref-frontier.json"))), None)
    if target is None:
        print(f"error: {into} has no {stem}-*ref-frontier.json (run benchmarks/frontier.py -o {into} first)",
              file=sys.stderr)
        return 2
    atomic_write_text(into / "results.csv", df.to_csv(index=False, float_format="%.4f"))
    old_meta = Frontier.load(target).meta
    record = "python benchmarks/frontier_merge.py " + " ".join(argv or sys.argv[1:])
    planned = next(iter(sorted(new.glob(f"{stem}-*ref-frontier.json"))), None)  # the command that planned them
    command = Frontier.load(planned).meta.get("command") if planned is not None else None
    if command:
        record += f" (the new plans: {command})"
    merged = {**old_meta, "merged": [*old_meta.get("merged", []), record]}
    build(into, wb, stem, meta=merged).save(target)
    fs, ru = df[df.kind == "peer fewer-steps"], df[df.kind == "peer rule"]
    print(f"{stem}: merged {int((df.kind == 'plan').sum())} plans; fewer-steps points matched "
          f"{int((fs.met_by.fillna('') != '').sum())}/{len(fs)}; rule points beaten by >= 0.5 dB "
          f"{int((ru.met_by.fillna('') != '').sum())}/{len(ru)}; wrote {into}/results.csv and {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
