"""The test suite's own layout: shared code lives in tests/helpers.py and tests/browser/helpers.py,
shared fixtures in the conftest files, and no test module imports another test module or a conftest
(pytest loads conftest files itself; importing one a second time makes a second copy of its state)."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SHARED_FIXTURES = {"ws", "workspace", "store", "tiny_model_dir", "tiny_backend"}


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            out.append((node.lineno, base))
            if not node.module:  # `from . import test_x`
                out += [(node.lineno, f"{base}{alias.name}") for alias in node.names]
    return out


def _is_test_or_conftest(module: str) -> bool:
    last = module.rstrip(".").split(".")[-1]
    return last == "conftest" or last.startswith("test_")


def _is_bare_helpers(module: str) -> bool:
    """`helpers` / `browser.helpers` without the `tests.` prefix load a second copy of the module."""
    return module in ("helpers", "browser.helpers", ".helpers")


def test_no_test_module_imports_another_test_module_or_a_conftest():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        for lineno, module in _imported_modules(ast.parse(path.read_text())):
            if _is_test_or_conftest(module) or _is_bare_helpers(module):
                offenders.append(f"{path.relative_to(TESTS)}:{lineno} imports {module}")
    assert not offenders, "import shared code as tests.helpers / tests.browser.helpers instead:\n" + "\n".join(offenders)


def test_the_checker_sees_each_kind_of_test_import():
    source = ("from conftest import run_cli\nfrom tests.conftest import ROOT\nfrom .conftest import snap\n"
              "from test_reports import XSS\nimport tests.test_stats\nfrom . import test_x\nfrom tests.helpers import ROOT\n"
              "from helpers import ROOT\nfrom tests.browser.helpers import snap\n")
    found = [m for _, m in _imported_modules(ast.parse(source)) if _is_test_or_conftest(m) or _is_bare_helpers(m)]
    assert found == ["conftest", "tests.conftest", ".conftest", "test_reports", "tests.test_stats", ".test_x", "helpers"]


def test_shared_fixtures_are_not_copied_into_test_modules():
    copies = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name in SHARED_FIXTURES and any(
                    "fixture" in ast.unparse(d) for d in node.decorator_list):
                copies.append(f"{path.relative_to(TESTS)}:{node.lineno} defines fixture {node.name}")
    assert not copies, "use the one in tests/conftest.py:\n" + "\n".join(copies)
