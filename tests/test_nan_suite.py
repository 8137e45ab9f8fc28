"""A trial that hits NaN fails with its reason and step; the rest of the suite completes."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.cli import main

pytestmark = pytest.mark.slow

SUITE = """
name: nan-suite
tasks:
  - {name: copy, params: {min_len: 3, max_len: 6, n_valid: 32, n_test: 32}}
base:
  model: {embed: 8, hidden: 16, layers: 1}
  train: {steps: 8, batch_size: 8, eval_every: 4, log_every: 2}
  monitor: {gates: true, every: 4}
axes:
  fault:
    none: {}
    nan: {monitor.inject_nan_at: 5}
seeds: [0]
metrics: [exact_match]
table: {rows: [fault], baseline: none}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def test_nan_trial_fails_with_reason_and_the_suite_completes(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    suite = tmp_path / "nan.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--no-progress", "--max-failures", "0"]) == 1
    err = capsys.readouterr()
    assert "FAILED nan|copy|s0" in err.out + err.err
    assert "loss is nan at step 5" in err.out + err.err

    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("nan-suite")
    trials = {r.data.tags[rs.TAG_TRIAL_KEY]: r
              for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL}
    assert trials["none|copy|s0"].info.status == "FINISHED"
    assert trials["nan|copy|s0"].info.status == "FAILED"
    assert "NonFiniteError: loss is nan at step 5" in trials["nan|copy|s0"].data.tags[
        rs.TAG_FAILURE]

    table = (tmp_path / "results" / "nan-suite" / "table.md").read_text()
    assert "| nan | — (1 failed) |" in table
    assert "loss is nan at step 5" in table

    assert main(["report", str(suite)]) == 0
    report = (tmp_path / "results" / "nan-suite" / "report.html").read_text()
    assert "1 of 2 trials finished, 1 failed" in report
    assert ('<li class="failed">✗ failed trial <code>nan|copy|s0</code> (copy, seed 0): '
            "NonFiniteError: loss is nan at step 5</li>") in report
