"""The bad-input corpus of the CLI (issue 13): every command, each case one row.

Every case must exit 2 with exactly one line on stderr starting ``error:``, naming the problem (the
expected fragment), print nothing on stdout, leave no file behind in its working folder and change
no input file. Cases run in-process through ``blockmask.cli.main.main(argv)`` with model loading memoized
(loading itself is tested elsewhere), plus a few real subprocesses at the end. The input files:
tests/bad_input_corpus.py; the Python API's corpus: tests/test_bad_inputs_api.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bad_input_corpus import BAD_CONFIGS, DIT, K, TEXT, UNET, make_inputs, mask_variants, snapshot  # noqa: F401


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return make_inputs(tmp_path_factory.mktemp("inputs"))


# --- the CLI corpus --------------------------------------------------------------------------
GOOD = "{in}/good.json"


def _mask_cases():
    """Every bad mask file through a different command (all commands read masks the same way)."""
    cases = []
    commands = [
        lambda f: ["macs", UNET, "--steps", str(K), "--mask", f],
        lambda f: ["rectify", f, "--model", UNET, "-o", "{out}/r.json"],
        lambda f: ["sample", UNET, "--steps", str(K), "--mask", f, "-o", "{out}/s"],
        lambda f: ["bench", UNET, "--steps", str(K), "--mask", f, "--repeats", "1"],
        lambda f: ["eval", UNET, "--steps", str(K), "--mask", f"m={f}", "--num-samples", "2",
                   "--cache-dir", "{out}/c", "-o", "{out}/e"],
    ]
    for i, (name, expect) in enumerate(_MASK_EXPECT.items()):
        cases.append((f"mask:{name}", commands[i % len(commands)](f"{{in}}/mask-{name}.json"), expect))
    return cases


# expected messages (they do not depend on the model: a 3-unit stand-in builds the table at import)
_MASK_EXPECT = {k: v[1] for k, v in mask_variants({"format": "blockmask/1", "num_steps": K, "units": ["a"] * 3,
                                                    "mask": [[1, 1, 1]] * K}).items()}

CLI_CASES = _mask_cases() + [
    # special files as masks
    ("file:missing", ["macs", UNET, "--steps", "4", "--mask", "{in}/nope.json"], "mask file not found"),
    ("file:folder", ["macs", UNET, "--steps", "4", "--mask", "{in}/folder.json"], "holds no blockmask_mask.json"),
    ("file:fifo", ["macs", UNET, "--steps", "4", "--mask", "{in}/fifo.json"], "not a regular file"),
    ("file:sparse-100MB", ["macs", UNET, "--steps", "4", "--mask", "{in}/sparse.json"], "too large"),
    ("file:rectify-fifo", ["rectify", "{in}/fifo.json", "--model", UNET, "-o", "{out}/r.json"], "not a regular file"),
    # configs (config:PATH models)
    *[(f"config:{n}", ["info", f"config:{{in}}/{n}.json"], e) for n, (_, e) in BAD_CONFIGS.items()],
    ("config:missing", ["info", "config:{in}/nope.json"], "config file not found"),
    ("config:folder", ["info", "config:{in}/folder.json"], "is a folder"),
    ("config:fifo", ["info", "config:{in}/fifo.json"], "not a regular file"),
    # model specs
    ("model:empty", ["info", ""], "empty model spec"),
    ("model:unknown", ["info", "no-such-model"], "unknown model"),
    ("model:three-slashes", ["info", "a/b/c"], "unknown model"),
    ("model:json-missing", ["info", "nope.json"], "config file not found"),
    ("model:not-diffusers-folder", ["info", "{in}/folder.json"], "not a diffusers folder"),
    ("model:a-file", ["info", "{in}/a-file"], "not a diffusers folder"),
    # common options
    ("opt:device", ["info", UNET, "--device", "tpu"], "unknown device"),
    ("opt:device-negative", ["info", UNET, "--device", "cuda:-1"], "device"),
    ("opt:dtype", ["info", UNET, "--dtype", "int8"], "invalid choice"),
    ("opt:scheduler", ["info", UNET, "--scheduler", "foo"], "unsupported scheduler"),
    ("opt:init-seed-negative", ["info", UNET, "--init-seed", "-1"], "--init-seed must be >= 0"),
    ("opt:init-seed-text", ["info", UNET, "--init-seed", "x"], "invalid int value"),
    ("opt:steps-zero", ["macs", UNET, "--steps", "0"], "--steps must be >= 1"),
    ("opt:steps-negative", ["macs", UNET, "--steps", "-3"], "--steps must be >= 1"),
    ("opt:steps-huge", ["macs", UNET, "--steps", "1000000"], "--steps must be <= 10000"),
    ("opt:steps-float", ["macs", UNET, "--steps", "2.5"], "invalid int value"),
    ("opt:steps-missing", ["macs", UNET], "the following arguments are required: --steps"),
    ("opt:no-command", [], "the following arguments are required: command"),
    ("opt:unknown-command", ["frobnicate"], "invalid choice"),
    ("opt:unknown-flag", ["info", UNET, "--frob"], "unrecognized arguments"),
    # mask
    ("mask:kind", ["mask", "bogus", UNET, "--steps", "4", "-o", "{out}/m.json"], "invalid choice"),
    ("mask:interval-zero", ["mask", "deepcache", UNET, "--steps", "4", "--interval", "0", "-o", "{out}/m.json"],
     "--interval must be >= 1"),
    ("mask:every-zero", ["mask", "uniform", UNET, "--steps", "4", "--every", "0", "-o", "{out}/m.json"],
     "--every must be >= 1"),
    ("mask:branch-negative", ["mask", "deepcache", UNET, "--steps", "4", "--branch", "-1", "-o", "{out}/m.json"],
     "--branch must be >= 0"),
    ("mask:skip-nan", ["mask", "random", UNET, "--steps", "4", "--skip", "nan", "-o", "{out}/m.json"],
     "expected a finite number"),
    ("mask:skip-two", ["mask", "random", UNET, "--steps", "4", "--skip", "2", "-o", "{out}/m.json"],
     "skip must be <= 1"),
    ("mask:ratio-zero", ["mask", "random", UNET, "--steps", "4", "--macs-ratio", "0", "-o", "{out}/m.json"],
     "MAC ratio must be > 0"),
    ("mask:ratio-inf", ["mask", "random", UNET, "--steps", "4", "--macs-ratio", "inf", "-o", "{out}/m.json"],
     "expected a finite number"),
    ("mask:random-neither", ["mask", "random", UNET, "--steps", "4", "-o", "{out}/m.json"], "exactly one of"),
    ("mask:seed-negative", ["mask", "random", UNET, "--steps", "4", "--skip", "0.5", "--seed", "-1",
                            "-o", "{out}/m.json"], "--seed must be >= 0"),
    ("mask:out-folder", ["mask", "ones", UNET, "--steps", "4", "-o", "{out}"], "is a folder"),
    ("mask:out-missing-parent", ["mask", "ones", UNET, "--steps", "4", "-o", "{out}/no/m.json"], "does not exist"),
    ("mask:out-parent-file", ["mask", "ones", UNET, "--steps", "4", "-o", "{in}/a-file/m.json"], "output folder"),
    # a special file as output (a FIFO here: a regression must never be able to replace /dev/null)
    ("mask:out-fifo", ["mask", "ones", UNET, "--steps", "4", "-o", "{in}/fifo.json"], "not a regular file"),
    ("mask:out-empty", ["mask", "ones", UNET, "--steps", "4", "-o", ""], "output must be a file name"),
    ("mask:out-missing", ["mask", "ones", UNET, "--steps", "4"], "required: -o/--output"),
    # rectify
    ("rectify:model-missing", ["rectify", GOOD, "-o", "{out}/r.json"], "required: --model"),
    ("rectify:wrong-model", ["rectify", GOOD, "--model", DIT, "-o", "{out}/r.json"], "does not fit the model"),
    ("rectify:out-folder", ["rectify", GOOD, "--model", UNET, "-o", "{out}"], "is a folder"),
    # sample
    ("sample:guidance-nan", ["sample", UNET, "--steps", "4", "--guidance-scale", "nan", "-o", "{out}/s"],
     "expected a finite number"),
    ("sample:guidance-inf", ["sample", UNET, "--steps", "4", "--guidance-scale", "inf", "-o", "{out}/s"],
     "expected a finite number"),
    ("sample:guidance-negative", ["sample", UNET, "--steps", "4", "--guidance-scale", "-1", "-o", "{out}/s"],
     "guidance scale must be >= 0"),
    ("sample:guidance-huge", ["sample", UNET, "--steps", "4", "--guidance-scale", "1e300", "-o", "{out}/s"],
     "guidance scale must be <= 10000"),
    ("sample:num-images-zero", ["sample", UNET, "--steps", "4", "--num-images", "0", "-o", "{out}/s"],
     "--num-images must be >= 1"),
    ("sample:num-images-huge", ["sample", UNET, "--steps", "4", "--num-images", "100000", "-o", "{out}/s"],
     "--num-images must be <= 4096"),
    ("sample:class-negative", ["sample", DIT, "--steps", "4", "--class-label", "-1", "-o", "{out}/s"],
     "--class-label must be >= 0"),
    ("sample:class-out-of-range", ["sample", DIT, "--steps", "4", "--class-label", "99", "-o", "{out}/s"],
     "out of range"),
    ("sample:mode", ["sample", UNET, "--steps", "4", "--mode", "turbo", "-o", "{out}/s"], "invalid choice"),
    ("sample:out-is-file", ["sample", UNET, "--steps", "4", "-o", "{in}/a-file"], "is not a folder"),
    ("sample:out-no-parent", ["sample", UNET, "--steps", "4", "-o", "{out}/x/y"], "parent does not exist"),
    ("sample:prompt-missing", ["sample", TEXT, "--steps", "4", "--prompt-embeds", "{in}/nope.st", "-o", "{out}/s"],
     "not found"),
    ("sample:prompt-garbage", ["sample", TEXT, "--steps", "4", "--prompt-embeds", "{in}/not-safetensors.st",
                               "-o", "{out}/s"], "cannot read prompt embeddings"),
    ("sample:prompt-fifo", ["sample", TEXT, "--steps", "4", "--prompt-embeds", "{in}/fifo.json", "-o", "{out}/s"],
     "not a regular file"),
    ("sample:mask-k-mismatch", ["sample", UNET, "--steps", "5", "--mask", GOOD, "-o", "{out}/s"],
     "mask has 4 steps, sampling uses 5"),
    ("sample:seed-negative", ["sample", UNET, "--steps", "4", "--seed", "-5", "-o", "{out}/s"],
     "--seed must be >= 0"),
    # bench
    ("bench:mask-missing-flag", ["bench", UNET, "--steps", "4"], "required: --mask"),
    ("bench:batch-zero", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--batch", "0"], "--batch must be >= 1"),
    ("bench:repeats-zero", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--repeats", "0"],
     "--repeats must be >= 1"),
    ("bench:warmup-negative", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--warmup", "-1"],
     "--warmup must be >= 0"),
    ("bench:guidance-nan", ["bench", UNET, "--steps", "4", "--mask", GOOD, "--guidance-scale", "nan"],
     "expected a finite number"),
    ("bench:k-mismatch", ["bench", UNET, "--steps", "3", "--mask", GOOD], "mask has 4 steps"),
    # train: options
    *[(f"train:{flag}={val}", ["train", UNET, "--steps", "4", "--iters", "1", "--batch", "1", flag, val,
                                 "-o", "{out}/m.json"], msg) for flag, val, msg in [
        ("--lambda", "nan", "expected a finite number"),
        ("--lambda", "inf", "expected a finite number"),
        ("--lambda", "-1", "lambda must be >= 0"),
        ("--lambda", "1e999", "expected a finite number"),
        ("--lr", "nan", "expected a finite number"),
        ("--lr", "0", "learning rate must be > 0"),
        ("--lr", "Infinity", "expected a finite number"),
        ("--alpha", "-0.5", "alpha must be >= 0"),
        ("--beta", "nan", "expected a finite number"),
        ("--tau", "2", "tau must be <= 1"),
        ("--temperature", "0", "temperature must be > 0"),
        ("--lambda-low", "-1", "lambda_low must be >= 0"),
        ("--guidance-scale", "nan", "expected a finite number"),
        ("--guidance-scale", "-2", "guidance scale must be >= 0"),
        ("--iters", "0", "iters must be >= 1"),
        ("--batch", "0", "batch must be >= 1"),
        ("--batch", "2.5", "invalid int value"),
        ("--seed", "-1", "--seed must be >= 0"),
        ("--probes", "-1", "probes"),
        ("--target-macs", "nan", "expected a finite number"),
        ("--target-macs", "0", "--target-macs must be in (0, 1]"),
        ("--target-macs", "1.5", "--target-macs must be in (0, 1]"),
        ("--target-macs", "1e-9", "unreachable"),
        ("--calib-batch", "0", "calibration batch must be >= 1"),
        ("--refine-passes", "-1", "refinement passes must be >= 0"),
        ("--sweep", "a,b", "--sweep takes"),
        ("--sweep", "nan", "--sweep takes"),
        ("--sweep", ",", "--sweep needs at least one"),
        ("--sweep", "1,-1", "lambda must be >= 0"),
        ("--recipe", "magic", "invalid choice"),
        ("--feature-norm", "l3", "invalid choice"),
        ("--class-label", "-3", "--class-label must be >= 0"),
        ("--prompt-embeds", "{in}/nope.st", "not text-conditioned: drop --prompt-embeds"),
    ]],
    ("train:class-out-of-range", ["train", DIT, "--steps", "3", "--iters", "1", "--class-label", "99",
                                  "-o", "{out}/m.json"], "out of range"),
    ("train:class-unconditional", ["train", UNET, "--steps", "3", "--iters", "1", "--class-label", "3",
                                   "-o", "{out}/m.json"], "not class-conditional"),
    ("train:steps-one", ["train", UNET, "--steps", "1", "-o", "{out}/m.json"], "steps must be >= 2"),
    ("train:steps-text", ["train", UNET, "--steps", "many", "-o", "{out}/m.json"], "expected an integer or 'auto'"),
    ("train:auto-no-target", ["train", UNET, "--steps", "auto", "-o", "{out}/m.json"], "--steps auto needs"),
    ("train:auto-resume", ["train", UNET, "--steps", "auto", "--target-macs", "0.5", "--resume",
                           "-o", "{out}/m.json"], "takes neither"),
    ("train:ref-steps-one", ["train", UNET, "--steps", "auto", "--ref-steps", "1", "--target-macs", "0.5",
                             "-o", "{out}/m.json"], "--ref-steps must be >= 2"),
    ("train:out-folder", ["train", UNET, "--steps", "4", "-o", "{out}"], "is a folder"),
    ("train:out-no-parent", ["train", UNET, "--steps", "4", "-o", "{out}/x/m.json"], "does not exist"),
    ("train:out-fifo", ["train", UNET, "--steps", "4", "-o", "{in}/fifo.json"], "not a regular file"),
    ("train:resume-nothing", ["train", UNET, "--steps", "4", "--iters", "1", "--batch", "1", "--resume",
                              "-o", "{out}/m.json"], "no checkpoint to resume"),
    *[(f"train:{n}", ["train", UNET, "--steps", str(K), "--iters", "1", "--batch", "1", "--resume",
                      "-o", "{out}/m.json"], e, n) for n, e in
      [("ckpt-not-json", "is corrupt"), ("ckpt-deep", "is corrupt"), ("ckpt-list", "is corrupt"),
       ("ckpt-format", "not a blockmask training checkpoint"), ("ckpt-model", "another model"),
       ("ckpt-units", "another model"), ("ckpt-config", "other settings (lr)"),
       ("ckpt-scheduler", "other settings (scheduler)"), ("ckpt-no-state", "no state"),
       ("ckpt-state-list", "'state' must be an object"), ("ckpt-rows-string", "'rows' must be a list"),
       ("ckpt-row-strings", "must be int"), ("ckpt-row-twos", "inconsistent mask"),
       ("ckpt-rows-too-many", "inconsistent mask"), ("ckpt-scores-strings", "must be float"),
       ("ckpt-delta-short", "another step count"), ("ckpt-seconds-missing", "'seconds' is missing"),
       ("ckpt-extra-field", "unknown state fields")]],
    ("train:ckpt-exists-no-resume", ["train", UNET, "--steps", str(K), "--iters", "1", "--batch", "1",
                                     "-o", "{out}/m.json"], "pass --resume", "ckpt-format"),
    ("train:locked", ["train", UNET, "--steps", str(K), "--iters", "1", "--batch", "1", "-o", "{out}/m.json"],
     "another run is writing", "LOCK"),
    # eval
    ("eval:batch-zero", ["eval", UNET, "--steps", "4", "--batch", "0", "-o", "{out}/e"], "--batch must be >= 1"),
    ("eval:num-samples-one", ["eval", UNET, "--steps", "4", "--num-samples", "1", "-o", "{out}/e"],
     "--num-samples must be >= 2"),
    ("eval:bench-batch-zero", ["eval", UNET, "--steps", "4", "--bench-batch", "0", "-o", "{out}/e"],
     "--bench-batch must be >= 1"),
    ("eval:bench-repeats-zero", ["eval", UNET, "--steps", "4", "--bench-repeats", "0", "-o", "{out}/e"],
     "--bench-repeats must be >= 1"),
    ("eval:deepcache-text", ["eval", UNET, "--steps", "4", "--deepcache", "a", "-o", "{out}/e"],
     "--deepcache takes comma-separated integers"),
    ("eval:deepcache-zero", ["eval", UNET, "--steps", "4", "--deepcache", "0", "--cache-dir", "{out}/c",
                             "-o", "{out}/e"], "--deepcache value must be >= 1"),
    ("eval:branch-negative", ["eval", UNET, "--steps", "4", "--deepcache", "2", "--branch", "-1",
                              "--cache-dir", "{out}/c", "-o", "{out}/e"], "--branch value must be >= 0"),
    ("eval:fora-text", ["eval", UNET, "--steps", "4", "--fora", "1.5", "-o", "{out}/e"], "--fora takes"),
    ("eval:mask-no-path", ["eval", UNET, "--steps", "4", "--mask", "learned=", "-o", "{out}/e"], "--mask takes"),
    ("eval:cache-dir-file", ["eval", UNET, "--steps", "4", "--cache-dir", "{in}/a-file", "-o", "{out}/e"],
     "exists and is not a folder"),
    ("eval:out-file", ["eval", UNET, "--steps", "4", "-o", "{in}/a-file"], "is not a folder"),
    ("eval:guidance-inf", ["eval", UNET, "--steps", "4", "--guidance-scale", "inf", "-o", "{out}/e"],
     "expected a finite number"),
    ("eval:class-negative", ["eval", UNET, "--steps", "4", "--class-label", "-1", "-o", "{out}/e"],
     "--class-label must be >= 0"),
    ("eval:mask-wrong-k", ["eval", UNET, "--steps", "5", "--mask", f"m={GOOD}", "--cache-dir", "{out}/c",
                           "-o", "{out}/e"], "mask has 4 steps, sampling uses 5"),
]


@pytest.fixture(scope="module")
def fast_loading():
    """Memoize Workbench.load for the corpus (the same few tiny models, hundreds of times)."""
    from blockmask.workbench import Workbench

    orig = Workbench.__dict__["load"]
    cache = {}

    def load(cls, spec, **kw):
        key = (spec, tuple(sorted(kw.items())))
        if key not in cache:
            cache[key] = orig.__func__(cls, spec, **kw)
        return cache[key]

    Workbench.load = classmethod(load)
    yield
    Workbench.load = orig


def test_case_names_are_unique_and_every_command_is_covered():
    ids = [c[0] for c in CLI_CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert {c[1][0] for c in CLI_CASES if c[1]} >= {"info", "macs", "mask", "rectify", "sample", "bench", "train",
                                                    "eval"}


@pytest.mark.parametrize("case", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_bad_input(case, inputs, fast_loading, tmp_path, monkeypatch, capsys):
    from blockmask.cli.main import main
    from blockmask.io.files import OutputLock
    from blockmask.learning.run import checkpoint_path

    name, argv, expect = case[:3]
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # a stray default output (cache folder…) would show up here
    lock = None
    if len(case) > 3:  # a planted checkpoint, or a held lock
        if case[3] == "LOCK":
            lock = OutputLock(work / "m.json").__enter__()
        else:
            checkpoint_path(work / "m.json").write_text((inputs / f"{case[3]}.json").read_text())
    before_in, before_work = snapshot(inputs), snapshot(work)
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(work)) for a in argv]
    try:
        rc = main(argv)
    finally:
        if lock is not None:
            lock.__exit__(None, None, None)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert rc == 2, (rc, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expect in lines[0], (expect, lines[0])
    assert out == "" and "Traceback" not in err
    after = snapshot(work)
    if lock is not None:
        before_work = {k: v for k, v in before_work.items() if not k.endswith(".lock")}
    assert after == before_work, f"files left behind: {sorted(set(after) - set(before_work))}"
    assert snapshot(inputs) == before_in



# --- a few real processes: the console script, exit codes, no traceback ------------------------
@pytest.mark.parametrize("argv, expect", [
    (["macs", UNET, "--steps", "4", "--mask", "{in}/mask-deep-top-list.json"], "nested deeper than 32"),
    (["train", UNET, "--steps", "4", "--lambda", "nan", "-o", "{out}/m.json"], "expected a finite number"),
])
def test_cli_subprocess(argv, expect, inputs, tmp_path):
    argv = [a.replace("{in}", str(inputs)).replace("{out}", str(tmp_path)) for a in argv]
    r = subprocess.run([sys.executable, "-m", "blockmask.cli.main", *argv], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and expect in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []
