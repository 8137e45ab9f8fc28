"""``search: {kind: optuna}``: tune each (variant combination, task), then ablate.

For every (variant combination, task) of a suite, one Optuna study searches ``search.space``
through Ray Tune (``OptunaSearch`` behind a ``ConcurrencyLimiter``, optionally an
``ASHAScheduler``): ``search.trials`` trials trained with seed ``search.seed`` (Optuna's TPE
sampler is seeded with it too, plus the number of trials the study already holds), each scored
by the last value of ``valid.<metric>`` it reported (the validation split at the last evaluation;
ASHA compares the same metric at its rungs; a trial it stopped is COMPLETE in the study with
its value where it stopped). The best configuration is then re-run over the suite's seeds as
ordinary trials: the table reads those.

Where things are kept:

* the studies: the Optuna database ``<runs_dir>/optuna/<suite>.db``, one study per
  (variant combination, task) named ``<variants>|<task>#<hash>`` (the hash covers the
  combination's config, the task, the metric, the space and the search seed; a changed space
  starts a new study, more ``trials`` extend the old one). Inspect them with
  ``optuna.get_all_study_names("sqlite:///runs/optuna/<suite>.db")`` and
  ``optuna.load_study(study_name=..., storage=...)``; the study's user attributes name the
  suite, variants, task and metric;
* the search trials' MLflow runs: the experiment ``<suite>/search`` (never the suite's own
  experiment, so tables and resumption never see them), keyed
  ``<variants>|<task>|s<seed>|search-<tune trial id>`` with the searched values as params
  (a trial ASHA stopped ends KILLED, its ``harness.failure`` tag says so);
* the re-runs: the suite's experiment under the usual trial keys; their params hold the best
  values (the table prints them per row and task).

Resuming: a study with ``trials`` COMPLETE or PRUNED trials is not searched again; otherwise a
launch runs the missing number (failed trials do not count, as failed grid trials are run
again; trials a killed launch left RUNNING are marked FAIL). A table trial whose latest
FINISHED run has the study's best values is not run again; one whose best changed is.

:func:`run_optuna_suite` is the launch (``lstm-harness run`` on such a suite): the searches
that are short of trials, then the table's trials with each study's best values, through the
same Tune stage as a grid (:mod:`lstm_harness.launch`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lstm_harness import run_schema as rs
from lstm_harness.config import flatten
from lstm_harness.launch import (
    RunOptions,
    RunOutcome,
    init_ray,
    make_trainable,
    run_stage,
    table_progress,
)
from lstm_harness.search_space import describe
from lstm_harness.suite import Suite, evaluation_count, fingerprint, resolve_config
from lstm_harness.tracking import (
    end_run,
    finished_trial_runs,
    prepare_experiment,
    start_launch_run,
)
from lstm_harness.trial import Runtime, tune_trainable
from lstm_harness.trial_spec import SearchChoice, TrialSpec, TrialTask

_STRICT_CHECK = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
STOPPED_BY_ASHA = "stopped early by ASHA (not a failure)"


def search_experiment(suite: str) -> str:
    """The MLflow experiment of a suite's search trials."""
    return f"{suite}/search"


def storage_url(runs_dir: Path, suite: str) -> str:
    """The Optuna storage (SQLite, absolute path) of a suite's studies."""
    return f"sqlite:///{(runs_dir / 'optuna' / f'{suite}.db').resolve()}"


@dataclass(frozen=True)
class Target:
    """One (variant combination, task): one study, one best configuration."""

    label: str  # "<variants>|<task>"
    variants: dict[str, str]
    task: TrialTask
    config: dict[str, Any]


def target_label(trial: TrialSpec) -> str:
    """``<variants>|<task>``: a trial key without its seed."""
    return trial.target


def targets(suite: Suite) -> list[Target]:
    """Every (variant combination, task) of the suite, in trial order."""
    out: dict[str, Target] = {}
    for trial in suite.trials():
        label = target_label(trial)
        if label not in out:
            out[label] = Target(label, trial.variants, trial.task, trial.config)
    return list(out.values())


def study_name(suite: Suite, target: Target) -> str:
    search = suite.spec.search
    identity = {"config": target.config, "task": target.task.as_dict(),
                "metric": suite.search_metric(),
                "space": search.space, "seed": search.seed}
    return f"{target.label}#{fingerprint(identity)}"


def direction(suite: Suite, target: Target) -> str:
    """``max`` or ``min``: the task's direction of the search metric."""
    return suite.task_classes[target.task.label].direction(suite.search_metric())


@dataclass
class StudyState:
    """How far a study got: finished trials that count, and the best one's values."""

    name: str
    counted: int
    best: dict[str, Any] | None
    value: float | None
    size: int = 0  # trials in the study, in any state


def _storage(url: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.storages.RDBStorage(url)


def study_state(url: str, name: str) -> StudyState:
    """The state of study ``name`` (an empty state if it does not exist)."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=_storage(url))
    except KeyError:
        return StudyState(name, 0, None, None)
    trials = study.get_trials(deepcopy=False)
    counted = sum(1 for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED))
    if not any(t.state == TrialState.COMPLETE for t in trials):
        return StudyState(name, counted, None, None, len(trials))
    best = study.best_trial
    return StudyState(name, counted, dict(best.params), best.value, len(trials))


def close_running(url: str, name: str) -> int:
    """Mark trials of study ``name`` still RUNNING (a killed launch's, or one whose value
    Optuna refused, e.g. NaN) as FAIL; returns how many."""
    import optuna
    from optuna.trial import TrialState

    try:
        study = optuna.load_study(study_name=name, storage=_storage(url))
    except KeyError:
        return 0
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
    return len(stale)


def open_study(url: str, name: str, mode: str, attrs: dict[str, Any]) -> None:
    """Create study ``name`` (or find it) and record what it searches as user attributes."""
    import optuna

    study = optuna.create_study(study_name=name, storage=_storage(url), load_if_exists=True,
                                direction="maximize" if mode == "max" else "minimize")
    for key, value in attrs.items():
        study.set_user_attr(key, value)


def with_hyperparameters(trial: TrialSpec, values: dict[str, Any]) -> TrialSpec:
    """A copy of ``trial`` whose config has the dotted ``values`` applied."""
    return replace(trial, config=resolve_config(trial.config, [values]))


def search_trainable(config: dict[str, Any], runtime: Runtime) -> None:
    """One search trial: the searcher's values (top-level dotted keys of ``config``) applied
    to ``config["trial"]`` (a trial's dict), then the ordinary trial
    (:func:`harness.trial.tune_trainable`)."""
    from ray import tune

    values = {k: v for k, v in config.items() if k != "trial"}
    trial = with_hyperparameters(TrialSpec.from_dict(config["trial"]), values)
    trial = replace(trial, key=f"{trial.key}|search-{tune.get_context().get_trial_id()}")
    tune_trainable({"trial": trial.as_dict()}, runtime)


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class ValidationOptunaSearch(OptunaSearch):
        """Scores a trial by the last ``valid.*`` result it reported: a trial's final report
        carries its test metrics, not the validation ones (and results without the metric
        are not passed to Optuna)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.valid_results: dict[str, dict] = {}

        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if self.metric in result:
                self.valid_results[trial_id] = result
                super().on_trial_result(trial_id, result)

        def on_trial_complete(self, trial_id: str, result: dict | None = None,
                              error: bool = False) -> None:
            last = self.valid_results.pop(trial_id, None)
            if error:
                result = None
            elif result is None or self.metric not in result:
                result = last
            super().on_trial_complete(trial_id, result=result, error=error)

    return ValidationOptunaSearch


@contextmanager
def _lenient_metric_check() -> Iterator[None]:
    """Tune refuses results without the searcher's metric; the final report has none."""
    old = os.environ.get(_STRICT_CHECK)
    os.environ[_STRICT_CHECK] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_STRICT_CHECK, None)
        else:
            os.environ[_STRICT_CHECK] = old


def search_progress_class():
    """The live view, one line per search trial (they share their trial dict's key)."""
    from lstm_harness.progress import ProgressView

    class SearchProgress(ProgressView):
        @staticmethod
        def key(trial) -> str:
            values = {k: v for k, v in trial.config.items() if k != "trial"}
            return f"{trial.trial_id[-5:]} {describe(values)}"

    return SearchProgress


@dataclass
class SearchRun:
    """What one search needs besides the suite: where, with what, and how hard."""

    url: str
    storage_dir: Path
    runtime: Runtime
    max_concurrent: int
    max_failures: int
    callbacks: list
    launch: str  # distinguishes this launch's Tune experiment folders from earlier ones


def run_search(suite: Suite, target: Target, remaining: int, run: SearchRun) -> list[str]:
    """Run ``remaining`` more trials of ``target``'s study; returns the failed trials'
    reasons."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search import ConcurrencyLimiter

    search = suite.spec.search
    metric = f"{rs.VALID_PREFIX}{suite.search_metric()}"
    mode = direction(suite, target)
    name = study_name(suite, target)
    space = {path: dist.to_optuna() for path, dist in search.distributions().items()}
    open_study(run.url, name, mode, {"suite": suite.name, "variants": target.variants,
                                     "task": target.task.label, "metric": metric})
    # the sampler's seed moves on with the study: a fresh sampler seeded as before would
    # propose the same first points again when a launch extends the study
    seed = search.seed + study_state(run.url, name).size
    searcher = _searcher_class()(space=space, metric=metric, mode=mode, seed=seed,
                                 study_name=name, storage=_storage(run.url))
    scheduler = None
    if search.asha is not None:
        scheduler = ASHAScheduler(
            time_attr="training_iteration", metric=metric, mode=mode,
            max_t=evaluation_count(target.config) + 1,  # +1: the final (test) report
            grace_period=search.asha.grace_period,
            reduction_factor=search.asha.reduction_factor)
    base = TrialSpec(key=f"{target.label}|s{search.seed}", suite=suite.name,
                     variants=target.variants, task=target.task, seed=search.seed,
                     config=target.config)
    resources = {"cpu": suite.spec.resources.cpu, "gpu": suite.spec.resources.gpu}
    trainable = tune.with_resources(
        tune.with_parameters(search_trainable, runtime=run.runtime), resources)
    folder = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]
    tuner = tune.Tuner(
        trainable,
        param_space={"trial": base.as_dict()},
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, max_concurrent=run.max_concurrent),
            scheduler=scheduler, num_samples=remaining, reuse_actors=True,
            trial_dirname_creator=lambda t: f"trial_{t.trial_id}"),
        run_config=tune.RunConfig(
            name=f"{suite.name}-search-{folder}-{run.launch}",
            storage_path=str(run.storage_dir), verbose=0, callbacks=run.callbacks,
            failure_config=tune.FailureConfig(max_failures=run.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    with _lenient_metric_check():
        grid = tuner.fit()
    close_running(run.url, name)
    if scheduler is not None:
        mark_stopped_runs(run.runtime, f"{base.key}|search-")
    from lstm_harness.progress import error_reason

    return [error_reason(str(r.error)) for r in grid if r.error is not None]


def mark_stopped_runs(runtime: Runtime, key_prefix: str) -> None:
    """Search runs that ASHA stopped end FAILED with ``SystemExit`` (Tune ends the trial's
    thread): mark them KILLED with the reason ``stopped early by ASHA``."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=runtime.tracking_uri)
    runs = client.search_runs(
        [runtime.experiment_id], max_results=10_000,
        filter_string=(f"attributes.status = 'FAILED' and "
                       f"tags.`{rs.TAG_FAILURE}` LIKE 'SystemExit%'"))
    for found in runs:
        if found.data.tags.get(rs.TAG_TRIAL_KEY, "").startswith(key_prefix):
            client.set_tag(found.info.run_id, rs.TAG_FAILURE, STOPPED_BY_ASHA)
            client.set_terminated(found.info.run_id, "KILLED")


def tuned_trials(trials: list[TrialSpec], best: dict[str, dict[str, Any]],
                 studies: dict[str, str]) -> list[TrialSpec]:
    """The suite's trials whose target has a best configuration, with it applied; each
    records the study and values under ``search``."""
    out = []
    for trial in trials:
        label = target_label(trial)
        if label in best:
            tuned = with_hyperparameters(trial, best[label])
            out.append(replace(tuned, search=SearchChoice(studies[label], best[label])))
    return out


def expected_params(trial: TrialSpec, paths: list[str]) -> dict[str, str]:
    """The MLflow params (as the tracker logs them) of the searched settings of ``trial``."""
    return {k: str(v) for k, v in flatten(trial.config).items()
            if any(k == p or k.startswith(f"{p}.") for p in paths)}


def finished_tuned_keys(tracking_uri: str, experiment_id: str, suite: str,
                        trials: list[TrialSpec], paths: list[str]) -> set[str]:
    """Keys of ``trials`` whose latest FINISHED run logged the trial's searched values."""
    latest: dict[str, Any] = {}
    for run in finished_trial_runs(tracking_uri, experiment_id, suite):
        key = run.data.tags[rs.TAG_TRIAL_KEY]
        if key not in latest or (run.info.end_time or 0) > (latest[key].info.end_time or 0):
            latest[key] = run
    done = set()
    for trial in trials:
        run = latest.get(trial.key)
        if run is None:
            continue
        expected = expected_params(trial, paths)
        if all(run.data.params.get(k) == v for k, v in expected.items()):
            done.add(trial.key)
    return done


# --------------------------------------------------------------------------------------------
# the launch: search, then the table's trials with the best values


def run_optuna_suite(suite: Suite, opts: RunOptions) -> RunOutcome:
    """Search every (variant combination, task) whose study is short of ``search.trials``,
    then run the suite's trials with each study's best values (tune, then ablate)."""
    from rich.console import Console

    console = Console(stderr=True, highlight=False, soft_wrap=True)
    spec = suite.spec.search
    artifact_dir = opts.runs_dir / "mlartifacts"
    experiment_id = prepare_experiment(opts.tracking_uri, suite.name, artifact_dir)
    search_experiment_id = prepare_experiment(
        opts.tracking_uri, search_experiment(suite.name), artifact_dir)
    url = storage_url(opts.runs_dir, suite.name)
    (opts.runs_dir / "optuna").mkdir(parents=True, exist_ok=True)
    storage = (opts.runs_dir / "ray").resolve()
    every = targets(suite)
    studies = {t.label: study_name(suite, t) for t in every}
    for name in studies.values():
        close_running(url, name)  # left by a killed launch
    states = {label: study_state(url, name) for label, name in studies.items()}
    todo = [t for t in every if states[t.label].counted < spec.trials]
    trials = suite.trials()
    paths = list(spec.space)

    def tuned() -> tuple[list[TrialSpec], set[str]]:
        best = {label: s.best for label, s in states.items() if s.best is not None}
        rows = tuned_trials(trials, best, studies)
        done = finished_tuned_keys(opts.tracking_uri, experiment_id, suite.name, rows,
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
                callbacks = [search_progress_class()(
                    f"{suite.name} search {target.label}", total=remaining)]
            run = SearchRun(url, storage, search_runtime, concurrent, opts.max_failures,
                               callbacks, launch=parent[:8])
            try:
                errors = run_search(suite, target, remaining, run)
            finally:
                for view in callbacks:  # a live view left running would garble the terminal
                    view.stop()
            search_failures[target.label] = errors
            states[target.label] = study_state(url, studies[target.label])
            if errors:
                console.print(f"search {target.label}: {len(errors)} of {remaining} trials "
                              f"failed (failed trials do not count: the next launch runs "
                              f"as many again); last: "
                              f"{errors[-1]}")
        for label, state in states.items():
            if state.best is None:
                reasons = search_failures.get(label) or ["no trial completed"]
                for trial in trials:
                    if target_label(trial) == label:
                        failed[trial.key] = f"search found no configuration: {reasons[-1]}"
            elif label in search_failures:
                console.print(f"search {label}: best valid.{suite.search_metric()} "
                              f"{state.value:.4g} with {describe(state.best, paths)}")
        rows, done_before = tuned()
        pending = [t for t in rows if t.key not in done_before]
        skipped = len(rows) - len(pending)
        if pending:
            trainable = make_trainable(suite, opts, experiment_id, parent)
            progress = table_progress(suite, len(rows), skipped)
            try:
                failed.update(run_stage(
                    pending, trainable, storage,
                    f"{suite.name}-{fingerprint([t.as_dict() for t in rows])}", opts,
                    [progress] if opts.show_progress else [], progress))
            finally:
                progress.stop()
        status = "FINISHED"
    finally:
        end_run(opts.tracking_uri, parent, status)
    now_done = finished_tuned_keys(opts.tracking_uri, experiment_id, suite.name, rows, paths)
    return RunOutcome(total=len(trials), skipped=len(done_before & {t.key for t in rows}),
                      finished=len(now_done),
                      failed={k: v for k, v in failed.items() if k not in now_done})
