"""The two Spaces (README "Deploy"), without Docker or Hugging Face: the ZeroGPU shim on both paths
(a fake ``spaces`` module and none), the checkout mode a Gradio Space runs in, the queue and its
limits, the cached examples, and the files each Space reads (requirements.txt, Dockerfile,
.streamlit/config.toml, README front matter) against the code and pyproject.toml. The entry points
themselves are started in tests/test_spaces_health.py."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import pickle
import re
import shlex
import sys
import tomllib
import types
import warnings
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "app"
TINY = "config:" + str(ROOT / "tests" / "configs" / "tiny-unet.json")
sys.path.insert(0, str(APP))
import spaces_compat  # noqa: E402

ZEROGPU_TORCH = (Version("2.8"), Version("2.11"))  # issue 28: ZeroGPU supports torch 2.8–2.11
STREAMLIT_CMD = ["streamlit", "run", "app/main.py", "--server.port", "8501", "--server.address", "0.0.0.0"]


def _fresh(name: str, monkeypatch):
    """Import app/<name>.py anew (its decorators applied again), restored in sys.modules afterwards."""
    monkeypatch.delitem(sys.modules, name, raising=False)
    spec = importlib.util.spec_from_file_location(name, APP / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, mod)
    spec.loader.exec_module(mod)
    return mod


def _fake_spaces(monkeypatch):
    calls = []

    def GPU(fn=None, **kw):  # noqa: N802 — the real name
        def wrap(f):
            calls.append((f.__name__, kw))
            f.zerogpu = kw
            return f
        return wrap(fn) if fn is not None else wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU))
    return calls


# --- the ZeroGPU shim --------------------------------------------------------------------------
def test_gpu_is_spaces_gpu_when_the_package_is_there(monkeypatch):
    calls = _fake_spaces(monkeypatch)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    sc = _fresh("spaces_compat", monkeypatch)
    assert sc.ZERO_GPU

    def f(x):
        return x + 1

    assert sc.gpu(f)(1) == 2 and f.zerogpu == {}
    g = sc.gpu(duration=120)(lambda: 3)
    assert g() == 3 and calls[-1] == ("<lambda>", {"duration": 120})


def test_gpu_is_a_no_op_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "spaces", None)  # `import spaces` raises ImportError
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    sc = _fresh("spaces_compat", monkeypatch)
    assert sc.spaces is None and not sc.ZERO_GPU

    def f():
        return 1

    assert sc.gpu(f) is f and sc.gpu(duration=60)(f) is f and sc.gpu()(f) is f


def test_heavy_handlers_are_decorated(monkeypatch):
    calls = _fake_spaces(monkeypatch)
    _fresh("spaces_compat", monkeypatch)
    h = _fresh("gradio_handlers", monkeypatch)
    tr = _fresh("gradio_training", monkeypatch)
    ex = _fresh("gradio_examples", monkeypatch)
    ex.runner(TINY)
    names = {n for n, _ in calls}
    assert {"generate", "compute_delta_plot", "train_mask", "run_example", "_build_on_gpu"} <= names
    assert h.generate.zerogpu == {} and tr.train_mask.zerogpu == {"duration": tr.TRAIN_GPU_S}
    cheap = {"load_model", "view", "upload_mask", "load_preset", "grid_edit", "toggle_cell"}  # rule presets too
    assert not names & cheap  # mask edits never wait for a GPU


def test_results_survive_a_process_boundary(monkeypatch):
    """ZeroGPU runs a decorated call in another process and pickles what it returns (the session too)."""
    import gradio_handlers as h

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    warnings.simplefilter("ignore")
    s = h.new_session(TINY, steps=4)
    out = h.generate(s, "0", 1, 0, 1.0, 1, progress=lambda *a, **k: None)
    back = pickle.loads(pickle.dumps(out))
    assert back[0].editor.mask.tolist() == s.editor.mask.tolist() and back[0].shown == s.shown
    assert pickle.loads(pickle.dumps(h.compute_delta_plot(s, progress=lambda *a, **k: None)))[0].delta


# --- checkout mode (a Gradio Space does not pip-install the project) ---------------------------
def test_use_checkout_maps_the_asset_and_app_packages(monkeypatch):
    real = importlib.util.find_spec
    for name in spaces_compat.CHECKOUT_PACKAGES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n in spaces_compat.CHECKOUT_PACKAGES and n not in sys.modules
                        else real(n, *a))
    monkeypatch.delenv("BLOCKMASK_ASSETS", raising=False)
    try:
        assert spaces_compat.use_checkout(ROOT) == ["blockmask_assets", "blockmask_app"]
        from blockmask.io import resources

        assert resources.assets_dir() == ROOT / "assets" and (resources.assets_dir() / "models").is_dir()
        assert resources.app_dir() == APP
        assert Path(str(importlib.resources.files("blockmask_app"))) == APP
        assert spaces_compat.use_checkout(ROOT) == []  # idempotent
    finally:
        for name in spaces_compat.CHECKOUT_PACKAGES:
            sys.modules.pop(name, None)


BARE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]  # as if never installed
from pathlib import Path
sys.path[:] = [p for p in sys.path if not (Path(p or ".") / "blockmask" / "__init__.py").is_file()]  # .pth installs
import importlib.util
assert importlib.util.find_spec("blockmask_assets") is None and importlib.util.find_spec("blockmask") is None
sys.argv = [{app!r}]
sys.path.insert(0, {app_dir!r})
import gradio_demo  # what `python app/gradio_demo.py` imports before build()
from blockmask.io import resources
from blockmask.viz.context import default_model_spec, model_choices
print(resources.assets_dir(), resources.app_dir(), default_model_spec(), *model_choices())
"""


def test_the_gradio_entry_point_runs_from_a_bare_checkout(tmp_path):
    """A Gradio Space never pip-installs the project: the entry point must find the bundled models."""
    import subprocess

    if "site-packages" in str(importlib.util.find_spec("blockmask").origin):
        pytest.skip("blockmask is installed as a regular (non-editable) package here")
    code = BARE.format(app=str(APP / "gradio_demo.py"), app_dir=str(APP))
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""})
    assert out.returncode == 0, out.stderr[-3000:]
    assets, app, default, *choices = out.stdout.split()
    assert (Path(assets), Path(app)) == (ROOT / "assets", APP)
    assert default == "mnist-ddpm" and "mnist-ddpm" in choices


def test_use_checkout_leaves_an_install_alone():
    if importlib.util.find_spec("blockmask_assets") is None:
        pytest.skip("blockmask is not installed here")
    assert spaces_compat.use_checkout(ROOT) == []


# --- queue and examples ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.setenv("BLOCKMASK_APP_MODEL", TINY)
    mp.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path_factory.mktemp("examples")))
    warnings.simplefilter("ignore")
    import gradio_demo

    yield gradio_demo.queued(gradio_demo.build(TINY))
    mp.undo()


@pytest.fixture(scope="module")
def client(demo):
    import socket

    from gradio_client import Client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    demo.launch(server_port=port, prevent_thread_lock=True, quiet=True)
    yield Client(f"http://127.0.0.1:{port}/", verbose=False)
    demo.close()


def test_queue_and_per_event_limits(demo):
    import gradio_demo

    q = demo._queue
    assert q.max_size == gradio_demo.QUEUE["max_size"] and q.default_concurrency_limit == 4
    fns = {f.api_name: f for f in demo.fns.values()}
    for name in ("generate", "delta"):
        assert (fns[name].concurrency_id, fns[name].concurrency_limit) == ("run", gradio_demo.HEAVY)
    assert (fns["train"].concurrency_id, fns["train"].concurrency_limit) == ("train", 1)
    assert fns["grid_edit"].concurrency_limit == "default"


def test_examples_are_lazily_cached_and_pure(demo):
    import gradio_examples

    assert "example" in {f.api_name for f in demo.fns.values()}, "no gr.Examples in the app"
    assert gradio_examples.cache_mode() == "lazy"
    run = gradio_examples.runner(TINY)
    a, b = run("1", 0), run("1", 0)
    assert a[3] == b[3] and (a[1] == b[1]).all()  # the same inputs give the same outputs: safe to cache
    assert "cached example" in a[3]


def test_an_example_click_is_computed_once_then_served_from_the_cache(client):
    import os

    first = client.predict(1, api_name="/example")  # the second example, by its index
    cache = Path(os.environ.get("GRADIO_EXAMPLES_CACHE", ""))
    logs = list(cache.glob("*/log.csv")) if cache.parts else []
    assert logs and len(logs[0].read_text().strip().splitlines()) == 2  # header + this example
    again = client.predict(1, api_name="/example")
    assert again[3] == first[3] and "seed 1" in first[3]
    assert len(logs[0].read_text().strip().splitlines()) == 2  # not computed again


# --- the files the Spaces read -----------------------------------------------------------------
def _requirements() -> dict[str, Requirement]:
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    reqs = [Requirement(ln) for ln in lines if ln]
    return {r.name.lower().replace("_", "-"): r for r in reqs}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _front_matter() -> dict[str, str]:
    head = (ROOT / "README.md").read_text().split("---")[1]
    return {k.strip(): v.strip().strip('"') for k, v in (ln.split(":", 1) for ln in head.strip().splitlines())}


def test_requirements_pin_a_zerogpu_torch_consistently():
    reqs = _requirements()
    assert not [ln for ln in (ROOT / "requirements.txt").read_text().splitlines()
                if ln.strip().startswith((".", "-e", "-r"))], "the Space installs requirements.txt before the checkout"
    (torch_spec,) = reqs["torch"].specifier
    (tv_spec,) = reqs["torchvision"].specifier
    assert torch_spec.operator == tv_spec.operator == "=="
    torch_v, tv_v = Version(torch_spec.version), Version(tv_spec.version)
    assert ZEROGPU_TORCH[0] <= Version(f"{torch_v.major}.{torch_v.minor}") <= ZEROGPU_TORCH[1]
    assert (tv_v.major, tv_v.minor) == (0, torch_v.minor + 15)  # torchvision 0.(N+15) is built for torch 2.N
    project = _pyproject()
    deps = {Requirement(d).name.lower().replace("_", "-"): Requirement(d) for d in project["dependencies"]}
    for name, dep in deps.items():
        assert name in reqs, f"{name} (pyproject.toml) is missing from requirements.txt"
        if name in ("torch", "torchvision"):
            assert dep.specifier.contains(reqs[name].specifier.__iter__().__next__().version)
        else:
            assert reqs[name].specifier == dep.specifier, name
    apps = {Requirement(d).name: Requirement(d) for d in project["optional-dependencies"]["apps"]}
    assert reqs["kaleido"].specifier == apps["kaleido"].specifier
    assert "spaces" in reqs and "streamlit" not in reqs  # ZeroGPU's package; Streamlit only in the Docker Space
    if "gradio" in reqs:  # the Space's gradio comes from sdk_version
        assert reqs["gradio"].specifier.contains(_front_matter()["sdk_version"])
    assert apps["gradio"].specifier.contains(_front_matter()["sdk_version"])


def test_readme_front_matter_is_the_gradio_space():
    fm = _front_matter()
    assert fm["sdk"] == "gradio" and (ROOT / fm["app_file"]).is_file() and fm["app_file"] == "app/gradio_demo.py"
    text = (ROOT / "README.md").read_text()
    assert "## Deploy" in text and "sdk: docker" in text and "app_port: 8501" in text


def _dockerfile() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    return [tuple(ln.split(None, 1)) for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]


def dockerfile_cmd() -> list[str]:
    (cmd,) = [arg for op, arg in _dockerfile() if op == "CMD"]
    return json.loads(cmd)


def test_dockerfile_runs_the_streamlit_space_command():
    ops = _dockerfile()
    assert dockerfile_cmd() == STREAMLIT_CMD
    assert ("EXPOSE", "8501") in ops
    frm = [a for op, a in ops if op == "FROM"][0]
    assert frm.startswith(f"python:{_front_matter()['python_version']}")
    run = " ".join(a for op, a in ops if op == "RUN")
    apps = {Requirement(d).name: str(Requirement(d)) for d in _pyproject()["optional-dependencies"]["apps"]}
    assert f'"{apps["streamlit"]}"' in run and "requirements.txt" in run
    assert "--no-deps ." in run  # the project itself (bundled models) is installed in the image
    assert shlex.split(dict((op, a) for op, a in ops if op == "USER")["USER"]) == ["user"]


@pytest.mark.parametrize("where", [ROOT, APP])
def test_streamlit_config_is_headless_with_the_apps_upload_limit(where):
    from blockmask.viz.access import MAX_UPLOAD_BYTES

    cfg = tomllib.loads((where / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] == MAX_UPLOAD_BYTES // 1_000_000
    if where == ROOT:  # the Docker Space's working directory
        assert cfg["server"]["headless"] is True


def test_streamlit_models_are_cached_resources():
    src = (APP / "main.py").read_text()
    assert re.search(r"@st\.cache_resource\([^)]*\)\s*\ndef get_model", src)
