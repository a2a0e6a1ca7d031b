"""The ``blockmask`` command line. Every command prints a readable summary, or JSON with ``--json``.

Error model: bad input of any kind (options, files, outputs) is one line ``error: …`` on stderr and
exit code 2 — argparse's own errors included (:class:`_Parser`). Options and outputs are checked
before any work starts. A bug (any other exception) is one line too, exit code 1, never a
traceback (set ``BLOCKMASK_DEBUG=1`` to see it). SIGTERM and Ctrl-C remove temp files and locks
(exit 143 / 130)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from .errors import BlockmaskError, OptionError
from .schedulers import SCHEDULER_HELP


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: blockmask train: …``), exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def _finite(text: str) -> float:
    """A float option: finite (nan and inf are refused at parse time)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def _model_args(p: argparse.ArgumentParser, *, steps: bool = True) -> None:
    p.add_argument("model", help="a bundled model (a folder of the bundled assets' models/: mnist-ddpm, "
                                  "mnist-dit, …), config:PATH.json, a diffusers folder, or a hub id")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random init for config: models")
    p.add_argument("--scheduler", default="ddim", help=SCHEDULER_HELP)
    if steps:
        p.add_argument("--steps", type=int, required=True, help="number of sampling steps K")


def _out(args, obj: dict, text: str) -> None:
    from .mask import jsonable

    print(json.dumps(jsonable(obj), indent=1) if args.json else text)  # strict JSON: inf/NaN -> null


def _check_ints(args, **bounds) -> None:
    """Integer options within (low, high) bounds, checked before any work (one validator:
    :func:`blockmask.validate.check_int`, named as the flag)."""
    from .validate import check_int

    for name, (low, high) in bounds.items():
        v = getattr(args, name, None)
        if v is not None and v != "auto":
            check_int("--" + name.replace("_", "-"), v, low=low, high=high)


SEED_MAX = 2**63 - 1


def _workbench(args):
    from .api import Workbench

    _check_ints(args, steps=(1, 10_000), ref_steps=(2, 10_000), init_seed=(0, SEED_MAX), seed=(0, SEED_MAX),
                class_label=(0, None))
    return Workbench.load(args.model, device=args.device, dtype=args.dtype, init_seed=args.init_seed,
                          scheduler=args.scheduler)


def _guidance(args, wb) -> float:
    """--guidance-scale, else the model's own default (blockmask.json), else 1 (no guidance)."""
    return wb.default_guidance if args.guidance_scale is None else args.guidance_scale


def _load_mask(wb, path, steps=None):
    mf, warnings = wb.load_mask(path, steps=steps)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return mf


def cmd_info(args) -> None:
    from .costs import format_macs

    wb = _workbench(args)
    p = wb.macs
    units = [{"index": u.index, "name": u.name, "kind": u.kind, "block": u.block, "macs": float(p.unit_macs[u.index])}
             for u in wb.units]
    from .adapters import adapter_for

    n_classes = adapter_for(wb.model).num_classes(wb.model)
    obj = {"model": wb.loaded.spec, "class": type(wb.model).__name__, "fingerprint": wb.loaded.fingerprint,
           "random_init": wb.loaded.random_init, "num_units": len(units), "units": units,
           "macs_per_forward": p.full_step, "remainder_macs": p.remainder, "num_classes": n_classes,
           "vae": wb.loaded.vae is not None, "default_guidance": wb.default_guidance}
    cond = [f"{n_classes} classes"] if n_classes else []
    cond += ["decoded by its VAE"] if wb.loaded.vae is not None else []
    cond += [f"default guidance {wb.default_guidance:g}"] if wb.default_guidance != 1 else []
    lines = [f"{wb.loaded.label}" + (f" ({', '.join(cond)})" if cond else ""), f"fingerprint {wb.loaded.fingerprint}",
             f"{len(units)} units; one forward (batch 1) = {format_macs(p.full_step)} MACs, "
             f"always-run remainder {format_macs(p.remainder)} ({p.remainder / p.full_step:.1%})"]
    lines += [f"  {u['index']:3d}  {u['kind']:<10} {u['name']:<40} {format_macs(u['macs']):>8}" for u in units]
    _out(args, obj, "\n".join(lines))


def cmd_macs(args) -> None:
    from .costs import format_macs

    wb = _workbench(args)
    p = wb.macs
    mask = _load_mask(wb, args.mask, args.steps).mask if args.mask else np.ones((args.steps, len(wb.units)), bool)
    obj = {"steps": args.steps, "baseline_macs": p.baseline(args.steps), "masked_macs": p.total(mask),
           "ratio": p.ratio(mask), "speedup_bound": 1 / p.ratio(mask), "per_step_macs": p.per_step(mask).tolist()}
    _out(args, obj, f"{args.steps} steps: {format_macs(obj['masked_macs'])} MACs of {format_macs(obj['baseline_macs'])} "
                    f"({obj['ratio']:.1%}, MAC speedup {obj['speedup_bound']:.2f}x), batch 1, no CFG")


def cmd_mask(args) -> None:
    from .io import check_output_file

    check_output_file(args.output)
    _check_ints(args, interval=(1, None), branch=(0, None), every=(1, None))
    wb = _workbench(args)
    mask = wb.baseline(args.kind, steps=args.steps, seed=args.seed, interval=args.interval, branch=args.branch,
                       every=args.every, skip=args.skip, macs_ratio=args.macs_ratio)
    meta = {"baseline": {"kind": args.kind, "interval": args.interval, "branch": args.branch, "every": args.every,
                         "skip": args.skip, "macs_ratio": args.macs_ratio, "seed": args.seed}}
    if args.rectify:
        r = wb.rectify(mask)
        meta["rectified"] = {"cells_removed": r.cells_removed, "macs_saved": r.macs_saved(wb.macs.unit_macs),
                             "raw_mask": mask.astype(int).tolist()}
        mask = r.mask
    mf = wb.mask_file(mask, meta)
    mf.save(args.output)
    m = mf.meta["macs"]
    _out(args, {"output": str(args.output), "hash": mf.to_json()["hash"], **m},
         f"wrote {args.output}: {args.kind} mask, {mask.shape[0]}×{mask.shape[1]}, MAC ratio {m['ratio']:.1%}")


def cmd_rectify(args) -> None:
    from .io import check_output_file

    check_output_file(args.output)
    wb = _workbench(args)
    mf = _load_mask(wb, args.mask)
    r = wb.rectify(mf.mask)
    saved = r.macs_saved(wb.macs.unit_macs)
    out = mf.with_mask(r.mask, rectified={"cells_removed": r.cells_removed, "macs_saved": saved,
                                           "raw_mask": mf.mask.astype(int).tolist()})
    out = wb.mask_file(out.mask, out.meta)
    out.save(args.output)
    obj = {"output": str(args.output), "cells_removed": r.cells_removed, "macs_saved": saved,
           "ratio_before": wb.macs.ratio(mf.mask), "ratio_after": wb.macs.ratio(r.mask)}
    _out(args, obj, f"removed {r.cells_removed} dead cells; MAC ratio {obj['ratio_before']:.2%} -> "
                    f"{obj['ratio_after']:.2%}; wrote {args.output}")


def cmd_sample(args) -> None:
    from PIL import Image

    from .io import atomic_write
    from .sample import to_grid

    from .io import check_output_folder

    out = check_output_folder(args.output)
    _check_ints(args, num_images=(1, 4096))
    wb = _workbench(args)
    mask = _load_mask(wb, args.mask, args.steps).mask if args.mask else None
    cond = wb.condition(class_label=args.class_label, guidance_scale=_guidance(args, wb), prompt_file=args.prompt_embeds)
    lat = wb.generate(mask, steps=args.steps, seed=args.seed, num_images=args.num_images, condition=cond, progress=True,
                      mode=args.mode)
    imgs = wb.images(lat)
    out.mkdir(exist_ok=True)
    atomic_write(out / "samples.npy", lambda tmp: _save_npy(tmp, imgs.numpy().astype(np.float32)))
    atomic_write(out / "grid.png", lambda tmp: Image.fromarray(to_grid(imgs)).save(tmp, format="PNG"))
    _out(args, {"output": str(out), "num_images": args.num_images, "shape": list(imgs.shape)},
         f"wrote {out}/grid.png and {out}/samples.npy ({args.num_images} images)")


def _save_npy(path, arr) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temp name
        np.save(f, arr)


def cmd_bench(args) -> None:
    _check_ints(args, batch=(1, 4096), repeats=(1, 10_000), warmup=(0, 10_000))
    wb = _workbench(args)
    mf = _load_mask(wb, args.mask, args.steps)
    cond = wb.condition(class_label=args.class_label, guidance_scale=_guidance(args, wb))
    r = wb.bench(mf.mask, batch=args.batch, repeats=args.repeats, warmup=args.warmup, condition=cond, mode=args.mode,
                 progress=None if args.json else (lambda s: print(s, file=sys.stderr)))
    _out(args, r, f"{r['device_name']}, batch {r['batch']}, {r['steps']} steps: plain {r['plain_s']:.3f}s, "
                  f"masked {r['masked_s']:.3f}s, speedup {r['speedup']:.2f}x, MAC ratio {r['macs_ratio']:.1%} "
                  f"(ideal {r['mac_speedup']:.2f}x), efficiency {r['efficiency']:.2f}")


def cmd_train(args) -> None:
    from .io import check_output_file
    from .train import TrainConfig
    from .train_run import run_training

    check_output_file(args.output)
    wb = _workbench(args)
    args.guidance_scale = _guidance(args, wb)  # the model's own default is 1 (TrainConfig's) without blockmask.json
    labels = None if args.class_label is None else (args.class_label,)
    from .train_run import RefineConfig, check_budget, run_budget_auto

    auto = args.steps == "auto"
    if auto:
        if args.target_macs is None:
            raise BlockmaskError("--steps auto needs --target-macs (the budget it chooses the step count for)")
        if args.sweep or args.resume:
            raise BlockmaskError("--steps auto takes neither --sweep nor --resume")
        args.steps = args.ref_steps

    base = dict(steps=args.steps, iters=args.iters, batch=args.batch, lr=args.lr, alpha=args.alpha, beta=args.beta,
                lam=args.lam, lambda_mode=args.lambda_mode, lambda_low=args.lambda_low, lambda_high=args.lambda_high,
                tau=args.tau, sampler=args.sampler, temperature=args.temperature, seed=args.seed,
                guidance_scale=args.guidance_scale, class_labels=labels, feature_norm=args.feature_norm,
                probes=args.probes or None, accumulate=not args.no_accumulate, sparsity=args.sparsity)
    TrainConfig.for_recipe(args.recipe, **base)  # validate every option before any work
    refine = RefineConfig(enabled=not args.no_refine, seed=args.calib_seed, batch=args.calib_batch,
                          passes=args.refine_passes, starts=tuple(args.start_from or ()))
    if args.target_macs is not None:
        check_budget(wb, args.steps, args.target_macs)
    if refine.starts:
        if args.target_macs is None or auto or args.no_refine:
            raise BlockmaskError("--start-from needs --target-macs with calibration (not --steps auto or --no-refine)")
        from .train_run import start_masks

        start_masks(wb, refine.starts, args.steps)  # a bad start mask is refused before any work
    if auto:
        cond = wb.condition(guidance_scale=args.guidance_scale, prompt_file=args.prompt_embeds) if args.prompt_embeds else None
        mf, r = run_budget_auto(wb, TrainConfig.for_recipe(args.recipe, **base), args.output,
                                target_macs=args.target_macs, ref_steps=args.ref_steps, refine=refine, condition=cond,
                                progress=not args.json)
        _out(args, r, f"wrote {r['output']}: {r['steps']} steps, MACs {r['macs_vs_ref']:.1%} of the plain model at "
                      f"{args.ref_steps} steps ({r['macs']['ratio']:.1%} at {r['steps']}), {r['train_seconds']:.0f}s")
        return
    cond = None
    if args.prompt_embeds:
        cond = wb.condition(guidance_scale=args.guidance_scale, prompt_file=args.prompt_embeds)
    runs = [(args.lam, Path(args.output))]
    if args.sweep:
        try:
            lams = [_finite(v) for v in args.sweep.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise BlockmaskError(f"--sweep takes comma-separated finite λ values, got {args.sweep!r}") from None
        if not lams:
            raise BlockmaskError("--sweep needs at least one λ value")
        out = Path(args.output)
        runs = [(lam, out.with_name(f"{out.stem}-lam{lam:g}{out.suffix}")) for lam in lams]
    cfgs = [TrainConfig.for_recipe(args.recipe, **{**base, "lam": lam}) for lam, _ in runs]  # all valid first
    from .io import check_output_file

    for _, path in runs:
        check_output_file(path)
    results = []
    for cfg, (lam, path) in zip(cfgs, runs):
        _, summary = run_training(wb, cfg, path, rectify=not args.no_rectify, resume=args.resume,
                                  target_macs=args.target_macs, condition=cond, refine=refine, progress=not args.json)
        results.append(summary)
    text = "\n".join(f"wrote {r['output']}: MAC ratio {r['macs']['ratio']:.1%}, {r['cells_removed']} cells rectified, "
                     f"{r['train_seconds']:.0f}s ({r['per_step_seconds']:.2f}s/step), peak RSS {r['peak_rss_mb']:.0f} MB"
                     for r in results)
    _out(args, results[0] if len(results) == 1 else {"runs": results}, text)


def _steps_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None


def _int_list(text: str | None, flag: str) -> list[int]:
    if not text:
        return []
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BlockmaskError(f"{flag} takes comma-separated integers, got {text!r}") from None
    from .validate import check_int

    for v in vals:
        check_int(flag + " value", v, low=0 if flag == "--branch" else 1, high=10_000)
    return vals


def cmd_eval(args) -> None:
    from .evaluate import Method, evaluate
    from .io import check_output_folder
    from .report import write_report

    check_output_folder(args.output)
    cache = Path(args.cache_dir)
    if cache.exists() and not cache.is_dir():
        raise BlockmaskError(f"--cache-dir {cache} exists and is not a folder")
    _check_ints(args, num_samples=(2, 10**7), batch=(1, 4096), bench_batch=(1, 4096), bench_repeats=(1, 1000))
    specs = []
    for spec in args.mask or []:
        name, _, path = spec.rpartition("=")
        if not path:
            raise OptionError(f"--mask takes NAME=PATH or PATH, got {spec!r}")
        specs.append((name, path))
    wb = _workbench(args)
    k = args.steps
    methods = [Method("original", None, k)]
    learned = []
    for name, path in specs:
        mf = _load_mask(wb, path, k)
        name = name or Path(path).stem
        methods.append(Method(name, mf.mask, k))
        learned.append((name, mf))
        raw = mf.meta.get("rectified", {}).get("raw_mask")
        if args.ablate_rectify and raw is not None and mf.meta["rectified"].get("cells_removed"):
            methods.append(Method(f"{name} (no rectify)", np.array(raw, bool), k))
    for iv in _int_list(args.deepcache, "--deepcache"):
        for br in _int_list(args.branch, "--branch"):
            methods.append(Method(f"DeepCache N={iv} b{br}", wb.baseline("deepcache", steps=k, interval=iv, branch=br), k))
    for iv in _int_list(args.fora, "--fora"):
        methods.append(Method(f"FORA N={iv}", wb.baseline("fora", steps=k, interval=iv), k))
    for ev in _int_list(args.uniform, "--uniform"):
        methods.append(Method(f"uniform every {ev}", wb.baseline("uniform", steps=k, every=ev), k))
    for name, mf in learned:
        ratio = wb.macs.ratio(mf.mask)
        if args.random_matched:
            methods.append(Method(f"random @ {name} MACs", wb.baseline("random", steps=k, macs_ratio=max(ratio, 1e-9),
                                                                         seed=args.seed), k))
        if args.fewer_steps:
            methods.append(Method(f"DDIM {max(1, round(ratio * k))} steps", None, max(1, round(ratio * k))))
    rows = evaluate(wb, methods, n=args.num_samples, batch=args.batch, seed=args.seed, guidance=_guidance(args, wb),
                    class_label=args.class_label, extractor=args.fid_extractor, data=args.data,
                    cache_dir=args.cache_dir, bench_batch=args.bench_batch, bench_repeats=args.bench_repeats)
    from .distributed import is_main

    if not is_main(wb.device):
        return  # helper process of a multi-process launch
    title = f"{wb.loaded.spec}, {k} {args.scheduler.upper()} steps, N={args.num_samples}"
    files = write_report(rows, args.output, title)
    _report_out(args, rows, files)


def _report_out(args, rows: list[dict], files: dict) -> None:
    from .report import to_markdown

    _out(args, {"rows": rows, "files": files}, to_markdown(rows) + "\n" + "\n".join(f"wrote {v}" for v in files.values()))


def cmd_report(args) -> None:
    from .report import read_csv, write_report

    rows = read_csv(args.csv)
    files = write_report(rows, args.output, args.title, source=args.csv)
    _report_out(args, rows, files)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="blockmask", description="Learned per-step block masks for diffusion models.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add(name, fn, help, steps=True):
        p = sub.add_parser(name, help=help, description=help)
        _model_args(p, steps=steps)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(fn=fn)
        return p

    add("info", cmd_info, "list the model's units, kinds and per-unit MACs", steps=False)
    p = add("macs", cmd_macs, "total MACs of a mask (or all-ones) and the ratio to the plain model")
    p.add_argument("--mask", help="mask JSON file")
    from .baselines import BASELINES

    p = sub.add_parser("mask", help="write a baseline mask (ones, random, deepcache, fora, blocks, uniform)")
    p.add_argument("kind", choices=list(BASELINES))
    _model_args(p)
    p.add_argument("--interval", type=int, default=3, help="deepcache/fora: full step every N steps")
    p.add_argument("--branch", type=int, default=0,
                   help="deepcache: cache_branch_id as in the DeepCache package (0 = shallowest, its default)")
    p.add_argument("--every", type=int, default=2, help="uniform: each unit runs every N steps")
    p.add_argument("--skip", type=_finite, help="random: fraction of cells (rows 1..K-1) to skip")
    p.add_argument("--macs-ratio", type=_finite, help="random: target MAC ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rectify", action="store_true", help="rectify the baseline mask before saving")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_mask)
    from .methods.cli import add_method_parser

    add_method_parser(sub, _model_args)  # blockmask method feature-change|router|global (issue 17)
    p = sub.add_parser("rectify", help="remove provably dead cells from a mask (samples unchanged)")
    p.add_argument("mask")
    p.add_argument("--model", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--init-seed", type=int, default=0)
    p.add_argument("--scheduler", default="ddim")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_rectify)
    p = add("train", cmd_train, "learn a mask step by step from Gaussian noise (docs/METHOD.md §2-3)", steps=False)
    p.add_argument("--steps", type=_steps_arg, required=True,
                   help="number of sampling steps K, or auto (with --target-macs: choose K and the mask together "
                        "for a budget relative to the plain model at --ref-steps)")
    p.add_argument("--ref-steps", type=int, default=50, help="--steps auto: the plain model the budget refers to")
    from .train import FEATURE_NORMS, RECIPES, TrainConfig
    from .train_run import RefineConfig

    td = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # defaults: the config's own
    rd = {f.name: f.default for f in dataclasses.fields(RefineConfig)}
    p.add_argument("--recipe", default=td["recipe"], choices=list(RECIPES),
                   help="blockmask (ours, default) or paper: Eq. 5 error, Eq. 6 mean sparsity, Eq. 10 λ, Eq. 12 "
                        "rectification as the paper states them (overrides --feature-norm/--sparsity)")
    p.add_argument("--iters", type=int, default=td["iters"], help="optimization iterations per step")
    p.add_argument("--batch", type=int, default=td["batch"], help="noise seeds per iteration")
    p.add_argument("--lr", type=_finite, default=td["lr"], help="Adam learning rate on the logits")
    p.add_argument("--alpha", type=_finite, default=td["alpha"], help="sparsity weight (Eq. 6)")
    p.add_argument("--beta", type=_finite, default=td["beta"], help="bimodal weight (Eq. 7)")
    p.add_argument("--lambda", dest="lam", type=_finite, default=td["lam"],
                   help="λ scale (Eq. 10/11): skip a unit when its error costs less than λ × a typical step's change")
    p.add_argument("--lambda-mode", default=td["lambda_mode"], choices=["piecewise", "constant"])
    p.add_argument("--lambda-low", type=_finite, default=td["lambda_low"], help="λ level at sensitive steps (large Δ)")
    p.add_argument("--lambda-high", type=_finite, default=td["lambda_high"], help="λ level at smooth steps")
    p.add_argument("--tau", type=_finite, default=td["tau"], help="threshold on the normalized Δ_k")
    p.add_argument("--feature-norm", default=td["feature_norm"], choices=list(FEATURE_NORMS),
                   help="feature error relative to this step's output change (step), the run's mean change (mean), "
                        "weighted by how much it reaches the final sample (sensitivity, measured first), or "
                        "plain (none, Eq. 5)")
    p.add_argument("--probes", type=int, default=td["probes"],
                   help="sensitivity: steps probed (0 = every step), the rest interpolated")
    p.add_argument("--no-accumulate", action="store_true",
                   help="sensitivity: judge each step's error alone, not with the errors accumulated before it")
    p.add_argument("--sparsity", default=td["sparsity"], choices=["macs", "count"],
                   help="sparsity term: MAC-weighted mean gate score (default) or the plain mean (Eq. 6)")
    p.add_argument("--sampler", default=td["sampler"], choices=["random", "gumbel"])
    p.add_argument("--temperature", type=_finite, default=td["temperature"], help="Gumbel-sigmoid temperature")
    p.add_argument("--target-macs", type=_finite,
                   help="MAC budget B in (0, 1]: best rule or learned mask within B on calibration seeds, then "
                        "refined on them (recipe blockmask); λ bisection to B ±2%% (recipe paper, --no-refine)")
    p.add_argument("--no-refine", action="store_true", help="--target-macs: λ bisection only, no calibration")
    p.add_argument("--calib-seed", type=int, default=rd["seed"],
                   help="first calibration seed (keep evaluation seeds apart from these)")
    p.add_argument("--calib-batch", type=int, default=rd["batch"], help="calibration samples")
    p.add_argument("--refine-passes", type=int, default=rd["passes"], help="local-search passes over the steps")
    p.add_argument("--start-from", action="append", default=list(rd["starts"]), metavar="MASK",
                   help="--target-macs: also a start candidate (mask file or shipped name at the same K, e.g. the "
                        "next lower budget's mask, so that a Pareto set never gets worse as B grows); repeatable")
    p.add_argument("--sweep", help="comma-separated λ values: one mask per value (-o is the name stem)")
    p.add_argument("--seed", type=int, default=td["seed"])
    p.add_argument("--class-label", type=int)
    p.add_argument("--guidance-scale", type=_finite, default=None,
                   help="classifier-free guidance scale the mask is trained at (default: the model's own, from its "
                        f"blockmask.json, else TrainConfig's {td['guidance_scale']:g})")
    p.add_argument("--prompt-embeds", help="safetensors file with prompt_embeds (text models)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.ckpt.json")
    p.add_argument("--no-rectify", action="store_true", help="keep the raw learned mask")
    p.add_argument("-o", "--output", required=True)
    p = add("eval", cmd_eval, "compare masks and baselines: MACs, speed, FID/KID/IS, PSNR vs original")
    p.add_argument("--mask", action="append", help="NAME=PATH of a mask file (repeatable)")
    p.add_argument("--deepcache", help="comma-separated DeepCache intervals (U-Nets)")
    p.add_argument("--branch", default="0", help="comma-separated DeepCache cache_branch_id values (default 0)")
    p.add_argument("--fora", help="comma-separated FORA intervals")
    p.add_argument("--uniform", help="comma-separated uniform every-n values")
    p.add_argument("--random-matched", action="store_true", help="random mask at each learned mask's MACs")
    p.add_argument("--fewer-steps", action="store_true", help="plain DDIM with fewer steps at matched MACs")
    p.add_argument("--ablate-rectify", action="store_true", help="also evaluate learned masks before rectification")
    p.add_argument("--num-samples", type=int, default=1000, help="N images per row (FIDs compare only at equal N)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--class-label", type=int, help="one class for all samples (default: cycle through classes)")
    p.add_argument("--guidance-scale", type=_finite, default=None,
                   help="classifier-free guidance scale (default: the model's own, from its blockmask.json, else 1)")
    p.add_argument("--fid-extractor", default="mnist-cnn",
                   help="mnist-cnn (offline, bundled) or a torch-fidelity extractor such as inception-v3-compat (downloads)")
    p.add_argument("--data", help="MNIST IDX folder for the reference set (default $BLOCKMASK_MNIST, else where `blockmask data mnist` puts it)")
    p.add_argument("--cache-dir", default=".cache/blockmask-eval", help="content-keyed cache of rows")
    p.add_argument("--bench-batch", type=int, default=8)
    p.add_argument("--bench-repeats", type=int, default=3)
    p.add_argument("-o", "--output", required=True, help="output folder for results.csv/.md and pareto.html/.png")
    p = sub.add_parser("report", help="redraw the tables and Pareto plot of a results.csv (e.g. one made on "
                                      "another machine)")
    p.add_argument("csv", help="results.csv written by blockmask eval")
    p.add_argument("--title", default="", help="plot title")
    p.add_argument("-o", "--output", required=True, help="output folder for results.csv/.md and pareto.html/.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_report)
    for name, fn, help in (("sample", cmd_sample, "generate images (PNG grid + samples.npy)"),
                           ("bench", cmd_bench, "measure plain vs masked sampling speed in one process")):
        p = add(name, fn, help)
        p.add_argument("--mask", required=name == "bench")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--class-label", type=int)
        p.add_argument("--guidance-scale", type=_finite, default=None,
                       help="classifier-free guidance scale (default: the model's own, from its blockmask.json, else 1)")
        p.add_argument("--mode", default="eager", choices=["eager", "compiled", "graph"],
                       help="masked execution: eager (default), compiled (torch.compile per unit), graph (CUDA graphs)")
        if name == "sample":
            p.add_argument("--num-images", type=int, default=4)
            p.add_argument("--prompt-embeds", help="safetensors file with prompt_embeds (text models)")
            p.add_argument("-o", "--output", required=True, help="output folder")
        else:
            p.add_argument("--batch", type=int, default=1)
            p.add_argument("--repeats", type=int, default=3)
            p.add_argument("--warmup", type=int, default=1)
    from .cli_tools import add_commands

    add_commands(sub)  # app, data, cachedit
    return ap


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 bad input, 1 bug, 130/143 interrupted)."""
    import os

    from .io import Terminated, install_signal_cleanup

    install_signal_cleanup()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a parse error (2, already printed as one line)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        args.fn(args)
    except BlockmaskError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Terminated as e:
        print("terminated", file=sys.stderr)
        return int(e.code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RecursionError, MemoryError) as e:  # environment problems: still one line
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line, never a traceback
        if os.environ.get("BLOCKMASK_DEBUG"):
            raise
        msg = " ".join(str(e).split())[:300]
        print(f"error: internal error ({type(e).__name__}: {msg}); rerun with BLOCKMASK_DEBUG=1 for the "
              "traceback and please report it", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
