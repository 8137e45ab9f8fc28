"""Steps to a target validation value (``train.steps_to_target``; Ba et al. 2016)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lstm_harness import run_schema as rs
from lstm_harness.suite import SuiteError, load_suite
from lstm_harness.training.target import TargetConfig, target_reached
from lstm_harness.trial import Runtime, execute_trial

RUNTIME = Runtime(tracking_uri=None, experiment_id=None, parent_run_id=None)


def test_reached_by_direction() -> None:
    assert target_reached(0.9, 0.9, "max") and target_reached(0.95, 0.9, "max")
    assert not target_reached(0.89, 0.9, "max")
    assert target_reached(1.5, 1.5, "min") and not target_reached(1.51, 1.5, "min")
    assert TargetConfig(metric="valid.loss", value=1.0).metric == "loss"


def suite(tmp_path: Path, target: dict) -> Path:
    file = tmp_path / "target.yaml"
    file.write_text(f"""
name: target
tasks:
  - {{name: copy, params: {{vocab: 4, min_len: 2, max_len: 3, n_valid: 16, n_test: 16}}}}
base:
  model: {{embed: 8, hidden: 8}}
  train: {{steps: 6, batch_size: 8, eval_every: 2, steps_to_target: {target}}}
seeds: [0]
metrics: [exact_match]
""")
    return file


def run(tmp_path: Path, target: dict) -> dict[str, float]:
    (trial,) = load_suite(suite(tmp_path, target)).trials()
    return execute_trial(trial, RUNTIME)


def test_first_evaluation_step_that_reaches_the_target(tmp_path: Path) -> None:
    final = run(tmp_path, {"metric": "token_accuracy", "value": 0.0})
    assert final["test.steps_to_target"] == 2.0 and final[rs.COST_TARGET_REACHED] == 1.0
    final = run(tmp_path, {"metric": "valid.loss", "value": 1.0e9})
    assert final["test.steps_to_target"] == 2.0


def test_a_target_never_reached(tmp_path: Path) -> None:
    final = run(tmp_path, {"metric": "exact_match", "value": 2.0})
    assert final[rs.COST_TARGET_REACHED] == 0.0
    assert "test.steps_to_target" not in final


def test_without_a_target_nothing_is_reported(tmp_path: Path) -> None:
    file = suite(tmp_path, {"metric": "loss", "value": 1.0})
    file.write_text(file.read_text().replace(", steps_to_target: {'metric': 'loss', "
                                             "'value': 1.0}", ""))
    (trial,) = load_suite(file).trials()
    final = execute_trial(trial, RUNTIME)
    assert rs.COST_TARGET_REACHED not in final and "test.steps_to_target" not in final


def test_an_unknown_target_metric_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SuiteError, match="train.steps_to_target.metric: task 'copy' does "
                                         "not report 'bleu' on the validation split; it "
                                         "reports: loss, exact_match"):
        load_suite(suite(tmp_path, {"metric": "bleu", "value": 1.0}))


def test_steps_to_target_is_a_metric_column_of_suites_that_set_a_target(tmp_path: Path) -> None:
    file = suite(tmp_path, {"metric": "loss", "value": 1.0})
    file.write_text(file.read_text().replace("metrics: [exact_match]",
                                             "metrics: [exact_match, steps_to_target]"))
    assert load_suite(file).directions()["steps_to_target"] == "min"
    text = file.read_text().replace(", steps_to_target: {'metric': 'loss', 'value': 1.0}", "")
    file.write_text(text)
    with pytest.raises(SuiteError, match="unknown metric 'steps_to_target'"):
        load_suite(file)


def test_mc_readings_are_not_validation_metrics(tmp_path: Path) -> None:
    file = tmp_path / "pixels.yaml"
    file.write_text("""
name: pixels
tasks:
  - {name: pixel_sequence, params: {n_valid: 50, n_test: 50}}
base:
  model: {hidden: 8}
  train: {steps: 2, batch_size: 4, eval_every: 2, steps_to_target: {metric: accuracy_mc,
                                                                     value: 0.5}}
seeds: [0]
metrics: [accuracy]
""")
    with pytest.raises(SuiteError, match="does not report 'accuracy_mc' on the validation "
                                         "split; it reports: loss, accuracy, error"):
        load_suite(file)
