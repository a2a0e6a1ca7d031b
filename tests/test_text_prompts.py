"""Prompt lists (text) for text models in blockmask's own sampler, the CLI and both apps (issue 27): encoded by
the text encoder of the pipeline the model was loaded from (bitwise its own encode_prompt, the denoiser not
loaded again); a model without one is refused in one line; random embeddings only when asked, with a warning."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from blockmask.workbench import Workbench
from blockmask.cli.main import main
from blockmask.core.errors import BlockmaskError, BlockmaskWarning, OptionError
from blockmask.sampling import prompting
from blockmask.viz.context import Draw
from blockmask.viz.training import TrainSettings

from conftest import tiny_spec
from tiny_pipes import sd_text

APP = Path(__file__).resolve().parents[1] / "app"
COND = tiny_spec("tiny-unet-cond")  # a text U-Net without a text encoder (config: random init)


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory):
    """A StableDiffusionPipeline folder (tiny random CLIP text encoder + tokenizer, U-Net, VAE, DDIM)."""
    pipe, _ = sd_text()
    d = tmp_path_factory.mktemp("sd-text")
    pipe.save_pretrained(d)
    return pipe, str(d)


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_prompt_lists_parse_and_refuse_in_one_line(tmp_path):
    assert prompting.parse_prompts("a cat\n\n  # a comment\n a dog  \n") == ["a cat", "a dog"]
    for text, words in [("", "no prompt"), ("# only\n\n", "no prompt"), ("x" * 2001, "at most 2000"),
                        ("\n".join(["p"] * 257), "at most 256")]:
        with pytest.raises(OptionError, match=words) as e:
            prompting.parse_prompts(text)
        assert "\n" not in str(e.value)
    with pytest.raises(OptionError, match="control characters"):
        prompting.check_prompts(["a\x00cat"])
    f = tmp_path / "p.txt"
    f.write_bytes(b"\xff\xfe")
    with pytest.raises(BlockmaskError, match="not UTF-8"):
        prompting.read_prompt_file(f)
    with pytest.raises(BlockmaskError, match="not found"):
        prompting.read_prompt_file(tmp_path / "nope.txt")


def test_prompts_are_encoded_by_the_pipelines_own_text_encoder(sd_folder, monkeypatch):
    pipe, folder = sd_folder
    wb = Workbench.load(folder)
    import diffusers

    def refuse(*_a, **_k):
        raise AssertionError("the denoiser was loaded a second time")

    monkeypatch.setattr(diffusers.UNet2DConditionModel, "from_pretrained", classmethod(refuse))
    emb, neg = prompting.encode_prompts(wb, ["a photo of a cat", "a dog"])
    ref, ref_neg = pipe.encode_prompt(["a photo of a cat", "a dog"], "cpu", 1, True, None)
    assert torch.equal(emb, ref) and torch.equal(neg, ref_neg)  # bitwise the pipeline's own encoding
    tp = wb.loaded._text_pipeline
    assert tp.unet is wb.model and prompting.text_pipeline(wb) is tp  # loaded once, the same denoiser


def test_images_cycle_through_the_prompts_and_the_prompt_matters(sd_folder):
    _, folder = sd_folder
    wb = Workbench.load(folder)

    def images(prompts):
        c = prompting.condition_for(wb, prompts=prompts, guidance_scale=2.0)
        return wb.generate(None, steps=3, seed=0, num_images=3, condition=c)

    ab, aa, dd = images(["a cat", "a dog"]), images(["a cat"]), images(["a dog"])
    assert torch.equal(ab[0], aa[0]) and torch.equal(ab[2], aa[2])  # image i takes prompt i mod P
    assert torch.equal(ab[1], dd[1]) and not torch.equal(ab[1], aa[1])


def test_condition_sources_one_at_a_time_random_only_when_asked(workbenches):
    cond, unet = workbenches("tiny-unet-cond"), workbenches("tiny-unet")
    with pytest.raises(OptionError, match="is a text model.*random_prompts=True"):
        prompting.condition_for(cond)
    with pytest.raises(OptionError, match="has no text encoder here.*prompt embeddings"):
        prompting.condition_for(cond, prompts=["a cat"])
    with pytest.raises(OptionError, match="give one of"):
        prompting.condition_for(cond, prompts=["a cat"], random_prompts=True)
    with pytest.raises(OptionError, match="not text-conditioned"):
        prompting.condition_for(unet, prompts=["a cat"])
    with pytest.warns(BlockmaskWarning, match="random prompt embeddings"):
        c = prompting.condition_for(cond, random_prompts=True, guidance_scale=2.0)
    assert c.prompt_embeds is None and c.guidance_scale == 2.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", BlockmaskWarning)
        assert prompting.condition_for(unet).prompt_embeds is None  # nothing to condition on: no warning


def test_cli_prompts_on_a_pipeline_folder(sd_folder, tmp_path, capsys):
    _, folder = sd_folder
    (tmp_path / "p.txt").write_text("a cat\n# skipped\n\na dog\n")
    rc, _, err = run(capsys, "sample", folder, "--steps", 3, "--prompts", tmp_path / "p.txt", "--guidance-scale", 2,
                     "--num-images", 2, "-o", tmp_path / "a")
    assert rc == 0, err
    rc, _, err = run(capsys, "sample", folder, "--steps", 3, "--prompt", "a cat", "--prompt", "a dog",
                     "--guidance-scale", 2, "--num-images", 2, "-o", tmp_path / "b")
    assert rc == 0, err
    a, b = np.load(tmp_path / "a" / "samples.npy"), np.load(tmp_path / "b" / "samples.npy")
    assert np.array_equal(a, b) and "warning" not in err
    rc, _, err = run(capsys, "sample", folder, "--steps", 3, "--prompt", "a dog", "--guidance-scale", 2,
                     "--num-images", 2, "-o", tmp_path / "c")
    assert rc == 0 and not np.array_equal(a[0], np.load(tmp_path / "c" / "samples.npy")[0])  # the prompt matters
    rc, out, err = run(capsys, "train", folder, "--steps", 3, "--iters", 2, "--batch", 2, "--prompt", "a cat",
                       "--no-refine", "-o", tmp_path / "m.json")
    assert rc == 0 and (tmp_path / "m.json").is_file(), err
    rc, _, err = run(capsys, "bench", folder, "--steps", 3, "--mask", tmp_path / "m.json", "--prompt", "a cat",
                     "--repeats", 1, "--warmup", 0)
    assert rc == 0, err


@pytest.mark.parametrize("argv,words", [
    (["sample", COND, "--steps", 2], "is a text model: give prompts (--prompt TEXT / --prompts FILE)"),
    (["sample", COND, "--steps", 2, "--prompt", "a cat"], "has no text encoder here"),
    (["sample", tiny_spec("tiny-unet"), "--steps", 2, "--prompt", "a cat"], "not text-conditioned"),
    (["sample", COND, "--steps", 2, "--prompt", "a cat", "--random-prompts"], "give one of"),
    (["sample", COND, "--steps", 2, "--prompts", "{tmp}/empty.txt"], "no prompt given"),
    (["sample", COND, "--steps", 2, "--prompt", ""], "prompt 1 is empty"),
    (["train", COND, "--steps", 2, "--iters", 1], "is a text model"),
    (["plan", COND, "--budget", 0.5], "--random-prompts"),
    (["eval", COND, "--steps", 2, "--num-samples", 2], "--random-prompts"),
    (["method", "feature-change", COND, "--steps", 2, "--target-macs", 0.5], "is a text model"),
])
def test_cli_text_models_need_a_prompt_source(argv, words, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    argv = [str(a).replace("{tmp}", str(tmp_path)) for a in argv] + ["-o", tmp_path / "out"] * (argv[0] != "plan")
    rc, out, err = run(capsys, *argv)
    assert rc == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_cli_random_prompts_warn_once(tmp_path, capsys):
    rc, _, err = run(capsys, "sample", COND, "--steps", 2, "--random-prompts", "--num-images", 1, "-o", tmp_path / "s")
    assert rc == 0 and err.count("warning: conditioning on random prompt embeddings") == 1
    rc, _, err = run(capsys, "sample", tiny_spec("tiny-unet"), "--steps", 2, "--random-prompts", "-o", tmp_path / "u")
    assert rc == 2 and "not text-conditioned: drop --random-prompts" in err


def test_cli_help_names_the_prompt_options():
    from blockmask.cli.main import build_parser

    text = build_parser()._subparsers._group_actions[0].choices["sample"].format_help()
    assert "--prompts FILE" in text and "--random-prompts" in text and "--prompt TEXT" in text


# --- the apps ----------------------------------------------------------------------------------------
def test_presenter_pick_and_note(sd_folder):
    from blockmask.viz import prompts
    from blockmask.viz.context import load_context

    ctx = load_context(COND, device="cpu")
    assert "type prompts" in prompts.note(ctx) and prompts.pick(ctx) is None
    with pytest.raises(BlockmaskError, match="this is a text model"):
        prompts.condition(ctx, None, 1.0, None)
    with pytest.raises(BlockmaskError, match="has no text encoder here.*'Random embeddings'"):
        prompts.pick(ctx, text="a cat")
    with pytest.raises(BlockmaskError, match="one prompt source at a time"):
        prompts.pick(ctx, text="a cat", random=True)
    assert prompts.pick(ctx, random=True) is prompts.RANDOM and "Random embeddings" in prompts.note(ctx, random=True)
    assert "Two prompt sources" in prompts.note(ctx, text="a cat", random=True)
    tc = load_context(sd_folder[1], device="cpu")
    cache = {}
    p = prompts.pick(tc, text="a cat\na dog", cache=cache)
    assert p.texts == ("a cat", "a dog") and "“a cat” and 1 more" in p.label
    assert prompts.pick(tc, text="a cat\na dog", cache=cache) is p  # encoded once per user
    assert "2 typed prompt(s)" in prompts.note(tc, text="a cat\na dog")


@pytest.fixture
def gradio_handlers(monkeypatch, sd_folder):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("BLOCKMASK_APP_MODEL", tiny_spec("tiny-unet"))
    monkeypatch.setenv("BLOCKMASK_APP_ALLOW", f"{COND},{sd_folder[1]}")
    sys.path.insert(0, str(APP))
    import gradio_handlers as h

    return h


def test_gradio_prompts_box_and_random_embeddings(gradio_handlers):
    import gradio as gr

    h, noop = gradio_handlers, (lambda *a, **k: None)
    s = h.new_session(tiny_spec("tiny-unet"), 3)
    out = h.load_model(s, "tiny-unet-cond", 3, "ddim")
    s, text_box, random_box, note = out[0], out[-6], out[-5], out[-4]
    assert text_box["visible"] is True and random_box["visible"] is True and "type prompts" in note
    with pytest.raises(gr.Error, match="this is a text model"):
        h.generate(s, 0, 1, 0, 1.0, 1, progress=noop)
    s, _ = h.set_prompt_text(s, "a cat")
    with pytest.raises(gr.Error, match="no text encoder here"):
        h.generate(s, 0, 1, 0, 1.0, 1, progress=noop)
    with pytest.warns(UserWarning, match="Random embeddings"):
        s, note = h.set_random_prompts(s, True)
    with pytest.raises(gr.Error, match="one prompt source at a time"):
        h.generate(s, 0, 1, 0, 1.0, 1, progress=noop)
    s, note = h.set_prompt_text(s, "")
    assert "Random embeddings" in note
    with pytest.warns(UserWarning, match="Random embeddings"):
        res = h.generate(s, 0, 1, 0, 1.0, 1, progress=noop)
    assert "random embeddings" in res[4]
    plain = h.load_model(s, "tiny-unet", 3, "ddim")
    assert plain[-6]["visible"] is False and plain[-5]["visible"] is False  # no prompt boxes for other models


def test_gradio_typed_prompts_reach_the_model(gradio_handlers, sd_folder):
    h, noop = gradio_handlers, (lambda *a, **k: None)
    s = h.load_model(h.new_session(tiny_spec("tiny-unet"), 3), Path(sd_folder[1]).name, 3, "ddim")[0]
    images = []
    for text in ("a cat", "a dog"):
        s, note = h.set_prompt_text(s, text)
        assert "1 typed prompt(s)" in note
        res = h.generate(s, 0, 1, 0, 2.0, 1, progress=noop)
        assert f"“{text}”" in res[4]
        images.append(np.asarray(res[1]))
    assert not np.array_equal(images[0], images[1])


def test_streamlit_prompts_box_and_random_embeddings(monkeypatch, sd_folder):
    from streamlit.testing.v1 import AppTest

    def app(model):
        monkeypatch.setenv("BLOCKMASK_APP_MODEL", model)
        at = AppTest.from_file(str(APP / "main.py"), default_timeout=240)
        at.session_state["steps"] = 3
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        return at

    def generate(at):
        next(b for b in at.button if b.key == "generate").click().run()
        assert not at.exception, [e.value for e in at.exception]

    at = app(COND)
    assert any(t.key == "prompt_text" for t in at.text_area)
    generate(at)
    assert any("this is a text model" in e.value for e in at.error) and "result" not in at.session_state
    at.text_area(key="prompt_text").set_value("a cat").run()
    assert any("no text encoder here" in e.value for e in at.error)
    at.text_area(key="prompt_text").set_value("").run()
    at.checkbox(key="random_prompts").check().run()
    assert any("Random embeddings" in w.value for w in at.warning)
    generate(at)
    assert "result" in at.session_state and not at.error
    at = app(sd_folder[1])
    images = []
    for text in ("a cat", "a dog"):
        at.text_area(key="prompt_text").set_value(text).run()
        assert any("1 typed prompt(s)" in c.value for c in at.caption)
        generate(at)
        assert not at.error, [e.value for e in at.error]
        images.append(at.session_state["result"][1].original)
    assert not np.array_equal(images[0], images[1])


def test_app_training_delta_and_method_presets_run_on_the_prompt(sd_folder):
    from blockmask.viz import presets, prompts, training
    from blockmask.viz.context import load_context

    ctx = load_context(COND, device="cpu")
    with pytest.raises(BlockmaskError, match="this is a text model"):
        training.train(ctx, TrainSettings(3, iters=1, batch=1))
    mask, _, _ = training.train(ctx, TrainSettings(3, iters=1, batch=1), Draw(prompt=prompts.RANDOM))
    assert mask.shape == (3, ctx.n_units)
    from blockmask.viz.compare import compute_delta

    with pytest.raises(BlockmaskError, match="this is a text model"):  # the Δ_k plot's unmasked run too
        compute_delta(ctx, 3)
    assert compute_delta(ctx, 3, prompt=prompts.RANDOM).shape == (3,)
    tc = load_context(sd_folder[1], device="cpu")
    p = prompts.pick(tc, text="a cat")
    mask, _, _ = training.train(tc, TrainSettings(3, iters=1, batch=2), Draw(guidance_scale=2.0, prompt=p))
    assert mask.shape == (3, tc.n_units) and mask[0].all()
    mask, source, _ = presets.build(tc, "method:feature-change", 3, macs_ratio=0.7, seed=0, prompt=p)
    assert "Feature-change" in source
