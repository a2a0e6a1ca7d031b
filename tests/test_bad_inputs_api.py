"""The bad-input corpus of the Python API (issue 13): each case must raise a :class:`BlockmaskError`
with a one-line message containing the fragment, and change no file (input files:
tests/bad_input_corpus.py)."""

from __future__ import annotations

import numpy as np
import pytest

from blockmask.core.errors import BlockmaskError

from bad_input_corpus import UNET, make_inputs, snapshot


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


# --- the Python API corpus --------------------------------------------------------------------
def _api_cases():
    from blockmask import workbench as api
    from blockmask.eval.evaluate import EvalConfig, Method, evaluate
    from blockmask.io.maskfile import MaskFile
    from blockmask.core.mask import validate_mask
    from blockmask.io.models import load_model
    from blockmask.learning.train import TrainConfig
    from blockmask.learning.run import RefineConfig, RunOptions, run_training
    from blockmask.core.validate import check_float, check_int

    nan, inf = float("nan"), float("inf")
    return [
        ("api:generate-steps-negative", lambda wb, d: wb.generate(None, steps=-1), "steps must be >= 1"),
        ("api:generate-steps-float", lambda wb, d: wb.generate(None, steps=2.5), "steps must be an integer"),
        ("api:generate-steps-too-many", lambda wb, d: wb.generate(None, steps=10**6), "steps must be <="),
        ("api:generate-nothing", lambda wb, d: wb.generate(None), "give a mask or a number of steps"),
        ("api:generate-seed-negative", lambda wb, d: wb.generate(None, steps=2, seed=-1), "seed must be >= 0"),
        ("api:generate-seed-huge", lambda wb, d: wb.generate(None, steps=2, seed=2**70), "seed must be <="),
        ("api:generate-n-zero", lambda wb, d: wb.generate(None, steps=2, num_images=0), "number of images"),
        ("api:generate-n-float", lambda wb, d: wb.generate(None, steps=2, num_images=2.0), "must be an integer"),
        ("api:generate-mask-string", lambda wb, d: wb.generate("abc", steps=2), "0/1 numbers"),
        ("api:generate-mask-k", lambda wb, d: wb.generate(np.ones((3, len(wb.units))), steps=2), "mask has 3 steps"),
        ("api:generate-mode", lambda wb, d: wb.generate(None, steps=2, mode="x"), "mode must be"),
        ("api:generate-condition-type", lambda wb, d: wb.generate(None, steps=2, condition={"a": 1}),
         "condition must be"),
        ("api:condition-nan", lambda wb, d: wb.condition(guidance_scale=nan), "guidance scale must be a finite"),
        ("api:condition-inf", lambda wb, d: wb.condition(guidance_scale=inf), "guidance scale must be a finite"),
        ("api:condition-string", lambda wb, d: wb.condition(guidance_scale="2"), "guidance scale must be a number"),
        ("api:condition-label-str", lambda wb, d: wb.condition(class_label="3"), "class label must be an integer"),
        ("api:condition-labels-empty", lambda wb, d: wb.condition(class_label=[]), "must not be empty"),
        ("api:baseline-kind", lambda wb, d: wb.baseline("nope", steps=4), "unknown baseline"),
        ("api:baseline-kind-int", lambda wb, d: wb.baseline(3, steps=4), "unknown baseline"),
        ("api:baseline-steps-zero", lambda wb, d: wb.baseline("ones", steps=0), "steps must be >= 1"),
        ("api:baseline-interval", lambda wb, d: wb.baseline("deepcache", steps=4, interval=0), "interval"),
        ("api:baseline-every-float", lambda wb, d: wb.baseline("uniform", steps=4, every=1.5), "every"),
        ("api:baseline-skip-nan", lambda wb, d: wb.baseline("random", steps=4, skip=nan), "skip must be a finite"),
        ("api:baseline-ratio-big", lambda wb, d: wb.baseline("random", steps=4, macs_ratio=3), "MAC ratio"),
        ("api:rectify-1d", lambda wb, d: wb.rectify(np.ones(3)), "2-D"),
        ("api:rectify-wrong-n", lambda wb, d: wb.rectify(np.ones((3, 2))), "units (columns)"),
        ("api:rectify-nan", lambda wb, d: wb.rectify(np.full((2, len(wb.units)), nan)), "NaN"),
        ("api:mask-file-meta", lambda wb, d: wb.mask_file(np.ones((2, len(wb.units))), meta=[1]), "meta must be"),
        ("api:bench-batch-zero", lambda wb, d: wb.bench(np.ones((2, len(wb.units))), batch=0), "batch must be"),
        ("api:bench-repeats-float", lambda wb, d: wb.bench(np.ones((2, len(wb.units))), repeats=1.5), "repeats"),
        ("api:bench-mask-none", lambda wb, d: wb.bench(None), "mask"),
        ("api:timesteps-zero", lambda wb, d: wb.timesteps(0), "steps must be >= 1"),
        ("api:load-mask-int", lambda wb, d: wb.load_mask(5), "mask source must be"),
        ("api:load-mask-deep-bytes", lambda wb, d: wb.load_mask(b"[" * 100000), "nested deeper"),
        ("api:load-mask-bytes-list", lambda wb, d: wb.load_mask(b"[]"), "expected a JSON object"),
        ("api:load-mask-fifo", lambda wb, d: wb.load_mask(d / "fifo.json"), "not a regular file"),
        ("api:load-mask-steps", lambda wb, d: wb.load_mask(d / "good.json", steps=-2), "steps must be >= 1"),
        ("api:images-string", lambda wb, d: wb.images("x"), "latents must be"),
        ("api:load-device-int", lambda wb, d: api.Workbench.load(UNET, device=5), "device must be a string"),
        ("api:load-device-bogus", lambda wb, d: api.Workbench.load(UNET, device="tpu:9"), "unknown device"),
        ("api:load-scheduler", lambda wb, d: api.Workbench.load(UNET, scheduler="foo"), "unsupported scheduler"),
        ("api:load-scheduler-int", lambda wb, d: api.Workbench.load(UNET, scheduler=1), "scheduler must be"),
        ("api:load-spec-none", lambda wb, d: api.Workbench.load(None), "model spec must be a string"),
        ("api:load-dtype", lambda wb, d: api.Workbench.load(UNET, dtype="int8"), "unknown dtype"),
        ("api:load-init-seed", lambda wb, d: api.Workbench.load(UNET, init_seed=-1), "init seed"),
        ("api:load-model-config-list", lambda wb, d: load_model(f"config:{d}/cfg-list.json"), "found a list"),
        ("api:apply-missing-mask", lambda wb, d: api.apply(wb.model, d / "nope.json").__enter__(), "not found"),
        ("api:apply-no-denoiser", lambda wb, d: api.apply(object(), d / "good.json").__enter__(), "no .unet"),
        ("api:maskfile-loads-deep", lambda wb, d: MaskFile.loads("[" * 10**5), "nested deeper"),
        ("api:maskfile-from-json-list", lambda wb, d: MaskFile.from_json([]), "expected a JSON object"),
        ("api:maskfile-steps-null", lambda wb, d: MaskFile.loads((d / "mask-num_steps-null.json").read_text()),
         "'num_steps' must be an integer"),
        ("api:validate-mask-strings", lambda wb, d: validate_mask([["1", "1"]]), "0/1 numbers"),
        ("api:validate-mask-ragged", lambda wb, d: validate_mask([[1, 1], [1]]), "ragged"),
        ("api:validate-mask-deep", lambda wb, d: validate_mask(np.ones((1,) * 40).tolist()), "mask"),
        ("api:trainconfig-lam-nan", lambda wb, d: TrainConfig(steps=4, lam=nan), "lambda must be a finite"),
        ("api:trainconfig-lr-inf", lambda wb, d: TrainConfig(steps=4, lr=inf), "learning rate must be a finite"),
        ("api:trainconfig-batch-float", lambda wb, d: TrainConfig(steps=4, batch=2.5), "batch must be an integer"),
        ("api:trainconfig-steps-one", lambda wb, d: TrainConfig(steps=1), "steps must be >= 2"),
        ("api:trainconfig-steps-str", lambda wb, d: TrainConfig(steps="4"), "steps must be an integer"),
        ("api:trainconfig-recipe", lambda wb, d: TrainConfig.for_recipe("x", steps=4), "unknown recipe"),
        ("api:trainconfig-huge-int", lambda wb, d: TrainConfig(steps=4, lr=10**400), "learning rate"),
        ("api:refineconfig-batch", lambda wb, d: RefineConfig(batch=0), "calibration batch"),
        ("api:refineconfig-time", lambda wb, d: RefineConfig(time_limit=nan), "time limit"),
        ("api:run-training-out-folder", lambda wb, d: run_training(wb, TrainConfig(steps=4, iters=1), d),
         "is a folder"),
        ("api:run-training-budget", lambda wb, d: run_training(wb, TrainConfig(steps=4, iters=1), d / "x" / "m.json",
                                                               RunOptions(target_macs=nan)), "--target-macs must be in"),
        ("api:evaluate-n-one", lambda wb, d: evaluate(wb, [Method("o", None, 2)], EvalConfig(n=1)),
         "number of samples"),
        ("api:evaluate-batch-zero", lambda wb, d: evaluate(wb, [Method("o", None, 2)], EvalConfig(n=4, batch=0)),
         "batch"),
        ("api:evaluate-guidance-nan", lambda wb, d: evaluate(wb, [Method("o", None, 2)], EvalConfig(n=4, guidance=nan)),
         "guidance scale"),
        ("api:evaluate-extractor", lambda wb, d: evaluate(wb, [Method("o", None, 2)], EvalConfig(n=4, extractor=3)),
         "FID extractor"),
        ("api:evaluate-nothing", lambda wb, d: evaluate(wb, [], EvalConfig(n=4)), "nothing to evaluate"),
        ("api:check-int-bool", lambda wb, d: check_int("n", True), "n must be an integer"),
        ("api:check-float-huge-int", lambda wb, d: check_float("x", 10**400), "x must be a finite"),
    ]


API_CASES = _api_cases()


@pytest.fixture(scope="module")
def api_wb():
    from blockmask.workbench import Workbench

    return Workbench.load(UNET)


@pytest.mark.parametrize("case", API_CASES, ids=[c[0] for c in API_CASES])
def test_api_bad_input(case, inputs, api_wb, tmp_path, monkeypatch):
    name, call, expect = case
    monkeypatch.chdir(tmp_path)
    before = snapshot(inputs)
    with pytest.raises(BlockmaskError) as info:
        call(api_wb, inputs)
    msg = str(info.value)
    assert expect in msg and "\n" not in msg, msg
    assert snapshot(inputs) == before and list(tmp_path.iterdir()) == []

