"""The monitors wired into trials: NaN handling, anomaly actions, logging, checkpoints."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

import lstm_harness.trial as trial_module
from lstm_harness import run_schema as rs
from lstm_harness.config import MonitorConfig
from lstm_harness.diagnostics.gradients import NonFiniteError, TrainingStopped
from lstm_harness.diagnostics.monitor import Monitors
from lstm_harness.suite import resolve_config
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.tracking import prepare_experiment
from lstm_harness.trial import Runtime, execute_trial
from lstm_harness.trial_spec import TrialSpec, TrialTask

TASK = TrialTask("copy", "copy", {"min_len": 3, "max_len": 6, "n_valid": 64, "n_test": 32})


def trial(monitor: dict, steps: int = 12, **train) -> TrialSpec:
    config = resolve_config({
        "model": {"embed": 8, "hidden": 16, "layers": 1},
        "train": {"steps": steps, "batch_size": 8, "eval_every": steps, "log_every": 1,
                  **train},
        "monitor": monitor,
    }, [])
    return TrialSpec(key="m|copy|s0", suite="monitors", seed=0, task=TASK, config=config)


def run_logged(monitor: dict, steps: int = 12, **train) -> tuple[dict, list[tuple[int, dict]]]:
    logs: list[tuple[int, dict]] = []
    original = trial_module.train

    def capture(*args, **kwargs):
        args = list(args)
        on_log = args[-2]

        def log(state, metrics):
            logs.append((state.step, dict(metrics)))
            on_log(state, metrics)
        args[-2] = log
        return original(*args, **kwargs)

    trial_module.train = capture
    try:
        final = execute_trial(trial(monitor, steps, **train), Runtime(None, None, None))
    finally:
        trial_module.train = original
    return final, logs


def test_injected_nan_fails_the_trial_with_its_step_in_mlflow(tmp_path, one_thread) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "monitors", tmp_path / "artifacts")
    with pytest.raises(NonFiniteError, match="loss is nan at step 5"):
        execute_trial(trial({"inject_nan_at": 5}), Runtime(uri, experiment, None))
    runs = MlflowClient(uri).search_runs([experiment])
    assert len(runs) == 1 and runs[0].info.status == "FAILED"
    assert "loss is nan at step 5" in runs[0].data.tags[rs.TAG_FAILURE]


def test_nan_is_caught_even_with_every_monitor_off(one_thread) -> None:
    with pytest.raises(NonFiniteError, match="at step 2"):
        execute_trial(trial({"grad_anomaly": False, "inject_nan_at": 2}),
                      Runtime(None, None, None))


def test_monitors_off_log_nothing_of_theirs(one_thread) -> None:
    final, logs = run_logged({"grad_anomaly": False})
    keys = {k for _, m in logs for k in m}
    assert not any(k.startswith(("gates.", "cells.", "grad.", "landscape.", "info."))
                   for k in keys)
    assert not any(k.startswith(("diag.", "info.")) for k in final)


def test_every_monitor_logs_on_schedule(one_thread) -> None:
    monitor = {"gates": True, "cells": True, "curvature": True, "curvature_iters": 3,
               "info_flow": True, "info_k": 2, "every": 4}
    final, logs = run_logged(monitor)
    gate_steps = sorted({s for s, m in logs if "gates.enc.l0.forget.mean" in m})
    assert gate_steps == [4, 8, 12]
    assert {s for s, m in logs if "landscape.top_eigenvalue" in m} == {4, 8, 12}
    assert {s for s, m in logs if "grad.norm" in m} == set(range(1, 13))
    layer_steps = {s for s, m in logs if any(k.startswith("grad.layer.") for k in m)}
    assert layer_steps == {4, 8, 12}
    layers = [m for s, m in logs if s == 12 and "grad.layer.head" in m][0]
    assert "grad.layer.decoder.layers.0" in layers
    assert all(m["gates.enc.l0.forget.healthy"] in (0.0, 1.0)
               for _, m in logs if "gates.enc.l0.forget.healthy" in m)
    for key in ("diag.grad_anomalies", "diag.forget_healthy", "diag.top_eigenvalue",
                "info.mi.k1", "info.mi.k2"):
        assert key in final and final[key] == final[key]  # present and not NaN
    last_eig = [m["landscape.top_eigenvalue"] for s, m in logs if s == 12
                and "landscape.top_eigenvalue" in m][0]
    assert final["diag.top_eigenvalue"] == last_eig


def small_model_with_grads(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(2, 1)
    for p in model.parameters():
        p.grad = torch.full_like(p, value)
    return model


def monitors(**cfg) -> Monitors:
    task = CopyTask(CopyParams(min_len=2, max_len=3, n_valid=8, n_test=8))
    return Monitors(MonitorConfig(**cfg), task, torch.device("cpu"))


def test_skip_and_stop_actions_on_a_planted_spike() -> None:
    loss = torch.tensor(1.0)
    skip = monitors(grad_window=5, grad_action="skip")
    for step in range(5):
        assert skip.after_backward(small_model_with_grads(1.0 + 0.01 * step), loss, step) \
            == (False, pytest.approx({"grad.norm": skip.detector.history[-1],
                                      "grad.norm_mean": skip.detector.statistics()[0]}))
    skipped, metrics = skip.after_backward(small_model_with_grads(50.0), loss, 5)
    assert skipped and metrics["grad.anomaly"] == 1.0
    assert skip.final(small_model_with_grads(0.0))["diag.grad_anomalies"] == 1.0

    stop = monitors(grad_window=5, grad_action="stop")
    for step in range(5):
        stop.after_backward(small_model_with_grads(1.0), loss, step)
    with pytest.raises(TrainingStopped, match="at step 5 exceeds mean"):
        stop.after_backward(small_model_with_grads(50.0), loss, 5)

    logged = monitors(grad_window=5)  # action log: flagged, the update goes ahead
    for step in range(5):
        logged.after_backward(small_model_with_grads(1.0), loss, step)
    assert logged.after_backward(small_model_with_grads(50.0), loss, 5)[0] is False


def test_a_nan_gradient_names_the_parameter() -> None:
    model = small_model_with_grads(1.0)
    model.bias.grad[0] = float("nan")
    with pytest.raises(NonFiniteError, match="'bias' is non-finite .* at step 7"):
        monitors().after_backward(model, torch.tensor(0.5), 7)


def test_saturated_forget_gate_fails_the_health_summary(one_thread) -> None:
    task = CopyTask(CopyParams(min_len=3, max_len=6, n_valid=16, n_test=16))
    from lstm_harness.config import ModelConfig
    from lstm_harness.models.factory import build_model
    model = build_model(ModelConfig(embed=8, hidden=16, layers=1), task)
    mon = Monitors(MonitorConfig(gates=True), task, torch.device("cpu"))
    assert mon.final(model)["diag.forget_healthy"] in (0.0, 1.0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias_hh") and "encoder" in name:
                p[16:32] = 5.0  # the forget block of (i, f, g, o)
    summary = mon.final(model)
    assert summary["diag.forget_healthy"] == 0.0
    assert any("enc l0 forget" in flag for flag in mon.flags)


def test_state_dict_round_trip_keeps_the_detector_and_the_start() -> None:
    mon = monitors(curvature=True, grad_window=4)
    model = small_model_with_grads(1.0)
    mon.start(model)
    for step in range(6):
        mon.after_backward(small_model_with_grads(1.0 + step), torch.tensor(1.0), step)
    state = mon.state_dict()
    again = monitors(curvature=True, grad_window=4)
    again.load_state_dict(state)
    assert list(again.detector.history) == list(mon.detector.history)
    assert again.detector.anomalies == mon.detector.anomalies
    assert torch.equal(again.initial["weight"], mon.initial["weight"])
    again.start(torch.nn.Linear(2, 1))  # a resumed trial keeps its original start
    assert torch.equal(again.initial["weight"], mon.initial["weight"])


def test_diagnostic_figures_are_trial_artifacts(tmp_path, one_thread) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "monitors", tmp_path / "artifacts")
    execute_trial(trial({"gates": True, "curvature": True, "curvature_iters": 2, "every": 4}),
                  Runtime(uri, experiment, None))
    client = MlflowClient(uri)
    run = client.search_runs([experiment])[0]
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id, "diagnostics"))
    assert names == ["diagnostics/curvature.png", "diagnostics/gate_means.png",
                     "diagnostics/grad_norm.png"]


def test_monitor_errors_survive_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(NonFiniteError("loss is nan at step 3", "loss", 3)))
    assert (str(error), error.what, error.step) == ("loss is nan at step 3", "loss", 3)
    stopped = pickle.loads(pickle.dumps(TrainingStopped("spike at step 9")))
    assert (str(stopped), stopped.reason) == ("spike at step 9", "spike at step 9")
