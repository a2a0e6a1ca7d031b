"""``blockmask method KIND MODEL --steps K --target-macs B -o OUT``: the other methods' masks from
the command line. Each kind's options are derived from its config dataclass (field defaults and
``metadata["help"]``), so the CLI never copies a default."""

from __future__ import annotations

import argparse
import dataclasses
import typing

from blockmask.cli.common import emit, needs_condition, prompt_args, prompt_condition, workbench
from blockmask.core.errors import BlockmaskError
from blockmask.learning.methods import METHODS, config_for, get, produce, refit
from blockmask.learning.methods.router import data_folder
from blockmask.learning.run import check_output


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _add_config_args(p: argparse.ArgumentParser, config: type) -> None:
    hints = typing.get_type_hints(config)
    for f in dataclasses.fields(config):
        help_ = f.metadata.get("help", "") + f" (default: {f.default})"
        hint = hints[f.name]
        if hint is bool:
            p.add_argument(_flag(f.name), action="store_true", default=f.default, help=f.metadata.get("help", ""))
        elif "tuple" in str(hint):
            p.add_argument(_flag(f.name), type=_floats, default=f.default, help=help_)
        else:
            base = next((t for t in (int, float, str) if t in typing.get_args(hint) or t is hint), str)
            p.add_argument(_flag(f.name), type=base, default=f.default, choices=f.metadata.get("choices"), help=help_)


def cmd_method(args) -> None:
    m = get(args.kind)
    cfg = config_for(args.kind, **{f.name: getattr(args, f.name) for f in dataclasses.fields(m.config)})
    if args.kind == "router" and not getattr(args, "from_scores", None):  # a missing data folder: one line before the model is even loaded

        data_folder(cfg)

    check_output(args.output)
    wb = workbench(args)

    if needs_condition(args, wb):  # a text model: --prompt/--prompts/--prompt-embeds, or --random-prompts on purpose
        cond = prompt_condition(args, wb, class_label=args.class_label)
    else:
        cond = wb.condition(class_label=args.class_label) if args.class_label is not None else None
    if getattr(args, "from_scores", None):
        src = wb.load_mask(args.from_scores, steps=args.steps)[0]
        if (src.meta.get("producer") or {}).get("method") != args.kind:
            raise BlockmaskError(f"--from-scores: {args.from_scores} was not made by {args.kind}")
        mask, meta = refit(wb, src.meta, target_macs=args.target_macs)
    else:
        mask, meta = produce(wb, args.kind, steps=args.steps, target_macs=args.target_macs, config=cfg,
                             condition=cond, progress=not args.json)
    summary = save(wb, mask, meta, args.output)
    emit(args, summary, f"wrote {args.output}: {m.label}, MAC ratio {meta['macs_ratio']:.1%} (target "
                        f"{args.target_macs:.0%}), {meta['train_seconds']:.1f}s")


def save(wb, mask, meta: dict, output) -> dict:
    """Write the mask file (the producer's meta; its per-cell arrays at the top level) atomically;
    returns the summary the CLI prints."""
    arrays = ("change", "scores", "losses")
    mf = wb.mask_file(mask, {"producer": {k: v for k, v in meta.items() if k not in arrays},
                             **{k: meta[k] for k in arrays if k in meta}})
    mf.save(output)
    return {"output": str(output), "method": meta["method"], "macs_ratio": meta["macs_ratio"],
            "target_macs": meta["target_macs"], "train_seconds": meta["train_seconds"],
            **{k: meta[k] for k in ("data", "memory") if k in meta}}


def add_method_parser(sub, model_args) -> None:
    """Register ``blockmask method KIND ...`` on the main parser's subcommands."""

    p = sub.add_parser("method", help="mask from another method at a MAC budget: " + ", ".join(METHODS),
                       description="Masks from the methods the paper compares against (docs/METHODS_COMPARED.md).")
    kinds = p.add_subparsers(dest="kind", required=True)
    for m in METHODS.values():
        q = kinds.add_parser(m.name, help=m.label, description=m.help)
        model_args(q)
        q.add_argument("--target-macs", type=float, required=True, help="MAC budget B in (0, 1] (rectified, ±2%%)")
        q.add_argument("--class-label", type=int, help="one class for the noise-only runs (default: random classes)")
        _add_config_args(q, m.config)

        prompt_args(q)
        if m.name in ("router", "global"):
            q.add_argument("--from-scores", metavar="MASK",
                           help="reuse the scores a previous run of this method stored in MASK: no training, only "
                                "the threshold for --target-macs")
        q.add_argument("-o", "--output", required=True, help="mask JSON file to write")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.set_defaults(fn=cmd_method)


__all__ = ["add_method_parser", "cmd_method", "BlockmaskError"]
