"""A trial's attempts on its MLflow run: where each ran, and the step a retry resumed from.

Ray Tune retries a crashed trial (its process killed, its node lost) from the last checkpoint;
the retry reopens the trial's MLflow run (its id travels in the checkpoint), so a trial stays
one run. Each attempt tags the run with the Ray node id and host name it runs on
(``harness.node_id``, ``harness.hostname``: the last attempt's), and each retry appends the
step it resumed from to ``harness.resumed_from``. An attempt that died before its first
checkpoint leaves its run RUNNING; the fresh attempt marks such runs FAILED, so the trial keeps
one FINISHED run and no stray RUNNING one.
"""

from __future__ import annotations

import socket
import sys

from mlflow.entities import RunTag
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.tracking import trial_runs

LOST_BEFORE_CHECKPOINT = ("attempt lost before its first checkpoint (process or node died); "
                          "the trial restarted from step 0 in run {run_id}")


def ray_node_id() -> str | None:
    """The Ray node this process runs on, or None outside Ray (never starts Ray)."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_node_id()


def placement_tags() -> dict[str, str]:
    """Host name, and Ray node id inside Ray, of this attempt."""
    tags = {rs.TAG_HOST: socket.gethostname()}
    node = ray_node_id()
    if node:
        tags[rs.TAG_NODE] = node
    return tags


def resumed_from(previous: str | None, step: int) -> str:
    """``harness.resumed_from`` after one more retry from ``step``: ``"40"``, ``"40,80"``."""
    return f"{previous},{step}" if previous else str(step)


def record_attempt(client: MlflowClient, run_id: str, resumed_step: int | None) -> None:
    """Tag the run with this attempt's placement; for a retry, append the step it resumed
    from and drop the failure reason an earlier attempt may have left."""
    tags = placement_tags()
    if resumed_step is not None:
        previous = client.get_run(run_id).data.tags
        tags[rs.TAG_RESUMED_FROM] = resumed_from(previous.get(rs.TAG_RESUMED_FROM), resumed_step)
        if rs.TAG_FAILURE in previous:
            client.delete_tag(run_id, rs.TAG_FAILURE)
    client.log_batch(run_id, tags=[RunTag(key, value) for key, value in tags.items()])


def fail_running_attempts(client: MlflowClient, experiment_id: str, suite: str, key: str,
                          reason: str, keep: str | None = None) -> list[str]:
    """Mark FAILED, with ``reason``, the trial's RUNNING runs other than ``keep``; returns
    their ids."""
    runs = trial_runs(client, experiment_id, suite, "RUNNING", key)
    failed = [r.info.run_id for r in runs if r.info.run_id != keep]
    for run_id in failed:
        client.set_tag(run_id, rs.TAG_FAILURE, reason)
        client.set_terminated(run_id, "FAILED")
    return failed


def close_lost_attempts(client: MlflowClient, experiment_id: str, suite: str, key: str,
                        run_id: str) -> list[str]:
    """Mark FAILED the trial's other RUNNING runs (attempts that died before a checkpoint);
    returns their ids. Called by a fresh (not resumed) attempt that opened ``run_id``."""
    return fail_running_attempts(client, experiment_id, suite, key,
                                 LOST_BEFORE_CHECKPOINT.format(run_id=run_id), keep=run_id)
