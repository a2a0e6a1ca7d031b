"""The latent models (mnist-ldm: AutoencoderKL + UNet2DConditionModel; mnist-pixart: the same VAE +
PixArtTransformer2DModel), classes as learned cross-attention tokens: folders written by
scripts/train_latent.py load in blockmask, sample with masks (all-ones bitwise plain, rectification
exact), run in diffusers' StableDiffusionPipeline / PixArtAlphaPipeline with the same images, and bad
input gets one error line. Tiny random-weight versions from the script's own builders; the trained
models' quality test is in tests/test_data_models.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import blockmask
from blockmask.workbench import Workbench
from blockmask.cli.main import main as cli
from blockmask.core.errors import BlockmaskError, FileFormatError, OptionError
from conftest import ROOT, needs_mnist

sys.path.insert(0, str(ROOT / "scripts"))
import train_latent as tl  # noqa: E402  (scripts/train_latent.py: the builders and the folder writer)

KINDS = ["ldm", "pixart"]
STEPS = 4


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight mnist-ldm / mnist-pixart folders written by the training script's own writer."""
    root = tmp_path_factory.mktemp("latent")
    torch.manual_seed(0)
    vae = tl.build_vae("tiny")
    out = {}
    for kind in KINDS:
        out[kind] = root / f"mnist-{kind}"
        tl.save_pipeline_folder(kind, tl.ClassTokenDenoiser.new(kind, "tiny"), vae, out[kind], guidance=2.0,
                                extra_files={})
    return out


@pytest.fixture(scope="module")
def wbs(folders):
    return {kind: Workbench.load(str(folder)) for kind, folder in folders.items()}


def _images(wb, labels, guidance, mask=None, seed=0):
    lat = wb.generate(mask, steps=STEPS, seed=seed, num_images=len(labels),
                      condition=wb.condition(class_label=labels, guidance_scale=guidance))
    return wb.images(lat)


@pytest.mark.parametrize("kind", KINDS)
def test_folder_loads_as_class_conditional_latent_model(kind, wbs):
    wb = wbs[kind]
    kinds = {u.kind for u in wb.units}
    want = {"resnet", "attn", "downsample", "upsample"} if kind == "ldm" else {"self-attn", "cross-attn", "ff", "block"}
    assert kinds == want
    assert wb.loaded.vae is not None and wb.default_guidance == 2.0
    from blockmask.adapters import adapter_for

    ad = adapter_for(wb.model)
    assert ad.num_classes(wb.model) == 10 and not ad.is_text_conditioned(wb.model)
    assert wb.macs.full_step > 0 and wb.macs.ratio(np.ones((STEPS, len(wb.units)), bool)) == 1.0
    # the folder is also what diffusers' DiffusionPipeline loads (text parts passed as None)
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(wb.loaded.spec), text_encoder=None, tokenizer=None)
    assert type(pipe).__name__ == tl.PIPELINE_CLASS[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_masked_sampling_ones_bitwise_and_rectification_exact(kind, wbs):
    wb = wbs[kind]
    labels = [3, 7]
    plain = _images(wb, labels, 2.0)
    assert plain.shape == (2, 1, 32, 32) and 0 <= plain.min() and plain.max() <= 1
    assert torch.equal(plain, _images(wb, labels, 2.0, mask=np.ones((STEPS, len(wb.units)), bool)))
    m = np.random.default_rng(1).random((STEPS, len(wb.units))) < 0.6
    m[0] = True
    r = wb.rectify(m)
    assert (r.mask <= m).all()
    masked = _images(wb, labels, 2.0, mask=m)
    assert torch.equal(masked, _images(wb, labels, 2.0, mask=r.mask))
    assert not torch.equal(masked, plain)
    # the class is what conditions the samples: another label, other images
    assert not torch.equal(plain, _images(wb, [4, 7], 2.0))


@pytest.mark.parametrize("kind", KINDS)
def test_diffusers_pipeline_with_prompt_embeds_is_bitwise_ours(kind, wbs):
    from blockmask.pipelines import class_prompt_embeds, ldm_pipeline, pixart_pipeline

    wb = wbs[kind]
    pipe = ldm_pipeline(wb) if kind == "ldm" else pixart_pipeline(wb)
    assert pipe.text_encoder is None and pipe.tokenizer is None
    extra = {"use_resolution_binning": False} if kind == "pixart" else {}
    labels = [3, 7]

    def run(g):
        return pipe(**class_prompt_embeds(pipe, labels), guidance_scale=g, num_inference_steps=STEPS,
                    generator=torch.Generator().manual_seed(0), output_type="np", **extra).images

    for g in (1.0, 2.0):
        assert np.array_equal(run(g), _images(wb, labels, g).permute(0, 2, 3, 1).numpy())
    m = np.ones((STEPS, len(wb.units)), bool)
    m[2:, :3] = False
    with blockmask.apply(pipe, m):
        masked = run(2.0)
    assert np.array_equal(masked, _images(wb, labels, 2.0, mask=m).permute(0, 2, 3, 1).numpy())
    with pytest.raises(OptionError, match="class labels must be integers in 0..9"):
        class_prompt_embeds(pipe, [10])



def test_pipeline_helpers_refuse_other_models(wbs, workbenches):
    from blockmask.core.errors import UnsupportedModelError
    from blockmask.pipelines import class_prompt_embeds, ldm_pipeline, pixart_pipeline

    with pytest.raises(UnsupportedModelError, match="takes a PixArtTransformer2DModel, not UNet2DConditionModel"):
        pixart_pipeline(wbs["ldm"])
    text_unet = workbenches("tiny-unet-cond")  # a text U-Net: no class tokens
    with pytest.raises(BlockmaskError, match="no class tokens"):
        ldm_pipeline(text_unet)
    with pytest.raises(BlockmaskError, match="has no class tokens"):
        class_prompt_embeds(text_unet.model, [3])


def test_bundled_list_follows_assets_and_apps_offer_them(folders, tmp_path, monkeypatch, capsys):
    """Bundled models are the folders of assets/models with weights: a folder still waiting for its
    weights is not listed; once there, the CLI and the apps' model list have it."""
    from blockmask.io.models import bundled_models
    from blockmask.viz.context import load_context, model_choices

    (tmp_path / "models").mkdir()
    monkeypatch.setenv("BLOCKMASK_ASSETS", str(tmp_path))
    waiting = tmp_path / "models" / "mnist-pixart"
    waiting.mkdir()
    (waiting / "model_index.json").write_text(json.dumps({"_class_name": "PixArtAlphaPipeline"}))
    assert bundled_models() == []
    shutil.copytree(folders["ldm"], tmp_path / "models" / "mnist-ldm")
    assert bundled_models() == ["mnist-ldm"] and "mnist-ldm" in model_choices()
    ctx = load_context("mnist-ldm", "ddim", device="cpu")
    assert ctx.num_classes == 10 and not ctx.takes_text and ctx.default_guidance == 2.0
    capsys.readouterr()
    assert cli(["info", "mnist-ldm", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["num_classes"] == 10 and info["vae"] and info["default_guidance"] == 2.0 and info["num_units"] == 22


def test_cli_sample_and_train_use_the_models_default_guidance(folders, wbs, tmp_path, capsys):
    assert cli(["sample", str(folders["ldm"]), "--steps", str(STEPS), "--num-images", "2", "--class-label", "3",
                "-o", str(tmp_path / "out")]) == 0
    got = np.load(tmp_path / "out" / "samples.npy")
    assert np.array_equal(got, _images(wbs["ldm"], [3, 3], 2.0).numpy())
    # masks are trained at the model's guidance too (unless --guidance-scale says otherwise)
    assert cli(["train", str(folders["ldm"]), "--steps", "3", "--iters", "1", "-o", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["meta"]["training"]["guidance_scale"] == 2.0


def _one_error_line(capsys, args, match):
    assert cli(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and match in err, err


def test_bad_inputs_one_line(folders, tmp_path, capsys):
    # class label out of range: API and CLI
    wb = Workbench.load(str(folders["pixart"]))
    with pytest.raises(OptionError, match="class label 10 is out of range"):
        wb.condition(class_label=10)
    _one_error_line(capsys, ["sample", str(folders["pixart"]), "--steps", "2", "--class-label", "10", "-o",
                             str(tmp_path / "o")], "class label 10 is out of range")
    # a missing folder
    _one_error_line(capsys, ["info", str(tmp_path / "nope" / "mnist-ldm")], "unknown model")
    # a folder whose blockmask.json names a token file that is not there
    broken = tmp_path / "no-tokens"
    shutil.copytree(folders["ldm"], broken)
    (broken / tl.TOKEN_FILE).unlink()
    with pytest.raises(BlockmaskError, match="class token file class_tokens.safetensors is missing"):
        Workbench.load(str(broken))
    _one_error_line(capsys, ["info", str(broken)], "class token file class_tokens.safetensors is missing")
    # tokens of the wrong width, or not a tensor file
    from safetensors.torch import save_file

    save_file({"class_tokens": torch.zeros(11, 2, 5)}, str(broken / tl.TOKEN_FILE))
    with pytest.raises(FileFormatError, match="token width 5 does not fit UNet2DConditionModel"):
        Workbench.load(str(broken))
    (broken / tl.TOKEN_FILE).write_bytes(b"not safetensors")
    _one_error_line(capsys, ["info", str(broken)], "not a safetensors file")
    # a bad default guidance in blockmask.json
    shutil.copy(folders["ldm"] / tl.TOKEN_FILE, broken / tl.TOKEN_FILE)
    info = json.loads((broken / "blockmask.json").read_text())
    (broken / "blockmask.json").write_text(json.dumps({**info, "default_guidance_scale": "high"}))
    _one_error_line(capsys, ["sample", str(broken), "--steps", "2", "-o", str(tmp_path / "o2")],
                    "'default_guidance_scale' must be a number")
    assert not (tmp_path / "o2" / "grid.png").exists()


@needs_mnist
@pytest.mark.slow
def test_training_script_stages_end_to_end(tmp_path):
    """scripts/train_latent.py: vae -> ldm (then continued with --init) -> pixart, tiny sizes, a few steps
    each on the CPU; every stage writes a folder that loads."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def run(*args):
        r = subprocess.run([sys.executable, str(ROOT / "scripts/train_latent.py"), "--size", "tiny", "--batch", "4",
                            "--data-limit", "64", "--no-grid", "--device", "cpu", *args],
                           capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, r.stderr[-1500:]
        return r.stdout

    run("--stage", "vae", "--max-steps", "3", "--out", str(tmp_path / "vae"))
    vae_meta = json.loads((tmp_path / "vae" / "training.json").read_text())
    assert vae_meta["final"] and vae_meta["steps"] == 3 and vae_meta["loss_terms_first_step"]["rec"] > 0
    sf = json.loads((tmp_path / "vae" / "config.json").read_text())["scaling_factor"]
    assert sf == pytest.approx(vae_meta["latent_stats"]["scaling_factor"], abs=1e-6) and sf != 0.18215
    assert vae_meta["recon_mse"]["start"] > 0 and vae_meta["recon_mse"]["end_ema"] > 0
    run("--stage", "ldm", "--max-steps", "2", "--vae", str(tmp_path / "vae"), "--out", str(tmp_path / "ldm"))
    run("--stage", "ldm", "--max-steps", "1", "--vae", str(tmp_path / "vae"), "--init", str(tmp_path / "ldm"),
        "--out", str(tmp_path / "ldm2"))
    assert json.loads((tmp_path / "ldm2" / "training.json").read_text())["total_steps_including_init"] == 3
    run("--stage", "pixart", "--max-steps", "2", "--vae", str(tmp_path / "ldm"), "--out", str(tmp_path / "pixart"))
    for kind in ("ldm2", "pixart"):
        assert json.loads((tmp_path / kind / "vae" / "training.json").read_text())["stage"] == "vae"  # provenance
        wb = Workbench.load(str(tmp_path / kind))
        assert wb.loaded.vae.config.scaling_factor == sf
        assert wb.images(wb.generate(None, steps=2, num_images=1, condition=wb.condition(class_label=5))).shape == \
            (1, 1, 32, 32)
    assert not list(tmp_path.glob("*.tmp-*")) and not list(tmp_path.glob("*.old-*"))  # atomic: no leftovers


def test_gradio_app_offers_and_runs_the_latent_models(folders, tmp_path, monkeypatch):
    """With both folders in the assets, the app's model picker has them; picking one shows the class label
    (0-9) and the model's guidance, no prompt upload, and the class reaches the images."""
    import warnings

    (tmp_path / "models").mkdir()
    for kind in KINDS:
        shutil.copytree(folders[kind], tmp_path / "models" / f"mnist-{kind}")
    monkeypatch.setenv("BLOCKMASK_ASSETS", str(tmp_path))
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", "mnist-ldm")
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW", raising=False)
    warnings.simplefilter("ignore")
    sys.path.insert(0, str(ROOT / "app"))
    import gradio_handlers as h
    from blockmask.viz.access import LRU

    monkeypatch.setattr(h, "_MODELS", LRU())  # this test's tiny models stay out of the app's shared cache
    monkeypatch.setattr(h, "_SCHEDULED", LRU(8))
    values = [v for _, v in h.model_dropdown()[0]]
    assert {"mnist-ldm", "mnist-pixart"} <= set(values)
    s = h.new_session("mnist-ldm", STEPS)
    out = h.load_model(s, "mnist-pixart", STEPS, "ddim")
    s2, prompt, lab, gui = out[0], out[-3], out[-2], out[-1]
    assert lab["visible"] and lab["label"] == "Class label (0–9)" and gui["value"] == 2.0 and not prompt["visible"]
    noop = lambda *a, **k: None  # noqa: E731 — a gr.Progress stand-in
    _, a, *_ = h.generate(s2, 0, 1, 1, 2.0, 1, progress=noop)
    _, b, *_ = h.generate(s2, 0, 1, 2, 2.0, 1, progress=noop)
    assert not np.array_equal(a, b)


def test_streamlit_app_runs_a_latent_model(folders, monkeypatch):
    """The Streamlit app on a latent model: class label and guidance inputs, no prompt upload; generating
    decodes through the VAE without an error."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("BLOCKMASK_APP_MODEL", str(folders["pixart"]))
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=240)
    at.session_state["steps"] = STEPS
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert {"label", "guidance"} <= {n.key for n in at.number_input}
    assert not any("prompt embeddings" in c.value.lower() for c in at.caption)  # no prompt-embeddings panel
    guidance = next(n for n in at.number_input if n.key == "guidance")
    assert guidance.value == 2.0
    next(n for n in at.number_input if n.key == "label").set_value(4).run()
    next(b for b in at.button if b.key == "generate").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.session_state["result"][1].macs_original > 0


@pytest.mark.parametrize("name", ["mnist-ldm", "mnist-pixart"])
def test_both_apps_run_the_shipped_latent_models_with_their_masks(name, monkeypatch):
    """The shipped models in both apps: the guidance field starts at the model's own default (2),
    the K=50 Pareto masks are presets, and generating with one (class label set) gives decoded
    digits whose MACs are the mask's, not the plain run's (class fidelity: tests/test_data_models.py)."""
    import gradio as gr  # noqa: F401  (the Gradio handlers need it)
    from streamlit.testing.v1 import AppTest

    bundled = ROOT / "assets" / "models" / name / "blockmask.json"
    if not bundled.exists():
        pytest.fail(f"{name} is not shipped (assets/models/{name})")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", name)
    at = AppTest.from_file(str(ROOT / "app" / "main.py"), default_timeout=240)
    at.session_state["steps"] = 50
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert next(n for n in at.number_input if n.key == "guidance").value == 2.0
    pick = next(s for s in at.selectbox if s.key == "preset_pick")
    b45 = next(o for o in pick.options if f"{name}-050steps-b45" in o)
    pick.select(b45).run()
    next(b for b in at.button if b.key == "load_preset").click().run()
    next(n for n in at.number_input if n.key == "label").set_value(3).run()
    next(b for b in at.button if b.key == "generate").click().run()
    assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
    out = at.session_state["result"][1]
    assert out.num_images == 2 and 32 <= out.masked.shape[0] < 64 and out.masked.max() > 200  # decoded digits
    assert 40 < out.macs_percent < 50 and out.psnr < float("inf")

    sys.path.insert(0, str(ROOT / "app"))
    import gradio_handlers as h

    monkeypatch.delenv("BLOCKMASK_APP_MODEL")
    s = h.new_session(name, 50)
    out = h.load_model(s, name, 50, "ddim")
    s, presets_update, gui = out[0], out[-7], out[-1]
    assert gui["value"] == 2.0
    key = next(v for label, v in presets_update["choices"] if "050steps-b45" in v)
    h.load_preset(s, key, 2, 0, 2, 0.5, 0)
    _, orig, masked, *_ = h.generate(s, 0, 2, 7, 2.0, 1, progress=lambda *a, **k: None)
    assert np.asarray(masked).shape[:2] == np.asarray(orig).shape[:2] and not np.array_equal(orig, masked)
