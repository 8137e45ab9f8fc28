"""The installed distribution has one import root, ``lstm_harness``: the folders harness/ and
tasks/ are mapped onto ``lstm_harness`` and ``lstm_harness.tasks``, and neither ``harness`` nor
``tasks`` is a top-level name a wheel install adds (they could collide with other distributions
of those names or be shadowed by a user's own ``tasks.py``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import importlib.util, json, sys
from importlib.metadata import entry_points
found = {name: importlib.util.find_spec(name) is not None
         for name in ("harness", "tasks", "lstm_harness")}
eps = sorted(f"{e.name}={e.value}" for e in entry_points(group="lstm_harness.tasks"))
scripts = [e.value for e in entry_points(group="console_scripts") if e.name == "lstm-harness"]
print(json.dumps({"found": found, "tasks": eps, "scripts": scripts}))
"""


def declared_tasks() -> dict[str, str]:
    """The task entry points pyproject.toml declares (name -> module:Class)."""
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."lstm_harness.tasks"]', 1)[1].split("\n[", 1)[0]
    return dict(re.findall(r'^(\w+) = "([^"]+)"', section, flags=re.M))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(out), str(ROOT)],
                   check=True, capture_output=True, text=True)
    (path,) = out.glob("lstm_harness-*.whl")
    return path


def test_wheel_holds_only_the_lstm_harness_root(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    roots = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert roots == {"lstm_harness"}
    for module in ("lstm_harness/cli.py", "lstm_harness/models/layers.py",
                   "lstm_harness/training/loop.py", "lstm_harness/diagnostics/monitor.py",
                   "lstm_harness/tasks/base.py", "lstm_harness/tasks/copy.py",
                   "lstm_harness/models/csrc/lstm_loop.cpp",  # the compiled loop's sources
                   "lstm_harness/models/csrc/lstm_loop_kernels.h"):
        assert module in names


def test_clean_venv_imports_lstm_harness_not_harness_or_tasks(wheel: Path,
                                                              tmp_path: Path) -> None:
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    # --no-deps: the probe reads metadata and module locations only (no torch needed)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(wheel)],
                   check=True, capture_output=True, text=True)
    probe = subprocess.run([str(python), "-c", PROBE], check=True, capture_output=True,
                           text=True, cwd=tmp_path)
    result = json.loads(probe.stdout)
    assert result["found"] == {"harness": False, "tasks": False, "lstm_harness": True}
    expected = sorted(f"{k}={v}" for k, v in declared_tasks().items())
    assert result["tasks"] == expected
    assert "copy=lstm_harness.tasks.copy:CopyTask" in result["tasks"]
    assert all(e.split("=")[1].startswith("lstm_harness.tasks.") for e in result["tasks"])
    assert result["scripts"] == ["lstm_harness.cli:main"]
