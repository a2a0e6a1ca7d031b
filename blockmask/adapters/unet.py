"""U-Nets (DDPM ``UNet2DModel``, LDM/SD ``UNet2DConditionModel``): every ResnetBlock2D, every
attention module (``Attention`` or ``Transformer2DModel``) and every down/up sampler in the down,
mid and up blocks.

Their outputs are whole block outputs (the residual is inside), METHOD.md §1. The samplers are
units too (ours): a sampler whose every reader reuses its cache is dead work that rectification
removes, which is how DeepCache's shallow branch skips them (see :func:`blockmask.core.baselines.deepcache`).
"""

from __future__ import annotations

import torch

from blockmask.core.errors import BlockmaskError
from blockmask.adapters.base import (Adapter, timestep_on, Conditioning, class_tokens, register, text_context, text_null, token_classes,
                   token_conditioning, token_null)

_UNET_UNITS = (
    (r"(down_blocks|up_blocks)\.\d+\.resnets\.\d+", "resnet"),
    (r"(down_blocks|up_blocks)\.\d+\.attentions\.\d+", "attn"),
    (r"mid_block\.resnets\.\d+", "resnet"),
    (r"mid_block\.attentions\.\d+", "attn"),
    (r"down_blocks\.\d+\.downsamplers\.\d+", "downsample"),
    (r"up_blocks\.\d+\.upsamplers\.\d+", "upsample"),
)


def unet_order(names: list[str]) -> list[int]:
    """diffusers' U-Net forward order of the units: down blocks, the mid block, up blocks (index order);
    in each block resnet j, then attention j, then the resamplers (the order every diffusers 2-D U-Net
    block runs them in; tests check it against the measured order)."""
    def key(i: int):
        parts = names[i].split(".")
        section, block, rest = ((1, 0, parts[1:]) if parts[0] == "mid_block"
                                else (0 if parts[0] == "down_blocks" else 2, int(parts[1]), parts[2:]))
        kind, j = rest[0], int(rest[1])
        pos = 10**6 + j if kind.endswith("samplers") else 2 * j + (kind == "attentions")
        return section, block, pos

    return sorted(range(len(names)), key=key)


def _randint(n: int, batch: int, generator) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=generator)


def unet_probe_side(model) -> int:
    """2 × 2 at the bottom level: every down-sampling stage whole, GroupNorm over more than one position."""
    return 2 ** len(model.config.block_out_channels)


@register
class UNet2DAdapter(Adapter):
    """DDPM-style pixel U-Net, optionally class-conditional (``num_class_embeds``)."""

    model_classes = ("UNet2DModel",)
    unit_patterns = _UNET_UNITS

    def static_order(self, names):
        return unet_order(names)
    family = "unet"

    def num_classes(self, model):
        return model.config.num_class_embeds

    def probe_side(self, model):
        return unet_probe_side(model)

    def conditioning(self, model, batch, *, class_labels=None, prompt_embeds=None, prompt_mask=None, generator=None):
        if prompt_embeds is not None:
            raise BlockmaskError(f"{type(model).__name__} is not text-conditioned; drop the prompt embeddings")
        n = self.num_classes(model)
        if n is None:
            if class_labels is not None:
                raise BlockmaskError(f"{type(model).__name__} is unconditional; drop --class-label")
            return Conditioning()
        if class_labels is None:
            class_labels = _randint(n, batch, generator)
        return Conditioning(class_labels=class_labels.long())

    def forward(self, model, x, t, cond):
        return model(x, timestep_on(t, x.device), class_labels=cond.class_labels, return_dict=False)[0]


@register
class UNet2DConditionAdapter(Adapter):
    """Latent U-Net with cross-attention: SD-style text (prompt embeddings), or classes as learned context
    tokens (the bundled ``mnist-ldm``: :func:`~blockmask.adapters.base.class_tokens`), or ``num_class_embeds``."""

    model_classes = ("UNet2DConditionModel",)
    unit_patterns = _UNET_UNITS

    def static_order(self, names):
        return unet_order(names)
    family = "unet"
    random_context_len = 8  # tokens of random context for random-init text models

    def is_text_conditioned(self, model):
        return model.config.cross_attention_dim is not None and class_tokens(model) is None

    def probe_side(self, model):
        return unet_probe_side(model)

    def context_width(self, model):
        dim = model.config.cross_attention_dim
        return dim[0] if isinstance(dim, (list, tuple)) else dim

    def num_classes(self, model):
        if class_tokens(model) is not None:
            return token_classes(model)[0]
        return model.config.num_class_embeds

    def conditioning(self, model, batch, *, class_labels=None, prompt_embeds=None, prompt_mask=None, generator=None):
        cfg = model.config
        if cfg.addition_embed_type not in (None, "text_time"):
            raise BlockmaskError(
                f"UNet2DConditionModel with addition_embed_type={cfg.addition_embed_type!r} is "
                "not supported by blockmask's sampler; use blockmask.enable(pipe, ...) on its pipeline"
            )
        if class_tokens(model) is not None and prompt_embeds is None:
            return token_conditioning(model, batch, class_labels, generator, attention_mask=False)
        dim = self.context_width(model)
        prompt_embeds, prompt_mask = text_context(prompt_embeds, prompt_mask, dim=dim, batch=batch,
                                                  random_len=self.random_context_len, generator=generator)
        labels = None
        if self.num_classes(model) is not None:
            labels = class_labels if class_labels is not None else _randint(self.num_classes(model), batch, generator)
        return Conditioning(class_labels=labels, encoder_hidden_states=prompt_embeds, encoder_attention_mask=prompt_mask)

    def supports_guidance(self, model):
        return True

    def null_conditioning(self, model, cond, negative_embeds=None):
        if class_tokens(model) is not None and negative_embeds is None:
            return token_null(model, cond)
        return text_null(cond, negative_embeds)

    def added_conditions(self, model, x) -> dict | None:
        """SDXL's ``text_time`` extra conditioning for a call on ``x`` (B, C, h, w): zero pooled text embeddings
        and the size/crop ids of an uncropped (8h, 8w) image. Used to measure the unit order and by
        blockmask's own sampler; a diffusers SDXL pipeline passes its real ones."""
        cfg = model.config
        if cfg.addition_embed_type != "text_time":
            return None
        b, (h, w) = x.shape[0], x.shape[-2:]
        pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
        ids = torch.tensor([[8 * h, 8 * w, 0, 0, 8 * h, 8 * w]], dtype=x.dtype, device=x.device).repeat(b, 1)
        return {"text_embeds": torch.zeros(b, pooled, dtype=x.dtype, device=x.device), "time_ids": ids}

    def forward(self, model, x, t, cond):
        return model(
            x,
            timestep_on(t, x.device),
            encoder_hidden_states=cond.encoder_hidden_states,
            class_labels=cond.class_labels,
            encoder_attention_mask=cond.encoder_attention_mask,
            added_cond_kwargs=self.added_conditions(model, x),
            return_dict=False,
        )[0]
