"""Helpers shared by every ``blockmask`` command module (:mod:`blockmask.cli`, the ``cli_*`` modules
and :mod:`blockmask.methods.cli`): the one-line-error parser, option types and checks, loading the
model and its masks, and printing a result (text, or JSON with ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys

from .io import jsonable
from .schedulers import SCHEDULER_HELP
from .validate import check_int


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: blockmask train: …``), exit code 2."""

    def error(self, message):
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} --help)\n")


def finite(text: str) -> float:
    """A float option: finite (nan and inf are refused at parse time)."""
    import math

    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return v


def model_args(p: argparse.ArgumentParser, *, steps: bool = True) -> None:
    p.add_argument("model", help="a bundled model (a folder of the bundled assets' models/: mnist-ddpm, "
                                  "mnist-dit, …), config:PATH.json, a diffusers folder, or a hub id")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--init-seed", type=int, default=0, help="seed of the random init for config: models")
    p.add_argument("--scheduler", default="ddim", help=SCHEDULER_HELP)
    if steps:
        p.add_argument("--steps", type=int, required=True, help="number of sampling steps K")


def emit(args, obj: dict, text: str) -> None:
    print(json.dumps(jsonable(obj), indent=1) if args.json else text)  # strict JSON: inf/NaN -> null


def check_ints(args, **bounds) -> None:
    """Integer options within (low, high) bounds, checked before any work (one validator:
    :func:`blockmask.validate.check_int`, named as the flag)."""
    for name, (low, high) in bounds.items():
        v = getattr(args, name, None)
        if v is not None and v != "auto":
            check_int("--" + name.replace("_", "-"), v, low=low, high=high)


SEED_MAX = 2**63 - 1


def workbench(args):
    from .api import Workbench

    check_ints(args, steps=(1, 10_000), ref_steps=(2, 10_000), init_seed=(0, SEED_MAX), seed=(0, SEED_MAX),
               class_label=(0, None))
    return Workbench.load(args.model, device=args.device, dtype=args.dtype, init_seed=args.init_seed,
                          scheduler=args.scheduler)


def guidance_of(args, wb) -> float:
    """--guidance-scale, else the model's own default (blockmask.json), else 1 (no guidance)."""
    return wb.default_guidance if args.guidance_scale is None else args.guidance_scale


def load_mask(wb, path, steps=None):
    mf, warnings = wb.load_mask(path, steps=steps)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    return mf
