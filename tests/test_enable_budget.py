"""``blockmask.enable(pipe, budget=B)`` on tiny random-init pipelines (tests/tiny_pipes.py): the chosen mask
fits B as counted by FlopCounterMode over the whole run, it is the rule mask with the most compute that fits,
summary() reports the run's MAC fraction, bad budgets are one line and leave the pipeline unhooked; and
rows follow diffusers' ``CacheContext.step_index`` when the caller provides one."""

import math

import numpy as np
import pytest
import torch

import blockmask
from blockmask.hooks.costs import count_macs
from blockmask.core.errors import OptionError

from test_enable import hooks_left
from tiny_pipes import FAMILIES

K = 6


@pytest.fixture(scope="module")
def sd3():
    pipe, run = FAMILIES["sd3"]()
    return pipe, run, count_macs(lambda: run(K))


def _enabled_run(pipe, run, *args, **kwargs):
    blockmask.enable(pipe, *args, **kwargs)
    try:
        macs, out = count_macs(lambda: run(K))
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    return macs, out, s


@pytest.mark.parametrize("budget", [0.5, 0.3, 0.9])
def test_budget_fits_and_is_the_most_compute_that_fits(sd3, budget):
    pipe, run, (macs_plain, plain) = sd3
    macs, out, s = _enabled_run(pipe, run, budget=budget)
    counted = macs / macs_plain
    assert counted <= budget + 1e-6 and math.isclose(s.macs_fraction, counted, rel_tol=1e-3)
    assert hooks_left(pipe) == []
    label = s.chosen["transformer"]
    assert label.startswith(f"budget:{budget:g} → ") and f"{s.macs_fraction:.3f}" in label
    name = label.split("→ ")[1].split(" (")[0]
    if ":" in name:  # a preset: running it by name gives the same images
        assert torch.equal(_enabled_run(pipe, run, name)[1], out)
    for other in ("fora:2",  # every other rule that fits has no more compute than the chosen one
                   "fora:3", "blocks:2", "blocks:3", "fora:6"):
        m, _, _ = _enabled_run(pipe, run, other)
        assert m / macs_plain > budget + 1e-6 or m / macs_plain <= counted + 1e-6, other


def test_budget_spec_string_and_full_budget(sd3):
    pipe, run, (_, plain) = sd3
    a = _enabled_run(pipe, run, budget=0.5)[1]
    b = _enabled_run(pipe, run, "budget:0.5")[1]
    assert torch.equal(a, b)
    _, out, s = _enabled_run(pipe, run, budget=1.0)
    assert torch.equal(out, plain) and s.macs_fraction == pytest.approx(1.0) and "→ ones" in s.chosen["transformer"]


@pytest.mark.parametrize("bad", [0, -0.5, 1.5, float("nan"), float("inf"), "half", True, None])
def test_bad_budget_is_one_line_and_unhooked(sd3, bad):
    pipe, _, _ = sd3
    with pytest.raises(OptionError, match="budget") as e:
        if bad is None:
            blockmask.enable(pipe, "budget:")
        else:
            blockmask.enable(pipe, budget=bad)
    assert "\n" not in str(e.value) and hooks_left(pipe) == []
    with pytest.raises(OptionError, match="not both"):
        blockmask.enable(pipe, "fora:2", budget=0.5)
    with pytest.raises(OptionError, match="needs a spec"):
        blockmask.enable(pipe)
    assert hooks_left(pipe) == []


def test_unreachable_budget_stops_the_run_with_one_line_and_unhooks(sd3):
    pipe, run, (_, plain) = sd3
    blockmask.enable(pipe, budget=0.01)
    with pytest.raises(OptionError, match="out of reach at 6 steps") as e:
        run(K)
    assert "\n" not in str(e.value) and hooks_left(pipe) == []
    assert torch.equal(run(K), plain)


@pytest.mark.parametrize("family,spec", [("sdxl", "deepcache:2"), ("pixart-sigma", "fora:3"), ("wan", "blocks:2")])
def test_summary_macs_fraction_matches_the_counted_run(family, spec):
    pipe, run = FAMILIES[family]()
    macs_plain, _ = count_macs(lambda: run(K))
    macs, _, s = _enabled_run(pipe, run, spec)
    assert math.isclose(s.macs_fraction, macs / macs_plain, rel_tol=0.02), (s.macs_fraction, macs / macs_plain)
    assert f"{100 * s.macs_fraction:.1f}% of the plain MACs" in str(s)


def test_wan22_second_denoiser_pays_its_own_first_step():
    """Each denoiser chooses over the rows it runs: the run stays within the budget."""
    pipe, run = FAMILIES["wan"]()
    macs_plain, _ = count_macs(lambda: run(K))
    macs, _, s = _enabled_run(pipe, run, budget=0.5)
    assert macs / macs_plain <= 0.5 + 1e-6 and set(s.chosen) == {"transformer", "transformer_2"}


def test_shipped_mask_for_the_bundled_model_is_preferred():
    from blockmask.io.models import bundled_masks, bundled_models

    if "mnist-ddpm" not in bundled_models() or "mnist-ddpm-050steps-b45" not in bundled_masks():
        pytest.skip("the bundled mnist-ddpm model and its masks are not installed here")
    from diffusers import DDIMScheduler, DDPMPipeline

    from blockmask.workbench import Workbench

    wb = Workbench.load("mnist-ddpm")
    pipe = DDPMPipeline(unet=wb.model, scheduler=wb.scheduler())
    pipe.set_progress_bar_config(disable=True)
    blockmask.enable(pipe, budget=0.5)
    try:
        pipe(batch_size=1, num_inference_steps=10, generator=torch.Generator().manual_seed(0), output_type="np")
        s = blockmask.summary(pipe)
    finally:
        blockmask.disable(pipe)
    assert "→ shipped mnist-ddpm-" in s.chosen["unet"] and s.macs_fraction <= 0.5 + 1e-6


# --- the step index from diffusers' CacheContext --------------------------------------------------------------
@pytest.fixture(scope="module")
def wan_alone():
    """A Wan transformer (a diffusers CacheMixin model: it has ``cache_context``) with its scheduler."""
    from types import SimpleNamespace

    from diffusers import FlowMatchEulerDiscreteScheduler

    from tiny_pipes import _model

    return SimpleNamespace(transformer=_model("tiny-wan"), scheduler=FlowMatchEulerDiscreteScheduler())


def _own_loop(pipe, *, with_index: bool):
    """A denoising loop that updates the latents itself (no scheduler.step) and names its calls with
    ``cache_context``, with or without the step index."""
    tr, s = pipe.transformer, pipe.scheduler
    s.set_timesteps(K)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 1, 4, 4, generator=g)
    e = torch.randn(1, 5, 16, generator=g)
    steps = []
    ex = pipe._blockmask_enabled.handles[0][1].execution
    sig = list(s.sigmas)
    for i, t in enumerate(s.timesteps):
        ctx = {"step_index": i} if with_index else {}
        with tr.cache_context("cond", **ctx):
            v = tr(hidden_states=x, timestep=t.reshape(1), encoder_hidden_states=e, return_dict=False)[0]
        steps.append(ex.step)
        x = x + (sig[i + 1] - sig[i]) * v
    return steps, ex.computed, ex.skipped


def test_rows_follow_the_cache_context_step_index(wan_alone):
    pipe = wan_alone
    mask = np.zeros((K, 2), bool)
    mask[::2] = True
    blockmask.enable(pipe, mask)
    try:
        steps, computed, skipped = _own_loop(pipe, with_index=True)
    finally:
        blockmask.disable(pipe)
    assert steps == [0, 2, 3, 4, 5, 6]  # row 0 (warm-up), then rows 1..5 (the execution's mask is [ones; mask])
    assert (computed, skipped) == (2 * 3, 2 * 3)
    blockmask.enable(pipe, mask)  # without the index and without scheduler.step(): every call is row 0
    try:
        steps, computed, skipped = _own_loop(pipe, with_index=False)
    finally:
        blockmask.disable(pipe)
    assert steps == [0] * K and skipped == 0
    assert "_blockmask_enabled" not in pipe.__dict__ and "set_timesteps" not in pipe.scheduler.__dict__
