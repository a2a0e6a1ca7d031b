"""The supported-families table of the README: for each family, a tiny random-init diffusers pipeline
(tests/tiny_pipes.py, configs in tests/configs; no hub weights) run once plain and once under
``blockmask.enable(pipe, preset)``; MACs counted with FlopCounterMode over the whole run (denoiser calls,
CFG included; no VAE, no text encoder: the pipelines take prompt embeddings and return latents).

    python benchmarks/families.py --steps 20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import blockmask  # noqa: E402
from blockmask.hooks.costs import count_macs  # noqa: E402
from blockmask.hooks.enable import denoisers  # noqa: E402
from tiny_pipes import FAMILIES  # noqa: E402

PRESETS = {"sdxl": "deepcache:3", "pixart-sigma": "fora:3"}  # else blocks:3


def row(name: str, steps: int) -> str:
    pipe, run = FAMILIES[name]()
    preset = PRESETS.get(name, "blocks:3")
    plain_macs, plain = count_macs(lambda: run(steps))
    blockmask.enable(pipe, "ones")
    same = torch.equal(run(steps), plain)
    blockmask.disable(pipe)
    blockmask.enable(pipe, preset)
    macs, _ = count_macs(lambda: run(steps))
    s = blockmask.summary(pipe)
    blockmask.disable(pipe)
    models = denoisers(pipe)
    classes = " + ".join(f"`{type(m).__name__}`" + (f" (`{a}`)" if a == "transformer_2" else "") for a, m in models)
    units = " + ".join(str(n) for n in s.units.values())
    return (f"| {name} | `{type(pipe).__name__}` | {classes} | {units} | {'yes' if same else 'NO'} | `{preset}` | "
            f"{100 * s.skipped_fraction:.0f}% | {macs / plain_macs:.2f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"| family | pipeline | denoiser(s) | units | `ones` bitwise | preset | unit calls skipped | "
          f"MACs vs plain ({args.steps} steps) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in FAMILIES:
        print(row(name, args.steps), flush=True)


if __name__ == "__main__":
    main()
