"""``blockmask.learn(pipe, ...)``: a mask for a loaded pipeline, learned from the pipeline's own calls.

What it does, exactly (no per-step gradient training here: that trainer, :mod:`blockmask.learning.train`,
drives the denoiser with blockmask's own sampler and conditioning, not an arbitrary pipeline):

1. Runs ``pipe(...)`` with your prompts / class labels at ``steps`` steps on a few seeds
   (``search.seeds``), under ``enable(pipe, "ones")`` — bit for bit the plain pipeline — so its text
   encoders, its CFG, its scheduler and its VAE-free output (``output_type="latent"``) make the
   reference. That first call also counts the denoiser's MACs per unit (:mod:`blockmask.hooks.pipesteps`).
2. Scores candidate masks on the same seeds by the mean squared difference of their final outputs
   from the reference (calibrated selection, as :func:`blockmask.learning.refine.best_start` does with
   blockmask's own sampler): a shipped mask for this model, DeepCache / FORA / block caching at every
   interval and their cached rows with n evenly spaced full steps (:mod:`blockmask.hooks.budget`). For each
   family the ``search.per_family`` candidates with the most compute within the budget are scored; the
   lowest error wins. A candidate whose run costs more than the budget (counted over the whole run)
   is dropped.
3. Refines it (``search.passes`` > 0) by local moves that keep its cost: swapping neighbouring rows (moving a
   full step earlier or later). A move is kept only when it lowers the error on *every* seed.

Cost: ``len(seeds)`` pipeline runs per candidate and per move — about
``len(seeds) × (1 + candidates + passes × (K − 2))`` runs. Nothing is written unless ``output=`` is
given, the pipeline's models are used in place (nothing is loaded again), and the pipeline is left
unhooked. Random prompt embeddings are used only with ``random_embeddings=True``, with a warning.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import numpy as np
import torch

from blockmask.core.errors import OptionError, warn
from blockmask.core.schedulers import scheduler_info
from blockmask.core.validate import check_int
from blockmask.hooks.budget import Budget, check_budget, shipped_masks
from blockmask.hooks.enable import STATE, denoisers, disable, enable, plain_copy, summary
from blockmask.io.maskfile import MaskFile
from blockmask.io.models import fingerprint

EMBED_DIMS = ("cross_attention_dim", "joint_attention_dim", "caption_channels", "text_dim", "text_embed_dim")


class _Trial:
    """A mask source for :func:`blockmask.enable` whose mask can be swapped between runs."""

    def __init__(self):
        self.mask: np.ndarray | None = None  # None: all ones

    def __str__(self) -> str:
        return "learn trial"

    def build(self, units, k, *_context) -> np.ndarray:
        return np.ones((k, len(units)), bool) if self.mask is None else self.mask


def _call_params(pipe) -> set[str]:
    try:
        return set(inspect.signature(pipe.__call__).parameters)
    except (TypeError, ValueError):
        return set()


def _random_embeddings(pipe, n: int, gen: torch.Generator) -> dict:
    """Random (n, 8, D) prompt embeddings (and pooled ones) shaped for this pipeline's denoiser."""

    cfg = dict(denoisers(pipe)[0][1].config)
    dim = next((cfg[k] for k in EMBED_DIMS if cfg.get(k)), None)
    params = _call_params(pipe)
    if dim is None or "prompt_embeds" not in params:
        raise OptionError(f"random_embeddings: cannot tell the prompt embedding size of {type(pipe).__name__}; "
                          "pass prompts=[...] or prompt_embeds=")
    out = {}
    for neg in ("", "negative_"):
        if f"{neg}prompt_embeds" not in params:
            continue
        out[f"{neg}prompt_embeds"] = torch.randn(n, 8, int(dim), generator=gen)
        if f"{neg}prompt_attention_mask" in params:
            out[f"{neg}prompt_attention_mask"] = torch.ones(n, 8, dtype=torch.long)
        if f"{neg}pooled_prompt_embeds" in params and cfg.get("pooled_projection_dim"):
            out[f"{neg}pooled_prompt_embeds"] = torch.randn(n, int(cfg["pooled_projection_dim"]), generator=gen)
    return out


def _conditioning(pipe, prompts, class_labels, random_embeddings: bool, call_kwargs: dict) -> dict:
    params = _call_params(pipe)
    given = sum(x is not None for x in (prompts, class_labels)) + bool(random_embeddings)
    if given > 1:
        raise OptionError("give one of prompts=, class_labels= or random_embeddings=True")
    if prompts is not None:
        if isinstance(prompts, str) or not prompts or not all(isinstance(p, str) for p in prompts):
            raise OptionError("prompts must be a non-empty list of strings")
        if "prompt" not in params:
            raise OptionError(f"{type(pipe).__name__} takes no prompt; use class_labels= or no conditioning")
        return {"prompt": list(prompts)}
    if class_labels is not None:
        if "class_labels" not in params:
            raise OptionError(f"{type(pipe).__name__} takes no class_labels")
        labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
        if not labels or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in labels):
            raise OptionError(f"class_labels must be non-negative integers, got {class_labels!r}")
        return {"class_labels": labels}
    if random_embeddings:
        warn("learn(random_embeddings=True): the mask is learned on random prompt embeddings, not on your "
             "prompts; it may not suit real prompts")
        return _random_embeddings(pipe, 1, torch.Generator().manual_seed(12345))
    text = "prompt" in params and not any(k in call_kwargs for k in ("prompt", "prompt_embeds"))
    if text:
        raise OptionError(f"{type(pipe).__name__} is a text pipeline: pass prompts=[...] (its text encoders "
                          "encode them), or prompt_embeds=, or random_embeddings=True")
    return {}


@dataclasses.dataclass(frozen=True)
class LearnSearch:
    """How :func:`learn` searches: the generator ``seeds`` every candidate is scored on, the
    ``per_family`` candidates with the most compute within the budget scored per rule family, and
    ``passes`` of local moves on the best (module docstring)."""

    seeds: tuple[int, ...] | list[int] | int = (0, 1)
    per_family: int = 2
    passes: int = 1


def learn(pipe, *, prompts=None, class_labels=None, steps: int, budget: float, search: LearnSearch = LearnSearch(),
          output=None, random_embeddings: bool = False, **call_kwargs):
    """A mask for ``pipe`` at ``steps`` steps within ``budget`` (a fraction of the plain MACs), learned
    from the pipeline's own runs (module docstring; ``search``: seeds, candidates, passes). Returns a
    :class:`~blockmask.io.maskfile.MaskFile` (``.mask`` is the (K, N) array; ``meta["learn"]`` has the
    scores); written to ``output`` only if given. ``call_kwargs`` go to every ``pipe(...)`` call
    (guidance_scale=, height=, prompt_embeds=, ...; ``output_type`` defaults to "latent")."""
    moved = sorted({"seeds", "per_family", "passes"} & set(call_kwargs))
    if moved:
        raise OptionError(f"learn() takes {', '.join(moved)} in search=blockmask.LearnSearch(...), not as a keyword")
    seeds, per_family, passes = search.seeds, search.per_family, search.passes
    output_type = call_kwargs.pop("output_type", "latent")

    if getattr(pipe, STATE, None) is not None:
        raise OptionError("blockmask is enabled on this pipeline; call blockmask.disable(pipe) before learn()")
    k = check_int("steps", steps, low=1)
    b = check_budget(budget)
    seeds = [check_int("seed", s, low=0) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds])]
    if not seeds:
        raise OptionError("learn() needs at least one seed")
    per_family, passes = check_int("per_family", per_family, low=1), check_int("passes", passes, low=0)
    cond = _conditioning(pipe, prompts, class_labels, random_embeddings, call_kwargs)
    models = denoisers(pipe)
    trial = _Trial()
    enable(pipe, trial)
    try:
        def run(seed: int) -> torch.Tensor:
            out = pipe(num_inference_steps=k, generator=torch.Generator().manual_seed(seed), output_type=output_type,
                       return_dict=False, **cond, **call_kwargs)[0]
            return torch.as_tensor(np.asarray(out) if not isinstance(out, torch.Tensor) else out).float().clone()

        ref = [run(s) for s in seeds]  # all ones: the plain pipeline, bit for bit
        steps_obj = pipe._blockmask_enabled.handles[0][1].steps
        profile, units = steps_obj.profile, steps_obj.units
        if profile is None:
            raise OptionError("learn() needs the MACs of the denoiser's first call, which were not counted "
                              "(a denoiser compiled as a whole?)")
        calls = np.bincount(steps_obj.rows_of_calls, minlength=k)[:k].astype(float) if steps_obj.rows_of_calls else None
        power = float(np.mean([float(r.pow(2).mean()) for r in ref])) or 1.0

        def score(mask) -> tuple[list[float], float] | None:
            trial.mask = mask
            errs = [float((run(s) - r).pow(2).mean()) / power for s, r in zip(seeds, ref)]
            frac = summary(pipe).macs_fraction
            return None if frac is None or frac > b * (1 + 1e-9) else (errs, frac)

        src = Budget(b, shipped_masks(models[0][1]))
        pool: dict[str, list] = {}
        for name, mask, _ in src.candidates(units, k, steps_obj.levels, pipe.scheduler):
            r = profile.ratio(mask, calls)
            if r <= b * (1 + 1e-9):
                family = "shipped" if name.startswith("shipped") else name.split(":")[0].split(" rows")[0]
                pool.setdefault(family, []).append((r, name, mask))
        scored = {}
        for family, items in pool.items():
            for r, name, mask in sorted(items, key=lambda x: -x[0])[:per_family]:
                res = score(mask)
                if res is not None:
                    scored[name] = (res[0], res[1], mask)
        if not scored:
            raise OptionError(f"budget {b:g} is out of reach at {k} steps for this pipeline")
        best = min(scored, key=lambda n: np.mean(scored[n][0]))
        errs, frac, mask = scored[best]
        start_error, accepted, tried = float(np.mean(errs)), 0, 0
        for _ in range(passes):
            moved = False
            for row in range(1, k - 1):
                if np.array_equal(mask[row], mask[row + 1]):
                    continue
                cand = mask.copy()
                cand[[row, row + 1]] = cand[[row + 1, row]]
                tried += 1
                res = score(cand)
                if res is not None and all(e2 < e1 for e1, e2 in zip(errs, res[0])):
                    mask, (errs, frac), moved, accepted = cand, res, True, accepted + 1
            if not moved:
                break
    finally:
        disable(pipe)
    meta = {"learn": {"steps": k, "budget": b, "seeds": seeds, "start": best, "start_error": start_error,
                      "error": float(np.mean(errs)), "macs_ratio": frac, "refine": {"passes": passes, "tried": tried,
                                                                                    "accepted": accepted},
                      "candidates": {n: {"error": float(np.mean(v[0])), "macs_ratio": v[1]} for n, v in scored.items()},
                      "conditioning": sorted(cond) or ["none"], "random_embeddings": bool(random_embeddings)}}
    model = models[0][1]
    mf = MaskFile(mask=mask, units=[u.name for u in units], model=type(model).__name__,
                  fingerprint=fingerprint(model), scheduler=scheduler_info(plain_copy(pipe.scheduler), k), meta=meta)
    if output is not None:
        mf.save(Path(output))
    return mf
