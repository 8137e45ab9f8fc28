"""Arrows only downward: training/ and diagnostics/ import the config layer (and training the
monitors) for annotations only, under TYPE_CHECKING, never at run time; and nothing the monitors
import reaches the config layer at run time (config.py composes ``MonitorConfig`` from
diagnostics/monitor.py: a runtime import back would be a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HARNESS = ROOT / "harness"
UPWARD = {  # package -> modules it may name only under TYPE_CHECKING
    "training": ("lstm_harness.config", "lstm_harness.diagnostics", "lstm_harness.trial",
                 "lstm_harness.suite", "lstm_harness.reporting"),
    "diagnostics": ("lstm_harness.config", "lstm_harness.trial", "lstm_harness.suite",
                    "lstm_harness.reporting"),
}


def runtime_imports(path: Path) -> list[str]:
    """Modules a file imports outside ``if TYPE_CHECKING:`` blocks."""
    tree = ast.parse(path.read_text())
    guarded: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            guarded |= {id(n) for child in node.body for n in ast.walk(child)}
    names = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


@pytest.mark.parametrize("package", sorted(UPWARD))
def test_no_upward_runtime_imports(package: str) -> None:
    bad = [f"{path.name}: {name}" for path in sorted((HARNESS / package).glob("*.py"))
           for name in runtime_imports(path)
           if name.startswith(UPWARD[package])
           and not (package == "diagnostics" and name.startswith("lstm_harness.diagnostics"))]
    assert not bad, bad


def test_the_scan_sees_runtime_imports(tmp_path: Path) -> None:
    file = tmp_path / "m.py"
    file.write_text("from typing import TYPE_CHECKING\nimport os\n"
                    "if TYPE_CHECKING:\n    from lstm_harness.config import TrainConfig\n"
                    "from lstm_harness.config import ModelConfig\n")
    assert runtime_imports(file) == ["typing", "os", "lstm_harness.config"]


def module_file(name: str) -> Path | None:
    """The file of a module of this project (``lstm_harness.tasks`` is tasks/), or None."""
    for prefix, folder in (("lstm_harness.tasks", ROOT / "tasks"), ("lstm_harness", HARNESS)):
        if name == prefix or name.startswith(prefix + "."):
            path = folder.joinpath(*name[len(prefix):].split(".")[1:])
            for candidate in (path.with_suffix(".py"), path / "__init__.py"):
                if candidate.is_file():
                    return candidate
            return None
    return None


def runtime_closure(name: str) -> set[str]:
    """Every project module that importing ``name`` loads at import time (TYPE_CHECKING blocks
    and imports inside functions left out), ``from package import module`` included."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        current = todo.pop()
        path = module_file(current)
        if current in seen or path is None:
            continue
        seen.add(current)
        tree = ast.parse(path.read_text())
        guarded = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
                   or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                   for child in node.body for n in ast.walk(child)}
        for node in ast.walk(tree):
            if id(node) in guarded:
                continue
            if isinstance(node, ast.ImportFrom) and node.module:
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
        parent = current.rpartition(".")[0]
        if parent:
            todo.append(parent)
    return seen


def test_the_monitors_do_not_reach_the_config_layer():
    closure = runtime_closure("lstm_harness.diagnostics.monitor")
    assert {"lstm_harness.diagnostics.gates", "lstm_harness.models.stack",
            "lstm_harness.tasks.base"} <= closure  # the scan follows the imports
    assert "lstm_harness.config" not in closure, sorted(closure)
    assert "lstm_harness.config" in runtime_closure("lstm_harness.models.factory")
    assert "lstm_harness.diagnostics.monitor" in runtime_closure("lstm_harness.config")
