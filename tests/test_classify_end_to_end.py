"""A tiny suite of the classification tasks through Ray Tune and MLflow: permuted pixel
sequences, the adding and the temporal-order problems; the table has their metrics, the
reference rows (majority, logistic regression, memoryless) and MC-dropout columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.cli import main

pytestmark = pytest.mark.slow

SUITE = """
name: classify_e2e
description: pixel sequences, adding and temporal order, tiny
tasks:
  - {name: pixel_sequence, label: pmnist, params: {permute: true}}
  - {name: adding, params: {length: 12, n_valid: 32, n_test: 32}}
  - {name: temporal_order, params: {length: 20, n_valid: 32, n_test: 32}}
base:
  model: {hidden: 8}
  train: {steps: 10, batch_size: 8, eval_every: 5, eval_batch_size: 64, mc_samples: 2}
axes:
  reg:
    none: {}
    zoneout: {model.dropout.zoneout: 0.2, model.dropout.output: 0.2}
seeds: [0]
metrics: [accuracy, error, accuracy_mc, mse, success]
table: {rows: [reg], baseline: none}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def test_classify_suite_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    suite = tmp_path / "classify_e2e.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--no-progress"]) == 0

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("classify_e2e")
    trials = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL]
    assert len(trials) == 6 and {r.info.status for r in trials} == {"FINISHED"}
    by_task = {}
    for run in trials:
        by_task.setdefault(run.data.tags[rs.TAG_TASK], []).append(run)
    pixels = by_task["pmnist"][0].data.metrics
    for key in ("test.accuracy", "test.error", "test.accuracy_mc", "valid.error",
                "reference.majority.accuracy", "reference.logistic_regression.accuracy"):
        assert key in pixels, key
    assert pixels["test.error"] == pytest.approx(1 - pixels["test.accuracy"])
    assert pixels["reference.logistic_regression.accuracy"] > 0.85
    history = client.get_metric_history(by_task["pmnist"][0].info.run_id, "valid.accuracy")
    assert sorted(p.step for p in history) == [5, 10]
    adding = by_task["adding"][0].data.metrics
    assert adding["reference.memoryless.mse"] == pytest.approx(1 / 6, abs=0.06)
    assert adding["test.success"] in (0.0, 1.0)
    assert "test.success" in by_task["temporal_order"][0].data.metrics

    table = (tmp_path / "results" / "classify_e2e" / "table.md").read_text()
    for header in ("pmnist · accuracy ↑", "pmnist · error ↓", "adding · mse ↓",
                   "temporal_order · success ↑", "pmnist · accuracy_mc ↑"):
        assert header in table, header
    for reference in ("majority", "logistic_regression", "memoryless"):
        assert reference in table, reference
    csv = pd.read_csv(tmp_path / "results" / "classify_e2e" / "table.csv")
    cell = csv[(csv["metric"] == "mse") & (csv["task"] == "adding") & (csv["row"] == "zoneout")]
    expected = next(r for r in by_task["adding"]
                    if r.data.tags[f"{rs.TAG_VARIANT_PREFIX}reg"] == "zoneout")
    assert cell["mean"].iloc[0] == pytest.approx(expected.data.metrics["test.mse"])
