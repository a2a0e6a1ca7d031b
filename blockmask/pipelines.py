"""The bundled class-conditional DiT as a diffusers ``DiTPipeline`` (guidance included).

``DiTPipeline`` hard-codes the null ("unconditional") class label 1000 (ImageNet's DiT) and needs a
VAE. The bundled ``mnist-dit`` learned its null label as class 10 and works in pixel space. So
:func:`dit_pipeline` builds the standard pipeline around an exact re-labelling of the same model:

* the class-embedding table of every block grows to diffusers' 1000 classes + null; rows 0..9 are
  the model's digits, row 1000 is the model's null row (class 10), unused rows are zero. An
  embedding lookup copies rows, so every output is bit for bit the original model's (tested);
* :class:`PixelSpaceVAE` is the identity "VAE" (scaling factor 1) a pixel-space model needs.

The result is a normal diffusers pipeline: ``pipe(class_labels=[3], guidance_scale=3)``,
``pipe.save_pretrained(dir)`` and ``DiffusionPipeline.from_pretrained(dir)`` (with blockmask
installed, which provides ``PixelSpaceVAE``). ``blockmask.apply(pipe, mask)`` masks it; the units
are the same, so the shipped ``mnist-dit`` masks fit.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DiTPipeline, DiTTransformer2DModel, ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput

from .errors import UnsupportedModelError

PIPELINE_NULL_LABEL = 1000  # what DiTPipeline passes for the unconditional branch
PIPELINE_CLASSES = 1000


class PixelSpaceVAE(ModelMixin, ConfigMixin):
    """The identity autoencoder: ``decode(z).sample == z`` (pixel-space diffusion models)."""

    @register_to_config
    def __init__(self, scaling_factor: float = 1.0):
        super().__init__()
        self.register_buffer("anchor", torch.zeros(1))  # a device, a dtype and a weights file for save_pretrained

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        return DecoderOutput(sample=z) if return_dict else (z,)

    def encode(self, x: torch.Tensor, return_dict: bool = True):
        raise NotImplementedError("a pixel-space model has no latent encoder")


def relabel_for_pipeline(model: DiTTransformer2DModel, *, num_classes: int, null_label: int) -> DiTTransformer2DModel:
    """A copy of ``model`` whose class table follows DiTPipeline's convention (null label 1000), with the
    same outputs for labels 0..num_classes-1 and for the null label."""
    if type(model).__name__ != "DiTTransformer2DModel":
        raise UnsupportedModelError(f"DiTPipeline takes a DiTTransformer2DModel, not {type(model).__name__}")
    if num_classes > PIPELINE_CLASSES:
        raise UnsupportedModelError(f"{num_classes} classes do not fit DiTPipeline's {PIPELINE_CLASSES}")
    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    cfg["num_embeds_ada_norm"] = PIPELINE_CLASSES
    p = next(model.parameters())
    new = DiTTransformer2DModel.from_config(cfg).to(p.device)
    if p.dtype != torch.float32:
        new = new.to(dtype=p.dtype)
    state = model.state_dict()
    for key, old in list(state.items()):
        if key.endswith("class_embedder.embedding_table.weight"):
            table = torch.zeros((PIPELINE_CLASSES + 1, old.shape[1]), dtype=old.dtype, device=old.device)
            table[:num_classes] = old[:num_classes]
            table[PIPELINE_NULL_LABEL] = old[null_label]
            state[key] = table
    new.load_state_dict(state)
    return new.eval().requires_grad_(False)


def dit_pipeline(spec_or_workbench="mnist-dit", *, scheduler=None) -> DiTPipeline:
    """diffusers' ``DiTPipeline`` for a blockmask DiT (default: the bundled ``mnist-dit``), DDIM from the
    model's own scheduler config unless ``scheduler`` is given."""
    from .adapters import adapter_for
    from .api import Workbench

    wb = spec_or_workbench if isinstance(spec_or_workbench, Workbench) else Workbench.load(spec_or_workbench)
    model = wb.model
    ad = adapter_for(model)
    transformer = relabel_for_pipeline(model, num_classes=int(ad.num_classes(model)), null_label=ad.null_label(model))
    if scheduler is None:
        base = wb.loaded.scheduler
        scheduler = DDIMScheduler.from_config(base.config) if base is not None else DDIMScheduler()
    vae = PixelSpaceVAE().to(next(model.parameters()).device)
    id2label = {i: str(i) for i in range(int(ad.num_classes(model)))}
    pipe = DiTPipeline(transformer=transformer, vae=vae, scheduler=scheduler, id2label=id2label)
    pipe.set_progress_bar_config(disable=True)
    return pipe
