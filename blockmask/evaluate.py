"""Evaluation harness: MACs, measured speed, FID/KID/IS (torch-fidelity) and fidelity to the
unmasked model (MSE/PSNR, same seeds) for a table of masks and baselines (METHOD.md §5–7).

Every row's samples and metrics are cached by content (model fingerprint + weights hash, mask hash,
scheduler, steps, seeds, N, conditioning), so re-running a table only computes new rows. FID is
only comparable at equal N: N is printed next to every FID.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .api import device_name
from .errors import BlockmaskError
from .io import atomic_write, atomic_write_json
from .mask import mask_hash
from .sample import Condition


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
    from .adapters import adapter_for

    classes = adapter_for(wb.model).num_classes(wb.model)
    if classes is None:
        return None
    return [class_label] * n if class_label is not None else [i % min(classes, 10) for i in range(n)]


def generate_set(wb, method: Method, *, n: int, batch: int, seed: int, guidance: float, class_label: int | None,
                 progress: Callable[[str], None] | None = None) -> np.ndarray:
    """n samples in [0, 1] float32 (n, C, H, W); batch b uses seed ``seed + b``. Under a multi-process
    launch the batches are shared out and gathered (same images as one process)."""
    from . import distributed

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


def heldout_psnr(wb, mask: np.ndarray, *, num: int = 32, batch: int = 16, seed: int = HELDOUT_SEED) -> float:
    """PSNR (dB) of ``mask``'s final images against the plain model's on ``num`` samples from seeds
    ``seed``.. (batch b uses seed + b), class labels cycling 0..9 for class-conditional models."""
    masked, plain = [], []
    for b, start in enumerate(range(0, num, batch)):
        m = min(batch, num - start)
        labels = _labels(wb, m, None)
        cond = Condition(class_labels=labels, guidance_scale=1.0)
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
    from .data.mnist import load_mnist, to_model_range

    imgs, _ = load_mnist(data)
    return ((to_model_range(imgs, size) + 1) / 2).numpy()


def fidelity_metrics(images: np.ndarray, reference: np.ndarray, *, extractor: str, cache_dir: Path,
                     ref_name: str) -> dict:
    """FID, KID (and IS with the classifier's logits) of ``images`` against ``reference``."""
    import torch_fidelity

    if extractor == "mnist-cnn":
        from .data.classifier import register_fidelity_extractor

        register_fidelity_extractor()
    n = len(images)
    kw = dict(fid=True, kid=True, kid_subset_size=min(1000, n), kid_subsets=10, isc=extractor == "mnist-cnn",
              feature_extractor=extractor, cuda=torch.cuda.is_available(), verbose=False, cache=True,
              cache_root=str(cache_dir / "fidelity"), input2_cache_name=f"{ref_name}-{extractor}", batch_size=100,
              save_cpu_ram=True)  # no DataLoader worker processes: images are already in memory
    if extractor == "mnist-cnn":
        kw["feature_extractor_internal_dtype"] = "float32"
    try:
        r = torch_fidelity.calculate_metrics(input1=_Images(images), input2=_Images(reference), **kw)
    except Exception as e:  # e.g. Inception weights not downloadable offline
        raise BlockmaskError(f"torch-fidelity failed with extractor {extractor!r}: {str(e).splitlines()[0][:160]}") from None
    return {"fid": r["frechet_inception_distance"], "kid": r["kernel_inception_distance_mean"],
            "is": r.get("inception_score_mean")}


def row_key(wb, method: Method, settings: dict) -> str:
    ident = {"model": wb.loaded.fingerprint, "weights": weights_hash(wb.model), "scheduler": wb.scheduler_name,
             "steps": method.steps, "mask": None if method.mask is None else mask_hash(method.mask), **settings}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]


def evaluate(wb, methods: list[Method], *, n: int, batch: int = 50, seed: int = 0, guidance: float = 1.0,
             class_label: int | None = None, extractor: str = "mnist-cnn", data: str | None = None,
             cache_dir: str | Path = ".cache/blockmask-eval", bench_batch: int = 8, bench_repeats: int = 3,
             progress: Callable[[str], None] | None = None) -> list[dict]:
    """Evaluate every method; the first plain method at full K is the reference for PSNR.
    Under a multi-process launch only the main process returns rows."""
    from . import distributed

    if n < 2:
        raise BlockmaskError(f"need at least 2 samples for FID, got {n}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    settings = {"n": n, "batch": batch, "seed": seed, "guidance": guidance, "class_label": class_label}
    k = max(m.steps for m in methods)
    ref_method = next((m for m in methods if m.mask is None and m.steps == k), Method("original", None, k))
    size = wb.model.config.sample_size
    ref_imgs = None
    results = []
    original = None
    for method in [ref_method] + [m for m in methods if m is not ref_method]:
        key = row_key(wb, method, settings)
        meta_path, npy_path = cache / f"{key}.json", cache / f"{key}.npy"
        if meta_path.exists() and npy_path.exists():
            row = json.loads(meta_path.read_text())
            images = np.load(npy_path)
        else:
            images = generate_set(wb, method, n=n, batch=batch, seed=seed, guidance=guidance,
                                  class_label=class_label, progress=progress)
            if not distributed.is_main(wb.device):
                continue  # other processes only help generating; the main one measures and writes
            if ref_imgs is None:
                ref_imgs = reference_images(data, size)
            row = {"method": method.name, "steps": method.steps, "n": n,
                   **fidelity_metrics(images, ref_imgs, extractor=extractor, cache_dir=cache, ref_name=f"mnist{size}")}
            row.update(_speed(wb, method, k, bench_batch, bench_repeats, guidance))
            row["device"] = device_name(wb.device)  # where the speed (and the images) were measured
            atomic_write(npy_path, lambda tmp: _save(tmp, images))
            atomic_write_json(meta_path, row)
        if original is None:
            original = images
        row["mse"], row["psnr"] = psnr(images, original)
        row["method"] = method.name
        results.append(row)
    return results if distributed.is_main(wb.device) else []


def _save(path, arr):
    with open(path, "wb") as f:
        np.save(f, arr)


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
    return {"macs_ratio": method.steps / k, "speedup": full / mine, "seconds": mine}
