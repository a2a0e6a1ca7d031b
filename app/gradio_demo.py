"""blockmask demo (Gradio Blocks): edit a K×N block mask, rectify it, compare original vs masked.

    python app/gradio_demo.py            # http://127.0.0.1:7860, offline, bundled model
    BLOCKMASK_APP_MODEL=config:tests/configs/tiny-unet.json python app/gradio_demo.py

Also runs as a Hugging Face Space (the repo root is put on sys.path). Layout only: the handlers
are in app/gradio_handlers.py, the work in blockmask.viz. Per-user state is a ``gr.State``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import gradio as gr  # noqa: E402

import gradio_handlers as h  # noqa: E402
from blockmask.schedulers import SCHEDULERS  # noqa: E402
from blockmask.viz.context import HUB_EXAMPLES, default_model_spec, model_choices, spec_label  # noqa: E402

INTRO = """# blockmask: which units can reuse their cache?
Each **cell** of the mask is one network unit (ResNet block or attention layer, columns, grouped by block)
at one sampling step (rows, top = noisiest). **Blue**: the unit runs. **Grey**: it is skipped and returns the
output cached at the last step where it ran — neighbouring steps see nearly the same input, so this is often
almost free in quality. **Orange-red**: removed by rectification (dead work). Step 0 always runs: there is no
cache yet. **Click a cell** in the mask image to change it."""
RECTIFY_HELP = ("Rectification removes computed cells whose output nobody reads (no live unit uses it at that "
                "step and its cache is overwritten before a later step reads it). It is exact: images do not change.")
ACTIONS = ["Toggle", "Set computed", "Set reused"]


def build(spec: str | None = None) -> gr.Blocks:
    """The Blocks app (not launched)."""
    spec = spec or default_model_spec()
    first = h.new_session(spec)
    ctx = first.ctx
    choices = [(spec_label(s), s) for s in model_choices()] + [(s, s) for s in HUB_EXAMPLES]
    with gr.Blocks(title="blockmask demo") as demo:
        state = gr.State(first)
        gr.Markdown(INTRO)
        with gr.Row():
            model = gr.Dropdown(choices, value=spec, label="Model (or type a hub id / local folder)",
                                allow_custom_value=True, scale=3,
                                info="Hub ids load only when online; 'random init' models have no trained weights.")
            steps = gr.Number(first.editor.steps, label="Sampling steps K", precision=0, scale=1)
            sched = gr.Dropdown(list(SCHEDULERS), value="ddim", label="Scheduler", scale=1)
            load_btn = gr.Button("Load", scale=1)
        readout = gr.Markdown(elem_id="readout")
        with gr.Row():
            with gr.Column(scale=3):
                mask_img = gr.Image(label="Mask (click a cell)", format="png", interactive=False, type="numpy",
                                    show_label=True, elem_id="mask-image", buttons=["fullscreen"])
                action = gr.Radio(ACTIONS, value="Toggle", label="Click action")
            with gr.Column(scale=2):
                with gr.Accordion("Presets, upload, download", open=True):
                    pchoices = h.preset_choices(first)
                    preset = gr.Dropdown(pchoices, value=pchoices[0][1], label="Preset")
                    with gr.Row():
                        interval = gr.Number(3, label="interval", precision=0, minimum=1)
                        branch = gr.Number(0, label="branch (DeepCache cache_branch_id)", precision=0, minimum=0)
                        every = gr.Number(2, label="every (uniform)", precision=0, minimum=1)
                    with gr.Row():
                        ratio = gr.Number(0.7, label="MAC budget (random)", minimum=0, maximum=1)
                        pseed = gr.Number(0, label="seed (random)", precision=0)
                    preset_btn = gr.Button("Load preset", variant="primary")
                    upload = gr.File(label="Upload mask JSON", file_types=[".json"], type="filepath")
                    download = gr.DownloadButton("Download current mask")
                with gr.Accordion("Region, step and unit tools", open=False):
                    with gr.Row():
                        k0 = gr.Number(1, label="steps from", precision=0)
                        k1 = gr.Number(1, label="to", precision=0)
                        i0 = gr.Number(0, label="units from", precision=0)
                        i1 = gr.Number(0, label="to", precision=0)
                    region_act = gr.Radio(ACTIONS, value="Set reused", label="Region action")
                    region_btn = gr.Button("Apply to region")
                    with gr.Row():
                        cell_k = gr.Number(1, label="step k", precision=0)
                        cell_i = gr.Number(0, label="unit i", precision=0)
                    with gr.Row():
                        toggle_btn = gr.Button("Toggle cell (k, i)")
                        row_on = gr.Button("Compute step k")
                        row_off = gr.Button("Reuse step k")
                        col_on = gr.Button("Compute unit i")
                        col_off = gr.Button("Reuse unit i")
                with gr.Row():
                    undo_btn = gr.Button("Undo")
                    redo_btn = gr.Button("Redo")
                    reset_btn = gr.Button("Reset")
                gr.Markdown(RECTIFY_HELP)
                with gr.Row():
                    rect_btn = gr.Button("Rectify", variant="primary")
                    pre = gr.Checkbox(False, label="Show the mask before rectification")
        gr.Markdown("## Original vs masked, same seeds")
        with gr.Row():
            seed = gr.Number(0, label="Seed", precision=0)
            n_img = gr.Number(2, label="Images (max 16)", precision=0)
            label = gr.Number(0, label=f"Class label (0–{(ctx.num_classes or 1) - 1})", precision=0,
                              visible=bool(ctx.num_classes))
            guidance = gr.Number(ctx.default_guidance, label="Guidance scale (1 = off)", visible=ctx.supports_guidance)
            gen_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        with gr.Row():
            orig = gr.Image(label="original", format="png", interactive=False)
            masked = gr.Image(label="masked", format="png", interactive=False)
            diff = gr.Image(label="|difference| (amplified)", format="png", interactive=False)
        gen_md = gr.Markdown("Press **Generate**.", elem_id="gen-readout")
        gr.Markdown("## Where does the mask save work?")
        with gr.Row():
            step_plot = gr.Plot(label="MACs per step")
            unit_plot = gr.Plot(label="Computed fraction per unit")
        gr.Markdown("Δ_k: relative change of the model output between steps (METHOD.md Eq. 9); λ_k: the sparsity "
                    "weight training used (Eq. 10). Small Δ_k → reuse is safe.")
        delta_plot = gr.Plot(label="Δ_k and λ_k")
        delta_btn = gr.Button("Compute Δ_k (one unmasked run)")

        views = [state, mask_img, readout, step_plot, unit_plot, delta_plot]
        ev = dict(outputs=views)
        load_btn.click(h.load_model, [state, model, steps, sched], views + [preset], api_name="load_model")
        for trigger in (model.change, sched.change, steps.submit):  # apply without pressing Load too
            trigger(h.load_model, [state, model, steps, sched], views + [preset], api_name=False)
        demo.load(lambda s: h.view(s), [state], views, api_name=False)
        mask_img.select(h.click_cell, [state, action], **ev, api_name=False)
        toggle_btn.click(h.toggle_cell, [state, cell_k, cell_i], **ev, api_name="toggle")
        region_btn.click(h.set_region, [state, k0, k1, i0, i1, region_act], **ev, api_name="set_region")
        row_on.click(lambda s, k: h.set_row(s, k, True), [state, cell_k], **ev, api_name="compute_step")
        row_off.click(lambda s, k: h.set_row(s, k, False), [state, cell_k], **ev, api_name="reuse_step")
        col_on.click(lambda s, i: h.set_column(s, i, True), [state, cell_i], **ev, api_name="compute_unit")
        col_off.click(lambda s, i: h.set_column(s, i, False), [state, cell_i], **ev, api_name="reuse_unit")
        undo_btn.click(h.undo, [state], **ev, api_name="undo")
        redo_btn.click(h.redo, [state], **ev, api_name="redo")
        reset_btn.click(h.reset, [state], **ev, api_name="reset")
        rect_btn.click(h.rectify, [state], **ev, api_name="rectify")
        pre.change(h.show_pre, [state, pre], **ev, api_name=False)
        preset_btn.click(h.load_preset, [state, preset, interval, branch, every, ratio, pseed], **ev,
                         api_name="load_preset")
        upload.upload(h.upload_mask, [state, upload], **ev, api_name="upload_mask")
        download.click(h.download_mask, [state], download, api_name="download_mask")
        gen_btn.click(h.generate, [state, seed, n_img, label, guidance], [orig, masked, diff, gen_md],
                      api_name="generate")
        delta_btn.click(h.compute_delta_plot, [state], **ev, api_name="delta")
    return demo


if __name__ == "__main__":
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    build().queue().launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), server_port=port)
