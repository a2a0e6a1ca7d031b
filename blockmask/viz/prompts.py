"""Prompt embeddings for text-conditioned models in the apps (a ``.safetensors`` file with
``prompt_embeds`` as written from a pipeline's ``encode_prompt``; see :func:`blockmask.sample.load_prompt_file`).

No bundled model ships a text encoder, so the apps take an uploaded embeddings file (size-limited like
mask uploads) and, without one, sample with seeded random embeddings of the right shape (as
``blockmask sample`` does). :class:`Prompt` is small and plain (safe in ``st.session_state`` / ``gr.State``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile

import torch

from ..errors import BlockmaskError
from .access import check_upload_size
from .context import ModelContext

NO_PROMPT_NOTE = ("No prompt embeddings uploaded: each seed samples with random embeddings of the right shape "
                  "(this model ships no text encoder). Upload a .safetensors file with 'prompt_embeds' (L × D) "
                  "saved from a pipeline's encode_prompt to condition on a real prompt.")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One uploaded prompt-embeddings file, validated against a model."""

    name: str
    digest: str  # sha256 of the file (part of every result's cache key)
    embeds: torch.Tensor  # (B, L, D) float
    attention_mask: torch.Tensor | None = None
    negative: torch.Tensor | None = None

    @property
    def label(self) -> str:
        return f"{self.name} ({self.embeds.shape[-2]} tokens × {self.embeds.shape[-1]}, {self.digest[:8]})"


def load_prompt(ctx: ModelContext, data: bytes | None, name: str = "prompt embeddings") -> Prompt:
    """Validate an uploaded embeddings file for ``ctx``; BlockmaskError (one line) on any problem."""
    if not ctx.takes_text:
        raise BlockmaskError(f"{ctx.label} takes no prompt")
    if not data:
        raise BlockmaskError(f"{name}: the file is empty")
    check_upload_size(len(data), name)
    fd, tmp = tempfile.mkstemp(suffix=".safetensors", prefix="blockmask-prompt-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(bytes(data))
        try:
            c = ctx.wb.condition(prompt_file=tmp)
        except BlockmaskError as e:
            raise BlockmaskError(f"{name}: {str(e).replace(tmp, 'the file')}") from None
    finally:
        os.unlink(tmp)
    if c.prompt_embeds.shape[-1] != ctx.text_width:
        raise BlockmaskError(f"{name}: prompt embeddings have width {c.prompt_embeds.shape[-1]}, this model "
                             f"expects {ctx.text_width}")
    return Prompt(name[:80], hashlib.sha256(bytes(data)).hexdigest(), c.prompt_embeds, c.prompt_mask, c.negative_embeds)


def condition(ctx: ModelContext, label: int | None, guidance: float, prompt: Prompt | None):
    """The :class:`blockmask.sample.Condition` for a run, or None for the model's default."""
    if label is None and guidance == 1 and prompt is None:
        return None
    c = ctx.wb.condition(class_label=label, guidance_scale=guidance)
    if prompt is not None:
        c.prompt_embeds, c.prompt_mask, c.negative_embeds = prompt.embeds, prompt.attention_mask, prompt.negative
    return c
