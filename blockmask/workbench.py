"""The small public surface: a :class:`Workbench` around one model (used by the CLI and both apps)
and :func:`apply` for diffusers pipelines.

    >>> wb = Workbench.load("mnist-ddpm")
    >>> mf = wb.mask_file(wb.baseline("deepcache", steps=50, interval=3))
    >>> images = wb.generate(mf.mask, seed=0, num_images=4)

    >>> with blockmask.apply(pipe, "mask.json"):   # any diffusers pipeline with .unet/.transformer
    ...     image = pipe(num_inference_steps=50).images[0]
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from blockmask.adapters import adapter_for
from blockmask.core import baselines
from blockmask.core.errors import BlockmaskError, MaskError, OptionError
from blockmask.core.graph import ConsumerGraph
from blockmask.core.mask import validate_mask
from blockmask.core.rectify import Rectified, rectify
from blockmask.core.schedulers import calls_counter, make_scheduler, scheduler_info
from blockmask.core.units import Unit
from blockmask.core.validate import check_finite_tensors, check_float, check_int
from blockmask.hooks.costs import MacProfile, measure_macs
from blockmask.hooks.discover import consumer_graph, discover_units
from blockmask.hooks.execution import MODES
from blockmask.hooks.stepping import BlockMaskConfig, apply_block_mask
from blockmask.io.maskfile import MaskFile, load_mask_source
from blockmask.io.models import LoadedModel, load_model
from blockmask.learning import methods
from blockmask.learning.planner import plan
from blockmask.sampling.distributed import device_name, local_device
from blockmask.sampling.sample import Condition, SampleOptions, decode, load_prompt_file, sample

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16,
          "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_device(device: str | None) -> torch.device:
    if isinstance(device, torch.device):
        device = str(device)
    if device is not None and not isinstance(device, str):
        raise OptionError(f"device must be a string (cpu, cuda, cuda:N or auto), got {device!r}")
    if device in (None, "", "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise BlockmaskError(f"unknown device {device!r} (use cpu, cuda, cuda:N or auto)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BlockmaskError("device 'cuda' requested but no CUDA GPU is available")

    return local_device(dev)


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype:
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise OptionError(f"dtype {name} is not supported; choose from fp32, fp16, bf16")
        return name
    if name in (None, ""):
        return torch.float32
    if not isinstance(name, str) or name not in DTYPES:
        raise BlockmaskError(f"unknown dtype {name!r}; choose from fp32, fp16, bf16")
    return DTYPES[name]


MAX_STEPS = 10_000  # sampling steps K: beyond any scheduler's training timesteps
MAX_BATCH = 4096  # images per call


@dataclasses.dataclass
class Workbench:
    """One loaded model with its units, MACs, consumer graph and a scheduler kind."""

    loaded: LoadedModel
    scheduler_name: str = "ddim"
    device: torch.device = torch.device("cpu")

    @classmethod
    def load(cls, spec: str, *, device: str | None = "cpu", dtype: str | torch.dtype | None = None,
             init_seed: int = 0, scheduler: str = "ddim") -> "Workbench":
        if not isinstance(scheduler, str):
            raise OptionError(f"scheduler must be a name (ddim, ddpm, dpm++, euler), got {scheduler!r}")
        init_seed = check_int("init seed", init_seed, low=0, high=2**63 - 1)
        dev = resolve_device(device)
        lm = load_model(spec, device=dev, dtype=resolve_dtype(dtype), init_seed=init_seed)
        wb = cls(lm, scheduler, dev)
        wb.scheduler()  # validate the scheduler name early
        return wb

    # --- facts about the model --------------------------------------------------------------
    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model

    @property
    def default_guidance(self) -> float:
        """The model's own classifier-free guidance scale (``default_guidance_scale`` in a bundled model's
        blockmask.json), else 1 (no guidance); what ``blockmask sample/bench/eval`` use by default."""
        v = (self.loaded.info or {}).get("default_guidance_scale", 1.0)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise OptionError(f"{self.loaded.spec}: blockmask.json 'default_guidance_scale' must be a number, got {v!r}")
        return check_float("default guidance scale", v, low=1.0, high=1e4)

    @property
    def units(self) -> list[Unit]:
        return discover_units(self.model)

    @property
    def unit_names(self) -> list[str]:
        return [u.name for u in self.units]

    @property
    def macs(self) -> MacProfile:
        """MACs per model call, counted with this workbench's scheduler's calls per row (Heun: two)."""
        key, prof = self.__dict__.get("_macs_bound", (None, None))
        base = measure_macs(self.model)
        if key != (self.scheduler_name, id(base)):
            prof = base.with_calls(calls_counter(self.scheduler()))
            self.__dict__["_macs_bound"] = ((self.scheduler_name, id(base)), prof)
        return prof

    @property
    def graph(self) -> ConsumerGraph:
        return consumer_graph(self.model)

    def scheduler(self):
        return make_scheduler(self.scheduler_name, self.loaded.scheduler)

    def timesteps(self, steps: int) -> list[int]:
        steps = self._check_steps(steps)
        s = self.scheduler()
        s.set_timesteps(steps)
        return [int(t) for t in s.timesteps.tolist()]

    def _check_steps(self, steps) -> int:
        """A step count the scheduler can run: 1 .. its training timesteps."""
        high = getattr(self.scheduler().config, "num_train_timesteps", None) or MAX_STEPS
        return check_int("steps", steps, low=1, high=min(int(high), MAX_STEPS))

    # --- masks ------------------------------------------------------------------------------
    def baseline(self, kind: str, *, steps: int, seed: int = 0, interval: int = 3, branch: int = 0, every: int = 2,
                 skip: float | None = None, macs_ratio: float | None = None) -> np.ndarray:
        if not isinstance(kind, str) or kind not in baselines.BASELINES:
            raise OptionError(f"unknown baseline {kind!r}; choose from {', '.join(baselines.BASELINES)}")
        steps = self._check_steps(steps)
        seed = check_int("seed", seed, low=0, high=2**63 - 1)
        interval = check_int("interval", interval, low=1)
        branch = check_int("branch id", branch, low=0)
        every = check_int("every", every, low=1)
        if skip is not None:
            skip = check_float("skip", skip, low=0, high=1)
        if macs_ratio is not None:
            macs_ratio = check_float("MAC ratio", macs_ratio, low=0, high=1, low_open=True)
        n = len(self.units)
        if kind == "ones":
            return baselines.ones(steps, n)
        if kind == "deepcache":
            return baselines.deepcache(self.units, steps, interval=interval, branch=branch)
        if kind == "fora":
            return baselines.fora(steps, n, interval=interval, keep=np.array([u.residual for u in self.units]))
        if kind == "blocks":
            return baselines.block_cache(steps, n, interval=interval)
        if kind == "uniform":
            return baselines.uniform(steps, n, every=every, keep=np.array([u.residual for u in self.units]))
        if kind == "random":
            p = self.macs
            outer = {u.parent for u in self.units}
            return baselines.random_mask(steps, n, seed=seed, skip=skip, macs_ratio=macs_ratio,
                                         unit_macs=p.unit_macs, remainder=p.remainder,
                                         eligible=np.array([u.index not in outer for u in self.units]))
        raise BlockmaskError(f"unknown baseline {kind!r}; choose from {', '.join(baselines.BASELINES)}")

    def method(self, name: str, *, steps: int, target_macs: float, config=None, condition: Condition | None = None,
               progress: bool = False, **options) -> tuple[np.ndarray, dict]:
        """(mask, meta) from one of the other methods (``feature-change``, ``router``, ``global``;
        :mod:`blockmask.learning.methods`) at MAC budget ``target_macs``; ``options`` set its config's fields."""

        if config is None:
            config = methods.config_for(name, **options)
        elif options:
            raise BlockmaskError("pass either a config or options, not both")
        return methods.produce(self, name, steps=steps, target_macs=target_macs, config=config, condition=condition,
                               progress=progress)

    def mask_file(self, mask: np.ndarray, meta: dict | None = None) -> MaskFile:
        mask = validate_mask(mask, units=len(self.units))
        if meta is not None and not isinstance(meta, dict):
            raise OptionError(f"meta must be a dict, got {type(meta).__name__}")
        p = self.macs
        meta = {**(meta or {}), "macs": {"total": p.total(mask), "baseline": p.baseline(mask.shape[0]),
                                         "ratio": p.ratio(mask), "model_calls": p.model_calls(mask.shape[0])}}
        return MaskFile(mask=mask, units=self.unit_names, model=self.loaded.spec, fingerprint=self.loaded.fingerprint,
                        scheduler=scheduler_info(self.scheduler(), mask.shape[0]), meta=meta)

    def load_mask(self, source: str | Path | bytes, *, steps: int | None = None,
                  max_bytes: int | None = None) -> tuple[MaskFile, list[str]]:
        """Load and check a mask against this model; returns (file, warnings). ``source``: a mask file,
        bytes, the name of a shipped mask (``mnist-ddpm-050steps-b35``), a folder written by
        ``MaskFile.save_pretrained`` or a hub repo id (:func:`blockmask.io.maskfile.load_mask_source`; a hub
        file over ``max_bytes`` is refused before it is downloaded)."""
        if not isinstance(source, (str, Path, bytes)):
            raise OptionError(f"mask source must be a path, a shipped mask name or bytes, got {type(source).__name__}")
        if steps is not None:
            steps = check_int("steps", steps, low=1, high=MAX_STEPS)
        mf = (MaskFile.loads(source, "uploaded mask") if isinstance(source, bytes)
              else load_mask_source(source, max_bytes=max_bytes))
        fitted = mf.fit(self.unit_names)
        warnings = fitted.check(units=self.unit_names, fingerprint=self.loaded.fingerprint, steps=steps)
        if fitted is not mf:  # padded with always-run columns: say so, with the count
            warnings.append(f"mask names {len(mf.units)} of the model's {len(self.unit_names)} units; the other "
                            f"{len(self.unit_names) - len(mf.units)} always run (MAC ratio {self.macs.ratio(fitted.mask):.1%})")
        mf = fitted
        ts = mf.scheduler.get("timesteps")
        if ts and ts != self.timesteps(mf.num_steps):
            warnings.append(f"mask was made for other timesteps ({mf.scheduler.get('class', '?')}); "
                            f"current scheduler is {self.scheduler_name}")
        return mf, warnings

    def rectify(self, mask: np.ndarray, *, reuse: str = "hold") -> Rectified:
        """Dead work removed (METHOD.md §4) under ``reuse`` ("hold" or "forecast", :mod:`blockmask.core.forecast`)."""
        return rectify(validate_mask(mask, units=len(self.units)), self.graph, reuse)

    def plan(self, budget: float, *, unit: str = "macs", ref_steps: int = 50, **options):
        """The best schedule (step count, scheduler, mask) for ``budget``: a fraction of the plain
        model's MACs at ``ref_steps`` steps (``unit="macs"``) or seconds per run on this device
        (``unit="seconds"``); chosen on calibration seeds, checked on disjoint validation seeds, never
        below plain fewer steps there (:mod:`blockmask.learning.planner`; ``options``: :class:`~blockmask.learning.planner.Planner`'s)."""

        return plan(self, budget, unit=unit, ref_steps=ref_steps, **options)

    # --- running ----------------------------------------------------------------------------
    def condition(self, *, class_label: int | list[int] | None = None, guidance_scale: float = 1.0,
                  prompt_file: str | None = None) -> Condition:
        c = load_prompt_file(prompt_file) if prompt_file else Condition()
        if class_label is not None:
            labels = [class_label] if not isinstance(class_label, (list, tuple)) else list(class_label)
            if not labels:
                raise OptionError("class labels must not be empty")
            top = self._max_label()
            c.class_labels = [check_int("class label", v, low=0) for v in labels]
            bad = [v for v in c.class_labels if top is not None and v > top]
            if bad:
                raise OptionError(f"class label {bad[0]} is out of range: the model has {top + 1} classes (0..{top})")
        c.guidance_scale = check_float("guidance scale", guidance_scale, low=0, high=1e4)
        return c

    def _max_label(self) -> int | None:
        n = adapter_for(self.model).num_classes(self.model)
        return None if n is None else n - 1

    def generate(self, mask: np.ndarray | None, *, steps: int | None = None, seed: int = 0, num_images: int = 1,
                 condition: Condition | None = None, progress: bool | Callable[[int, int], None] = False,
                 mode: str = "eager", reuse: str = "hold") -> torch.Tensor:
        """Final latents for ``num_images`` samples (mask=None: the plain model). ``progress``: True for a
        tqdm bar, or a function called with (steps done, K) after every step. ``reuse``: what a reused
        unit returns, its last value ("hold") or a forecast (:mod:`blockmask.core.forecast`)."""
        num_images = check_int("number of images", num_images, low=1, high=MAX_BATCH)
        seed = check_int("seed", seed, low=0, high=2**63 - 1)
        if mode not in MODES:
            raise OptionError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if condition is not None and not isinstance(condition, Condition):
            raise OptionError(f"condition must be a blockmask.sampling.sample.Condition, got {type(condition).__name__}")
        if condition is not None:
            check_float("guidance scale", condition.guidance_scale, low=0, high=1e4)
        if mask is not None:
            mask = validate_mask(mask, units=len(self.units))
        if steps is None and mask is None:
            raise OptionError("give a mask or a number of steps")
        k = self._check_steps(steps if steps is not None else mask.shape[0])
        if mask is not None and mask.shape[0] != k:
            raise MaskError(f"mask has {mask.shape[0]} steps (rows), sampling uses {k}")
        lat = sample(self.model, num_steps=k, mask=mask, scheduler=self.scheduler(), seed=seed, batch=num_images,
                     condition=condition, options=SampleOptions(callback=progress if callable(progress) else None,
                                                                progress=progress is True, mode=mode, reuse=reuse))
        check_finite_tensors([("final latents", lat)], "sampling")  # finite in, finite out
        return lat

    def images(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or latents.ndim != 4 or not latents.is_floating_point():
            raise OptionError(f"latents must be a float (B, C, H, W) tensor, got {type(latents).__name__}"
                              + (f" of shape {tuple(latents.shape)}" if isinstance(latents, torch.Tensor) else ""))
        imgs = decode(self.loaded, latents)
        check_finite_tensors([("decoded samples", imgs)], "decoding")
        return imgs

    def bench(self, mask: np.ndarray, *, batch: int = 1, repeats: int = 3, warmup: int = 1, seed: int = 0,
              condition: Condition | None = None, progress: Callable[[str], None] | None = None,
              options: SampleOptions = SampleOptions()) -> dict:
        """Unmasked vs masked wall time of a full sampling run, same batch, same process, after
        warm-up; runs alternate and the medians are compared. ``options``: the masked run's execution
        ``mode`` and ``reuse`` (:class:`blockmask.sampling.sample.SampleOptions`; its observers are not used)."""
        mode, reuse = options.mode, options.reuse
        repeats = check_int("repeats", repeats, low=1, high=10_000)
        warmup = check_int("warmup", warmup, low=0, high=10_000)
        batch = check_int("batch", batch, low=1, high=MAX_BATCH)
        mask = validate_mask(mask, units=len(self.units))
        steps = mask.shape[0]
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)

        def run(m):
            sync()
            t0 = time.perf_counter()
            self.generate(m, steps=steps, seed=seed, num_images=batch, condition=condition, mode=mode, reuse=reuse)
            sync()
            return time.perf_counter() - t0

        for _ in range(warmup):
            run(None), run(mask)
        plain, masked = [], []
        for r in range(repeats):
            plain.append(run(None))
            masked.append(run(mask))
            if progress:
                progress(f"repeat {r + 1}/{repeats}: plain {plain[-1]:.3f}s, masked {masked[-1]:.3f}s")
        tp, tm = float(np.median(plain)), float(np.median(masked))
        p = self.macs
        ratio = p.ratio(mask)
        speedup = tp / tm
        mac_speedup = 1.0 / ratio
        return {"device": str(self.device), "device_name": device_name(self.device), "batch": batch, "steps": steps,
                "mode": mode, "reuse": reuse,
                "repeats": repeats, "plain_s": tp, "masked_s": tm, "speedup": speedup, "macs_ratio": ratio,
                "mac_speedup": mac_speedup, "efficiency": speedup / mac_speedup,
                "plain_all_s": plain, "masked_all_s": masked, **bench_reliability(plain, masked, mac_speedup)}


def bench_reliability(plain: list[float], masked: list[float], mac_speedup: float) -> dict:
    """``reliable`` False, with the reasons, when the timing cannot be trusted: a speedup above the
    ideal (1 / MAC ratio), or runs spread (max - min) wider than their median (a busy machine)."""
    reasons = []
    speedup = float(np.median(plain)) / float(np.median(masked))
    if speedup > mac_speedup:
        reasons.append(f"speedup {speedup:.2f}x is above the ideal {mac_speedup:.2f}x (1 / MAC ratio)")
    for name, runs in (("plain", plain), ("masked", masked)):
        if len(runs) > 1 and max(runs) - min(runs) > float(np.median(runs)):
            reasons.append(f"{name} runs spread {min(runs):.3f}-{max(runs):.3f}s, wider than their median "
                           f"{float(np.median(runs)):.3f}s")
    return {"reliable": not reasons, "unreliable_reasons": reasons}


@contextlib.contextmanager
def apply(pipe_or_model, mask, *, check_fingerprint: bool = False, scheduler=None, mode: str = "eager"):
    """Mask a diffusers pipeline (or bare denoiser) for the duration of the ``with`` block.

    ``mask``: a MaskFile, a (K, N) array, a mask file, a shipped mask name or a hub repo id / folder.
    Rows are counted from the pipeline's scheduler (``scheduler=`` for a bare denoiser), one row per
    scheduler step (:mod:`blockmask.hooks.stepping`); every run starts from fresh caches and
    ``num_inference_steps`` must equal the mask's K. The same as
    ``apply_block_mask(pipe, BlockMaskConfig(mask))`` … ``remove_block_mask(pipe)``.
    """

    handle = apply_block_mask(pipe_or_model, BlockMaskConfig(mask, scheduler=scheduler,
                                                             check_fingerprint=check_fingerprint, mode=mode))
    try:
        yield handle.execution
    finally:
        handle.remove()
