"""Paper-size models through every command that runs without training (issue 31): on the CPU at
K = 4 and batch 1, `info`, `macs`, `mask … --rectify`, `rectify` and `sample` on every config in
tests/configs/reference/, through the CLI's own entry point.

The architectures are the paper's (depth, width, heads, units: DiT-XL/2 has 84 units, PixArt-XL
112, so rectification runs past 63 units). The *sample size* is reduced where one CPU forward at the
paper's size would take minutes (a 256² DDPM U-Net forward is ~250 GMACs, PixArt-Σ at 1024² ~2.9
TMACs): see REDUCED; ddpm-cifar10-32 runs at its own size. Paper-size MAC totals are checked on the
meta device in tests/test_costs_rectify.py::test_reference_totals_within_3_percent. One model load
is shared by the five commands of a config (Workbench.load memoized, as tests/test_bad_inputs_cli.py
does); each command otherwise runs its whole path. About 2.5 min in all on a busy 2-core CPU, most
of it the DiT-XL/2 runs: random init of 675M parameters (~14 s) and the consumer graph's N + 1 = 85
weight-bound forwards (~22 s), which no smaller sample size makes cheaper.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import REFERENCE

# latent/pixel side used here instead of the config's (paper) sample_size; must keep every
# down-sampling level (U-Nets) and the patch size (transformers) whole.
# DiT-XL/2-512 keeps twice DiT-XL/2-256's side, as at the paper's sizes (else the two runs would be one).
REDUCED = {"ddpm-lsun-256": 32, "dit-xl-2-256": 8, "dit-xl-2-512": 16, "ldm-cin256": 16,
           "pixart-sigma-xl-2-1024": 8}
UNITS = {"dit-xl-2-256": 84, "dit-xl-2-512": 84, "pixart-sigma-xl-2-1024": 112}
TEXT = {"ldm-cin256", "pixart-sigma-xl-2-1024"}
CONFIGS = sorted(p.stem for p in REFERENCE.glob("*.json"))


def test_every_reference_config_is_covered():
    assert set(REDUCED) | {"ddpm-cifar10-32"} == set(CONFIGS)


@pytest.fixture
def shared_load(monkeypatch):
    from blockmask.workbench import Workbench

    orig = Workbench.__dict__["load"]
    cache = {}

    def load(cls, spec, **kw):
        key = (spec, tuple(sorted(kw.items())))
        if key not in cache:
            cache.clear()  # one paper-size model in memory at a time
            cache[key] = orig.__func__(cls, spec, **kw)
        return cache[key]

    monkeypatch.setattr(Workbench, "load", classmethod(load))
    yield
    cache.clear()


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_paper_size_config_through_every_command(name, tmp_path, shared_load, capsys):
    from blockmask.cli.main import main

    cfg = json.loads((REFERENCE / f"{name}.json").read_text())
    if name in REDUCED:
        cfg["sample_size"] = REDUCED[name]
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(cfg))
    spec = f"config:{path}"

    def run(*argv):
        rc = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        assert rc == 0, (argv[0], err)
        return out

    info = json.loads(run("info", spec, "--json"))
    n = info["num_units"]
    assert n == UNITS.get(name, n) and n > 0
    macs = json.loads(run("macs", spec, "--steps", "4", "--json"))
    assert macs["ratio"] == pytest.approx(1.0)
    out = run("mask", "random", spec, "--steps", "4", "--skip", "0.5", "--seed", "1", "--rectify", "-o",
              tmp_path / "rect.json")
    assert "wrote" in out
    run("mask", "random", spec, "--steps", "4", "--skip", "0.5", "--seed", "1", "-o", tmp_path / "raw.json")
    r = json.loads(run("rectify", tmp_path / "raw.json", "--model", spec, "-o", tmp_path / "r.json", "--json"))
    assert r["ratio_after"] <= r["ratio_before"]
    both = [json.loads((tmp_path / f).read_text())["mask"] for f in ("rect.json", "r.json")]
    assert np.array(both[0]).shape == (4, n) and both[0] == both[1]  # mask --rectify == rectify
    text = ["--random-prompts"] if name in TEXT else []  # random-init text models: no encoder, on purpose
    run("sample", spec, "--steps", "4", "--num-images", "1", "--mask", tmp_path / "r.json", "-o", tmp_path / "s", *text)
    imgs = np.load(tmp_path / "s" / "samples.npy")
    assert imgs.shape[0] == 1 and np.isfinite(imgs).all() and Path(tmp_path / "s" / "grid.png").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["dit-xl-2-256", "pixart-sigma-xl-2-1024"])
def test_paper_size_rectify_at_the_configs_own_sample_size(name, tmp_path, capsys):
    """Issue 31's "rectify on DiT-XL/2-256 and PixArt-XL completes", at the paper's own sample size
    (PixArt-XL: 128² latents): the consumer graph is measured at the probe shape, so this takes ~25 s
    and ~45 s on the CPU (MACs come from one full-size forward)."""
    from blockmask.cli.main import main

    out = tmp_path / "rect.json"
    rc = main(["mask", "random", f"config:{REFERENCE / (name + '.json')}", "--steps", "4", "--skip", "0.5",
               "--seed", "1", "--rectify", "-o", str(out)])
    assert rc == 0, capsys.readouterr().err
    mask = np.array(json.loads(out.read_text())["mask"])
    assert mask.shape == (4, UNITS[name]) and mask[0].all() and not mask.all()
