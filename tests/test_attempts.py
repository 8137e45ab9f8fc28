"""A trial's attempts on its MLflow run: placement tags, the steps retries resumed from, and
runs of attempts that died before their first checkpoint."""

from __future__ import annotations

import socket
import sys

import pytest
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.attempts import close_lost_attempts, placement_tags, record_attempt, resumed_from
from lstm_harness.suite import load_suite
from lstm_harness.tracking import prepare_experiment
from lstm_harness.trial import Runtime, execute_trial


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One MLflow store for the module (creating one takes seconds); tests use distinct keys."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "tiny", folder / "mlartifacts")
    return MlflowClient(tracking_uri=uri), uri, experiment


def trial_run(client: MlflowClient, experiment: str, key: str, **tags: str) -> str:
    run = client.create_run(experiment, tags={
        rs.TAG_ROLE: rs.ROLE_TRIAL, rs.TAG_SUITE: "tiny", rs.TAG_TRIAL_KEY: key, **tags})
    return run.info.run_id


def test_resumed_from_appends_each_retry():
    assert resumed_from(None, 40) == "40"
    assert resumed_from("40", 80) == "40,80"


def test_placement_outside_ray_is_the_host_only(monkeypatch):
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    assert placement_tags() == {rs.TAG_HOST: socket.gethostname()}


def test_retry_appends_its_step_and_clears_the_old_failure(store):
    client, _, experiment = store
    run_id = trial_run(client, experiment, "r|copy|s0", **{rs.TAG_FAILURE: "worker died"})
    record_attempt(client, run_id, resumed_step=None)
    tags = client.get_run(run_id).data.tags
    assert tags[rs.TAG_HOST] == socket.gethostname()
    assert rs.TAG_RESUMED_FROM not in tags and tags[rs.TAG_FAILURE] == "worker died"
    record_attempt(client, run_id, resumed_step=80)
    record_attempt(client, run_id, resumed_step=160)
    tags = client.get_run(run_id).data.tags
    assert tags[rs.TAG_RESUMED_FROM] == "80,160"
    assert rs.TAG_FAILURE not in tags


def test_only_the_trials_other_running_runs_are_closed(store):
    client, _, experiment = store
    lost = trial_run(client, experiment, "a|copy|s0")
    done = trial_run(client, experiment, "a|copy|s0")
    client.set_terminated(done, "FINISHED")
    other = trial_run(client, experiment, "b|copy|s0")
    fresh = trial_run(client, experiment, "a|copy|s0")
    assert close_lost_attempts(client, experiment, "tiny", "a|copy|s0", fresh) == [lost]
    status = {r: client.get_run(r).info.status for r in (lost, done, other, fresh)}
    assert status == {lost: "FAILED", done: "FINISHED", other: "RUNNING", fresh: "RUNNING"}
    reason = client.get_run(lost).data.tags[rs.TAG_FAILURE]
    assert "before its first checkpoint" in reason and fresh in reason


def test_fresh_attempt_closes_the_run_of_one_lost_before_a_checkpoint(store, tiny_suite):
    client, uri, experiment = store
    trial = load_suite(tiny_suite(steps=4)).trials()[0]
    lost = trial_run(client, experiment, trial.key)  # its process died: left RUNNING
    execute_trial(trial, Runtime(uri, experiment, None))
    runs = client.search_runs([experiment],
                              filter_string=f"tags.`{rs.TAG_TRIAL_KEY}` = '{trial.key}'")
    status = {r.info.run_id: r.info.status for r in runs}
    assert status.pop(lost) == "FAILED"
    assert list(status.values()) == ["FINISHED"]  # the trial has one FINISHED run
    (finished,) = [r for r in runs if r.info.run_id != lost]
    assert finished.data.tags[rs.TAG_HOST] == socket.gethostname()
