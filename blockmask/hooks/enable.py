"""Any diffusers pipeline in one call: ``blockmask.enable(pipe, spec)``, ``blockmask.summary(pipe)``,
``blockmask.disable(pipe)`` (cache-dit's ``enable_cache`` / diffusers' ``enable_cache`` shape), on top of
:func:`blockmask.hooks.stepping.apply_block_mask`'s layer (the same hooks and step counting).

    pipe = blockmask.enable(pipe, "fora:2")      # a preset, built for whatever K the pipeline runs
    pipe(prompt, num_inference_steps=28)
    print(blockmask.summary(pipe))               # cells computed / skipped per step of the last run
    blockmask.disable(pipe)

``spec`` is a preset by name with its parameters (``"ones"``, ``"deepcache:INTERVAL[:BRANCH]"``,
``"fora:INTERVAL"``, ``"blocks:INTERVAL"``, ``"uniform:EVERY"``), a :class:`BlockMaskConfig`, or a
mask: a (K, N) array, a :class:`~blockmask.io.maskfile.MaskFile`, a mask file, a shipped mask name or a hub
repo id / folder. The step count K is the pipeline's own: the mask is built when the scheduler's
``set_timesteps`` runs. A fixed-K mask runs at another K only with ``resample=True`` (rows aligned on
noise levels, :mod:`blockmask.core.resample`).

Every denoiser of the pipeline is masked: ``transformer`` or ``unet``, and ``transformer_2`` (Wan 2.2),
each with its own caches. Each denoiser's first step in a run computes every unit (nothing is cached
yet): for a normal run that is row 0 (all ones anyway); for a run that starts late (img2img) or a
second denoiser that takes over mid-run, it is the first step that denoiser sees. After that, rows
follow the noise level the scheduler just stepped from, not the number of calls.

Bad input raises one :class:`~blockmask.core.errors.BlockmaskError` line and leaves the pipeline unhooked;
a step-count mismatch found when the pipeline starts a run also disables blockmask on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from blockmask.core.errors import BlockmaskError, OptionError
from blockmask.core.forecast import check_reuse
from blockmask.core.mask import validate_mask
from blockmask.hooks.budget import Budget, check_budget, shipped_masks
from blockmask.hooks.execution import MaskedExecution
from blockmask.hooks.pipesteps import PipelineSteps
from blockmask.io.maskfile import MaskFile, load_mask_source
from blockmask.presets import (DEFAULTS, PRESET_HELP, PRESETS, FixedMask, Preset, plain_copy,  # noqa: F401  (re-exported)
                      row_levels, rows_of_calls)
from blockmask.core.validate import check_int
from blockmask.hooks.discover import discover_units
from blockmask.hooks.stepping import BlockMask, BlockMaskConfig, resolve_mask
from blockmask.io.models import bundled_masks

STATE = "_blockmask_enabled"


def parse_spec(spec, params: dict):
    """(Preset or mask source, config or None) from what the user passed to :func:`enable`."""
    config = None
    if callable(getattr(spec, "build", None)) and not isinstance(spec, (str, Path, MaskFile, np.ndarray)):
        if params:  # a mask source object: build(units, K, levels, scheduler, profile, calls, first) -> (K, N)
            raise OptionError(f"{', '.join(sorted(params))} apply to presets only")
        return spec, None
    if isinstance(spec, BlockMaskConfig):
        config = spec
        if config.preset is None and config.mask is None:
            raise OptionError("BlockMaskConfig needs a preset or a mask")
        if config.preset is not None:
            params = {**{k: getattr(config, k) for k in ("interval", "branch", "every") if getattr(config, k) is not None},
                      **params}
            return _preset(config.preset, [], params), config
        spec = config.mask
    if isinstance(spec, str) and not Path(spec).expanduser().exists():
        head, *args = spec.split(":")
        if head.lower() == "budget":
            if len(args) != 1 or params:
                raise OptionError(f"a budget spec is budget:FRACTION (e.g. 'budget:0.5'), got {spec!r}")
            return Budget(check_budget(args[0])), None
        if head.lower() in PRESETS:
            return _preset(head.lower(), args, params), None

        if "/" not in spec and not spec.endswith(".json") and spec not in bundled_masks():
            raise OptionError(f"unknown preset or mask {spec!r}; presets: {PRESET_HELP}; or a mask file, a shipped "
                              "mask name or a hub repo id")
    if params:
        raise OptionError(f"{', '.join(sorted(params))} apply to presets only, not to a mask")
    return spec, config


def _preset(name: str, args: list[str], params: dict) -> Preset:
    if name not in PRESETS:
        raise OptionError(f"unknown preset {name!r}; choose from {PRESET_HELP}")
    names = PRESETS[name]
    if len(args) > len(names):
        raise OptionError(f"preset {name} takes at most {len(names)} parameter(s) ({PRESET_HELP}), got {len(args)}")
    bad = sorted(set(params) - set(names))
    if bad:
        raise OptionError(f"preset {name} has no parameter {bad[0]!r} ({PRESET_HELP})")
    out = dict(DEFAULTS.get(name, {}))
    for key, raw in zip(names, args):
        try:
            out[key] = int(raw)
        except ValueError:
            raise OptionError(f"preset {name}: {key} must be an integer, got {raw!r}") from None
    out.update(params)
    for key, v in out.items():
        out[key] = check_int(f"{name} {key}", v, low=0 if key == "branch" else 1)
    return Preset(name, out)


# --- enable / disable / summary ----------------------------------------------------------------------------
@dataclasses.dataclass
class Enabled:
    spec: str
    handles: list[tuple[str, BlockMask]]  # (attribute, handle) per denoiser


def denoisers(pipe) -> list[tuple[str, torch.nn.Module]]:
    """(attribute, module) of every denoiser: ``transformer`` or ``unet``, then ``transformer_2``."""
    out = [(a, getattr(pipe, a, None)) for a in ("transformer", "unet", "transformer_2")]
    out = [(a, m) for a, m in out if isinstance(m, torch.nn.Module)]
    if not out:
        raise BlockmaskError(f"{type(pipe).__name__} has no .transformer or .unet to mask; pass a diffusers pipeline")
    return out


def enable(pipe, spec=None, *, budget: float | None = None, resample: bool | None = None, mode: str | None = None,
           check_fingerprint: bool | None = None, scheduler=None, reuse: str | None = None, **params):
    """Mask every denoiser of ``pipe`` with ``spec`` until :func:`disable`; returns ``pipe``.

    budget: instead of ``spec``, a fraction B in (0, 1] of the plain denoiser's MACs (also the spec
    ``"budget:B"``): a shipped mask made for this model, else the rule mask at the pipeline's own step
    count that keeps the most compute within B (:mod:`blockmask.hooks.budget` states the rule), chosen from
    the MACs counted at the pipeline's first call.
    params: a preset's parameters by name (``interval=``, ``branch=``, ``every=``).
    resample / mode / check_fingerprint / scheduler / reuse: as in :class:`BlockMaskConfig` (given here,
    they override a config's; ``reuse`` otherwise comes from a mask file's ``meta.reuse``).
    """
    if getattr(pipe, STATE, None) is not None:
        raise BlockmaskError("blockmask is already enabled on this pipeline; call blockmask.disable(pipe) first")
    if budget is not None:
        if spec is not None:
            raise OptionError("give either a spec or budget=, not both")
        if params:
            raise OptionError(f"{', '.join(sorted(params))} apply to presets only, not to a budget")
        source, config = Budget(check_budget(budget)), None
    elif spec is None:
        raise OptionError(f"enable() needs a spec ({PRESET_HELP}, a mask) or budget=")
    else:
        source, config = parse_spec(spec, params)
    config = config or BlockMaskConfig()
    resample = config.resample if resample is None else bool(resample)
    mode = config.mode if mode is None else mode
    reuse = reuse if reuse is not None else config.reuse
    strict = config.check_fingerprint if check_fingerprint is None else bool(check_fingerprint)
    sched = scheduler if scheduler is not None else (config.scheduler if config.scheduler is not None
                                                     else getattr(pipe, "scheduler", None))
    if sched is None or not hasattr(sched, "set_timesteps"):
        raise BlockmaskError(f"{type(pipe).__name__} has no scheduler to count steps from; pass scheduler=")
    models = denoisers(pipe)
    for attr, model in models:
        if model.__dict__.get("_blockmask_applied") is not None:
            raise BlockmaskError(f"pipe.{attr} already has a blockmask mask applied (blockmask.apply / apply_block_mask)")
    if reuse is None and isinstance(source, (str, Path, MaskFile)) and not isinstance(source, Preset):
        reuse = (source if isinstance(source, MaskFile) else load_mask_source(source)).reuse
    reuse = check_reuse(reuse or "hold")
    sources = [_source_for(model, source, resample, strict) for _, model in models]  # all checks before any hook
    state = Enabled(str(sources[0]), [])

    def undo():
        disable(pipe)

    setattr(pipe, STATE, state)
    try:
        for (attr, model), src in zip(models, sources):
            ex = MaskedExecution(model, None, mode=mode, reuse=reuse)
            steps = PipelineSteps(ex, sched, src, undo)
            ex.__enter__()
            handle = BlockMask(ex, steps)
            state.handles.append((attr, handle))
            steps.install()
            model._blockmask_applied = handle
    except BaseException:
        disable(pipe)
        raise
    return pipe


def _source_for(model, source, resample: bool, strict: bool):
    """A Preset (checked on these units) or a FixedMask that fits ``model``'s units (their order known
    without a forward where the adapter can tell it; the first real call checks it)."""
    units = discover_units(model, measure=False)
    if isinstance(source, Preset):
        source.mask(units, 4)  # refuses a rule that cannot apply to this model (deepcache on a transformer)
        return source
    if isinstance(source, Budget):
        return Budget(source.fraction, shipped_masks(model))  # one per denoiser: each chooses its own
    if callable(getattr(source, "build", None)) and not isinstance(source, MaskFile):
        return source  # a mask source object (blockmask.learn's trials)
    label = str(source) if isinstance(source, (str, Path)) else f"mask {type(source).__name__}"
    if isinstance(source, (str, Path)):
        source = load_mask_source(source)
    levels = None
    if isinstance(source, MaskFile):
        ts = (source.scheduler or {}).get("timesteps")
        levels = np.asarray(ts, float) if ts and len(ts) == source.num_steps else None
    if isinstance(source, np.ndarray) or hasattr(source, "detach"):
        source = validate_mask(source, units=len(units))
    mask = validate_mask(resolve_mask(model, source, check_fingerprint=strict), units=len(units))
    return FixedMask(mask, levels, resample, label)


def disable(pipe) -> None:
    """Undo :func:`enable`: every hook and scheduler wrapper goes; the pipeline runs as before."""
    state = getattr(pipe, STATE, None)
    if state is None:
        raise BlockmaskError("blockmask is not enabled on this pipeline (nothing to disable)")
    try:
        for _, handle in reversed(state.handles):  # scheduler wrappers unwind in reverse order
            handle.remove()
    finally:
        pipe.__dict__.pop(STATE, None)


@dataclasses.dataclass
class Summary:
    """Unit calls computed and skipped per step of the last run, over all masked denoisers."""

    spec: str
    units: dict[str, int]  # denoiser attribute -> number of units
    computed: list[int]  # (K,) per step
    skipped: list[int]
    macs_fraction: float | None = None  # MACs of the run's calls / the plain denoiser's, None before a run
    chosen: dict[str, str] = dataclasses.field(default_factory=dict)  # denoiser -> what runs (a budget's choice)

    @property
    def steps(self) -> int:
        return len(self.computed)

    @property
    def skipped_fraction(self) -> float:
        total = sum(self.computed) + sum(self.skipped)
        return sum(self.skipped) / total if total else 0.0

    def table(self):
        """A pandas DataFrame: one row per step (step, computed, skipped)."""
        import pandas as pd

        return pd.DataFrame({"step": range(self.steps), "computed": self.computed, "skipped": self.skipped})

    def __str__(self) -> str:
        macs = "" if self.macs_fraction is None else f", {100 * self.macs_fraction:.1f}% of the plain MACs"
        picks = sorted(set(self.chosen.values()) - {self.spec})
        return (f"blockmask {self.spec}{' (' + '; '.join(picks) + ')' if picks else ''}: {self.steps} steps, "
                f"{sum(self.computed)} unit calls computed, {sum(self.skipped)} skipped "
                f"({100 * self.skipped_fraction:.1f}%){macs}")


def summary(pipe) -> Summary:
    """What the last run under :func:`enable` computed and skipped (readable after the run)."""
    state = getattr(pipe, STATE, None)
    if state is None:
        raise BlockmaskError("blockmask is not enabled on this pipeline (nothing to summarise)")
    k = max((h.steps.rows for _, h in state.handles), default=0)
    computed, skipped = [0] * k, [0] * k
    for _, h in state.handles:
        for row, c, s in h.steps.per_step():
            if 0 <= row < k:
                computed[row] += c
                skipped[row] += s
    macs = [h.steps.macs() for _, h in state.handles]
    plain = sum(m[1] for m in macs) if None not in macs else 0.0
    fraction = sum(m[0] for m in macs) / plain if plain > 0 else None
    return Summary(state.spec, {a: len(h.execution.units) for a, h in state.handles}, computed, skipped, fraction,
                   {a: h.steps.label for a, h in state.handles})
