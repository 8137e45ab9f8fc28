"""A suite on a three-node Ray cluster on this machine: its trials spread over the two worker
nodes (the head offers no CPUs), each trial run records the node it ran on."""

from __future__ import annotations

import socket

import pytest
from local_cluster import local_cluster, trial_runs

from lstm_harness import run_schema as rs
from lstm_harness.cli import main

pytestmark = pytest.mark.slow

SUITE = """
name: spread
tasks:
  - {name: copy, params: {vocab: 5, min_len: 2, max_len: 4, n_valid: 16, n_test: 16}}
base:
  model: {embed: 8, hidden: 16}
  train: {steps: 30, batch_size: 8, eval_every: 15, log_every: 15}
axes:
  opt:
    adam: {}
    sgd: {train.optimizer: sgd, train.lr: 0.1}
seeds: [0, 1]
metrics: [exact_match]
"""


def test_trials_spread_over_the_worker_nodes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    suite = tmp_path / "spread.yaml"
    suite.write_text(SUITE)
    with local_cluster(workers=2) as cluster:
        workers = {n.node_id for n in cluster.worker_nodes}
        head = cluster.head_node.node_id
        assert main(["run", str(suite), "--no-progress", "--address", cluster.address]) == 0

    runs = trial_runs(tmp_path / "runs" / "mlflow.db", "spread")
    assert sorted(r.data.tags[rs.TAG_TRIAL_KEY] for r in runs) == sorted(
        f"{opt}|copy|s{seed}" for opt in ("adam", "sgd") for seed in (0, 1))
    assert all(r.info.status == "FINISHED" for r in runs)
    nodes = [r.data.tags[rs.TAG_NODE] for r in runs]
    assert set(nodes) == workers  # both workers ran trials; the head (0 CPUs) none
    assert head not in nodes
    assert {r.data.tags[rs.TAG_HOST] for r in runs} == {socket.gethostname()}
    assert all(rs.TAG_RESUMED_FROM not in r.data.tags for r in runs)  # nothing was retried
    table = (tmp_path / "results" / "spread" / "table.md").read_text()
    assert table.count("| adam (baseline) |") == 1 and table.count("| sgd |") == 1
