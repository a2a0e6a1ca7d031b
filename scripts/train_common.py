"""What the bundled-model training scripts share (``train_bundled.py``, ``train_latent.py``).

* :func:`add_common_args`: the options every stage has (time budget, batch, LR, device, bf16, EMA, …);
* :func:`pick_device`, :func:`hardware`: the device and a one-line description for ``training.json``;
* :class:`TimedTrainer`: the wall-clock-bounded loop (AdamW, linear warmup + cosine-by-time LR decay to
  10%, grad-clip 1.0, bf16 autocast, parameter EMA with (1+s)/(10+s) warmup, progress lines, periodic
  checkpoints), around a ``loss_fn`` that draws its own batch;
* :func:`swap_folder`: put a folder written into a temp path in place atomically (rename).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm.auto import tqdm

LOSS_PRINT_S = 30.0  # seconds between progress lines


def add_common_args(p: argparse.ArgumentParser, *, minutes: float = 100.0, batch: int = 64) -> None:
    p.add_argument("--minutes", type=float, default=minutes, help="wall-clock training budget")
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--warmup", type=int, default=300, help="linear LR warmup steps")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="MNIST IDX folder (default $BLOCKMASK_MNIST, else where `blockmask data mnist` puts it)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ckpt-minutes", type=float, default=10.0)
    p.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0 = time only)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--init", default=None, help="start from the (EMA) weights saved in this folder")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast for forward/backward")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (training and the sample grid)")


def pick_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; exits with one line when CUDA is asked for and absent."""
    device = torch.device("cuda" if name == "auto" and torch.cuda.is_available()
                          else "cpu" if name == "auto" else name)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit(f"error: --device {name} but torch sees no CUDA device")
    return device


def hardware(device: torch.device) -> str:
    return ((f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else "")
            + f"{platform.processor() or platform.machine()}, os.cpu_count()={os.cpu_count()}, "
            f"torch threads={torch.get_num_threads()}, torch {torch.__version__}")


def command_line() -> str:
    return " ".join([Path(sys.executable).name] + sys.argv)


def prior_run(init_dir: Path) -> dict:
    """The facts of the run an ``--init`` folder came from (its training.json), for the new record."""
    meta_path = init_dir / "training.json"
    prior = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return {k: prior.get(k) for k in ("command", "steps", "batch", "lr", "wall_time_s", "final_loss_ema",
                                      "bf16_autocast", "total_steps_including_init", "init_from_previous_run")}


def total_steps(step: int, prior: dict | None) -> int:
    return step + ((prior or {}).get("total_steps_including_init") or (prior or {}).get("steps") or 0)


def swap_folder(tmp: Path, out_dir: Path, *, keep_extra_files: bool = True) -> None:
    """Replace ``out_dir`` by the finished folder ``tmp`` (two renames). Plain files of the old folder
    that ``tmp`` lacks (e.g. a sample grid drawn earlier) are carried over when ``keep_extra_files``."""
    old = out_dir.with_name(out_dir.name + f".old-{os.getpid()}")
    if out_dir.exists() and keep_extra_files:
        for p in out_dir.iterdir():
            if p.is_file() and not (tmp / p.name).exists():
                shutil.copy2(p, tmp / p.name)
    if out_dir.exists():
        out_dir.rename(old)
    tmp.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def temp_folder(out_dir: Path) -> Path:
    """An empty folder next to ``out_dir`` to write into before :func:`swap_folder`."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(out_dir.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def _say(line: str) -> None:
    """A log line that does not tear the progress bar."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


class TimedTrainer:
    """The training loop of every stage, bounded by wall-clock time (and optionally a step count).

    ``loss_fn()`` draws a batch and returns the loss (a scalar tensor), or ``(loss, {name: tensor})`` with
    extra terms to log; it runs under bf16 autocast when asked. The trainer owns the optimizer and the
    EMA copy (``self.ema``, the weights to save); ``on_checkpoint()`` is called every ``ckpt_minutes``.
    """

    def __init__(self, model: torch.nn.Module, *, lr: float, warmup: int, minutes: float, max_steps: int = 0,
                 ema_decay: float = 0.999, bf16: bool = False, device: torch.device, tag: str,
                 ckpt_minutes: float = 10.0):
        self.model, self.lr, self.warmup, self.tag = model, lr, warmup, tag
        self.budget, self.max_steps, self.ema_decay = minutes * 60.0, max_steps, ema_decay
        self.bf16, self.device, self.ckpt_s = bf16, device, ckpt_minutes * 60.0
        self.ema = copy.deepcopy(model).eval().requires_grad_(False)
        self.opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=0.0,
                                     fused=device.type == "cuda")
        self.step = 0
        self.t_start = time.time()
        self.logs: dict[str, float] = {}  # EMA-smoothed loss terms, read at prints and checkpoints
        self.first: dict[str, float] = {}  # the terms at step 1
        self._logs_t: dict[str, torch.Tensor] = {}

    @property
    def loss_ema(self) -> float | None:
        return self.logs.get("loss")

    @property
    def wall_s(self) -> float:
        return time.time() - self.t_start

    def _sync_logs(self) -> None:
        self.logs = {k: v.item() for k, v in self._logs_t.items()}

    def run(self, loss_fn: Callable, on_checkpoint: Callable[[], None] | None = None) -> None:
        self.t_start = time.time()
        last_print = last_ckpt = self.t_start
        seen_at_print = 0
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.model.train()
        # progress over the time budget (seconds) on a terminal (disable=None: off when stderr is a file, where
        # the loss lines below are the log's record)
        bar = tqdm(total=round(self.budget), unit="s", desc=self.tag, leave=False, disable=None, mininterval=1.0,
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} s {postfix}")
        while True:
            elapsed = time.time() - self.t_start
            bar.update(max(0, min(round(elapsed), bar.total) - bar.n))
            if elapsed >= self.budget or (self.max_steps and self.step >= self.max_steps):
                break
            frac = min(elapsed / self.budget, 1.0)
            cur_lr = self.lr * min(1.0, (self.step + 1) / self.warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
            for group in self.opt.param_groups:
                group["lr"] = cur_lr
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out = loss_fn()
            loss, extra = out if isinstance(out, tuple) else (out, {})
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            self.opt.step()
            self.step += 1
            decay = min(self.ema_decay, (1 + self.step) / (10 + self.step))
            with torch.no_grad():
                torch._foreach_lerp_(list(self.ema.parameters()), list(self.model.parameters()), 1 - decay)
            # kept on the device: no host sync per step (``.item()`` only when printing or saving)
            for k, v in {"loss": loss, **extra}.items():
                v = v.detach().float()
                self._logs_t[k] = v if k not in self._logs_t else self._logs_t[k] * 0.99 + v * 0.01
            now = time.time()
            if now - last_print >= LOSS_PRINT_S or self.step == 1:
                self._sync_logs()
                if self.step == 1:
                    self.first = dict(self.logs)
                rate = (self.step - seen_at_print) / max(now - last_print, 1e-9)
                terms = " ".join(f"{k} {v:.4f}" for k, v in self.logs.items() if k != "loss")
                _say(f"[{self.tag}] step {self.step} loss {loss.item():.4f} (ema {self.loss_ema:.4f}) {terms} "
                     f"lr {cur_lr:.2e} {rate:.2f} it/s elapsed {(now - self.t_start) / 60:.1f}/{self.budget / 60:.0f} min")
                last_print, seen_at_print = now, self.step
                bar.set_postfix_str(f"step {self.step}, loss {self.loss_ema:.4f}", refresh=False)
            if on_checkpoint is not None and now - last_ckpt >= self.ckpt_s:
                self._sync_logs()
                on_checkpoint()
                _say(f"[{self.tag}] checkpoint at step {self.step}")
                last_ckpt = time.time()
        bar.close()
        self._sync_logs()

    def record(self) -> dict:
        """Loop facts for training.json."""
        return {"steps": self.step, "lr": self.lr, "warmup_steps": self.warmup,
                "lr_schedule": "linear warmup + cosine over time budget to 10%", "ema_decay": self.ema_decay,
                "wall_time_s": round(self.wall_s, 1), "bf16_autocast": self.bf16,
                "final_loss_ema": round(self.loss_ema, 5) if self.loss_ema is not None else None,
                "loss_terms_ema": {k: round(v, 5) for k, v in self.logs.items()},
                "loss_terms_first_step": {k: round(v, 5) for k, v in self.first.items()},
                "hardware": hardware(self.device)}
