"""Budget tables for docs/RESULTS.md: learned masks against the *real* peers at equal compute.

    python benchmarks/budget_table.py --model mnist-ddpm --steps 50 -o docs/results/budgets-mnist-ddpm-50
    python benchmarks/budget_table.py --model mnist-dit --steps 50 -o docs/results/budgets-mnist-dit-50

Rows: the original; every shipped learned mask ``assets/masks/MODEL-NNNsteps-b*.json``; DeepCache
(PyPI ``DeepCache`` on a diffusers ``DDPMPipeline``, or on mnist-ldm's ``StableDiffusionPipeline``,
branches 0 and 1) for U-Nets; cache-dit's DBCache (F1B0 on a ``DiTPipeline``) for the DiT; FORA,
whole-block caching and uniform (blockmask masks); DDIM with fewer steps and a random mask at each
learned mask's MACs. Class-conditional models run at their own guidance (``default_guidance_scale``
in blockmask.json: 1 for mnist-dit, 2 for mnist-ldm / mnist-pixart; ``--guidance`` overrides it).

Every number is measured the same way for every row:

* MACs: ``FlopCounterMode`` over a whole sampling run (batch 2), as a fraction of the plain run's;
* PSNR: final samples against the plain model's, same seeds, on ``--num`` held-out samples from
  seed 5000 (the learned masks were calibrated on seeds 1000..; none of these);
* speed: plain and method runs interleaved in this process after a warm-up, ``--rounds`` rounds at
  batch ``--bench-batch``; the median of the per-round ratios and their spread (min–max).

Writes results.csv / results.md (pandas) and pareto.png / pareto.html (PSNR vs MACs).

Other mask files (e.g. the other methods of docs/METHODS_COMPARED.md) join as rows with
``--extra FAMILY=GLOB``; ``--only`` keeps only the rows whose names contain one of its substrings.

FID/KID (``--fid N``, a second pass over an existing results.csv): N samples per row from seed
20000 (held out like the PSNR seeds; batch b uses seed 20000 + b), against the MNIST test split
with the offline MNIST-classifier extractor (torch-fidelity, as ``blockmask eval``). Sampling N
images per row costs minutes of CPU, so by default only the rows a reader compares are measured:
the original, every learned mask, the best rule at ≤ each learned mask's MACs, DDIM with fewer
steps at those MACs and DeepCache b0 N=3 (``--fid-rows auto``; ``all`` or name substrings):

    python benchmarks/budget_table.py --model mnist-ddpm --steps 50 -o docs/results/budgets-mnist-ddpm-50 --fid 1000
    python benchmarks/budget_table.py --model mnist-dit --steps 50 --batch 20 -o docs/results/budgets-mnist-dit-50 --fid 1000
(class-conditional models: labels cycle 0..9 within each batch, so the batch is a multiple of 10).
``--speed-only`` re-measures just the speed of an existing table's rows (e.g. with more ``--rounds``),
keeping MACs, PSNR and FID.
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

from blockmask.workbench import Workbench  # noqa: E402
from blockmask.hooks.costs import count_macs  # noqa: E402
from blockmask.eval.evaluate import psnr  # noqa: E402
from blockmask.io.models import assets_dir  # noqa: E402
from budget_report import FID_SEED, RULES, summarize, write_outputs  # noqa: E402,F401  (the tables and plots; re-exported)


def _labels(wb, n: int, start: int = 0):
    from blockmask.adapters import adapter_for

    classes = adapter_for(wb.model).num_classes(wb.model)
    return None if classes is None else [(start + i) % min(classes, 10) for i in range(n)]


class Row:
    """One method: how to make its final images (B samples from a seed) as float32 (B, C, H, W) in [0, 1]."""

    def __init__(self, name: str, family: str, run, note: str = ""):
        self.name, self.family, self.run, self.note = name, family, run, note


def guidance_of(wb, override: float | None = None) -> float:
    """The table's guidance scale: ``--guidance`` or else the model's own (as the CLI and the apps)."""
    return wb.default_guidance if override is None else override


def condition_for(wb, batch: int, guidance: float):
    """The rows' condition: classes 0..9 in turn at ``guidance`` (None: an unconditional model)."""
    return wb.condition(class_label=_labels(wb, batch), guidance_scale=guidance) if _labels(wb, 1) else None


def our_rows(wb, steps: int, masks: dict[str, np.ndarray], family: str, *, guidance: float,
             reuse: str = "hold") -> list[Row]:
    def make(mask, k=steps):
        def run(seed, batch):
            cond = condition_for(wb, batch, guidance)
            return wb.images(wb.generate(mask, steps=k, seed=seed, num_images=batch, condition=cond,
                                         reuse=reuse)).numpy()
        return run

    return [Row(n, family, make(m)) for n, m in masks.items()]


def deepcache_rows(wb, steps: int, branches, intervals, *, guidance: float) -> list[Row]:
    """The real DeepCache (``DeepCacheSDHelper``) on a diffusers ``DDPMPipeline`` (pixel U-Net) or, for a
    latent U-Net with class tokens (mnist-ldm), on its ``StableDiffusionPipeline`` with the classes'
    ``prompt_embeds`` at the table's guidance (the pipeline is bitwise blockmask's sampler unmasked)."""
    from DeepCache import DeepCacheSDHelper
    from diffusers import DDIMScheduler, DDPMPipeline

    latent = type(wb.model).__name__ == "UNet2DConditionModel"
    if latent:
        from blockmask.pipelines import class_prompt_embeds, ldm_pipeline

        pipe = ldm_pipeline(wb)
    else:
        pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler.from_config(wb.scheduler().config))
    pipe.set_progress_bar_config(disable=True)

    def call(seed, batch):
        gen = torch.Generator().manual_seed(seed)
        if latent:
            return pipe(**class_prompt_embeds(pipe, _labels(wb, batch)), guidance_scale=guidance,
                        num_inference_steps=steps, generator=gen, output_type="np").images
        return pipe(batch_size=batch, num_inference_steps=steps, generator=gen, output_type="np").images

    def make(branch, interval):
        def run(seed, batch):
            h = DeepCacheSDHelper(pipe=pipe)
            h.set_params(cache_interval=interval, cache_branch_id=branch)
            h.enable()
            try:
                out = call(seed, batch)
            finally:
                h.disable()
            return np.ascontiguousarray(out.transpose(0, 3, 1, 2)).astype(np.float32)
        return run

    return [Row(f"DeepCache b{b} N={n}", f"DeepCache b{b} (PyPI)", make(b, n)) for b in branches for n in intervals]


def cachedit_rows(wb, steps: int, thresholds, warmup: int) -> list[Row]:
    import peers

    pipe = peers.dit_pipeline(wb)

    def make(thr):
        def run(seed, batch):
            return peers.cachedit_dbcache(pipe, threshold=thr, steps=steps, labels=_labels(wb, batch), seed=seed,
                                          warmup=warmup)[0]
        return run

    return [Row(f"DBCache F1B0 thr={t:g}", "cache-dit DBCache (PyPI)", make(t), f"warm-up {warmup}") for t in thresholds]


def speed(row: Row, plain: Row, *, rounds: int, bench_batch: int) -> dict:
    """Plain and ``row`` interleaved after a warm-up: the median per-round speed ratio and its spread."""
    row.run(1, bench_batch), plain.run(1, bench_batch)  # warm-up
    ratios = []
    for r in range(rounds):
        t0 = time.perf_counter()
        plain.run(2 + r, bench_batch)
        t1 = time.perf_counter()
        row.run(2 + r, bench_batch)
        t2 = time.perf_counter()
        ratios.append((t1 - t0) / (t2 - t1))
    return {"speedup": float(np.median(ratios)), "speedup_min": float(min(ratios)), "speedup_max": float(max(ratios))}


def measure(wb, row: Row, plain: Row, *, steps: int, num: int, batch: int, reference: np.ndarray,
            plain_macs: float, rounds: int, bench_batch: int) -> dict:
    macs, _ = count_macs(lambda: row.run(0, 2))
    images = np.concatenate([row.run(5000 + j, min(batch, num - j * batch)) for j in range((num + batch - 1) // batch)])
    mse, db = psnr(images, reference)
    return {"method": row.name, "family": row.family, "macs_ratio": macs / plain_macs, "psnr": db, "mse": mse,
            **speed(row, plain, rounds=rounds, bench_batch=bench_batch), "n": num, "note": row.note}


def speed_pass(wb, dest: Path, plain: Row, rows: list[Row], *, rounds: int, bench_batch: int, model, steps) -> int:
    """``--speed-only``: re-measure the speed of the rows of DEST/results.csv (MACs, PSNR and FID kept),
    writing after each row; ``--only`` narrows the rows."""
    from blockmask.sampling.distributed import device_name

    csv = dest / "results.csv"
    if not csv.exists():
        sys.exit(f"error: {csv} not found: run the table first, then --speed-only")
    df = pd.read_csv(csv)
    for r in rows:
        if r.name not in set(df.method):
            continue
        t0 = time.perf_counter()
        df.loc[df.method == r.name, ["speedup", "speedup_min", "speedup_max"]] = list(
            speed(r, plain, rounds=rounds, bench_batch=bench_batch).values())
        df.loc[df.method == r.name, ["device", "bench"]] = [device_name(wb.device),
                                                            f"batch {bench_batch}, {rounds} interleaved rounds"]
        v = df[df.method == r.name].iloc[0]
        print(f"{r.name}: speed {v.speedup:.2f}x ({v.speedup_min:.2f}-{v.speedup_max:.2f}, "
              f"{time.perf_counter() - t0:.0f}s)", flush=True)
        write_outputs(df, dest, title=f"{model}, {steps} DDIM steps: fidelity at equal compute")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="mnist-ddpm")
    ap.add_argument("--device", default="cpu", help="cpu, cuda or auto (speed ratios are then that device's)")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float,
                    help="classifier-free guidance scale of every row (default: the model's own, blockmask.json)")
    ap.add_argument("--num", type=int, default=64, help="held-out samples per row for PSNR")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds")
    ap.add_argument("--bench-batch", type=int, default=8)
    ap.add_argument("--intervals", default="2,3,4,5,6")
    ap.add_argument("--masks", help="folder of learned masks *-NNNsteps-bNN.json (default: the shipped MODEL-NNNsteps-b*)")
    ap.add_argument("--extra", action="append", default=[], metavar="FAMILY=GLOB",
                    help="also measure the mask files matching GLOB (rows named by file stem) under FAMILY, e.g. "
                         "router=docs/results/methods-mnist-ddpm-50/masks/router-*.json (repeatable)")
    ap.add_argument("--only", help="comma-separated substrings: measure only matching rows (plus the original)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the rows of OUTPUT/results.csv that this run does not measure (with --only)")
    ap.add_argument("--summarize", metavar="CSV", help="only print the per-budget summary of a results.csv")
    ap.add_argument("--fid", type=int, metavar="N", help="add FID/KID at N samples per row to OUTPUT/results.csv")
    ap.add_argument("--fid-rows", default="auto", help="auto | all | comma-separated name substrings")
    ap.add_argument("--speed-only", action="store_true",
                    help="re-measure only the speed of OUTPUT/results.csv's rows (--rounds, --bench-batch; --only "
                         "narrows them); MACs, PSNR and FID stay")
    ap.add_argument("--data", help="MNIST IDX folder for the FID reference (default: $BLOCKMASK_MNIST)")
    ap.add_argument("-o", "--output")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(pd.read_csv(args.summarize)))
        return 0
    if not args.output:
        ap.error("-o/--output is required")
    torch.manual_seed(0)
    wb = Workbench.load(args.model, device=args.device)
    g = guidance_of(wb, args.guidance)
    k = args.steps
    masks = Path(args.masks) if args.masks else assets_dir() / "masks"
    pattern = f"*-{k:03d}steps-b[0-9][0-9].json" if args.masks else f"{args.model}-{k:03d}steps-b[0-9][0-9].json"
    plain, learned, rows = build_rows(wb, sorted(masks.glob(pattern)), k, [int(v) for v in args.intervals.split(",")],
                                      guidance=g)
    rows += extra_rows(wb, k, args.extra, guidance=g)
    rows = list({r.name: r for r in rows}.values())  # one row per name (an extra mask may add a DDIM row again)
    every = {r.name for r in rows}
    dest = Path(args.output)
    if args.fid:
        return fid_pass(wb, dest, plain, rows, n=args.fid, which=args.fid_rows, batch=args.batch, data=args.data,
                        model=args.model, steps=k)
    if args.only:
        keys = [s.strip() for s in args.only.split(",")]
        rows = [r for r in rows if any(s in r.name for s in keys)]
        if not rows:
            sys.exit(f"error: --only {args.only!r} matches no row (rows: {', '.join(sorted(every))})")
    if args.speed_only:
        return speed_pass(wb, dest, plain, rows, rounds=args.rounds, bench_batch=args.bench_batch, model=args.model,
                          steps=k)
    drop = set()
    if args.merge and (dest / "results.csv").exists():  # rows of masks no longer shipped go
        stale = pd.read_csv(dest / "results.csv")
        drop = set(stale.method[stale.family.isin(["learned (blockmask)", "random", "DDIM fewer steps"])])
        drop -= every
    plain_macs, _ = count_macs(lambda: plain.run(0, 2))
    reference = np.concatenate([plain.run(5000 + j, min(args.batch, args.num - j * args.batch))
                                for j in range((args.num + args.batch - 1) // args.batch)])
    from blockmask.sampling.distributed import device_name

    out = []
    for r in rows:
        t0 = time.perf_counter()
        out.append(measure(wb, r, plain, steps=k, num=args.num, batch=args.batch, reference=reference,
                           plain_macs=plain_macs, rounds=args.rounds, bench_batch=args.bench_batch))
        print(f"{r.name}: MACs {out[-1]['macs_ratio']:.3f} PSNR {out[-1]['psnr']:.2f} dB "
              f"speed {out[-1]['speedup']:.2f}x ({time.perf_counter() - t0:.0f}s)", flush=True)
    df = pd.DataFrame(out)
    df["device"] = device_name(wb.device)
    df["bench"] = f"batch {args.bench_batch}, {args.rounds} interleaved rounds"
    df["psnr_n"] = args.num
    df["guidance"] = g
    if args.merge and (dest / "results.csv").exists():
        old = pd.read_csv(dest / "results.csv")
        old = old[~old.method.isin(drop)]
        keep = [c for c in ("fid", "kid", "fid_n") if c in old.columns]  # FID rows of unchanged methods stay
        kept = old[~old.method.isin(df.method)]
        df = pd.concat([kept, df], ignore_index=True)
        if keep:
            print("note: re-measured rows lose their FID; rerun with --fid", file=sys.stderr)
    write_outputs(df, dest, title=f"{args.model}, {k} DDIM steps: fidelity at equal compute")
    return 0


def extra_rows(wb, steps: int, specs: list[str], *, guidance: float) -> list[Row]:
    """Rows for ``--extra FAMILY=GLOB``: every mask file matching GLOB, named by its stem, run at its own
    step count (a ``--steps auto`` mask may have fewer than ``steps``: its MACs and PSNR are still
    against the plain ``steps``-step run, and DDIM with fewer steps at its MACs joins as a row)."""
    import glob

    rows = []
    for spec in specs:
        family, sep, pattern = spec.partition("=")
        if not sep or not family or not pattern:
            sys.exit(f"error: --extra takes FAMILY=GLOB, got {spec!r}")
        files = sorted(glob.glob(pattern))
        if not files:
            sys.exit(f"error: --extra {spec!r}: no file matches {pattern}")
        for f in files:
            mask = wb.load_mask(f)[0].mask
            rows += our_rows(wb, mask.shape[0], {Path(f).stem: mask}, family, guidance=guidance)
            if mask.shape[0] != steps:
                fewer = max(1, round(wb.macs.total(mask) / wb.macs.baseline(steps) * steps))
                if f"DDIM {fewer} steps" not in {r.name for r in rows}:
                    rows += our_rows(wb, fewer, {f"DDIM {fewer} steps": None}, "DDIM fewer steps", guidance=guidance)
    return rows


def build_rows(wb, mask_files: list[Path], k: int, intervals: list[int], *, guidance: float):
    """(plain row, learned masks by name, every row) for a table at K = ``k`` steps, all at ``guidance``."""
    import functools

    ours = functools.partial(our_rows, wb, guidance=guidance)
    plain = ours(k, {"original": None}, "original")[0]
    learned = {}
    for p in mask_files:
        mf, _ = wb.load_mask(p, steps=k)
        learned[f"learned {p.stem.rsplit('-', 1)[1]}"] = mf.mask
    rows = ours(k, learned, "learned (blockmask)")
    kind = type(wb.model).__name__
    if kind.startswith("UNet"):
        rows += deepcache_rows(wb, k, (0, 1), intervals, guidance=guidance)
    else:
        if kind == "DiTTransformer2DModel" and guidance == 1.0:  # cache-dit on a DiTPipeline (peers.py,
            # guidance 1); PixArt: not wired here
            rows += cachedit_rows(wb, k, (0.05, 0.1, 0.2, 0.3, 0.5), warmup=4)
        rows += ours(k, {f"blocks N={n}": wb.baseline("blocks", steps=k, interval=n) for n in intervals},
                     "block caching")
    rows += ours(k, {f"FORA N={n}": wb.baseline("fora", steps=k, interval=n) for n in intervals}, "FORA")
    rows += ours(k, {f"uniform every {e}": wb.baseline("uniform", steps=k, every=e) for e in (2, 3)}, "uniform")
    for name, m in learned.items():
        ratio = wb.macs.ratio(m)
        fewer = max(1, round(ratio * k))
        rows += ours(fewer, {f"DDIM {fewer} steps": None}, "DDIM fewer steps")
        rows += ours(k, {f"random @ {name.split()[-1]}": wb.baseline("random", steps=k, macs_ratio=ratio)}, "random")
    return plain, learned, rows


def fid_rows(df: pd.DataFrame, which: str) -> list[str]:
    """Names of the rows to measure FID on: ``auto`` = the original, every learned mask, the best rule
    at <= each learned mask's MACs, DDIM with fewer steps nearest its MACs, DeepCache b0 N=3."""
    if which == "all":
        return list(df.method)
    if which != "auto":
        keys = [s.strip() for s in which.split(",")]
        return [m for m in df.method if any(s in m for s in keys)]
    names = ["original", "DeepCache b0 N=3"]
    rules = df[df.family.str.startswith(RULES)]
    fewer = df[df.family == "DDIM fewer steps"]
    for _, r in df[df.family.str.startswith("learned")].iterrows():
        names.append(r.method)
        cap = rules[rules.macs_ratio <= r.macs_ratio + 1e-9]
        if len(cap):
            names.append(cap.loc[cap.psnr.idxmax()].method)
        if len(fewer):
            names.append(fewer.iloc[(fewer.macs_ratio - r.macs_ratio).abs().argsort()[:1]].method.iloc[0])
    return [m for m in dict.fromkeys(names) if m in set(df.method)]


def fid_pass(wb, dest: Path, plain: Row, rows: list[Row], *, n: int, which: str, batch: int, data, model, steps) -> int:
    """Add FID/KID at ``n`` samples to the chosen rows of DEST/results.csv (see the module doc)."""
    import tempfile

    from blockmask.eval.evaluate import fidelity_metrics, reference_images

    csv = dest / "results.csv"
    if _labels(wb, 1) is not None and batch % 10:
        sys.exit(f"error: --batch {batch}: class labels cycle 0..9 within a batch, so the FID pass of a "
                 "class-conditional model needs a batch that is a multiple of 10 (balanced classes)")
    if not csv.exists():
        sys.exit(f"error: {csv} not found: run the table first, then --fid")
    df = pd.read_csv(csv)
    if "original" not in set(df.method):  # the plain run: the FID every row is read against
        df = pd.concat([df, pd.DataFrame([{"method": "original", "family": "original", "macs_ratio": 1.0,
                                           "psnr": np.inf, "speedup": 1.0, "speedup_min": 1.0, "speedup_max": 1.0,
                                           "note": "", "device": df.device.iloc[0]}])], ignore_index=True)
    for col in ("fid", "kid", "fid_n"):
        if col not in df.columns:
            df[col] = np.nan
    by_name = {r.name: r for r in [plain] + rows}
    names = [m for m in fid_rows(df, which) if m == "original" or m in by_name]
    ref = reference_images(data, wb.model.config.sample_size)
    with tempfile.TemporaryDirectory() as cache:
        for name in names:
            if df.loc[df.method == name, "fid_n"].eq(n).all():
                continue  # already measured at this N
            t0 = time.perf_counter()
            row = by_name.get(name, plain)
            images = np.concatenate([row.run(FID_SEED + b, min(batch, n - s))
                                     for b, s in enumerate(range(0, n, batch))])
            m = fidelity_metrics(images, ref, extractor="mnist-cnn", cache_dir=Path(cache), ref_name="mnist-ref")
            df.loc[df.method == name, ["fid", "kid", "fid_n"]] = [m["fid"], m["kid"], n]
            print(f"{name}: FID {m['fid']:.2f} KID {m['kid']:.4f} (N={n}, {time.perf_counter() - t0:.0f}s)", flush=True)
            write_outputs(df, dest, title=f"{model}, {steps} DDIM steps: fidelity at equal compute")  # after each row
    return 0


if __name__ == "__main__":
    sys.exit(main())
