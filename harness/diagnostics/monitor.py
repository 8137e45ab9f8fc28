"""The monitors a trial switches on (``monitor:`` in a suite, :class:`MonitorConfig`), bundled
for the training loop.

The loop calls, in order: :meth:`Monitors.check_loss` before backward (fault injection),
:meth:`Monitors.after_backward` after it (a non-finite loss or gradient always raises; the
gradient norm and its anomalies with ``grad_anomaly``; returns whether to skip the update),
:meth:`Monitors.periodic` after every ``every``-th update (per-layer gradient norms with
``grad_anomaly``; gates, cells, curvature on a fixed validation batch) and
:meth:`Monitors.final` once at the end (information flow and the
summary metrics the tables show). Each returns MLflow metrics. A monitor that is off costs
nothing: the periodic and final work is skipped and the gradient norm is not computed.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import torch
from pydantic import Field

from lstm_harness import run_schema as rs
from lstm_harness.diagnostics.gates import HealthyRanges, gate_health, gate_statistics, unhealthy
from lstm_harness.diagnostics.gradients import (
    GradientAnomalyDetector,
    TrainingStopped,
    check_finite,
    grad_norm,
    layer_grad_norms,
)
from lstm_harness.diagnostics.info_flow import information_flow
from lstm_harness.diagnostics.landscape import (
    distance_from_init,
    double_backward_ready,
    gradient_predictiveness,
    snapshot,
    top_hessian_eigenvalue,
)
from lstm_harness.strict import Strict
from lstm_harness.tasks.base import PAD, ForecastBatch, TaskBase, concat_batches

GATE_KEY = re.compile(rs.GATE_KEY_PATTERN)
MONITOR_BATCH = 32  # validation examples the gate, cell and curvature monitors read
INFO_EXAMPLES = 256  # validation examples the information-flow probe reads (half to fit)


class MonitorConfig(Strict):
    """Training diagnostics (``harness/diagnostics/``), logged to the trial's MLflow run
    (``monitor:`` of a trial config: :class:`~lstm_harness.config.TrialConfig` composes it).

    ``every`` steps on a fixed validation batch: gate statistics and health (``gates``),
    cell-state utilisation (``cells``), the top Hessian eigenvalue, gradient predictiveness
    and the distance from the initial weights (``curvature``). Every step: the gradient norm
    and its anomalies (``grad_anomaly``: G_t > mu + ``grad_k`` sigma over the last
    ``grad_window`` steps; ``grad_action`` log | skip (the update) | stop (the trial)). At the
    end: information flow I(h_t; y_{t+k}) for k = 1..``info_k`` (``info_flow``). A NaN or Inf
    loss or gradient always fails the trial with the step. ``inject_nan_at``: fault injection
    for testing the harness (the loss of that step is made NaN).
    """

    gates: bool = False
    cells: bool = False
    grad_anomaly: bool = True
    grad_action: Literal["log", "skip", "stop"] = "log"
    grad_window: int = Field(100, ge=2)
    grad_k: float = Field(3.0, gt=0)
    curvature: bool = False
    curvature_iters: int = Field(10, ge=1)
    info_flow: bool = False
    info_k: int = Field(5, ge=1)
    every: int = Field(50, ge=1)
    forget_range: tuple[float, float] = (0.3, 0.7)
    input_range: tuple[float, float] = (0.2, 0.6)
    output_range: tuple[float, float] = (0.2, 0.8)
    inject_nan_at: int | None = Field(None, ge=0)


class Monitors:
    def __init__(self, cfg: MonitorConfig, task: TaskBase, device: torch.device) -> None:
        self.cfg = cfg
        self.ranges = HealthyRanges(forget=cfg.forget_range, input=cfg.input_range,
                                    output=cfg.output_range)
        self.detector = GradientAnomalyDetector(window=cfg.grad_window, k=cfg.grad_k,
                                                warmup=min(20, cfg.grad_window))
        self.periodic_on = cfg.gates or cfg.cells or cfg.curvature
        self.batch = self.info_batch = None
        if self.periodic_on:  # gates, cells, curvature (and the final gate summary)
            self.batch = next(iter(task.eval_batches("valid", MONITOR_BATCH))).to(device)
        if cfg.info_flow:
            parts, count = [], 0
            for part in task.eval_batches("valid", 64):
                parts.append(part)
                count += part.size
                if count >= INFO_EXAMPLES:
                    break
            self.info_batch = concat_batches(parts).to(device)
        self.initial: dict[str, torch.Tensor] | None = None
        self.last: dict[str, float] = {}
        self.flags: list[str] = []  # unhealthy gates at the end

    @property
    def draws_figures(self) -> bool:
        """Whether the trial has per-step diagnostics worth a figure."""
        return self.periodic_on

    def start(self, model: torch.nn.Module) -> None:
        """Remember the weights training starts from (not again on resume)."""
        if self.cfg.curvature and self.initial is None:
            self.initial = snapshot(model)

    # -- every step ----------------------------------------------------------------------
    def check_loss(self, loss: torch.Tensor, step: int) -> torch.Tensor:
        """The loss, made NaN at ``inject_nan_at`` (fault injection); the non-finite check
        itself happens on the gradients and the loss in :meth:`after_backward`."""
        if self.cfg.inject_nan_at is not None and step == self.cfg.inject_nan_at:
            return loss * float("nan")
        return loss

    def after_backward(self, model: torch.nn.Module, loss: torch.Tensor, step: int
                       ) -> tuple[bool, dict[str, float]]:
        """(skip this update?, metrics). Raises on a non-finite loss or gradient, and on an
        anomaly with ``grad_action: stop``."""
        check_finite(loss, model, step)
        if not self.cfg.grad_anomaly:
            return False, {}
        norm = grad_norm(model)
        anomaly = self.detector.update(norm)
        mean, std = self.detector.statistics()
        metrics = {rs.GRAD_NORM: norm, rs.GRAD_NORM_MEAN: mean}
        if anomaly:
            metrics[rs.GRAD_ANOMALY] = 1.0
            if self.cfg.grad_action == "stop":
                raise TrainingStopped(
                    f"gradient norm {norm:.4g} at step {step} exceeds mean + "
                    f"{self.cfg.grad_k:g} std of the last {self.cfg.grad_window} steps "
                    f"({mean:.4g} + {self.cfg.grad_k:g} x {std:.4g}); "
                    "monitor.grad_action is stop")
        return anomaly and self.cfg.grad_action == "skip", metrics

    # -- every ``every`` steps -------------------------------------------------------------
    def due(self, step: int) -> bool:
        return (self.periodic_on or self.cfg.grad_anomaly) and step % self.cfg.every == 0

    def periodic(self, model: torch.nn.Module) -> dict[str, float]:
        """Called after an update: its gradients are still on the parameters."""
        metrics: dict[str, float] = {}
        if self.cfg.grad_anomaly:
            metrics.update(layer_grad_norms(model))
        if self.cfg.gates or self.cfg.cells:
            stats = gate_statistics(model, self.batch)
            if not self.cfg.cells:
                stats = {k: v for k, v in stats.items() if not k.startswith(rs.CELL_PREFIX)}
            if not self.cfg.gates:
                stats = {k: v for k, v in stats.items() if not k.startswith(rs.GATE_PREFIX)}
            else:
                stats.update(gate_health(stats, self.ranges))
            metrics.update(stats)
        if self.cfg.curvature:
            metrics.update(self.curvature(model))
        self.last.update(metrics)
        return metrics

    def curvature(self, model: torch.nn.Module) -> dict[str, float]:
        """Top Hessian eigenvalue and gradient predictiveness of the monitoring batch's
        loss (model in eval mode: no dropout noise), distance from the initial weights."""
        was_training = model.training
        model.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        saved = [None if p.grad is None else p.grad.clone() for p in params]
        try:
            with double_backward_ready(model):
                eig = top_hessian_eigenvalue(lambda: model.loss(self.batch), params,
                                             iters=self.cfg.curvature_iters)
            predictive = gradient_predictiveness(lambda: model.loss(self.batch), params,
                                                 step_size=1e-3)
        finally:
            for p, g in zip(params, saved, strict=True):
                p.grad = g
            model.train(was_training)
        return {rs.LANDSCAPE_TOP_EIG: eig, rs.LANDSCAPE_PREDICTIVENESS: predictive,
                rs.LANDSCAPE_DISTANCE: distance_from_init(model, self.initial)}

    # -- at the end ----------------------------------------------------------------------
    def final(self, model: torch.nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.cfg.grad_anomaly:
            out[rs.DIAG_GRAD_ANOMALIES] = float(self.detector.anomalies)
        if self.cfg.gates:
            stats = gate_statistics(model, self.batch)
            healthy = [v for k, v in gate_health(stats, self.ranges).items()
                       if (m := GATE_KEY.match(k)) and m["gate"] == "forget"]
            out[rs.DIAG_FORGET_HEALTHY] = float(all(h == 1.0 for h in healthy))
            self.flags = unhealthy(stats, self.ranges)
        if self.cfg.curvature and rs.LANDSCAPE_TOP_EIG in self.last:
            out[rs.DIAG_TOP_EIG] = self.last[rs.LANDSCAPE_TOP_EIG]
        if self.cfg.info_flow:
            out.update(self.info_flow(model))
        return out

    @torch.no_grad()
    def info_flow(self, model: torch.nn.Module) -> dict[str, float]:
        """I(h_t; y_{t+k}) lower bounds from the decoder's states (teacher forced) on up to
        ``INFO_EXAMPLES`` validation examples, for k = 1..info_k (a linear probe fitted on
        half of them, ``diagnostics/info_flow.py``). Forecast targets are binned into 8
        quantiles of the first forecast variable."""
        was_training = model.training
        model.eval()
        batch = self.info_batch
        if isinstance(batch, ForecastBatch):
            memory = model.encode_batch(batch)
            last = batch.history[:, -1:, : model.targets]
            prev = torch.cat([last, batch.target[:, :-1]], dim=1)
            feats, _ = model.teacher_forced(memory, model.tgt_proj(prev))
            values = batch.target[..., 0]
            q = torch.linspace(0, 1, 9, device=values.device, dtype=values.dtype)[1:-1]
            edges = torch.quantile(values.flatten(), q)
            labels = torch.bucketize(values, edges).masked_fill(~batch.step_mask, -1)
            n_classes = 8
        else:
            from lstm_harness.models.seq2seq import decoder_inputs
            memory = model.encode_batch(batch.src, batch.src_len)
            feats, _ = model.teacher_forced(memory, model.embed_tgt(decoder_inputs(batch.tgt)))
            labels = batch.tgt.masked_fill(batch.tgt == PAD, -1)
            n_classes = int(labels.max()) + 1
        model.train(was_training)
        mi = information_flow(feats.float().cpu(), labels.cpu(),
                              list(range(1, self.cfg.info_k + 1)), n_classes)
        return {f"{rs.INFO_MI_PREFIX}{k}": float(v) for k, v in mi.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"detector": self.detector.state_dict(), "initial": self.initial,
                "last": self.last}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.detector.load_state_dict(state["detector"])
        self.initial = state["initial"]
        self.last = dict(state["last"])
