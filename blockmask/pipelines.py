"""The bundled class-conditional models in diffusers' own pipelines (guidance included).

``mnist-ldm`` and ``mnist-pixart`` (classes as learned cross-attention tokens): :func:`ldm_pipeline` gives a
``StableDiffusionPipeline`` and :func:`pixart_pipeline` a ``PixArtAlphaPipeline`` on the model's own U-Net /
transformer, VAE and (DDIM) scheduler, without a text encoder or tokenizer (``None``: the prompt
embeddings come from :func:`class_prompt_embeds`, which looks the classes' tokens up and returns the
keyword arguments to pass: ``pipe(**class_prompt_embeds(pipe, [3, 7]), guidance_scale=2)``). diffusers
imports these two pipeline classes from ``transformers`` (installed with ``blockmask[dev]`` or
``pip install transformers``), although no text model is used.

The DiT (``mnist-dit``) in ``DiTPipeline``:

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

from blockmask.adapters import adapter_for
from blockmask.adapters.base import class_tokens, token_conditioning, token_null
from blockmask.core.errors import BlockmaskError, OptionError, UnsupportedModelError
from blockmask.workbench import Workbench

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


def _workbench(spec_or_workbench):
    return spec_or_workbench if isinstance(spec_or_workbench, Workbench) else Workbench.load(spec_or_workbench)


def _token_model(wb, family: str):
    """The workbench's denoiser, checked to be a class-token model of ``family`` with its VAE."""

    want = {"unet": "UNet2DConditionModel", "pixart": "PixArtTransformer2DModel"}[family]
    model = wb.model
    if type(model).__name__ != want:
        raise UnsupportedModelError(f"this pipeline takes a {want}, not {type(model).__name__}")
    if class_tokens(model) is None:
        raise BlockmaskError(f"{wb.loaded.spec}: no class tokens (blockmask.json 'class_tokens'); pass your own "
                             "prompt_embeds to the diffusers pipeline instead")
    if wb.loaded.vae is None:
        raise BlockmaskError(f"{wb.loaded.spec}: no vae/ folder; the pipeline decodes through the model's VAE")
    return model


def _ddim(wb, scheduler):
    if scheduler is not None:
        return scheduler
    base = wb.loaded.scheduler
    return DDIMScheduler.from_config(base.config) if base is not None else DDIMScheduler()


def _pipeline_class(name: str):
    import diffusers

    try:
        from transformers import PreTrainedModel  # noqa: F401  (diffusers' text pipelines import it)
    except ImportError:
        raise BlockmaskError(f"diffusers' {name} needs the 'transformers' package (pip install transformers), "
                             "although no text encoder is used") from None
    return getattr(diffusers, name)


def ldm_pipeline(spec_or_workbench="mnist-ldm", *, scheduler=None):
    """diffusers' ``StableDiffusionPipeline`` for a class-token latent U-Net (default: the bundled
    ``mnist-ldm``): its U-Net, VAE and DDIM scheduler; no text encoder, tokenizer or safety checker.
    The pipeline sets ``steps_offset=1`` and ``clip_sample=False`` on a scheduler that lacks them; the
    bundled folder's scheduler has both, so its images equal blockmask's sampler's (tested)."""
    wb = _workbench(spec_or_workbench)
    model = _token_model(wb, "unet")
    cls = _pipeline_class("StableDiffusionPipeline")
    pipe = cls(vae=wb.loaded.vae, text_encoder=None, tokenizer=None, unet=model, scheduler=_ddim(wb, scheduler),
               safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pixart_pipeline(spec_or_workbench="mnist-pixart", *, scheduler=None):
    """diffusers' ``PixArtAlphaPipeline`` for a class-token PixArt transformer (default: the bundled
    ``mnist-pixart``). Call it with ``use_resolution_binning=False`` (its bins are for 256-1024 px images)."""
    wb = _workbench(spec_or_workbench)
    model = _token_model(wb, "pixart")
    cls = _pipeline_class("PixArtAlphaPipeline")
    pipe = cls(tokenizer=None, text_encoder=None, vae=wb.loaded.vae, transformer=model, scheduler=_ddim(wb, scheduler))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def class_prompt_embeds(pipe_or_model, class_labels) -> dict:
    """Keyword arguments that make a pipeline from :func:`ldm_pipeline` / :func:`pixart_pipeline` draw the
    digits ``class_labels``: ``prompt_embeds`` (B, L, D) = the classes' tokens and ``negative_prompt_embeds`` =
    the null class's (the unconditional branch of guidance); PixArt also gets both attention masks (all
    ones) and ``negative_prompt=None``."""

    model = getattr(pipe_or_model, "unet", None) or getattr(pipe_or_model, "transformer", None) or pipe_or_model
    if class_tokens(model) is None:
        raise BlockmaskError(f"{type(model).__name__} has no class tokens (load it with blockmask: "
                             "ldm_pipeline / pixart_pipeline)")
    labels = [class_labels] if isinstance(class_labels, int) else list(class_labels)
    n = adapter_for(model).num_classes(model)
    bad = [v for v in labels if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n]
    if not labels or bad:
        raise OptionError(f"class labels must be integers in 0..{n - 1}, got {bad[0] if bad else 'none'}")
    pixart = type(model).__name__ == "PixArtTransformer2DModel"
    cond = token_conditioning(model, len(labels), torch.tensor(labels), None, attention_mask=pixart)
    null = token_null(model, cond)
    p = next(model.parameters())
    out = {"prompt_embeds": cond.encoder_hidden_states.to(p.device, p.dtype),
           "negative_prompt_embeds": null.encoder_hidden_states.to(p.device, p.dtype)}
    if pixart:
        out.update(prompt_attention_mask=cond.encoder_attention_mask.to(p.device),
                   negative_prompt_attention_mask=null.encoder_attention_mask.to(p.device), negative_prompt=None)
    return out
