"""Small offline MNIST CNN classifier, used as a digit-recognition check and as a
torch-fidelity feature extractor (``mnist-cnn``) for FID/KID/ISC on the bundled models.

Input: ``(B, 1, 32, 32)`` or ``(B, 1, 28, 28)`` floats in ``[-1, 1]`` (28x28 is padded
with background like the diffusion data), or uint8 images in ``[0, 255]`` (1 or 3
channels) through the torch-fidelity wrapper.  ``features()`` returns the 128-d
penultimate activations and the 10 logits.

Weights: ``assets/classifier/mnist-cnn.safetensors`` (train with
``scripts/train_classifier.py``); nothing is ever downloaded.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from blockmask.io.resources import assets_dir  # noqa: E402
from blockmask.sampling.sample import Condition

DEFAULT_WEIGHTS = assets_dir() / "classifier" / "mnist-cnn.safetensors"
FIDELITY_NAME = "mnist-cnn"
FEATURE_DIM = 128

__all__ = [
    "MnistCNN", "load_classifier", "prepare_input", "DEFAULT_WEIGHTS",
    "FeatureExtractorMnistCNN", "register_fidelity_extractor", "FIDELITY_NAME",
]


def prepare_input(x: torch.Tensor) -> torch.Tensor:
    """Bring images to float ``(B, 1, 32, 32)`` in ``[-1, 1]``.

    uint8 tensors are taken as ``[0, 255]``; 3-channel images are averaged to gray;
    28x28 is padded with the background value, other sizes are resized bilinearly.
    """
    if x.dtype == torch.uint8:
        x = x.float() / 127.5 - 1.0
    x = x.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.shape[1] == 3:
        x = x.mean(dim=1, keepdim=True)
    h = x.shape[-1]
    if h == 28:
        x = F.pad(x, (2, 2, 2, 2), value=-1.0)
    elif h != 32:
        x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False)
    return x


class MnistCNN(nn.Module):
    """3 conv stages (32-64-128 ch, BN+ReLU+maxpool) -> 128-d features -> 10 logits."""

    def __init__(self, widths=(32, 64, 128), feature_dim: int = FEATURE_DIM, num_classes: int = 10):
        super().__init__()
        self.config = {"widths": list(widths), "feature_dim": feature_dim, "num_classes": num_classes}
        layers, c_in = [], 1
        for w in widths:
            layers += [nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            c_in = w
        self.body = nn.Sequential(*layers)  # 32 -> 4
        self.fc = nn.Linear(c_in * 4 * 4, feature_dim)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features (B, 128), logits (B, 10))``."""
        h = self.body(prepare_input(x)).flatten(1)
        feat = F.relu(self.fc(h))
        return feat, self.head(self.dropout(feat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)[1]

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """Class indices for a batch of images (eval mode)."""
        self.eval()
        return torch.cat([self(x[i:i + batch]).argmax(1) for i in range(0, len(x), batch)])


def load_classifier(path: str | Path | None = None) -> MnistCNN:
    """Load the bundled classifier (eval mode). Raises FileNotFoundError if absent."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_WEIGHTS
    if not path.is_file():
        raise FileNotFoundError(f"classifier weights not found: {path} (run scripts/train_classifier.py)")
    cfg_path = path.with_name("classifier.json")
    cfg = json.loads(cfg_path.read_text()).get("architecture", {}) if cfg_path.is_file() else {}
    model = MnistCNN(**cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval().requires_grad_(False)


try:  # torch-fidelity integration (optional dependency at import time)
    from torch_fidelity.feature_extractor_base import FeatureExtractorBase
except ImportError:  # pragma: no cover
    FeatureExtractorBase = None

if FeatureExtractorBase is not None:
    class FeatureExtractorMnistCNN(FeatureExtractorBase):
        """torch-fidelity extractor: features ``'feat128'`` (FID/KID/PRC) and ``'logits'`` (ISC).

        Accepts uint8 ``(B, 1|3, H, W)``; pass ``feature_extractor_weights_path`` to
        override the bundled weights.
        """

        def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
            super().__init__(name, features_list)
            self.model = load_classifier(feature_extractor_weights_path)

        @staticmethod
        def get_provided_features_list():
            return "feat128", "logits"

        @staticmethod
        def get_default_feature_layer_for_metric(metric):
            return {"isc": "logits"}.get(metric, "feat128")

        @staticmethod
        def can_be_compiled():
            return False

        @staticmethod
        def get_dummy_input_for_compile():
            return torch.zeros(1, 1, 32, 32, dtype=torch.uint8)

        def forward(self, x):
            feat, logits = self.model.features(x)
            out = {"feat128": feat.float(), "logits": logits.float()}
            return tuple(out[name] for name in self.features_list)

else:  # pragma: no cover
    FeatureExtractorMnistCNN = None


def register_fidelity_extractor(name: str = FIDELITY_NAME) -> str:
    """Register the classifier with torch-fidelity (idempotent); returns the name to use
    as ``feature_extractor=`` in ``torch_fidelity.calculate_metrics``."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

    if name not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(name, FeatureExtractorMnistCNN)
    return name


@torch.no_grad()
def conditional_accuracy(wb, guidance: float | None = None, *, n: int = 64, steps: int = 25,
                         seed: int = 0) -> float:
    """Fraction of ``n`` class-conditional samples of a loaded model (a :class:`blockmask.Workbench`;
    labels 0..9 cycled, DDIM ``steps``,
    classifier-free guidance ``guidance``, default the model's own; sampled by :meth:`Workbench.generate`,
    latent models decoded through their VAE) that the offline classifier assigns to the requested digit.
    Used by the tests and ``scripts/dit_accuracy.py``."""

    labels = torch.arange(10).repeat(n // 10 + 1)[:n]
    g = wb.default_guidance if guidance is None else guidance
    x = wb.generate(None, steps=steps, seed=seed, num_images=n,
                    condition=Condition(class_labels=labels.tolist(), guidance_scale=g))
    x = x.float().clamp(-1, 1) if wb.loaded.vae is None else wb.images(x) * 2 - 1  # (n, 1, 32, 32) in [-1, 1]
    return (load_classifier().predict(x) == labels).float().mean().item()
