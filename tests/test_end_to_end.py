"""A tiny suite through Ray Tune and MLflow, then resumed: nothing finished runs twice."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def trial_runs(db: Path, suite: str):
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(suite)
    runs = client.search_runs([experiment.experiment_id])
    return client, [r for r in runs if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL], runs


def test_suite_runs_end_to_end_and_resumes(tiny_suite, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    suite = tiny_suite("e2e", steps=40)
    assert main(["run", str(suite), "--no-progress"]) == 0

    db = tmp_path / "runs" / "mlflow.db"
    client, trials, runs = trial_runs(db, "e2e")
    assert len(trials) == 4
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert {r.data.tags[rs.TAG_TRIAL_KEY] for r in trials} == {
        "adam|copy|s0", "adam|copy|s1", "sgd|copy|s0", "sgd|copy|s1"}
    launch = [r for r in runs if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_LAUNCH]
    assert len(launch) == 1 and launch[0].info.status == "FINISHED"
    sgd = next(r for r in trials if r.data.tags[rs.TAG_TRIAL_KEY] == "sgd|copy|s1")
    assert sgd.data.tags[rs.TAG_PARENT] == launch[0].info.run_id
    assert sgd.data.tags[f"{rs.TAG_VARIANT_PREFIX}opt"] == "sgd"
    assert sgd.data.tags[rs.TAG_SEED] == "1" and sgd.data.tags[rs.TAG_TASK] == "copy"
    assert sgd.data.params["train.optimizer"] == "sgd" and sgd.data.params["train.lr"] == "0.1"
    assert sgd.data.params["model.hidden"] == "16"
    for key in ["test.exact_match", "test.token_accuracy_tf", rs.COST_PARAMS, rs.COST_WALL,
                rs.COST_TOKENS_PER_S, rs.COST_PEAK_MEM]:
        assert key in sgd.data.metrics, key
    history = client.get_metric_history(sgd.info.run_id, "valid.token_accuracy")
    assert sorted(p.step for p in history) == [20, 40]
    artifacts = [a.path for a in client.list_artifacts(sgd.info.run_id)]
    assert "trial_config.json" in artifacts

    out = tmp_path / "results" / "e2e"
    table = (out / "table.md").read_text()
    assert "| adam (baseline) |" in table and "| sgd |" in table
    assert "copy · exact_match ↑" in table
    csv = pd.read_csv(out / "table.csv")
    acc = csv[(csv["metric"] == "token_accuracy") & (csv["row"] == "sgd")]
    expected = pd.Series([r.data.metrics["test.token_accuracy"] for r in trials
                          if r.data.tags[f"{rs.TAG_VARIANT_PREFIX}opt"] == "sgd"])
    assert acc["mean"].iloc[0] == pytest.approx(expected.mean())
    assert acc["n"].iloc[0] == 2
    assert "\\toprule" in (out / "table.tex").read_text()
    assert (out / "figures" / "curve_exact_match.png").stat().st_size > 1000
    run_md = (out / "RUN.md").read_text()
    assert "lstm-harness run" in run_md and "torch" in run_md

    # the same command again: every trial is finished, nothing runs
    assert main(["run", str(suite), "--no-progress"]) == 0
    _, trials_again, _ = trial_runs(db, "e2e")
    assert len(trials_again) == 4

    # one more seed: only the two new trials run
    suite.write_text(suite.read_text().replace("seeds: [0, 1]", "seeds: [0, 1, 2]"))
    assert main(["run", str(suite), "--no-progress"]) == 0
    _, trials_after, _ = trial_runs(db, "e2e")
    keys = sorted(r.data.tags[rs.TAG_TRIAL_KEY] for r in trials_after)
    assert len(keys) == 6 and len(set(keys)) == 6
    assert {"adam|copy|s2", "sgd|copy|s2"} <= set(keys)
    old = {r.info.run_id for r in trials}
    assert old <= {r.info.run_id for r in trials_after}
