"""Train the bundled latent models ``mnist-ldm`` and ``mnist-pixart`` on MNIST, one stage at a time.

Stages (each bounded by ``--minutes``, each can continue from earlier weights with ``--init``):

* ``vae``: a small ``AutoencoderKL`` (32x32x1 -> 8x8x4 latents), loss = MSE reconstruction + ``--kl`` x
  the per-element KL to N(0, I). At the end the latent ``scaling_factor`` is set to 1 / std of the
  latents of the training images (as Stable Diffusion's was chosen) and saved in the VAE's config.
  Output: a model folder (default ``runs/mnist-vae``; not a bundled model on its own).
* ``ldm``: a ``UNet2DConditionModel`` on the frozen VAE's (scaled) latents, class-conditioned through
  cross-attention: each class is a learned sequence of ``--tokens`` tokens (width = the U-Net's
  ``cross_attention_dim``), plus a learned null sequence (label 10) for classifier-free guidance,
  drawn for 10% of the samples. Epsilon prediction, diffusers' ``DDPMScheduler`` (1000 linear betas;
  saved with ``clip_sample=False, steps_offset=1``, see :func:`latent_scheduler`).
* ``pixart``: a ``PixArtTransformer2DModel`` (attn1, attn2, ff per block) on the same latents and tokens
  (token width = ``caption_channels``).

The denoiser stages write a diffusers pipeline folder (``StableDiffusionPipeline`` /
``PixArtAlphaPipeline`` layout, text encoder and tokenizer null) with ``vae/``, ``scheduler/``, the
EMA denoiser, ``class_tokens.safetensors`` (``class_tokens``: (11, tokens, width), row 10 = null) and
``blockmask.json`` (classes, null label, token file, default guidance), which ``blockmask`` loads as
``mnist-ldm`` / ``mnist-pixart`` when it lies in ``assets/models/``. Every folder is written to a temp
folder and renamed into place (also the checkpoints every ``--ckpt-minutes``).

    nice -n 19 python scripts/train_latent.py --stage vae --minutes 100
    nice -n 19 python scripts/train_latent.py --stage ldm --minutes 100 --vae runs/mnist-vae
    nice -n 19 python scripts/train_latent.py --stage pixart --minutes 100 --vae runs/mnist-vae
    python scripts/train_latent.py --stage ldm --samples-only      # redraw samples.png of the folder

``--size tiny`` builds a few-thousand-parameter version of every model (tests, rehearsals).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import diffusers  # noqa: E402
from diffusers import AutoencoderKL, DDPMScheduler, PixArtTransformer2DModel, UNet2DConditionModel  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from blockmask.data.mnist import default_mnist_dir, mnist_sha256, mnist_tensor_dataset  # noqa: E402
from train_bundled import build_scheduler, save_grid  # noqa: E402
from train_common import (  # noqa: E402
    TimedTrainer, add_common_args, command_line, pick_device, prior_run, swap_folder, temp_folder, total_steps,
)

NUM_CLASSES = 10
NULL_CLASS = 10  # the null token row: the unconditional branch of classifier-free guidance
LABEL_DROPOUT = 0.1
TOKEN_FILE = "class_tokens.safetensors"
TOKEN_KEY = "class_tokens"
DENOISER_DIR = {"ldm": "unet", "pixart": "transformer"}
PIPELINE_CLASS = {"ldm": "StableDiffusionPipeline", "pixart": "PixArtAlphaPipeline"}
DEFAULT_OUT = {"vae": REPO / "runs" / "mnist-vae", "ldm": REPO / "assets" / "models" / "mnist-ldm",
               "pixart": REPO / "assets" / "models" / "mnist-pixart"}
DEFAULT_LR = {"vae": 1e-3, "ldm": 1e-3, "pixart": 5e-4}

# Model sizes: "small" is bundled (assets/models/ < 60 MB, 8 images x 50 steps < 10 s on 2 cores); "tiny": tests.
SIZES = {
    "small": {
        "vae": dict(block_out_channels=(32, 64, 64), norm_num_groups=32),
        "unet": dict(block_out_channels=(48, 96, 96), norm_num_groups=16, attention_head_dim=4),
        "pixart": dict(num_layers=8, num_attention_heads=4, attention_head_dim=32),
        "tokens": 4, "token_width": 64,
    },
    "tiny": {
        "vae": dict(block_out_channels=(8, 16, 16), norm_num_groups=8),
        "unet": dict(block_out_channels=(16, 32, 32), norm_num_groups=8, attention_head_dim=2),
        "pixart": dict(num_layers=2, num_attention_heads=2, attention_head_dim=8),
        "tokens": 2, "token_width": 16,
    },
}
LATENT_CHANNELS = 4


def latent_scheduler():
    """The bundled models' DDPM schedule (1000 linear betas, epsilon), with Stable Diffusion's
    ``steps_offset=1`` and no x0 clipping (latents are not confined to [-1, 1]); StableDiffusionPipeline
    would otherwise change both on its copy and sample other timesteps than blockmask."""
    return DDPMScheduler.from_config(build_scheduler().config, clip_sample=False, steps_offset=1)


def build_vae(size: str = "small") -> AutoencoderKL:
    """32x32x1 images <-> 8x8x4 latents (three levels, two downsamplings)."""
    return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 3,
                         up_block_types=("UpDecoderBlock2D",) * 3, layers_per_block=1,
                         latent_channels=LATENT_CHANNELS, sample_size=32, **SIZES[size]["vae"])


def build_denoiser(kind: str, size: str = "small") -> torch.nn.Module:
    """The latent denoiser (8x8x4 in and out); its context width is the class tokens' width."""
    s = SIZES[size]
    if kind == "ldm":
        return UNet2DConditionModel(
            sample_size=8, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS, layers_per_block=1,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=s["token_width"], **s["unet"])
    if kind == "pixart":
        p = s["pixart"]
        return PixArtTransformer2DModel(
            sample_size=8, patch_size=1, in_channels=LATENT_CHANNELS, out_channels=LATENT_CHANNELS,
            cross_attention_dim=p["num_attention_heads"] * p["attention_head_dim"], caption_channels=s["token_width"],
            norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6, activation_fn="gelu-approximate",
            attention_bias=True, use_additional_conditions=False, num_embeds_ada_norm=1000, **p)
    raise ValueError(f"unknown denoiser {kind!r}")


class ClassTokenDenoiser(torch.nn.Module):
    """A denoiser plus its class tokens (NUM_CLASSES + 1 sequences, the last one the null sequence):
    ``forward(z_t, t, labels)`` looks the tokens up and passes them as ``encoder_hidden_states``."""

    def __init__(self, denoiser: torch.nn.Module, tokens: torch.Tensor):
        super().__init__()
        self.denoiser = denoiser
        self.tokens = torch.nn.Parameter(tokens)  # (NUM_CLASSES + 1, L, D)

    @classmethod
    def new(cls, kind: str, size: str = "small", seed: int = 0) -> "ClassTokenDenoiser":
        s = SIZES[size]
        g = torch.Generator().manual_seed(seed)
        return cls(build_denoiser(kind, size), torch.randn(NUM_CLASSES + 1, s["tokens"], s["token_width"], generator=g))

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ctx = self.tokens[labels]  # (B, L, D)
        if isinstance(self.denoiser, PixArtTransformer2DModel):
            return self.denoiser(z, encoder_hidden_states=ctx, timestep=t,
                                 added_cond_kwargs={"resolution": None, "aspect_ratio": None}).sample
        return self.denoiser(z, t, encoder_hidden_states=ctx).sample


# --- folders ---------------------------------------------------------------------------------------
def load_vae(folder: str | Path) -> AutoencoderKL:
    """The VAE of a vae-stage folder, or the ``vae/`` of a pipeline folder (e.g. a shipped mnist-ldm)."""
    folder = Path(folder)
    sub = "vae" if (folder / "vae" / "config.json").is_file() else None
    if not (folder / (sub or "") / "config.json").is_file():
        sys.exit(f"error: no VAE at {folder} (train one: --stage vae, or pass a folder with vae/)")
    return AutoencoderKL.from_pretrained(str(folder), subfolder=sub).float().eval().requires_grad_(False)


def load_denoiser(kind: str, folder: str | Path) -> ClassTokenDenoiser:
    folder = Path(folder)
    cls = UNet2DConditionModel if kind == "ldm" else PixArtTransformer2DModel
    den = cls.from_pretrained(str(folder), subfolder=DENOISER_DIR[kind]).float()
    return ClassTokenDenoiser(den, load_file(str(folder / TOKEN_FILE))[TOKEN_KEY].float())


def save_vae_folder(vae: AutoencoderKL, out_dir: Path, extra_files: dict[str, str]) -> None:
    tmp = temp_folder(out_dir)
    vae.save_pretrained(str(tmp), safe_serialization=True)
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    swap_folder(tmp, out_dir)


def save_pipeline_folder(kind: str, model: ClassTokenDenoiser, vae: AutoencoderKL, out_dir: Path, *,
                         guidance: float, extra_files: dict[str, str], vae_record: str | None = None) -> None:
    """The pipeline folder blockmask loads (see the module docstring); written to a temp folder, renamed.
    ``vae_record``: the VAE stage's training.json, kept as vae/training.json."""
    tmp = temp_folder(out_dir)
    sub = DENOISER_DIR[kind]
    model.denoiser.save_pretrained(str(tmp / sub), safe_serialization=True)
    vae.save_pretrained(str(tmp / "vae"), safe_serialization=True)
    if vae_record is not None:
        (tmp / "vae" / "training.json").write_text(vae_record)
    latent_scheduler().save_pretrained(str(tmp / "scheduler"))
    save_file({TOKEN_KEY: model.tokens.detach().float().cpu().contiguous()}, str(tmp / TOKEN_FILE))
    index = {"_class_name": PIPELINE_CLASS[kind], "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "DDPMScheduler"], "text_encoder": [None, None], "tokenizer": [None, None],
             sub: ["diffusers", type(model.denoiser).__name__], "vae": ["diffusers", "AutoencoderKL"]}
    if kind == "ldm":
        index.update(safety_checker=[None, None], feature_extractor=[None, None], image_encoder=[None, None],
                     requires_safety_checker=False)
    (tmp / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    info = {"description": f"class-conditional {'latent U-Net' if kind == 'ldm' else 'PixArt transformer'} on "
                           "MNIST digits in the latent space of a small AutoencoderKL; classes are learned "
                           "cross-attention tokens, row 10 of the token table is the null class for guidance",
            "num_classes": NUM_CLASSES, "null_class_label": NULL_CLASS, "class_tokens": TOKEN_FILE,
            "default_guidance_scale": float(guidance)}
    (tmp / "blockmask.json").write_text(json.dumps(info, indent=1) + "\n")
    for name, text in extra_files.items():
        (tmp / name).write_text(text)
    swap_folder(tmp, out_dir)


# --- data ------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_images(vae: AutoencoderKL, images: torch.Tensor, batch: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and std of every image, (N, 4, 8, 8) each, in the VAE's unscaled latent units."""
    means, stds = [], []
    for i in range(0, len(images), batch):
        dist = vae.encode(images[i:i + batch].to(next(vae.parameters()).device)).latent_dist
        means.append(dist.mean.float())
        stds.append(dist.std.float())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def recon_mse(vae: AutoencoderKL, images: torch.Tensor, batch: int = 500) -> float:
    """Reconstruction MSE (images in [-1, 1]) through the posterior mode: the VAE's quality in one number."""
    err = 0.0
    for i in range(0, len(images), batch):
        x = images[i:i + batch]
        err += F.mse_loss(vae.decode(vae.encode(x).latent_dist.mode()).sample.float(), x, reduction="sum").item()
    return err / images.numel()


def latent_scaling_factor(vae: AutoencoderKL, images: torch.Tensor, seed: int = 0) -> tuple[float, float]:
    """(1 / std, mean) of posterior samples of ``images``: the scaling makes the diffusion latents unit-variance."""
    mean, std = encode_images(vae, images)
    g = torch.Generator().manual_seed(seed)
    z = mean + std * torch.randn(mean.shape, generator=g).to(mean.device)
    return 1.0 / z.std().item(), z.mean().item()


# --- stages ----------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stage", required=True, choices=["vae", "ldm", "pixart"])
    add_common_args(p, minutes=100.0, batch=64)
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (vae, ldm) / 5e-4 (pixart)")
    p.add_argument("--out", default=None, help="output folder (default runs/mnist-vae, assets/models/mnist-ldm, "
                                               "assets/models/mnist-pixart)")
    p.add_argument("--size", default="small", choices=list(SIZES), help="model sizes (tiny: tests, rehearsals)")
    p.add_argument("--vae", default=str(DEFAULT_OUT["vae"]),
                   help="ldm/pixart: the frozen VAE (a vae-stage folder or a pipeline folder with vae/)")
    p.add_argument("--kl", type=float, default=1e-4, help="vae: weight of the per-element KL term")
    p.add_argument("--data-limit", type=int, default=0, help="use only the first N MNIST images (0 = all 10,000)")
    p.add_argument("--guidance", type=float, default=2.0,
                   help="ldm/pixart: default_guidance_scale written to blockmask.json and used for samples.png "
                        "(scripts/dit_accuracy.py --set-default measures and rewrites it)")
    p.add_argument("--no-grid", action="store_true", help="skip the sample grid at the end (quick runs, tests)")
    p.add_argument("--samples-only", action="store_true", help="ldm/pixart: only redraw samples.png of --out")
    return p.parse_args(argv)


def sample_grid(folder: Path, guidance: float, filename: str = "samples.png", device="cpu") -> float:
    """Rows = classes 0..9, 10 samples each, DDIM 50 steps, seed 0, through blockmask's own sampler on the
    saved folder (so the grid also proves the folder loads). Returns seconds."""
    from blockmask.workbench import Workbench

    t0 = time.time()
    wb = Workbench.load(str(folder), device=str(device))
    labels = torch.arange(NUM_CLASSES).repeat_interleave(10).tolist()
    lat = wb.generate(None, steps=50, seed=0, num_images=len(labels),
                      condition=wb.condition(class_label=labels, guidance_scale=guidance))
    save_grid(wb.images(lat) * 2 - 1, folder / filename, nrow=10)
    return time.time() - t0


def run_vae(args, images, device, meta_base) -> None:
    out_dir = Path(args.out) if args.out else DEFAULT_OUT["vae"]
    vae = build_vae(args.size)
    prior = None
    if args.init:
        vae.load_state_dict(load_vae(args.init).state_dict())
        prior = prior_run(Path(args.init))
    vae = vae.to(device)
    trainer = TimedTrainer(vae, lr=args.lr or DEFAULT_LR["vae"], warmup=args.warmup, minutes=args.minutes,
                           max_steps=args.max_steps, ema_decay=args.ema, bf16=args.bf16, device=device,
                           tag="mnist-vae", ckpt_minutes=args.ckpt_minutes)
    g = torch.Generator().manual_seed(args.seed)
    n = len(images)
    latent_numel = LATENT_CHANNELS * 8 * 8
    probe = images[-1000:]  # reconstruction MSE measured on these before and after training
    mse_start = recon_mse(vae.eval(), probe)

    def loss_fn():
        x = images[torch.randint(0, n, (args.batch,), generator=g).to(device)]
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=g).to(device)
        rec = F.mse_loss(vae.decode(z).sample.float(), x)
        kl = dist.kl().float().mean() / latent_numel  # per latent element
        return rec + args.kl * kl, {"rec": rec, "kl": kl}

    def meta(final: bool, scaling=None, mse_end=None) -> dict:
        return {**meta_base, **trainer.record(), "final": final, "init_from_previous_run": prior,
                "total_steps_including_init": total_steps(trainer.step, prior), "kl_weight": args.kl,
                "params": sum(p.numel() for p in vae.parameters()), "latent_stats": scaling,
                "recon_mse": {"start": round(mse_start, 6), "end_ema": round(mse_end, 6),
                              "images": f"the last {len(probe)} of the {n} training images, posterior mode"}}

    def save(final: bool):
        ema = trainer.ema
        sf, mu = latent_scaling_factor(ema, images[:2000], seed=args.seed)
        ema.register_to_config(scaling_factor=sf)
        m = meta(final, {"scaling_factor": round(sf, 6), "mean_scaled": round(mu * sf, 4),
                         "measured_on": f"{min(n, 2000)} training images"}, recon_mse(ema, probe))
        save_vae_folder(ema, out_dir, {"training.json": json.dumps(m, indent=2)})
        return m

    trainer.run(loss_fn, lambda: save(False))
    m = save(True)
    print(f"[mnist-vae] done: {trainer.step} steps in {m['wall_time_s'] / 60:.1f} min, reconstruction MSE "
          f"{m['recon_mse']['start']:.5f} -> {m['recon_mse']['end_ema']:.5f} (EMA weights), "
          f"scaling_factor {m['latent_stats']['scaling_factor']} -> {out_dir}", flush=True)
    if not args.no_grid:
        with torch.no_grad():
            x = images[:20]
            ema = trainer.ema
            rec = ema.decode(ema.encode(x).latent_dist.mode()).sample.clamp(-1, 1)
        save_grid(torch.cat([x, rec]).cpu(), out_dir / "recon.png", nrow=20)


def run_denoiser(args, images, labels, device, meta_base) -> None:
    kind = args.stage
    out_dir = Path(args.out) if args.out else DEFAULT_OUT[kind]
    vae = load_vae(args.vae).to(device)
    sf = float(vae.config.scaling_factor)
    vae_dir = Path(args.vae) / "vae" if (Path(args.vae) / "vae").is_dir() else Path(args.vae)
    vae_record = (vae_dir / "training.json").read_text() if (vae_dir / "training.json").is_file() else None
    t0 = time.time()
    mean, std = encode_images(vae, images)
    mean, std = mean * sf, std * sf
    print(f"[mnist-{kind}] encoded {len(images)} images with the VAE in {time.time() - t0:.1f}s "
          f"(scaling_factor {sf:.4f}, std of the scaled posterior means {mean.std().item():.3f})", flush=True)
    model = ClassTokenDenoiser.new(kind, args.size, seed=args.seed)
    prior = None
    if args.init:
        model.load_state_dict(load_denoiser(kind, args.init).state_dict())
        prior = prior_run(Path(args.init))
        print(f"initialized from {args.init} ({prior.get('steps')} earlier steps)", flush=True)
    model = model.to(device)
    scheduler = latent_scheduler()
    trainer = TimedTrainer(model, lr=args.lr or DEFAULT_LR[kind], warmup=args.warmup, minutes=args.minutes,
                           max_steps=args.max_steps, ema_decay=args.ema, bf16=args.bf16, device=device,
                           tag=f"mnist-{kind}", ckpt_minutes=args.ckpt_minutes)
    g = torch.Generator().manual_seed(args.seed)
    n = len(images)
    labels = labels.to(device)
    nparams = sum(p.numel() for p in model.parameters())
    print(f"mnist-{kind}: {nparams / 1e6:.2f}M params (tokens included), {n} images, batch {args.batch}, "
          f"budget {args.minutes} min, threads {torch.get_num_threads()}", flush=True)

    def loss_fn():
        idx = torch.randint(0, n, (args.batch,), generator=g).to(device)  # drawn on the CPU: same stream everywhere
        z0 = mean[idx] + std[idx] * torch.randn(mean[idx].shape, generator=g).to(device)
        noise = torch.randn(z0.shape, generator=g).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=g).to(device)
        y = labels[idx].clone()
        y[(torch.rand(args.batch, generator=g) < LABEL_DROPOUT).to(device)] = NULL_CLASS
        return F.mse_loss(model(scheduler.add_noise(z0, noise, t), t, y).float(), noise)

    def meta(final: bool) -> dict:
        return {**meta_base, **trainer.record(), "final": final, "init_from_previous_run": prior,
                "total_steps_including_init": total_steps(trainer.step, prior), "params": nparams,
                "vae": str(args.vae), "vae_scaling_factor": sf,
                "cfg": {"null_class": NULL_CLASS, "label_dropout": LABEL_DROPOUT}}

    def save(final: bool):
        save_pipeline_folder(kind, trainer.ema, vae, out_dir, guidance=args.guidance, vae_record=vae_record,
                             extra_files={"training.json": json.dumps(meta(final), indent=2)})

    trainer.run(loss_fn, lambda: save(False))
    save(True)
    print(f"[mnist-{kind}] done: {trainer.step} steps in {trainer.wall_s / 60:.1f} min, final loss (ema) "
          f"{trainer.loss_ema:.4f} -> {out_dir}", flush=True)
    if not args.no_grid:
        secs = sample_grid(out_dir, args.guidance, device=device)
        print(f"[mnist-{kind}] samples.png ({secs:.1f}s)", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.samples_only:
        if args.stage == "vae":
            sys.exit("error: --samples-only draws the grid of an ldm or pixart folder")
        folder = Path(args.out) if args.out else DEFAULT_OUT[args.stage]
        print(f"samples.png written in {sample_grid(folder, args.guidance, device=pick_device(args.device)):.1f}s")
        return
    device = pick_device(args.device)
    data_dir = Path(args.data) if args.data else default_mnist_dir()
    images, labels = mnist_tensor_dataset(data_dir).tensors
    if args.data_limit:
        images, labels = images[:args.data_limit], labels[:args.data_limit]
    meta_base = {"model": "mnist-vae" if args.stage == "vae" else f"mnist-{args.stage}", "stage": args.stage,
                 "size": args.size, "command": command_line(), "data_dir": str(data_dir),
                 "data_sha256": mnist_sha256(data_dir), "num_images": len(images), "batch": args.batch,
                 "seed": args.seed}
    images = images.to(device)
    if args.stage == "vae":
        run_vae(args, images, device, meta_base)
    else:
        run_denoiser(args, images, labels, device, meta_base)


if __name__ == "__main__":
    main()
