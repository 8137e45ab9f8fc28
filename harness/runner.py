"""Ray Tune runs a suite's grid: one trial per (variants, task, seed), resumable. A suite with
``search: {kind: optuna}`` first searches each (variants, task), then runs the grid with the
best configurations (:func:`_run_optuna_suite`, :mod:`harness.search`).

Resuming has two layers. Within one grid (same fingerprint), ``Tuner.restore`` continues the
experiment: finished trials stay finished and interrupted ones restart from their last
checkpoint. Across grids (a suite that gained a seed or a variant), trials that already have a
FINISHED run in MLflow are not launched again.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lstm_harness import run_schema as rs
from lstm_harness.suite import Suite
from lstm_harness.tracking import end_run, finished_trial_runs, prepare_experiment, start_launch_run
from lstm_harness.trial import Runtime, tune_trainable


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


def run_suite(suite: Suite, opts: RunOptions) -> RunOutcome:
    """Run every trial of the suite not yet finished, stage by stage (trials that start from
    another trial's model run after it); returns what happened."""


    if suite.spec.search.kind == "optuna":
        return _run_optuna_suite(suite, opts)
    artifact_dir = opts.runs_dir / "mlartifacts"
    experiment_id = prepare_experiment(opts.tracking_uri, suite.name, artifact_dir)
    trials = suite.trials()
    stages = suite.stages()
    storage = (opts.runs_dir / "ray").resolve()
    name = f"{suite.name}-{suite.fingerprint()}"
    done_before = finished_trial_keys(opts.tracking_uri, experiment_id, suite.name)
    pending = [t for t in trials if t["key"] not in done_before]
    if not pending:
        return RunOutcome(total=len(trials), skipped=len(trials), finished=len(trials),
                          failed={})

    init_ray(opts.address)
    parent = start_launch_run(opts.tracking_uri, experiment_id, suite.name, opts.command)
    trainable = _trainable(suite, opts, experiment_id, parent)
    skipped = len(trials) - len(pending)
    progress = _table_progress(suite, len(trials), skipped)
    callbacks = [progress] if opts.show_progress else []
    status = "FAILED"
    failed: dict[str, str] = {}
    try:
        for index, stage in enumerate(stages):
            todo = [t for t in stage if t["key"] not in done_before]
            if not todo:
                continue
            stage_name = name if len(stages) == 1 else f"{name}-stage{index}"
            failed.update(_run_stage(todo, trainable, storage, stage_name, opts, callbacks,
                                     progress))
        status = "FINISHED"
    finally:
        progress.stop()
        end_run(opts.tracking_uri, parent, status)
    now_done = finished_trial_keys(opts.tracking_uri, experiment_id, suite.name)
    keys = {t["key"] for t in trials}
    return RunOutcome(total=len(trials), skipped=skipped, finished=len(keys & now_done),
                      failed={k: v for k, v in failed.items() if k not in now_done})


def _trainable(suite: Suite, opts: RunOptions, experiment_id: str, parent: str | None):
    """``tune_trainable`` with the launch's runtime and the suite's resources per trial."""
    from ray import tune

    resources = suite.spec.resources
    runtime = Runtime(opts.tracking_uri, experiment_id, parent, cpus=resources.cpu,
                      gpus=resources.gpu)
    return tune.with_resources(tune.with_parameters(tune_trainable, runtime=runtime),
                               {"cpu": resources.cpu, "gpu": resources.gpu})


def _table_progress(suite: Suite, total: int, skipped: int):
    """The live view of the table's trials; says how many finished in earlier launches."""
    from lstm_harness.progress import ProgressView

    progress = ProgressView(suite.name, total=total, already_done=skipped)
    if skipped:
        progress.console.print(f"{skipped} of {total} trials finished in earlier launches; "
                               "they are not run again")
    return progress


def _run_stage(todo: list[dict], trainable, storage: Path, name: str, opts: RunOptions,
               callbacks: list, progress) -> dict[str, str]:
    """One Tune experiment over ``todo`` (restored if an earlier launch was interrupted);
    returns trial key -> failure reason."""
    from ray import tune

    experiment_path = storage / name
    if tune.Tuner.can_restore(str(experiment_path)):
        progress.console.print(f"resuming the interrupted launch in {experiment_path}")
        tuner = tune.Tuner.restore(str(experiment_path), trainable=trainable,
                                   resume_errored=True, restart_errored=False)
        # Tune keeps the callbacks of the run config it restored; add the live view
        tuner._local_tuner._run_config.callbacks = callbacks
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search(todo)},
            tune_config=tune.TuneConfig(
                num_samples=1, max_concurrent_trials=opts.max_concurrent,
                reuse_actors=True, trial_dirname_creator=dirname_for),
            run_config=tune.RunConfig(
                name=name, storage_path=str(storage), verbose=0, callbacks=callbacks,
                failure_config=tune.FailureConfig(max_failures=opts.max_failures),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    grid = tuner.fit()
    from lstm_harness.progress import error_reason  # imports ray.tune: not at the CLI's start

    failed = {}
    for result in grid:
        if result.error is not None and result.config:
            failed[result.config["trial"]["key"]] = error_reason(str(result.error))
    return failed


def _run_optuna_suite(suite: Suite, opts: RunOptions) -> RunOutcome:
    """Search every (variant combination, task) whose study is short of ``search.trials``,
    then run the suite's trials with each study's best values (tune, then ablate)."""
    from rich.console import Console

    from lstm_harness import search as sr
    from lstm_harness.search_space import describe
    from lstm_harness.suite import fingerprint

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    spec = suite.spec.search
    artifact_dir = opts.runs_dir / "mlartifacts"
    experiment_id = prepare_experiment(opts.tracking_uri, suite.name, artifact_dir)
    search_experiment_id = prepare_experiment(
        opts.tracking_uri, sr.search_experiment(suite.name), artifact_dir)
    url = sr.storage_url(opts.runs_dir, suite.name)
    (opts.runs_dir / "optuna").mkdir(parents=True, exist_ok=True)
    storage = (opts.runs_dir / "ray").resolve()
    targets = sr.targets(suite)
    studies = {t.label: sr.study_name(suite, t) for t in targets}
    for name in studies.values():
        sr.close_running(url, name)  # left by a killed launch
    states = {label: sr.study_state(url, name) for label, name in studies.items()}
    todo = [t for t in targets if states[t.label].counted < spec.trials]
    trials = suite.trials()
    paths = list(spec.space)

    def tuned() -> tuple[list[dict], set[str]]:
        best = {label: s.best for label, s in states.items() if s.best is not None}
        rows = sr.tuned_trials(trials, best, studies)
        done = sr.finished_tuned_keys(opts.tracking_uri, experiment_id, suite.name, rows,
                                      paths)
        return rows, done

    rows, done_before = tuned()
    if not todo and len(done_before) == len(trials):
        return RunOutcome(total=len(trials), skipped=len(trials), finished=len(trials),
                          failed={})

    init_ray(opts.address)
    parent = start_launch_run(opts.tracking_uri, experiment_id, suite.name, opts.command)
    resources = suite.spec.resources
    search_runtime = Runtime(opts.tracking_uri, search_experiment_id, None,
                             cpus=resources.cpu, gpus=resources.gpu)
    status = "FAILED"
    failed: dict[str, str] = {}
    search_failures: dict[str, list[str]] = {}
    concurrent = min(spec.max_concurrent, opts.max_concurrent or spec.max_concurrent)
    try:
        for target in todo:
            state = states[target.label]
            remaining = spec.trials - state.counted
            console.print(f"search {target.label}: {remaining} of {spec.trials} trials to run "
                          f"({concurrent} at once), study '{studies[target.label]}' in {url}")
            callbacks = []
            if opts.show_progress:
                callbacks = [sr.search_progress_class()(
                    f"{suite.name} search {target.label}", total=remaining)]
            run = sr.SearchRun(url, storage, search_runtime, concurrent, opts.max_failures,
                               callbacks, launch=parent[:8])
            try:
                errors = sr.run_search(suite, target, remaining, run)
            finally:
                for view in callbacks:  # a live view left running would garble the terminal
                    view.stop()
            search_failures[target.label] = errors
            states[target.label] = sr.study_state(url, studies[target.label])
            if errors:
                console.print(f"search {target.label}: {len(errors)} of {remaining} trials "
                              f"failed (failed trials do not count: the next launch runs "
                              f"as many again); last: "
                              f"{errors[-1]}")
        for label, state in states.items():
            if state.best is None:
                reasons = search_failures.get(label) or ["no trial completed"]
                for trial in trials:
                    if sr.target_label(trial) == label:
                        failed[trial["key"]] = f"search found no configuration: {reasons[-1]}"
            elif label in search_failures:
                console.print(f"search {label}: best valid.{suite.search_metric()} "
                              f"{state.value:.4g} with {describe(state.best, paths)}")
        rows, done_before = tuned()
        pending = [t for t in rows if t["key"] not in done_before]
        skipped = len(rows) - len(pending)
        if pending:
            trainable = _trainable(suite, opts, experiment_id, parent)
            progress = _table_progress(suite, len(rows), skipped)
            try:
                failed.update(_run_stage(
                    pending, trainable, storage, f"{suite.name}-{fingerprint(rows)}", opts,
                    [progress] if opts.show_progress else [], progress))
            finally:
                progress.stop()
        status = "FINISHED"
    finally:
        end_run(opts.tracking_uri, parent, status)
    now_done = sr.finished_tuned_keys(opts.tracking_uri, experiment_id, suite.name, rows, paths)
    return RunOutcome(total=len(trials), skipped=len(done_before & {t["key"] for t in rows}),
                      finished=len(now_done),
                      failed={k: v for k, v in failed.items() if k not in now_done})
