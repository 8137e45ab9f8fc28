"""RUN.md names the custom layers' time loop (compiled C++ or the PyTorch fallback)."""

from __future__ import annotations

from pathlib import Path

from lstm_harness.models import compiled_loop
from lstm_harness.reporting.provenance import write_run_md


def test_run_md_names_the_time_loop(tmp_path: Path, monkeypatch) -> None:
    path = write_run_md(tmp_path, Path("s.yaml"), "lstm-harness run s.yaml", "1/1", "sqlite://",
                        commit="abc")
    line = next(x for x in path.read_text().splitlines() if x.startswith("- custom LSTM"))
    assert line == f"- custom LSTM time loop: {compiled_loop.backend()}"
    monkeypatch.setenv("LSTM_HARNESS_LOOP", "python")
    forced = write_run_md(tmp_path, Path("s.yaml"), "c", "1/1", "sqlite://", commit="abc")
    assert "- custom LSTM time loop: PyTorch fallback (LSTM_HARNESS_LOOP=python)" in \
        forced.read_text()
