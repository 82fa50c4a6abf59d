"""The imports of the package go one way. Every import is counted: at module level, inside functions and under
TYPE_CHECKING, and a string naming a module (importlib.import_module, `python -m`) as well.

Modules: no two import each other, directly or around a loop (a module importing its own parent package is
not a cycle: a package's __init__ imports its submodules lazily). Packages: each imports only packages of its
own layer or lower ones (LAYERS, drawn in docs/architecture.md), and no two import each other around a loop."""

import ast
from pathlib import Path

import newbie

SRC = Path(newbie.__file__).parent


def _modules(src: Path = SRC) -> dict[str, Path]:
    mods = {}
    for path in src.rglob("*.py"):
        parts = ("newbie", *path.relative_to(src).with_suffix("").parts)
        mods[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return mods


# Lowest first. The root package `newbie` (newbie/__init__.py, the façade: newbie.load) is a door like the CLI.
LAYERS = (
    {"config", "errors", "device", "version", "prompt_kind", "quiet_imports"},
    {"model", "sampling"},
    {"loading", "precision", "memory", "adapters", "prompts", "demo"},
    {"pipeline", "train"},
    {"parallel", "bench"},
    {"cli", "serve", "ui", "diffusers_api", "diffusers_args", "newbie", "__main__"},
)


def _imports(name: str, path: Path, mods: dict[str, Path], parents: bool = False) -> set[str]:
    """The package's modules that `name` imports; its own parent packages only with parents=True."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and "." in node.value
            and node.value in mods
        ):
            targets = [node.value]  # importlib.import_module("newbie.x.y"), [python, "-m", "newbie.x.y"]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in mods:  # newbie.x.y.SomeClass -> newbie.x.y
                target = target.rpartition(".")[0]
            if target and target != name and (parents or not name.startswith(target + ".")):
                found.add(target)
    return found


def _package(module: str) -> str:
    """newbie.pipeline.recipe -> pipeline, newbie.config -> config, newbie -> newbie (the root)."""
    return module.split(".")[1] if "." in module else module


def _package_edges(src: Path = SRC) -> dict[str, dict[str, set[str]]]:
    """package -> {imported package: {"module -> module", ...}}, every import counted."""
    mods = _modules(src)
    edges: dict[str, dict[str, set[str]]] = {_package(m): {} for m in mods}
    for name, path in mods.items():
        for target in _imports(name, path, mods, parents=True):
            a, b = _package(name), _package(target)
            if a != b:
                edges[a].setdefault(b, set()).add(f"{name} -> {target}")
    return edges


def _upward(edges: dict[str, dict[str, set[str]]]) -> dict[tuple[str, str], set[str]]:
    layer = {p: i for i, names in enumerate(LAYERS) for p in names}
    return {(a, b): why for a, out in edges.items() for b, why in out.items() if layer[b] > layer[a]}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycles():
    mods = _modules()
    assert "newbie.serve.worker" in mods and len(mods) > 50  # the walk found the package
    edges = {name: _imports(name, path, mods) for name, path in mods.items()}
    assert "newbie.serve.store" in edges["newbie.serve.worker"]  # it sees imports
    assert _cycles(edges) == []


def test_a_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_has_a_layer():
    edges = _package_edges()
    assert {"pipeline", "cli", "newbie", "device"} <= set(edges)  # the walk found the packages
    assert set(edges) - set().union(*LAYERS) == set(), (
        "place the new package in LAYERS (docs/architecture.md)"
    )


def test_packages_import_only_their_own_layer_or_lower():
    edges = _package_edges()
    assert "prompts" in edges["cli"] and "pipeline" in edges["serve"]  # it sees imports inside functions
    upward = {edge: sorted(why) for edge, why in _upward(edges).items()}
    assert upward == {}


def test_packages_import_each_other_in_no_loop():
    edges = _package_edges()
    assert _cycles(edges) == []


def test_an_upward_import_inside_a_function_is_found(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "__init__.py").write_text("")
    (tmp_path / "errors.py").write_text("def f():\n    from newbie.pipeline import x  # noqa\n")
    (tmp_path / "pipeline" / "x.py").write_text(
        "import importlib\nimportlib.import_module('newbie.errors')\n"
    )
    edges = _package_edges(tmp_path)
    assert edges["errors"] == {"pipeline": {"newbie.errors -> newbie.pipeline.x"}}
    assert edges["pipeline"] == {"errors": {"newbie.pipeline.x -> newbie.errors"}}
    assert set(_upward(edges)) == {("errors", "pipeline")}
    assert _cycles({a: set(out) for a, out in edges.items()}) == [["errors", "pipeline"]]


def _missing(src: Path = SRC) -> list[str]:
    """`from newbie.x.y import z` and `import newbie.x.y` whose module newbie.x.y does not exist (e.g. a
    module that moved): the walk above would count them as imports of the nearest package that does."""
    mods = _modules(src)
    out = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.ImportFrom)
                and not node.level
                and (node.module or "").startswith("newbie")
            ):
                wanted = [node.module]
            elif isinstance(node, ast.Import):
                wanted = [a.name for a in node.names if a.name.startswith("newbie")]
            else:
                continue
            out += [f"{name}: {w}" for w in wanted if w not in mods]
    return out


def test_every_import_names_an_existing_module(tmp_path):
    assert _missing() == []
    (tmp_path / "serve").mkdir()
    (tmp_path / "serve" / "__init__.py").write_text("")
    (tmp_path / "ui.py").write_text("def f():\n    from newbie.serve.cli import is_loopback  # noqa\n")
    assert _missing(tmp_path) == ["newbie.ui: newbie.serve.cli"]
