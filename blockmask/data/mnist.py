"""MNIST IDX loader for the bundled toy models.

Reads the raw IDX files (``*-images-idx3-ubyte[.gz]`` / ``*-labels-idx1-ubyte[.gz]``)
from any folder, verifies them against a ``SHA256SUMS`` file when one is present,
and converts them to the 32x32 ``[-1, 1]`` tensors the bundled diffusion models use.

The default folder is ``$BLOCKMASK_MNIST`` if set, else ``~/.cache/blockmask/mnist``
(:func:`default_mnist_dir`, where ``blockmask data mnist`` puts the files; scripts also take
``--data``).  Nothing is ever downloaded unless ``download=True`` is passed
explicitly, in which case torchvision's MNIST downloader is used as a fallback.
"""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "default_mnist_dir",
    "mnist_sha256",
    "verify_sha256",
    "read_idx",
    "load_mnist",
    "mnist_tensor_dataset",
    "to_model_range",
]

_SPLITS = {"test": "t10k", "t10k": "t10k", "train": "train"}


def default_mnist_dir() -> Path:
    """``$BLOCKMASK_MNIST`` if set, else ``~/.cache/blockmask/mnist`` (``$XDG_CACHE_HOME`` respected),
    where ``blockmask data mnist`` puts the files."""
    env = os.environ.get("BLOCKMASK_MNIST")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "blockmask" / "mnist"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def mnist_sha256(folder: str | os.PathLike | None = None) -> dict[str, str]:
    """Return ``{file name: sha256}`` for every IDX file in ``folder`` (for documentation)."""
    folder = Path(folder) if folder is not None else default_mnist_dir()
    out = {}
    for p in sorted(folder.iterdir()) if folder.is_dir() else []:
        if "-ubyte" in p.name and p.is_file():
            out[p.name] = _sha256_file(p)
    return out


def _read_sums(folder: Path) -> dict[str, str]:
    sums = {}
    path = folder / "SHA256SUMS"
    if not path.is_file():
        return sums
    for line in path.read_text().splitlines():
        parts = line.strip().split()
        if len(parts) >= 2:
            sums[parts[-1].lstrip("*")] = parts[0].lower()
    return sums


def verify_sha256(path: Path, sums: dict[str, str]) -> None:
    """Raise ``ValueError`` if ``path`` is listed in ``sums`` with a different digest."""
    expected = sums.get(path.name)
    if expected is None:
        return
    actual = _sha256_file(path)
    if actual != expected:
        raise ValueError(
            f"SHA256 mismatch for {path}: expected {expected[:16]}..., got {actual[:16]}... "
            "(corrupted or different MNIST file)"
        )


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse one IDX file (gzip-compressed or plain) into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if dtype_code not in dtypes:
        raise ValueError(f"{path}: unsupported IDX dtype code 0x{dtype_code:02x}")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    arr = np.frombuffer(data, dtype=dtypes[dtype_code], offset=4 + 4 * ndim)
    if arr.size != int(np.prod(shape)):
        raise ValueError(f"{path}: truncated IDX file ({arr.size} values, header says {shape})")
    return arr.reshape(shape)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {folder} (get it with: blockmask data mnist)")


def _download(folder: Path, split: str) -> None:
    from torchvision.datasets import MNIST  # lazy: only on explicit request

    MNIST(str(folder), train=(split == "train"), download=True)
    raw = folder / "MNIST" / "raw"
    for p in raw.glob("*-ubyte*"):
        target = folder / p.name
        if not target.exists():
            target.write_bytes(p.read_bytes())


def load_mnist(
    folder: str | os.PathLike | None = None,
    split: str = "test",
    *,
    verify: bool = True,
    download: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load ``(images uint8 (N, 28, 28), labels int64 (N,))`` for ``split``.

    ``split`` is ``"test"`` (the 10k ``t10k`` files) or ``"train"``.  With
    ``verify`` the files are checked against ``SHA256SUMS`` when it exists.
    ``download=True`` fetches missing files with torchvision (never implicit).
    """
    folder = Path(folder) if folder is not None else default_mnist_dir()
    prefix = _SPLITS.get(split)
    if prefix is None:
        raise ValueError(f"unknown MNIST split {split!r}; use 'test' or 'train'")
    try:
        img_path = _find(folder, f"{prefix}-images-idx3-ubyte")
        lbl_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    except FileNotFoundError:
        if not download:
            raise
        folder.mkdir(parents=True, exist_ok=True)
        _download(folder, "train" if prefix == "train" else "test")
        img_path = _find(folder, f"{prefix}-images-idx3-ubyte")
        lbl_path = _find(folder, f"{prefix}-labels-idx1-ubyte")
    if verify:
        sums = _read_sums(folder)
        verify_sha256(img_path, sums)
        verify_sha256(lbl_path, sums)
    images = read_idx(img_path)
    labels = read_idx(lbl_path)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: inconsistent MNIST shapes {images.shape} / {labels.shape}")
    return torch.from_numpy(images.astype(np.uint8)), torch.from_numpy(labels.astype(np.int64))


def to_model_range(images: torch.Tensor, size: int = 32) -> torch.Tensor:
    """uint8 ``(N, 28, 28)`` -> float32 ``(N, 1, size, size)`` in ``[-1, 1]``, zero-padded (black)."""
    x = images.float().div(127.5).sub(1.0)
    if x.ndim == 3:
        x = x.unsqueeze(1)
    pad = size - x.shape[-1]
    if pad > 0:
        lo = pad // 2
        x = torch.nn.functional.pad(x, (lo, pad - lo, lo, pad - lo), value=-1.0)
    return x


def mnist_tensor_dataset(
    folder: str | os.PathLike | None = None,
    split: str = "test",
    *,
    size: int = 32,
    start: int = 0,
    stop: int | None = None,
    download: bool = False,
) -> torch.utils.data.TensorDataset:
    """TensorDataset of ``(images float (N,1,size,size) in [-1,1], labels int64)``."""
    images, labels = load_mnist(folder, split, download=download)
    images, labels = images[start:stop], labels[start:stop]
    return torch.utils.data.TensorDataset(to_model_range(images, size), labels)
