"""``blockmask plan MODEL --budget B``: the best schedule (step count + mask) for a compute budget
(:mod:`blockmask.learning.planner`). Registered on the main parser by :func:`add_plan` (blockmask/cli/main.py),
whose helpers and error model it shares: bad input is one line and exit 2, before any work, and
no file is written unless the plan completes."""

from __future__ import annotations

from blockmask.cli.common import emit, finite, needs_condition, prompt_args, prompt_condition, workbench
from blockmask.core.errors import BlockmaskError
from blockmask.core.validate import check_float, check_int
from blockmask.io.files import check_output_file
from blockmask.learning.frontierfile import Frontier
from blockmask.learning.planner import MAX_SECONDS, Planner


def cmd_plan(args) -> None:
    if (args.budget is None) == (args.seconds is None):
        raise BlockmaskError("give exactly one of --budget B (a fraction of the plain model's MACs, or seconds with "
                             "--unit seconds) or --seconds S")
    unit, budget = (args.unit, args.budget) if args.seconds is None else ("seconds", args.seconds)
    if args.seconds is not None and args.unit == "macs" and args.unit_given:
        raise BlockmaskError("--seconds is a latency budget: drop --unit macs")
    if unit == "macs":
        check_float("--budget", budget, low=0, high=1, low_open=True)
    else:
        check_float("latency budget (seconds)", budget, low=0, high=MAX_SECONDS, low_open=True)
    for name in ("calib", "valid"):
        check_int(f"--{name}", getattr(args, name), low=2, high=100_000)
    check_int("--ref-steps", args.ref_steps, low=2, high=10_000)
    check_int("--batch", args.batch, low=1, high=4096)
    if args.output:
        check_output_file(args.output)
    if args.shipped:
        return shipped(args, unit, budget)
    wb = workbench(args)
    if needs_condition(args, wb):  # a text model: the planner's seeds condition on random embeddings, on purpose only
        prompt_condition(args, wb)
    planner = Planner(wb, ref_steps=args.ref_steps, unit=unit, calib=args.calib, valid=args.valid,
                      learn=not args.no_learn,
                      latency_batch=args.batch, progress=not args.json)
    try:
        planner.check(budget)  # unreachable budgets: one line, before any sampling
        s = planner.plan(budget)
    finally:
        planner.close()
    if args.output:
        s.to_mask_file(args.output)
    v = s.validation
    what = f"{budget:g} of the plain {args.ref_steps}-step MACs" if unit == "macs" else f"{budget:g}s per run"
    lo, hi = v["interval_db"]
    text = (f"budget {what}: run {s.steps} {s.scheduler} steps, {s.provenance['name']} ({s.family}); "
            f"MACs {s.macs_ratio:.1%} of the plain {args.ref_steps}-step run\n"
            f"validation ({v['samples']} samples, seeds {v['seeds'][0]}..{v['seeds'][-1]}): {v['psnr']:.2f} dB, "
            f"{v['gain_over_fewer_steps_db']:+.2f} dB [{lo:+.2f}, {hi:+.2f}] over DDIM {v['fewer_steps']['steps']} "
            f"steps; "
            f"calibration {s.calibration['psnr']:.2f} dB; planned in {s.plan_seconds:.0f}s"
            + (f"\nwrote {args.output}" if args.output else ""))
    emit(args, {**s.to_json(), "output": args.output}, text)


def shipped(args, unit: str, budget: float) -> None:
    """``--shipped``: the schedule the model's shipped frontier (blockmask.learning.frontierfile) chose for
    this budget, at once; nothing is sampled."""

    if unit != "macs":
        raise BlockmaskError("--shipped answers MAC budgets (the shipped frontiers are in MACs): use --budget B")
    fr = Frontier.for_model(args.model, args.ref_steps)
    if fr is None:
        raise BlockmaskError(f"no shipped frontier for {args.model!r} at --ref-steps {args.ref_steps}: "
                             "plan it (drop --shipped)")
    wb = workbench(args)
    if list(wb.unit_names) != fr.units:
        raise BlockmaskError(f"the shipped frontier of {args.model!r} names other units than the loaded model")
    row = fr.at_budget(budget)
    steps, mask = fr.schedule(row["name"])
    reuse = fr.reuse(row["name"])
    info = {"steps": steps, "scheduler": wb.scheduler_name, "reuse": reuse, "family": row.family,
            "provenance": row.provenance,
            "macs_ratio_vs_ref": float(row.macs_ratio), "validation_psnr": float(row.valid_psnr),
            "test_psnr": float(row.test_psnr), "frontier_budget": float(row.budget), "source": "shipped frontier",
            "frontier_command": fr.meta.get("command")}
    if args.output:
        wb.mask_file(mask, {"family": row.family, "reuse": reuse, "plan": {**info, "budget": {"unit": "macs", "value": budget,
                                                                                 "ref_steps": args.ref_steps}}}
                     ).save(args.output)
    text = (f"budget {budget:g} of the plain {args.ref_steps}-step MACs (shipped frontier, point {row.budget:.1%}): "
            f"run {steps} {wb.scheduler_name} steps, {row.provenance} ({row.family}"
            f"{', reused units forecast' if reuse == 'forecast' else ''}); MACs {row.macs_ratio:.1%}\n"
            f"held out: validation {row.valid_psnr:.2f} dB, test {row.test_psnr:.2f} dB (PSNR against the plain "
            f"{args.ref_steps}-step run)" + (f"\nwrote {args.output}" if args.output else ""))
    emit(args, {**info, "output": args.output}, text)


def add_plan(add) -> None:
    """Register ``plan`` through cli.build_parser's ``add`` (model arguments, --json)."""
    p = add("plan", cmd_plan, "choose the step count and mask for a compute budget (MACs or seconds), validated on "
                              "seeds the choice never saw", steps=False)
    p.add_argument("--budget", type=finite, help="fraction in (0, 1] of the plain model's MACs at --ref-steps "
                                                  "(seconds with --unit seconds)")
    p.add_argument("--seconds", type=finite, help="latency budget: seconds per sampling run on --device")
    p.add_argument("--unit", choices=["macs", "seconds"], default=None, help="what --budget counts (default macs)")
    p.add_argument("--ref-steps", type=int, default=50, help="the plain model the budget refers to (default 50)")
    p.add_argument("--calib", type=int, default=64, help="calibration samples (the choice is made on these)")
    p.add_argument("--valid", type=int, default=128, help="validation samples (disjoint seeds; the figures reported)")
    p.add_argument("--batch", type=int, default=1, help="--seconds: images per run the latency is for")
    p.add_argument("--shipped", action="store_true",
                   help="answer at once from the model's shipped frontier (bundled models; MAC budgets)")
    p.add_argument("--no-learn", action="store_true", help="skip the learned candidates (faster)")
    prompt_args(p, text=False)
    p.add_argument("-o", "--output", help="write the schedule as a mask file (metadata: family, provenance, figures)")
    p.set_defaults(fn=_with_unit_flag(cmd_plan))


def _with_unit_flag(fn):
    def run(args):
        args.unit_given = args.unit is not None
        args.unit = args.unit or "macs"
        return fn(args)

    return run
