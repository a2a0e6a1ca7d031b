"""The ``blockmask`` command line. Every command prints a readable summary, or JSON with ``--json``.

Error model: bad input of any kind (options, files, outputs) is one line ``error: …`` on stderr and
exit code 2 — argparse's own errors included (:class:`blockmask.cli.common.Parser`). Options and
outputs are checked before any work starts. A bug (any other exception) is one line too, exit code 1, never a
traceback (set ``BLOCKMASK_DEBUG=1`` to see it). SIGTERM and Ctrl-C remove temp files and locks
(exit 143 / 130)."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from blockmask.core.baselines import BASELINES
from blockmask.cli.common import (Parser, check_ints, emit, finite, guidance_of, load_mask, model_args, prompt_args,
                         prompt_condition, workbench)
from blockmask.cli.eval import add_eval
from blockmask.cli.plan import add_plan
from blockmask.cli.tools import add_commands
from blockmask.cli.train import add_train
from blockmask.core.errors import BlockmaskError, BlockmaskWarning, OutputError
from blockmask.hooks.costs import format_macs
from blockmask.hooks.execution import MODES
from blockmask.io.files import (OutputLock, Terminated, atomic_write_all, check_output_file, check_output_folder,
                 install_signal_cleanup)
from blockmask.adapters import adapter_for
from blockmask.cli.method import add_method_parser
from blockmask.data.mnist import default_mnist_dir
from blockmask.sampling.sample import SampleOptions, to_grid


def cmd_info(args) -> None:
    wb = workbench(args)
    p = wb.macs
    units = [{"index": u.index, "name": u.name, "kind": u.kind, "block": u.block, "macs": float(p.unit_macs[u.index])}
             for u in wb.units]

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
    emit(args, obj, "\n".join(lines))


def cmd_macs(args) -> None:
    wb = workbench(args)
    p = wb.macs
    mask = load_mask(wb, args.mask, args.steps).mask if args.mask else np.ones((args.steps, len(wb.units)), bool)
    obj = {"steps": args.steps, "baseline_macs": p.baseline(args.steps), "masked_macs": p.total(mask),
           "ratio": p.ratio(mask), "speedup_bound": 1 / p.ratio(mask), "per_step_macs": p.per_step(mask).tolist(),
           "model_calls": p.model_calls(args.steps), "calls_per_step": p.calls(args.steps).astype(int).tolist()}
    emit(args, obj, f"{args.steps} steps ({obj['model_calls']} model calls): {format_macs(obj['masked_macs'])} MACs of "
                    f"{format_macs(obj['baseline_macs'])} ({obj['ratio']:.1%}, MAC speedup {obj['speedup_bound']:.2f}x), "
                    "batch 1, no CFG")


def cmd_mask(args) -> None:
    check_output_file(args.output)
    check_ints(args, interval=(1, None), branch=(0, None), every=(1, None))
    wb = workbench(args)
    mask = wb.baseline(args.kind, steps=args.steps, seed=args.seed, interval=args.interval, branch=args.branch,
                       every=args.every, skip=args.skip, macs_ratio=args.macs_ratio)
    meta = {"baseline": {"kind": args.kind, "interval": args.interval, "branch": args.branch, "every": args.every,
                         "skip": args.skip, "macs_ratio": args.macs_ratio, "seed": args.seed}}
    if args.rectify:
        r = wb.rectify(mask)
        meta["rectified"] = {"cells_removed": r.cells_removed, "macs_saved": wb.macs.total(mask) - wb.macs.total(r.mask),
                             "raw_mask": mask.astype(int).tolist()}
        mask = r.mask
    mf = wb.mask_file(mask, meta)
    mf.save(args.output)
    m = mf.meta["macs"]
    emit(args, {"output": str(args.output), "hash": mf.to_json()["hash"], **m},
         f"wrote {args.output}: {args.kind} mask, {mask.shape[0]}×{mask.shape[1]}, MAC ratio {m['ratio']:.1%}")


def cmd_rectify(args) -> None:
    check_output_file(args.output)
    wb = workbench(args)
    mf = load_mask(wb, args.mask)
    r = wb.rectify(mf.mask, reuse=mf.reuse)
    saved = wb.macs.total(mf.mask) - wb.macs.total(r.mask)  # per model call (Heun: two per step)
    out = mf.with_mask(r.mask, rectified={"cells_removed": r.cells_removed, "macs_saved": saved,
                                           "raw_mask": mf.mask.astype(int).tolist()})
    out = wb.mask_file(out.mask, out.meta)
    out.save(args.output)
    obj = {"output": str(args.output), "cells_removed": r.cells_removed, "macs_saved": saved,
           "ratio_before": wb.macs.ratio(mf.mask), "ratio_after": wb.macs.ratio(r.mask)}
    emit(args, obj, f"removed {r.cells_removed} dead cells; MAC ratio {obj['ratio_before']:.2%} -> "
                    f"{obj['ratio_after']:.2%}; wrote {args.output}")


def cmd_sample(args) -> None:
    from PIL import Image

    out = check_output_folder(args.output)
    check_ints(args, num_images=(1, 4096))
    wb = workbench(args)
    mf = load_mask(wb, args.mask, args.steps) if args.mask else None
    cond = prompt_condition(args, wb, class_label=args.class_label, guidance_scale=guidance_of(args, wb))
    lat = wb.generate(None if mf is None else mf.mask, steps=args.steps, seed=args.seed, num_images=args.num_images,
                      condition=cond, progress=True, mode=args.mode, reuse="hold" if mf is None else mf.reuse)
    imgs = wb.images(lat)
    out.mkdir(exist_ok=True)
    atomic_write_all([(out / "samples.npy", lambda tmp: _save_npy(tmp, imgs.numpy().astype(np.float32)), True),
                      (out / "grid.png", lambda tmp: Image.fromarray(to_grid(imgs)).save(tmp, format="PNG"), True)])
    emit(args, {"output": str(out), "num_images": args.num_images, "shape": list(imgs.shape)},
         f"wrote {out}/grid.png and {out}/samples.npy ({args.num_images} images)")


def _save_npy(path, arr) -> None:
    with open(path, "wb") as f:  # a file object: np.save would append ".npy" to a temp name
        np.save(f, arr)


def cmd_bench(args) -> None:
    check_ints(args, batch=(1, 4096), repeats=(1, 10_000), warmup=(0, 10_000))
    wb = workbench(args)
    mf = load_mask(wb, args.mask, args.steps)
    cond = prompt_condition(args, wb, class_label=args.class_label, guidance_scale=guidance_of(args, wb))
    r = wb.bench(mf.mask, batch=args.batch, repeats=args.repeats, warmup=args.warmup, condition=cond,
                 options=SampleOptions(mode=args.mode, reuse=mf.reuse),
                 progress=None if args.json else (lambda s: print(s, file=sys.stderr)))
    flag = "" if r["reliable"] else "\nUNRELIABLE timing: " + "; ".join(r["unreliable_reasons"]) + \
        " (rerun on a quiet machine, with more --repeats)"
    emit(args, r, f"{r['device_name']}, batch {r['batch']}, {r['steps']} steps: plain {r['plain_s']:.3f}s, "
                  f"masked {r['masked_s']:.3f}s, speedup {r['speedup']:.2f}x, MAC ratio {r['macs_ratio']:.1%} "
                  f"(ideal {r['mac_speedup']:.2f}x), efficiency {r['efficiency']:.2f}" + flag)


def build_parser() -> argparse.ArgumentParser:
    ap = Parser(prog="blockmask", description="Learned per-step block masks for diffusion models.")
    sub = ap.add_subparsers(dest="command", required=True, parser_class=Parser)

    def add(name, fn, help, steps=True):
        p = sub.add_parser(name, help=help, description=help)
        model_args(p, steps=steps)
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(fn=fn)
        return p

    add("info", cmd_info, "list the model's units, kinds and per-unit MACs", steps=False)
    p = add("macs", cmd_macs, "total MACs of a mask (or all-ones) and the ratio to the plain model")
    p.add_argument("--mask", help="mask JSON file")
    p = sub.add_parser("mask", help="write a baseline mask (ones, random, deepcache, fora, blocks, uniform)")
    p.add_argument("kind", choices=list(BASELINES))
    model_args(p)
    p.add_argument("--interval", type=int, default=3, help="deepcache/fora: full step every N steps")
    p.add_argument("--branch", type=int, default=0,
                   help="deepcache: cache_branch_id as in the DeepCache package (0 = shallowest, its default)")
    p.add_argument("--every", type=int, default=2, help="uniform: each unit runs every N steps")
    p.add_argument("--skip", type=finite, help="random: fraction of cells (rows 1..K-1) to skip")
    p.add_argument("--macs-ratio", type=finite, help="random: target MAC ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rectify", action="store_true", help="rectify the baseline mask before saving")
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_mask)
    add_method_parser(sub, model_args)  # blockmask method feature-change|router|global (issue 17)
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
    add_train(add)  # blockmask train
    add_eval(sub, add)  # blockmask eval, report
    for name, fn, help in (("sample", cmd_sample, "generate images (PNG grid + samples.npy)"),
                           ("bench", cmd_bench, "measure plain vs masked sampling speed in one process")):
        p = add(name, fn, help)
        p.add_argument("--mask", required=name == "bench")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--class-label", type=int)
        p.add_argument("--guidance-scale", type=finite, default=None,
                       help="classifier-free guidance scale (default: the model's own, from its blockmask.json, else 1)")
        p.add_argument("--mode", default="eager", choices=list(MODES),
                       help="masked execution: eager (default), compiled (torch.compile per unit), graph (CUDA "
                            "graphs per unit), rowgraph (one CUDA graph of the whole forward per distinct mask row)")
        prompt_args(p)
        if name == "sample":
            p.add_argument("--num-images", type=int, default=4)
            p.add_argument("-o", "--output", required=True, help="output folder")
        else:
            p.add_argument("--batch", type=int, default=1)
            p.add_argument("--repeats", type=int, default=3)
            p.add_argument("--warmup", type=int, default=1)
    add_commands(sub)  # app, data, cachedit
    add_plan(add)  # blockmask plan (issue 26)
    return ap


FOLDER_OUTPUTS = ("sample", "eval", "report", "data")  # -o names a folder
SELF_LOCKING = ("train",)  # the library's run_training / budget runs take the output lock themselves


def _output_lock(args):
    """The one output lock (:class:`blockmask.io.files.OutputLock`) for every command that writes, taken
    before any work: a second run on the same output gets one line, and the temp files a killed run
    left are removed. Helper processes of a multi-process launch never write, so never lock."""
    import contextlib
    import os

    out = getattr(args, "output", None)
    if args.command == "data":  # the one command that makes its output's parents
        from pathlib import Path

        out = Path(out).expanduser() if out else default_mnist_dir()
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"cannot make the folder {out.parent}: {e.strerror or e}") from None
    if out is None or args.command in SELF_LOCKING or os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return OutputLock(out, folder=args.command in FOLDER_OUTPUTS)


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 bad input, 1 bug, 130/143 interrupted)."""
    import os

    install_signal_cleanup()
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a parse error (2, already printed as one line)
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    import warnings

    orig_show = warnings.showwarning

    def show(message, category, *a, **k):  # a fallback that changes meaning: one line a person sees
        if issubclass(category, BlockmaskWarning):
            print(f"warning: {message}", file=sys.stderr)
        else:
            orig_show(message, category, *a, **k)

    try:
        with warnings.catch_warnings(), _output_lock(args):  # one output lock for every command that writes
            warnings.simplefilter("always", BlockmaskWarning)
            warnings.showwarning = show
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
