"""Issue 30's import drawing: no function of blockmask/ takes more than 8 parameters (positional and
keyword-only, not counting self/cls, *args or **kwargs); group them into config dataclasses.

When this test was written 21 functions took more. It held them as a ratchet until all were regrouped
(PlanConfig, RunOptions, Observers, EvalConfig, SampleOptions, LearnSearch, the apps' Draw /
TrainSettings / ReportContent, Calibration taking its SamplingRun); now there are none."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "blockmask"
MAX_PARAMS = 8

def param_count(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    a = fn.args
    names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
    if names and names[0] in ("self", "cls"):
        names = names[1:]
    return len(names)


def functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield prefix + node.name, node
            yield from functions(node, f"{prefix}{node.name}.<locals>.")
        elif isinstance(node, ast.ClassDef):
            yield from functions(node, f"{prefix}{node.name}.")
        else:
            yield from functions(node, prefix)


def too_long() -> dict[str, int]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        for qual, fn in functions(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if (n := param_count(fn)) > MAX_PARAMS:
                out[f"{rel}::{qual}"] = n
    return out


def test_counter_counts_what_it_should():
    fn = ast.parse("class A:\n def f(self, a, /, b, *args, c, d=1, **kw): pass").body[0].body[0]
    assert param_count(fn) == 4
    names = [q for q, _ in functions(ast.parse("class A:\n def f(self):\n  def g(x): pass\ndef h(): pass"))]
    assert names == ["A.f", "A.f.<locals>.g", "h"]


def test_no_function_takes_more_than_8_parameters():
    found = too_long()
    assert not found, f"functions over {MAX_PARAMS} parameters (group them into a config dataclass): {found}"


def test_the_finder_finds_a_long_signature(tmp_path, monkeypatch):
    (tmp_path / "m.py").write_text("def f(a, b, c, d, e, f, g, h, i): pass\ndef ok(a, b, c, d, e, f, g, h): pass\n")
    monkeypatch.setitem(globals(), "PKG", tmp_path)
    assert too_long() == {"m.py::f": 9}
