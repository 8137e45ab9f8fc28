"""A Ray cluster of three nodes on this machine, and what the fault tests read back from a run.

The head has no CPUs for trials and each worker node one, so two trials run at once on two
different nodes. ``ray.cluster_utils.Cluster`` starts its nodes in-process (no ``ray start``),
so Ray >= 2.59's token authentication does not get in the way and ``RAY_AUTH_MODE`` need not
be set.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.cli import main


@contextmanager
def local_cluster(workers: int = 2) -> Iterator:
    """A head with 0 CPUs and ``workers`` nodes of 1 CPU each; the driver is disconnected
    and the cluster shut down afterwards."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()  # trials must reach this cluster, not a Ray an earlier test left running
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "include_dashboard": False})
    try:
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()


def trial_runs(db: Path, suite: str) -> list:
    """Every trial run of the suite in the SQLite MLflow store ``db``, any status."""
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        return []
    return [r for r in client.search_runs([experiment.experiment_id])
            if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL]


def checkpointed_trial_dirs(storage: Path) -> list[Path]:
    """Trial folders under Ray storage that hold at least one complete checkpoint."""
    return sorted({p.parent.parent for p in storage.glob("*/*/checkpoint_*/trial.pt")})


def node_of(cluster, node_id: str):
    """The cluster's worker node with this id."""
    return next(n for n in cluster.worker_nodes if n.node_id == node_id)


def children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def trainable_pids(node) -> list[int]:
    """Processes of this node (children of its raylet) running a Tune function trainable:
    Ray names them ``ray::ImplicitFunc``."""
    raylet = node.all_processes["raylet"][0].process.pid
    return [pid for pid in children(raylet) if "ImplicitFunc" in cmdline(pid)]


class Driver(threading.Thread):
    """``lstm-harness run SUITE --address ADDRESS`` in a thread; ``code`` is its exit code."""

    def __init__(self, suite: Path, address: str, *extra: str) -> None:
        super().__init__(daemon=True)
        self.argv = ["run", str(suite), "--no-progress", "--address", address, *extra]
        self.code: int | None = None

    def run(self) -> None:
        self.code = main(self.argv)
