"""The real peer methods on blockmask's class-conditional pixel DiT, for the results table.

``dit_pipeline`` wraps ``Workbench.load("mnist-dit")`` in diffusers' own ``DiTPipeline``;
``cachedit_dbcache`` runs cache-dit's DBCache on that pipeline; ``count_run_macs`` counts a
whole run's MACs the way blockmask counts its own (``blockmask.hooks.costs.count_macs``).

Pitfalls, all handled here:

* ``DiTPipeline`` hard-codes the null label 1000 for CFG; this model's null label is 10, so only
  ``guidance_scale=1`` is valid.
* ``DiTPipeline.__call__`` takes no ``latents``; it draws ``randn(B, C, H, W)`` from the generator
  first, exactly like blockmask's sampler with explicit labels, so the two agree bitwise.
* cache-dit patches ``DiTPipeline.__call__`` on the *class*, and its ``DiTPatchFunctor`` replaces the
  transformer's ``forward`` on the *instance* (shared with the Workbench) and registers its first
  block's embedding again as a submodule ``_norm1_emb`` (extra ``state_dict`` keys); ``disable_cache``
  restores the class but leaves both on the model, so ``cachedit_dbcache`` removes them itself.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from diffusers import DDIMScheduler, DiTPipeline
from diffusers.models.autoencoders.vae import DecoderOutput

from blockmask.hooks.costs import count_macs as count_run_macs

__all__ = ["IdentityVAE", "dit_pipeline", "dit_plain_check", "cachedit_dbcache", "count_run_macs"]


class IdentityVAE(torch.nn.Module):
    """The "VAE" ``DiTPipeline`` needs for a pixel-space model: scaling factor 1, decode = identity."""

    def __init__(self, like: torch.nn.Module):
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=1.0)
        p = next(like.parameters())
        self.register_buffer("_anchor", torch.zeros(0, device=p.device, dtype=p.dtype), persistent=False)

    @property
    def device(self) -> torch.device:
        return self._anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return self._anchor.dtype

    def decode(self, latents: torch.Tensor) -> DecoderOutput:
        return DecoderOutput(sample=latents)


def dit_pipeline(wb) -> DiTPipeline:
    """diffusers' ``DiTPipeline`` around the Workbench's DiT (the same module, not a copy), DDIM from
    the model's own scheduler config (as blockmask's ``ddim``)."""
    pipe = DiTPipeline(transformer=wb.model, vae=IdentityVAE(wb.model),
                       scheduler=DDIMScheduler.from_config(wb.loaded.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe: DiTPipeline, labels, steps: int, seed: int) -> np.ndarray:
    """(B, 1, H, W) float32 images in [0, 1] from a guidance-1 pipeline run."""
    out = pipe(class_labels=[int(v) for v in labels], guidance_scale=1.0, num_inference_steps=steps,
               generator=torch.Generator().manual_seed(seed), output_type="pt").images
    return out.float().cpu().numpy()


def dit_plain_check(wb, steps: int = 10, labels=(3, 7)) -> dict:
    """Plain ``DiTPipeline`` vs blockmask's own sampler, same seed: max |diff| and bitwise equality."""
    labels = list(labels)
    cond = wb.condition(class_label=labels, guidance_scale=1.0)
    ours = wb.images(wb.generate(None, steps=steps, seed=0, num_images=len(labels), condition=cond)).numpy()
    theirs = _run(dit_pipeline(wb), labels, steps, 0)
    return {"bitwise": bool(np.array_equal(ours, theirs)), "max_abs_diff": float(np.abs(ours - theirs).max())}


def cachedit_dbcache(pipe: DiTPipeline, *, threshold: float, steps: int, labels, seed: int = 0,
                     warmup: int = 8) -> tuple[np.ndarray, dict]:
    """One run under cache-dit's DBCache (F1B0: block 0 always computed, its residual change decides
    whether blocks 1-5 are reused), then the pipeline made plain again.

    ``warmup`` is cache-dit's ``max_warmup_steps`` (its default 8: no caching in the first 8 steps).
    Returns (images (B, 1, H, W) float32 in [0, 1], {"cached_steps": [...], "computed": n, "steps": K}).
    """
    import cache_dit
    from cache_dit import DBCacheConfig

    tf = pipe.transformer
    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(
        Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=threshold, max_warmup_steps=warmup,
        enable_separate_cfg=False))
    try:
        images = _run(pipe, labels, steps, seed)
        stats = cache_dit.summary(pipe, logging=False)[0]
        cached = sorted(int(s) for s in stats.cached_steps)
    finally:
        cache_dit.disable_cache(pipe)
        for name in ("forward", "_norm1_emb", "_is_patched"):  # undo DiTPatchFunctor
            if name in vars(tf) or name in tf._modules:
                delattr(tf, name)
    return images, {"cached_steps": cached, "computed": steps - len(cached), "steps": steps}


if __name__ == "__main__":
    from blockmask.workbench import Workbench
    from blockmask.hooks.costs import format_macs

    torch.set_num_threads(1)
    wb = Workbench.load("mnist-dit")
    print("plain DiTPipeline vs blockmask sampler:", dit_plain_check(wb))

    pipe, labels, steps = dit_pipeline(wb), [3, 7], 20
    base_macs, before = count_run_macs(lambda: _run(pipe, labels, steps, 0))
    for thr in (0.05, 0.1, 0.2):
        macs, (imgs, info) = count_run_macs(
            lambda: cachedit_dbcache(pipe, threshold=thr, steps=steps, labels=labels))
        after = _run(pipe, labels, steps, 0)
        print(f"DBCache F1B0 thr={thr}: {format_macs(macs / len(labels))}/img vs plain "
              f"{format_macs(base_macs / len(labels))}/img, ratio {macs / base_macs:.3f}, "
              f"computed {info['computed']}/{steps}, cached steps {info['cached_steps']}, "
              f"max|diff| vs plain {np.abs(imgs - before).max():.3g}, plain afterwards bitwise: "
              f"{np.array_equal(after, before)}")
