"""Evaluation harness: MACs, measured speed, FID/KID/IS (torch-fidelity) and fidelity to the
unmasked model (MSE/PSNR, same seeds) for a table of masks and baselines (METHOD.md §5–7).

Every row's samples and metrics are cached by content (model fingerprint + weights hash, mask hash,
scheduler, steps, seeds, N, conditioning, FID extractor, reference data, benchmark batch/repeats,
device, dtype, versions: :func:`row_key`), so re-running a table only computes new rows. The cache
is signed and pickle-free (:mod:`blockmask.eval.cache`). FID is
only comparable at equal N: N is printed next to every FID.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pickle
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from blockmask.adapters import adapter_for
from blockmask.core.errors import BlockmaskError
from blockmask.core.mask import mask_hash
from blockmask.core.validate import check_float, check_int
from blockmask.data.classifier import register_fidelity_extractor
from blockmask.data.mnist import load_mnist, to_model_range
from blockmask.eval.cache import SignedCache, npy_bytes, npy_load
from blockmask.sampling import distributed
from blockmask.sampling.distributed import device_name
from blockmask.sampling.sample import Condition


@dataclasses.dataclass
class Method:
    """One row: a mask at K steps, or the plain model at ``steps`` (fewer-steps baseline)."""

    name: str
    mask: np.ndarray | None  # None: plain model
    steps: int


def weights_hash(model: torch.nn.Module) -> str:
    cached = getattr(model, "_blockmask_whash", None)
    if cached:
        return cached
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = p.detach().flatten()
        t = t if t.numel() <= 1_000_000 else t[:: max(1, t.numel() // 1_000_000)]
        h.update(t.float().cpu().numpy().tobytes())
    model._blockmask_whash = h.hexdigest()[:16]
    return model._blockmask_whash


def _labels(wb, n: int, class_label: int | None) -> list[int] | None:
    classes = adapter_for(wb.model).num_classes(wb.model)
    if classes is None:
        return None
    return [class_label] * n if class_label is not None else [i % min(classes, 10) for i in range(n)]


def generate_set(wb, method: Method, *, n: int, batch: int, seed: int, guidance: float, class_label: int | None,
                 progress: Callable[[str], None] | None = None) -> np.ndarray:
    """n samples in [0, 1] float32 (n, C, H, W); batch b uses seed ``seed + b``. Under a multi-process
    launch the batches are shared out and gathered (same images as one process)."""

    labels = _labels(wb, n, class_label)
    mine = distributed.shard(list(enumerate(range(0, n, batch))), wb.device)
    out = []
    for b, start in tqdm(mine, desc=f"sampling {method.name}", leave=False):
        m = min(batch, n - start)
        cond = Condition(class_labels=None if labels is None else labels[start:start + m], guidance_scale=guidance)
        lat = wb.generate(method.mask, steps=method.steps, seed=seed + b, num_images=m, condition=cond)
        out.append((b, wb.images(lat).numpy().astype(np.float32)))
        if progress:
            progress(f"{method.name}: batch {b + 1}")
    out = sorted(distributed.gather(out, wb.device), key=lambda x: x[0])
    return np.concatenate([x for _, x in out])


HELDOUT_SEED = 5000  # first seed of the held-out samples (masks are calibrated on seeds 1000..)


def heldout_psnr(wb, mask: np.ndarray, *, num: int = 32, batch: int = 16, seed: int = HELDOUT_SEED,
                 guidance: float = 1.0) -> float:
    """PSNR (dB) of ``mask``'s final images against the plain model's on ``num`` samples from seeds
    ``seed``.. (batch b uses seed + b), class labels cycling 0..9 for class-conditional models, at
    classifier-free guidance ``guidance``."""
    masked, plain = [], []
    for b, start in enumerate(range(0, num, batch)):
        m = min(batch, num - start)
        labels = _labels(wb, m, None)
        cond = Condition(class_labels=labels, guidance_scale=guidance)
        for out, mk in ((masked, mask), (plain, None)):
            out.append(wb.images(wb.generate(mk, steps=mask.shape[0], seed=seed + b, num_images=m, condition=cond)).numpy())
    return psnr(np.concatenate(masked), np.concatenate(plain))[1]


def psnr(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return mse, float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


class _Images(torch.utils.data.Dataset):
    """uint8 (3, H, W) items for torch-fidelity."""

    def __init__(self, images01: np.ndarray):
        x = torch.from_numpy((np.clip(images01, 0, 1) * 255).round().astype(np.uint8))
        self.x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


def reference_images(data: str | None, size: int) -> np.ndarray:
    try:
        imgs, _ = load_mnist(data)
    except (FileNotFoundError, ValueError) as e:  # a missing folder or file, a corrupt one
        raise BlockmaskError(" ".join(str(e).split())[:300] or f"cannot read MNIST from {data}") from None
    return ((to_model_range(imgs, size) + 1) / 2).numpy()


FID_EXTRACTORS = ("mnist-cnn", "inception-v3-compat")  # ours (bundled, safetensors) and torch-fidelity's Inception


@contextlib.contextmanager
def safe_fidelity_weights():
    """torch-fidelity's Inception weights (downloaded to, then read from, ``$TORCH_HOME/hub/checkpoints``)
    loaded with ``weights_only=True`` and, on download, checked against the SHA-256 prefix in their file
    name: a pickle planted in that cache is refused, never run. torch-fidelity 0.4 calls torch.hub's
    ``load_state_dict_from_url`` with neither; its module-level name is swapped for this call only."""
    import functools

    import torch.hub
    import torch_fidelity.feature_extractor_inceptionv3 as fx

    orig = fx.load_state_dict_from_url
    fx.load_state_dict_from_url = functools.partial(torch.hub.load_state_dict_from_url, check_hash=True,
                                                    weights_only=True, map_location="cpu")
    try:
        yield
    except pickle.UnpicklingError as e:
        raise BlockmaskError("torch-fidelity's Inception weights in the torch hub cache "
                             f"({torch.hub.get_dir()}/checkpoints) are not plain tensors; refused unloaded "
                             f"(delete the file to download it again): {str(e).splitlines()[0][:100]}") from None
    finally:
        fx.load_state_dict_from_url = orig


def _fidelity_kwargs(extractor: str, n: int) -> dict:
    kw = dict(fid=True, kid=True, kid_subset_size=min(1000, n), kid_subsets=10, isc=extractor == "mnist-cnn",
              feature_extractor=extractor, cuda=torch.cuda.is_available(), verbose=False,
              cache=False,  # never: torch-fidelity's cache loads .pt files with pickle (module doc)
              batch_size=100, save_cpu_ram=True)  # no DataLoader worker processes: images are already in memory
    if extractor == "mnist-cnn":
        kw["feature_extractor_internal_dtype"] = "float32"
    return kw


def _features(images: np.ndarray, extractor, kw: dict) -> dict:
    from torch_fidelity.utils import extract_featuresdict_from_input_id

    return extract_featuresdict_from_input_id(1, extractor, **{**kw, "input1": _Images(images)})


def fidelity_metrics(images: np.ndarray, reference: np.ndarray, *, extractor: str, cache=None,
                     cache_dir: str | Path | None = None, ref_name: str = "reference") -> dict:
    """FID, KID (and IS with the classifier's logits) of ``images`` against ``reference``, computed by
    torch-fidelity's own functions from features. The reference's features are kept in our signed
    cache (safetensors) under ``ref_name`` (``cache``, or one opened on ``cache_dir``); torch-fidelity never
    reads or writes a cache file."""
    from safetensors.torch import load as st_load, save as st_save
    from torch_fidelity.metric_fid import fid_featuresdict_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_featuresdict_to_metric
    from torch_fidelity.metric_kid import kid_featuresdict_to_metric
    from torch_fidelity.utils import create_feature_extractor, resolve_feature_extractor, \
        resolve_feature_layer_for_metric

    if extractor == "mnist-cnn":
        register_fidelity_extractor()
    if cache is None and cache_dir is not None:
        cache = SignedCache(cache_dir)
    kw = _fidelity_kwargs(extractor, len(images))
    try:
        layers = {m: resolve_feature_layer_for_metric(m, **kw) for m in ("fid", "kid", "isc") if kw[m]}
        with safe_fidelity_weights():
            fx = create_feature_extractor(resolve_feature_extractor(**kw), sorted(set(layers.values())), **kw)
        f1 = _features(images, fx, kw)
        hit = cache.get(ref_name) if cache is not None else None
        f2 = None
        if hit is not None:
            try:
                f2 = st_load(hit[1])
            except Exception:
                f2 = None
        if f2 is None or set(f2) != set(f1):
            f2 = _features(reference, fx, kw)
            if cache is not None:
                cache.put(ref_name, {"extractor": extractor, "n": len(reference)},
                          st_save({k: v.contiguous() for k, v in f2.items()}))
        out = {"fid": fid_statistics_to_metric(fid_featuresdict_to_statistics(f1, layers["fid"]),
                                               fid_featuresdict_to_statistics(f2, layers["fid"]), False)
               ["frechet_inception_distance"],
               "kid": kid_featuresdict_to_metric(f1, f2, layers["kid"], **kw)["kernel_inception_distance_mean"],
               "is": isc_featuresdict_to_metric(f1, layers["isc"], **kw)["inception_score_mean"] if "isc" in layers
               else None}
    except BlockmaskError:
        raise
    except Exception as e:  # e.g. Inception weights not downloadable offline
        raise BlockmaskError(f"torch-fidelity failed with extractor {extractor!r}: {str(e).splitlines()[0][:160] if str(e) else type(e).__name__}") from None
    return out


CACHE_VERSION = 2  # bump when a row's numbers would change for the same inputs


def row_key(wb, method: Method, settings: dict) -> str:
    """Content key of a row: everything that changes one of its numbers (model weights and config,
    scheduler, steps, mask, sampling settings, FID extractor, reference data, benchmark batch and
    repeats, device, dtype, library versions)."""
    import torch_fidelity

    ident = {"version": CACHE_VERSION, "model": wb.loaded.fingerprint, "weights": weights_hash(wb.model),
             "scheduler": wb.scheduler_name, "steps": method.steps,
             "mask": None if method.mask is None else mask_hash(method.mask),
             "device": device_name(wb.device), "dtype": str(next(wb.model.parameters()).dtype),
             "torch": torch.__version__, "torch_fidelity": torch_fidelity.__version__, **settings}
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:24]


@dataclasses.dataclass
class EvalConfig:
    """How :func:`evaluate` measures: ``n`` samples per method in batches of ``batch`` from generator seed
    ``seed`` (class ``class_label`` or all classes cycled, guidance ``guidance``); FID/KID/IS with
    ``extractor`` against the reference images in ``data`` (default: MNIST's test set); speed on
    ``bench_batch`` samples, ``bench_repeats`` interleaved runs; rows cached in ``cache_dir``. Every value
    is checked here: a bad one is one :class:`BlockmaskError` before any work."""

    n: int
    batch: int = 50
    seed: int = 0
    guidance: float = 1.0
    class_label: int | None = None
    extractor: str = "mnist-cnn"
    data: str | None = None
    cache_dir: str | Path = ".cache/blockmask-eval"
    bench_batch: int = 8
    bench_repeats: int = 3

    def __post_init__(self):
        self.n = check_int("number of samples", self.n, low=2, high=10**7)
        self.batch = check_int("batch", self.batch, low=1, high=4096)
        self.seed = check_int("seed", self.seed, low=0, high=2**63 - 1)
        self.guidance = check_float("guidance scale", self.guidance, low=0, high=1e4)
        self.bench_batch = check_int("bench batch", self.bench_batch, low=1, high=4096)
        self.bench_repeats = check_int("bench repeats", self.bench_repeats, low=1, high=1000)
        if self.class_label is not None:
            self.class_label = check_int("class label", self.class_label, low=0)
        if not isinstance(self.extractor, str) or not self.extractor:
            raise BlockmaskError(f"FID extractor must be a name, got {self.extractor!r}")
        if self.extractor not in FID_EXTRACTORS:
            raise BlockmaskError(f"FID extractor {self.extractor[:60]!r} is not supported: use "
                                 f"{' or '.join(FID_EXTRACTORS)} (the others load pickled or TorchScript weights, "
                                 "or code from the hub)")


def evaluate(wb, methods: list[Method], cfg: EvalConfig, *,
             progress: Callable[[str], None] | None = None) -> list[dict]:
    """Evaluate every method; the first plain method at full K is the reference for PSNR.
    Under a multi-process launch only the main process returns rows. Rows are cached in
    ``cfg.cache_dir`` (:mod:`blockmask.eval.cache`: signed, pickle-free)."""
    n, batch, seed, guidance, class_label = cfg.n, cfg.batch, cfg.seed, cfg.guidance, cfg.class_label
    extractor, data, cache_dir = cfg.extractor, cfg.data, cfg.cache_dir
    bench_batch, bench_repeats = cfg.bench_batch, cfg.bench_repeats
    if not methods:
        raise BlockmaskError("nothing to evaluate")
    size = wb.model.config.sample_size
    ref_imgs = reference_images(data, size)  # its hash is part of every row key
    cache = SignedCache(cache_dir)  # every process reads it; the main one writes
    ref_id = hashlib.sha256(np.ascontiguousarray(ref_imgs).tobytes()).hexdigest()[:16]
    settings = {"n": n, "batch": batch, "seed": seed, "guidance": guidance, "class_label": class_label,
                "extractor": extractor, "reference": ref_id, "bench_batch": bench_batch,
                "bench_repeats": bench_repeats}
    k = max(m.steps for m in methods)
    ref_method = next((m for m in methods if m.mask is None and m.steps == k), Method("original", None, k))
    results = []
    original = None
    for method in [ref_method] + [m for m in methods if m is not ref_method]:
        key = row_key(wb, method, settings)
        hit = cache.get(f"row-{key}") if cache is not None else None
        if hit is not None:
            row, images = dict(hit[0]), npy_load(hit[1])
        else:
            images = generate_set(wb, method, n=n, batch=batch, seed=seed, guidance=guidance,
                                  class_label=class_label, progress=progress)
            if not distributed.is_main(wb.device):
                continue  # other processes only help generating; the main one measures and writes
            row = {"method": method.name, "steps": method.steps, "n": n,
                   **fidelity_metrics(images, ref_imgs, extractor=extractor, cache=cache,
                                      ref_name=f"reference-{ref_id}-{hashlib.sha256(extractor.encode()).hexdigest()[:12]}")}
            row.update(_speed(wb, method, k, bench_batch, bench_repeats, guidance))
            row["device"] = device_name(wb.device)  # where the speed (and the images) were measured
            row = dict(cache.put(f"row-{key}", row, npy_bytes(images.astype(np.float32))))
        if original is None:
            original = images
        row["mse"], row["psnr"] = psnr(images, original)
        row["method"] = method.name
        results.append(row)
    return results if distributed.is_main(wb.device) else []


def _speed(wb, method: Method, k: int, batch: int, repeats: int, guidance: float) -> dict:
    """MAC ratio vs the plain model at K steps and measured speedup (same process, after warm-up)."""
    p = wb.macs
    cond = Condition(class_labels=_labels(wb, batch, None), guidance_scale=guidance)
    if method.mask is not None:
        r = wb.bench(method.mask, batch=batch, repeats=repeats, condition=cond)
        return {"macs_ratio": p.ratio(method.mask) if method.steps == k else p.total(method.mask) / p.baseline(k),
                "speedup": r["speedup"], "seconds": r["masked_s"]}
    import time

    if method.steps == k:  # the original itself: the reference of every speedup
        t0 = time.perf_counter()
        wb.generate(None, steps=k, num_images=batch, condition=cond)
        return {"macs_ratio": 1.0, "speedup": 1.0, "seconds": time.perf_counter() - t0}

    def run(steps):
        t0 = time.perf_counter()
        wb.generate(None, steps=steps, num_images=batch, condition=cond)
        return time.perf_counter() - t0

    run(method.steps), run(k)
    times = [(run(k), run(method.steps)) for _ in range(repeats)]
    full, mine = float(np.median([a for a, _ in times])), float(np.median([b for _, b in times]))
    # per model call: Heun's K' steps are 2K' − 1 calls, so not K'/K
    return {"macs_ratio": p.baseline(method.steps) / p.baseline(k), "speedup": full / mine, "seconds": mine}
