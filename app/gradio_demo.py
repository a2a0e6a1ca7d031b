"""blockmask demo (Gradio Blocks): edit a K×N block mask, rectify it, compare original vs masked.

    python app/gradio_demo.py                          # http://127.0.0.1:7860, offline, bundled models
    python app/gradio_demo.py --allow-model ./my-unet  # also offer a local folder (or hub id, config:X.json)
    python app/gradio_demo.py --allow-mask someone/    # let visitors load masks from someone/* on the hub
    BLOCKMASK_APP_MODEL=config:tests/configs/tiny-unet.json python app/gradio_demo.py

Also runs as a Hugging Face Space (the repo root is put on sys.path). Layout only: the handlers are in
app/gradio_handlers.py (the mask edits in app/gradio_edits.py), the work in blockmask.viz. Per-user
state is a ``gr.State``. The mask grid is the same browser-side canvas as the Streamlit app's
(app/components/mask_grid.js) inside a ``gr.HTML``.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, Path(__file__).resolve().parent):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import spaces_compat  # noqa: E402  (first: ZeroGPU's `spaces` must come before torch touches CUDA)

spaces_compat.use_checkout()  # a Space runs this checkout without pip-installing it (bundled models, app files)

import gradio as gr  # noqa: E402

import gradio_edits as ge  # noqa: E402
import gradio_examples  # noqa: E402
import gradio_explorer as gx  # noqa: E402
import gradio_handlers as h  # noqa: E402
import gradio_training  # noqa: E402
from blockmask.core.schedulers import SCHEDULERS  # noqa: E402
from blockmask.viz.access import ENV_ALLOW, ENV_ALLOW_MASKS, MAX_UPLOAD_BYTES  # noqa: E402
from blockmask.viz import race, tables, training  # noqa: E402
from blockmask.viz.tour import TOUR  # noqa: E402
from blockmask.viz.compare import MAX_IMAGES  # noqa: E402
from blockmask.viz.prompts import TEXT_HELP  # noqa: E402
from blockmask.viz.presenter import REUSE_HELP, REUSE_TITLE  # noqa: E402
from blockmask.viz.context import default_model_spec  # noqa: E402

INTRO = """# blockmask: which units can reuse their cache?
Each **cell** of the mask is one network unit (ResNet block or attention layer, columns, grouped by block)
at one sampling step (rows, top = noisiest). **Blue**: the unit runs. **Grey**: it is skipped and returns the
output cached at the last step where it ran — neighbouring steps see nearly the same input, so this is often
almost free in quality (with **Reused units: forecast**, a first-order forecast from the unit's last two
computed values instead, no extra MACs). **Orange-red**: removed by rectification (dead work). Step 0 always
runs: there is no cache yet. **Click** a cell or **drag** a box in the grid to change it; hover for the unit,
step and MACs."""
RECTIFY_HELP = ("Rectification removes computed cells whose output nobody reads (no live unit uses it at that "
                "step and its cache is overwritten before a later step reads it). It is exact: images do not change.")
COMPONENTS = Path(__file__).resolve().parent / "components"
# The queue: mask edits (cheap) run up to 4 at a time and at most 32 events wait; a full queue tells the
# visitor to retry. Generation and Δ_k share one slot (two on ZeroGPU, where each call gets its own GPU),
# training has its own, so a long training run never blocks Generate for everyone.
QUEUE = dict(default_concurrency_limit=4, max_size=32)
HEAVY = int(os.environ.get("BLOCKMASK_HEAVY_CONCURRENCY", 2 if spaces_compat.ZERO_GPU else 1))
RUN = dict(concurrency_limit=HEAVY, concurrency_id="run")
TRAIN = dict(concurrency_limit=1, concurrency_id="train")


def grid_js() -> str:
    """The Streamlit grid's module (components/mask_grid.js) wired to gr.HTML's props/trigger/watch."""
    src = (COMPONENTS / "mask_grid.js").read_text().replace("export default function", "const bmGrid = function", 1)
    return src + """
const bmDraw = () => {
  let data = null;
  try { data = JSON.parse(props.value || "null"); } catch (e) { return; }
  if (!data || !data.K) return;
  const host = element.querySelector(".bm-host") || element;
  bmGrid({ data, parentElement: host, setTriggerValue: (name, edit) => {
    props.value = JSON.stringify(Object.assign({}, data, { edit }));
    trigger("input");
  } });
};
bmDraw();
watch("value", bmDraw);
"""


# gr.Plot has no click event: this attaches Plotly's own plotly_click to the frontier plot (again whenever
# Gradio draws a new graph div) and sends the clicked point's name (its customdata) as a gr.HTML input.
FRONTIER_CLICK_JS = """
setInterval(() => {
  for (const gd of document.querySelectorAll('#frontier-plot .js-plotly-plot')) {
    if (gd.__bmClick || !gd.on) continue;
    gd.__bmClick = true;
    gd.on('plotly_click', (ev) => {
      const p = ev && ev.points && ev.points[0];
      const name = p && (Array.isArray(p.customdata) ? p.customdata[0] : p.customdata);
      if (!name) return;  // the live point and the ring carry no point name
      props.value = JSON.stringify({ point: String(name), at: Date.now() });
      trigger('input');
    });
  }
}, 300);
"""


def build(spec: str | None = None) -> gr.Blocks:
    """The Blocks app (not launched)."""
    spec = spec or default_model_spec()
    first = h.new_session(spec)
    ctx = first.ctx
    choices, start, custom = h.model_dropdown()
    with gr.Blocks(title="blockmask demo", delete_cache=(600, 3600)) as demo:
        state = gr.State(first)
        gr.Markdown(INTRO)
        with gr.Accordion("Guided tour (4 steps, for a class)", open=False, elem_id="tour"):
            with gr.Tabs():
                for title, text in TOUR:
                    with gr.Tab(title):
                        gr.Markdown(text)
        with gr.Row():
            model = gr.Dropdown(choices, value=h.policy().name_of(spec) if spec else start, label="Model",
                                allow_custom_value=custom, scale=3,
                                info=f"The models this app offers (the operator adds more with --allow-model or "
                                     f"${ENV_ALLOW}); 'random init' models have no trained weights.")
            steps = gr.Number(first.editor.steps, label="Sampling steps K", step=1, minimum=1, maximum=h.MAX_STEPS,
                              scale=1)
            sched = gr.Dropdown(list(SCHEDULERS), value="ddim", label="Scheduler", scale=1)
            load_btn = gr.Button("Load", scale=1)
        readout = gr.Markdown(label="Mask readout", elem_id="readout")
        with gr.Row():
            with gr.Column(scale=3):
                grid = gr.HTML(h.grid_value(first), label="Mask grid", html_template='<div class="bm-host"></div>',
                               css_template=(COMPONENTS / "mask_grid.css").read_text(), js_on_load=grid_js(),
                               elem_id="mask-grid", max_height=760)
                action = gr.Radio(list(h.ACTIONS), value="Toggle", label="Click / drag action")
                reuse = gr.Radio(ge.reuse_choices(), value=first.editor.reuse, label=REUSE_TITLE, info=REUSE_HELP,
                                 elem_id="reuse-mode")
            with gr.Column(scale=2):
                with gr.Accordion("Presets, upload, download", open=True):
                    pchoices = h.preset_choices(first)
                    preset = gr.Dropdown(pchoices, value=pchoices[0][1], label="Preset")
                    with gr.Row():
                        interval = gr.Number(3, label="interval", step=1, minimum=1)
                        branch = gr.Number(0, label="branch (DeepCache cache_branch_id)", step=1, minimum=0)
                        every = gr.Number(2, label="every (uniform)", step=1, minimum=1)
                    with gr.Row():
                        ratio = gr.Number(0.7, label="MAC budget (random, methods)", minimum=0, maximum=1,
                                          info="Fraction of the plain model's MACs")
                        pseed = gr.Number(0, label="seed (random, methods)", step=1)
                    preset_btn = gr.Button("Load preset", variant="primary")
                    upload = gr.File(label=f"Upload mask JSON (max {MAX_UPLOAD_BYTES // 1_000_000} MB)",
                                     file_types=[".json"], type="filepath")
                    with gr.Row():
                        hub_mask = gr.Textbox(label="Load mask from the hub", placeholder="owner/name", max_lines=1,
                                              scale=3, elem_id="hub-mask",
                                              info=f"A hub repo id or save_pretrained folder the operator allows "
                                                   f"(--allow-mask / ${ENV_ALLOW_MASKS}).")
                        hub_btn = gr.Button("Load from hub", scale=1)
                    download = gr.DownloadButton("Download current mask", value=h.download_path(first),
                                                 elem_id="download")
                with gr.Accordion("Region, step and unit tools", open=False):
                    with gr.Row():
                        k0 = gr.Number(1, label="steps from", step=1)
                        k1 = gr.Number(1, label="to", step=1)
                        i0 = gr.Number(0, label="units from", step=1)
                        i1 = gr.Number(0, label="to", step=1)
                    region_act = gr.Radio(list(h.ACTIONS), value="Set reused", label="Region action")
                    region_btn = gr.Button("Apply to region")
                    with gr.Row():
                        cell_k = gr.Number(1, label="step k", step=1)
                        cell_i = gr.Number(0, label="unit i", step=1)
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
        with gr.Accordion("Compare the presets at this K (table)", open=False, elem_id="presets-accordion"):
            gr.Markdown("Shipped masks for this model and the baselines at their default parameters, one row per "
                        "distinct mask (identical masks share a row), against the current mask. PSNR is what each "
                        "mask file records (held-out seeds); the current mask's is from your last Generate.")
            ptable = gr.Dataframe(h.presets_table(first), label="Presets at this K vs the current mask",
                                  interactive=False, elem_id="presets-table", wrap=True,
                                  column_widths=["22%", "22%", "9%", "9%", "10%", "9%", "19%"])
        gr.Markdown("## Original vs masked, same seeds")
        with gr.Row():
            seed = gr.Textbox("0", label="Seed", max_lines=1)
            n_img = gr.Number(2, label=f"Images (max {MAX_IMAGES})", step=1, minimum=1, maximum=MAX_IMAGES)
            n = ctx.num_classes
            label = gr.Number(0, label=f"Class label (0–{(n or 1) - 1})", step=1, minimum=0, visible=bool(n),
                              elem_id="class-label")
            guidance = gr.Number(ctx.default_guidance, label="Guidance scale (1 = off)", minimum=1, maximum=20,
                                 visible=ctx.supports_guidance, elem_id="guidance")
            prompt = gr.File(label=f"Prompt embeddings (.safetensors, max {MAX_UPLOAD_BYTES // 1_000_000} MB)",
                             file_types=[".safetensors"], type="filepath", visible=ctx.takes_text,
                             elem_id="prompt-file")
            prompt_text = gr.Textbox("", label="Prompts (one per line)", lines=2, visible=ctx.takes_text,
                                     info=TEXT_HELP, elem_id="prompt-text")
            prompt_random = gr.Checkbox(False, label="Random embeddings", visible=ctx.takes_text,
                                        elem_id="random-prompts")
            repeats = gr.Number(3, label="Timed repeats (interleaved)", step=1, minimum=1, maximum=10)
            gen_btn = gr.Button("Generate", variant="primary", elem_id="generate")
        prompt_note = gr.Markdown(h.prompt_md(first), label="Prompt", elem_id="prompt-note")
        stale = gr.Markdown(h.stale_md(first), label="Result status", elem_id="stale")
        with gr.Row():
            orig = gr.Image(label="original", format="png", interactive=False, height=320)
            masked = gr.Image(label="masked", format="png", interactive=False, height=320)
            diff = gr.Image(label="|difference| (amplified)", format="png", interactive=False, height=320)
        gen_md = gr.Markdown("Press **Generate**.", label="Generation readout", elem_id="gen-readout")
        gen_table = gr.Dataframe(headers=tables.COMPARISON_COLUMNS, label="Original vs masked", interactive=False,
                                 elem_id="gen-table")
        div_plot = gr.Plot(label="Where the error enters: relative latent error per step", visible=False)
        gradio_examples.panel(spec, seed, label)
        gr.Markdown("## Where does the mask save work?")
        with gr.Row():
            step_plot = gr.Plot(label="MACs per step")
            unit_plot = gr.Plot(label="Computed fraction per unit")
        gr.Markdown("Δ_k: relative change of the model output between steps (METHOD.md Eq. 9); λ_k: the sparsity "
                    "weight training used (Eq. 10). Small Δ_k → reuse is safe.")
        delta_note = gr.Markdown(label="Δ_k status")
        delta_plot = gr.Plot(label="Δ_k and λ_k")
        delta_btn = gr.Button("Compute Δ_k (one unmasked run)")
        with gr.Accordion("Train a mask here", open=False):
            gr.Markdown("Learns the mask one sampling step at a time (METHOD.md §2): scores decide which units may "
                        "reuse their cache while the output stays close to the plain model; λ sets how hard sparsity "
                        "is pushed. The result is rectified and loaded into the editor (Undo brings yours back). "
                        + training.ESTIMATE_NOTE)
            with gr.Row():
                t_lam = gr.Number(1.0, label="λ scale", minimum=0, maximum=100)
                t_use = gr.Checkbox(False, label="Target a MAC budget")
                t_budget = gr.Number(0.6, label="MAC budget (fraction)", minimum=0.05, maximum=1)
                t_iters = gr.Number(20, label="Iterations per step", step=1, minimum=1, maximum=500)
                t_batch = gr.Number(4, label="Batch (noise seeds)", step=1, minimum=1, maximum=64)
            with gr.Row():
                t_start = gr.Button("Start training", variant="primary", elem_id="train-start")
                t_cancel = gr.Button("Cancel training", elem_id="train-cancel")
            t_md = gr.Markdown(label="Training status", elem_id="train-status")
            t_plot = gr.Plot(label="Training curve")
        gr.Markdown("## Frontier: what is best at my budget?")
        fr_md = gr.Markdown(label="Frontier", elem_id="frontier-note")
        with gr.Row():
            fr_budget = gr.Slider(0, 1, 0.5, step=0.01, label="MAC budget (fraction of the plain run)", scale=2,
                                  elem_id="fr-budget",
                                  info="Selects, of the points planned for budgets at or under it, "
                                       "the best on validation")
            fr_point = gr.Dropdown([], label="Frontier point", scale=3, elem_id="fr-point",
                                   info="Every point of the plot (gr.Plot has no click event): pick one, press Load")
            fr_load = gr.Button("Load point", variant="primary", scale=1, elem_id="fr-load")
        fr_bmd = gr.Markdown(label="Budget's point", elem_id="fr-budget-md")
        fr_plot = gr.Plot(label="Quality against cost (held-out test seeds)", elem_id="frontier-plot")
        fr_click = gr.HTML("", html_template="<span></span>", js_on_load=FRONTIER_CLICK_JS, elem_id="fr-click",
                           label="Frontier plot click", padding=False)
        fr_compute = gr.Button("Compute a quick frontier (models without one)", elem_id="fr-compute", size="sm")
        gr.Markdown("## Race at one budget\nSame seeds for all five: plain, plain with fewer steps, the best rule "
                    "peer within the budget, the planner's schedule and your current mask. One timed run each (noisy "
                    "on a busy CPU); PSNR against the plain run; the filmstrip shows the predicted clean image x̂₀ "
                    "after 20/40/60/80/100 % of the steps.")
        with gr.Row():
            r_seed = gr.Number(0, label="Race seed", step=1, minimum=0)
            r_n = gr.Number(2, label="Race images", step=1, minimum=1, maximum=MAX_IMAGES)
            r_btn = gr.Button("Run the race", variant="primary", elem_id="race-go")
        lanes = []
        with gr.Row(elem_id="race-lanes"):
            for j, role in enumerate(race.ENTRIES):
                with gr.Column(min_width=150, elem_id=f"race-lane-{j}"):
                    lanes += [gr.Image(label=role, format="png", interactive=False, height=170),
                              gr.Image(label=f"x̂₀ filmstrip: {role}", format="png", interactive=False, height=70),
                              gr.Markdown("Press **Run the race**.", label=f"Race numbers: {role}",
                                          elem_id=f"race-md-{j}")]
        r_table = gr.Dataframe(label="Race", interactive=False, elem_id="race-table", wrap=True)
        gr.Markdown("## Export for teaching\nThe grid as PNG and SVG, every plot as PNG + SVG (zip), and a one-page "
                    "HTML report of this session (needs a Generate or a race for the current mask).")
        with gr.Row():
            x_figs = gr.Button("Export grid and plots", elem_id="export-figs")
            x_rep = gr.Button("HTML report", elem_id="export-report")
        x_files = gr.File(label="Exported files", file_count="multiple", interactive=False, elem_id="export-files")

        views = [state, grid, readout, stale, step_plot, unit_plot, delta_plot, delta_note, ptable, download]
        ev = dict(outputs=views)
        load_in = [state, model, steps, sched]
        load_out = views + [preset, prompt_text, prompt_random, prompt_note, prompt, label, guidance]
        load_btn.click(h.load_model, load_in, load_out, api_name="load_model")
        for trigger in (model.change, sched.change, steps.submit):  # apply without pressing Load too
            trigger(h.load_model, load_in, load_out, api_name=False)
        demo.load(h.view, [state], views, api_name=False)
        fr_out = [fr_md, fr_plot, fr_point, fr_bmd]
        fr_in = [state, fr_budget, fr_point]
        # a grid click is drawn in the browser at once; its reply brings the readout and the frontier plot's
        # live point together (one round trip), then the other plots and the download
        grid.input(gx.with_frontier(ge.grid_edit), [state, grid, fr_budget, fr_point], views[:4] + fr_out,
                   api_name="grid_edit").then(h.after_edit, [state], views[4:], api_name=False)
        action.change(ge.set_mode, [state, action], views[:4], api_name="set_mode")  # the mask stays: no plots
        reuse.input(ge.set_reuse, [state, reuse], views[:4], api_name="set_reuse")  # visitor's choice only
        readout.change(ge.reuse_value, [state], reuse, api_name=False)  # a loaded mask or point sets the mode
        pre.change(ge.show_pre, [state, pre], views[:4], api_name=False)
        edits = [(toggle_btn.click, ge.toggle_cell, [cell_k, cell_i], "toggle"),
                 (region_btn.click, ge.set_region, [k0, k1, i0, i1, region_act], "set_region"),
                 (row_on.click, ge.compute_step, [cell_k], "compute_step"),
                 (row_off.click, ge.reuse_step, [cell_k], "reuse_step"),
                 (col_on.click, ge.compute_unit, [cell_i], "compute_unit"),
                 (col_off.click, ge.reuse_unit, [cell_i], "reuse_unit"), (undo_btn.click, ge.undo, [], "undo"),
                 (redo_btn.click, ge.redo, [], "redo"), (reset_btn.click, ge.reset, [], "reset"),
                 (rect_btn.click, ge.rectify, [], "rectify")]
        for trigger, fn, extra, name in edits:  # a button: the grid and readout first (a plot in the same
            # reply would hold back the grid's redraw), then the frontier's live point, then the rest
            trigger(fn, [state, *extra], views[:4], api_name=name).then(
                gx.frontier_plot, fr_in, fr_out, api_name=False).then(h.after_edit, [state], views[4:], api_name=False)
        preset_btn.click(h.load_preset, [state, preset, interval, branch, every, ratio, pseed], **ev,
                         api_name="load_preset")
        prompt.upload(h.upload_prompt, [state, prompt], [state, prompt_note], api_name="upload_prompt")
        prompt.clear(h.upload_prompt, [state, prompt], [state, prompt_note], api_name=False)
        prompt_text.change(h.set_prompt_text, [state, prompt_text], [state, prompt_note], api_name="set_prompts")
        prompt_random.change(h.set_random_prompts, [state, prompt_random], [state, prompt_note],
                             api_name="set_random_prompts")
        upload.upload(h.upload_mask, [state, upload], **ev, api_name="upload_mask")
        hub_btn.click(h.load_hub_mask, [state, hub_mask], **ev, api_name="load_hub_mask")
        hub_mask.submit(h.load_hub_mask, [state, hub_mask], **ev, api_name=False)
        download.click(h.download_mask, [state], download, api_name="download_mask")  # already current: for the API
        gen_btn.click(h.generate, [state, seed, n_img, label, guidance, repeats],
                      [state, orig, masked, diff, gen_md, stale, div_plot, gen_table],
                      api_name="generate", **RUN).then(gx.frontier_plot, fr_in, fr_out, api_name=False)
        readout.change(gx.frontier_plot, fr_in, fr_out, api_name=False)  # every edit / model switch: live point
        fr_compute.click(gx.compute_frontier, [state, fr_budget], fr_out, api_name="frontier_compute", **RUN)
        fr_budget.release(gx.budget_point, fr_in, fr_out, api_name="frontier_budget")
        fr_click.input(gx.click_point, [state, fr_click, fr_budget], views + [steps, sched, preset] + fr_out,
                       api_name=False)  # a click on the plot loads that point, as Load point does
        fr_load.click(gx.load_point, [state, fr_point, fr_budget], views + [steps, sched, preset] + fr_out,
                      api_name="frontier_load")
        r_btn.click(gx.run_race, [state, fr_budget, r_seed, r_n, label], [state, r_table, *lanes, *fr_out],
                    api_name="race", **RUN)
        x_figs.click(gx.export_figures, [state, fr_budget], x_files, api_name="export_figures")
        x_rep.click(gx.export_report, [state, fr_budget], x_files, api_name="export_report")
        delta_btn.click(h.compute_delta_plot, [state], **ev, api_name="delta", **RUN)
        train_ev = t_start.click(gradio_training.train_mask, [state, t_lam, t_use, t_budget, t_iters, t_batch, label, guidance],
                                 views + [t_plot, t_md], api_name="train", **TRAIN)
        t_cancel.click(gradio_training.cancelled, None, t_md, cancels=[train_ev], api_name=False)
    return demo


def queued(demo: gr.Blocks) -> gr.Blocks:
    """The app with its queue (QUEUE; the heavy events carry their own limits, RUN and TRAIN)."""
    return demo.queue(**QUEUE)


def pick_port(host: str, port: int) -> int:
    """``port`` when it is free, else a free one (said on stdout) — a busy port never ends the app."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds (TIME_WAIT is free)
        try:
            s.bind((host, port))
            return port
        except OSError:
            pass
    with socket.socket() as s:
        s.bind((host, 0))
        free = s.getsockname()[1]
    print(f"Port {port} is busy; serving on port {free} instead (choose one with --port or GRADIO_SERVER_PORT).")
    return free


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="blockmask Gradio demo")
    ap.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    ap.add_argument("--allow-model", action="append", default=[], metavar="SPEC",
                    help=f"also offer this folder, config:FILE.json or hub id (repeatable; or ${ENV_ALLOW}=a,b; "
                         "'*' lets visitors type any spec — never on a public Space)")
    ap.add_argument("--allow-mask", action="append", default=[], metavar="ID",
                    help=f"let visitors load masks from this hub repo id, folder or prefix ending in / "
                         f"(repeatable; or ${ENV_ALLOW_MASKS}=a,b; '*' = any)")
    a = ap.parse_args(argv)
    h.ALLOW_EXTRA[:] = a.allow_model
    h.ALLOW_MASKS[:] = a.allow_mask
    port = pick_port(a.host, a.port)
    queued(build()).launch(server_name=a.host, server_port=port, max_file_size=MAX_UPLOAD_BYTES)


if __name__ == "__main__":
    main()
