"""The driver is killed mid-suite; the same command again finishes only what is missing."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs

pytestmark = pytest.mark.slow

SUITE = """
name: killed
tasks:
  - {name: copy, params: {vocab: 5, min_len: 2, max_len: 6, n_valid: 32, n_test: 32}}
base:
  model: {embed: 8, hidden: 16}
  train: {steps: 400, batch_size: 16, eval_every: 50, log_every: 50}
axes:
  opt:
    adam: {}
    sgd: {train.optimizer: sgd, train.lr: 0.1}
seeds: [0, 1]
metrics: [exact_match]
"""


def finished_runs(db: Path) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("killed")
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id],
                              filter_string="attributes.status = 'FINISHED'")
    return [r for r in runs if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL]


def finished_trials_in_db(db: Path) -> int:
    """Count FINISHED trial runs with plain SQL: an MLflow client opened while the driver is
    still creating the database would race its schema migration."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            (count,) = conn.execute(
                "SELECT COUNT(*) FROM runs JOIN tags ON tags.run_uuid = runs.run_uuid "
                "WHERE runs.status = 'FINISHED' AND tags.key = ? AND tags.value = ?",
                (rs.TAG_ROLE, rs.ROLE_TRIAL)).fetchone()
        return count
    except sqlite3.Error:
        return 0


def launch(suite: Path, cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return subprocess.Popen([sys.executable, "-m", "lstm_harness", "run", str(suite),
                             "--no-progress"], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_rerun_after_driver_kill_finishes_only_what_is_missing(tmp_path):
    suite = tmp_path / "killed.yaml"
    suite.write_text(SUITE)
    db = tmp_path / "runs" / "mlflow.db"
    driver = launch(suite, tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and driver.poll() is None:
        if db.exists() and finished_trials_in_db(db):
            break
        time.sleep(0.5)
    assert driver.poll() is None, "the suite ended before it could be interrupted"
    os.killpg(driver.pid, signal.SIGKILL)  # the driver and everything it started
    driver.wait()
    before = {r.data.tags[rs.TAG_TRIAL_KEY]: r.info.run_id for r in finished_runs(db)}
    assert 1 <= len(before) < 4

    rerun = launch(suite, tmp_path)
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert f"{len(before)} of 4 trials finished in earlier launches" in err
    assert "resuming the interrupted launch in" in err  # Tuner.restore took over
    after = finished_runs(db)
    keys = [r.data.tags[rs.TAG_TRIAL_KEY] for r in after]
    assert sorted(keys) == sorted(set(keys)) and len(keys) == 4  # each trial once
    by_key = {r.data.tags[rs.TAG_TRIAL_KEY]: r.info.run_id for r in after}
    for key, run_id in before.items():  # finished trials were not run again
        assert by_key[key] == run_id
    table = (tmp_path / "results" / "killed" / "table.md").read_text()
    assert "| adam (baseline) |" in table and "| sgd |" in table
