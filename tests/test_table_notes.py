"""The grad anomalies note names the suite's own ``monitor.grad_k``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml

from lstm_harness import run_schema as rs
from lstm_harness.reporting.build import build_table
from lstm_harness.reporting.results import grad_k, layout_for
from lstm_harness.reporting.table import TableLayout
from lstm_harness.suite import load_suite


def runs() -> pd.DataFrame:
    return pd.DataFrame([{"run_id": f"r{seed}", "trial_key": f"a|copy|s{seed}", "task": "copy",
                          "seed": seed, "variant.clip": "a", "end_time": pd.Timestamp(0),
                          "metrics.test.exact_match": 0.5 + seed / 10,
                          "metrics." + rs.DIAG_GRAD_ANOMALIES: 2.0} for seed in range(2)])


def note(k: list[float] | None) -> str:
    extra = {} if k is None else {"grad_k": k}
    layout = TableLayout(axes={"clip": ["a"]}, tasks=["copy"], metrics=["exact_match"],
                         directions={"exact_match": "max"}, **extra)
    return build_table(runs(), layout).to_markdown()


def test_default_note_says_three_standard_deviations() -> None:
    assert "by more than 3 running standard deviations" in note(None)


def test_note_uses_the_configured_k() -> None:
    assert "by more than 2.5 running standard deviations" in note([2.5])
    assert "by more than 2 or 4 running standard deviations" in note([2.0, 4.0])


def write_suite(tmp_path: Path, monitor: dict, axes: dict) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({
        "name": "s", "tasks": [{"name": "copy", "params": {"min_len": 2, "max_len": 4}}],
        "base": {"train": {"steps": 4}, "monitor": monitor}, "axes": axes, "seeds": [0],
        "metrics": ["exact_match"]}, sort_keys=False))
    return path


def test_layout_reads_grad_k_from_the_trial_configs(tmp_path) -> None:
    axes = {"k": {"base": {}, "loose": {"monitor.grad_k": 5.0}, "off": {
        "monitor.grad_k": 9.0, "monitor.grad_anomaly": False}}}
    suite = load_suite(write_suite(tmp_path, {"grad_k": 2.0}, axes))
    assert grad_k(suite) == [2.0, 5.0]
    assert layout_for(suite).grad_k == [2.0, 5.0]
    off = load_suite(write_suite(tmp_path, {"grad_anomaly": False}, {"k": {"a": {}}}))
    assert grad_k(off) == [3.0]


def test_a_steps_to_target_column_explains_its_empty_cells() -> None:
    frame = runs()
    frame["metrics.test.steps_to_target"] = [300.0, None]  # seed 1 never reached the target
    layout = TableLayout(axes={"clip": ["a"]}, tasks=["copy"],
                         metrics=["exact_match", rs.STEPS_TO_TARGET],
                         directions={"exact_match": "max", rs.STEPS_TO_TARGET: "min"})
    text = build_table(frame, layout).to_markdown()
    assert "(in steps_to_target columns: no seed reached the target; n counts the seeds " \
           "that did)" in text
    assert "no seed reached the target" not in note(None)
