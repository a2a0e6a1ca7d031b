"""``blockmask eval`` (masks against baselines: MACs, speed, FID/KID/IS, PSNR) and ``blockmask report``
(redraw a results.csv). Registered on the main parser by :func:`add_eval` (blockmask/cli/main.py), whose
helpers and error model they share."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blockmask.cli.common import (check_ints, emit, finite, guidance_of, load_mask, needs_condition, prompt_args, prompt_condition,
                         workbench)
from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.core.validate import check_int
from blockmask.eval.evaluate import EvalConfig, Method, evaluate
from blockmask.eval.report import read_csv, to_markdown, write_report
from blockmask.io.files import check_output_folder
from blockmask.sampling.distributed import is_main


def _int_list(text: str | None, flag: str) -> list[int]:
    if not text:
        return []
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise BlockmaskError(f"{flag} takes comma-separated integers, got {text!r}") from None
    for v in vals:
        check_int(flag + " value", v, low=0 if flag == "--branch" else 1, high=10_000)
    return vals


def cmd_eval(args) -> None:
    check_output_folder(args.output)
    cache = Path(args.cache_dir)
    if cache.exists() and not cache.is_dir():
        raise BlockmaskError(f"--cache-dir {cache} exists and is not a folder")
    check_ints(args, num_samples=(2, 10**7), batch=(1, 4096), bench_batch=(1, 4096), bench_repeats=(1, 1000))
    specs = []
    for spec in args.mask or []:
        name, _, path = spec.rpartition("=")
        if not path:
            raise OptionError(f"--mask takes NAME=PATH or PATH, got {spec!r}")
        specs.append((name, path))
    wb = workbench(args)
    if needs_condition(args, wb):  # a text model: evaluated on random embeddings, on purpose only
        prompt_condition(args, wb)
    k = args.steps
    methods = [Method("original", None, k)]
    learned = []
    for name, path in specs:
        mf = load_mask(wb, path, k)
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
    cfg = EvalConfig(n=args.num_samples, batch=args.batch, seed=args.seed, guidance=guidance_of(args, wb),
                     class_label=args.class_label, extractor=args.fid_extractor, data=args.data,
                     cache_dir=args.cache_dir, bench_batch=args.bench_batch, bench_repeats=args.bench_repeats)
    rows = evaluate(wb, methods, cfg)

    if not is_main(wb.device):
        return  # helper process of a multi-process launch
    title = f"{wb.loaded.spec}, {k} {args.scheduler.upper()} steps, N={args.num_samples}"
    files = write_report(rows, args.output, title)
    _report_out(args, rows, files)


def _report_out(args, rows: list[dict], files: dict) -> None:
    emit(args, {"rows": rows, "files": files}, to_markdown(rows) + "\n" + "\n".join(f"wrote {v}" for v in files.values()))


def cmd_report(args) -> None:
    rows = read_csv(args.csv)
    files = write_report(rows, args.output, args.title, source=args.csv)
    _report_out(args, rows, files)



def add_eval(sub, add) -> None:
    """Register ``eval`` and ``report`` (``add``: cli.build_parser's helper)."""
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
    p.add_argument("--guidance-scale", type=finite, default=None,
                   help="classifier-free guidance scale (default: the model's own, from its blockmask.json, else 1)")
    p.add_argument("--fid-extractor", default="mnist-cnn",
                   help="mnist-cnn (offline, bundled) or a torch-fidelity extractor such as inception-v3-compat (downloads)")
    p.add_argument("--data", help="MNIST IDX folder for the reference set (default $BLOCKMASK_MNIST, else where `blockmask data mnist` puts it)")
    p.add_argument("--cache-dir", default=".cache/blockmask-eval", help="content-keyed cache of rows")
    p.add_argument("--bench-batch", type=int, default=8)
    p.add_argument("--bench-repeats", type=int, default=3)
    prompt_args(p, text=False)
    p.add_argument("-o", "--output", required=True, help="output folder for results.csv/.md and pareto.html/.png")
    p = sub.add_parser("report", help="redraw the tables and Pareto plot of a results.csv (e.g. one made on "
                                      "another machine)")
    p.add_argument("csv", help="results.csv written by blockmask eval")
    p.add_argument("--title", default="", help="plot title")
    p.add_argument("-o", "--output", required=True, help="output folder for results.csv/.md and pareto.html/.png")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_report)
