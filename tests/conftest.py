"""Shared fixtures: tiny random-init models of every supported architecture (no downloads)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pytest must never reach the hub
# Tiny models gain nothing from threads, and on a busy 2-core machine threads cost 10-50x.
os.environ.setdefault("OMP_NUM_THREADS", "1")
import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
os.environ.setdefault("TQDM_DISABLE", "1")
# frontiers the apps compute (blockmask.viz.frontier.compute) go to a folder of this run, never the user's cache
os.environ.setdefault("BLOCKMASK_FRONTIER_CACHE", tempfile.mkdtemp(prefix="bm-frontier-cache-"))

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "tests" / "configs"
REFERENCE = ROOT / "tests" / "configs" / "reference"  # copies of ../shared/reference/configs (facts)
# Our machines keep MNIST next to the repository; elsewhere set $BLOCKMASK_MNIST or run `blockmask data mnist`.
if "BLOCKMASK_MNIST" not in os.environ and (ROOT.parent / "shared" / "data" / "mnist").is_dir():
    os.environ["BLOCKMASK_MNIST"] = str((ROOT.parent / "shared" / "data" / "mnist").resolve())
TINY = ["tiny-unet", "tiny-unet-cond", "tiny-dit", "tiny-pixart"]
GUIDED = {"tiny-unet": 1.0, "tiny-unet-cond": 2.0, "tiny-dit": 3.0, "tiny-pixart": 2.0}


def _mnist_present() -> bool:
    from blockmask.data.mnist import default_mnist_dir

    return any(default_mnist_dir().glob("t10k-images-idx3-ubyte*"))


# Tests that read MNIST ($BLOCKMASK_MNIST or ~/.cache/blockmask/mnist): skipped with the reason when absent.
needs_mnist = pytest.mark.skipif(not _mnist_present(), reason="MNIST IDX files not found "
                                 "($BLOCKMASK_MNIST or `blockmask data mnist`)")


def tiny_spec(name: str) -> str:
    return f"config:{CONFIGS / (name + '.json')}"


@pytest.fixture(scope="session")
def workbenches():
    from blockmask.workbench import Workbench

    cache = {}

    def get(name: str, scheduler: str = "ddim"):
        key = (name, scheduler)
        if key not in cache:
            cache[key] = Workbench.load(tiny_spec(name), scheduler=scheduler)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory):
    """A small MNIST-format folder (random digits): the router's data path without the real data set."""
    import gzip
    import struct

    import numpy as np

    d = tmp_path_factory.mktemp("mnist")
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (16, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 16, dtype=np.uint8)
    with gzip.open(d / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBIII", 0, 0, 8, 3, 16, 28, 28) + imgs.tobytes())
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">BBBBI", 0, 0, 8, 1, 16) + labels.tobytes())
    return d


def pytest_collection_modifyitems(config, items):
    """The slow and browser checks first, the rest in file order after them. With two xdist workers
    (the README's command) the long tests then run beside each other early, and the many short ones
    fill in at the end, instead of one long test keeping a worker busy while the other idles."""
    items.sort(key=lambda it: it.get_closest_marker("slow") is None and it.get_closest_marker("browser") is None)
