"""Prompts for text-conditioned models in the apps, from one of three sources (the apps are thin views:
the choice, its checks and its notes are made here):

* **typed prompts**, one per line: encoded by the text encoder of the pipeline the model was loaded from
  (:func:`blockmask.sampling.prompting.encode_prompts`); a model without one (a ``config:`` random-init model, a
  bare model folder) is refused in one line that says what to use instead;
* **prompt embeddings** uploaded as a ``.safetensors`` file with ``prompt_embeds`` as written from a
  pipeline's ``encode_prompt`` (:func:`blockmask.sampling.sample.load_prompt_file`; size-limited like mask uploads);
* **random embeddings** (seeded, of the right shape), only when the visitor ticks the box, with a warning.

A text model with none of them is refused at generation. :class:`Prompt` is small and plain (safe in
``st.session_state`` / ``gr.State``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile

import torch

from blockmask.core.errors import BlockmaskError
from blockmask.sampling.prompting import encode_prompts, parse_prompts
from blockmask.viz.access import check_upload_size
from blockmask.viz.context import ModelContext

NO_PROMPT_NOTE = ("This is a text model: type prompts (one per line; the text encoder of the pipeline it was loaded "
                  "from encodes them), upload prompt embeddings (.safetensors with 'prompt_embeds' (L × D) saved from "
                  "a pipeline's encode_prompt), or tick 'Random embeddings' to sample on random embeddings on purpose.")
RANDOM_NOTE = ("Random embeddings: each seed samples with seeded random prompt embeddings of the right shape, not a "
               "prompt; images, speed-ups and PSNR may not reflect real prompts.")
APP_NAMES = {"prompts": "the Prompts box", "file": "a prompt-embeddings upload", "random": "'Random embeddings'"}
TEXT_HELP = ("One prompt per line (at most 256); images cycle through them. Encoded by the text encoder of the "
             "pipeline the model was loaded from; a model without one is refused.")


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One uploaded prompt-embeddings file, validated against a model."""

    name: str
    digest: str  # sha256 of the file / the prompt text (part of every result's cache key); "random"
    embeds: torch.Tensor | None  # (B, L, D) float; None: random embeddings
    attention_mask: torch.Tensor | None = None
    negative: torch.Tensor | None = None
    texts: tuple[str, ...] = ()  # typed prompts (encoded by the model's text encoder)

    @property
    def random(self) -> bool:
        return self.embeds is None

    @property
    def label(self) -> str:
        if self.random:
            return "random embeddings (seeded, not a prompt)"
        shape = f"{self.embeds.shape[-2]} tokens × {self.embeds.shape[-1]}"
        if self.texts:
            first = self.texts[0] if len(self.texts[0]) <= 60 else self.texts[0][:57] + "…"
            more = f" and {len(self.texts) - 1} more" if len(self.texts) > 1 else ""
            return f"“{first}”{more} (encoded by the model's text encoder, {shape})"
        return f"{self.name} ({shape}, {self.digest[:8]})"


RANDOM = Prompt("random embeddings", "random", None)


def from_text(ctx: ModelContext, text: str) -> Prompt:
    """Typed prompts (one per line) encoded by the model's own text encoder; BlockmaskError (one line)
    when there are none, they are too many or too long, or the model has no text encoder."""

    if not ctx.takes_text:
        raise BlockmaskError(f"{ctx.label} takes no prompt")
    texts = parse_prompts(str(text or ""), "prompts")
    with ctx.lock:  # the first call loads the text encoder onto the shared model's LoadedModel
        emb, neg = encode_prompts(ctx.wb, texts, APP_NAMES)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    return Prompt(f"{len(texts)} prompt(s)", digest, emb, None, neg, tuple(texts))


def pick(ctx: ModelContext, *, text: str = "", upload: Prompt | None = None, random: bool = False,
         cache: dict | None = None) -> Prompt | None:
    """The one prompt source the visitor set (None: none, or a model that takes no text); two at once is
    refused in one line. ``cache`` (per user): typed prompts already encoded."""
    if not ctx.takes_text:
        return None
    text = str(text or "").strip()
    given = [k for k, v in (("prompts", text), ("file", upload), ("random", random)) if v]
    if len(given) > 1:
        raise BlockmaskError("use one prompt source at a time: " + " and ".join(APP_NAMES[k] for k in given)
                             + " are both set; clear one")
    if random:
        return RANDOM
    if upload is not None or not text:
        return upload
    key = (ctx.key, hashlib.sha256(text.encode()).hexdigest())
    if cache is not None and key in cache:
        return cache[key]
    p = from_text(ctx, text)
    if cache is not None:
        cache.clear()  # one encoded prompt list kept per user
        cache[key] = p
    return p


def note(ctx: ModelContext, *, text: str = "", upload: Prompt | None = None, random: bool = False) -> str:
    """Markdown: what the next generation is conditioned on (no encoding here)."""
    if not ctx.takes_text:
        return ""
    n = len([ln for ln in str(text or "").splitlines() if ln.strip() and not ln.strip().startswith("#")])
    given = ([f"{n} typed prompt(s)"] if n else []) + ([f"prompt embeddings **{upload.label}**"] if upload else []) \
        + (["**random embeddings**"] if random else [])
    if len(given) > 1:
        return "Two prompt sources are set (" + " and ".join(given) + "): clear one before generating."
    if random:
        return "⚠️ " + RANDOM_NOTE
    return f"Conditioned on {given[0]}." if given else NO_PROMPT_NOTE


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
    """The :class:`blockmask.sampling.sample.Condition` for a run, or None for the model's default. A text model
    needs a prompt (:data:`RANDOM` for random embeddings, asked for)."""
    if ctx.takes_text and prompt is None:
        raise BlockmaskError("this is a text model: type prompts, upload prompt embeddings, or tick "
                             "'Random embeddings' (on purpose)")
    if label is None and guidance == 1 and (prompt is None or prompt.random):
        return None
    c = ctx.wb.condition(class_label=label, guidance_scale=guidance)
    if prompt is not None and not prompt.random:
        c.prompt_embeds, c.prompt_mask, c.negative_embeds = prompt.embeds, prompt.attention_mask, prompt.negative
    return c
