"""Gradient clipping for LSTMs (README "Techniques": train.clip; Pascanu et al. 2013).

Called once per step between ``loss.backward()`` and ``optimizer.step()``. ``kind``:

- ``none``: gradients untouched (the pre-clip norm is still returned for logging).
- ``norm`` (Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural
  networks"): if ||g|| > threshold then g <- threshold / ||g|| * g, with g all gradients
  together (one global L2 norm). torch's ``clip_grad_norm_`` does it (it divides by
  ||g|| + 1e-6).
- ``adaptive``: the threshold follows the gradient norm,
  tau_t = alpha * tau_{t-1} + (1 - alpha) * ||g_t||, tau_0 = threshold,
  and step t clips to tau_{t-1}: the threshold from *before* this step. Clipping to tau_t
  would let a spike raise its own ceiling by (1 - alpha) * ||g_t|| before being judged
  against it; tau_{t-1} is the causal choice (only past gradients decide what is too large),
  the same as an exponential-moving-average anomaly test. ||g_t|| is the pre-clip norm (the
  ||grad theta_t|| of the formula). A non-finite norm leaves tau unchanged.
- ``per_gate`` (README "Techniques": different thresholds for different gates based on
  gradient statistics): the LSTM gate parameters (names weight_ih*, weight_hh*, bias_ih*, bias_hh*
  with 4H rows, or 5H for highway layers) are split by rows into the gate blocks i, f, g, o
  (nn.LSTM's order; the fifth highway block is its own ``transform`` group). Each gate kind
  (input, forget, cell, output, transform) keeps its own running threshold across the whole
  model, updated by the adaptive rule above from that gate's gradient norm over all layers
  (every block of that kind together), and that gate's blocks are scaled together, like
  ``clip_grad_norm_`` on that group, so the gate's norm over all layers - and so each block's
  norm - is at most the gate's threshold tau_{t-1}. Every other parameter (embeddings,
  output layer, LayerNorm gains, attention) is clipped by norm with ``threshold``.

The hidden size H of a layer is read from its module (``hidden``, the harness layers, or
``hidden_size``, nn.LSTM / nn.LSTMCell); a tensor whose row count is neither 4H nor 5H (a GRU's
3H) is not an LSTM gate tensor. In a module with neither attribute a tensor with a row count
divisible by 4 is taken as 4 gate blocks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from lstm_harness.strict import Strict

GATES = ("input", "forget", "cell", "output", "transform")  # row-block order i, f, g, o, T
_GATE_PARAM = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh)")
_EPS = 1e-6  # as torch.nn.utils.clip_grad_norm_


class ClipConfig(Strict):
    """Gradient clipping: ``kind`` none | norm | adaptive | per_gate (see the module text)."""

    kind: Literal["none", "norm", "adaptive", "per_gate"] = "none"
    threshold: float = Field(1.0, gt=0)
    alpha: float = Field(0.95, ge=0, le=1)


@dataclass(frozen=True)
class GateBlock:
    """Rows [start, stop) of parameter ``param`` (named ``name``) belong to gate ``gate``."""

    name: str
    param: nn.Parameter
    gate: str
    start: int
    stop: int


def _hidden_of(module: nn.Module) -> int | None:
    for attr in ("hidden", "hidden_size"):
        value = getattr(module, attr, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def gate_blocks(model: nn.Module) -> tuple[list[GateBlock], list[nn.Parameter]]:
    """Split ``model``'s parameters into LSTM gate blocks and the rest (each parameter once)."""
    blocks: list[GateBlock] = []
    others: list[nn.Parameter] = []
    seen: set[int] = set()
    for mod_name, module in model.named_modules():
        hidden = _hidden_of(module)
        for name, param in module.named_parameters(recurse=False):
            if id(param) in seen:
                continue
            seen.add(id(param))
            rows = param.shape[0] if param.dim() >= 1 else 0
            n_blocks, size = 0, 0
            if _GATE_PARAM.match(name) and rows > 0:
                if hidden is not None:
                    if rows in (4 * hidden, 5 * hidden):
                        n_blocks, size = rows // hidden, hidden
                elif rows % 4 == 0:
                    n_blocks, size = 4, rows // 4
            if n_blocks == 0:
                others.append(param)
                continue
            full = f"{mod_name}.{name}" if mod_name else name
            blocks += [GateBlock(full, param, GATES[k], k * size, (k + 1) * size)
                       for k in range(n_blocks)]
    return blocks, others


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    if not tensors:
        return torch.zeros(())
    norms = [torch.linalg.vector_norm(t.detach(), 2.0) for t in tensors]
    return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]), 2.0)


class GradientClipper:
    """Clips a model's gradients in place by ``cfg``; keeps the running thresholds."""

    def __init__(self, cfg: ClipConfig) -> None:
        self.cfg = cfg
        self.tau = cfg.threshold  # adaptive: tau_{t-1}
        self.gate_tau = dict.fromkeys(GATES, cfg.threshold)  # per_gate: one tau per gate kind

    def clip(self, model: nn.Module) -> dict[str, float]:
        """Clip ``model``'s .grad tensors; return ``clip.*`` values to log.

        ``clip.grad_norm``: the pre-clip global L2 norm of all gradients; ``clip.threshold``:
        the threshold applied (norm: threshold; adaptive: tau_{t-1}; per_gate: the one for
        non-gate parameters); per_gate also ``clip.threshold.<gate>`` (the tau_{t-1} applied)
        and ``clip.grad_norm.<gate>`` (that gate's pre-clip norm over all layers) for each
        gate kind the model has. ``none`` returns only ``clip.grad_norm``.
        """
        kind = self.cfg.kind
        if kind == "per_gate":
            return self._clip_per_gate(model)
        params = [p for p in model.parameters() if p.grad is not None]
        if kind == "none":
            return {"clip.grad_norm": float(_norm([p.grad for p in params]))}
        max_norm = self.cfg.threshold if kind == "norm" else self.tau
        total = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        if kind == "adaptive" and math.isfinite(total):
            self.tau = self.cfg.alpha * self.tau + (1 - self.cfg.alpha) * total
        return {"clip.grad_norm": total, "clip.threshold": max_norm}

    def _clip_per_gate(self, model: nn.Module) -> dict[str, float]:
        blocks, others = gate_blocks(model)
        blocks = [b for b in blocks if b.param.grad is not None]
        others = [p for p in others if p.grad is not None]
        by_gate: dict[str, list[GateBlock]] = {}
        for block in blocks:
            by_gate.setdefault(block.gate, []).append(block)
        gate_norms = {gate: _norm([b.param.grad[b.start:b.stop] for b in group])
                      for gate, group in by_gate.items()}
        other_norm = _norm([p.grad for p in others])
        total = float(torch.sqrt(sum((n.cpu() ** 2 for n in gate_norms.values()),
                                     other_norm.cpu() ** 2)))
        logs = {"clip.grad_norm": total, "clip.threshold": self.cfg.threshold}
        alpha = self.cfg.alpha
        for gate, group in by_gate.items():
            norm, tau = float(gate_norms[gate]), self.gate_tau[gate]
            coef = tau / (norm + _EPS)
            if coef < 1:  # blocks under the threshold are left bit-for-bit as they are
                for b in group:
                    b.param.grad[b.start:b.stop].mul_(coef)
            logs[f"clip.threshold.{gate}"] = tau
            logs[f"clip.grad_norm.{gate}"] = norm
            if math.isfinite(norm):
                self.gate_tau[gate] = alpha * tau + (1 - alpha) * norm
        if others:
            torch.nn.utils.clip_grad_norm_(others, self.cfg.threshold)
        return logs

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The running thresholds (adaptive tau, per-gate taus), for resuming a run."""
        return {"tau": self.tau, "gate_tau": dict(self.gate_tau)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tau = float(state["tau"])
        self.gate_tau = {gate: float(value) for gate, value in state["gate_tau"].items()}
