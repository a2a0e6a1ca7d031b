"""The presets are the real peers: DeepCache (PyPI ``DeepCache``) on a diffusers ``DDPMPipeline``
gives the same images, bit for bit, as blockmask's ``deepcache`` mask, for every branch id and
interval, and blockmask's MAC count equals a FlopCounter count of DeepCache's own run."""

import numpy as np
import pytest
import torch

import blockmask
from blockmask.hooks.costs import count_macs

from conftest import tiny_spec

DeepCache = pytest.importorskip("DeepCache")


def _pipe(wb):
    from diffusers import DDIMScheduler, DDPMPipeline

    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler.from_config(
        wb.loaded.scheduler.config if wb.loaded.scheduler is not None else {"num_train_timesteps": 1000}))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe, steps, batch=2):
    return pipe(batch_size=batch, num_inference_steps=steps, generator=torch.Generator().manual_seed(0),
                output_type="np").images


@pytest.fixture(scope="module")
def ddpm():
    from blockmask.workbench import Workbench

    return Workbench.load("mnist-ddpm")


@pytest.mark.slow
@pytest.mark.parametrize("branch", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("interval", [2, 3, 5])
def test_deepcache_preset_is_deepcache_bitwise(ddpm, branch, interval):
    pipe = _pipe(ddpm)
    steps, batch = 8, 2
    helper = DeepCache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    try:
        macs_dc, ref = count_macs(lambda: _run(pipe, steps, batch))
    finally:
        helper.disable()
    mask = ddpm.baseline("deepcache", steps=steps, interval=interval, branch=branch)
    with blockmask.apply(pipe, mask):  # also: apply() works after DeepCache's disable() on the same pipeline
        ours = _run(pipe, steps, batch)
    assert np.array_equal(ref, ours)
    assert ddpm.macs.total(mask) * batch == pytest.approx(macs_dc, rel=0.01)
    # blockmask's own sampler gives the same images too
    lat = ddpm.generate(mask, seed=0, num_images=batch)
    assert np.array_equal(ddpm.images(lat).permute(0, 2, 3, 1).numpy(), ref)


def test_deepcache_branch_rule_on_a_tiny_unet(workbenches):
    """Branch 0 runs only the last up-resnet (plus what always runs); higher branches add units
    from the output end; the mid block never runs on a cached step; bad branch ids are refused."""
    wb = workbenches("tiny-unet")
    names = wb.unit_names
    b0 = wb.baseline("deepcache", steps=4, interval=2, branch=0)
    shallow = {names[i] for i in np.flatnonzero(b0[1])}
    last_up = max(i for i, n in enumerate(names) if n.startswith("up_blocks") and ".resnets." in n)
    assert names[last_up] in shallow
    assert not any(n.startswith("mid_block") for n in shallow)
    prev = b0[1]
    for br in range(1, 6):
        row = wb.baseline("deepcache", steps=4, interval=2, branch=br)[1]
        assert (row >= prev).all()
        prev = row
    with pytest.raises(blockmask.core.errors.BlockmaskError, match="branch id"):
        wb.baseline("deepcache", steps=4, interval=2, branch=-1)
    with pytest.raises(blockmask.core.errors.BlockmaskError, match="branch id must be <"):
        wb.baseline("deepcache", steps=4, interval=2, branch=99)


def test_apply_after_deepcache_disable_on_tiny(workbenches):
    """DeepCache's disable() leaves instance forwards behind; apply() wraps and restores them."""
    from blockmask.workbench import Workbench

    wb = Workbench.load(tiny_spec("tiny-unet"))
    pipe = _pipe(wb)
    plain = _run(pipe, 4)
    helper = DeepCache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=2, cache_branch_id=0)
    helper.enable()
    _run(pipe, 4)
    helper.disable()
    with blockmask.apply(pipe, np.ones((4, len(wb.units)), bool)):
        again = _run(pipe, 4)
    assert np.array_equal(plain, again)
    after = _run(pipe, 4)  # the instance forwards DeepCache left are back in place
    assert np.array_equal(plain, after)


@pytest.mark.parametrize("branch,interval", [(0, 3), (1, 2), (2, 4)])
def test_deepcache_preset_is_deepcache_on_the_latent_unet(branch, interval):
    """mnist-ldm (UNet2DConditionModel, class tokens, guidance 2): the real DeepCache on its
    StableDiffusionPipeline gives the preset's images bit for bit, and blockmask's MACs equal a
    FlopCounter count of DeepCache's run (U-Net and VAE decode both counted, as in the run)."""
    from blockmask.workbench import Workbench
    from blockmask.pipelines import class_prompt_embeds, ldm_pipeline

    wb = Workbench.load("mnist-ldm")
    pipe = ldm_pipeline(wb)
    steps, labels, g = 8, [3, 7], 2.0

    def run():
        return pipe(**class_prompt_embeds(pipe, labels), guidance_scale=g, num_inference_steps=steps,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    helper = DeepCache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    try:
        macs_dc, ref = count_macs(run)
    finally:
        helper.disable()
    mask = wb.baseline("deepcache", steps=steps, interval=interval, branch=branch)
    cond = wb.condition(class_label=labels, guidance_scale=g)
    macs_ours, img = count_macs(lambda: wb.images(wb.generate(mask, seed=0, num_images=len(labels), condition=cond)))
    assert np.array_equal(img.permute(0, 2, 3, 1).numpy(), ref)
    assert macs_ours == pytest.approx(macs_dc, rel=0.01)
    # blockmask's own account (U-Net only, both CFG halves) equals DeepCache's count less the VAE decode
    latents = wb.generate(None, steps=1, seed=0, num_images=len(labels), condition=cond)
    macs_vae, _ = count_macs(lambda: wb.images(latents))
    assert wb.macs.total(mask) * 2 * len(labels) == pytest.approx(macs_dc - macs_vae, rel=0.01)


@pytest.mark.parametrize("spec,branch,interval", [("tiny-unet", 0, 3), ("tiny-unet", 1, 2), ("mnist-ddpm", 0, 3),
                                                  ("mnist-ddpm", 2, 4)])
def test_deepcache_through_enable_is_deepcache_bitwise(spec, branch, interval):
    """``blockmask.enable(pipe, "deepcache:INTERVAL:BRANCH")`` on a DDPMPipeline gives the real DeepCache's
    images bit for bit, at the step count the pipeline runs (the preset is built at call time), and
    leaves the pipeline plain after ``disable``."""
    from blockmask.workbench import Workbench
    from blockmask.io.models import bundled_models

    if not spec.startswith("tiny") and spec not in bundled_models():
        pytest.skip(f"bundled {spec} not installed")
    wb = Workbench.load(tiny_spec(spec) if spec.startswith("tiny") else spec)
    pipe = _pipe(wb)
    plain = _run(pipe, 8)
    helper = DeepCache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    try:
        ref = {k: _run(pipe, k) for k in (8, 7)}
    finally:
        helper.disable()
    blockmask.enable(pipe, f"deepcache:{interval}:{branch}")
    try:
        ours = {k: _run(pipe, k) for k in (8, 7)}  # one enable, two step counts
    finally:
        blockmask.disable(pipe)
    assert all(np.array_equal(ref[k], ours[k]) for k in ref)
    assert not np.array_equal(ours[8], plain)
    assert np.array_equal(_run(pipe, 8), plain)


def test_deepcache_through_enable_on_the_bundled_stable_diffusion_pipeline():
    """The same on mnist-ldm's StableDiffusionPipeline (class tokens as prompt embeddings, guidance 2)."""
    from blockmask.workbench import Workbench
    from blockmask.io.models import bundled_models
    from blockmask.pipelines import class_prompt_embeds, ldm_pipeline

    if "mnist-ldm" not in bundled_models():
        pytest.skip("bundled mnist-ldm not installed")
    pipe = ldm_pipeline(Workbench.load("mnist-ldm"))

    def run():
        return pipe(**class_prompt_embeds(pipe, [3, 7]), guidance_scale=2.0, num_inference_steps=6,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    helper = DeepCache.DeepCacheSDHelper(pipe=pipe)
    helper.set_params(cache_interval=3, cache_branch_id=0)
    helper.enable()
    try:
        ref = run()
    finally:
        helper.disable()
    blockmask.enable(pipe, "deepcache", interval=3, branch=0)
    try:
        ours = run()
    finally:
        blockmask.disable(pipe)
    assert np.array_equal(ref, ours)
