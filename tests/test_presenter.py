"""The presenter layer (blockmask.viz) at handler level, on tiny random-init configs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from blockmask.core.errors import BlockmaskError
from blockmask.core.graph import ConsumerGraph
from blockmask.viz import MaskEditor, compare, figures, presets
from blockmask.viz.context import load_context
from blockmask.viz.context import Draw
from blockmask.viz.training import TrainSettings

CONFIGS = Path(__file__).resolve().parent / "configs"
K = 6


@pytest.fixture(scope="module")
def ctx():
    return load_context(f"config:{CONFIGS / 'tiny-unet.json'}", device="cpu")


@pytest.fixture(scope="module")
def dit():
    return load_context(f"config:{CONFIGS / 'tiny-dit.json'}", device="cpu")


def test_toggle_undo_redo_reset(ctx):
    ed = MaskEditor.create(ctx, K)
    assert ed.toggle(0, 1)[0].level == "warning" and ed.mask[0].all()  # row 0 refused, with the reason
    assert ed.toggle(2, 1) == [] and not ed.mask[2, 1] and ed.dirty
    assert ed.summary(ctx)["ratio"] < 1
    ed.undo()
    assert ed.mask[2, 1]
    ed.redo()
    assert not ed.mask[2, 1]
    ed.reset()
    assert ed.mask.all() and not ed.dirty
    assert ed.undo() == [] and not ed.mask[2, 1]  # reset itself is undoable
    assert ed.toggle(99, 0)[0].level == "error"


def test_region_row_column(ctx):
    ed = MaskEditor.create(ctx, K)
    msgs = ed.set_region(0, 2, 3, 5, False)
    assert any("Row 0" in m.text for m in msgs) and ed.mask[0].all()
    assert not ed.mask[1:3, 3:6].any() and ed.mask[3:, 3:6].all()
    ed.set_region(1, 2, 3, 3, None)  # toggle
    assert ed.mask[1:3, 3].all()
    ed.set_row(4, False)
    assert not ed.mask[4].any()
    assert ed.set_row(0, False)[0].level == "warning"
    ed.set_column(0, False)
    assert not ed.mask[1:, 0].any() and ed.mask[0, 0]
    assert ed.set_row("x", True)[0].level == "error"
    assert ed.set_region(50, 60, 0, 1, True)[0].level == "error"


def test_rectify_highlight_and_no_pixel_change(ctx):
    ed = MaskEditor.create(ctx, K)
    m, src, meta = presets.build(ctx, "random", K, macs_ratio=0.5, seed=3)
    ed.load(m, source=src, meta=meta)
    before = ed.mask.copy()
    msgs = ed.rectify(ctx)
    assert msgs and ed.pre_rectify is not None
    assert not (ed.mask & ~before).any()  # M' <= M
    np.testing.assert_array_equal(ed.removed, before & ~ed.mask)
    assert ctx.macs.total(ed.mask) <= ctx.macs.total(before)
    a = compare.compare(ctx, before, Draw(seed=1, num_images=2))
    b = compare.compare(ctx, ed.mask, Draw(seed=1, num_images=2))
    np.testing.assert_array_equal(a.masked, b.masked)


def test_presets_and_learned_masks(ctx, dit, tmp_path, monkeypatch):
    keys = [p.key for p in presets.presets(ctx, K)]
    assert keys[:1] == ["ones"] or keys[0].startswith("learned:")
    assert "deepcache" in keys and "deepcache" not in [p.key for p in presets.presets(dit, K)]
    # a learned mask that fits (model, K) is listed; one for another K is not
    (tmp_path / "masks").mkdir()
    ed = MaskEditor.create(ctx, K)
    ed.toggle(3, 3)
    (tmp_path / "masks" / "good.json").write_bytes(ed.download_bytes(ctx))
    other = MaskEditor.create(ctx, K + 1)
    (tmp_path / "masks" / "other-k.json").write_bytes(other.download_bytes(ctx))
    monkeypatch.setenv("BLOCKMASK_ASSETS", str(tmp_path))
    listed = [p.key for p in presets.presets(ctx, K)]
    assert "learned:good.json" in listed and "learned:other-k.json" not in listed
    mask, _, _ = presets.initial_mask(ctx, K)
    assert not mask[3, 3]
    with pytest.raises(Exception):
        presets.build(ctx, "fora", K, interval="abc")


def test_upload_validation_keeps_mask(ctx, dit):
    ed = MaskEditor.create(ctx, K)
    ed.toggle(2, 2)
    keep = ed.mask.copy()
    for bad in (b"", b"{oops", b'{"format": "x"}', MaskEditor.create(ctx, K + 2).download_bytes(ctx),
                MaskEditor.create(dit, K).download_bytes(dit)):
        msgs = ed.load_upload(ctx, bad, "f.json")
        assert msgs[0].level == "error" and "f.json" in msgs[0].text
        np.testing.assert_array_equal(ed.mask, keep)
    good = MaskEditor.create(ctx, K)
    good.set_row(3, False)
    data = good.download_bytes(ctx)
    assert json.loads(data)["format"] == "blockmask/1"
    assert ed.load_upload(ctx, data, "g.json")[0].level == "success"
    np.testing.assert_array_equal(ed.mask, good.mask)


def test_compare_readouts_and_cache(ctx):
    m = presets.build(ctx, "uniform", K, every=2)[0]
    mine, theirs = {}, {}
    r = compare.compare(ctx, m, Draw(seed=0, num_images=2), repeats=3, session=mine)
    assert r.original.shape == r.masked.shape == r.difference.shape and r.original.dtype == np.uint8
    assert r.mse >= 0 and r.speedup > 0 and 0 < r.macs_percent < 100 and not r.cached
    assert r.repeats == 3 and r.speedup_lo <= r.speedup_hi and r.num_images == 2 and "CPU" in r.device
    assert r.mac_speedup > 1 and "over 3 repeats" in r.speed_text() and "batch 2" in r.speed_text()
    assert r.errors.shape == (K,) and r.errors[0] == 0 and r.errors[-1] > 0  # step 0 computes everything
    assert compare.compare(ctx, m, Draw(seed=0, num_images=2), repeats=3, session=mine).cached
    assert not compare.compare(ctx, m, Draw(seed=0, num_images=2), repeats=3, session=theirs).cached  # per session
    with pytest.raises(BlockmaskError, match="repeats"):
        compare.compare(ctx, m, repeats=0)
    same = compare.compare(ctx, np.ones_like(m), Draw(seed=0, num_images=2), repeats=1)
    assert same.mse == 0 and same.psnr == float("inf") and not same.errors.any()
    assert compare.clamp_images(0)[0] == 1 and compare.clamp_images(100)[0] == compare.MAX_IMAGES
    assert compare.clamp_images("x")[1]
    assert compare.png_bytes(r.original, 2)[:4] == b"\x89PNG"


def test_delta(ctx):
    seen = []
    d = compare.compute_delta(ctx, K, seed=987, progress=lambda f, t: seen.append(f))  # a seed no other test uses: no cache hit
    assert d.shape == (K,) and np.isnan(d[0]) and np.all(d[1:] >= 0) and seen[-1] == 1.0
    delta, lam = compare.delta_from_meta({"delta": [None, 1, 2, 3, 4, 5], "lambda": [1] * K}, K)
    assert delta.shape == (K,) and lam.shape == (K,)
    assert compare.delta_from_meta({"delta": [1, 2]}, K) == (None, None)


def test_figures(ctx, dit):
    ed = MaskEditor.create(ctx, K)
    ed.set_row(2, False)
    fig = figures.mask_figure(ctx, ed.mask, removed=ed.mask & False)
    pts = [p for tr in fig.data if tr.customdata is not None for p in tr.customdata.tolist()]
    assert len(pts) == ed.mask.size
    removed = np.zeros_like(ed.mask)
    removed[3, 1] = True  # a reused cell that rectification removed
    ed.set_cells([(3, 1)], False)
    g = figures.grid_payload(ctx, ed.mask, removed=removed, mode="off", ack=7)
    assert g["K"] == K and g["N"] == ctx.n_units and len(g["cells"]) == ed.mask.size
    assert g["cells"][2 * g["N"]:3 * g["N"]] == "0" * g["N"] and g["cells"][:g["N"]] == "1" * g["N"]
    assert g["cells"][3 * g["N"] + 1] == "2" and len(g["rows"]) == K and g["rows"][0].startswith("k=0 · t=")
    assert [b[1] for b in g["blocks"]][0] == 0 and g["mode"] == "off" and g["ack"] == 7 and not g["readonly"]
    assert len(g["tips"]) == g["N"] and "MACs" in g["tips"][0]
    json.dumps(g)  # plain JSON for the browser
    for f in (figures.step_macs_figure(ctx, ed.mask),
              figures.unit_fraction_figure(dit, np.ones((K, dit.n_units), bool)),
              figures.delta_figure(np.arange(K, dtype=float), None, ctx.timesteps(K))):
        assert f.data
    img = figures.mask_image(ctx, ed.mask)
    lay = figures.image_layout(ctx, K)
    assert img.shape == (lay["height"], lay["width"], 3)
    c = lay["cell"]
    for k, i in ((0, 0), (2, 5), (K - 1, ctx.n_units - 1)):
        assert figures.cell_at(ctx, K, lay["x0"][i] + c / 2, k * c + c / 2) == (k, i)


def test_big_mask_rectifies(ctx):
    """Issue 5's editor size, K=1000, N=60 (synthetic 60-unit chain): on a chain, a unit's cell is live
    only where the next unit runs at that step or the unit feeds the output. Its time (< 100 ms) is
    measured by benchmarks/rectify_speed.py (issue 30: no wall-clock asserts in tests)."""
    g = ConsumerGraph.chain(60)
    rng = np.random.default_rng(0)
    m = rng.random((1000, 60)) < 0.6
    m[0] = True
    from blockmask.core.rectify import rectify

    r = rectify(m, g).mask
    assert r[0].all() and not (r & ~m).any() and r[:, -1].tolist() == m[:, -1].tolist()


def test_class_conditional_compare(dit, ctx):
    m = presets.build(dit, "fora", K, interval=2)[0]
    r = compare.compare(dit, m, Draw(seed=0, num_images=2, class_label=3, guidance_scale=2.0))
    assert r.macs_original == 2 * dit.macs.baseline(K)  # CFG doubles the MACs
    assert dit.num_classes and dit.supports_guidance and dit.default_guidance == 1.5  # random init: no metadata
    assert ctx.default_guidance == 1.0  # an unconditional U-Net: guidance off
    with pytest.raises(Exception, match="out of range"):
        compare.compare(dit, m, Draw(seed=0, num_images=1, class_label=99))


def test_training_wrapper(ctx):
    from blockmask.viz import training

    seen, curve = [], training.Curve()
    mask, source, meta = training.train(ctx, TrainSettings(4, lam=0.5, iters=2, batch=1), curve=curve,
                                        progress=lambda f, t: seen.append((f, t)))
    assert mask.shape == (4, ctx.n_units) and mask[0].all() and "trained here" in source
    assert len(meta["delta"]) == 4 and len(meta["lambda"]) == 4 and seen[-1][0] == 1.0
    assert "left" in seen[0][1] and len(curve.k) == 3  # the estimate is measured from the first trained step
    assert len(training.curve_figure(curve).data) == 2 and "measured" in training.estimate_note(ctx, 4, 2, 1)
    with pytest.raises(training.Cancelled):  # cancel: stops at the next step, the lock is released
        training.train(ctx, TrainSettings(4, lam=0.5, iters=2, batch=1), should_stop=lambda: True)
    assert not ctx.lock.locked()


def _hub_cache(tmp_path, repo, mf, sha="0123456789abcdef0123456789abcdef01234567"):
    """The layout huggingface_hub's cache has after downloading ``repo`` (as in test_hub_cachedit)."""
    root = tmp_path / "hub" / f"models--{repo.replace('/', '--')}"
    mf.save_pretrained(root / "snapshots" / sha)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(sha)
    return tmp_path / "hub"


def test_mask_policy_and_load_from_hub(ctx, tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    from blockmask.viz.access import MaskPolicy

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("BLOCKMASK_APP_ALLOW_MASKS", raising=False)
    m = np.ones((K, ctx.n_units), bool)
    m[2:, 1] = False
    mf = ctx.wb.mask_file(m)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(_hub_cache(tmp_path, "someone/tiny-mask", mf)))
    folder = mf.save_pretrained(tmp_path / "masks" / "mine")
    ed = MaskEditor.create(ctx, K)
    # nothing allowed by default: one error naming how to enable it, mask kept
    msgs = ed.load_source(ctx, "someone/tiny-mask", MaskPolicy.from_env())
    assert [x.level for x in msgs] == ["error"] and "BLOCKMASK_APP_ALLOW_MASKS" in msgs[0].text
    assert "--allow-mask" in msgs[0].text and ed.mask.all()
    pol = MaskPolicy(("someone/", str(tmp_path / "masks") + "/"))
    assert pol.allows("someone/tiny-mask") and pol.allows(str(folder)) and not pol.allows("other/x")
    assert not pol.allows(str(tmp_path / "masks" / ".." / "x")) and not pol.allows("someone/") \
        and not pol.allows("/etc/passwd")
    assert MaskPolicy(("someone/tiny-mask",)).allows("someone/tiny-mask")
    assert not MaskPolicy(("someone/tiny-mask",)).allows("someone/tiny-mask2")
    monkeypatch.setenv("BLOCKMASK_APP_ALLOW_MASKS", "a/b, *")
    assert MaskPolicy.from_env().allows("anyone/anything")
    msgs = ed.load_source(ctx, "someone/tiny-mask", pol)
    assert msgs[0].level == "success" and np.array_equal(ed.mask, m) and ed.source == "someone/tiny-mask"
    ed.reset()
    ed2 = MaskEditor.create(ctx, K)
    assert ed2.load_source(ctx, str(folder), pol)[0].level == "success" and np.array_equal(ed2.mask, m)
    # errors: a missing repo (offline), a folder without a mask, another K — each one line, mask kept
    before = ed2.mask.copy()
    (tmp_path / "masks" / "empty").mkdir()
    other = ctx.wb.mask_file(np.ones((K + 1, ctx.n_units), bool)).save_pretrained(tmp_path / "masks" / "k7")
    for src, words in [("someone/missing", "someone/missing"),
                       (str(tmp_path / "masks" / "empty"), "blockmask_mask.json"), (str(other), "step")]:
        msgs = ed2.load_source(ctx, src, pol)
        assert [x.level for x in msgs] == ["error"] and words in msgs[0].text and "kept" in msgs[0].text, msgs
        assert "\n" not in msgs[0].text and np.array_equal(ed2.mask, before)
    # too large for the app (the library's own limit is higher)
    monkeypatch.setattr("blockmask.viz.presenter.MAX_UPLOAD_BYTES", 100)  # where it is read
    msgs = MaskEditor.create(ctx, K).load_source(ctx, "someone/tiny-mask", pol)
    assert msgs[0].level == "error" and "over this app's limit" in msgs[0].text


def _embeds(width: int, seed: int, tokens: int = 5) -> bytes:
    import torch
    from safetensors.torch import save

    return save({"prompt_embeds": torch.randn(tokens, width, generator=torch.Generator().manual_seed(seed))})


@pytest.mark.parametrize("config", ["tiny-unet-cond", "tiny-pixart"])
def test_prompt_embeddings_reach_the_model(ctx, config):
    from blockmask.viz.prompts import load_prompt

    assert not ctx.takes_text  # an unconditional U-Net takes no prompt
    with pytest.raises(BlockmaskError, match="takes no prompt"):
        load_prompt(ctx, _embeds(24, 0))
    tc = load_context(f"config:{CONFIGS / f'{config}.json'}", device="cpu")
    assert tc.takes_text and tc.text_width
    a, b = load_prompt(tc, _embeds(tc.text_width, 1), "a.safetensors"), load_prompt(tc, _embeds(tc.text_width, 2))
    assert a.digest != b.digest and "5 tokens" in a.label
    m = np.ones((4, tc.n_units), bool)
    ra = compare.compare(tc, m, Draw(seed=0, num_images=1, prompt=a), repeats=1)
    rb = compare.compare(tc, m, Draw(seed=0, num_images=1, prompt=b), repeats=1)
    ra2 = compare.compare(tc, m, Draw(seed=0, num_images=1, prompt=a), repeats=1)
    assert not np.array_equal(ra.original, rb.original)  # different embeddings, different images
    np.testing.assert_array_equal(ra.original, ra2.original)
    for data, words in [(_embeds(tc.text_width + 1, 0), "width"), (b"junk", "cannot read"), (b"", "empty"),
                        (b"x" * 2_000_001, "over this app's limit")]:
        with pytest.raises(BlockmaskError, match=words):
            load_prompt(tc, data, "p.safetensors")
