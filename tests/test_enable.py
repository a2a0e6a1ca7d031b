"""``blockmask.enable(pipe, spec)`` on a tiny random-init pipeline of every supported family (tests/tiny_pipes.py):
"ones" is the plain pipeline bit for bit; a preset changes the output, lowers the MACs counted over the
whole run and leaves no hook behind; a K = 8 mask runs at K = 6 when resampling is allowed; bad input
gets one line and leaves the pipeline unhooked. Plus the pure resampling rules."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import blockmask
from blockmask.hooks.costs import count_macs
from blockmask.hooks.enable import denoisers
from blockmask.core.errors import BlockmaskError, MaskError, UnsupportedModelError
from blockmask.core.resample import align_rows, resample_mask
from blockmask.hooks.discover import discover_units

from tiny_pipes import FAMILIES

PRESET = {"sdxl": "deepcache:2", "pixart-sigma": "blocks:2"}  # else fora:2 (every block reused between full steps)
K = 6


def hooks_left(pipe) -> list[str]:
    """Every trace blockmask could leave: hooks in the denoisers' registries, scheduler wrappers, state."""
    left = []
    for attr, model in denoisers(pipe):
        for name, mod in model.named_modules():
            reg = getattr(mod, "_diffusers_hook", None)
            if reg is not None and reg.hooks:
                left.append(f"{attr}.{name}: {list(reg.hooks)}")
            if "forward" in mod.__dict__:
                left.append(f"{attr}.{name}: instance forward")
        if "_blockmask_applied" in model.__dict__:
            left.append(f"{attr}: applied handle")
    left += [f"scheduler.{n}" for n in ("set_timesteps", "step") if n in pipe.scheduler.__dict__]
    if "_blockmask_enabled" in pipe.__dict__:
        left.append("pipe state")
    return left


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    pipe, run = FAMILIES[request.param]()
    return request.param, pipe, run, run(K)


def test_ones_is_the_plain_pipeline_bitwise(family):
    _, pipe, run, plain = family
    assert blockmask.enable(pipe, "ones") is pipe
    try:
        out = run(K)
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert torch.equal(out, plain)
    assert s.steps == K and sum(s.skipped) == 0 and all(c > 0 for c in s.computed)
    assert hooks_left(pipe) == []


def test_preset_changes_output_lowers_macs_and_unhooks(family):
    name, pipe, run, plain = family
    macs_plain, _ = count_macs(lambda: run(K))
    blockmask.enable(pipe, PRESET.get(name, "fora:2"))
    try:
        macs, out = count_macs(lambda: run(K))
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert not torch.equal(out, plain) and torch.isfinite(out).all()
    assert macs < macs_plain
    assert s.computed[0] > 0 and s.skipped[0] == 0 and sum(s.skipped) > 0  # counters readable after the run
    assert hooks_left(pipe) == []
    assert torch.equal(run(K), plain)  # the pipeline is plain again


def test_mask_made_at_8_steps_runs_at_6_when_resampled(family):
    _, pipe, run, plain = family
    n = len(discover_units(denoisers(pipe)[0][1]))
    mask = np.random.default_rng(0).random((8, n)) < 0.5
    mask[0] = True
    with pytest.raises(MaskError, match="runs 6 steps but the mask has 8 rows"):
        blockmask.enable(pipe, mask)
        run(K)
    assert hooks_left(pipe) == []  # the mismatch disabled blockmask
    blockmask.enable(pipe, mask, resample=True)
    try:
        out = run(K)
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert out.shape == plain.shape and torch.isfinite(out).all() and s.steps == K
    assert hooks_left(pipe) == []


def test_wan22_masks_both_denoisers_and_the_second_starts_computing():
    pipe, run = FAMILIES["wan"]()
    assert [a for a, _ in denoisers(pipe)] == ["transformer", "transformer_2"]
    blockmask.enable(pipe, "blocks:100")  # only each denoiser's first step computes
    try:
        run(K)
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    computing = [k for k in range(K) if s.computed[k]]
    assert computing[0] == 0 and len(computing) == 2  # step 0 (transformer) and the boundary step (transformer_2)
    assert s.units == {"transformer": 2, "transformer_2": 2}


# --- bad input: one line, nothing hooked -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def sd3():
    return FAMILIES["sd3"]()


@pytest.mark.parametrize("spec,match", [("fora:x", "integer"), ("nosuch", "unknown preset"), ("fora:2:3", "at most"),
                                        ("deepcache:3", "U-Nets"), ("fora:0", "interval")])
def test_bad_spec_is_one_line_and_unhooked(sd3, spec, match):
    pipe, _ = sd3
    with pytest.raises(BlockmaskError, match=match) as e:
        blockmask.enable(pipe, spec)
    assert "\n" not in str(e.value) and hooks_left(pipe) == []


def test_mask_for_another_model_twice_and_disable_never_enabled(sd3):
    pipe, run = sd3
    with pytest.raises(MaskError, match="units"):
        blockmask.enable(pipe, np.ones((6, 7), bool))
    mf = blockmask.MaskFile(mask=np.ones((6, 2), bool), units=["a", "b"], model="other")
    with pytest.raises(MaskError, match="does not fit"):
        blockmask.enable(pipe, mf)
    from blockmask.io.models import bundled_masks

    if "mnist-ddpm-050steps-b35" in bundled_masks():  # a shipped name is a mask, here for another model
        with pytest.raises(MaskError, match="does not fit"):
            blockmask.enable(pipe, "mnist-ddpm-050steps-b35")
    assert hooks_left(pipe) == []
    with pytest.raises(BlockmaskError, match="not enabled"):
        blockmask.disable(pipe)
    with pytest.raises(BlockmaskError, match="not enabled"):
        blockmask.summary(pipe)
    blockmask.enable(pipe, "fora:2")
    before = hooks_left(pipe)
    with pytest.raises(BlockmaskError, match="already enabled"):
        blockmask.enable(pipe, "ones")
    assert hooks_left(pipe) == before  # the second call added nothing
    blockmask.disable(pipe)
    assert hooks_left(pipe) == []


def test_unsupported_class_names_what_is_missing():
    from types import SimpleNamespace

    from diffusers import DDIMScheduler

    pipe = SimpleNamespace(transformer=torch.nn.Linear(2, 2), scheduler=DDIMScheduler())
    with pytest.raises(UnsupportedModelError, match="Linear.*declares its blocks") as e:
        blockmask.enable(pipe, "fora:2")
    assert "\n" not in str(e.value) and "_blockmask_enabled" not in pipe.__dict__


def test_config_preset_equals_string_preset(sd3):
    pipe, run = sd3
    outs = []
    for spec in ("fora:3", blockmask.BlockMaskConfig(preset="fora", interval=3)):
        blockmask.enable(pipe, spec)
        try:
            outs.append(run(K))
        finally:
            blockmask.disable(pipe)
    assert torch.equal(*outs)


# --- resampling (pure) and a run that starts late --------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(k=st.integers(1, 30), n=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_resample_k_to_k_is_identity(k, n, seed):
    rng = np.random.default_rng(seed)
    m = rng.random((k, n)) < 0.5
    m[0] = True
    levels = np.sort(rng.choice(1000, size=k, replace=False))[::-1]
    assert np.array_equal(resample_mask(m, levels, levels), m)


@settings(max_examples=50, deadline=None)
@given(k=st.integers(2, 30), k2=st.integers(1, 30))
def test_resampled_rows_are_the_rows_in_force(k, k2):
    src, dst = np.linspace(999, 0, k), np.linspace(999, 0, k2)
    idx = align_rows(src, dst)
    assert (src[idx] >= dst).all() and (np.diff(idx) >= 0).all()  # at or above the level, in order
    nxt = np.minimum(idx + 1, k - 1)
    assert ((idx == k - 1) | (src[nxt] < dst)).all()  # and the nearest such row


def test_img2img_start_follows_noise_levels():
    """A run that starts at step 4 of 8 (img2img, strength 0.5) uses rows 4..7, not 0..3; its first step
    computes every unit (nothing is cached yet)."""
    from diffusers import DDIMScheduler, DDPMPipeline

    from blockmask.workbench import Workbench
    from conftest import tiny_spec

    wb = Workbench.load(tiny_spec("tiny-unet"))
    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler())
    mask = wb.baseline("uniform", steps=8, every=3)
    blockmask.enable(pipe, mask)
    try:
        s = pipe.scheduler
        s.set_timesteps(8)
        x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        for t in s.timesteps[4:]:
            x = s.step(pipe.unet(x, t).sample, t, x).prev_sample
        summ = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    n = len(wb.units)
    assert summ.computed[:4] == [0, 0, 0, 0]
    assert summ.computed[4:] == [n] + [int(mask[r].sum()) for r in (5, 6, 7)]


# --- block contracts and mask sources ---------------------------------------------------------------------------
class TupleBlock(torch.nn.Module):
    """Returns (encoder, hidden) like Flux, each doubled: residuals are exact (2x − x = x)."""

    def forward(self, hidden_states, encoder_hidden_states=None, temb=None):
        return 2 * encoder_hidden_states, 2 * hidden_states


def test_tuple_block_contract_takes_and_applies_residuals_per_stream():
    from blockmask.adapters.contracts import TUPLE_ENCODER_HIDDEN, BoundContract, register_contract

    register_contract("TupleBlock", TUPLE_ENCODER_HIDDEN)
    bc = BoundContract.of(TupleBlock())
    h, e = torch.randn(1, 4, 2), torch.randn(1, 3, 2)
    for args, kwargs in (((h, e), {}), ((h,), {"encoder_hidden_states": e}), ((), {"hidden_states": h, "encoder_hidden_states": e})):
        ins = bc.inputs(args, kwargs)
        assert ins[0] is h and ins[1] is e
    cache = bc.residual(TupleBlock()(h, e), (h, e))
    assert torch.equal(cache[0], e) and torch.equal(cache[1], h)  # (encoder residual, hidden residual)
    h2, e2 = torch.randn(1, 4, 2), torch.randn(1, 3, 2)
    enc, hid = bc.reuse(cache, (h2, e2))
    assert torch.equal(enc, e2 + e) and torch.equal(hid, h2 + h)
    none_enc = bc.residual((None, 2 * h), (h, e))  # SD3's last block returns no text stream
    assert none_enc[0] is None and bc.reuse(none_enc, (h2, e2))[0] is None


def test_mask_file_folder_and_recorded_levels(tmp_path, workbenches):
    """A mask file and a hub-style folder give the same images as apply(); a file records its timesteps, so
    resampling aligns on them (K → K is the file's mask, row for row)."""
    from diffusers import DDIMScheduler, DDPMPipeline

    wb = workbenches("tiny-unet")
    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)
    mask = wb.baseline("uniform", steps=6, every=2)
    mf = wb.mask_file(mask)
    mf.save(tmp_path / "m.json")
    mf.save_pretrained(tmp_path / "folder")

    def run(k=6):
        return pipe(batch_size=1, num_inference_steps=k, generator=torch.Generator().manual_seed(0), output_type="np").images

    with blockmask.apply(pipe, mask):
        ref = run()
    for spec in (str(tmp_path / "m.json"), tmp_path / "folder"):
        blockmask.enable(pipe, spec, resample=True)
        try:
            assert np.array_equal(run(), ref)
            run(4)
            s = blockmask.summary(pipe)
        finally:
            blockmask.disable(pipe)
        assert s.steps == 4 and sum(s.skipped) > 0


def test_sdxl_unet_is_measured_like_any_unet():
    """An SDXL-style U-Net (text_time conditioning) has units, an order and MACs (it used to fail)."""
    from blockmask.workbench import Workbench
    from conftest import tiny_spec

    wb = Workbench.load(tiny_spec("tiny-sdxl-unet"))
    assert len(wb.units) > 0 and wb.macs.full_step > 0


@pytest.mark.parametrize("scheduler", ["HeunDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                                       "DPMSolverSinglestepScheduler"])
def test_enable_equals_apply_on_multi_evaluation_schedulers(scheduler, workbenches):
    """Two evaluations per step (Heun) and single-step solvers: a preset through enable() gives apply()'s
    samples bit for bit, and the summary counts every evaluation, Heun's one-evaluation last step too."""
    from types import SimpleNamespace

    import diffusers

    from blockmask.core.schedulers import step

    wb = workbenches("tiny-unet")
    pipe = SimpleNamespace(unet=wb.model, scheduler=getattr(diffusers, scheduler)())

    def run():
        s = pipe.scheduler
        s.set_timesteps(5)
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1, 3, 16, 16, generator=g) * s.init_noise_sigma
        for t in s.timesteps:
            x = step(s, pipe.unet(s.scale_model_input(x, t), t).sample, t, x, g)
        return x

    mask = wb.baseline("deepcache", steps=5, interval=2)
    with blockmask.apply(pipe, mask):
        ref = run()
    blockmask.enable(pipe, "deepcache:2")
    try:
        out = run()
        summ = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert torch.equal(out, ref)
    calls = [2, 2, 2, 2, 1] if scheduler.startswith("Heun") else [1] * 5
    assert summ.computed == [c * int(mask[r].sum()) for r, c in enumerate(calls)]
    assert summ.skipped == [c * int((~mask[r]).sum()) for r, c in enumerate(calls)]


def test_img2img_pipeline_uses_the_rows_of_the_levels_it_visits():
    """diffusers' StableDiffusionImg2ImgPipeline at strength 0.5 of 8 steps runs rows 4..7 of a K = 8 mask:
    the first of them computes every unit, the others follow the mask's rows."""
    from diffusers import DDIMScheduler

    from tiny_pipes import _emb, _model, _pipe

    pipe = _pipe("StableDiffusionImg2ImgPipeline", vae=_model("tiny-vae"), text_encoder=None, tokenizer=None,
                 unet=_model("tiny-unet-cond"), scheduler=DDIMScheduler(steps_offset=1, clip_sample=False),
                 safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    n = len(discover_units(pipe.unet))
    mask = np.random.default_rng(0).random((8, n)) < 0.5
    mask[0] = True
    blockmask.enable(pipe, mask)
    try:
        pipe(image=torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(5)), strength=0.5,
             num_inference_steps=8, prompt_embeds=_emb(1, 4, 24), negative_prompt_embeds=_emb(1, 4, 24, seed=2),
             guidance_scale=2.0, output_type="latent", generator=torch.Generator().manual_seed(0))
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert s.computed == [0, 0, 0, 0, n] + [int(mask[r].sum()) for r in (5, 6, 7)]
    assert hooks_left(pipe) == []
