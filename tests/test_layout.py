"""The house's rules, checked on the source (``ast``, nothing imported): no import cycle among the
project's modules (imports inside functions count too), and no core module imports a built-in
plugin (the wall between ``dlops`` and ``dlops_plugins``)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = {"dlops": REPO / "dlops", "dlops_plugins": REPO / "plugins"}


def _modules() -> dict[str, Path]:
    mods = {}
    for top, root in PACKAGES.items():
        for p in root.rglob("*.py"):
            rel = p.relative_to(root).with_suffix("")
            parts = [top, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = p
    return mods


def _imports(path: Path, name: str, mods: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (the most specific module each import statement names)."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    is_pkg = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for sub in ast.walk(node):
                sub._type_only = True  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        if getattr(node, "_type_only", False):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([base] if base else []))
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for t in targets:
            while t and t not in mods:
                t = t.rpartition(".")[0]
            if t and t != name:
                out.add(t)
                break
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {m: _imports(p, m, mods) for m, p in mods.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_core_imports_no_builtin_plugin():
    offenders = {m: sorted(t for t in ts if t.startswith("dlops_plugins"))
                 for m, ts in _graph().items() if m.startswith("dlops.") or m == "dlops"}
    assert {m: ts for m, ts in offenders.items() if ts} == {}


def test_the_checker_sees_imports():  # the two tests above must be able to fail
    graph = _graph()
    assert "dlops.errors" in graph["dlops.cli"]
    assert "dlops.data.policy" in graph["dlops_plugins.augment.policies"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
