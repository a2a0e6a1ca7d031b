"""The race at one budget (issue 28, item 2): plain, plain with fewer steps, the best rule peer, the
planner's schedule and the current mask, on the same seeds, each with its MACs, measured time and PSNR
against the plain run, and a filmstrip of the predicted clean image x̂₀ at a few steps. Each lane runs
under its own reuse mode (:mod:`blockmask.core.forecast`): the planner's point under the frontier's
(:meth:`Frontier.reuse`), the current mask under the editor's, the peers always "hold".

x̂₀ is the scheduler's own ``pred_original_sample`` (DDIM, DDPM, Euler report it), captured by a
subclass of the scheduler's class on the run's own scheduler instance: copies the sampler makes
(``call_rows`` steps a deep copy on zeros) capture into their own list, never into this run's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np
import torch

from blockmask.core.errors import BlockmaskError
from blockmask.core.mask import mask_hash
from blockmask.learning.frontierfile import Frontier
from blockmask.sampling.sample import SampleOptions, sample, to_grid
from blockmask.viz.compare import MAX_IMAGES
from blockmask.viz.context import Draw, ModelContext
from blockmask.viz.frontier import check, load_point, macs_ratio, point_label
from blockmask.viz.presenter import check_reuse_mode
from blockmask.viz.prompts import condition

FRAMES = (0.2, 0.4, 0.6, 0.8, 1.0)  # filmstrip: x̂₀ after these fractions of the steps (comparable across K)
ENTRIES = ("plain", "fewer steps", "best rule", "planner", "current mask")
Progress = Callable[[float, str], None]


@dataclasses.dataclass(frozen=True)
class Lane:
    """One runner of the race."""

    role: str  # one of ENTRIES
    name: str  # what ran: "DDIM 25 steps", "DeepCache b0 N=3", the planner's provenance…
    steps: int
    mask: np.ndarray | None  # None: the plain model at ``steps``
    macs_ratio: float  # of the plain ref-step run
    seconds: float = math.nan
    psnr: float = math.nan  # vs the plain ref-step run, same seeds (inf: identical)
    image: np.ndarray | None = None  # (H, W, 3) uint8 grid of the batch
    film: np.ndarray | None = None  # (h, n·w, 3) uint8: x̂₀ of the first image at FRAMES
    film_steps: tuple[int, ...] = ()  # the 1-based step of each frame
    note: str = ""  # why a lane is empty (no rule within the budget…)
    reuse: str = "hold"  # what the lane's reused units return (blockmask.core.forecast): hold | forecast


@dataclasses.dataclass(frozen=True)
class Race:
    budget: float
    ref_steps: int
    seed: int
    num_images: int
    lanes: tuple[Lane, ...]
    device: str
    key: tuple = ()  # (current mask hash, budget, seed, n, current reuse mode, ctx key)

    def frame(self):
        """One row per lane (a pandas table, formatted as people read it)."""
        import pandas as pd

        rows = []
        for ln in self.lanes:
            ok = ln.image is not None
            rows.append({"run": ln.role, "schedule": ln.name, "K": ln.steps,
                         "MACs %": f"{100 * ln.macs_ratio:.1f} %" if math.isfinite(ln.macs_ratio) else "-",
                         "time (s)": f"{ln.seconds:.3f}" if ok else "-",
                         "PSNR vs plain (dB)": ("reference" if ln.role == "plain" else "identical"
                                                if math.isinf(ln.psnr) else f"{ln.psnr:.2f}") if ok else "-",
                         "note": ln.note})
        return pd.DataFrame(rows)


def film_rows(steps: int) -> list[int]:
    """The 0-based rows whose x̂₀ the filmstrip shows (distinct, in order)."""
    return sorted({min(steps - 1, max(0, round(f * steps) - 1)) for f in FRAMES})


def _forecast(name: str, reuse: str) -> str:
    return f"{name} · forecast reuse" if reuse == "forecast" else name


def lanes(ctx: ModelContext, fr: Frontier | None, budget: float, current: np.ndarray,
          reuse: str = "hold") -> list[Lane]:
    """The five runners at ``budget`` (a fraction of the plain ``ref_steps`` MACs), the current mask under
    ``reuse``; raises BlockmaskError for a budget outside (0, 1] or below the frontier's cheapest plan,
    or an unknown reuse mode."""

    reuse = check_reuse_mode(reuse)
    try:
        b = float(budget)
    except (TypeError, ValueError):
        raise BlockmaskError(f"budget must be a number in (0, 1], got {budget!r}") from None
    if not (0 < b <= 1):
        raise BlockmaskError(f"budget must be in (0, 1], got {budget!r}")
    ref = fr.ref_steps if fr is not None else int(np.asarray(current).shape[0])
    if fr is not None:
        check(fr, ctx)
    out = [Lane("plain", f"plain {ref} steps", ref, None, 1.0)]
    k = max(1, int(math.floor(b * ref + 1e-9)))  # DDIM: one call per step, MACs ∝ K
    out.append(Lane("fewer steps", f"plain {k} steps", k, None, k / ref))
    if fr is None:
        out.append(Lane("best rule", "-", ref, None, math.nan, note="no frontier for this model"))
        out.append(Lane("planner", "-", ref, None, math.nan, note="no frontier for this model"))
    else:
        ru = fr.points[(fr.points.kind == "peer rule") & (fr.points.macs_ratio.astype(float) <= b + 1e-9)]
        if ru.empty:
            out.append(Lane("best rule", "-", ref, None, math.nan, note=f"no rule peer within {100 * b:.0f} %"))
        else:
            r = ru.sort_values(["test_psnr", "macs_ratio"], ascending=[False, True]).iloc[0]
            kk, m = fr.schedule(r["name"])
            out.append(Lane("best rule", str(r["name"]), kk, m, float(r["macs_ratio"]),
                            note=f"best test PSNR of the rule peers within {100 * b:.0f} %"))
        pick = fr.at_budget(b)
        got = load_point(fr, ctx, pick["name"])
        mode = fr.reuse(pick["name"])
        out.append(Lane("planner", _forecast(point_label(pick), mode), got.steps, got.mask, float(pick["macs_ratio"]),
                        reuse=mode))
    cur = np.asarray(current, bool)
    out.append(Lane("current mask", _forecast("current mask", reuse), cur.shape[0], cur, macs_ratio(ctx, fr, cur),
                    note="" if macs_ratio(ctx, fr, cur) <= b + 1e-9 else f"over the {100 * b:.0f} % budget",
                    reuse=reuse))
    return out


def _capturing(scheduler, sink: list):
    """``scheduler`` with its class swapped for a subclass whose ``step`` appends
    ``pred_original_sample`` (or None) to ``sink``; deep copies get their own copy of ``sink``."""
    import inspect

    base = type(scheduler)
    takes = "generator" in inspect.signature(scheduler.step).parameters

    class Capturing(base):
        def step(self, *a, **kw):
            out = super().step(*a, **kw)
            self._bm_sink.append(getattr(out, "pred_original_sample", None))
            return out

    Capturing.__name__ = base.__name__
    scheduler.__class__ = Capturing
    scheduler.__dict__["_bm_sink"] = sink
    scheduler.__dict__["_blockmask_takes_generator"] = takes
    return scheduler


def _run(ctx: ModelContext, lane: Lane, seed: int, n: int, cond) -> tuple[torch.Tensor, float, list]:
    sink: list = []
    rows: list = []  # sink length at the end of each row (Heun: two calls per row)
    sched = _capturing(ctx.wb.scheduler(), sink)
    dev = ctx.wb.device
    with ctx.lock:
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        lat = sample(ctx.wb.model, num_steps=lane.steps, mask=lane.mask, scheduler=sched, seed=seed, batch=n,
                     condition=cond,
                     options=SampleOptions(on_latents=lambda k, x: rows.append(len(sink)), reuse=lane.reuse))
        if dev.type == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    x0 = [sink[i - 1] if 0 < i <= len(sink) else None for i in rows]
    return ctx.wb.images(lat), dt, x0


def run(ctx: ModelContext, fr: Frontier | None, budget: float, current: np.ndarray, draw: Draw = Draw(), *,
        progress: Progress | None = None, reuse: str = "hold") -> Race:
    """Run the five lanes (one timed run each, one after the other, same seeds ``draw``; its prompt is
    not used: a text model races on random embeddings per seed) and judge each against the plain run;
    the current mask runs under ``reuse``, the planner's point under its own. Times are single runs: on
    a busy CPU they are noisy (the generate panel's repeats are the careful measurement)."""
    n, seed = int(draw.num_images), draw.seed
    if not 1 <= n <= MAX_IMAGES:
        raise BlockmaskError(f"images must be 1..{MAX_IMAGES}, got {draw.num_images!r}")
    todo = lanes(ctx, fr, budget, current, reuse)
    cond = condition(ctx, draw.class_label, float(draw.guidance_scale), None)
    done, ref_img = [], None
    for j, ln in enumerate(todo):
        if progress:
            progress(j / len(todo), f"race: {ln.role} ({ln.name}, K={ln.steps})")
        if ln.name == "-":
            done.append(ln)
            continue
        imgs, dt, x0 = _run(ctx, ln, int(seed), n, cond)
        if ref_img is None:
            ref_img = imgs
        mse = float(((imgs - ref_img) ** 2).mean())
        psnr = math.inf if mse == 0 else 10 * math.log10(1.0 / mse)
        rows = film_rows(ln.steps)
        frames = [x0[k] for k in rows if k < len(x0) and x0[k] is not None]
        film = None
        if len(frames) == len(rows):
            film = to_grid(ctx.wb.images(torch.cat([f[:1].to(ctx.wb.device) for f in frames])).float().cpu(),
                           nrow=len(frames))
        done.append(dataclasses.replace(ln, seconds=dt, psnr=psnr, image=to_grid(imgs), film=film,
                                        film_steps=tuple(k + 1 for k in rows) if film is not None else (),
                                        note=ln.note if film is not None else
                                        (ln.note + "; " if ln.note else "") + "this scheduler reports no x̂₀"))
    if progress:
        progress(1.0, "done")

    return Race(float(budget), todo[0].steps, int(seed), n, tuple(done), _device(ctx),
                (mask_hash(np.asarray(current, bool)), float(budget), int(seed), n, todo[-1].reuse, ctx.key))


def _device(ctx: ModelContext) -> str:
    d = ctx.wb.device
    if d.type == "cuda":
        return torch.cuda.get_device_name(d)
    return f"CPU ({torch.get_num_threads()} threads)"
