"""Masks on the hub (offline, on a folder laid out as the hub cache), cache-dit steps_mask export and
import (checked against the real cache-dit), `blockmask data mnist`."""

import json
import os

import numpy as np
import pytest
import torch

import blockmask
from blockmask.cli.main import main
from blockmask.core.errors import MaskError
from blockmask.io.maskfile import MaskFile

from conftest import needs_mnist, tiny_spec

K = 6


@pytest.fixture()
def unet_mask(workbenches):
    wb = workbenches("tiny-unet")
    m = np.ones((K, len(wb.units)), bool)
    m[2:, 1] = False
    return wb, wb.mask_file(m)


def _hub_cache(tmp_path, repo, mf, sha="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub's cache has after downloading ``repo``: refs/main → snapshot."""
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    snap = root / "snapshots" / sha
    mf.save_pretrained(snap)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    return tmp_path / "hub"


def test_save_and_load_pretrained_offline(tmp_path, unet_mask, monkeypatch, capsys):
    wb, mf = unet_mask
    d = mf.save_pretrained(tmp_path / "local")
    assert sorted(p.name for p in d.iterdir()) == ["README.md", "blockmask_mask.json"]
    assert "library_name: blockmask" in (d / "README.md").read_text()
    back = MaskFile.from_pretrained(d)
    assert np.array_equal(back.mask, mf.mask) and back.units == mf.units
    cache = _hub_cache(tmp_path, "someone/tiny-unet-mask", mf)
    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    hub = MaskFile.from_pretrained("someone/tiny-unet-mask", cache_dir=cache)
    assert np.array_equal(hub.mask, mf.mask)
    with pytest.raises(MaskError, match="could not get mask"):
        MaskFile.from_pretrained("someone/other", cache_dir=cache)
    # the CLI and the API take the hub id wherever they take a mask
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    loaded, _ = wb.load_mask("someone/tiny-unet-mask")
    assert np.array_equal(loaded.mask, mf.mask)
    assert main(["sample", tiny_spec("tiny-unet"), "--steps", str(K), "--mask", "someone/tiny-unet-mask",
                 "--num-images", "1", "-o", str(tmp_path / "s")]) == 0
    assert (tmp_path / "s" / "samples.npy").is_file()
    capsys.readouterr()
    assert main(["sample", tiny_spec("tiny-unet"), "--steps", str(K), "--mask", "someone/missing",
                 "--num-images", "1", "-o", str(tmp_path / "s2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "someone/missing" in err[0] and not (tmp_path / "s2").exists()
    with blockmask.apply(wb.model, "someone/tiny-unet-mask",
                         scheduler=wb.scheduler()) as ex:
        assert ex.mask.shape == (K, len(wb.units))


def test_push_to_hub_uploads_the_folder(unet_mask, monkeypatch):
    import huggingface_hub

    _, mf = unet_mask
    seen = {}

    def create_repo(self, repo_id, **kw):
        seen["repo"] = repo_id

    def upload_folder(self, *, repo_id, folder_path, path_in_repo, **kw):
        seen["files"] = sorted(os.listdir(folder_path))
        seen["mask"] = json.loads(open(os.path.join(folder_path, "blockmask_mask.json")).read())["mask"]
        seen["path"] = path_in_repo
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert mf.push_to_hub("me/mask", subfolder="blockmask") == "commit"
    assert seen == {"repo": "me/mask", "files": ["README.md", "blockmask_mask.json"],
                    "mask": mf.mask.astype(int).tolist(), "path": "blockmask"}


def test_cachedit_export_import_matches_real_cachedit(workbenches, tmp_path, capsys):
    """A mask imported from a cache-dit static steps_mask gives cache-dit's own images exactly;
    export gives the config back; masks cache-dit cannot express are refused with the reason."""
    import cache_dit
    from cache_dit import DBCacheConfig
    from diffusers import DDIMScheduler, DiTPipeline

    from benchmarks.peers import IdentityVAE
    from blockmask.io.cachedit import from_cachedit, to_cachedit

    wb = workbenches("tiny-dit")
    cfg = {"steps_computation_mask": [1, 1, 0, 1, 0, 0], "steps_computation_policy": "static",
           "Fn_compute_blocks": 1, "Bn_compute_blocks": 1, "max_warmup_steps": 0}
    mask = from_cachedit(cfg, wb.units)
    assert to_cachedit(mask, wb.units) == cfg
    pipe = DiTPipeline(transformer=wb.model, vae=IdentityVAE(wb.model), scheduler=DDIMScheduler())
    pipe.set_progress_bar_config(disable=True)

    def run():
        return pipe(class_labels=[1, 2], guidance_scale=1.0, num_inference_steps=K,
                    generator=torch.Generator().manual_seed(0), output_type="np").images

    cache_dit.enable_cache(pipe, cache_config=DBCacheConfig(enable_separate_cfg=False, num_inference_steps=K, **cfg))
    try:
        theirs = run()
    finally:
        cache_dit.disable_cache(pipe)
        for name in ("forward", "_norm1_emb", "_is_patched"):  # cache-dit's leftovers on the shared model
            if name in vars(wb.model) or name in wb.model._modules:
                delattr(wb.model, name)
    with blockmask.apply(pipe, mask):
        ours = run()
    assert np.array_equal(ours, theirs)
    # not expressible: an inner unit of a running block, a non-contiguous middle, U-Nets
    bad = mask.copy()
    bad[3, 0] = False
    with pytest.raises(MaskError, match="inside a running block"):
        to_cachedit(bad, wb.units)
    bad = np.ones_like(mask)
    bad[2, [0, 1, 2, 6, 7, 8]] = False
    with pytest.raises(MaskError, match="contiguous"):
        to_cachedit(bad, wb.units)
    unet = workbenches("tiny-unet")
    with pytest.raises(MaskError, match="U-Nets"):
        to_cachedit(np.ones((K, len(unet.units)), bool), unet.units)
    # CLI: import writes a mask file, export prints the config back
    (tmp_path / "cd.json").write_text(json.dumps(cfg))
    spec = tiny_spec("tiny-dit")
    assert main(["cachedit", "import", str(tmp_path / "cd.json"), "--model", spec, "-o", str(tmp_path / "m.json")]) == 0
    assert main(["cachedit", "export", str(tmp_path / "m.json"), "--model", spec, "-o", str(tmp_path / "back.json")]) == 0
    assert json.loads((tmp_path / "back.json").read_text()) == cfg
    capsys.readouterr()
    assert main(["cachedit", "export", str(tmp_path / "m.json"), "--model", tiny_spec("tiny-unet")]) == 2


@needs_mnist
def test_data_mnist_from_a_folder(tmp_path, capsys):
    src = os.environ["BLOCKMASK_MNIST"]
    assert main(["data", "mnist", "--data", src, "-o", str(tmp_path / "m")]) == 0
    assert "10000 test images" in capsys.readouterr().out
    assert any(p.name.startswith("t10k-images") for p in (tmp_path / "m").iterdir())


def test_data_mnist_errors(tmp_path, capsys):
    assert main(["data", "mnist", "--data", str(tmp_path / "none")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "mnist", "--data", str(tmp_path / "empty"), "-o", str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err and not (tmp_path / "o").exists()
    assert main(["data", "mnist", "-o", str(tmp_path / "o")]) == 2  # tests run offline
    assert "--data PATH" in capsys.readouterr().err


def test_hub_mask_over_the_limit_is_refused_before_download(monkeypatch, workbenches):
    """The size comes from the file's hub metadata: an oversized mask is never downloaded (the apps pass
    their 2 MB limit), a small one is; offline, the metadata call fails and the download decides."""
    import types

    import huggingface_hub

    from blockmask.viz.access import MAX_UPLOAD_BYTES

    downloads = []
    size = {"n": 100 * 2**20}
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, **kw: types.SimpleNamespace(size=size["n"]))

    def download(repo, filename, **kw):
        downloads.append(repo)
        raise OSError("no network in tests")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    with pytest.raises(MaskError, match=r"too large \(104857600 bytes, limit 67108864\); not downloaded"):
        MaskFile.from_pretrained("someone/huge-mask")
    wb = workbenches("tiny-unet")
    size["n"] = MAX_UPLOAD_BYTES + 1
    with pytest.raises(MaskError, match="limit 2000000"):
        wb.load_mask("someone/big-mask", max_bytes=MAX_UPLOAD_BYTES)
    assert downloads == []
    size["n"] = 1000  # under the limit: the download is attempted (and fails here with one line)
    with pytest.raises(MaskError, match="could not get mask .* no network in tests"):
        wb.load_mask("someone/small-mask", max_bytes=MAX_UPLOAD_BYTES)
    assert downloads == ["someone/small-mask"]

    def offline(url, **kw):
        raise OSError("offline")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", offline)
    with pytest.raises(MaskError, match="could not get mask"):
        MaskFile.from_pretrained("someone/any")
    assert downloads[-1] == "someone/any"
