"""``blockmask train``: learn a mask (per-step training, budgets with calibration and refinement,
``--steps auto``, λ sweeps). Registered on the main parser by :func:`add_train` (blockmask/cli/main.py),
whose helpers and error model it shares."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from blockmask.cli.common import emit, finite, guidance_of, needs_condition, prompt_args, prompt_condition, workbench
from blockmask.core.errors import BlockmaskError
from blockmask.io.files import check_output_file
from blockmask.learning.auto import run_budget_auto
from blockmask.learning.run import RefineConfig, RunOptions, check_budget, run_training, start_masks
from blockmask.learning.train import FEATURE_NORMS, LAMBDA_NORMS, RECIPES, TrainConfig


def cmd_train(args) -> None:
    check_output_file(args.output)
    wb = workbench(args)
    args.guidance_scale = guidance_of(args, wb)  # the model's own default is 1 (TrainConfig's) without blockmask.json
    labels = None if args.class_label is None else (args.class_label,)

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
                probes=args.probes or None, accumulate=not args.no_accumulate, sparsity=args.sparsity,
                lambda_norm=args.lambda_norm)
    TrainConfig.for_recipe(args.recipe, **base)  # validate every option before any work
    refine = RefineConfig(enabled=not args.no_refine, seed=args.calib_seed, batch=args.calib_batch,
                          passes=args.refine_passes, starts=tuple(args.start_from or ()))
    if args.target_macs is not None and not auto:  # --steps auto: the planner checks its budget
        check_budget(wb, args.steps, args.target_macs)
    if refine.starts:
        if args.target_macs is None or auto or args.no_refine:
            raise BlockmaskError("--start-from needs --target-macs with calibration (not --steps auto or --no-refine)")

        start_masks(wb, refine.starts, args.steps)  # a bad start mask is refused before any work
    cond = prompt_condition(args, wb, class_label=args.class_label, guidance_scale=args.guidance_scale) if needs_condition(args, wb) else None
    if auto:
        mf, r = run_budget_auto(wb, TrainConfig.for_recipe(args.recipe, **base), args.output,
                                target_macs=args.target_macs, ref_steps=args.ref_steps, refine=refine, condition=cond,
                                progress=not args.json)
        emit(args, r, f"wrote {r['output']}: {r['steps']} steps, {r['provenance']['name']} ({r['family']}), MACs "
                      f"{r['macs_vs_ref']:.1%} of the plain model at {args.ref_steps} steps, validation "
                      f"{r['validation']['psnr']:.2f} dB, {r['train_seconds']:.0f}s (the planner: blockmask plan)")
        return
    runs = [(args.lam, Path(args.output))]
    if args.sweep:
        try:
            lams = [finite(v) for v in args.sweep.split(",") if v.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            raise BlockmaskError(f"--sweep takes comma-separated finite λ values, got {args.sweep!r}") from None
        if not lams:
            raise BlockmaskError("--sweep needs at least one λ value")
        out = Path(args.output)
        runs = [(lam, out.with_name(f"{out.stem}-lam{lam:g}{out.suffix}")) for lam in lams]
    cfgs = [TrainConfig.for_recipe(args.recipe, **{**base, "lam": lam}) for lam, _ in runs]  # all valid first
    for _, path in runs:
        check_output_file(path)
    results = []
    for cfg, (lam, path) in zip(cfgs, runs):
        _, summary = run_training(wb, cfg, path,
                                  RunOptions(rectify=not args.no_rectify, resume=args.resume, target_macs=args.target_macs,
                                             refine=refine),
                                  condition=cond, progress=not args.json)
        results.append(summary)
    text = "\n".join(f"wrote {r['output']}: MAC ratio {r['macs']['ratio']:.1%}, {r['cells_removed']} cells rectified, "
                     f"{r['train_seconds']:.0f}s ({r['per_step_seconds']:.2f}s/step), peak RSS {r['peak_rss_mb']:.0f} MB"
                     for r in results)
    emit(args, results[0] if len(results) == 1 else {"runs": results}, text)


def _steps_arg(text: str):
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {text!r}") from None



def add_train(add) -> None:
    """Register ``train`` through cli.build_parser's ``add`` (model arguments, --json)."""
    p = add("train", cmd_train, "learn a mask step by step from Gaussian noise (docs/METHOD.md §2-3)", steps=False)
    p.add_argument("--steps", type=_steps_arg, required=True,
                   help="number of sampling steps K, or auto (with --target-macs: choose K and the mask together "
                        "for a budget relative to the plain model at --ref-steps)")
    p.add_argument("--ref-steps", type=int, default=50, help="--steps auto: the plain model the budget refers to")

    td = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # defaults: the config's own
    rd = {f.name: f.default for f in dataclasses.fields(RefineConfig)}
    p.add_argument("--recipe", default=td["recipe"], choices=list(RECIPES),
                   help="blockmask (ours, default) or paper: Eq. 5 error, Eq. 6 mean sparsity, Eq. 10 λ, Eq. 12 "
                        "rectification as the paper states them (overrides --feature-norm/--sparsity)")
    p.add_argument("--iters", type=int, default=td["iters"], help="optimization iterations per step")
    p.add_argument("--batch", type=int, default=td["batch"], help="noise seeds per iteration")
    p.add_argument("--lr", type=finite, default=td["lr"], help="Adam learning rate on the logits")
    p.add_argument("--alpha", type=finite, default=td["alpha"], help="sparsity weight (Eq. 6)")
    p.add_argument("--beta", type=finite, default=td["beta"], help="bimodal weight (Eq. 7)")
    p.add_argument("--lambda", dest="lam", type=finite, default=td["lam"],
                   help="λ scale (Eq. 10/11): skip a unit when its error costs less than λ × a typical step's change")
    p.add_argument("--lambda-mode", default=td["lambda_mode"], choices=["piecewise", "constant"])
    p.add_argument("--lambda-low", type=finite, default=td["lambda_low"], help="λ level at sensitive steps (large Δ)")
    p.add_argument("--lambda-high", type=finite, default=td["lambda_high"], help="λ level at smooth steps")
    p.add_argument("--tau", type=finite, default=td["tau"], help="threshold on the normalized Δ_k")
    p.add_argument("--lambda-norm", default=td["lambda_norm"], choices=list(LAMBDA_NORMS),
                   help="how Δ_k is normalized for λ_k: rank among the steps (ours) or min-max (the paper's)")
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
    p.add_argument("--temperature", type=finite, default=td["temperature"], help="Gumbel-sigmoid temperature")
    p.add_argument("--target-macs", type=finite,
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
    p.add_argument("--guidance-scale", type=finite, default=None,
                   help="classifier-free guidance scale the mask is trained at (default: the model's own, from its "
                        f"blockmask.json, else TrainConfig's {td['guidance_scale']:g})")
    prompt_args(p)
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from OUTPUT.ckpt.json")
    p.add_argument("--no-rectify", action="store_true", help="keep the raw learned mask")
    p.add_argument("-o", "--output", required=True)
