"""One LSTM layer over a sequence, fused or custom, with the same interface.

Both kinds map x [B, T, X] (with optional true lengths [B]) to outputs [B, T, D] and the final
state (h, c), each [B, D] (D = H, or 2H for a bidirectional layer: both directions
concatenated), and can also advance one step at a time for decoders (``begin`` + ``step``).

- :class:`FusedLSTMLayer` calls torch's fused LSTM kernel (what nn.LSTM runs) on its own
  weights, so DropConnect on W_hh (weight-drop) keeps the kernel.
- :class:`CustomLSTMLayer` runs the cells that need their own step: LayerNorm LSTM, recurrent
  dropout, zoneout, highway and per-step residual connections, self-attention over earlier
  states. All input projections W x_t + b are computed for every step in one matrix product
  before the time loop (as in haste); the loop does one h_{t-1} product and the pointwise math.
  Except with self-attention, the whole loop is one autograd Function (:class:`SequenceLoop`)
  with a hand-written backward: no per-step autograd graph, and dW_hh as one matrix product.

Gate order is nn.LSTM's (i, f, g, o), so weights copy across.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from harness.models.attention import self_attention_context
from harness.models.dropout import DropoutRates, bernoulli_mask, zoneout

State = tuple[torch.Tensor, torch.Tensor]


def init_uniform(module: nn.Module, hidden: int) -> None:
    """nn.LSTM's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every parameter."""
    bound = 1.0 / math.sqrt(hidden)
    for p in module.parameters(recurse=False):
        nn.init.uniform_(p, -bound, bound)


class FusedLSTMLayer(nn.Module):
    """nn.LSTM's kernel on explicit weights: uni- or bidirectional, optional weight-drop."""

    def __init__(self, input_size: int, hidden: int, bidirectional: bool,
                 rates: DropoutRates) -> None:
        super().__init__()
        self.input_size, self.hidden = input_size, hidden
        self.bidirectional = bidirectional
        self.rates = rates
        self.directions = 2 if bidirectional else 1
        self.output_size = hidden * self.directions
        for suffix in ["", "_reverse"][: self.directions]:
            self.register_parameter(f"weight_ih{suffix}",
                                    nn.Parameter(torch.empty(4 * hidden, input_size)))
            self.register_parameter(f"weight_hh{suffix}",
                                    nn.Parameter(torch.empty(4 * hidden, hidden)))
            self.register_parameter(f"bias_ih{suffix}", nn.Parameter(torch.empty(4 * hidden)))
            self.register_parameter(f"bias_hh{suffix}", nn.Parameter(torch.empty(4 * hidden)))
        init_uniform(self, hidden)
        self._w_hh: list[torch.Tensor] | None = None

    def recurrent_weights(self) -> list[torch.Tensor]:
        """W_hh of each direction, DropConnect-ed in training (one mask per forward pass)."""
        weights = [self.weight_hh] + ([self.weight_hh_reverse] if self.bidirectional else [])
        p = self.rates.weight_drop
        if self.training and p > 0:
            weights = [w * bernoulli_mask(tuple(w.shape), p, w) for w in weights]
        return weights

    def flat_weights(self) -> list[torch.Tensor]:
        w_hh = self.recurrent_weights()
        flat = [self.weight_ih, w_hh[0], self.bias_ih, self.bias_hh]
        if self.bidirectional:
            flat += [self.weight_ih_reverse, w_hh[1], self.bias_ih_reverse, self.bias_hh_reverse]
        return flat

    def forward(self, x: torch.Tensor, state: State | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        batch = x.shape[0]
        if state is None:
            zeros = x.new_zeros(self.directions, batch, self.hidden)
            hx = (zeros, zeros)
        else:
            hx = tuple(s.view(batch, self.directions, self.hidden).transpose(0, 1).contiguous()
                       for s in state)
        weights = self.flat_weights()
        if lengths is None:
            out, h, c = torch.lstm(x, hx, weights, True, 1, 0.0, self.training,
                                   self.bidirectional, True)
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True,
                                          enforce_sorted=False)
            order, unorder = packed.sorted_indices, packed.unsorted_indices
            hx = tuple(s.index_select(1, order) for s in hx)
            data, h, c = torch.lstm(packed.data, packed.batch_sizes, hx, weights, True, 1, 0.0,
                                    self.training, self.bidirectional)
            out, _ = pad_packed_sequence(
                type(packed)(data, packed.batch_sizes, order, unorder), batch_first=True,
                total_length=x.shape[1])
            h, c = h.index_select(1, unorder), c.index_select(1, unorder)
        final = tuple(s.transpose(0, 1).reshape(batch, self.output_size) for s in (h, c))
        return out, final

    def begin(self, batch: int, device: torch.device) -> None:
        """Start step-by-step decoding: draw the per-sequence weight-drop mask."""
        if self.bidirectional:
            raise ValueError("a bidirectional layer cannot decode step by step")
        # a plain attribute: assigning the Parameter itself would register it a second time
        object.__setattr__(self, "_w_hh_step", self.recurrent_weights()[0])

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = state
        gates = torch.addmm(self.bias_ih + self.bias_hh, x_t, self.weight_ih.t())
        gates = torch.addmm(gates, h, self._w_hh_step.t())
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


class CustomLSTMLayer(nn.Module):
    """A unidirectional LSTM layer with its own time loop.

    Step (SPEC symbols; each option changes one line):
      gates  = W' x_t + b + R(W h_{t-1})      R = LN per gate if layernorm (Ba et al. 2016),
                                              identity otherwise; h_{t-1} times the recurrent
                                              dropout mask; with self-attention the recurrent
                                              input is [h_{t-1}; h~_t] (Cheng et al. 2016)
      C_t    = f_t * C_{t-1} + i_t * C~_t
      h~_t   = o_t * tanh(LN(C_t))            (LN only for layernorm)
      highway (Zhang et al. 2016): T = sigma(W_T [h_{t-1}, x_t] + b_T),
               h_t = T * h~_t + (1 - T) * h_{t-1}
      residual_step: h_t = h_{t-1} + h~_t
      zoneout: h_t = d * h_{t-1} + (1 - d) * h_t (and the same on C_t with zoneout_c)
    Padded steps (t >= length) keep the previous state.
    """

    def __init__(self, input_size: int, hidden: int, rates: DropoutRates, *,
                 layernorm: bool = False, highway: bool = False, residual_step: bool = False,
                 self_attention: bool = False, ln_eps: float = 1e-5) -> None:
        super().__init__()
        self.input_size, self.hidden, self.output_size = input_size, hidden, hidden
        self.rates = rates
        self.layernorm, self.highway = layernorm, highway
        self.residual_step, self.self_attention = residual_step, self_attention
        self.ln_eps = ln_eps
        blocks = 5 if highway else 4  # the highway transform gate rides along with the gates
        recurrent_in = 2 * hidden if self_attention else hidden
        self.weight_ih = nn.Parameter(torch.empty(blocks * hidden, input_size))
        self.weight_hh = nn.Parameter(torch.empty(blocks * hidden, recurrent_in))
        self.bias_ih = nn.Parameter(torch.empty(blocks * hidden))
        self.bias_hh = nn.Parameter(torch.empty(blocks * hidden))
        init_uniform(self, hidden)
        if highway:  # favour carrying h_{t-1} at the start: T = sigma(-2) ~ 0.12
            with torch.no_grad():
                self.bias_ih[4 * hidden:].fill_(-2.0)
                self.bias_hh[4 * hidden:].zero_()
        if layernorm:
            self.ln_gates_gain = nn.Parameter(torch.ones(4, hidden))
            self.ln_gates_bias = nn.Parameter(torch.zeros(4, hidden))
            self.ln_cell_gain = nn.Parameter(torch.ones(hidden))
            self.ln_cell_bias = nn.Parameter(torch.zeros(hidden))

    # -- per-sequence set-up ---------------------------------------------------------------
    def begin(self, batch: int, device: torch.device) -> None:
        """Draw the masks that stay fixed over a sequence (weight-drop, variational)."""
        rates, like = self.rates, self.weight_hh
        w_hh = self.weight_hh
        if self.training and rates.weight_drop > 0:
            w_hh = w_hh * bernoulli_mask(tuple(w_hh.shape), rates.weight_drop, w_hh)
        self._w_hh_t = w_hh.t()
        self._rec_mask = None
        if self.training and rates.recurrent > 0 and rates.variational:
            self._rec_mask = bernoulli_mask((batch, self.hidden), rates.recurrent, like)
        self._history: list[torch.Tensor] = []

    # -- the step --------------------------------------------------------------------------
    def _cell(self, xw_t: torch.Tensor, state: State) -> State:
        h_prev, c_prev = state
        rates, hidden = self.rates, self.hidden
        h_in = h_prev
        if self.training and rates.recurrent > 0:
            mask = self._rec_mask
            if mask is None:
                mask = bernoulli_mask(tuple(h_prev.shape), rates.recurrent, h_prev)
            h_in = h_prev * mask
        if self.self_attention:
            history = torch.stack(self._history, 1) if self._history else None
            h_att = self_attention_context(h_prev, history, None) if history is not None \
                else torch.zeros_like(h_prev)
            h_in = torch.cat([h_in, h_att], dim=1)
        rec = h_in @ self._w_hh_t
        if self.layernorm:
            gates_rec = rec[:, : 4 * hidden].view(-1, 4, hidden)
            gates_rec = F.layer_norm(gates_rec, (hidden,), eps=self.ln_eps)
            gates_rec = gates_rec * self.ln_gates_gain + self.ln_gates_bias
            gates = xw_t[:, : 4 * hidden] + gates_rec.view(-1, 4 * hidden)
        else:
            gates = xw_t[:, : 4 * hidden] + rec[:, : 4 * hidden]
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c_prev + torch.sigmoid(i) * torch.tanh(g)
        c_out = c
        if self.layernorm:
            c_out = F.layer_norm(c, (hidden,), self.ln_cell_gain, self.ln_cell_bias,
                                 self.ln_eps)
        h = torch.sigmoid(o) * torch.tanh(c_out)
        if self.highway:
            transform = torch.sigmoid(xw_t[:, 4 * hidden:] + rec[:, 4 * hidden:])
            h = transform * h + (1 - transform) * h_prev
        if self.residual_step:
            h = h_prev + h
        h = zoneout(h_prev, h, rates.zoneout, self.training)
        c = zoneout(c_prev, c, rates.zoneout_c, self.training)
        return h, c

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """W' x + b for every step at once: [..., X] -> [..., blocks * H]."""
        return F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = self._cell(self.input_projection(x_t), state)
        if self.self_attention:
            self._history.append(h)
        return h, (h, c)

    def forward(self, x: torch.Tensor, state: State | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        batch, steps, _ = x.shape
        self.begin(batch, x.device)
        if state is None:
            zeros = x.new_zeros(batch, self.hidden)
            state = (zeros, zeros)
        xw = self.input_projection(x)
        valid = None
        if lengths is not None:
            valid = (torch.arange(steps, device=x.device)[None, :]
                     < lengths.to(x.device)[:, None]).unsqueeze(-1)
        outputs = []
        for t in range(steps):
            new = self._cell(xw[:, t], state)
            if valid is not None:
                keep = valid[:, t]
                new = (torch.where(keep, new[0], state[0]), torch.where(keep, new[1], state[1]))
            state = new
            outputs.append(state[0])
            if self.self_attention:
                self._history.append(state[0])
        return torch.stack(outputs, 1), state


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence within its true length; padding stays at the end."""
    if lengths is None:
        return x.flip(1)
    steps = x.shape[1]
    t = torch.arange(steps, device=x.device)[None, :]
    lengths = lengths.to(x.device)[:, None]
    index = torch.where(t < lengths, lengths - 1 - t, t)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[2]))


class BidirectionalLayer(nn.Module):
    """Two custom layers, one reading each sequence backwards; outputs concatenated."""

    def __init__(self, forward_layer: nn.Module, backward_layer: nn.Module) -> None:
        super().__init__()
        self.fwd, self.bwd = forward_layer, backward_layer
        self.output_size = forward_layer.output_size + backward_layer.output_size
        self.rates = forward_layer.rates

    def forward(self, x: torch.Tensor, state: State | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        fwd_state = bwd_state = None
        if state is not None:
            h, c = state
            half = self.fwd.output_size
            fwd_state, bwd_state = (h[:, :half], c[:, :half]), (h[:, half:], c[:, half:])
        out_f, (h_f, c_f) = self.fwd(x, fwd_state, lengths)
        out_b, (h_b, c_b) = self.bwd(reverse_padded(x, lengths), bwd_state, lengths)
        out = torch.cat([out_f, reverse_padded(out_b, lengths)], dim=2)
        return out, (torch.cat([h_f, h_b], 1), torch.cat([c_f, c_b], 1))

    def begin(self, batch: int, device: torch.device) -> None:
        raise ValueError("a bidirectional layer cannot decode step by step")
