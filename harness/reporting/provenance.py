"""RUN.md: how a results folder was made (command, commit, packages, machine)."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ["lstm-harness", "torch", "ray", "mlflow", "optuna", "datasets", "sacrebleu",
            "rouge-score", "pydantic", "pandas", "numpy", "scipy", "matplotlib"]


def git_commit(cwd: Path) -> str:
    """HEAD's commit, with ``-dirty`` when tracked files outside ``results/`` (the outputs
    themselves) differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              check=True).stdout.strip()
    try:
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".",
                    ":(exclude)results")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + ("-dirty" if dirty else "")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def machine() -> str:
    import torch

    mem = ""
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f", {pages / 2**30:.0f} GiB RAM"
    except (ValueError, OSError):
        pass
    gpu = (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
    return (f"{platform.platform()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} CPUs{mem}, {gpu}, Python {platform.python_version()}")


def time_loop() -> str:
    """Which time loop the custom LSTM layers run here (the compiled C++ loop or the PyTorch
    fallback, and why), as the trials on this machine choose it."""
    from lstm_harness.models.compiled_loop import backend

    return backend()


def write_run_md(out_dir: Path, suite_path: Path, command: str, summary: str,
                 tracking_uri: str, commit: str | None = None) -> Path:
    """RUN.md: how the results were made; ``commit`` defaults to HEAD now."""
    lines = [
        f"# How `{out_dir}` was made", "",
        f"- command: `{command}`",
        f"- suite: `{suite_path}`",
        f"- date (UTC): {datetime.now(timezone.utc):%Y-%m-%d %H:%M}",
        f"- git commit: `{commit or git_commit(Path.cwd())}`",
        f"- machine: {machine()}",
        f"- custom LSTM time loop: {time_loop()}",
        f"- MLflow store: `{tracking_uri}`",
        f"- outcome: {summary}", "",
        "## Package versions", "",
        *[f"- {name} {ver}" for name, ver in package_versions().items()], "",
    ]
    path = out_dir / "RUN.md"
    path.write_text("\n".join(lines))
    return path
