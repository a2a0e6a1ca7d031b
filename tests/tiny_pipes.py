"""Tiny random-init diffusers pipelines of every family ``blockmask.enable`` supports, built from the
denoiser configs in tests/configs (no downloads, no text encoders: the prompt embeddings are passed
directly, seeded; no VAE: the pipelines return latents). Each builder returns ``(pipe, run)`` where
``run(steps)`` is one seeded call of the pipeline and returns its output latents."""

from __future__ import annotations

import json
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parent / "configs"


def _model(name: str, seed: int = 0):
    import diffusers

    cfg = json.loads((CONFIGS / f"{name}.json").read_text())
    cls = getattr(diffusers, cfg.pop("_class_name"))
    torch.manual_seed(seed)
    return cls.from_config(cfg).eval().requires_grad_(False)


def _emb(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _pipe(cls_name: str, **components):
    import diffusers

    pipe = getattr(diffusers, cls_name)(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _runner(pipe, **kw):
    def run(steps: int):
        out = pipe(num_inference_steps=steps, generator=torch.Generator().manual_seed(0), output_type="latent",
                   return_dict=False, **kw)[0]
        return out.clone()

    run.kwargs = kw  # the call's own arguments (prompt embeddings, size, guidance): blockmask.learn takes them
    return run


def sdxl():
    from diffusers import EulerDiscreteScheduler

    pipe = _pipe("StableDiffusionXLPipeline", vae=None, text_encoder=None, text_encoder_2=None, tokenizer=None,
                 tokenizer_2=None, unet=_model("tiny-sdxl-unet"), scheduler=EulerDiscreteScheduler())
    return pipe, _runner(pipe, height=64, width=64, guidance_scale=2.0, prompt_embeds=_emb(1, 4, 24),
                         negative_prompt_embeds=_emb(1, 4, 24, seed=2), pooled_prompt_embeds=_emb(1, 16, seed=3),
                         negative_pooled_prompt_embeds=_emb(1, 16, seed=4))


def sd3():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = _pipe("StableDiffusion3Pipeline", transformer=_model("tiny-sd3"), scheduler=FlowMatchEulerDiscreteScheduler(),
                 vae=None, text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                 text_encoder_3=None, tokenizer_3=None)
    return pipe, _runner(pipe, height=64, width=64, guidance_scale=2.0, prompt_embeds=_emb(1, 5, 16),
                         negative_prompt_embeds=_emb(1, 5, 16, seed=2), pooled_prompt_embeds=_emb(1, 8, seed=3),
                         negative_pooled_prompt_embeds=_emb(1, 8, seed=4))


def flux():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = _pipe("FluxPipeline", scheduler=FlowMatchEulerDiscreteScheduler(), vae=None, text_encoder=None,
                 tokenizer=None, text_encoder_2=None, tokenizer_2=None, transformer=_model("tiny-flux"))
    return pipe, _runner(pipe, height=32, width=32, prompt_embeds=_emb(1, 5, 16), pooled_prompt_embeds=_emb(1, 8, seed=3))


def sana():
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = _pipe("SanaPipeline", tokenizer=None, text_encoder=None, vae=None, transformer=_model("tiny-sana"),
                 scheduler=FlowMatchEulerDiscreteScheduler())
    return pipe, _runner(pipe, height=256, width=256, guidance_scale=2.0, use_resolution_binning=False,
                         negative_prompt=None, prompt_embeds=_emb(1, 5, 12), prompt_attention_mask=torch.ones(1, 5, dtype=torch.long),
                         negative_prompt_embeds=_emb(1, 5, 12, seed=2),
                         negative_prompt_attention_mask=torch.ones(1, 5, dtype=torch.long))


def pixart_sigma():
    from diffusers import DPMSolverMultistepScheduler

    pipe = _pipe("PixArtSigmaPipeline", tokenizer=None, text_encoder=None, vae=None,
                 transformer=_model("tiny-pixart-sigma"), scheduler=DPMSolverMultistepScheduler())
    return pipe, _runner(pipe, height=64, width=64, guidance_scale=2.0, use_resolution_binning=False,
                         negative_prompt=None, prompt_embeds=_emb(1, 5, 12), prompt_attention_mask=torch.ones(1, 5, dtype=torch.long),
                         negative_prompt_embeds=_emb(1, 5, 12, seed=2),
                         negative_prompt_attention_mask=torch.ones(1, 5, dtype=torch.long))


def hunyuandit():
    from diffusers import DDPMScheduler

    pipe = _pipe("HunyuanDiTPipeline", vae=None, text_encoder=None, tokenizer=None, transformer=_model("tiny-hunyuandit"),
                 scheduler=DDPMScheduler(), safety_checker=None, feature_extractor=None, requires_safety_checker=False,
                 text_encoder_2=None, tokenizer_2=None)
    ones = lambda n: torch.ones(1, n, dtype=torch.long)  # noqa: E731
    return pipe, _runner(pipe, height=64, width=64, guidance_scale=2.0, use_resolution_binning=False,
                         prompt_embeds=_emb(1, 6, 12), prompt_attention_mask=ones(6),
                         negative_prompt_embeds=_emb(1, 6, 12, seed=2), negative_prompt_attention_mask=ones(6),
                         prompt_embeds_2=_emb(1, 7, 16, seed=3), prompt_attention_mask_2=ones(7),
                         negative_prompt_embeds_2=_emb(1, 7, 16, seed=4), negative_prompt_attention_mask_2=ones(7))


def wan():
    """Wan 2.2 layout: ``transformer`` for the high-noise steps, ``transformer_2`` below the boundary."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = _pipe("WanPipeline", tokenizer=None, text_encoder=None, vae=None, scheduler=FlowMatchEulerDiscreteScheduler(),
                 transformer=_model("tiny-wan"), transformer_2=_model("tiny-wan", seed=1), boundary_ratio=0.5)
    return pipe, _runner(pipe, height=32, width=32, num_frames=5, guidance_scale=2.0, prompt_embeds=_emb(1, 5, 16),
                         negative_prompt_embeds=_emb(1, 5, 16, seed=2))


FAMILIES = {"sdxl": sdxl, "sd3": sd3, "flux": flux, "sana": sana, "pixart-sigma": pixart_sigma,
            "hunyuandit": hunyuandit, "wan": wan}


def sd_text():
    """A StableDiffusionPipeline with a real (tiny, random) CLIP tokenizer and text encoder, so ``prompt=``
    goes through the pipeline's own text encoding and CFG. Its vocabulary is a few words and the letters."""
    import tempfile

    from diffusers import DDIMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    d = Path(tempfile.mkdtemp(prefix="tiny-clip-"))
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for w in ("a", "cat", "dog", "photo", "of", *"bcdefghijklmnopqrstuvwxyz"):
        vocab.setdefault(w + "</w>", len(vocab))
        vocab.setdefault(w, len(vocab))
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=8)
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=len(vocab), hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, max_position_embeddings=8)).eval().requires_grad_(False)
    pipe = _pipe("StableDiffusionPipeline", vae=_model("tiny-vae"), text_encoder=enc, tokenizer=tok,
                 unet=_model("tiny-unet-cond"), scheduler=DDIMScheduler(clip_sample=False), safety_checker=None,
                 feature_extractor=None, requires_safety_checker=False)
    return pipe, _runner(pipe, height=16, width=16, guidance_scale=2.0, prompt=["a photo of a cat"])
