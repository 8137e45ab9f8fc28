"""Gradient monitors (README "Diagnostics": grad_anomaly, non-finite values).

Call after ``loss.backward()`` and before ``optimizer.step()`` (and before any clipping: the
norms are of the raw gradients).

- :func:`grad_norm`: G_t = ||grad theta_t||_2 = sqrt(sum_p ||g_p||_2^2) over every parameter
  with a ``.grad`` (the value ``torch.nn.utils.clip_grad_norm_`` returns).
- :func:`layer_grad_norms`: the same norm per layer (grouping below).
- :class:`GradientAnomalyDetector`: Anomaly = G_t > mu_G + k sigma_G, with mu_G, sigma_G the
  mean and standard deviation of the previous ``window`` accepted norms.
- :class:`GradientAction`: what an anomaly does: log it, skip the optimizer step, or stop the
  trial (:class:`TrainingStopped`).
- :func:`check_finite`: :class:`NonFiniteError` when the loss or a gradient is NaN/Inf, naming
  which.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import nn

from lstm_harness import run_schema as rs
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer

# Modules whose parameters are reported together as one recurrent layer.
LAYER_TYPES: tuple[type[nn.Module], ...] = (
    FusedLSTMLayer, CustomLSTMLayer, BidirectionalLayer, nn.RNNBase, nn.RNNCellBase)


class TrainingStopped(RuntimeError):
    """The trial was stopped on purpose (e.g. a gradient anomaly with action ``stop``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NonFiniteError(RuntimeError):
    """The loss or a gradient is NaN or infinite; ``what`` is ``"loss"`` or the parameter name."""

    def __init__(self, message: str, what: str, step: int) -> None:
        super().__init__(message)
        self.what, self.step = what, step

    def __reduce__(self):  # picklable: Ray sends a trial's exception to the driver
        return type(self), (self.args[0], self.what, self.step)


def _grads(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


def _norm(grads: list[torch.Tensor]) -> float:
    """sqrt(sum ||g||^2), computed as the norm of the per-tensor norms (as clip_grad_norm_)."""
    if not grads:
        return 0.0
    norms = [torch.linalg.vector_norm(g.detach(), 2.0) for g in grads]
    device = norms[0].device
    return float(torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms]), 2.0))


def grad_norm(model: nn.Module) -> float:
    """G = ||grad theta||_2 over all parameters with a gradient (0.0 when none has one)."""
    return _norm(_grads(model.parameters()))


def layer_group(model: nn.Module, name: str) -> str:
    """The group of parameter ``name``: the path of the outermost recurrent layer
    (:data:`LAYER_TYPES`) that holds it, e.g. ``encoders.0.stack.layers.0`` (both directions of
    a bidirectional layer, LayerNorm gains included) or ``decoder.layers.0``; otherwise the path
    of the module that owns it (``head``, ``src_embed``, ``tgt_embed``, ``bridge``,
    ``attention.W``, ``encoders.0.stack.projections.0``); a parameter of the root module itself
    is its own group (its name)."""
    parts = name.split(".")
    module: nn.Module = model
    for depth, part in enumerate(parts[:-1]):
        module = getattr(module, part)
        if isinstance(module, LAYER_TYPES):
            return ".".join(parts[: depth + 1])
    return ".".join(parts[:-1]) or name


def layer_grad_norms(model: nn.Module) -> dict[str, float]:
    """``{"grad.layer.<group>": ||grad of that group||_2}`` with groups from :func:`layer_group`,
    in the order of ``model.named_parameters()``. Parameters without a gradient are left out
    (a group none of whose parameters has one is absent). The squares of the values sum to
    :func:`grad_norm` squared."""
    groups: dict[str, list[torch.Tensor]] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            groups.setdefault(rs.GRAD_LAYER_PREFIX + layer_group(model, name), []).append(p.grad)
    return {key: _norm(grads) for key, grads in groups.items()}


class GradientAnomalyDetector:
    """Flags gradient-norm spikes: G_t > mu_G + k sigma_G.

    mu_G and sigma_G are the mean and the (population, ddof = 0) standard deviation of the
    history: the last ``window`` *accepted* norms before G_t (G_t itself is not included).

    - No flag while the history holds fewer than ``warmup`` norms (the first ``warmup`` calls
      never flag).
    - Every finite G_t joins the history after it is judged, anomalous or not: the statistics
      follow a lasting change of the gradient scale (common early in training) instead of
      flagging every later step; a spike widens sigma_G for the next ``window`` steps.
      ``consecutive`` counts the current run of anomalies.
    - A non-finite G_t (NaN/Inf) is always an anomaly, warmup or not, and never enters the
      history.

    Counters: ``steps`` (calls of :meth:`update`), ``anomalies`` (flags in total),
    ``consecutive``; ``threshold`` is mu_G + k sigma_G of the last call (NaN in warmup).
    """

    def __init__(self, window: int = 100, k: float = 3.0, warmup: int = 20) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        if not 2 <= warmup <= window:
            raise ValueError(f"warmup must be in [2, window={window}], got {warmup}")
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        self.window, self.k, self.warmup = window, float(k), warmup
        self.history: deque[float] = deque(maxlen=window)
        self.steps = self.anomalies = self.consecutive = 0
        self.threshold = math.nan

    def statistics(self) -> tuple[float, float]:
        """(mu_G, sigma_G) of the history (NaN, NaN when it is empty)."""
        n = len(self.history)
        if n == 0:
            return math.nan, math.nan
        mean = math.fsum(self.history) / n
        var = math.fsum((g - mean) ** 2 for g in self.history) / n
        return mean, math.sqrt(var)

    def update(self, g: float) -> bool:
        """Judge G_t = ``g`` against the history, then add it if finite; True: anomaly."""
        g = float(g)
        self.steps += 1
        if len(self.history) >= self.warmup:
            mean, std = self.statistics()
            self.threshold = mean + self.k * std
        else:
            self.threshold = math.nan
        anomaly = not math.isfinite(g) or g > self.threshold  # NaN threshold: False
        if anomaly:
            self.anomalies += 1
            self.consecutive += 1
        else:
            self.consecutive = 0
        if math.isfinite(g):
            self.history.append(g)
        return anomaly

    def metrics(self) -> dict[str, float]:
        """Numbers to log: the anomaly count and the current threshold."""
        return {"grad.anomalies": float(self.anomalies), "grad.threshold": self.threshold}

    def state_dict(self) -> dict[str, Any]:
        return {"window": self.window, "k": self.k, "warmup": self.warmup,
                "history": list(self.history), "steps": self.steps,
                "anomalies": self.anomalies, "consecutive": self.consecutive,
                "threshold": self.threshold}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; refuses one saved with another window, k or warmup."""
        saved = (state["window"], float(state["k"]), state["warmup"])
        if saved != (self.window, self.k, self.warmup):
            raise ValueError(f"state of a detector with (window, k, warmup) = {saved}, this "
                             f"one has {(self.window, self.k, self.warmup)}")
        self.history = deque((float(g) for g in state["history"]), maxlen=self.window)
        self.steps, self.anomalies = int(state["steps"]), int(state["anomalies"])
        self.consecutive = int(state["consecutive"])
        self.threshold = float(state["threshold"])


ActionKind = Literal["log", "skip", "stop"]


class GradientAction:
    """What an anomalous step does: ``log`` (step as usual; the detector's counts are the log),
    ``skip`` (no optimizer step this time; ``skipped`` counts them) or ``stop`` (raise
    :class:`TrainingStopped` with the reason)."""

    KINDS: tuple[str, ...] = ("log", "skip", "stop")

    def __init__(self, kind: ActionKind = "log") -> None:
        if kind not in self.KINDS:
            raise ValueError(f"unknown gradient action '{kind}'; choose one of {self.KINDS}")
        self.kind = kind
        self.skipped = 0

    def __call__(self, anomaly: bool, step: int, norm: float, threshold: float) -> bool:
        """True: take the optimizer step. ``threshold``: mu_G + k sigma_G the norm was judged
        against (the detector's ``threshold``)."""
        if not anomaly or self.kind == "log":
            return True
        if self.kind == "skip":
            self.skipped += 1
            return False
        raise TrainingStopped(f"gradient norm anomaly at step {step}: ||g|| = {norm:.6g} > "
                              f"mu + k sigma = {threshold:.6g}")


def check_finite(loss: torch.Tensor, model: nn.Module, step: int) -> None:
    """Raise :class:`NonFiniteError` if ``loss`` is NaN/Inf ("loss is nan at step 7") or else
    if a gradient has a NaN/Inf entry, naming the first such parameter in
    ``model.named_parameters()`` order. One device synchronisation when all is finite."""
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteError(f"loss is {value} at step {step}", "loss", step)
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return
    device = named[0][1].device
    finite = torch.stack([g.detach().isfinite().all().to(device) for _, g in named])
    if bool(finite.all()):
        return
    index = int((~finite).nonzero()[0])
    name, g = named[index]
    bad = int((~g.detach().isfinite()).sum())
    raise NonFiniteError(f"gradient of parameter '{name}' is non-finite ({bad} of {g.numel()} "
                         f"entries NaN/Inf) at step {step}", name, step)
