"""Train the small offline MNIST CNN classifier (``blockmask.data.classifier.MnistCNN``).

Trains on the first 8,000 images of the MNIST 10k split, reports accuracy on the last
2,000, and writes ``assets/classifier/mnist-cnn.safetensors`` + ``classifier.json``.
Light augmentation (random +-2 px shifts) makes it robust to generated digits.

    nice -n 19 python scripts/train_classifier.py --epochs 8
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from safetensors.torch import save_file  # noqa: E402

from blockmask.data.classifier import MnistCNN  # noqa: E402
from blockmask.data.mnist import default_mnist_dir, mnist_sha256, mnist_tensor_dataset  # noqa: E402


def random_shift(x: torch.Tensor, g: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Shift each image by up to ``max_shift`` pixels (background -1 fills the border)."""
    p = max_shift
    xp = F.pad(x, (p, p, p, p), value=-1.0)
    dx, dy = torch.randint(0, 2 * p + 1, (2,), generator=g).tolist()
    return xp[..., dy:dy + x.shape[-2], dx:dx + x.shape[-1]]


@torch.no_grad()
def accuracy(model, x, y) -> float:
    return (model.predict(x) == y).float().mean().item()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--data", default=None)
    p.add_argument("--out", default=str(REPO / "assets" / "classifier"))
    p.add_argument("--n-train", type=int, default=8000)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)

    data_dir = Path(args.data) if args.data else default_mnist_dir()
    x, y = mnist_tensor_dataset(data_dir).tensors
    xtr, ytr, xte, yte = x[:args.n_train], y[:args.n_train], x[args.n_train:], y[args.n_train:]
    model = MnistCNN()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = (len(xtr) + args.batch - 1) // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=args.epochs * steps_per_epoch)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(xtr), generator=g)
        tot = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * args.batch:(i + 1) * args.batch]
            xb = torch.stack([random_shift(im, g) for im in xtr[idx]])
            loss = F.cross_entropy(model(xb), ytr[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
        acc = accuracy(model, xte, yte)
        print(f"epoch {epoch + 1}/{args.epochs} loss {tot / steps_per_epoch:.4f} holdout acc {acc:.4f} "
              f"({time.time() - t0:.0f}s)", flush=True)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "mnist-cnn.safetensors.tmp"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out / "mnist-cnn.safetensors")
    info = {
        "architecture": model.config,
        "description": "3x[conv3x3-BN-ReLU-maxpool] (32,64,128) -> fc 128 (features) -> fc 10",
        "input": "(B,1,32,32) float in [-1,1] (28x28 padded) or uint8 via torch-fidelity wrapper",
        "train_images": f"MNIST t10k[:{args.n_train}]", "holdout_images": f"MNIST t10k[{args.n_train}:]",
        "holdout_accuracy": round(accuracy(model, xte, yte), 4),
        "train_accuracy": round(accuracy(model, xtr, ytr), 4),
        "epochs": args.epochs, "batch": args.batch, "lr": args.lr, "seed": args.seed,
        "augmentation": "random shifts up to 2 px",
        "data_sha256": mnist_sha256(data_dir), "wall_time_s": round(time.time() - t0, 1),
        "command": " ".join([Path(sys.executable).name] + sys.argv),
        "hardware": f"os.cpu_count()={os.cpu_count()}, torch threads={torch.get_num_threads()}",
    }
    (out / "classifier.json").write_text(json.dumps(info, indent=2))
    print(f"holdout accuracy {info['holdout_accuracy']:.4f} -> {out}", flush=True)


if __name__ == "__main__":
    main()
