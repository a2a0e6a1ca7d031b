"""diffusers hooks and any scheduler: masks as ModelHooks on each unit's HookRegistry, rows counted
from the scheduler (Heun's two evaluations share a row), CFG branches named by cache_context."""

import numpy as np
import pytest
import torch
from diffusers.hooks import HookRegistry, ModelHook
from diffusers.hooks.hooks import CacheContext, _set_cache_context

import blockmask
from blockmask.core.errors import MaskError
from blockmask.hooks.execution import MaskedExecution
from blockmask.hooks.registry import remove_hooks
from blockmask.sampling.sample import SampleOptions, sample
from blockmask.core.schedulers import SCHEDULERS, call_rows
from blockmask.core.schedulers import step as scheduler_step

K = 4
LISTED = ["ddim", "ddpm", "dpm++", "dpm-2s", "euler", "euler-a", "heun", "edm"]


class LoopPipeline:
    """The standard diffusers denoising loop (StableDiffusionPipeline's, without text): set_timesteps,
    init_noise_sigma, scale_model_input, step. ``branches`` > 1 calls the model once per CFG branch
    (each under ``cache_context(name)`` when ``names`` is given), like Wan or Flux pipelines."""

    def __init__(self, unet, scheduler, branches=1, names=None, swap_odd=False):
        self.unet, self.scheduler = unet, scheduler
        self.branches, self.names, self.swap_odd = branches, names, swap_odd

    def __call__(self, num_inference_steps, seed=0, batch=2):
        g = torch.Generator().manual_seed(seed)
        s = self.scheduler
        s.set_timesteps(num_inference_steps)
        c = self.unet.config
        x = torch.randn((batch, c.in_channels, c.sample_size, c.sample_size), generator=g) * s.init_noise_sigma
        for i, t in enumerate(s.timesteps):
            inp = s.scale_model_input(x, t)
            order = list(range(self.branches))
            if self.swap_odd and i % 2:
                order.reverse()
            outs = {}
            for b in order:
                if self.names:
                    _set_cache_context(self.unet, CacheContext(self.names[b]))
                try:
                    outs[b] = self.unet(inp * (1.0 + 0.1 * b), t).sample  # the branches see different inputs
                finally:
                    if self.names:
                        _set_cache_context(self.unet, None)
            eps = sum(outs[b] for b in range(self.branches)) / self.branches
            x = scheduler_step(s, eps, t, x, g)
        return x


def _mask(n, seed=5):
    m = np.random.default_rng(seed).random((K, n)) < 0.5
    m[0] = True
    return m


def test_listed_schedulers_are_offered():
    assert set(LISTED) <= set(SCHEDULERS)


@pytest.mark.parametrize("name", LISTED)
def test_every_scheduler_through_apply_and_sample(workbenches, name):
    """All-ones through apply() is the plain loop bit for bit; a mask through apply() on a diffusers
    loop is blockmask's own sampler bit for bit; two-evaluation steps run 2K-1 calls on K rows."""
    wb = workbenches("tiny-unet", name)
    n = len(wb.units)
    pipe = LoopPipeline(wb.model, wb.scheduler())
    plain = pipe(K)
    with blockmask.apply(pipe, np.ones((K, n), bool)):
        assert torch.equal(pipe(K), plain)
    m = _mask(n)
    with blockmask.apply(pipe, m) as ex:
        masked = pipe(K)
        calls = ex.computed + ex.skipped
    ours = sample(wb.model, num_steps=K, scheduler=wb.scheduler(), seed=0, batch=2, mask=m)
    assert torch.equal(masked, ours) and not torch.equal(masked, plain)
    s = wb.scheduler()
    s.set_timesteps(K)
    rows = call_rows(s)
    assert rows[-1] == K - 1 and calls == len(rows) * n
    assert len(rows) == (2 * K - 1 if name in ("heun", "edm") else K)


def test_two_evaluation_step_uses_its_row(workbenches):
    """Heun: both evaluations of step k follow row k (a 0 cell reuses the value cached at the unit's
    last run in both; a 1 cell runs and refreshes in both)."""
    wb = workbenches("tiny-unet", "heun")
    n = len(wb.units)
    m = np.ones((K, n), bool)
    m[2, 0] = False
    pipe = LoopPipeline(wb.model, wb.scheduler())
    with blockmask.apply(pipe, m) as ex:
        pipe(K)
        assert ex.skipped == 2 and ex.computed == (2 * K - 1) * n - 2  # unit 0 reused in both evaluations of row 2


class Counter(ModelHook):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def pre_forward(self, module, *args, **kwargs):
        self.calls += 1
        return args, kwargs


def test_composes_with_other_diffusers_hooks(workbenches):
    """Another tool's diffusers hooks, on a unit and on a module that is no unit, keep working under a
    mask and stay in place afterwards; the masked result is the same as without them."""
    wb = workbenches("tiny-unet")
    n = len(wb.units)
    pipe = LoopPipeline(wb.model, wb.scheduler())
    m = _mask(n)
    with blockmask.apply(pipe, m):
        alone = pipe(K)
    unit_mod = wb.model.get_submodule(wb.units[-1].name)
    other = wb.model.conv_in
    hooks = {"unit": Counter(), "other": Counter()}
    HookRegistry.check_if_exists_or_initialize(unit_mod).register_hook(hooks["unit"], "counter")
    HookRegistry.check_if_exists_or_initialize(other).register_hook(hooks["other"], "counter")
    try:
        with blockmask.apply(pipe, m):
            assert unit_mod._diffusers_hook.get_hook("blockmask") is not None
            together = pipe(K)
        assert torch.equal(alone, together)
        assert hooks["other"].calls == K and hooks["unit"].calls == int(m[:, -1].sum())  # a reused unit's body never runs
        assert unit_mod._diffusers_hook.get_hook("blockmask") is None
        assert unit_mod._diffusers_hook.get_hook("counter") is hooks["unit"]
        plain = LoopPipeline(wb.model, wb.scheduler())(K)
        assert hooks["unit"].calls == int(m[:, -1].sum()) + K
    finally:  # blockmask's remover also drops the instance forward diffusers' remove_hook leaves behind
        remove_hooks([unit_mod, other], "counter")
    assert torch.equal(plain, LoopPipeline(wb.model, wb.scheduler())(K))


def test_enable_cache_style_entry_point(workbenches):
    """apply_block_mask(pipe, BlockMaskConfig(...)) until remove_block_mask(pipe); the same result as
    apply(); applying twice is refused; after removal no blockmask hook is left."""
    wb = workbenches("tiny-unet")
    n = len(wb.units)
    pipe = LoopPipeline(wb.model, wb.scheduler())
    m = _mask(n, 9)
    with blockmask.apply(pipe, m):
        ref = pipe(K)
    handle = blockmask.apply_block_mask(pipe, blockmask.BlockMaskConfig(mask=m))
    try:
        assert torch.equal(pipe(K), ref) and torch.equal(pipe(K), ref)  # every run starts from fresh caches
        with pytest.raises(MaskError, match="already"):
            blockmask.apply_block_mask(pipe, blockmask.BlockMaskConfig(mask=m))
    finally:
        blockmask.remove_block_mask(pipe)
    assert handle.execution.model is wb.model
    mods = [wb.model, *[wb.model.get_submodule(u.name) for u in wb.units]]
    assert all(getattr(md, "_diffusers_hook", None) is None or not md._diffusers_hook.hooks for md in mods)
    assert all("forward" not in vars(md) for md in mods)
    with pytest.raises(MaskError, match="scheduler runs 3 steps but the mask has 4"):
        with blockmask.apply(pipe, m):
            pipe(3)


def test_cache_context_names_the_cfg_branches(workbenches):
    """A pipeline calling the model once per branch: without names the n-th call of a step is branch
    n; with cache_context names the caches follow the names, whatever the call order."""
    wb = workbenches("tiny-unet")
    m = _mask(len(wb.units), 3)
    by_order = LoopPipeline(wb.model, wb.scheduler(), branches=2)
    named = LoopPipeline(wb.model, wb.scheduler(), branches=2, names=["cond", "uncond"])
    named_swapped = LoopPipeline(wb.model, wb.scheduler(), branches=2, names=["cond", "uncond"], swap_odd=True)
    order_swapped = LoopPipeline(wb.model, wb.scheduler(), branches=2, swap_odd=True)
    with blockmask.apply(by_order, m):
        a = by_order(K)
    with blockmask.apply(named, m) as ex:
        b = named(K)
        assert set(ex.hooks[0].states._state_cache) == {"cond", "uncond"}
    with blockmask.apply(named_swapped, m):
        c = named_swapped(K)
    with blockmask.apply(order_swapped, m):
        d = order_swapped(K)  # branches by call order: the swapped steps read the other branch's cache
    assert torch.equal(a, b) and torch.equal(b, c) and not torch.equal(c, d)


def test_apply_after_cachedit_enable_disable(workbenches):
    """cache-dit's enable_cache/disable_cache on a DiTPipeline leave the transformer patched;
    apply() still works on it (all-ones = the plain pipeline) and takes its hooks off again."""
    import cache_dit
    from cache_dit import DBCacheConfig
    from diffusers import DDIMScheduler, DiTPipeline

    from benchmarks.peers import IdentityVAE

    wb = workbenches("tiny-dit")
    pipe = DiTPipeline(transformer=wb.model, vae=IdentityVAE(wb.model), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(class_labels=[1, 2], guidance_scale=1.0, num_inference_steps=K,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    plain = run()
    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0,
                                                            residual_diff_threshold=0.5, max_warmup_steps=1,
                                                            enable_separate_cfg=False))
    try:
        run()
    finally:
        cache_dit.disable_cache(pipe)
    with blockmask.apply(pipe, np.ones((K, len(wb.units)), bool)) as ex:
        again = run()
        assert ex.computed == K * len(wb.units)
    assert np.array_equal(plain, again)
    m = _mask(len(wb.units))
    with blockmask.apply(pipe, m):
        masked = run()
    assert not np.array_equal(masked, plain)
    for name in ("forward", "_norm1_emb", "_is_patched"):  # undo cache-dit's leftovers (shared model)
        if name in vars(wb.model) or name in wb.model._modules:
            delattr(wb.model, name)


def test_cli_sample_train_eval_with_heun(tmp_path, capsys):
    """`blockmask train/sample` with a two-evaluation scheduler: K rows for K steps."""
    import json

    from blockmask.cli.main import main
    from blockmask.io.maskfile import MaskFile

    from conftest import tiny_spec

    spec = tiny_spec("tiny-unet")
    m = tmp_path / "m.json"
    assert main(["train", spec, "--scheduler", "heun", "--steps", "3", "--iters", "2", "--batch", "1",
                 "-o", str(m)]) == 0
    mf = MaskFile.load(m)
    assert mf.mask.shape[0] == 3 and mf.scheduler["class"] == "HeunDiscreteScheduler"
    capsys.readouterr()
    assert main(["sample", spec, "--scheduler", "heun", "--steps", "3", "--mask", str(m), "--num-images", "2",
                 "-o", str(tmp_path / "out"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) and (tmp_path / "out" / "samples.npy").is_file()
    assert main(["sample", spec, "--scheduler", "euler-a", "--steps", "3", "--mask", str(m), "-o",
                 str(tmp_path / "out2")]) == 0  # same K, other timesteps: a warning, not an error


def test_cli_eval_with_heun(tmp_path, capsys):
    """`blockmask eval` with a two-evaluation scheduler (offline FID on the MNIST set)."""
    import json

    from blockmask.cli.main import main

    from conftest import CONFIGS, needs_mnist

    if needs_mnist.args[0]:
        pytest.skip(needs_mnist.kwargs["reason"])
    spec = f"config:{CONFIGS / 'tiny-unet-mnist.json'}"
    m = tmp_path / "m.json"
    assert main(["mask", "uniform", spec, "--scheduler", "heun", "--steps", "3", "--every", "2", "-o", str(m)]) == 0
    capsys.readouterr()
    rc = main(["eval", spec, "--scheduler", "heun", "--steps", "3", "--mask", f"uniform={m}", "--num-samples", "4",
               "--batch", "4", "--bench-batch", "1", "--bench-repeats", "1", "--cache-dir", str(tmp_path / "c"),
               "-o", str(tmp_path / "out"), "--json"])
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rc == 0 and [r["method"] for r in rows] == ["original", "uniform"]
    assert rows[1]["macs_ratio"] < 1 and rows[1]["psnr"] < float("inf")


# --- issue 30, bugs 3, 4, 5 and 7: each failed on the code before the fix ---------------------------

def test_deepcopy_of_a_hooked_scheduler_leaves_the_original_alone(workbenches):
    """Bug 5: the copy's step() drove the original's row counter (and blockmask's own call_rows
    deep-copies the scheduler it is given)."""
    import copy

    import numpy as np
    from diffusers import DDIMScheduler, DDPMPipeline

    from blockmask.core.schedulers import call_rows
    from blockmask.hooks.stepping import BlockMaskConfig, apply_block_mask

    wb = workbenches("tiny-unet")
    mask = wb.baseline("deepcache", steps=K, interval=2)
    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler())

    def run():
        return pipe(batch_size=1, num_inference_steps=K, generator=torch.Generator().manual_seed(0),
                    output_type="np").images

    handle = apply_block_mask(pipe, BlockMaskConfig(mask))
    try:
        want = run()
        pipe.scheduler.set_timesteps(K)
        twin = copy.deepcopy(pipe.scheduler)
        x = torch.zeros(1, 3, 4, 4)
        for t in twin.timesteps:
            x = twin.step(torch.zeros_like(x), t, x).prev_sample
        assert handle.execution.step == 0  # the copy stepped itself only
        assert call_rows(pipe.scheduler) == list(range(K))
        assert np.array_equal(run(), want)
    finally:
        handle.remove()
    assert "step" not in pipe.scheduler.__dict__ and "set_timesteps" not in pipe.scheduler.__dict__


def test_own_sampler_on_a_hooked_scheduler(workbenches):
    """Bug 5, second half: blockmask's ``sample(model, scheduler=s)`` on the scheduler ``apply`` hooked
    (its ``call_rows`` steps a deep copy) ran 'more steps than the mask's rows'; now it is the masked run."""
    from diffusers import DDIMScheduler, DDPMPipeline

    wb = workbenches("tiny-unet")
    mask = wb.baseline("deepcache", steps=K, interval=2)
    pipe = DDPMPipeline(unet=wb.model, scheduler=DDIMScheduler())
    want = sample(wb.model, num_steps=K, scheduler=DDIMScheduler(), seed=0, mask=mask)
    with blockmask.apply(pipe, mask) as ex:
        got = sample(wb.model, num_steps=K, scheduler=pipe.scheduler, seed=0)
        assert ex.step == K and ex.skipped > 0
    assert torch.equal(got, want)


def test_bare_denoiser_run_stopped_early_does_not_leak_into_the_next(workbenches):
    """Bug 4: a run interrupted after 2 calls left the row counter at 2 for the next run."""
    from blockmask.hooks.stepping import BlockMaskConfig, apply_block_mask

    wb = workbenches("tiny-unet")
    mask = wb.baseline("deepcache", steps=K, interval=3)
    s = wb.scheduler()
    s.set_timesteps(K)
    x = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))

    def run(calls):
        outs = []
        for t in s.timesteps[:calls]:
            outs.append(wb.model(x, t).sample)
        return outs

    handle = apply_block_mask(wb.model, BlockMaskConfig(mask))
    try:
        want = run(K)
        run(2)  # stopped early
        assert handle.execution.step == 1
        got = run(K)
    finally:
        handle.remove()
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_counters_stay_readable_after_exit(workbenches):
    """Bug 7: leaving the context zeroed what ran and what was reused."""
    wb = workbenches("tiny-unet")
    mask = wb.baseline("deepcache", steps=K, interval=2)
    with MaskedExecution(wb.model, mask) as ex:
        sample(wb.model, num_steps=K, mask=mask, options=SampleOptions(execution=ex))
        inside = ex.computed, ex.skipped
    assert (ex.computed, ex.skipped) == inside and inside[1] > 0


def test_compiled_body_follows_the_forward_beneath_the_hook(workbenches):
    """Bug 3: the compiled body was cached by mode only, so a hook added beneath blockmask's later
    was silently bypassed by the stale body."""
    from diffusers.hooks import HookRegistry, ModelHook

    from blockmask.hooks.execution import compiled_body

    wb = workbenches("tiny-unet")
    module = wb.model.down_blocks[0].resnets[0]
    first = compiled_body(module, module.forward, "compiled")
    assert compiled_body(module, module.forward, "compiled") is first  # same forward: reused

    class Twice(ModelHook):
        def post_forward(self, module, output):
            return output * 2

    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(Twice(), "twice")
    try:
        assert compiled_body(module, module.forward, "compiled") is not first
    finally:
        registry.remove_hook("twice", recurse=False)
        module.__dict__.pop("forward", None)
        module.__dict__.pop("_blockmask_compiled", None)

