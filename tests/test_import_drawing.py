"""The import drawing of blockmask/ (issue 30): no import circle, counting the imports made inside
functions too (an import moved into a function to dodge a circle is still a circle); no private
name imported from another module; every module (and every Python file of the apps, scripts,
benchmarks and tests) under 400 lines; the layers of the package layout
(docs/ARCHITECTURE.md) imported in one direction only; no blockmask module imported inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "blockmask"
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    """Dotted module name → file, for every module of the package (``blockmask.learning.methods`` for an __init__)."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _imports(name: str, path: Path):
    """(imported module, the names taken from it, line) for each import of a blockmask module in this
    file, at module level or inside a function. ``from .pkg import mod`` imports the module ``mod``."""
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "blockmask":
                target = node.module
            else:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:
                    yield sub, (), node.lineno
                else:
                    yield target, (alias.name,), node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "blockmask":
                    target = alias.name
                    while target not in MODULES and "." in target:
                        target = target.rsplit(".", 1)[0]
                    yield target, (), node.lineno


def _graph() -> dict[str, dict[str, int]]:
    """module → {imported module: first line}; a package's own submodule imports count as edges."""
    edges: dict[str, dict[str, int]] = {m: {} for m in MODULES}
    for name, path in MODULES.items():
        for target, _, line in _imports(name, path):
            assert target in MODULES, f"{path.name}:{line} imports {target}, which is not a blockmask module"
            if target != name:
                edges[name].setdefault(target, line)
    return edges


def find_cycle(edges: dict[str, dict[str, int]]) -> list[str] | None:
    """One import circle (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(edges[m]):
            if state.get(n) == 1:
                return path[path.index(n):] + [n]
            if n not in state and (found := visit(n)) is not None:
                return found
        state[m] = 2
        path.pop()
        return None

    for m in sorted(edges):
        if m not in state and (found := visit(m)) is not None:
            return found
    return None


def test_no_import_circle():
    edges = _graph()
    cycle = find_cycle(edges)
    assert cycle is None, "import circle: " + " -> ".join(
        f"{a} (line {edges[a][b]})" for a, b in zip(cycle, cycle[1:])) + f" -> {cycle[-1]}"


def test_the_cycle_finder_finds_one():
    assert find_cycle({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": 1}, "b": {}, "c": {"a": 1, "b": 2}}) is None


def test_no_private_name_imported_across_modules():
    bad = [f"{MODULES[name].relative_to(PKG.parent)}:{line}: from {target} import {n}"
           for name, path in MODULES.items() for target, names, line in _imports(name, path)
           for n in names if target != name and n.startswith("_") and not n.startswith("__")]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_every_python_file_is_under_400_lines():
    """The package's modules, and the apps', scripts', benchmarks' and tests' files too."""
    files = list(MODULES.values()) + [p for d in ("app", "scripts", "benchmarks", "tests")
                                      for p in sorted((PKG.parent / d).rglob("*.py"))]
    big = {str(p.relative_to(PKG.parent)): n for p in files
           if (n := len(p.read_text(encoding="utf-8").splitlines())) >= MAX_LINES}
    assert not big, f"Python files of {MAX_LINES} lines or more: {big}"


# The package layout, lowest layer first (docs/ARCHITECTURE.md): a module imports only from its own
# layer and the layers before it, at module level or inside a function.
LAYERS = ["core", "presets", "adapters", "io", "hooks", "sampling", "data", "learning", "eval",
          "workbench", "pipelines", "viz", "cli"]
OUTSIDE = {"blockmask", "blockmask.compat"}  # the public surface, and the old names' aliases


def layer_of(module: str) -> str:
    return module.split(".")[1]


def test_every_module_is_in_a_layer():
    stray = [m for m in MODULES if m not in OUTSIDE and layer_of(m) not in LAYERS]
    assert not stray, f"modules outside the layers {LAYERS}: {stray}"


def test_no_import_goes_up_the_layers():
    up = [f"{MODULES[a].relative_to(PKG.parent)}:{line}: imports {b}"
          for a, targets in _graph().items() if a not in OUTSIDE
          for b, line in targets.items() if LAYERS.index(layer_of(b)) > LAYERS.index(layer_of(a))]
    assert not up, "imports against the layers " + " < ".join(LAYERS) + ":\n" + "\n".join(up)


def test_no_blockmask_module_is_imported_inside_a_function():
    """The layers make every import of a blockmask module safe at module level; an import inside a
    function would be one that dodges a circle (optional third-party packages may still be imported
    lazily)."""
    inside = []
    for name, path in MODULES.items():
        for fn in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inside += [f"{path.relative_to(PKG.parent)}:{n.lineno} in {fn.name}" for n in ast.walk(fn)
                           if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").split(".")[0] == "blockmask")
                           or isinstance(n, ast.Import) and any(a.name.split(".")[0] == "blockmask" for a in n.names)]
    assert not inside, "blockmask modules imported inside functions:\n" + "\n".join(sorted(set(inside)))
