"""Ray Tune runs a suite's grid: one trial per (variants, task, seed), resumable. A suite with
``search: {kind: optuna}`` first searches each (variants, task), then runs the grid with the
best configurations (:func:`lstm_harness.search.run_optuna_suite`).

Resuming has two layers. Within one grid (same fingerprint), ``Tuner.restore`` continues the
experiment: finished trials stay finished and interrupted ones restart from their last
checkpoint. Across grids (a suite that gained a seed or a variant), trials that already have a
FINISHED run in MLflow are not launched again.
"""

from __future__ import annotations

from lstm_harness.launch import (
    RunOptions,
    RunOutcome,
    finished_trial_keys,
    init_ray,
    make_trainable,
    run_stage,
    table_progress,
)
from lstm_harness.suite import Suite
from lstm_harness.tracking import end_run, prepare_experiment, start_launch_run

__all__ = ["RunOptions", "RunOutcome", "run_suite"]


def run_suite(suite: Suite, opts: RunOptions) -> RunOutcome:
    """Run every trial of the suite not yet finished, stage by stage (trials that start from
    another trial's model run after it); returns what happened."""
    if suite.spec.search.kind == "optuna":
        from lstm_harness.search import run_optuna_suite

        return run_optuna_suite(suite, opts)
    artifact_dir = opts.runs_dir / "mlartifacts"
    experiment_id = prepare_experiment(opts.tracking_uri, suite.name, artifact_dir)
    trials = suite.trials()
    stages = suite.stages()
    storage = (opts.runs_dir / "ray").resolve()
    name = f"{suite.name}-{suite.fingerprint()}"
    done_before = finished_trial_keys(opts.tracking_uri, experiment_id, suite.name)
    pending = [t for t in trials if t.key not in done_before]
    if not pending:
        return RunOutcome(total=len(trials), skipped=len(trials), finished=len(trials),
                          failed={})

    init_ray(opts.address)
    parent = start_launch_run(opts.tracking_uri, experiment_id, suite.name, opts.command)
    trainable = make_trainable(suite, opts, experiment_id, parent)
    skipped = len(trials) - len(pending)
    progress = table_progress(suite, len(trials), skipped)
    callbacks = [progress] if opts.show_progress else []
    status = "FAILED"
    failed: dict[str, str] = {}
    try:
        for index, stage in enumerate(stages):
            todo = [t for t in stage if t.key not in done_before]
            if not todo:
                continue
            stage_name = name if len(stages) == 1 else f"{name}-stage{index}"
            failed.update(run_stage(todo, trainable, storage, stage_name, opts, callbacks,
                                     progress))
        status = "FINISHED"
    finally:
        progress.stop()
        end_run(opts.tracking_uri, parent, status)
    now_done = finished_trial_keys(opts.tracking_uri, experiment_id, suite.name)
    keys = {t.key for t in trials}
    return RunOutcome(total=len(trials), skipped=skipped, finished=len(keys & now_done),
                      failed={k: v for k, v in failed.items() if k not in now_done})
