"""Adapter protocol and registry (one adapter per model family).

An adapter knows three things about a diffusers denoiser, all as data or tiny functions:
which modules are maskable units (METHOD.md §1), how to build conditioning for it, and how
to call it for one denoising step. Everything else in blockmask is architecture-agnostic.
"""

from __future__ import annotations

import dataclasses
import re
from typing import ClassVar

import torch

from blockmask.adapters.contracts import BlockContract, register_contract
from blockmask.core.errors import UnsupportedModelError, BlockmaskError


def timestep_on(t: torch.Tensor, device) -> torch.Tensor:
    """The timestep on the model's device without a host sync: a one-element CPU tensor becomes a
    fill on the device (asynchronous), so the sampling loop never waits for the GPU at each step."""
    if t.device.type == "cpu" and torch.device(device).type != "cpu" and t.numel() == 1:
        return torch.full(t.shape, t.item(), dtype=t.dtype, device=device)
    return t.to(device)


@dataclasses.dataclass
class Conditioning:
    """What the denoiser is conditioned on, batched like the latents.

    class_labels: (B,) int64, for class-conditional models.
    encoder_hidden_states: (B, L, D), prompt embeddings for text models.
    encoder_attention_mask: (B, L), optional.
    """

    class_labels: torch.Tensor | None = None
    encoder_hidden_states: torch.Tensor | None = None
    encoder_attention_mask: torch.Tensor | None = None

    def cat(self, other: "Conditioning") -> "Conditioning":
        """Concatenate along the batch (cond first, then other): the CFG batch."""

        def c(a, b):
            return None if a is None else torch.cat([a, b], 0)

        return Conditioning(
            c(self.class_labels, other.class_labels),
            c(self.encoder_hidden_states, other.encoder_hidden_states),
            c(self.encoder_attention_mask, other.encoder_attention_mask),
        )

    def to(self, device, dtype=None) -> "Conditioning":
        def mv(t, floating):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if (floating and dtype is not None) else t.dtype)

        return Conditioning(
            mv(self.class_labels, False),
            mv(self.encoder_hidden_states, True),
            mv(self.encoder_attention_mask, False),
        )


class Adapter:
    """Base class; subclasses set ``model_classes`` and ``unit_patterns``.

    unit_patterns: (regex over the module path, kind) pairs; a module whose path matches is a
    unit of that kind. Execution order is measured by :func:`blockmask.hooks.discover.discover_units`.
    """

    model_classes: ClassVar[tuple[str, ...]] = ()
    unit_patterns: ClassVar[tuple[tuple[str, str], ...]] = ()
    family: ClassVar[str] = ""  # "unet" or "transformer"
    # block class name -> its input/output contract (tuple-output blocks; see adapters/contracts.py)
    blocks: ClassVar[dict[str, BlockContract]] = {}
    # True: unit order is measured by one forward on example inputs; False: the units are whole
    # blocks run in the order the model defines them (no forward, no example inputs needed)
    measured_order: ClassVar[bool] = True

    def unit_candidates(self, model: torch.nn.Module) -> list[tuple[str, str, torch.nn.Module]]:
        """(name, kind, module) for every module matching a unit pattern, in definition order."""
        pats = [(re.compile(p + r"$"), kind) for p, kind in self.unit_patterns]
        out = []
        for name, mod in model.named_modules():
            for rx, kind in pats:
                if rx.match(name):
                    out.append((name, self.refine_kind(name, kind, mod), mod))
                    break
        return out

    def refine_kind(self, name: str, kind: str, module: torch.nn.Module) -> str:
        return kind

    def static_order(self, names: list[str]) -> list[int] | None:
        """The units' execution order known without a forward (indices into ``names``), used when the
        example inputs of a measured-order model cannot be synthesised; None: unknown (then that fails)."""
        return None

    # --- shapes and conditioning -------------------------------------------------------
    def latent_shape(self, model) -> tuple[int, int, int]:
        """(C, H, W) of the latents; ``model._blockmask_sample_size`` overrides the config's size
        (e.g. PixArt at a reduced resolution: its position embedding follows the input)."""
        c = model.config
        size = getattr(model, "_blockmask_sample_size", None) or c.sample_size
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (c.in_channels, h, w)

    def probe_side(self, model) -> int | None:
        """Smallest latent side with the same unit order and consumer graph as the full size (every
        down-sampling level / patch grid kept whole), or None where only the full size is known to be.
        Structure measurements (unit order, consumer graph) run there: their cost then does not grow with
        the paper's sample size (PixArt-XL at 1024² is ~2.9 TMACs a forward, and the graph takes N + 1)."""
        return None

    def probe_shape(self, model) -> tuple[int, int, int]:
        """:meth:`latent_shape`, shrunk to :meth:`probe_side` where that is smaller."""
        c, h, w = self.latent_shape(model)
        side = self.probe_side(model)
        if side is None or (side >= h and side >= w):
            return (c, h, w)
        return (c, min(h, side), min(w, side))

    def num_classes(self, model) -> int | None:
        """Number of class labels the model accepts (excluding the null label), or None."""
        return None

    def is_text_conditioned(self, model) -> bool:
        return False

    def context_width(self, model) -> int | None:
        """Width D of the context tokens (B, L, D) the model cross-attends to, or None."""
        return None

    def conditioning(
        self,
        model,
        batch: int,
        *,
        class_labels: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        prompt_mask: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Conditioning:
        """Conditioning for ``batch`` samples (random class labels / embeddings when not given)."""
        return Conditioning()

    def null_conditioning(self, model, cond: Conditioning, negative_embeds=None) -> Conditioning:
        """The unconditional branch matching ``cond`` for classifier-free guidance."""
        raise UnsupportedModelError(f"{type(model).__name__} has no unconditional branch for guidance")

    def supports_guidance(self, model) -> bool:
        return False

    # --- calling the model ----------------------------------------------------------------
    def forward(self, model, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """One denoiser call; returns the raw output tensor (B, C_out, H, W)."""
        raise UnsupportedModelError(f"blockmask's own sampler and measurements do not drive {type(model).__name__}; "
                                    "use blockmask.enable(pipe, ...) on its diffusers pipeline")

    def split_output(self, model, out: torch.Tensor) -> torch.Tensor:
        """The part of the output the scheduler consumes (drops a learned-sigma half)."""
        c_in = model.config.in_channels
        if out.shape[1] == 2 * c_in:
            return out[:, :c_in]
        return out


def model_info(model) -> dict:
    """Facts a model folder states in ``blockmask.json`` (e.g. ``num_classes``, ``null_class_label``
    for a DiT trained with its own null label); attached by :func:`blockmask.io.models.load_model`."""
    return getattr(model, "_blockmask_info", None) or {}


def class_tokens(model) -> torch.Tensor | None:
    """The class-token table (num_classes + 1, L, D) of a model whose classes are cross-attention tokens
    (the bundled latent models; ``class_tokens`` in blockmask.json), attached by the loader, else None."""
    return getattr(model, "_blockmask_class_tokens", None)


def token_classes(model) -> tuple[int, int]:
    """(number of classes, null label) of a class-token model: blockmask.json's ``num_classes`` and
    ``null_class_label``, by default every row but the last and the last row."""
    rows = class_tokens(model).shape[0]
    info = model_info(model)
    return int(info.get("num_classes", rows - 1)), int(info.get("null_class_label", rows - 1))


def token_conditioning(model, batch: int, class_labels, generator, *, attention_mask: bool) -> Conditioning:
    """Class labels (B,) -> their token sequences as ``encoder_hidden_states`` (B, L, D), with an all-ones
    (B, L) attention mask when the model's pipeline passes one (PixArt). Random labels when none given."""
    tokens = class_tokens(model)
    n, _ = token_classes(model)
    if class_labels is None:
        class_labels = torch.randint(0, n, (batch,), generator=generator)
    ctx = tokens[class_labels.long().cpu()]
    mask = torch.ones(ctx.shape[:2], dtype=torch.long) if attention_mask else None
    return Conditioning(encoder_hidden_states=ctx, encoder_attention_mask=mask)


def token_null(model, cond: Conditioning) -> Conditioning:
    """The null class's tokens for every sample of ``cond`` (the unconditional branch of guidance)."""
    _, null = token_classes(model)
    ctx = cond.encoder_hidden_states
    null_ctx = class_tokens(model)[null].to(ctx)[None].expand(ctx.shape[0], -1, -1)
    mask = cond.encoder_attention_mask
    return Conditioning(encoder_hidden_states=null_ctx, encoder_attention_mask=None if mask is None else torch.ones_like(mask))


def text_context(prompt_embeds, prompt_mask, *, dim: int, batch: int, random_len: int, generator):
    """Prompt embeddings (B, L, dim) for a text model: given ones (broadcast from batch 1) or seeded
    random ones of the right shape (random-init models need no text encoder)."""

    if prompt_embeds is None:
        prompt_embeds = torch.randn(batch, random_len, dim, generator=generator)
    elif prompt_embeds.shape[-1] != dim:
        raise BlockmaskError(f"prompt embeddings have width {prompt_embeds.shape[-1]}, the model expects {dim}")
    if prompt_embeds.shape[0] == 1 and batch > 1:
        prompt_embeds = prompt_embeds.expand(batch, -1, -1)
        prompt_mask = None if prompt_mask is None else prompt_mask.expand(batch, -1)
    elif prompt_embeds.shape[0] != batch:  # P prompts for B images: image i takes prompt i mod P
        idx = torch.arange(batch) % prompt_embeds.shape[0]
        prompt_embeds = prompt_embeds[idx.to(prompt_embeds.device)]
        prompt_mask = None if prompt_mask is None else prompt_mask[idx.to(prompt_mask.device)]
    return prompt_embeds, prompt_mask


def text_null(cond: Conditioning, negative_embeds=None) -> Conditioning:
    """Unconditional branch of a text model: negative embeddings (or zeros), full attention mask."""
    ctx = cond.encoder_hidden_states
    neg = negative_embeds if negative_embeds is not None else torch.zeros_like(ctx)
    if neg.shape[0] == 1 and ctx.shape[0] > 1:
        neg = neg.expand(ctx.shape[0], -1, -1)
    elif neg.shape[0] != ctx.shape[0]:  # cycled like the prompts (text_context)
        neg = neg[(torch.arange(ctx.shape[0]) % neg.shape[0]).to(neg.device)]
    mask = cond.encoder_attention_mask
    return Conditioning(class_labels=cond.class_labels, encoder_hidden_states=neg.to(ctx),
                        encoder_attention_mask=None if mask is None else torch.ones_like(mask))


_REGISTRY: dict[str, Adapter] = {}


def register(cls: type[Adapter]) -> type[Adapter]:
    """Class decorator: register an adapter for every class name in ``cls.model_classes``."""
    if not issubclass(cls, Adapter):
        raise TypeError(f"{cls!r} is not an Adapter")
    if not cls.model_classes or not cls.unit_patterns:
        raise TypeError(f"{cls.__name__} must set model_classes and unit_patterns")
    inst = cls()
    for block, contract in cls.blocks.items():
        register_contract(block, contract)
    for name in cls.model_classes:
        if name in _REGISTRY:
            raise ValueError(f"an adapter for {name} is already registered")
        _REGISTRY[name] = inst
    return cls


def registered() -> list[str]:
    return sorted(_REGISTRY)


def adapter_for(model: torch.nn.Module) -> Adapter:
    """The adapter for ``model``'s class (or a base class); clear error when none."""
    for klass in type(model).__mro__:
        if klass.__name__ in _REGISTRY:
            return _REGISTRY[klass.__name__]
    raise UnsupportedModelError(
        f"unsupported model class {type(model).__name__}: no blockmask adapter declares its blocks (their module "
        f"paths and input/output streams, one file in blockmask/adapters/); supported: {', '.join(registered())}"
    )
