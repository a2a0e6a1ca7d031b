"""Prompts for text models in blockmask's own sampler (the CLI's ``train`` / ``sample`` / ``bench`` /
``method`` and the apps): a prompt list as text, encoded by the loaded pipeline's own text encoder.

Where the prompt embeddings of a text-conditioned model come from, one of:

* **prompts** (a list of strings): encoded by the text encoder and tokenizer of the pipeline folder (or
  hub id) the model was loaded from, with that pipeline class's own ``encode_prompt`` (the denoiser is
  not loaded again; the text components are loaded once and kept with the model). The negative branch
  of guidance is the encoded empty prompt, as in the pipeline. A model with no text encoder (a
  ``config:`` random-init model, a bare model folder, the bundled models) cannot encode text here: one
  line says so and what to pass instead. Supported: pipelines whose ``encode_prompt`` returns
  ``(prompt_embeds, negative_prompt_embeds)`` (Stable Diffusion 1.x / 2.x style, one text encoder);
  others are refused in one line (use :func:`blockmask.learn` on the loaded diffusers pipeline).
* **prompt embeddings** from a safetensors file (:func:`blockmask.sampling.sample.load_prompt_file`).
* **random embeddings** (seeded, of the right shape), only when asked for, with a
  :class:`~blockmask.core.errors.BlockmaskWarning`.

With several prompts the images cycle through them (image i of a batch takes prompt i mod P).
"""

from __future__ import annotations

from pathlib import Path

from blockmask.adapters import adapter_for
from blockmask.core.errors import BlockmaskError, OptionError, warn
from blockmask.core.validate import read_bytes, read_json_file

MAX_PROMPTS = 256
MAX_PROMPT_CHARS = 2000
RANDOM_WARNING = ("conditioning on random prompt embeddings (seeded, of the right shape), not on prompts: masks, "
                  "images and figures may not reflect real prompts")
API_NAMES = {"prompts": "prompts=[...]", "file": "prompt_file=", "random": "random_prompts=True"}
CLI_NAMES = {"prompts": "--prompt TEXT / --prompts FILE", "file": "--prompt-embeds FILE", "random": "--random-prompts"}


def parse_prompts(text: str, source: str = "prompts") -> list[str]:
    """A prompt list written one prompt per line (blank lines and lines starting with ``#`` skipped)."""
    if not isinstance(text, str):
        raise OptionError(f"{source}: expected text, got {type(text).__name__}")
    out = [ln.strip() for ln in text.splitlines()]
    return check_prompts([ln for ln in out if ln and not ln.startswith("#")], source)


def check_prompts(prompts, source: str = "prompts") -> list[str]:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)):
        raise OptionError(f"{source} must be a list of strings, got {type(prompts).__name__}")
    if not prompts:
        raise OptionError(f"{source}: no prompt given (one prompt per line)")
    if len(prompts) > MAX_PROMPTS:
        raise OptionError(f"{source}: {len(prompts)} prompts, at most {MAX_PROMPTS}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise OptionError(f"{source}: prompt {i + 1} is empty or not text")
        if len(p) > MAX_PROMPT_CHARS:
            raise OptionError(f"{source}: prompt {i + 1} has {len(p)} characters, at most {MAX_PROMPT_CHARS}")
        if any(ord(c) < 32 and c != "\t" for c in p):
            raise OptionError(f"{source}: prompt {i + 1} has control characters")
    return [p.strip() for p in prompts]


def read_prompt_file(path) -> list[str]:
    """The prompts of a text file, one per line (UTF-8, at most 1 MB)."""

    p = Path(path)
    raw = read_bytes(p, "prompt list", max_bytes=2**20)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BlockmaskError(f"{p}: the prompt list is not UTF-8 text") from None
    return parse_prompts(text, str(p))


def takes_text(wb) -> bool:
    return bool(adapter_for(wb.model).is_text_conditioned(wb.model))


def _pipeline_index(loaded) -> dict | None:
    """The model_index.json of the pipeline the model came from (None: not a pipeline)."""
    if loaded.source == "folder":
        f = Path(loaded.spec) / "model_index.json"
        return read_json_file(f, "pipeline index", max_bytes=2**20) if f.is_file() else None
    if loaded.source == "hub":
        import diffusers

        try:
            return diffusers.DiffusionPipeline.load_config(loaded.spec)
        except Exception:
            return None
    return None


def _has(index: dict, name: str) -> bool:
    v = index.get(name)
    return isinstance(v, (list, tuple)) and len(v) == 2 and v[0] is not None and v[1] is not None


def text_pipeline(wb, names: dict | None = None):
    """The loaded model's diffusers pipeline with its text encoder and tokenizer (loaded once, kept on
    ``wb.loaded``; the denoiser and VAE are the ones already loaded, nothing else is loaded)."""
    n = names or API_NAMES
    loaded = wb.loaded
    pipe = getattr(loaded, "_text_pipeline", None)
    if pipe is not None:
        return pipe
    index = _pipeline_index(loaded)
    what = f"{loaded.spec} ({type(wb.model).__name__}" + (", random init" if loaded.random_init else "") + ")"
    if index is None or not (_has(index, "text_encoder") and _has(index, "tokenizer")):
        raise OptionError(f"{what} has no text encoder here (not a pipeline with 'text_encoder' and 'tokenizer'), so "
                          f"prompts cannot be encoded: pass prompt embeddings saved from its pipeline's encode_prompt "
                          f"({n['file']}), or random embeddings on purpose ({n['random']})")
    if any(_has(index, n) for n in ("text_encoder_2", "text_encoder_3")):
        raise OptionError(f"{index.get('_class_name')} has several text encoders; blockmask's sampler encodes prompts "
                          "for one-encoder pipelines only: use blockmask.learn(pipe, prompts=[...]) on the loaded "
                          f"pipeline, or pass prompt embeddings ({n['file']})")
    import diffusers

    cls = getattr(diffusers, str(index.get("_class_name")), None)
    if cls is None or not hasattr(cls, "encode_prompt"):
        raise OptionError(f"{loaded.spec}: pipeline class {index.get('_class_name')!r} has no encode_prompt in this "
                          f"diffusers; pass prompt embeddings ({n['file']})")
    den = "unet" if "unet" in index else "transformer"
    keep = {"text_encoder", "tokenizer", den, "vae"}
    given = {n: None for n in index if not n.startswith("_") and n not in keep}
    given.update({den: wb.model, "vae": loaded.vae})
    p = next(wb.model.parameters())
    try:
        pipe = cls.from_pretrained(loaded.spec, dtype=p.dtype, **given)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise BlockmaskError(f"could not load the text encoder of {loaded.spec}: {msg}") from None
    pipe.text_encoder.to(p.device).eval().requires_grad_(False)
    loaded._text_pipeline = pipe
    return pipe


def encode_prompts(wb, prompts, names: dict | None = None) -> tuple:
    """(prompt_embeds (P, L, D), negative_prompt_embeds (P, L, D)) of ``prompts`` by the loaded pipeline's
    own ``encode_prompt`` (negative: the empty prompt)."""
    import torch

    prompts = check_prompts(prompts)
    if not takes_text(wb):
        raise OptionError(f"{type(wb.model).__name__} is not text-conditioned: it takes no prompt")
    n = names or API_NAMES
    pipe = text_pipeline(wb, n)
    p = next(wb.model.parameters())
    with torch.no_grad():
        out = pipe.encode_prompt(prompt=prompts, device=p.device, num_images_per_prompt=1,
                                 do_classifier_free_guidance=True, negative_prompt=[""] * len(prompts))
    if not (isinstance(out, tuple) and len(out) == 2):
        raise OptionError(f"{type(pipe).__name__}.encode_prompt returns {len(out)} outputs; blockmask's sampler "
                          f"takes (prompt_embeds, negative_prompt_embeds) pipelines only: pass prompt embeddings ({n['file']})")
    return out[0].float(), out[1].float()


def condition_for(wb, *, prompts=None, prompt_file=None, random_prompts: bool = False, class_label=None,
                  guidance_scale: float = 1.0, names: dict | None = None):
    """The :class:`~blockmask.sampling.sample.Condition` for a run from at most one prompt source. A text model
    with none is refused unless ``random_prompts`` (then a BlockmaskWarning); a model that takes no text
    refuses every source. ``names``: how the sources are called in messages (CLI flags or API names)."""
    n = names or API_NAMES
    given = [k for k, v in (("prompts", prompts), ("file", prompt_file), ("random", random_prompts)) if v]
    if len(given) > 1:
        raise OptionError(f"give one of {n['prompts']}, {n['file']} or {n['random']}, not "
                          + " and ".join(n[k] for k in given))
    text = takes_text(wb)
    if given and not text:
        classes = adapter_for(wb.model).num_classes(wb.model)
        raise OptionError(f"{type(wb.model).__name__} is not text-conditioned: drop {n[given[0]]}"
                          + (" (it takes class labels)" if classes else ""))
    if text and not given:
        raise OptionError(f"{type(wb.model).__name__} is a text model: give prompts ({n['prompts']}), prompt "
                          f"embeddings ({n['file']}) or random embeddings on purpose ({n['random']})")
    c = wb.condition(class_label=class_label, guidance_scale=guidance_scale, prompt_file=prompt_file)
    if prompts:
        c.prompt_embeds, c.negative_embeds = encode_prompts(wb, prompts, n)
    if random_prompts:
        warn(RANDOM_WARNING)
    return c
