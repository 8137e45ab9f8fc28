"""Safety properties of the harness: servers on 127.0.0.1 unless asked, checkpoints and weights
loaded with ``weights_only=True``, YAML through a safe loader, task plugins only from installed
entry points (a suite cannot make the harness import a module of its choosing)."""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lstm_harness import cli
from lstm_harness.cli import EXIT_BAD_INPUT, EXIT_OK, main
from lstm_harness.registry import TaskLookupError, installed_task_names, load_task_class

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("harness", "tasks")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def sources() -> list[Path]:
    files = [p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))]
    assert len(files) > 20  # the scan found the packages
    return files


def calls(path: Path, module: str, names: set[str]) -> list[ast.Call]:
    """Calls of ``module.<name>`` (for a name in ``names``) in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in names and isinstance(node.func.value, ast.Name)
                and node.func.value.id == module):
            found.append(node)
    return found


def where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(ROOT)}:{node.lineno}"


# ------------------------------------------------------------------ loading files


def test_every_torch_load_is_weights_only() -> None:
    """A pickle can run code: checkpoints and model weights are read with weights_only=True."""
    seen, unsafe = [], []
    for path in sources():
        for call in calls(path, "torch", {"load"}):
            seen.append(where(path, call))
            flag = next((k.value for k in call.keywords if k.arg == "weights_only"), None)
            if not (isinstance(flag, ast.Constant) and flag.value is True):
                unsafe.append(where(path, call))
    assert seen, "no torch.load found: the scan is broken"
    assert unsafe == [], f"torch.load without weights_only=True: {unsafe}"


def test_yaml_is_loaded_with_a_safe_loader() -> None:
    """No yaml.unsafe_load / full_load, and every yaml.load names a SafeLoader subclass."""
    seen, unsafe = [], []
    for path in sources():
        for call in calls(path, "yaml", {"unsafe_load", "full_load", "unsafe_load_all",
                                         "full_load_all"}):
            unsafe.append(where(path, call))
        for call in calls(path, "yaml", {"load", "load_all"}):
            seen.append(where(path, call))
            loader = next((k.value for k in call.keywords if k.arg == "Loader"), None)
            if loader is None and len(call.args) > 1:
                loader = call.args[1]
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            cls = None
            if isinstance(loader, ast.Name):
                cls = getattr(importlib.import_module(module), loader.id, None)
            elif isinstance(loader, ast.Attribute) and isinstance(loader.value, ast.Name):
                cls = getattr(yaml, loader.attr, None) if loader.value.id == "yaml" else None
            if not (isinstance(cls, type) and issubclass(cls, yaml.SafeLoader)):
                unsafe.append(where(path, call))
    assert seen, "no yaml.load found: the scan is broken"
    assert unsafe == [], f"YAML read without a safe loader: {unsafe}"


def test_suite_yaml_tags_cannot_build_objects(tmp_path: Path, capsys) -> None:
    path = tmp_path / "tagged.yaml"
    path.write_text("name: !!python/object/apply:os.system ['echo pwned']\n"
                    "tasks: [{name: copy}]\nmetrics: [exact_match]\n")
    assert main(["validate", str(path)]) == EXIT_BAD_INPUT
    err = ANSI.sub("", capsys.readouterr().err)
    assert err.startswith(f"error: {path}: line 1, column 7: invalid YAML: could not determine "
                          "a constructor for the tag 'tag:yaml.org,2002:python/object/apply:"
                          "os.system'"), err


# ------------------------------------------------------------------ plugins


PROBE = "harness_import_probe"


@pytest.fixture
def probe_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that leaves a marker file when it is imported."""
    marker = tmp_path / "imported"
    (tmp_path / f"{PROBE}.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('yes')\n"
        "from lstm_harness.tasks.copy import CopyTask as Task\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield marker
    sys.modules.pop(PROBE, None)


@pytest.mark.parametrize("name", ["os.system", "os:system", f"{PROBE}", f"{PROBE}:Task",
                                  f"{PROBE}.Task", "tasks.copy:CopyTask", "tasks.copy",
                                  "lstm_harness.tasks.copy:CopyTask"])
def test_task_names_are_entry_points_not_import_paths(name: str, probe_module: Path) -> None:
    with pytest.raises(TaskLookupError) as err:
        load_task_class(name)
    assert str(err.value).startswith(f"unknown task '{name}'; installed tasks: ")
    assert "copy" in str(err.value).split("installed tasks: ")[1].split(", ")
    assert not probe_module.exists() and PROBE not in sys.modules


def test_suite_naming_a_module_is_refused_unimported(tmp_path: Path, probe_module: Path,
                                                     capsys) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(f"name: p\ntasks: [{{name: os.system}}, {{name: '{PROBE}:Task'}}]\n"
                    "metrics: [exact_match]\n")
    assert main(["validate", str(path)]) == EXIT_BAD_INPUT
    lines = ANSI.sub("", capsys.readouterr().err).strip().splitlines()
    installed = ", ".join(installed_task_names())
    assert lines == [
        f"error: {path}: tasks[0].name: unknown task 'os.system'; installed tasks: {installed}",
        f"error: {path}: tasks[1].name: unknown task '{PROBE}:Task'; installed tasks: "
        f"{installed}"]
    assert not probe_module.exists() and PROBE not in sys.modules


# ------------------------------------------------------------------ servers


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ui_listens_on_127_0_0_1_by_default(tmp_path: Path, capsys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    launched: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda argv: launched.append(argv) or 0)
    port = free_port()
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "mlflow.db").write_bytes(b"")
    assert main(["ui", "--port", str(port), "--runs-dir", str(tmp_path / "runs")]) == EXIT_OK
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    assert launched == [[sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
                         "--host", "127.0.0.1", "--port", str(port)]]
    err = ANSI.sub("", capsys.readouterr().err)
    assert "warning" not in err and f"MLflow UI on http://127.0.0.1:{port}" in err


def test_ui_on_another_host_warns(tmp_path: Path, capsys,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    launched: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda argv: launched.append(argv) or 0)
    port = free_port()
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert main(["ui", "--host", "0.0.0.0", "--port", str(port),
                 "--runs-dir", str(tmp_path)]) == EXIT_OK
    assert launched[0][-4:] == ["--host", "0.0.0.0", "--port", str(port)]
    err = ANSI.sub("", capsys.readouterr().err)
    assert "warning: the MLflow UI listens on 0.0.0.0: other machines can reach it, and it " \
           "has no login" in err


def test_ui_command_is_this_interpreters_mlflow() -> None:
    argv = cli.ui_command("sqlite:////x/mlflow.db", "127.0.0.1", 5000)
    assert argv[:4] == [sys.executable, "-m", "mlflow", "ui"]
    assert subprocess.run([*argv[:4], "--help"], capture_output=True, timeout=120).returncode == 0

