"""What the grid (runner.py) and the search (search.py) share to launch trials on Ray Tune:
the launch's options and outcome, Ray's start, the trainable with the suite's resources, the
live view, and one Tune experiment over a list of trials (restored when an earlier launch of
it was interrupted)."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lstm_harness import run_schema as rs
from lstm_harness.suite import Suite
from lstm_harness.tracking import finished_trial_runs
from lstm_harness.trial import Runtime, tune_trainable
from lstm_harness.trial_spec import TrialSpec

__all__ = ["RunOptions", "RunOutcome", "dirname_for", "finished_trial_keys", "init_ray",
           "make_trainable", "run_stage", "table_progress"]


@dataclass
class RunOptions:
    tracking_uri: str
    runs_dir: Path
    address: str | None = None
    max_concurrent: int | None = None
    max_failures: int = 2
    command: str = ""
    show_progress: bool = True


@dataclass
class RunOutcome:
    total: int
    skipped: int  # finished in an earlier launch, not run again
    finished: int  # trials of the suite with a FINISHED run, all launches counted
    failed: dict[str, str]  # trial key -> reason


def finished_trial_keys(tracking_uri: str, experiment_id: str, suite: str) -> set[str]:
    """Keys of trials that already have a FINISHED run in MLflow."""
    return {run.data.tags[rs.TAG_TRIAL_KEY]
            for run in finished_trial_runs(tracking_uri, experiment_id, suite)}


def init_ray(address: str | None) -> None:
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    kwargs = {"log_to_driver": False, "logging_level": logging.ERROR,
              "configure_logging": True}
    if address:  # the CLI passes --address, else $RAY_ADDRESS (`ray job submit` sets it)
        ray.init(address=address, **kwargs)
    else:
        # "local": a new local instance, never one that another process started on this
        # machine (ray.init() without an address joins the last cluster `ray start` made)
        ray.init(address="local", include_dashboard=False, **kwargs)


def dirname_for(trial) -> str:
    key = trial.config.get("trial", {}).get("key", trial.trial_id)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:80] + f"_{trial.trial_id[-5:]}"


def make_trainable(suite: Suite, opts: RunOptions, experiment_id: str, parent: str | None):
    """``tune_trainable`` with the launch's runtime and the suite's resources per trial."""
    from ray import tune

    resources = suite.spec.resources
    runtime = Runtime(opts.tracking_uri, experiment_id, parent, cpus=resources.cpu,
                      gpus=resources.gpu)
    return tune.with_resources(tune.with_parameters(tune_trainable, runtime=runtime),
                               {"cpu": resources.cpu, "gpu": resources.gpu})


def table_progress(suite: Suite, total: int, skipped: int):
    """The live view of the table's trials; says how many finished in earlier launches."""
    from lstm_harness.progress import ProgressView

    progress = ProgressView(suite.name, total=total, already_done=skipped)
    if skipped:
        progress.console.print(f"{skipped} of {total} trials finished in earlier launches; "
                               "they are not run again")
    return progress


def run_stage(todo: list[TrialSpec], trainable, storage: Path, name: str, opts: RunOptions,
              callbacks: list, progress) -> dict[str, str]:
    """One Tune experiment over ``todo`` (restored if an earlier launch was interrupted);
    returns trial key -> failure reason. Tune holds each trial as its dict
    (``config["trial"]``, :meth:`TrialSpec.as_dict`). ``callbacks`` (live views) reach Tune
    through :class:`~lstm_harness.progress.ViewRelay`, so a restored experiment, whose
    callbacks Tune restores with it, draws into this launch's views."""
    from ray import tune

    from lstm_harness.progress import ViewRelay

    # Tune adds callbacks of its own to the list it is given: it gets a copy. A launch without
    # a view still gives Tune one relay, so a later launch that resumes this experiment with a
    # live view has a relay to draw through (Tuner.restore takes no new callbacks).
    views = list(callbacks) or [None]
    relays = [ViewRelay(f"{name}#{i}", view) for i, view in enumerate(views)]
    experiment_path = storage / name
    try:
        if tune.Tuner.can_restore(str(experiment_path)):
            progress.console.print(f"resuming the interrupted launch in {experiment_path}")
            tuner = tune.Tuner.restore(str(experiment_path), trainable=trainable,
                                       resume_errored=True, restart_errored=False)
        else:
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([t.as_dict() for t in todo])},
                tune_config=tune.TuneConfig(
                    num_samples=1, max_concurrent_trials=opts.max_concurrent,
                    reuse_actors=True, trial_dirname_creator=dirname_for),
                run_config=tune.RunConfig(
                    name=name, storage_path=str(storage), verbose=0, callbacks=list(relays),
                    failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
        grid = tuner.fit()
    finally:
        for relay in relays:
            relay.release()
    from lstm_harness.progress import error_reason  # imports ray.tune: not at the CLI's start

    failed = {}
    for result in grid:
        if result.error is not None and result.config:
            failed[result.config["trial"]["key"]] = error_reason(str(result.error))
    return failed
