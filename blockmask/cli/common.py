"""Helpers shared by every ``blockmask`` command module (:mod:`blockmask.cli.main`, the ``cli_*`` modules
and :mod:`blockmask.cli.method`): the one-line-error parser, option types and checks, loading the
model and its masks, and printing a result (text, or JSON with ``--json``)."""

from __future__ import annotations

import argparse
import json
import sys

from blockmask.core.schedulers import SCHEDULER_HELP
from blockmask.core.validate import check_int
from blockmask.io.files import jsonable
from blockmask.sampling.prompting import CLI_NAMES, condition_for, read_prompt_file, takes_text
from blockmask.workbench import Workbench


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
    :func:`blockmask.core.validate.check_int`, named as the flag)."""
    for name, (low, high) in bounds.items():
        v = getattr(args, name, None)
        if v is not None and v != "auto":
            check_int("--" + name.replace("_", "-"), v, low=low, high=high)


SEED_MAX = 2**63 - 1


def workbench(args):
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


def prompt_args(p: argparse.ArgumentParser, *, text: bool = True) -> None:
    """The prompt options of a command that samples a text model (text=False: only --random-prompts,
    for commands that sample with their own seeds and conditions)."""
    if text:
        p.add_argument("--prompt", action="append", metavar="TEXT",
                       help="text models: a prompt, encoded by the text encoder of the pipeline the model was loaded "
                            "from (repeatable; images cycle through the prompts)")
        p.add_argument("--prompts", metavar="FILE", help="text models: a text file of prompts, one per line "
                                                         "(blank lines and # comments skipped)")
        p.add_argument("--prompt-embeds", help="text models: safetensors file with prompt_embeds (+ "
                                               "negative_prompt_embeds), e.g. saved from the pipeline's encode_prompt")
    p.add_argument("--random-prompts", action="store_true",
                   help="text models: condition on seeded random prompt embeddings on purpose (a warning says so); "
                        "without a prompt source a text model is refused")


def prompt_condition(args, wb, *, class_label=None, guidance_scale: float = 1.0):
    """The run's :class:`~blockmask.sampling.sample.Condition` from --prompt/--prompts/--prompt-embeds/--random-prompts
    (:func:`blockmask.sampling.prompting.condition_for`: a text model needs one of them, other models none)."""

    texts = list(getattr(args, "prompt", None) or [])
    if getattr(args, "prompts", None):
        texts += read_prompt_file(args.prompts)
    return condition_for(wb, prompts=texts or None, prompt_file=getattr(args, "prompt_embeds", None),
                         random_prompts=bool(getattr(args, "random_prompts", False)), class_label=class_label,
                         guidance_scale=guidance_scale, names=CLI_NAMES)


def needs_condition(args, wb) -> bool:
    """Whether the run conditions on prompts: a text model, or a prompt option given (refused on others)."""

    given = any(getattr(args, a, None) for a in ("prompt", "prompts", "prompt_embeds", "random_prompts"))
    return given or takes_text(wb)
