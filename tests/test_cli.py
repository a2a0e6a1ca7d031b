"""The blockmask CLI: every command, --json output, one-line errors with exit code 2, no partial files."""

import json
import subprocess
import sys

import numpy as np
import pytest

from blockmask.cli.main import main
from blockmask.io.maskfile import MaskFile

from conftest import tiny_spec

UNET = tiny_spec("tiny-unet")
DIT = tiny_spec("tiny-dit")


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_info_and_macs(capsys):
    rc, out, _ = run(capsys, "info", UNET, "--json")
    info = json.loads(out)
    assert rc == 0 and info["num_units"] == 14 and info["random_init"] and info["units"][0]["kind"] == "resnet"
    rc, out, _ = run(capsys, "info", DIT)
    assert rc == 0 and "transformer_blocks.0.attn1" in out and "random init" in out
    rc, out, _ = run(capsys, "macs", UNET, "--steps", 10, "--json")
    assert rc == 0 and json.loads(out)["ratio"] == pytest.approx(1.0)


def test_mask_rectify_macs_sample_bench(capsys, tmp_path):
    m = tmp_path / "dc.json"
    rc, out, _ = run(capsys, "mask", "deepcache", UNET, "--steps", 8, "--interval", 2, "-o", m, "--json")
    assert rc == 0 and json.loads(out)["ratio"] < 1
    mf = MaskFile.load(m)
    assert mf.num_steps == 8 and mf.scheduler["class"] == "DDIMScheduler" and len(mf.scheduler["timesteps"]) == 8
    rc, out, _ = run(capsys, "mask", "random", UNET, "--steps", 8, "--skip", 0.6, "--seed", 1, "-o", tmp_path / "r.json")
    assert rc == 0
    rc, out, _ = run(capsys, "rectify", tmp_path / "r.json", "--model", UNET, "-o", tmp_path / "rr.json", "--json")
    res = json.loads(out)
    assert rc == 0 and res["ratio_after"] <= res["ratio_before"]
    assert "raw_mask" in MaskFile.load(tmp_path / "rr.json").meta["rectified"]
    rc, out, _ = run(capsys, "macs", UNET, "--steps", 8, "--mask", tmp_path / "rr.json", "--json")
    assert rc == 0 and json.loads(out)["ratio"] == pytest.approx(res["ratio_after"])
    rc, out, _ = run(capsys, "sample", UNET, "--steps", 8, "--mask", m, "--num-images", 2, "-o", tmp_path / "s", "--json")
    arr = np.load(tmp_path / "s" / "samples.npy")
    assert rc == 0 and arr.shape == (2, 3, 16, 16) and arr.dtype == np.float32 and (tmp_path / "s" / "grid.png").is_file()
    rc, out, _ = run(capsys, "bench", UNET, "--steps", 8, "--mask", m, "--repeats", 1, "--json")
    b = json.loads(out)
    assert rc == 0 and b["speedup"] > 0 and b["efficiency"] == pytest.approx(b["speedup"] * b["macs_ratio"])


def test_sample_class_conditional_with_guidance(capsys, tmp_path):
    rc, _, err = run(capsys, "sample", DIT, "--steps", 4, "--class-label", 3, "--guidance-scale", 2,
                     "--num-images", 2, "-o", tmp_path / "d")
    assert rc == 0, err


@pytest.mark.parametrize(
    "argv, msg",
    [
        (["info", "no-such-model"], "unknown model"),
        (["info", "config:/nope.json"], "config file not found"),
        (["info", "nonexistent/hub-id"], "could not load model hub id"),
        (["macs", UNET, "--steps", "0"], "--steps must be >= 1"),
        (["mask", "fora", DIT, "--steps", "4", "--interval", "0", "-o", "X"], "interval must be >= 1"),
        (["mask", "deepcache", DIT, "--steps", "4", "-o", "X"], "U-Nets"),
        (["sample", UNET, "--steps", "4", "--num-images", "0", "-o", "X"], "num-images"),
        (["sample", UNET, "--steps", "4", "--class-label", "1", "-o", "X"], "not class-conditional"),
        (["sample", DIT, "--steps", "4", "--class-label", "99", "-o", "X"], "out of range"),
        (["sample", UNET, "--steps", "4", "--scheduler", "heun9", "-o", "X"], "unsupported scheduler"),
        (["macs", UNET, "--steps", "4", "--mask", "/nope.json"], "mask file not found"),
        (["info", UNET, "--device", "cuda:0"], "cuda"),
    ],
)
def test_errors_are_one_line(capsys, tmp_path, monkeypatch, argv, msg):
    monkeypatch.chdir(tmp_path)
    rc, out, err = run(capsys, *argv)
    if "cuda" in msg and "cuda" not in err:
        pytest.skip("a GPU is present")
    assert rc == 2 and err.startswith("error: ") and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "X").exists()


def test_mask_mismatch_and_bad_files(capsys, tmp_path):
    m = tmp_path / "m.json"
    assert run(capsys, "mask", "ones", UNET, "--steps", 5, "-o", m)[0] == 0
    rc, _, err = run(capsys, "macs", UNET, "--steps", 6, "--mask", m)
    assert rc == 2 and "5 steps" in err
    rc, _, err = run(capsys, "macs", DIT, "--steps", 5, "--mask", m)
    assert rc == 2 and "the model has 9" in err
    m.write_text(m.read_text()[:40])
    rc, _, err = run(capsys, "rectify", m, "--model", UNET, "-o", tmp_path / "o.json")
    assert rc == 2 and "not valid JSON" in err and not (tmp_path / "o.json").exists()
    rc, _, err = run(capsys, "mask", "ones", UNET, "--steps", 5, "-o", tmp_path / "missing" / "m.json")
    assert rc == 2 and "does not exist" in err


def test_fingerprint_mismatch_warns(capsys, tmp_path):
    m = tmp_path / "m.json"
    run(capsys, "mask", "ones", UNET, "--steps", 3, "-o", m)
    data = json.loads(m.read_text())
    data["fingerprint"] = "UNet2DModel:000000000000"
    m.write_text(json.dumps(data))
    rc, _, err = run(capsys, "macs", UNET, "--steps", 3, "--mask", m)
    assert rc == 0 and "warning: model fingerprint differs" in err


def test_installed_entry_point():
    r = subprocess.run(["blockmask", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "rectify" in r.stdout
    r = subprocess.run([sys.executable, "-m", "blockmask.cli.main", "info", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip() == "error: unknown model 'nope': not a bundled model " \
        f"({', '.join(__import__('blockmask.io.models', fromlist=['x']).bundled_models()) or 'none installed'}), " \
        "folder, config:PATH or hub id"


def test_prompt_embeddings_file(capsys, tmp_path):
    """Text models read prompt embeddings (+ negative ones for CFG) from a safetensors file."""
    import torch
    from safetensors.torch import save_file

    f = tmp_path / "p.safetensors"
    save_file({"prompt_embeds": torch.randn(5, 12), "negative_prompt_embeds": torch.zeros(5, 12)}, str(f))
    pix = tiny_spec("tiny-pixart")
    rc, _, err = run(capsys, "sample", pix, "--steps", 3, "--prompt-embeds", f, "--guidance-scale", 2,
                     "--num-images", 2, "-o", tmp_path / "o")
    assert rc == 0, err
    a = np.load(tmp_path / "o" / "samples.npy")
    rc, _, err = run(capsys, "sample", pix, "--steps", 3, "--guidance-scale", 2, "--num-images", 2,
                     "-o", tmp_path / "r")
    assert rc == 2 and "is a text model" in err and "--random-prompts" in err and not (tmp_path / "r").exists()
    rc, _, err = run(capsys, "sample", pix, "--steps", 3, "--guidance-scale", 2, "--num-images", 2,
                     "--random-prompts", "-o", tmp_path / "r")
    assert rc == 0 and err.count("warning: conditioning on random prompt embeddings") == 1
    assert not np.array_equal(a, np.load(tmp_path / "r" / "samples.npy"))  # the prompt matters
    save_file({"prompt_embeds": torch.randn(5, 7)}, str(f))
    rc, _, err = run(capsys, "sample", pix, "--steps", 3, "--prompt-embeds", f, "-o", tmp_path / "x")
    assert rc == 2 and "width 7, the model expects 12" in err
    save_file({"other": torch.randn(2)}, str(f))
    rc, _, err = run(capsys, "sample", pix, "--steps", 3, "--prompt-embeds", f, "-o", tmp_path / "x")
    assert rc == 2 and "no 'prompt_embeds'" in err
