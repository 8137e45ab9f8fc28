"""One trial: task from the registry, model from the zoo, the training loop, MLflow, Ray Tune.

``execute_trial`` runs a trial in the current process (tests and benchmarks call it directly);
``tune_trainable`` is the same trial as a Ray Tune function trainable, with checkpoints.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lstm_harness import run_schema as rs
from lstm_harness.attempts import close_lost_attempts, fail_running_attempts, record_attempt
from lstm_harness.config import TrialConfig
from lstm_harness.diagnostics.monitor import Monitors
from lstm_harness.models.factory import build_model
from lstm_harness.models.seq2seq import Seq2Seq, count_parameters
from lstm_harness.registry import load_task_class
from lstm_harness.tracking import NullTracker, Tracker, TrialTracker
from lstm_harness.training.evaluate import evaluate
from lstm_harness.training.loop import TrainState, train
from lstm_harness.training.optim import make_optimizer
from lstm_harness.training.rng import restore_rng_state, rng_state
from lstm_harness.training.target import target_reached
from lstm_harness.training.techniques import Techniques
from lstm_harness.trial_spec import TrialSpec

CHECKPOINT_FILE = "trial.pt"

Report = Callable[[dict[str, float], dict[str, Any] | None], None]


@dataclass(frozen=True)
class Runtime:
    """What every trial of a launch shares (not part of the trial's identity)."""

    tracking_uri: str | None
    experiment_id: str | None
    parent_run_id: str | None
    cpus: float = 1.0
    gpus: float = 0.0


def pick_device(gpus: float) -> torch.device:
    return torch.device("cuda" if gpus > 0 and torch.cuda.is_available() else "cpu")


def reset_peak_memory(device: torch.device) -> None:
    """Start a fresh peak-memory window (Ray may reuse one worker process for many trials)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on a GPU; peak resident set size of the process on CPU
    (VmHWM since :func:`reset_peak_memory` where Linux allows it, else the lifetime peak)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def execute_trial(trial: TrialSpec, runtime: Runtime, report: Report | None = None,
                  resume: dict[str, Any] | None = None) -> dict[str, float]:
    """Train and test one trial; returns its final metrics (``test.*`` and ``cost.*``)."""
    started = time.perf_counter()
    torch.set_num_threads(max(1, int(runtime.cpus)))
    device = pick_device(runtime.gpus)
    reset_peak_memory(device)
    cfg = TrialConfig.model_validate(trial.config)
    task_cls = load_task_class(trial.task.name)
    task = task_cls(task_cls.Params.model_validate(trial.task.params))

    torch.manual_seed(trial.seed)
    aux_tasks = [ref.build() for ref in cfg.train.curriculum.tasks]  # multi-task curriculum
    model = build_model(cfg.model, task, aux_tasks).to(device)
    optimizer = make_optimizer(model.parameters(), cfg.train)
    state = TrainState()
    scorer = None
    if cfg.train.curriculum.kind == "perplexity" and cfg.train.curriculum.from_trial:
        scorer = load_trial_model(runtime, cfg.train.curriculum.from_trial, trial.suite,
                                  task, device)
    techniques = Techniques(cfg.train, model, optimizer, task, scorer, aux_tasks)
    monitors = Monitors(cfg.monitor, task, device)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        state = TrainState(**resume["state"])
        techniques.load_state_dict(resume["techniques"])
        monitors.load_state_dict(resume["monitors"])
        restore_rng_state(resume)
        started -= resume["elapsed"]
    tracker = open_tracker(runtime, trial, resume.get("mlflow_run_id") if resume else None,
                           state.step)

    def on_log(state: TrainState, metrics: dict[str, float]) -> None:
        tracker.log_metrics(metrics, state.step)

    def on_eval(state: TrainState, metrics: dict[str, float]) -> None:
        target = cfg.train.steps_to_target
        if target is not None and state.target_step is None and target_reached(
                metrics[target.metric], target.value, metric_direction(task, target.metric)):
            state.target_step = state.step
        valid = {f"{rs.VALID_PREFIX}{k}": v for k, v in metrics.items()}
        tracker.log_metrics(valid, state.step)
        if report is not None:
            report({"step": state.step, **valid}, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "state": state.as_dict(), **rng_state(),
                "techniques": techniques.state_dict(), "monitors": monitors.state_dict(),
                "elapsed": time.perf_counter() - started,
                "mlflow_run_id": tracker.run_id})

    try:
        if resume is None and trial.init_from:  # inside: a failure is recorded
            start_from_trial(model, runtime, trial.init_from, trial.suite)
        monitors.start(model)  # the initial weights, for the distance travelled
        train(model, optimizer, task, cfg.train, trial.seed, state, device, techniques,
              monitors, on_log, on_eval)
        test = evaluate(model, task, "test", cfg.train.eval_batch_size, device,
                        cfg.train.mc_samples, cfg.train.length_buckets)
        final = {f"{rs.TEST_PREFIX}{k}": v for k, v in test.items()}
        final.update(monitors.final(model))
        final.update({
            rs.COST_PARAMS: float(count_parameters(model)),
            rs.COST_WALL: time.perf_counter() - started,
            rs.COST_TOKENS_PER_S: state.tokens / max(state.train_seconds, 1e-9),
            rs.COST_PEAK_MEM: peak_memory_mb(device),
        })
        if cfg.train.steps_to_target is not None:
            final[rs.COST_TARGET_REACHED] = float(state.target_step is not None)
            if state.target_step is not None:
                final[rs.TEST_PREFIX + rs.STEPS_TO_TARGET] = float(state.target_step)
        tracker.log_metrics({**final, **reference_metrics(task)}, state.step)
        if monitors.flags:
            tracker.set_tags({rs.TAG_DIAGNOSTICS: "; ".join(monitors.flags)[:5000]})
        if monitors.draws_figures:
            tracker.log_files(lambda folder: diagnostic_figure_files(
                tracker, runtime.tracking_uri, trial.key, folder), "diagnostics")
        tracker.log_weights(model.state_dict())
        if model.attention is not None and isinstance(model, Seq2Seq):
            tracker.log_files(lambda folder: [attention_figure(model, task, device, folder)])
        tracker.finish()
    except BaseException as exc:
        tracker.fail(f"{type(exc).__name__}: {exc}")
        raise
    if report is not None:
        report({"step": state.step, "done": 1.0, **final}, None)
    return final


def metric_direction(task, metric: str) -> str:
    """"min" for the validation loss, else the task's direction of ``metric``."""
    return "min" if metric == "loss" else task.direction(metric)


def open_tracker(runtime: Runtime, trial: TrialSpec, resume_run_id: str | None,
                 step: int) -> Tracker:
    """The trial's MLflow run, opened (or ``resume_run_id`` reopened, the retry resuming at
    ``step``) with this attempt recorded; a :class:`NullTracker` when tracking is off."""
    if runtime.tracking_uri is None:
        return NullTracker()
    tracker = TrialTracker(runtime.tracking_uri, runtime.experiment_id, runtime.parent_run_id)
    tracker.start(trial, resume_run_id=resume_run_id)
    record_attempt(tracker.client, tracker.run_id, step if resume_run_id else None)
    if resume_run_id is None:
        close_lost_attempts(tracker.client, runtime.experiment_id, trial.suite, trial.key,
                            tracker.run_id)
    return tracker


def diagnostic_figure_files(tracker: TrialTracker, tracking_uri: str, key: str,
                            folder: Path) -> list[Path]:
    """The trial's own gate, gradient-norm and curvature figures, drawn in ``folder`` from
    the metrics its run logged (the tracker logs them under ``diagnostics/``)."""
    import pandas as pd

    from lstm_harness.reporting.diagnostic_plots import diagnostic_figures

    runs = pd.DataFrame([{"run_id": tracker.run_id,
                          **{f"metrics.{k}": v for k, v in tracker.metrics().items()}}])
    return list(diagnostic_figures(tracking_uri, runs, {tracker.run_id: key}, folder).values())


def reference_metrics(task) -> dict[str, float]:
    """The task's trivial baselines on the test split as ``reference.<baseline>.<metric>``."""
    return {f"{rs.REFERENCE_PREFIX}{name}.{metric}": float(value)
            for name, values in task.reference_scores("test").items()
            for metric, value in values.items()}


def start_from_trial(model: torch.nn.Module, runtime: Runtime, key: str, suite: str) -> None:
    """Load the final weights of the suite's finished trial ``key`` into ``model``
    (``train.init_from``: for example a cross-entropy model to fine-tune)."""
    from lstm_harness.tracking import load_trial_artifacts

    with tempfile.TemporaryDirectory() as folder:
        _, weights = load_trial_artifacts(runtime.tracking_uri, key, suite, Path(folder))
        try:
            model.load_state_dict(torch.load(weights, weights_only=True))
        except RuntimeError as exc:
            raise ValueError(f"init_from: trial '{key}' has a different model or task "
                             f"vocabulary: {str(exc).splitlines()[0]}") from exc


def load_trial_model(runtime: Runtime, reference: str, suite: str, task,
                     device: torch.device) -> torch.nn.Module:
    """The final model of a finished trial (``KEY`` or ``SUITE:KEY``), for scoring."""
    from lstm_harness.config import ModelConfig
    from lstm_harness.tracking import load_trial_artifacts

    with tempfile.TemporaryDirectory() as folder:
        named, weights = load_trial_artifacts(runtime.tracking_uri, reference, suite,
                                              Path(folder))
        model = build_model(ModelConfig.model_validate(named["config"]["model"]), task)
        try:
            model.load_state_dict(torch.load(weights, weights_only=True))
        except RuntimeError as exc:
            raise ValueError(f"trial '{reference}' was trained on a different model or task "
                             f"vocabulary: {str(exc).splitlines()[0]}") from exc
    return model.to(device)


def attention_figure(model: Seq2Seq, task, device: torch.device, folder: Path) -> Path:
    """The attention heatmap of the first validation example, as ``folder/attention.png``."""
    from lstm_harness.reporting.plots import attention_heatmap

    batch = next(iter(task.eval_batches("valid", 1))).to(device)
    model.eval()
    tokens, alpha = model.greedy(batch.src, batch.src_len, task.max_target_len + 1,
                                 return_attention=True)
    length = int(batch.src_len[0])
    source = [token_label(task, t, "src") for t in batch.src[0, :length].tolist()]
    output = [token_label(task, t, "tgt") for t in tokens[0].tolist()]
    return attention_heatmap(alpha[0, :, :length].cpu().numpy(), source, output,
                             folder / "attention.png", title="first validation example")


def token_label(task, token: int, side: str) -> str:
    """A token's text for figure labels (its id where the task has no text for it)."""
    return task.token_text(token, side) or str(token)


def mark_corrupt(runtime: Runtime, trial: TrialSpec, reason: str) -> None:
    """The trial's run left RUNNING by the attempt that wrote the checkpoint ends FAILED with
    ``reason``, so that the table and the report show it."""
    if runtime.tracking_uri is None:
        return
    from mlflow.tracking import MlflowClient

    fail_running_attempts(MlflowClient(tracking_uri=runtime.tracking_uri),
                          runtime.experiment_id, trial.suite, trial.key, reason)


def tune_trainable(config: dict[str, Any], runtime: Runtime) -> None:
    """Ray Tune entry point: ``config["trial"]`` is the trial's dict
    (:meth:`TrialSpec.as_dict`); resume from the last checkpoint, report with checkpoints."""
    from ray import tune

    trial = TrialSpec.from_dict(config["trial"])
    checkpoint = tune.get_checkpoint()
    resume = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            path = Path(folder) / CHECKPOINT_FILE
            try:
                resume = torch.load(path, weights_only=True)
            except Exception as exc:
                first = (str(exc).strip().splitlines() or [""])[0]
                reason = f"corrupt checkpoint {path}: {type(exc).__name__}: {first}"
                mark_corrupt(runtime, trial, reason)
                raise RuntimeError(reason) from exc

    def report(metrics: dict[str, float], payload: dict[str, Any] | None) -> None:
        if payload is None:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as folder:
            torch.save(payload, os.path.join(folder, CHECKPOINT_FILE))
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))

    try:
        execute_trial(trial, runtime, report=report, resume=resume)
    except Exception:
        traceback.print_exc()
        raise
