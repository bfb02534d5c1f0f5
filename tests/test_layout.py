"""cai_core's import graph: no cycles (function-level imports included), and function-level
imports of sibling modules only with a stated reason.

The graph is read from the source with ast, so an import inside a function counts as much as one
at the top. `cai_core.cli` loads every module of `cai_core.commands` by listing the package; that
dynamic import is added as edges too.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "cai_core"
LAZY_REASON = "# lazy:"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _edges(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, int, str]]]:
    """module -> modules it imports; and every function-level cai_core import without a reason."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    unexplained = []
    for mod, path in mods.items():
        source = path.read_text()
        lines = source.splitlines()
        tree = ast.parse(source)
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "cai_core":
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    target = sub if sub in mods else node.module
                    if target in mods and target != mod:
                        edges[mod].add(target)
                if id(node) not in top:
                    above = lines[node.lineno - 2] if node.lineno >= 2 else ""
                    here = lines[node.lineno - 1]
                    if LAZY_REASON not in here and LAZY_REASON not in above:
                        unexplained.append((mod, node.lineno, node.module))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in mods and alias.name != mod:
                        edges[mod].add(alias.name)
    edges["cai_core.cli"] |= {m for m in mods if m.startswith("cai_core.commands.")}
    return edges, unexplained


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle_in_cai_core():
    edges, _ = _edges(_modules())
    assert _cycles(edges) == []


def test_cycle_detector_finds_a_cycle():
    """The detector itself: a two-module cycle and a three-module cycle are found, a chain is not."""
    edges = {"a": {"b"}, "b": {"a"}, "c": {"d"}, "d": {"e"}, "e": {"c"}, "f": {"a"}, "g": set()}
    assert sorted(_cycles(edges)) == [["a", "b"], ["c", "d", "e"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_function_level_imports_state_why():
    """A sibling import inside a function hides a dependency; it is allowed only to keep
    torch/trl/transformers out of a light path, said on the line (or the line above) as `# lazy: ...`."""
    _, unexplained = _edges(_modules())
    assert unexplained == []


def test_cli_and_commands_do_not_import_each_other():
    edges, _ = _edges(_modules())
    assert not any("cai_core.cli" in targets for mod, targets in edges.items() if mod.startswith("cai_core.commands"))


def test_at_most_a_dozen_shared_modules_at_the_top():
    """The shared modules are grouped (jobs/, data/, summaries/, store/): cai_core's top stays readable."""
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert len(top) <= 12, f"{len(top)} modules at cai_core's top: {top}"
