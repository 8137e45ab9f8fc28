"""MLflow on a real database: the driver prepares it, each trial writes its own run.

Default store: ``runs/mlflow.db`` (SQLite, absolute URI, artifacts beside it in
``runs/mlartifacts``), or ``--tracking-uri`` / ``MLFLOW_TRACKING_URI`` (for example a tracking
server on a cluster's head). The database and the experiment are created by the driver before
any trial starts (concurrent first-time schema creation is unsafe). A retried trial resumes
the MLflow run it started (its id travels in the checkpoint), so a trial is one run.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.config import flatten
from lstm_harness.trial_spec import TrialSpec


class TrackingError(RuntimeError):
    """The tracking store cannot be opened or written."""


def resolve_tracking_uri(explicit: str | None, runs_dir: Path) -> str:
    """``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``runs/mlflow.db`` (absolute)."""
    uri = explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{(runs_dir / 'mlflow.db').resolve()}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///").split("?", 1)[0])


def writable_problem(path: Path) -> str | None:
    """Why a file or folder could not be created or written at ``path`` (None: it could).
    Looks only: creates nothing. (As root, only a read-only file system says no.)"""
    path = Path(os.path.abspath(path))
    if path.exists():
        if path.is_dir():
            ok = os.access(path, os.W_OK | os.X_OK)
            return None if ok else f"the folder {path} is read-only"
        if not os.access(path, os.W_OK):
            return f"{path} is read-only"
        return writable_problem(path.parent)
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"{ancestor} is a file, not a folder"
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"the folder {ancestor} is read-only"
    return None


def check_store(tracking_uri: str, absolute: bool = True) -> None:
    """Raise :class:`TrackingError` when the store cannot be written: a SQLite database (or
    the folder it would be created in) that is read-only or lies under a file, a relative
    SQLite path where ``absolute`` is asked for (trials do not share the driver's working
    directory), or a tracking server that does not answer. Creates nothing; takes at most a
    few seconds."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        if absolute and not db.is_absolute():
            raise TrackingError(f"MLflow store {tracking_uri}: give an absolute path "
                                "(sqlite:////absolute/path/mlflow.db, four slashes); trials "
                                "run in their own working directory")
        if db.is_dir():
            raise TrackingError(f"cannot use the MLflow database {db}: it is a folder")
        problem = writable_problem(db)
        if problem:
            raise TrackingError(f"cannot write the MLflow database {db}: {problem} (pass "
                                "--runs-dir or --tracking-uri with a writable place)")
        return
    if tracking_uri.startswith(("http://", "https://")):
        from lstm_harness.endpoints import split_host_port, tcp_problem

        default = 443 if tracking_uri.startswith("https") else 80
        try:
            host, port = split_host_port(tracking_uri, default)
        except ValueError as exc:
            raise TrackingError(f"MLflow tracking URI {exc}") from None
        problem = tcp_problem(host, port)
        if problem:
            raise TrackingError(f"no MLflow tracking server at {tracking_uri}: {problem}")


def prepare_experiment(tracking_uri: str, suite: str, artifact_dir: Path) -> str:
    """Create (or find) the suite's experiment; returns its id. Runs in the driver only."""
    db = sqlite_path(tracking_uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"cannot create the MLflow directory {db.parent}: {exc}") from exc
    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        found = client.get_experiment_by_name(suite)
        if found is not None:
            return found.experiment_id
        location = None
        if not tracking_uri.startswith(("http://", "https://", "databricks")):
            location = (artifact_dir.resolve() / suite).as_uri()
        return client.create_experiment(suite, artifact_location=location)
    except Exception as exc:  # the store's own exception types vary by backend
        raise TrackingError(f"MLflow store {tracking_uri} cannot be used: "
                            f"{type(exc).__name__}: {exc}") from exc


def start_launch_run(tracking_uri: str, experiment_id: str, suite: str, command: str) -> str:
    """The parent run of one ``lstm-harness run`` launch."""
    client = MlflowClient(tracking_uri=tracking_uri)
    run = client.create_run(experiment_id, run_name=f"{suite} launch", tags={
        rs.TAG_ROLE: rs.ROLE_LAUNCH, rs.TAG_SUITE: suite, rs.TAG_COMMAND: command})
    return run.info.run_id


def end_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    MlflowClient(tracking_uri=tracking_uri).set_terminated(run_id, status)


class TrialTracker:
    """One trial's MLflow run: params, tags, step metrics, final metrics, artifacts."""

    def __init__(self, tracking_uri: str, experiment_id: str, parent_run_id: str | None) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.run_id: str | None = None

    def start(self, trial: TrialSpec, resume_run_id: str | None = None) -> str:
        """Open the trial's run, or reopen ``resume_run_id`` after a retry."""
        if resume_run_id is not None:
            self.run_id = resume_run_id
            self.client.update_run(resume_run_id, status="RUNNING")
            return resume_run_id
        tags = {
            rs.TAG_ROLE: rs.ROLE_TRIAL,
            rs.TAG_SUITE: trial.suite,
            rs.TAG_TRIAL_KEY: trial.key,
            rs.TAG_TASK: trial.task.label,
            rs.TAG_SEED: str(trial.seed),
            **{f"{rs.TAG_VARIANT_PREFIX}{axis}": name for axis, name in trial.variants.items()},
        }
        if self.parent_run_id:
            tags[rs.TAG_PARENT] = self.parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=trial.key, tags=tags)
        self.run_id = run.info.run_id
        params = flatten(trial.config)
        params.update(flatten({"task": trial.task.params}))
        params.update({"task.name": trial.task.name, "seed": trial.seed})
        params.update({f"variant.{a}": v for a, v in trial.variants.items()})
        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        self.client.log_text(self.run_id, json.dumps(trial.as_dict(), indent=2),
                             "trial_config.json")
        return self.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[
            Metric(k, float(v), now, step) for k, v in metrics.items()])

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()])

    def metrics(self) -> dict[str, float]:
        """The latest value of every metric the run logged."""
        return dict(self.client.get_run(self.run_id).data.metrics)

    def log_files(self, write: Callable[[Path], Iterable[Path]],
                  artifact_path: str | None = None) -> None:
        """Log as artifacts (under ``artifact_path``) the files ``write`` makes in a temporary
        folder it is given."""
        with tempfile.TemporaryDirectory() as folder:
            for path in write(Path(folder)):
                self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_weights(self, state_dict: dict) -> None:
        """The final model weights as ``model.pt`` (read by ``from_trial`` options)."""
        import torch

        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.pt"
            torch.save(state_dict, path)
            self.client.log_artifact(self.run_id, str(path))

    def finish(self) -> None:
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self, reason: str) -> None:
        if self.run_id is None:
            return
        self.set_tags({rs.TAG_FAILURE: reason[:4000]})
        self.client.set_terminated(self.run_id, "FAILED")


class NullTracker:
    """Tracking off: :class:`TrialTracker`'s methods, doing nothing (``log_files`` never
    calls its writer; there is no run, ``run_id`` is None)."""

    run_id: str | None = None

    def start(self, trial: TrialSpec, resume_run_id: str | None = None) -> None:
        return None

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass

    def metrics(self) -> dict[str, float]:
        return {}

    def log_files(self, write: Callable[[Path], Iterable[Path]],
                  artifact_path: str | None = None) -> None:
        pass

    def log_weights(self, state_dict: dict) -> None:
        pass

    def finish(self) -> None:
        pass

    def fail(self, reason: str) -> None:
        pass


Tracker = TrialTracker | NullTracker


def load_trial_artifacts(tracking_uri: str | None, reference: str, default_suite: str,
                         folder: Path) -> tuple[dict[str, Any], Path]:
    """The config and final weights of a finished trial named ``KEY`` (same suite) or
    ``SUITE:KEY``: returns (trial config dict, path of model.pt)."""
    suite, _, key = reference.partition(":") if ":" in reference else ("", "", reference)
    suite = suite or default_suite
    if tracking_uri is None:
        raise TrackingError(f"trial '{reference}' can only be found through MLflow")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(suite)
    runs = [] if experiment is None else client.search_runs(
        [experiment.experiment_id], order_by=["attributes.end_time DESC"],
        filter_string=(f"tags.`{rs.TAG_TRIAL_KEY}` = '{key}' and "
                       "attributes.status = 'FINISHED'"))
    if not runs:
        raise TrackingError(f"no finished trial '{key}' in suite '{suite}' (a trial named by "
                            "from_trial or init_from must have finished first; did it fail?)")
    run_id = runs[0].info.run_id
    try:
        config = json.loads(Path(client.download_artifacts(
            run_id, "trial_config.json", str(folder))).read_text())
        weights = Path(client.download_artifacts(run_id, "model.pt", str(folder)))
    except Exception as exc:
        raise TrackingError(f"trial '{key}' of suite '{suite}' has no saved model "
                            f"({type(exc).__name__}: {exc})") from exc
    return config, weights


def trial_runs(client: MlflowClient, experiment_id: str, suite: str, status: str,
               key: str | None = None) -> Iterator:
    """Every trial run of ``suite`` in the experiment with this ``status`` (FINISHED,
    RUNNING, ...), of one trial ``key`` if given; all pages of the search."""
    where = (f"tags.`{rs.TAG_ROLE}` = '{rs.ROLE_TRIAL}' and tags.`{rs.TAG_SUITE}` = '{suite}' "
             f"and attributes.status = '{status}'")
    if key is not None:
        where += f" and tags.`{rs.TAG_TRIAL_KEY}` = '{key}'"
    token = None
    while True:
        page = client.search_runs([experiment_id], page_token=token, max_results=1000,
                                  filter_string=where)
        yield from page
        token = page.token
        if not token:
            return


def finished_trial_runs(tracking_uri: str, experiment_id: str, suite: str) -> Iterator:
    """Every FINISHED trial run of ``suite`` in the experiment."""
    return trial_runs(MlflowClient(tracking_uri=tracking_uri), experiment_id, suite, "FINISHED")
