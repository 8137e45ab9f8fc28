"""Arrows only downward: training/ and diagnostics/ import the config layer (and training the
monitors) for annotations only, under TYPE_CHECKING, never at run time."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "harness"
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
