"""Transformers (``DiTTransformer2DModel``, ``PixArtTransformer2DModel``): per transformer block,
the whole block and, inside it, the self-attention ``attn1``, (PixArt) the cross-attention
``attn2`` and the MLP ``ff``.

The branches' outputs are residual branches added to the token stream (METHOD.md §1). The whole
block is a unit of kind ``block`` (ours): its value is its residual ``block(x) − x``, so a skipped
block returns ``x + cached residual`` and skips its norms and modulation too, while the blocks
before it stay live. A branch runs only when its block runs (nested units, see
:mod:`blockmask.core.units`).
"""

from __future__ import annotations

import re

import torch

from blockmask.core.errors import BlockmaskError
from blockmask.adapters.base import (Adapter, timestep_on, Conditioning, class_tokens, model_info, register, text_context, text_null,
                   token_classes, token_conditioning, token_null)

_BLOCK_UNITS = (
    (r"transformer_blocks\.\d+", "block"),
    (r"transformer_blocks\.\d+\.attn1", "self-attn"),
    (r"transformer_blocks\.\d+\.attn2", "cross-attn"),
    (r"transformer_blocks\.\d+\.ff", "ff"),
)


def nested_block_order(names: list[str]) -> list[int] | None:
    """The completion order of ``transformer_blocks`` with nested branch units, known without a forward:
    blocks in definition order (the model's loop), each block's branches in definition order (attn1,
    attn2, ff: the block's forward) before the block itself. Checked against the measured order on
    every block family (tests/test_enable_no_example.py). None when a name fits no block."""
    blocks = [i for i, n in enumerate(names) if re.fullmatch(r"transformer_blocks\.\d+", n)]
    order = []
    for i in blocks:
        order += [j for j, n in enumerate(names) if n.startswith(names[i] + ".")] + [i]
    return order if sorted(order) == list(range(len(names))) else None


def patch_probe_side(model) -> int:
    """A 4 × 4 grid of patches (the position embedding follows the input size)."""
    return 4 * model.config.patch_size


@register
class DiTAdapter(Adapter):
    """Class-conditional DiT; the null label for guidance is ``num_embeds_ada_norm`` (diffusers' DiTPipeline)."""

    model_classes = ("DiTTransformer2DModel",)
    unit_patterns = _BLOCK_UNITS

    def static_order(self, names):
        return nested_block_order(names)
    family = "transformer"

    def num_classes(self, model):
        return model_info(model).get("num_classes", model.config.num_embeds_ada_norm)

    def probe_side(self, model):
        return patch_probe_side(model)

    def null_label(self, model) -> int:
        return int(model_info(model).get("null_class_label", model.config.num_embeds_ada_norm))

    def conditioning(self, model, batch, *, class_labels=None, prompt_embeds=None, prompt_mask=None, generator=None):
        if prompt_embeds is not None:
            raise BlockmaskError("DiTTransformer2DModel is class-conditional; use a class label, not prompt embeddings")
        if class_labels is None:
            class_labels = torch.randint(0, self.num_classes(model), (batch,), generator=generator)
        return Conditioning(class_labels=class_labels.long())

    def supports_guidance(self, model):
        return True

    def null_conditioning(self, model, cond, negative_embeds=None):
        return Conditioning(class_labels=torch.full_like(cond.class_labels, self.null_label(model)))

    def forward(self, model, x, t, cond):
        t = timestep_on(t, x.device)  # schedulers keep timesteps on the CPU; diffusers' DiT embeds them where they are
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return model(x, timestep=t, class_labels=cond.class_labels, return_dict=False)[0]


@register
class PixArtAdapter(Adapter):
    """Text-conditional PixArt-α/Σ; prompt embeddings come from a file or are random (random-init). A PixArt
    whose classes are learned context tokens (the bundled ``mnist-pixart``) takes class labels instead."""

    model_classes = ("PixArtTransformer2DModel",)
    unit_patterns = _BLOCK_UNITS

    def static_order(self, names):
        return nested_block_order(names)
    family = "transformer"
    random_context_len = 16

    def is_text_conditioned(self, model):
        return class_tokens(model) is None

    def probe_side(self, model):
        return patch_probe_side(model)

    def context_width(self, model):
        return model.config.caption_channels

    def num_classes(self, model):
        return token_classes(model)[0] if class_tokens(model) is not None else None

    def conditioning(self, model, batch, *, class_labels=None, prompt_embeds=None, prompt_mask=None, generator=None):
        if class_tokens(model) is not None and prompt_embeds is None:
            return token_conditioning(model, batch, class_labels, generator, attention_mask=True)
        if class_labels is not None:
            raise BlockmaskError("PixArtTransformer2DModel is text-conditional; pass prompt embeddings, not a class label")
        prompt_embeds, prompt_mask = text_context(prompt_embeds, prompt_mask, dim=model.config.caption_channels,
                                                  batch=batch, random_len=self.random_context_len, generator=generator)
        return Conditioning(encoder_hidden_states=prompt_embeds, encoder_attention_mask=prompt_mask)

    def supports_guidance(self, model):
        return True

    def null_conditioning(self, model, cond, negative_embeds=None):
        if class_tokens(model) is not None and negative_embeds is None:
            return token_null(model, cond)
        return text_null(cond, negative_embeds)

    def forward(self, model, x, t, cond):
        t = timestep_on(t, x.device)  # schedulers keep timesteps on the CPU; diffusers' DiT embeds them where they are
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        added = {"resolution": None, "aspect_ratio": None}
        if model.config.use_additional_conditions:
            b = x.shape[0]
            h, w = x.shape[-2:]
            vae_scale = 8  # PixArt's VAE downsamples by 8; resolution is in pixels
            added = {
                "resolution": torch.tensor([[h * vae_scale, w * vae_scale]], dtype=x.dtype, device=x.device).repeat(b, 1),
                "aspect_ratio": torch.tensor([[1.0]], dtype=x.dtype, device=x.device).repeat(b, 1),
            }
        return model(
            x,
            encoder_hidden_states=cond.encoder_hidden_states,
            timestep=t,
            added_cond_kwargs=added,
            encoder_attention_mask=cond.encoder_attention_mask,
            return_dict=False,
        )[0]
