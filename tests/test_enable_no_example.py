"""Zero-forward setup (issue 27, "What to build" 4): a U-Net whose example inputs blockmask cannot synthesise
(here ``addition_embed_type="text"``, which blockmask's own sampler refuses) still works through
``blockmask.enable``: its units take diffusers' U-Net forward order, known without a forward, and that order is
the measured one on every U-Net we can measure."""

import json

import pytest
import torch

import blockmask
from blockmask.adapters import adapter_for
from blockmask.adapters.unet import unet_order
from blockmask.hooks.costs import count_macs
from blockmask.core.errors import BlockmaskError
from blockmask.hooks.discover import discover_units

from test_enable import hooks_left
from tiny_pipes import CONFIGS, FAMILIES, _emb, _model, _pipe, _runner


@pytest.mark.parametrize("name", ["tiny-unet", "tiny-unet-cond", "tiny-sdxl-unet", "tiny-unet-mnist"])
def test_static_unet_order_is_the_measured_order(name):
    model = _model(name)
    names = [n for n, _, _ in adapter_for(model).unit_candidates(model)]
    measured = [u.name for u in discover_units(model)]
    assert [names[i] for i in unet_order(names)] == measured


def _text_embed_unet():
    import diffusers

    cfg = json.loads((CONFIGS / "tiny-unet-cond.json").read_text())
    cfg.pop("_class_name")
    torch.manual_seed(0)
    return diffusers.UNet2DConditionModel.from_config({**cfg, "addition_embed_type": "text", "addition_embed_type_num_heads": 2}).eval().requires_grad_(False)


def test_a_unet_without_example_inputs_works_through_enable():
    from diffusers import DDIMScheduler

    unet = _text_embed_unet()
    with pytest.raises(BlockmaskError, match="addition_embed_type='text'"):  # blockmask cannot synthesise its inputs
        adapter_for(unet).conditioning(unet, 1)
    pipe = _pipe("StableDiffusionPipeline", vae=None, text_encoder=None, tokenizer=None, unet=unet,
                 scheduler=DDIMScheduler(clip_sample=False), safety_checker=None, feature_extractor=None,
                 requires_safety_checker=False)
    run = _runner(pipe, height=64, width=64, guidance_scale=2.0, prompt_embeds=_emb(1, 4, 24),
                  negative_prompt_embeds=_emb(1, 4, 24, seed=2))
    plain = run(6)
    macs_plain, _ = count_macs(lambda: run(6))
    blockmask.enable(pipe, "ones")
    try:
        assert torch.equal(run(6), plain)
    finally:
        blockmask.disable(pipe)
    blockmask.enable(pipe, "deepcache:2")
    try:
        macs, out = count_macs(lambda: run(6))
    finally:
        blockmask.disable(pipe)
    assert not torch.equal(out, plain) and torch.isfinite(out).all() and macs < macs_plain
    assert hooks_left(pipe) == [] and torch.equal(run(6), plain)


@pytest.mark.parametrize("name", ["tiny-dit", "tiny-pixart", "tiny-pixart-sigma"])
def test_static_transformer_order_is_the_measured_order(name):
    model = _model(name)
    names = [n for n, _, _ in adapter_for(model).unit_candidates(model)]
    static = adapter_for(model).static_order(names)
    measured = [u.name for u in discover_units(model)]
    assert static is not None and [names[i] for i in static] == measured
    assert measured.index("transformer_blocks.0.attn1") < measured.index("transformer_blocks.0")  # inner first


def _forward_counter(pipe):
    from blockmask.hooks.enable import denoisers

    calls, handles = [], []
    for _, model in denoisers(pipe):
        model.__dict__.pop("_blockmask_units", None)  # nothing known before enable
        handles.append(model.register_forward_pre_hook(lambda *a: calls.append(1)))
    return calls, handles


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_enable_runs_no_forward_and_the_first_call_checks_the_order(family):
    """Issue 27 item 4: no synthetic forward at enable on any family; the pipeline's first real call
    (all units computed) confirms the order the mask's columns follow."""
    pipe, run = FAMILIES[family]()
    calls, handles = _forward_counter(pipe)
    try:
        blockmask.enable(pipe, "ones")
        assert calls == [], f"{family}: enable ran {len(calls)} forward(s)"
        run(3)
        assert calls and blockmask.summary(pipe).steps == 3
    finally:
        blockmask.disable(pipe)
        for h in handles:
            h.remove()
    assert hooks_left(pipe) == []


def test_a_wrong_order_is_caught_by_the_first_call_and_the_measured_one_kept(monkeypatch):
    from blockmask.adapters.transformer import PixArtAdapter

    pipe, run = FAMILIES["pixart-sigma"]()
    model = pipe.transformer
    model.__dict__.pop("_blockmask_units", None)
    right = [u.name for u in discover_units(model)]
    model.__dict__.pop("_blockmask_units", None)

    def swapped(self, names):
        order = [names.index(n) for n in right]
        order[0], order[1] = order[1], order[0]
        return order

    monkeypatch.setattr(PixArtAdapter, "static_order", swapped)
    blockmask.enable(pipe, "fora:2")
    with pytest.raises(BlockmaskError, match="another order"):
        run(4)
    assert hooks_left(pipe) == []  # disabled, in one line
    assert [u.name for u in model._blockmask_units] == right  # the measured order is kept
    blockmask.enable(pipe, "fora:2")
    try:
        run(4)
    finally:
        blockmask.disable(pipe)
