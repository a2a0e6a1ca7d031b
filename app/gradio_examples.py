"""Cached examples for the Gradio demo (app/gradio_demo.py): the starting model's own first mask
(shipped, else all ones) against the plain model, at a few fixed seeds and class labels.

Caching is honest only for a function of the example's inputs alone, so the examples do not run
the visitor's edited mask (that is the Generate button): they run a fixed mask, and their outputs
are computed once per example, on its first click (``cache_mode="lazy"``: the Space starts without
generating anything), then served from Gradio's cache to every visitor. A click also fills the
Generate row's seed and class label, so Generate then compares the visitor's own mask there.
$BLOCKMASK_EXAMPLES_CACHE=eager computes them all at start-up; =off never caches.
"""

from __future__ import annotations

import math
import os

import gradio as gr

import gradio_handlers as h
from blockmask.hooks.costs import format_macs
from blockmask.core.errors import BlockmaskError
from blockmask.viz import presets
from blockmask.viz.compare import compare, upscale
from blockmask.viz.context import Draw
from gradio_checks import Refused
from spaces_compat import gpu

SEEDS = (0, 1, 2)
LABELS = (3, 7, 1)  # one class label per seed (ignored by unconditional models)


def cache_mode() -> str:
    """'lazy' (default), 'eager' or 'off', from $BLOCKMASK_EXAMPLES_CACHE."""
    mode = os.environ.get("BLOCKMASK_EXAMPLES_CACHE", "lazy").strip().lower()
    return mode if mode in ("lazy", "eager", "off") else "lazy"


def rows(spec: str) -> list[list]:
    """[seed (as the Seed textbox holds it), class label] per example."""
    n = h.get_context(spec, "ddim").num_classes
    return [[str(s), (lab % n) if n else 0] for s, lab in zip(SEEDS, LABELS)]


def runner(spec: str):
    """The examples' function: (seed, label) → original, masked, |difference|, readout. Pure in its
    inputs for a fixed ``spec``, which is what makes its outputs safe to cache."""

    @gpu
    def run_example(seed, label):
        ctx = h.get_context(spec, "ddim")
        steps = presets.default_steps(ctx, fallback=20)
        try:
            seed_i = int(str(seed).strip())
            mask, source, _ = presets.initial_mask(ctx, steps)
            r = compare(ctx, mask,
                        Draw(seed=seed_i, num_images=1, guidance_scale=ctx.default_guidance, class_label=int(label) % ctx.num_classes if ctx.num_classes else None),
                        repeats=1)
        except (BlockmaskError, ValueError) as e:
            raise Refused(f"Example: {e}.") from None
        scale = max(1, -(-240 // max(1, min(r.original.shape[:2]))))
        psnr = "identical (∞ dB)" if math.isinf(r.psnr) else f"{r.psnr:.2f} dB"
        md = (f"**{source}** at K={steps} on {ctx.label}, seed {seed_i}: **{r.macs_percent:.1f} %** of the "
              f"MACs ({format_macs(r.macs_masked)} of {format_macs(r.macs_original)} per image) · **PSNR** {psnr}. "
              "A cached example: computed once, shown to every visitor; press **Generate** to run your own mask.")
        return upscale(r.original, scale), upscale(r.masked, scale), upscale(r.difference, scale), md

    return run_example


def panel(spec: str, seed: gr.Textbox, label: gr.Number) -> gr.Examples | None:
    """An accordion with the examples (inside the caller's Blocks); None when they cannot be built
    (a text model: its examples would need a prompt file)."""
    ctx = h.get_context(spec, "ddim")
    if ctx.takes_text:
        return None
    mode = cache_mode()
    with gr.Accordion("Examples: this model's own mask at fixed seeds (cached)", open=False, elem_id="examples"):
        with gr.Row():
            ex_orig = gr.Image(label="original", format="png", interactive=False, height=240)
            ex_masked = gr.Image(label="masked", format="png", interactive=False, height=240)
            ex_diff = gr.Image(label="|difference|", format="png", interactive=False, height=240)
        ex_md = gr.Markdown(elem_id="example-readout")
        return gr.Examples(rows(spec), [seed, label], [ex_orig, ex_masked, ex_diff, ex_md], fn=runner(spec),
                           cache_examples=mode != "off", cache_mode=None if mode == "off" else mode,
                           run_on_click=mode == "off", label="Seed, class label", api_name="example")
