"""Sampling with a mask: diffusers' scheduler loop around the (masked) denoiser.

The loop mirrors diffusers' DDPMPipeline / DiTPipeline (CFG batched cond-first, guidance on the
predicted noise, learned-sigma half dropped), so with an all-ones mask the samples are bitwise
the plain model's (tested).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from blockmask.adapters import Conditioning, adapter_for
from blockmask.core.errors import BlockmaskError
from blockmask.core.schedulers import call_rows, make_scheduler, row_starts, scheduler_rows, step as scheduler_step
from blockmask.core.validate import read_bytes
from blockmask.hooks.execution import MaskedExecution
from blockmask.io.models import LoadedModel


@dataclasses.dataclass
class Condition:
    """What to generate: per-sample class labels or prompt embeddings, and the guidance scale."""

    class_labels: list[int] | None = None
    prompt_embeds: torch.Tensor | None = None  # (L, D) or (B, L, D)
    prompt_mask: torch.Tensor | None = None
    negative_embeds: torch.Tensor | None = None
    guidance_scale: float = 1.0


def load_prompt_file(path) -> Condition:
    """Prompt embeddings from a safetensors file: ``prompt_embeds`` (+ ``prompt_attention_mask``,
    ``negative_prompt_embeds``), e.g. saved from a pipeline's ``encode_prompt``."""
    from safetensors.torch import load

    p = Path(path)
    raw = read_bytes(p, "prompt embeddings file", max_bytes=2**30)
    try:
        d = load(raw)
    except Exception as e:
        raise BlockmaskError(f"cannot read prompt embeddings {p}: {str(e).splitlines()[0][:120]}") from None
    if "prompt_embeds" not in d:
        raise BlockmaskError(f"{p} has no 'prompt_embeds' tensor (found: {', '.join(d) or 'nothing'})")
    for name in ("prompt_embeds", "negative_prompt_embeds"):
        t = d.get(name)
        if t is not None and (t.ndim not in (2, 3) or not t.is_floating_point() or not torch.isfinite(t).all()):
            raise BlockmaskError(f"{p}: '{name}' must be a finite float tensor (L, D) or (B, L, D), got "
                                 f"{t.dtype} {tuple(t.shape)}")
    m = d.get("prompt_attention_mask")
    if m is not None and (m.ndim not in (1, 2) or (m.is_floating_point() and not torch.isfinite(m).all())
                          or not bool(((m == 0) | (m == 1)).all())):
        raise BlockmaskError(f"{p}: 'prompt_attention_mask' must be 0/1 values (L) or (B, L), got {m.dtype} "
                             f"{tuple(m.shape)}" + ("" if torch.isfinite(m.float()).all() else " with NaN/inf"))
    emb, neg = d["prompt_embeds"], d.get("negative_prompt_embeds")
    if m is not None and m.shape[-1] != emb.shape[-2]:
        raise BlockmaskError(f"{p}: 'prompt_attention_mask' has {m.shape[-1]} tokens, 'prompt_embeds' {emb.shape[-2]}")
    if neg is not None and neg.shape[-2:] != emb.shape[-2:]:
        raise BlockmaskError(f"{p}: 'negative_prompt_embeds' {tuple(neg.shape)} must have the shape of "
                             f"'prompt_embeds' {tuple(emb.shape)} (L, D)")
    emb = d["prompt_embeds"]
    emb = emb[None] if emb.ndim == 2 else emb
    neg = d.get("negative_prompt_embeds")
    neg = neg[None] if neg is not None and neg.ndim == 2 else neg
    mask = d.get("prompt_attention_mask")
    mask = mask[None] if mask is not None and mask.ndim == 1 else mask
    return Condition(prompt_embeds=emb.float(), prompt_mask=mask, negative_embeds=None if neg is None else neg.float())


def build_conditioning(model, batch: int, condition: Condition, generator: torch.Generator) -> tuple[Conditioning, bool]:
    """(conditioning for the model call, whether CFG batching is on)."""
    adapter = adapter_for(model)
    labels = None
    if condition.class_labels is not None:
        n = adapter.num_classes(model)
        if n is None:
            raise BlockmaskError(f"{type(model).__name__} is not class-conditional; drop the class label")
        vals = list(condition.class_labels)
        if len(vals) == 1:
            vals = vals * batch
        if len(vals) != batch:
            raise BlockmaskError(f"got {len(vals)} class labels for {batch} images")
        bad = [v for v in vals if not 0 <= int(v) < n]
        if bad:
            raise BlockmaskError(f"class label {bad[0]} is out of range 0..{n - 1}")
        labels = torch.tensor([int(v) for v in vals], dtype=torch.long)
    cond = adapter.conditioning(model, batch, class_labels=labels, prompt_embeds=condition.prompt_embeds,
                                prompt_mask=condition.prompt_mask, generator=generator)
    cfg = condition.guidance_scale is not None and condition.guidance_scale > 1.0
    if cfg:
        if not adapter.supports_guidance(model):
            raise BlockmaskError(f"{type(model).__name__} has no unconditional branch; use guidance scale 1")
        cond = cond.cat(adapter.null_conditioning(model, cond, condition.negative_embeds))
    return cond, cfg


def denoise(model, adapter, scheduler, latents, t, cond: Conditioning, guidance_scale: float, cfg: bool) -> torch.Tensor:
    """One denoiser evaluation at timestep t → the (guided) prediction the scheduler consumes."""
    inp = torch.cat([latents, latents]) if cfg else latents
    inp = scheduler.scale_model_input(inp, t)
    out = adapter.forward(model, inp, t, cond)
    eps = adapter.split_output(model, out)
    if cfg:
        cond_eps, uncond_eps = eps.chunk(2)
        eps = uncond_eps + guidance_scale * (cond_eps - uncond_eps)
    return eps


def initial_noise(model, batch: int, generator: torch.Generator, scheduler) -> torch.Tensor:
    adapter = adapter_for(model)
    p = next(model.parameters())
    x = torch.randn((batch, *adapter.latent_shape(model)), generator=generator, dtype=p.dtype)
    return (x * scheduler.init_noise_sigma).to(p.device)


class SamplingRun:
    """THE sampling loop, one model call at a time: conditioning → initial noise → for each model call c,
    its mask row (:attr:`rows`), one (guided) denoiser evaluation and one ``scheduler.step``. Every
    scheduler works (Heun: two calls per row). :func:`sample`, the Δ_k and sensitivity probes
    (:mod:`blockmask.learning.scaling`) and the methods' measurements step through it.

    The same ``seed`` gives the same initial noise and scheduler noise, masked or not."""

    def __init__(self, model: torch.nn.Module, *, num_steps: int, scheduler=None, seed: int = 0, batch: int = 1,
                 condition: Condition | None = None):
        self.model, self.adapter = model, adapter_for(model)
        self.scheduler = scheduler if scheduler is not None else make_scheduler("ddim")
        self.condition = condition or Condition()
        self.generator = torch.Generator().manual_seed(int(seed))
        p = next(model.parameters())
        cond, self.cfg = build_conditioning(model, batch, self.condition, self.generator)
        self.cond = cond.to(p.device, p.dtype)
        self.scheduler.set_timesteps(num_steps)
        self.latents = initial_noise(model, batch, self.generator, self.scheduler)
        self.timesteps = self.scheduler.timesteps  # the model-call schedule (two calls per step for Heun)
        self.rows = call_rows(self.scheduler)  # the mask row of each model call
        self.num_rows = scheduler_rows(self.scheduler)
        self.starts = row_starts(self.rows)  # a row starts at its first call

    def __len__(self) -> int:
        return len(self.rows)

    def calls(self) -> list[tuple[int, float]]:
        """(mask row, timestep value) of every model call, in order."""
        return list(zip(self.rows, self.timesteps.tolist()))

    def call(self, c: int, execution: MaskedExecution | None = None) -> torch.Tensor:
        """Model call ``c``: the execution (if any) set to its row, the prediction, then the scheduler's
        step (:attr:`latents` moves on). Returns the prediction the scheduler consumed."""
        if execution is not None:
            execution.set_step(self.rows[c])
        eps = self.predict(c)
        self.advance(c, eps)
        return eps

    def predict(self, c: int, latents: torch.Tensor | None = None) -> torch.Tensor:
        """The (guided) prediction of model call ``c`` at ``latents`` (default: the run's own)."""
        return denoise(self.model, self.adapter, self.scheduler, self.latents if latents is None else latents,
                       self.timesteps[c], self.cond, self.condition.guidance_scale, self.cfg)

    def advance(self, c: int, eps: torch.Tensor) -> None:
        """The scheduler's step for model call ``c`` with prediction ``eps``."""
        self.latents = scheduler_step(self.scheduler, eps, self.timesteps[c], self.latents, self.generator)

    def keep(self, sl: slice) -> None:
        """Keep only samples ``sl`` of the batch (one process's share of it): latents and conditioning
        (a CFG-doubled conditioning keeps the same samples of both halves)."""
        batch = self.latents.shape[0]

        def cut(t):
            if t is None:
                return None
            return torch.cat([t[:batch][sl], t[batch:][sl]]) if self.cfg else t[sl]

        self.latents = self.latents[sl]
        c = self.cond
        self.cond = Conditioning(cut(c.class_labels), cut(c.encoder_hidden_states), cut(c.encoder_attention_mask))

    def row_done(self, c: int) -> bool:
        """Call ``c`` completes its row's step."""
        return c + 1 == len(self.rows) or self.rows[c + 1] != self.rows[c]

    def snapshot(self) -> tuple:
        """The state entering the next call: latents, scheduler (multistep history), RNG."""
        return self.latents, copy.deepcopy(self.scheduler), self.generator.get_state()

    def restore(self, snap: tuple) -> None:
        """Go back to a :meth:`snapshot` (the snapshot stays reusable)."""
        self.latents, sched, state = snap
        self.scheduler = copy.deepcopy(sched)
        self.generator.set_state(state)


@dataclasses.dataclass(frozen=True)
class SampleOptions:
    """How a masked run executes and who watches it: ``mode`` eager | compiled | graph (see
    :mod:`blockmask.hooks.execution`); ``reuse`` hold | forecast (:mod:`blockmask.core.forecast`;
    ignored with an ``execution`` the caller entered, which carries its own); a tqdm bar when
    ``progress``; ``callback(k, K)`` after each step; ``on_latents(k, x_k)`` with the latents after step k
    (B, C, H, W) (the apps' divergence plot)."""

    mode: str = "eager"
    reuse: str = "hold"
    execution: MaskedExecution | None = None
    progress: bool = False
    callback: Callable[[int, int], None] | None = None
    on_latents: Callable[[int, torch.Tensor], None] | None = None


@torch.no_grad()
def sample(model: torch.nn.Module, *, num_steps: int, mask: np.ndarray | None = None, scheduler=None,
           seed: int = 0, batch: int = 1, condition: Condition | None = None,
           options: SampleOptions = SampleOptions()) -> torch.Tensor:
    """Run the full sampling loop (:class:`SamplingRun`); returns the final latents (B, C, H, W).

    mask=None runs the plain model (no hooks at all). ``options``: execution mode, reuse, observers
    (:class:`SampleOptions`). The same ``seed`` gives the same initial noise and scheduler noise, masked
    or not.
    """
    o = options
    execution, mode, reuse, progress, callback, on_latents = (o.execution, o.mode, o.reuse, o.progress, o.callback,
                                                              o.on_latents)
    run = SamplingRun(model, num_steps=num_steps, scheduler=scheduler, seed=seed, batch=batch, condition=condition)
    if mask is not None and mask.shape[0] != run.num_rows:
        raise BlockmaskError(f"mask has {mask.shape[0]} steps but the scheduler runs {run.num_rows}")
    own = execution is None and mask is not None  # we enter (and reset) our own execution context
    ctx = execution if execution is not None else (MaskedExecution(model, mask, mode=mode, reuse=reuse) if own else None)
    if own:
        ctx.whole_run(run.calls())  # this run's mask is known whole, and its caches are nobody else's
    with ctx if own else contextlib.nullcontext():
        for c in tqdm(range(len(run)), disable=not progress, desc="sampling", leave=False):
            run.call(c, ctx)
            if run.row_done(c):
                if on_latents is not None:
                    on_latents(run.rows[c], run.latents)
                if callback is not None:
                    callback(run.rows[c] + 1, run.num_rows)
    return run.latents


@torch.no_grad()
def decode(lm: LoadedModel | torch.nn.Module, latents: torch.Tensor) -> torch.Tensor:
    """Final samples in [0, 1], float32 on CPU: pixel models directly, latent models through their VAE
    when one was loaded (without a VAE the latents' first 3 channels are min-max scaled for viewing)."""
    vae = getattr(lm, "vae", None)
    if vae is not None:
        sf = getattr(vae.config, "scaling_factor", 1.0)
        img = vae.decode(latents.to(vae.dtype) / sf).sample
        return (img / 2 + 0.5).clamp(0, 1).float().cpu()
    model = lm.model if isinstance(lm, LoadedModel) else lm
    if model.config.in_channels in (1, 3):
        return (latents / 2 + 0.5).clamp(0, 1).float().cpu()
    x = latents[:, :3].float().cpu()
    lo = x.amin(dim=(1, 2, 3), keepdim=True)
    hi = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x - lo) / (hi - lo + 1e-8)


def to_grid(images: torch.Tensor, nrow: int | None = None) -> np.ndarray:
    """(B, C, H, W) in [0, 1] → uint8 grid (H', W', 3)."""
    b, c, h, w = images.shape
    nrow = nrow or int(np.ceil(np.sqrt(b)))
    rows = int(np.ceil(b / nrow))
    grid = np.zeros((rows * (h + 2) + 2, nrow * (w + 2) + 2, 3), dtype=np.uint8)
    arr = (images.clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    if c == 1:
        arr = np.repeat(arr, 3, axis=1)
    for n in range(b):
        r, col = divmod(n, nrow)
        grid[2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + col * (w + 2): 2 + col * (w + 2) + w] = arr[n, :3].transpose(1, 2, 0)
    return grid


def timed(fn: Callable[[], torch.Tensor], device) -> tuple[torch.Tensor, float]:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0
