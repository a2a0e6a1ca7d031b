"""Model specs accepted everywhere (CLI, API, apps).

* a bundled model name: every diffusers folder with weights in the bundled assets' ``models/``
  (``mnist-ddpm``, ``mnist-dit``, ``mnist-ldm``, ``mnist-pixart``; see ``assets/models/TRAINING.md``);
* ``config:PATH.json`` — random init from a diffusers-style config with ``_class_name``
  (legacy ``Transformer2DModel`` resolves to DiT / PixArt as diffusers does), seeded;
* a local diffusers folder (a model folder with ``config.json`` or a pipeline folder with
  ``model_index.json``);
* a Hugging Face hub id (needs network; offline gives a clear error).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch

from blockmask.core.errors import BlockmaskError, FileFormatError, UnsupportedModelError, warn

DENOISER_COMPONENTS = ("transformer", "unet")
SUPPORTED_CLASSES = ("UNet2DModel", "UNet2DConditionModel", "DiTTransformer2DModel", "PixArtTransformer2DModel")


from blockmask.adapters import adapter_for
from blockmask.core.schedulers import DEFAULT_TRAIN_CONFIG
from blockmask.core.validate import check_finite_tensors, check_int, read_bytes, read_json_file
from blockmask.io.resources import assets_dir, bundled_masks  # noqa: E402,F401  (re-exported)


def bundled_models() -> list[str]:
    """Names of the bundled models: the folders of ``models/`` that hold a diffusers model with weights
    (a folder still waiting for its trained weights is not listed)."""
    d = assets_dir() / "models"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if _is_diffusers_folder(p) and _has_weights(p))


WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


def _has_weights(p: Path) -> bool:
    """The denoiser's weights are there: in the folder (model folder) or in its unet/ or transformer/."""
    return any((p / sub / w).is_file() for sub in ("", *DENOISER_COMPONENTS) for w in WEIGHT_FILES)


def _is_diffusers_folder(p: Path) -> bool:
    """A model folder (config.json) or a pipeline folder (model_index.json)."""
    return (p / "config.json").is_file() or (p / "model_index.json").is_file()


DEFAULT_MODEL = "mnist-ddpm"


@dataclasses.dataclass
class LoadedModel:
    """A denoiser plus what came with it."""

    spec: str
    model: torch.nn.Module
    scheduler: object | None = None  # the model's own scheduler, when it shipped one
    vae: torch.nn.Module | None = None  # latent models loaded from a pipeline
    source: str = ""  # bundled | config | folder | hub
    info: dict = dataclasses.field(default_factory=dict)  # blockmask.json / training.json of bundled models

    @property
    def random_init(self) -> bool:
        return self.source == "config"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model)

    @property
    def label(self) -> str:
        tag = " (random init)" if self.random_init else ""
        return f"{self.spec}{tag} — {type(self.model).__name__}"


def fingerprint(model: torch.nn.Module) -> str:
    """Model class + hash of its public config (weights are not hashed)."""
    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:12]
    return f"{type(model).__name__}:{h}"


def _read_config(spec: str, subfolder: str | None, filename: str) -> dict:
    """A diffusers config file (model or scheduler) from a folder or the hub."""
    from diffusers.configuration_utils import ConfigMixin

    class _Reader(ConfigMixin):
        config_name = filename

    return dict(_Reader.load_config(spec, subfolder=subfolder))


def _resolve_class(config: dict, source: str = "config"):
    import diffusers
    from diffusers.models.model_loading_utils import _fetch_remapped_cls_from_config

    name = config.get("_class_name")
    if not name:
        raise BlockmaskError(f"{source}: no '_class_name'; cannot tell which diffusers model to build")
    if not isinstance(name, str):
        raise FileFormatError(source, f"must be a string, found {type(name).__name__}", "_class_name")
    cls = getattr(diffusers, name, None) if name.isidentifier() and not name.startswith("_") else None
    if not isinstance(cls, type):
        raise UnsupportedModelError(f"{source}: unknown diffusers class {name[:80]!r}")
    if name == "Transformer2DModel":
        try:
            cls = _fetch_remapped_cls_from_config(config, cls)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise FileFormatError(source, f"legacy Transformer2DModel config lacks what decides its class ({e})") from None
    if cls.__name__ not in SUPPORTED_CLASSES:
        raise UnsupportedModelError(f"unsupported model class {cls.__name__}; supported: {', '.join(SUPPORTED_CLASSES)}")
    return cls


# Architecture sizes a config may ask for: far above any real model (DiT-XL: 28 layers, 1152 wide;
# SD-XL: 2816 channels), low enough that a hostile config cannot make the loader loop for hours.
MAX_CONFIG_INT = 2**17
MAX_DEPTH_FIELDS = {"num_layers": 512, "layers_per_block": 64, "transformer_layers_per_block": 64}


def _check_config_sizes(config: dict, source: str) -> None:
    """Every integer in a config (lists included) within bounds; depth fields tighter."""
    for key, value in config.items():
        items = value if isinstance(value, list) else [value]
        high = MAX_DEPTH_FIELDS.get(key, MAX_CONFIG_INT)
        for v in items:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not abs(v) <= high:  # NaN too
                raise FileFormatError(source, f"is {v}, beyond the supported size ({high})", key)
        if isinstance(value, list) and len(value) > 256:
            raise FileFormatError(source, f"has {len(value)} entries (at most 256)", key)


def from_config(path: str | os.PathLike, *, init_seed: int = 0, device="cpu", dtype=torch.float32) -> torch.nn.Module:
    """Random-init model from a config JSON, seeded (every call builds the same weights)."""

    p = Path(path)
    config = read_json_file(p, "config file", max_bytes=2**20)
    _check_config_sizes(config, str(p))
    init_seed = check_int("init seed", init_seed, low=0, high=2**63 - 1)
    cls = _resolve_class(config, str(p))
    torch.manual_seed(init_seed)
    try:
        with torch.device(device):  # device="meta": shapes only, for counting MACs of huge configs
            model = cls.from_config(config)
    except (TypeError, ValueError, KeyError, AttributeError, IndexError, AssertionError, RuntimeError,
            ZeroDivisionError, OverflowError) as e:  # diffusers' own checks of the config values
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise FileFormatError(p, f"{cls.__name__} cannot be built from this config ({msg})") from None
    if dtype != torch.float32:
        model = model.to(dtype=dtype)
    return model.eval().requires_grad_(False)


def _load_folder_or_hub(spec: str, *, device, dtype, local: bool) -> LoadedModel:
    import diffusers

    where = "folder" if local else "hub id"
    try:
        if local:
            root = Path(spec)
            has_index = (root / "model_index.json").is_file()
            has_config = (root / "config.json").is_file()
            if not (has_index or has_config):
                raise BlockmaskError(f"{spec} is not a diffusers folder (no model_index.json or config.json)")
            index = read_json_file(root / "model_index.json", "pipeline index", max_bytes=2**20) if has_index else None
        else:
            try:
                index = diffusers.DiffusionPipeline.load_config(spec)
            except Exception:
                index = None
        kw = {"torch_dtype": dtype}
        sub = None
        if index is not None:
            sub = next((c for c in DENOISER_COMPONENTS if c in index), None)
            if sub is None:
                raise BlockmaskError(f"{spec}: pipeline has no 'unet' or 'transformer' component")
        if local:  # the checks config: specs get: regular file, size, strict finite JSON, sizes in bounds
            cfg_path = Path(spec) / (sub or "") / "config.json"
            _check_config_sizes(read_json_file(cfg_path, "model config", max_bytes=2**20), str(cfg_path))
        cfg = _read_config(spec, sub, "config.json")
        cls = _resolve_class(cfg)
        if local:  # never diffusers' "unsafe serialization" pickle path when safetensors are there
            kw_model = {**kw, **_safetensors_kw(Path(spec) / (sub or ""))}
        model = cls.from_pretrained(spec, subfolder=sub, **(kw_model if local else kw))
        if local:
            _warn_cast(Path(spec), sub, dtype)
        missing = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if missing:  # diffusers leaves tensors the weights file lacks on the meta device
            raise FileFormatError(Path(spec) / (sub or ""), f"the weights lack {len(missing)} tensor(s) of "
                                  f"{type(model).__name__}, first {missing[0]!r}")
        check_finite_weights(model, spec)
        scheduler = _load_scheduler(spec, local)
        vae = None
        if index is not None and "vae" in index:
            try:
                vae_kw = {**kw, **_safetensors_kw(Path(spec) / "vae")} if local else kw
                vae = diffusers.AutoencoderKL.from_pretrained(spec, subfolder="vae", **vae_kw).to(device).eval()
            except Exception:
                if local and (Path(spec) / "blockmask.json").is_file():  # a blockmask latent model needs its VAE
                    raise
                vae = None
    except BlockmaskError:
        raise
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        hint = "" if local else " (no network or unknown id? set HF_HUB_OFFLINE=1 to use only the local cache)"
        raise BlockmaskError(f"could not load model {where} {spec!r}{hint}: {msg[:200]}") from None
    model = model.to(device).eval().requires_grad_(False)
    info = {}
    if local and (Path(spec) / "blockmask.json").is_file():
        info = read_json_file(Path(spec) / "blockmask.json", "model info file", max_bytes=2**20)
    model._blockmask_info = info  # read by adapters (class count, null label)
    if "class_tokens" in info:  # classes as cross-attention tokens (the bundled latent models)
        model._blockmask_class_tokens = load_class_tokens(Path(spec), info, model).to(device)
    return LoadedModel(spec, model, scheduler, vae, "folder" if local else "hub", info)


CLASS_TOKENS_KEY = "class_tokens"


def load_class_tokens(root: Path, info: dict, model: torch.nn.Module) -> torch.Tensor:
    """The class-token table (num_classes + 1, L, D) named by blockmask.json's ``class_tokens`` (a
    safetensors file in the folder with the tensor ``class_tokens``), checked against the model."""
    from safetensors.torch import load

    src = root / "blockmask.json"
    name = info.get("class_tokens")
    if not isinstance(name, str) or not name.endswith(".safetensors") or Path(name).name != name:
        raise FileFormatError(src, "must name a .safetensors file inside the model folder", "class_tokens")
    path = root / name
    if not path.is_file():
        raise BlockmaskError(f"{root.name}: the class token file {name} is missing (blockmask.json names it; "
                             "the model takes its class labels through it)")
    raw = read_bytes(path, "class token file", max_bytes=2**26)
    try:
        tensors = load(raw)
    except Exception as e:
        raise FileFormatError(path, f"not a safetensors file ({str(e).strip().splitlines()[0][:120]})") from None
    t = tensors.get(CLASS_TOKENS_KEY)
    if t is None:
        raise FileFormatError(path, f"has no {CLASS_TOKENS_KEY!r} tensor (found: {', '.join(tensors) or 'nothing'})")
    width = adapter_for(model).context_width(model)
    if t.ndim != 3 or not t.is_floating_point() or t.shape[0] < 2 or not torch.isfinite(t).all():
        raise FileFormatError(path, f"must be a finite float tensor (classes + 1, L, D), got {t.dtype} {tuple(t.shape)}",
                              CLASS_TOKENS_KEY)
    if width is None or t.shape[2] != width:
        raise FileFormatError(path, f"token width {t.shape[2]} does not fit {type(model).__name__} (context width "
                              f"{width})", CLASS_TOKENS_KEY)
    rows = t.shape[0]
    for key, low, high in (("num_classes", 1, rows - 1), ("null_class_label", 0, rows - 1)):
        v = info.get(key, rows - 1)
        if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
            raise FileFormatError(src, f"must be an integer in {low}..{high} (the token table has {rows} rows), "
                                  f"got {v!r}", key)
    return t.float()


def _load_scheduler(spec: str, local: bool = True):
    """The folder's own scheduler. Missing: None (the caller's default DDIM training schedule), with
    a warning; present but broken (truncated, nested too deep, unknown class, bad values): an error."""
    import diffusers

    default = ", ".join(f"{k}={v}" for k, v in DEFAULT_TRAIN_CONFIG.items())
    where = Path(spec) / "scheduler" / "scheduler_config.json"
    if local:
        if not (where.exists() or where.is_symlink()):
            warn(f"{spec} has no scheduler/scheduler_config.json: sampling uses the default training schedule "
                 f"({default}); samples may be wrong if the model was trained with another")
            return None

        cfg = read_json_file(where, "scheduler config", max_bytes=2**20)
    else:
        try:
            cfg = _read_config(spec, "scheduler", "scheduler_config.json")
        except Exception:
            warn(f"{spec} has no readable scheduler/scheduler_config.json: sampling uses the default training "
                 f"schedule ({default})")
            return None
    name = cfg.get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (isinstance(cls, type) and name.endswith("Scheduler") and hasattr(cls, "from_config")):
        raise FileFormatError(where, f"names no diffusers scheduler ({str(name)[:60]!r})", "_class_name")
    try:
        return cls.from_config(cfg)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise FileFormatError(where, f"{name} cannot be built from it ({msg})") from None


def _safetensors_kw(folder: Path) -> dict:
    """``use_safetensors=True`` where the folder has safetensors weights."""
    return {"use_safetensors": True} if any(folder.glob("*.safetensors")) else {}


SAFETENSORS_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}


def _warn_cast(root: Path, sub: str | None, dtype: torch.dtype) -> None:
    """Warn when the stored weights are cast to another dtype on load (read from the safetensors
    header only; int8 weights cast to float are quantized numbers read as plain ones)."""
    import collections

    from safetensors import safe_open

    f = root / (sub or "") / WEIGHT_FILES[0]
    if not f.is_file():
        return
    try:
        with safe_open(str(f), framework="pt") as st:
            kinds = collections.Counter(st.get_slice(k).get_dtype() for k in st.keys())
    except Exception:
        return  # diffusers' own loader reports an unreadable file
    want = SAFETENSORS_DTYPES.get(dtype)
    other = {k: v for k, v in kinds.items() if k != want}
    if other:
        stored = ", ".join(f"{k} ({v} tensors)" for k, v in sorted(other.items()))
        ints = any(k[0] in "IU" for k in other)
        warn(f"{f}: weights stored as {stored} are cast to {str(dtype).replace('torch.', '')}"
             + ("; integer (quantized?) weights read as plain numbers will likely give wrong samples" if ints else ""))


def check_finite_weights(model: torch.nn.Module, source: str) -> None:
    """Loaded weights must be finite: one line naming the first parameter or buffer that is not."""

    check_finite_tensors([*model.named_parameters(), *model.named_buffers()], f"{source}: weights")


def load_model(spec: str, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               init_seed: int = 0) -> LoadedModel:
    """Resolve a model spec (see module docstring) to a frozen, eval-mode denoiser."""
    if not isinstance(spec, (str, os.PathLike)):
        raise BlockmaskError(f"model spec must be a string (name, config:PATH, folder or hub id), got {type(spec).__name__}")
    spec = str(spec).strip()
    if not spec:
        raise BlockmaskError("empty model spec")
    if len(spec) > 4096 or any(len(part) > 255 for part in spec.replace("config:", "", 1).split("/")):
        raise BlockmaskError(f"model spec is too long ({len(spec)} characters; a file name has at most 255)")
    if spec.startswith("config:"):
        path = spec[len("config:"):]
        return LoadedModel(spec, from_config(path, init_seed=init_seed, device=device, dtype=dtype), source="config")
    bundled = assets_dir() / "models" / spec
    if "/" not in spec and _is_diffusers_folder(bundled):
        lm = _load_folder_or_hub(str(bundled), device=device, dtype=dtype, local=True)
        return dataclasses.replace(lm, spec=spec, source="bundled")
    if os.path.exists(spec):
        return _load_folder_or_hub(spec, device=device, dtype=dtype, local=True)
    if spec.endswith(".json"):
        raise BlockmaskError(f"config file not found: {spec} (use config:PATH.json for random init)")
    if spec.count("/") != 1 or spec.startswith(("/", ".")):
        names = ", ".join(bundled_models()) or "none installed"
        raise BlockmaskError(f"unknown model {spec!r}: not a bundled model ({names}), folder, config:PATH or hub id")
    return _load_folder_or_hub(spec, device=device, dtype=dtype, local=False)
