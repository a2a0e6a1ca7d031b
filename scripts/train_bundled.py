"""Train the bundled MNIST diffusion models (``mnist-ddpm`` and ``mnist-dit``).

Both use diffusers' own classes: ``UNet2DModel`` / ``DiTTransformer2DModel`` for the
denoiser and ``DDPMScheduler.add_noise`` for the forward process (epsilon prediction,
1000 linear-beta steps).  Training is bounded by wall-clock time (``--minutes``); an
EMA copy of the weights is written atomically with ``save_pretrained`` every
``--ckpt-minutes`` so a usable model always exists, then again at the end together
with ``training.json`` and a DDIM-50 sample grid ``samples.png``.

Examples::

    nice -n 19 python scripts/train_bundled.py --model mnist-ddpm --minutes 100
    nice -n 19 python scripts/train_bundled.py --model mnist-dit --minutes 100
    python scripts/train_bundled.py --model mnist-dit --samples-only   # regrid
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
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel, UNet2DModel  # noqa: E402

from blockmask.data.mnist import default_mnist_dir, mnist_sha256, mnist_tensor_dataset  # noqa: E402
from train_common import (  # noqa: E402  (scripts/train_common.py, shared with train_latent.py)
    TimedTrainer, add_common_args, command_line, pick_device, prior_run, swap_folder, temp_folder, total_steps,
)

NULL_CLASS = 10  # label used for the unconditional branch of classifier-free guidance


def build_model(name: str) -> torch.nn.Module:
    if name == "mnist-ddpm":
        return UNet2DModel(
            sample_size=32, in_channels=1, out_channels=1,
            block_out_channels=(32, 64, 64), layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=8, attention_head_dim=32,
        )
    if name == "mnist-dit":
        return DiTTransformer2DModel(
            num_attention_heads=3, attention_head_dim=64, in_channels=1, out_channels=1,
            num_layers=6, sample_size=32, patch_size=4, num_embeds_ada_norm=11,
        )
    raise ValueError(f"unknown model {name!r}")


def build_scheduler() -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")


def disable_internal_label_dropout(model: torch.nn.Module) -> None:
    """DiT's per-block LabelEmbedding drops labels on its own in train mode; we do it ourselves."""
    for m in model.modules():
        if type(m).__name__ == "LabelEmbedding":
            m.dropout_prob = 0.0


def predict(model, x, t, labels=None):
    if isinstance(model, DiTTransformer2DModel):
        return model(x, timestep=t, class_labels=labels).sample
    return model(x, t).sample


@torch.no_grad()
def ddim_sample(model, n: int = 8, steps: int = 50, labels=None, guidance: float = 3.0,
                seed: int = 0, scheduler_config=None) -> torch.Tensor:
    """DDIM sampling with diffusers' DDIMScheduler; CFG (cond + null batch) when ``labels`` given."""
    sched = DDIMScheduler.from_config(scheduler_config or build_scheduler().config)
    sched.set_timesteps(steps)
    g = torch.Generator().manual_seed(seed)
    n = len(labels) if labels is not None else n
    dev = next(model.parameters()).device
    x = torch.randn(n, 1, 32, 32, generator=g).to(dev)  # noise drawn on the CPU: same start on every device
    labels = labels.to(dev) if labels is not None else None
    for t in sched.timesteps:
        tt = t.expand(n if labels is None else 2 * n).to(dev)
        if labels is None:
            eps = predict(model, x, tt)
        else:
            lab = torch.cat([labels, torch.full_like(labels, NULL_CLASS)])
            e = predict(model, torch.cat([x, x]), tt, lab)
            ec, eu = e.chunk(2)
            eps = eu + guidance * (ec - eu)
        x = sched.step(eps, t, x).prev_sample
    return x.clamp(-1, 1).cpu()


def save_grid(x: torch.Tensor, path: Path, nrow: int) -> None:
    from torchvision.utils import save_image

    save_image((x + 1) / 2, str(path), nrow=nrow, padding=2, pad_value=0.5)


def make_samples(model, name: str, out_dir: Path, scheduler_config=None, guidance: float = 1.0,
                 filename: str = "samples.png") -> float:
    """Write the sample grid (DiT: rows = classes 0..9); returns wall seconds spent sampling."""
    model.eval()
    t0 = time.time()
    if name == "mnist-dit":
        labels = torch.arange(10).repeat_interleave(10)  # rows 0..9
        x = ddim_sample(model, labels=labels, guidance=guidance, seed=0, scheduler_config=scheduler_config)
    else:
        x = ddim_sample(model, n=100, seed=0, scheduler_config=scheduler_config)
    save_grid(x, out_dir / filename, nrow=10)
    return time.time() - t0


def atomic_save(model, scheduler, out_dir: Path, extra_files: dict[str, str] | None = None) -> None:
    """save_pretrained into a temp folder next to ``out_dir``, then swap it in."""
    tmp = temp_folder(out_dir)
    if type(model).__name__ == "UNet2DModel":  # a DDPMPipeline folder: DiffusionPipeline.from_pretrained(out_dir)
        model.save_pretrained(str(tmp / "unet"), safe_serialization=True)
        (tmp / "model_index.json").write_text(json.dumps({
            "_class_name": "DDPMPipeline", "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "DDPMScheduler"], "unet": ["diffusers", "UNet2DModel"]}, indent=2) + "\n")
    else:  # the DiT: a model folder (blockmask.pipelines.dit_pipeline turns it into a DiTPipeline)
        model.save_pretrained(str(tmp), safe_serialization=True)
    scheduler.save_pretrained(str(tmp / "scheduler"))
    for fname, text in (extra_files or {}).items():
        (tmp / fname).write_text(text)
    swap_folder(tmp, out_dir)  # keeps files that are not part of the checkpoint (e.g. samples.png)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, choices=["mnist-ddpm", "mnist-dit"])
    add_common_args(p, minutes=100.0, batch=64)
    p.add_argument("--lr", type=float, default=None, help="default 1e-3 (ddpm) / 4e-4 (dit)")
    p.add_argument("--out", default=None, help="output folder (default assets/models/<model>)")
    p.add_argument("--samples-only", action="store_true", help="only redraw samples.png from --out")
    p.add_argument("--guidance", type=float, default=1.0,
                   help="CFG scale for the DiT grid (default 1 = no CFG, the bundled DiT's best; it gets "
                        "speckled at 1.5 and over-saturates at 3)")
    p.add_argument("--grid-name", default="samples.png")
    p.add_argument("--no-grid", action="store_true", help="skip the sample grid at the end (quick runs, tests)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (U-Net)")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out_dir = Path(args.out) if args.out else REPO / "assets" / "models" / args.model
    data_dir = Path(args.data) if args.data else default_mnist_dir()

    if args.samples_only:
        cls = DiTTransformer2DModel if args.model == "mnist-dit" else UNet2DModel
        model = cls.from_pretrained(str(out_dir)).float()
        sconf = DDPMScheduler.from_pretrained(str(out_dir / "scheduler")).config
        secs = make_samples(model, args.model, out_dir, sconf, args.guidance, args.grid_name)
        print(f"{args.grid_name} written in {secs:.1f}s")
        return

    lr = args.lr or (1e-3 if args.model == "mnist-ddpm" else 4e-4)
    images, labels = mnist_tensor_dataset(data_dir).tensors
    n = images.shape[0]
    sums = mnist_sha256(data_dir)
    device = pick_device(args.device)
    model = build_model(args.model)
    prior = None
    if args.init:  # continue from an earlier (EMA) checkpoint; optimizer state starts fresh
        init_dir = Path(args.init)
        cls = DiTTransformer2DModel if args.model == "mnist-dit" else UNet2DModel
        model.load_state_dict(cls.from_pretrained(str(init_dir)).float().state_dict())
        prior = prior_run(init_dir)
        print(f"initialized from {init_dir} ({prior.get('steps')} earlier steps)", flush=True)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    is_dit = args.model == "mnist-dit"
    if is_dit:
        disable_internal_label_dropout(model)
    model = model.to(device)
    images, labels = images.to(device), labels.to(device)
    scheduler = build_scheduler()
    trainer = TimedTrainer(model, lr=lr, warmup=args.warmup, minutes=args.minutes, max_steps=args.max_steps,
                           ema_decay=args.ema, bf16=args.bf16, device=device, tag=args.model,
                           ckpt_minutes=args.ckpt_minutes)
    ema = trainer.ema
    nparams = sum(p.numel() for p in model.parameters())
    print(f"{args.model}: {nparams / 1e6:.2f}M params, {n} images, batch {args.batch}, lr {lr}, "
          f"budget {args.minutes} min, threads {torch.get_num_threads()}", flush=True)
    g = torch.Generator().manual_seed(args.seed)

    def meta(final: bool) -> dict:
        return {
            "model": args.model, "command": command_line(),
            "data_dir": str(data_dir), "data_sha256": sums, "num_images": n, **trainer.record(),
            "batch": args.batch, "seed": args.seed, "params": nparams, "final": final,
            "init_from_previous_run": prior, "channels_last": args.channels_last,
            "total_steps_including_init": total_steps(trainer.step, prior),
            "cfg": {"null_class": NULL_CLASS, "label_dropout": 0.1} if is_dit else None,
        }

    def loss_fn():
        idx = torch.randint(0, n, (args.batch,), generator=g)  # drawn on the CPU: same stream on every device
        x0 = images[idx.to(device)]
        if args.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        noise = torch.randn(x0.shape, generator=g).to(device)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (args.batch,), generator=g).to(device)
        xt = scheduler.add_noise(x0, noise, t)
        if is_dit:
            y = labels[idx.to(device)].clone()
            y[(torch.rand(args.batch, generator=g) < 0.1).to(device)] = NULL_CLASS
            pred = predict(model, xt, t, y)
        else:
            pred = predict(model, xt, t)
        return F.mse_loss(pred.float(), noise)

    def checkpoint():
        atomic_save(ema, scheduler, out_dir, {"training.json": json.dumps(meta(False), indent=2)})

    trainer.run(loss_fn, checkpoint)
    info = meta(True)
    atomic_save(ema, scheduler, out_dir, {"training.json": json.dumps(info, indent=2)})
    print(f"[{args.model}] done: {trainer.step} steps in {info['wall_time_s'] / 60:.1f} min, "
          f"final loss (ema) {trainer.loss_ema:.4f} -> {out_dir}", flush=True)
    if args.no_grid:
        return
    secs = make_samples(ema, args.model, out_dir, scheduler.config, args.guidance, args.grid_name)
    print(f"[{args.model}] samples.png ({secs:.1f}s)", flush=True)


if __name__ == "__main__":
    main()
