"""The reference LSTM step, its gate trace over a sequence, and observers of decoder steps.

:func:`lstm_cell` is the one per-step statement of the cell equations (nn.LSTM's gate order
i, f, g, o), with the input projection W' x_t + b computed beforehand (``xw_t``):

    z_t    = W' x_t + b + R(W h_in)         R_k(u) = gain_k LN(u) + bias_k per gate with
                                            LayerNorm (Ba et al. 2016), else the identity
    i_t, f_t, o_t = sigma(z_i), sigma(z_f), sigma(z_o);   g_t = tanh(z_g)  (the candidate C~_t)
    C_t    = f_t C_{t-1} + i_t g_t
    h_t    = o_t tanh(LN(C_t))              (LN with the cell gain and bias, LayerNorm only)
    highway (Zhang et al. 2016): T_t = sigma(z_T), h_t = T_t h_t + (1 - T_t) h_{t-1}
    residual_step: h_t = h_{t-1} + h_t

h_in is h_{t-1} (times the recurrent dropout mask, and with self-attention [h_{t-1}; h~_t]):
:class:`~lstm_harness.models.layers.CustomLSTMLayer` forms it and applies zoneout after the
step; :class:`~lstm_harness.models.layers.FusedLSTMLayer` traces its nn.LSTM weights through the
same function with every option off. The fast loops (:class:`~lstm_harness.models.layers.
SequenceLoop`, the compiled loop) compute the same numbers and are tested against it.

:func:`run_steps` runs a cell over a sequence (padded steps keep the state) and, asked to, keeps
its activations as a :class:`GateTrace`. :class:`ObservableSteps` lets a caller watch the
``step`` calls of a layer (decoders) for the length of a ``with`` block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

State = tuple[Tensor, Tensor]
Activations = dict[str, Tensor]  # input, forget, cell (the candidate g), output [, transform]
LayerNormParams = tuple[Tensor, Tensor, Tensor, Tensor]  # gates gain, bias; cell gain, bias


def lstm_cell(xw_t: Tensor, h_prev: Tensor, c_prev: Tensor, h_in: Tensor, w_hh_t: Tensor,
              ln: LayerNormParams | None = None, eps: float = 1e-5, highway: bool = False,
              residual_step: bool = False, activations: Activations | None = None) -> State:
    """One step (module docstring): xw_t [B, G H] (G = 5 with the highway gate, else 4),
    h_prev, c_prev [B, H], h_in [B, K], w_hh_t [K, G H] -> (h_t, C_t) before zoneout.
    ``activations``, if given, receives i, f, g, o (and T) [B, H] under their gate names."""
    hidden = h_prev.shape[1]
    four = 4 * hidden
    rec = h_in @ w_hh_t
    if ln is not None:
        gates_gain, gates_bias, cell_gain, cell_bias = ln
        gates_rec = F.layer_norm(rec[:, :four].view(-1, 4, hidden), (hidden,), eps=eps)
        gates_rec = gates_rec * gates_gain + gates_bias
        gates = xw_t[:, :four] + gates_rec.view(-1, four)
    else:
        gates = xw_t[:, :four] + rec[:, :four]
    i, f, g, o = gates.chunk(4, 1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c_prev + i * g
    c_out = c if ln is None else F.layer_norm(c, (hidden,), ln[2], ln[3], eps)
    h = o * torch.tanh(c_out)
    if activations is not None:
        activations.update(input=i, forget=f, cell=g, output=o)
    if highway:
        transform = torch.sigmoid(xw_t[:, four:] + rec[:, four:])
        h = transform * h + (1 - transform) * h_prev
        if activations is not None:
            activations["transform"] = transform
    if residual_step:
        h = h_prev + h
    return h, c


@dataclass
class GateTrace:
    """One direction of a layer over a sequence, each tensor [B, T, H] in the sequence's time
    order: ``gates`` the activations by gate name, ``cells`` the carried C_t (after zoneout;
    kept on padded steps), ``hidden`` the outputs h_t (kept on padded steps); ``valid`` [B, T]
    the steps within each sequence's length (the values are meaningful there)."""

    gates: Activations
    cells: Tensor
    hidden: Tensor
    valid: Tensor

    def map(self, fn: Callable[[Tensor], Tensor]) -> GateTrace:
        """The trace with ``fn`` applied to every [B, T, H] tensor (``valid`` kept)."""
        return GateTrace({k: fn(v) for k, v in self.gates.items()}, fn(self.cells),
                         fn(self.hidden), self.valid)


# (t, xw_t, state, activations or None) -> the new state (h_t, C_t)
Cell = Callable[[int, Tensor, State, Activations | None], State]


def run_steps(cell: Cell, xw: Tensor, state: State, valid: Tensor | None = None,
              history: list[Tensor] | None = None, trace: bool = False,
              given: Tensor | None = None) -> tuple[Tensor, State, GateTrace | None]:
    """Run ``cell`` over xw [T, B, G H] (time-major) from ``state``: outputs [B, T, H], the
    final state and, with ``trace``, the :class:`GateTrace`. Steps where valid [T, B, 1] is
    False keep the state; ``history`` (self-attention) gets each step's h_t appended.

    ``given`` [T, B, H]: outputs h_t of an earlier run of the same sequence (time-major); step
    t >= 1 then reads h_{t-1} = given[t - 1] instead of its predecessor's output (and
    ``history`` gets given[t]), so that each step is checked on its own (C_t is still
    carried from step to step)."""
    outputs, cells, acts = [], [], []
    given_s = given.unbind(0) if given is not None else None
    # unbind: one backward node for all steps (xw[t] would zero-fill a [T, B, G H] gradient
    # for every step)
    for t, xw_t in enumerate(xw.unbind(0)):
        record: Activations | None = {} if trace else None
        if given_s is not None and t > 0:
            state = (given_s[t - 1], state[1])
        new = cell(t, xw_t, state, record)
        if valid is not None:
            keep = valid[t]
            new = (torch.where(keep, new[0], state[0]), torch.where(keep, new[1], state[1]))
        state = new
        outputs.append(state[0])
        if history is not None:
            history.append(state[0] if given_s is None else given_s[t])
        if trace:
            cells.append(state[1])
            acts.append(record)
    out = torch.stack(outputs, 1)
    if not trace:
        return out, state, None
    steps, batch = xw.shape[:2]
    mask = (torch.ones(batch, steps, dtype=torch.bool, device=xw.device) if valid is None
            else valid[..., 0].t())
    gates = {name: torch.stack([a[name] for a in acts], 1) for name in acts[0]}
    return out, state, GateTrace(gates, torch.stack(cells, 1), out, mask)


# (x_t, the state before the step, the state after it)
StepObserver = Callable[[Tensor, State, State], None]


class ObservableSteps:
    """Observers of a layer's ``step`` calls: ``with layer.observe_steps(fn): ...`` calls
    fn(x_t, state, new_state) after every step within the block; nothing stays on the layer
    after it (the observers live on the instance only inside the block)."""

    _step_observers: tuple[StepObserver, ...] = ()

    @contextmanager
    def observe_steps(self, observer: StepObserver) -> Iterator[None]:
        previous = self.__dict__.get("_step_observers")
        self._step_observers = (*self._step_observers, observer)
        try:
            yield
        finally:
            if previous is None:
                del self._step_observers
            else:
                self._step_observers = previous

    def _observed(self, x_t: Tensor, state: State, new: State) -> None:
        for observer in self._step_observers:
            observer(x_t, state, new)
