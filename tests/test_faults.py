"""Faults on a three-node Ray cluster on this machine: a trial's process is SIGKILLed, or a
worker node is removed, while the trial trains. Tune retries it from its last checkpoint
(``--max-failures``), the retry reopens the trial's MLflow run, and the suite completes with one
FINISHED run per trial and every table row once."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest
from local_cluster import (
    Driver,
    checkpointed_trial_dirs,
    local_cluster,
    node_of,
    trainable_pids,
    trial_runs,
)
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs

pytestmark = pytest.mark.slow

# a checkpoint at every evaluation: 700 steps still to train when the first one is written
STEPS, EVAL_EVERY, LOG_EVERY = 800, 100, 50
SUITE = """
name: {name}
tasks:
  - {{name: copy, params: {{vocab: 5, min_len: 2, max_len: 4, n_valid: 16, n_test: 16}}}}
base:
  model: {{embed: 8, hidden: 16}}
  train: {{steps: {steps}, batch_size: 8, eval_every: {eval_every}, log_every: {log_every}}}
axes:
  opt:
    adam: {{}}
    sgd: {{train.optimizer: sgd, train.lr: 0.1}}
seeds: [0]
metrics: [exact_match]
"""
KEYS = ("adam|copy|s0", "sgd|copy|s0")


@pytest.fixture(scope="module")
def cluster():
    with local_cluster(workers=2) as running:
        yield running


def start_suite(tmp_path: Path, name: str, cluster) -> tuple[Driver, Path]:
    suite = tmp_path / f"{name}.yaml"
    suite.write_text(SUITE.format(name=name, steps=STEPS, eval_every=EVAL_EVERY,
                                  log_every=LOG_EVERY))
    driver = Driver(suite, cluster.address, "--runs-dir", str(tmp_path / "runs"),
                    "--results-dir", str(tmp_path / "results"), "--max-failures", "2")
    driver.start()
    return driver, tmp_path / "runs"


def dir_prefix(key: str) -> str:
    """How a trial's folder name starts (``harness.runner.dirname_for``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)


def first_checkpointed_trial(runs_dir: Path, suite: str, driver: Driver,
                             timeout: float = 120) -> tuple[str, str]:
    """Wait until a trial has written a checkpoint; its key and the Ray node it runs on."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.is_alive():
        for folder in checkpointed_trial_dirs(runs_dir / "ray"):
            key = next(k for k in KEYS if folder.name.startswith(dir_prefix(k)))
            run = next(r for r in trial_runs(runs_dir / "mlflow.db", suite)
                       if r.data.tags[rs.TAG_TRIAL_KEY] == key)
            return key, run.data.tags[rs.TAG_NODE]
        time.sleep(0.2)
    raise AssertionError("no trial wrote a checkpoint while the suite ran")


def assert_completed_once(tmp_path: Path, suite: str, driver: Driver, retried: str) -> dict:
    """Exit 0, one run per trial and it FINISHED, the retried trial resumed mid-training,
    every table row once; returns trial key -> run."""
    driver.join(timeout=240)
    assert not driver.is_alive(), "the suite did not finish"
    assert driver.code == 0
    runs = trial_runs(tmp_path / "runs" / "mlflow.db", suite)
    assert sorted(r.data.tags[rs.TAG_TRIAL_KEY] for r in runs) == sorted(KEYS)  # no duplicate
    assert [r.info.status for r in runs] == ["FINISHED"] * len(KEYS)
    by_key = {r.data.tags[rs.TAG_TRIAL_KEY]: r for r in runs}
    resumed = [int(s) for s in by_key[retried].data.tags[rs.TAG_RESUMED_FROM].split(",")]
    assert len(resumed) == 1 and EVAL_EVERY <= resumed[0] < STEPS  # a checkpoint, not step 0
    assert resumed[0] % EVAL_EVERY == 0
    # steps up to the checkpoint were trained (and logged) once: the retry did not start over
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    history = client.get_metric_history(by_key[retried].info.run_id, rs.TRAIN_LOSS)
    logged = [m.step for m in history if m.step % LOG_EVERY == 0]  # (anomalous steps too)
    assert sorted(set(logged)) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert all(logged.count(step) == 1 for step in range(LOG_EVERY, resumed[0] + 1, LOG_EVERY))
    assert rs.TAG_FAILURE not in by_key[retried].data.tags
    (other,) = set(KEYS) - {retried}
    assert rs.TAG_RESUMED_FROM not in by_key[other].data.tags
    table = (tmp_path / "results" / suite / "table.md").read_text()
    assert table.count("| adam (baseline) |") == 1 and table.count("| sgd |") == 1
    return by_key


def test_killed_trial_process_resumes_from_its_checkpoint(tmp_path, cluster):
    driver, runs_dir = start_suite(tmp_path, "killed-trial", cluster)
    key, node_id = first_checkpointed_trial(runs_dir, "killed-trial", driver)
    (pid,) = trainable_pids(node_of(cluster, node_id))
    os.kill(pid, signal.SIGKILL)
    by_key = assert_completed_once(tmp_path, "killed-trial", driver, retried=key)
    assert {r.data.tags[rs.TAG_NODE] for r in by_key.values()} <= {
        n.node_id for n in cluster.worker_nodes}


def test_removed_node_trial_is_rescheduled_and_finishes(tmp_path, cluster):
    driver, runs_dir = start_suite(tmp_path, "lost-node", cluster)
    key, node_id = first_checkpointed_trial(runs_dir, "lost-node", driver)
    cluster.remove_node(node_of(cluster, node_id), allow_graceful=False)
    survivors = {n.node_id for n in cluster.worker_nodes}
    try:
        by_key = assert_completed_once(tmp_path, "lost-node", driver, retried=key)
        assert by_key[key].data.tags[rs.TAG_NODE] in survivors  # moved off the lost node
    finally:
        cluster.add_node(num_cpus=1)  # a replacement, for tests that come after
