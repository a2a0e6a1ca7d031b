"""Masked execution: all-ones is the plain model bit for bit; skipping reuses caches correctly."""

import numpy as np
import pytest
import torch

from blockmask.hooks.execution import MaskedExecution
from blockmask.core.errors import MaskError
from blockmask.sampling.sample import Condition, SampleOptions, sample

from conftest import GUIDED, TINY

K = 6


def _cond(name):
    return Condition(guidance_scale=GUIDED[name])


def _random_mask(k, n, seed, p=0.5):
    m = np.random.default_rng(seed).random((k, n)) < p
    m[0] = True
    return m


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("scheduler", ["ddim", "ddpm", "dpm++"])
def test_all_ones_is_bitwise_plain(workbenches, name, scheduler):
    wb = workbenches(name, scheduler)
    n = len(wb.units)
    plain = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=3, batch=2, condition=_cond(name))
    ones = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=3, batch=2, condition=_cond(name),
                  mask=np.ones((K, n), bool))
    assert torch.equal(plain, ones)


@pytest.mark.parametrize("name", TINY)
def test_skipping_changes_output_and_counts(workbenches, name):
    wb = workbenches(name)
    n = len(wb.units)
    m = _random_mask(K, n, 0)
    run = wb.macs.executed(m)  # a branch inside a skipped block is not called at all
    called = np.stack([run[:, u.parent] if u.parent >= 0 else np.ones(K, bool) for u in wb.units], 1)
    ex = MaskedExecution(wb.model, m)
    with ex:
        out = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=3, batch=2, condition=_cond(name),
                     options=SampleOptions(execution=ex))
        assert ex.computed == int(run.sum()) and ex.skipped == int((~m & called).sum())
    plain = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=3, batch=2, condition=_cond(name))
    assert not torch.equal(out, plain)
    assert "forward" not in wb.model.get_submodule(wb.units[0].name).__dict__  # hooks removed


@pytest.mark.parametrize("name", TINY)
def test_cached_outputs_are_not_mutated_downstream(workbenches, name):
    """Reusing the stored tensor must equal reusing a private copy (no in-place op corrupts caches)."""
    wb = workbenches(name)
    m = _random_mask(K, len(wb.units), 1)
    outs = []
    for clone in (False, True):
        ex = MaskedExecution(wb.model, m, clone_cache=clone)
        with ex:
            outs.append(sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=5, batch=2, condition=_cond(name),
                               options=SampleOptions(execution=ex)))
    assert torch.equal(*outs)


def test_caches_reset_between_runs(workbenches):
    wb = workbenches("tiny-dit")
    m = _random_mask(K, len(wb.units), 2)
    a = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=1, batch=2, mask=m)
    b = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=1, batch=2, mask=m)
    assert torch.equal(a, b)


def test_reused_before_computed_is_an_error(workbenches):
    wb = workbenches("tiny-unet")
    ex = MaskedExecution(wb.model, np.ones((2, len(wb.units)), bool))
    ex.mask[1, 0] = False
    with ex:
        ex.set_step(1)  # skipping step 0: nothing cached yet
        with pytest.raises(MaskError, match="never ran"):
            sample(wb.model, num_steps=2, scheduler=wb.scheduler(), options=SampleOptions(execution=_Step1(ex)))


class _Step1:
    """An execution proxy whose set_step always jumps to step 1."""

    def __init__(self, ex):
        self.ex = ex

    def set_step(self, k):
        self.ex.set_step(1)


def test_mask_steps_must_match_scheduler(workbenches):
    wb = workbenches("tiny-unet")
    with pytest.raises(Exception, match="mask has 3 steps but the scheduler runs 6"):
        sample(wb.model, num_steps=6, mask=np.ones((3, len(wb.units)), bool))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_runs(dtype):
    from blockmask.workbench import Workbench
    from conftest import tiny_spec

    wb = Workbench.load(tiny_spec("tiny-dit"), dtype=dtype)
    m = _random_mask(4, len(wb.units), 4)
    out = sample(wb.model, num_steps=4, scheduler=wb.scheduler(), mask=m, batch=2, condition=Condition(guidance_scale=2))
    assert out.dtype == dtype and torch.isfinite(out.float()).all()


def test_apply_on_diffusers_pipeline_is_bitwise(workbenches):
    """blockmask.apply on diffusers' own DDPMPipeline: all-ones equals the plain pipeline; a mask changes it."""
    import diffusers

    import blockmask.workbench as api

    wb = workbenches("tiny-unet")
    pipe = diffusers.DDPMPipeline(unet=wb.model, scheduler=wb.scheduler())
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(batch_size=2, num_inference_steps=K, generator=torch.Generator().manual_seed(0), output_type="np").images

    plain = run()
    with api.apply(pipe, np.ones((K, len(wb.units)), bool)) as ex:
        ones = run()
        assert ex.computed == K * len(wb.units)
    assert np.array_equal(plain, ones)
    m = _random_mask(K, len(wb.units), 7)
    with api.apply(pipe, m):
        masked1 = run()
        masked2 = run()  # a second run in the same context starts from fresh caches
    assert np.array_equal(masked1, masked2) and not np.array_equal(masked1, plain)
    # The same mask through blockmask's own sampler gives the same images as through the pipeline.
    ours = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=0, batch=2, mask=m)
    assert np.array_equal((ours / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy(), masked1)
    with pytest.raises(MaskError, match="scheduler runs 6 steps but the mask has 4 rows"):
        with api.apply(pipe, np.ones((4, len(wb.units)), bool)):
            pipe(batch_size=1, num_inference_steps=K, output_type="np")
    with pytest.raises(MaskError, match="scheduler runs 3 steps but the mask has 4"):
        with api.apply(pipe, np.ones((4, len(wb.units)), bool)):
            pipe(batch_size=1, num_inference_steps=3, output_type="np")


def test_unknown_mode_and_graph_fallback(workbenches):
    wb = workbenches("tiny-unet")
    with pytest.raises(MaskError, match="unknown execution mode"):
        MaskedExecution(wb.model, None, mode="fast")
    if not torch.cuda.is_available():
        with pytest.warns(UserWarning, match="falling back to eager"):
            assert MaskedExecution(wb.model, None, mode="graph").mode == "eager"


@pytest.mark.slow
def test_compiled_mode_matches_eager_and_never_recompiles_per_mask(workbenches):
    """Compiled unit bodies: same samples as eager (fp32 tolerance); a second, different mask
    triggers no new compilation (the mask decision stays outside compiled code)."""
    import torch._dynamo as dynamo

    wb = workbenches("tiny-dit")
    n = len(wb.units)
    masks = [_random_mask(K, n, s) for s in (10, 11)]
    eager = [sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=2, batch=2, mask=m) for m in masks]
    first = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=2, batch=2, mask=masks[0],
                   options=SampleOptions(mode="compiled"))
    dynamo.utils.counters.clear()
    second = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=2, batch=2, mask=masks[1],
                    options=SampleOptions(mode="compiled"))
    assert sum(dynamo.utils.counters["stats"].values()) == 0 or dynamo.utils.counters["stats"]["unique_graphs"] == 0
    assert torch.allclose(first, eager[0], atol=1e-4) and torch.allclose(second, eager[1], atol=1e-4)


def test_whole_model_compile_with_a_mask_matches_eager_in_few_graphs():
    """Bug 6: under a whole-model ``torch.compile`` the unit hooks indexed the NumPy mask, which
    dynamo traced as a tensor: a graph break (and a recompilation) at every unit. The gates are now
    Python constants guarded per row: one graph for the first call and one per distinct row. What
    ran and what was reused is counted as in eager mode."""
    import torch._dynamo as dynamo
    from torch._dynamo.testing import CompileCounterWithBackend

    from blockmask.workbench import Workbench
    from conftest import tiny_spec

    wb = Workbench.load(tiny_spec("tiny-dit"))  # its own model: compile() changes the module
    mask = np.ones((K, len(wb.units)), bool)
    mask[1::2, [1, 2, 4, 5]] = False  # reuse two blocks' inner units every other step
    cond = Condition(class_labels=[1, 2], guidance_scale=3.0)

    def run():
        with MaskedExecution(wb.model, mask) as ex:
            out = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=3, batch=2, mask=mask, condition=cond,
                         options=SampleOptions(execution=ex))
        return out, (ex.computed, ex.skipped)

    eager, counts = run()
    dynamo.reset()
    counter = CompileCounterWithBackend("eager")
    wb.model.compile(backend=counter)
    try:
        runs = [run() for _ in range(2)]
    finally:
        dynamo.reset()
    assert counts[1] > 0
    for out, got in runs:
        assert torch.allclose(out, eager, rtol=1e-5, atol=1e-6) and got == counts
    assert 1 <= counter.frame_count <= 3


def test_whole_model_compile_under_apply_block_mask_follows_the_scheduler():
    """The same with the rows counted from the scheduler (``apply_block_mask`` on a bare denoiser,
    the standard diffusers loop): same samples and counters as eager, at most 3 graphs."""
    import torch._dynamo as dynamo
    from diffusers import DDIMScheduler
    from torch._dynamo.testing import CompileCounterWithBackend

    from blockmask.workbench import Workbench
    from blockmask.hooks.stepping import BlockMaskConfig, apply_block_mask
    from conftest import tiny_spec

    wb = Workbench.load(tiny_spec("tiny-dit"))
    mask = np.ones((K, len(wb.units)), bool)
    mask[1::2, [1, 2, 4, 5]] = False
    s = DDIMScheduler()
    handle = apply_block_mask(wb.model, BlockMaskConfig(mask=mask, scheduler=s))

    def run():
        g = torch.Generator().manual_seed(0)
        s.set_timesteps(K)
        x = torch.randn(2, 4, 8, 8, generator=g)
        for t in s.timesteps:
            eps = wb.model(x, timestep=t.expand(2), class_labels=torch.tensor([1, 2])).sample[:, :4]
            x = s.step(eps, t, x).prev_sample
        return x, (handle.execution.computed, handle.execution.skipped)

    try:
        eager, counts = run()
        dynamo.reset()
        counter = CompileCounterWithBackend("eager")
        wb.model.compile(backend=counter)
        runs = [run() for _ in range(2)]
    finally:
        handle.remove()
        dynamo.reset()
    assert counts[1] > 0
    for out, got in runs:
        assert torch.allclose(out, eager, rtol=1e-5, atol=1e-6) and got == counts
    assert 1 <= counter.frame_count <= 3


def test_generate_progress_is_a_bar_or_a_function(workbenches):
    """``Workbench.generate(progress=…)``: a function hears (steps done, K) after every step; the
    images are those of a run without it."""
    wb = workbenches("tiny-unet")
    seen = []
    a = wb.generate(None, steps=4, seed=3, progress=lambda k, kk: seen.append((k, kk)))
    b = wb.generate(None, steps=4, seed=3, progress=False)
    assert seen == [(1, 4), (2, 4), (3, 4), (4, 4)] and torch.equal(a, b)
