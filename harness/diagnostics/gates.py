"""Gate activation and cell-state statistics of every LSTM layer (README "Diagnostics":
gate activation monitoring, healthy ranges, memory utilisation).

:func:`gate_statistics` runs the model once (eval mode, no gradient) on a fixed batch and
records each LSTM layer's actual input sequence x_t, its initial state and its outputs h_t:
with temporary forward hooks for whole-sequence calls and, for decoders that run step by step,
the layers' own step observers (``with layer.observe_steps(fn):``, nothing set on the module).
Each recorded sequence is then traced through the layer's reference cell, ``layer.trace(x,
state, lengths, outputs)``: :func:`~lstm_harness.models.cell.lstm_cell` run step by step on the
layer's weights, its actual inputs x_t and its actual previous hidden states h_{t-1} (the
recorded outputs, shifted by one step; the initial state first), the cell state carried from
the recorded C_0 (:mod:`lstm_harness.models.cell` and :mod:`lstm_harness.models.layers` state
the equations; this module has no copy of them):

    i_t = sigma(W_ii x_t + b_ii + b_hi + R_i(W_hi h_{t-1}))      (and f_t, o_t alike)
    g_t = tanh(W_ig x_t + b_ig + b_hg + R_g(W_hg h_{t-1}))       (the candidate C~_t)
    C_t = f_t C_{t-1} + i_t g_t                                    (from the initial state C_0)

with R the identity, or for the LayerNorm LSTM (Ba et al. 2016) R_k(z) = gain_k * LN(z) +
bias_k per gate; self-attention layers (Cheng et al. 2016) read [h_{t-1}; h~_t] with h~_t the
attention over the layer's earlier outputs. The highway transform gate
T_t = sigma(W_T [h_{t-1}, x_t] + b_T) is reported as a fifth gate ``transform``. A fused layer
(nn.LSTM's kernel) is traced through the same reference step with every option off.

C_t is the cell state the layer carries to the next step: with zoneout on C (``zoneout_c``,
at evaluation its expectation) C_t = p C_{t-1} + (1 - p) (f_t C_{t-1} + i_t g_t); otherwise the
formula above. The trace's h_t = o_t tanh(LN(C_t)) (+ highway, residual_step, zoneout) is
compared with the output the layer actually produced (the fused kernel, the compiled or
PyTorch loop, or ``step``): the largest difference is reported (``recompute_error``), a check
that the fast paths and the reference cell agree.

Keys of the returned dict (stack: ``enc``, or ``enc0``, ``enc1``, ... with several encoder
streams, ``dec``, or ``stack`` for a bare :class:`~harness.models.stack.LSTMStack`; k: the
layer index from 0; gate: ``input`` | ``forget`` | ``cell`` (the candidate g) | ``output`` |
``transform`` (highway layers only)):

- ``gates.{stack}.l{k}.{gate}.mean`` / ``.var``: mean and (population) variance of the
  activation over every example, counted step and unit;
- ``gates.{stack}.l{k}.{gate}.saturated``: the share of those activations that are saturated:
  a < 0.05 or a > 0.95 for the sigmoid gates (input, forget, output, transform), |g| > 0.95
  for the tanh candidate ``cell``;
- ``cells.{stack}.l{k}.utilisation``: memory utilisation ||std_t(C_t)|| / ||mean_t(C_t)||
  computed per example: mean and population std over the example's counted steps, per unit;
  Euclidean norms over the units; the ratio (denominator floored at 1e-8) averaged over the
  examples with at least 2 counted steps (NaN if none);
- ``cells.{stack}.l{k}.norm``: mean over counted (example, step) of ||C_t||_2 (over units);
- ``gates.{stack}.l{k}.recompute_error``: max |h_t traced - h_t actual| over counted steps
  (~1e-7 in float32; larger means a fast path no longer follows the reference cell);
- ``gates.{stack}.l{k}.skipped`` = 1.0 for a layer of a kind not known here (no other keys).

Counted steps: steps within each sequence's length (the ``lengths`` a layer is run with), and
for the decoder only target positions that count (``tgt != PAD`` of a
:class:`~tasks.base.Seq2SeqBatch`, ``step_mask`` of a :class:`~tasks.base.ForecastBatch`).
Padding is excluded everywhere, so padded inputs do not change the statistics.

Bidirectional layers: both directions pooled under the keys above (the gates' values of both
directions together; for the cells the state [C_fwd; C_bwd] of both directions at the same
time position), and each direction under ``gates.{stack}.l{k}.fwd.{gate}.{stat}``,
``gates.{stack}.l{k}.bwd.{gate}.{stat}``, ``cells.{stack}.l{k}.fwd.utilisation`` and so on.

Eval mode: input/output/recurrent dropout and weight-drop are off, zoneout is its expectation
(h_t = p h_{t-1} + (1 - p) h~_t, and C_t above), as the layers compute it. Decoders with
attention run step by step (each layer's recorded steps form its sequence), without attention
in one call over the sequence; every recorded call of a layer is pooled into its statistics.

Cost: nothing unless called (no hooks or observers stay registered); a call is one forward
pass of the model plus one step-by-step run of the reference cell of the same size.
"""

from __future__ import annotations

import math
import re
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from pydantic import model_validator
from torch import Tensor, nn

from lstm_harness import run_schema as rs
from lstm_harness.models.cell import GateTrace
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer
from lstm_harness.models.stack import LSTMStack
from lstm_harness.strict import Strict
from lstm_harness.tasks.base import PAD

GATES = ("input", "forget", "cell", "output")
SIGMOID_GATES = ("input", "forget", "output", "transform")
LOW, HIGH = 0.05, 0.95  # saturation thresholds (|g| > HIGH for the tanh candidate)
_EPS = 1e-8


@dataclass
class LayerTrace:
    """The traced activations of one direction of one layer over one sequence batch.

    Every tensor is [B, T, H] in the original time order (a backward direction is turned back),
    except the masks [B, T]: ``valid`` the steps the layer ran (within the length), ``counted``
    the steps in the statistics (valid, and not target padding for a decoder). ``hidden`` is
    the reference cell's h_t, ``actual`` the layer's output h_t; both are meaningful where
    valid."""

    gates: dict[str, Tensor]
    cells: Tensor
    hidden: Tensor
    actual: Tensor
    valid: Tensor
    counted: Tensor


def _with_actual(trace: GateTrace, actual: Tensor) -> LayerTrace:
    return LayerTrace(trace.gates, trace.cells, trace.hidden, actual, trace.valid, trace.valid)


# -- recording the layers as the model runs ----------------------------------------------------

Site = tuple[str, int, str | None]  # (stack, layer index, direction: None | "fwd" | "bwd")


@dataclass
class _Record:
    sequences: list[tuple[Tensor, tuple | None, Tensor | None, Tensor]] = field(
        default_factory=list)  # (x, state, lengths, outputs) of each forward call
    steps: list[tuple[Tensor, tuple, Tensor]] = field(
        default_factory=list)  # (x_t, (h_{t-1}, C_{t-1}), h_t) of each step call


def _traceable(layer: nn.Module) -> bool:
    if isinstance(layer, BidirectionalLayer):
        return _traceable(layer.fwd) and _traceable(layer.bwd)
    return isinstance(layer, FusedLSTMLayer | CustomLSTMLayer)


class _Recorder:
    """Temporary forward hooks and step observers on the given layers."""

    def __init__(self, sites: dict[nn.Module, tuple[str, int]]) -> None:
        self.sites = sites
        self.records = {module: _Record() for module in sites}
        self._exit = ExitStack()

    def __enter__(self) -> _Recorder:
        for module, record in self.records.items():
            self._exit.callback(module.register_forward_hook(
                self._hook(record), with_kwargs=True).remove)
            if hasattr(module, "observe_steps"):
                self._exit.enter_context(module.observe_steps(self._observer(record)))
        return self

    def __exit__(self, *exc) -> None:
        self._exit.close()

    @staticmethod
    def _hook(record: _Record):
        def hook(module, args, kwargs, output):
            named = dict(zip(("x", "state", "lengths"), args, strict=False)) | kwargs
            record.sequences.append((named["x"], named.get("state"), named.get("lengths"),
                                     output[0]))
        return hook

    @staticmethod
    def _observer(record: _Record):
        def observe(x_t: Tensor, state, new) -> None:
            record.steps.append((x_t, state, new[0]))
        return observe

    def traces(self) -> dict[Site, list[LayerTrace]]:
        """Each layer's recorded calls traced through its reference cell, per site; the two
        directions of a bidirectional layer under (stack, k, "fwd") and (stack, k, "bwd")."""
        found: dict[Site, list[LayerTrace]] = {}
        for module, record in self.records.items():
            stack, k = self.sites[module]
            calls = list(record.sequences)
            if record.steps:  # the step calls as one sequence from the first step's state
                calls.append((torch.stack([s[0] for s in record.steps], 1),
                              record.steps[0][1], None,
                              torch.stack([s[2] for s in record.steps], 1)))
            for x, state, lengths, out in calls:
                traces = module.trace(x, state, lengths, out)
                names = [None] if len(traces) == 1 else ["fwd", "bwd"]
                width = out.shape[-1] // len(traces)
                for d, (name, trace) in enumerate(zip(names, traces, strict=True)):
                    actual = out[..., d * width : (d + 1) * width]
                    found.setdefault((stack, k, name), []).append(_with_actual(trace, actual))
        return found


def _sites(model: nn.Module) -> tuple[dict[nn.Module, tuple[str, int]], list[tuple[str, int]]]:
    """Every recorded layer with its (stack, k), and the (stack, k) of layers of other kinds
    (skipped)."""
    if isinstance(model, LSTMStack):
        stacks = [("stack", model)]
    elif hasattr(model, "encoders") and hasattr(model, "decoder"):
        encoders = list(model.encoders)
        names = ["enc"] if len(encoders) == 1 else [f"enc{i}" for i in range(len(encoders))]
        stacks = [(n, e.stack) for n, e in zip(names, encoders, strict=True)]
        stacks.append(("dec", model.decoder))
    else:
        raise TypeError(f"gate statistics need an encoder-decoder model or an LSTMStack, got "
                        f"{type(model).__name__}")
    sites: dict[nn.Module, tuple[str, int]] = {}
    skipped = []
    for name, stack in stacks:
        for k, layer in enumerate(stack.layers):
            if _traceable(layer):
                sites[layer] = (name, k)
            else:
                skipped.append((name, k))
    return sites, skipped


def layer_traces(layer: nn.Module, x: Tensor, state=None,
                 lengths: Tensor | None = None) -> tuple[list[LayerTrace], Tensor]:
    """Run one layer (Fused, Custom or Bidirectional) on x [B, T, X] in eval mode without
    gradient (its mode restored after) and trace its gates: the traces (the forward
    direction first) and the layer's outputs [B, T, D]."""
    was_training = layer.training
    layer.eval()
    try:
        with torch.no_grad(), _Recorder({layer: ("layer", 0)}) as recorder:
            out, _ = layer(x, state, lengths)
            found = recorder.traces()
    finally:
        layer.train(was_training)
    order = {None: 0, "fwd": 1, "bwd": 2}
    return [t for site in sorted(found, key=lambda s: order[s[2]]) for t in found[site]], out


def model_traces(model: nn.Module, batch) -> tuple[dict[Site, list[LayerTrace]],
                                                    list[tuple[str, int]]]:
    """Run ``model`` once in eval mode without gradient on ``batch`` (a Seq2SeqBatch, a
    ForecastBatch, or for an LSTMStack x or (x, lengths)) and trace every layer's gates;
    the model's mode is restored. Returns the traces per site and the skipped layers."""
    sites, skipped = _sites(model)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), _Recorder(sites) as recorder:
            if isinstance(model, LSTMStack):
                x, lengths = batch if isinstance(batch, tuple | list) else (batch, None)
                model(x, lengths)
            else:
                model(batch)
            found = recorder.traces()
    finally:
        model.train(was_training)
    target = _target_mask(batch)
    if target is not None:
        for (stack, _, _), traces in found.items():
            if stack != "dec":
                continue
            for trace in traces:
                if trace.counted.shape == target.shape:
                    trace.counted = trace.valid & target.to(trace.valid.device)
    return found, skipped


def _target_mask(batch) -> Tensor | None:
    """[B, T] target positions that count (the decoder's steps), or None."""
    if hasattr(batch, "step_mask"):
        return batch.step_mask
    if hasattr(batch, "tgt"):
        return batch.tgt != PAD
    return None


# -- statistics ---------------------------------------------------------------------------------

def gate_summary(values: Tensor, gate: str) -> dict[str, float]:
    """mean, var (population) and saturated share of a flat tensor of one gate's activations."""
    v = values.double()
    if v.numel() == 0:
        return {"mean": math.nan, "var": math.nan, "saturated": math.nan}
    if gate in SIGMOID_GATES:
        saturated = (v < LOW) | (v > HIGH)
    else:
        saturated = v.abs() > HIGH
    return {"mean": v.mean().item(), "var": v.var(unbiased=False).item(),
            "saturated": saturated.double().mean().item()}


def cell_utilisation(cells: Tensor, mask: Tensor | None = None) -> float:
    """Memory utilisation of cell states C [B, T, H] over the steps of ``mask`` [B, T]:
    per example b, m_b = mean_t C_bt and s_b = std_t C_bt (population, per unit, over the
    example's counted steps); the mean over examples with >= 2 counted steps of
    ||s_b||_2 / max(||m_b||_2, 1e-8); NaN if no example has 2 counted steps."""
    c = cells.double()
    if mask is None:
        mask = torch.ones(c.shape[:2], dtype=torch.bool, device=c.device)
    w = mask.to(c.dtype).unsqueeze(-1)
    n = w.sum(1)  # [B, 1]
    keep = n.squeeze(-1) >= 2
    if not bool(keep.any()):
        return math.nan
    c, w, n = c[keep], w[keep], n[keep]
    mean = (c * w).sum(1) / n
    std = (((c - mean.unsqueeze(1)) ** 2 * w).sum(1) / n).sqrt()
    ratio = std.norm(dim=-1) / mean.norm(dim=-1).clamp(min=_EPS)
    return ratio.mean().item()


def _layer_stats(prefix_gates: str, prefix_cells: str,
                 traces: list[LayerTrace]) -> dict[str, float]:
    stats: dict[str, float] = {}
    for gate in [*GATES, "transform"]:
        if gate not in traces[0].gates:
            continue
        values = torch.cat([t.gates[gate][t.counted].reshape(-1) for t in traces])
        for stat, value in gate_summary(values, gate).items():
            stats[f"{prefix_gates}.{gate}.{stat}"] = value
    utilisation = [cell_utilisation(t.cells, t.counted) for t in traces]
    stats[f"{prefix_cells}.utilisation"] = (math.nan if all(map(math.isnan, utilisation))
                                            else float(torch.tensor(utilisation).nanmean()))
    norms = torch.cat([t.cells.double().norm(dim=-1)[t.counted] for t in traces])
    stats[f"{prefix_cells}.norm"] = norms.mean().item() if norms.numel() else math.nan
    return stats


def _recompute_error(traces: list[LayerTrace]) -> float:
    errors = [(t.hidden - t.actual).abs()[t.counted] for t in traces]
    flat = torch.cat([e.reshape(-1) for e in errors])
    return flat.max().item() if flat.numel() else 0.0


def traces_statistics(found: dict[Site, list[LayerTrace]],
                      skipped: list[tuple[str, int]] = ()) -> dict[str, float]:
    """The statistics (module docstring) of traced layers."""
    stats: dict[str, float] = {}
    layers: dict[tuple[str, int], dict[str, list[LayerTrace]]] = {}
    for (stack, k, direction), traces in found.items():
        layers.setdefault((stack, k), {})[direction or ""] = traces
    for (stack, k), directions in sorted(layers.items()):
        gates, cells = f"{rs.GATE_PREFIX}{stack}.l{k}", f"{rs.CELL_PREFIX}{stack}.l{k}"
        if "" in directions:
            (traces,) = directions.values()
            stats.update(_layer_stats(gates, cells, traces))
        else:
            for name, traces in directions.items():
                stats.update(_layer_stats(f"{gates}.{name}", f"{cells}.{name}", traces))
            stats.update(_layer_stats(gates, cells, _pooled(directions["fwd"],
                                                            directions["bwd"])))
        every = [t for traces in directions.values() for t in traces]
        stats[f"{gates}.recompute_error"] = _recompute_error(every)
    for stack, k in skipped:
        stats[f"{rs.GATE_PREFIX}{stack}.l{k}.skipped"] = 1.0
    return stats


def _pooled(fwd: list[LayerTrace], bwd: list[LayerTrace]) -> list[LayerTrace]:
    """Both directions as one trace per call: units side by side at each time position."""
    pooled = []
    for a, b in zip(fwd, bwd, strict=True):
        gates = {g: torch.cat([a.gates[g], b.gates[g]], -1) for g in a.gates}
        pooled.append(LayerTrace(gates, torch.cat([a.cells, b.cells], -1),
                                 torch.cat([a.hidden, b.hidden], -1),
                                 torch.cat([a.actual, b.actual], -1), a.valid,
                                 a.counted & b.counted))
    return pooled


def gate_statistics(model: nn.Module, batch) -> dict[str, float]:
    """Gate and cell-state statistics of every LSTM layer of ``model`` on ``batch`` (module
    docstring: keys, rules). One forward pass in eval mode without gradient; the model's
    training mode is restored."""
    found, skipped = model_traces(model, batch)
    return traces_statistics(found, skipped)


# -- healthy ranges ----------------------------------------------------------------------------

class HealthyRanges(Strict):
    """Healthy ranges of the gates' means (README "Diagnostics"; None: not checked)."""

    forget: tuple[float, float] | None = (0.3, 0.7)
    input: tuple[float, float] | None = (0.2, 0.6)
    output: tuple[float, float] | None = (0.2, 0.8)
    cell: tuple[float, float] | None = None
    transform: tuple[float, float] | None = None

    @model_validator(mode="after")
    def check(self) -> HealthyRanges:
        for name in ("forget", "input", "output", "cell", "transform"):
            bounds = getattr(self, name)
            if bounds is not None and bounds[0] > bounds[1]:
                raise ValueError(f"healthy range of '{name}': low {bounds[0]} > high "
                                 f"{bounds[1]}")
        return self


_MEAN_KEY = re.compile(r"^gates\.(?P<stack>[^.]+)\.l(?P<k>\d+)(?:\.(?P<dir>fwd|bwd))?"
                       r"\.(?P<gate>[a-z]+)\.mean$")


def _checked(stats: dict[str, float], ranges: HealthyRanges | None):
    """(key, match, mean, (low, high)) of every gate mean that has a range and a value."""
    ranges = ranges if ranges is not None else HealthyRanges()
    for key, value in stats.items():
        match = _MEAN_KEY.match(key)
        if match is None or match["gate"] not in HealthyRanges.model_fields:
            continue
        bounds = getattr(ranges, match["gate"])
        if bounds is None or value is None or math.isnan(value):
            continue
        yield key, match, value, bounds


def gate_health(stats: dict[str, float], ranges: HealthyRanges | None = None
                ) -> dict[str, float]:
    """``gates.{stack}.l{k}[.fwd|.bwd].{gate}.healthy``: 1.0 if the gate's mean lies in its
    range (bounds included), else 0.0, for every gate with a range and a mean (not NaN)."""
    return {key[: -len(".mean")] + ".healthy": float(low <= mean <= high)
            for key, _, mean, (low, high) in _checked(stats, ranges)}


def unhealthy(stats: dict[str, float], ranges: HealthyRanges | None = None) -> list[str]:
    """Readable flags of the gates whose mean is outside its range, for example
    ``"enc l0 forget mean 0.99 outside [0.3, 0.7] (saturated 0.97)"``; a bidirectional layer
    is flagged per direction (``"enc l0 fwd forget ..."``), not for the pooled directions."""
    checked = list(_checked(stats, ranges))
    directional = {(m["stack"], m["k"]) for _, m, _, _ in checked if m["dir"]}
    flags = []
    for key, m, mean, (low, high) in checked:
        if low <= mean <= high or (m["dir"] is None and (m["stack"], m["k"]) in directional):
            continue
        where = f"{m['stack']} l{m['k']}" + (f" {m['dir']}" if m["dir"] else "")
        flag = f"{where} {m['gate']} mean {mean:.2f} outside [{low:g}, {high:g}]"
        saturated = stats.get(key[: -len(".mean")] + ".saturated")
        if saturated is not None and not math.isnan(saturated):
            flag += f" (saturated {saturated:.2f})"
        flags.append(flag)
    return flags
