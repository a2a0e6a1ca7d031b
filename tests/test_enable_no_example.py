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
from blockmask.costs import count_macs
from blockmask.errors import BlockmaskError
from blockmask.units import discover_units

from test_enable import hooks_left
from tiny_pipes import CONFIGS, _emb, _model, _pipe, _runner


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
