"""``blockmask.learn(pipe, ...)`` on tiny random-init pipelines: it runs the pipeline's own calls (text encoder,
CFG, scheduler), returns a mask within the budget that beats or ties every candidate it scored, writes nothing
unless asked, loads no model, leaves the pipeline unhooked; random embeddings only when asked, with a warning."""

import warnings

import numpy as np
import pytest
import torch

import blockmask
from blockmask import LearnSearch
from blockmask.core.errors import BlockmaskWarning, OptionError

from test_enable import hooks_left
from tiny_pipes import FAMILIES, sd_text

K = 8


@pytest.fixture(scope="module")
def ddpm(workbenches):
    from diffusers import DDIMScheduler, DDPMPipeline

    pipe = DDPMPipeline(unet=workbenches("tiny-unet").model, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def no_loading(monkeypatch):
    """Any model loaded (from a folder, the hub, or by blockmask) during the test fails it."""
    import diffusers
    import transformers

    def refuse(*_a, **_k):
        raise AssertionError("learn() loaded a model")

    for cls in (diffusers.ModelMixin, transformers.PreTrainedModel):
        monkeypatch.setattr(cls, "from_pretrained", classmethod(refuse))
    for where in ("blockmask.io.models.load_model", "blockmask.workbench.load_model"):  # defined, and where it is called
        monkeypatch.setattr(where, refuse)


def test_learn_on_an_unconditional_ddpm_pipeline(ddpm, tmp_path, monkeypatch, no_loading):
    monkeypatch.chdir(tmp_path)
    mf = blockmask.learn(ddpm, steps=K, search=LearnSearch(seeds=[0, 1]), budget=0.5)
    assert list(tmp_path.iterdir()) == [] and hooks_left(ddpm) == []  # nothing written, nothing hooked
    info = mf.meta["learn"]
    assert mf.mask.shape == (K, len(mf.units)) and mf.mask[0].all()
    assert info["macs_ratio"] <= 0.5 and info["error"] <= info["start_error"] + 1e-12
    assert info["start_error"] == min(c["error"] for c in info["candidates"].values())
    assert len(info["candidates"]) >= 3
    blockmask.enable(ddpm, mf)  # the learned mask runs through enable at its K, within the budget
    try:
        ddpm(num_inference_steps=K, generator=torch.Generator().manual_seed(0), output_type="np")
        s = blockmask.summary(ddpm)
    finally:
        blockmask.disable(ddpm)
    assert s.macs_fraction == pytest.approx(info["macs_ratio"]) and s.macs_fraction <= 0.5
    out = blockmask.learn(ddpm, steps=K, search=LearnSearch(seeds=[0, 1]), budget=0.5, output=tmp_path / "m.json")
    assert np.array_equal(blockmask.MaskFile.load(tmp_path / "m.json").mask, out.mask)
    assert np.array_equal(out.mask, mf.mask)  # deterministic


def test_learn_runs_the_text_pipelines_own_encoder_and_cfg(no_loading):
    pipe, _ = sd_text()
    calls = []
    enc_forward = pipe.text_encoder.forward
    pipe.text_encoder.forward = lambda *a, **k: (calls.append(1), enc_forward(*a, **k))[1]
    mf = blockmask.learn(pipe, prompts=["a photo of a cat", "a dog"], steps=6, search=LearnSearch(seeds=[0], passes=0),
                         budget=0.6, height=16, width=16, guidance_scale=2.0)
    assert calls and mf.meta["learn"]["conditioning"] == ["prompt"] and mf.meta["learn"]["macs_ratio"] <= 0.6
    assert hooks_left(pipe) == []
    with pytest.raises(OptionError, match="text pipeline: pass prompts"):
        blockmask.learn(pipe, steps=6, budget=0.6)


def test_random_embeddings_only_when_asked_and_with_a_warning():
    pipe, _ = FAMILIES["sd3"]()
    with pytest.raises(OptionError, match="prompts"):
        blockmask.learn(pipe, steps=4, budget=0.6, height=64, width=64)
    with pytest.warns(BlockmaskWarning, match="random prompt embeddings"):
        mf = blockmask.learn(pipe, random_embeddings=True, steps=4, search=LearnSearch(seeds=[0], passes=0),
                             budget=0.6, height=64, width=64,
                             guidance_scale=2.0)
    assert mf.meta["learn"]["random_embeddings"] and mf.mask.shape == (4, 2)
    with warnings.catch_warnings():  # given embeddings: no warning
        warnings.simplefilter("error", BlockmaskWarning)
        fam_kwargs = dict(prompt_embeds=torch.randn(1, 5, 16), negative_prompt_embeds=torch.randn(1, 5, 16),
                          pooled_prompt_embeds=torch.randn(1, 8), negative_pooled_prompt_embeds=torch.randn(1, 8))
        blockmask.learn(pipe, steps=4, search=LearnSearch(seeds=[0], passes=0),
                        budget=0.6, height=64, width=64, **fam_kwargs)


@pytest.mark.parametrize("kwargs,match", [({"budget": 0}, "budget"), ({"budget": float("nan")}, "budget"),
                                          ({"steps": 0}, "steps"), ({"prompts": "a cat"}, "list of strings"),
                                          ({"class_labels": [1]}, "no class_labels"), ({"budget": 0.01}, "out of reach"),
                                          ({"seeds": [0, 1]}, "search=blockmask.LearnSearch")])
def test_bad_input_is_one_line_and_unhooked(ddpm, kwargs, match):
    args = {"steps": K, "budget": 0.5, "search": LearnSearch(seeds=[0]), **kwargs}
    with pytest.raises(OptionError, match=match) as e:
        blockmask.learn(ddpm, **args)
    assert "\n" not in str(e.value) and hooks_left(ddpm) == []


def test_learn_refuses_an_enabled_pipeline(ddpm):
    blockmask.enable(ddpm, "fora:2")
    try:
        with pytest.raises(OptionError, match="disable"):
            blockmask.learn(ddpm, steps=K, budget=0.5)
    finally:
        blockmask.disable(ddpm)


def test_learn_with_class_labels_on_a_dit_pipeline(no_loading):
    from diffusers import DDIMScheduler

    from tiny_pipes import _model, _pipe

    pipe = _pipe("DiTPipeline", transformer=_model("tiny-dit"), vae=_model("tiny-vae"), scheduler=DDIMScheduler())
    mf = blockmask.learn(pipe, class_labels=[1, 3], steps=6, search=LearnSearch(seeds=[0]),
                         budget=0.6, guidance_scale=1.0)
    info = mf.meta["learn"]
    assert info["conditioning"] == ["class_labels"] and info["macs_ratio"] <= 0.6 and mf.mask.shape[0] == 6
    assert hooks_left(pipe) == []
    with pytest.raises(OptionError, match="non-negative integers"):
        blockmask.learn(pipe, class_labels=[-1], steps=6, budget=0.6)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_mask_learned_at_8_steps_runs_at_6_resampled(name, no_loading):
    """Issue 27's "a mask learned at K = 8 and resampled to K = 6 runs", with a mask from learn() itself."""
    pipe, run = FAMILIES[name]()
    mf = blockmask.learn(pipe, steps=8, search=LearnSearch(seeds=[0], passes=0), budget=0.7, **run.kwargs)
    assert mf.mask.shape[0] == 8 and len(mf.scheduler["timesteps"]) == 8 and mf.meta["learn"]["macs_ratio"] <= 0.7
    blockmask.enable(pipe, mf, resample=True)
    try:
        out = run(6)
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert s.steps == 6 and sum(s.skipped) > 0 and torch.isfinite(out).all() and hooks_left(pipe) == []
