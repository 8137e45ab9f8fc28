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

Gate order is nn.LSTM's (i, f, g, o), so weights copy across. The per-step reference of the
equations is :func:`~lstm_harness.models.cell.lstm_cell`; every layer's ``trace(x, state,
lengths)`` runs it step by step over a sequence (eval mode, no gradient) and returns its gate
activations, cell states and outputs (:class:`~lstm_harness.models.cell.GateTrace`, one per
direction), and ``with layer.observe_steps(fn):`` reports each ``step`` call to fn.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_harness.models import compiled_loop
from lstm_harness.models.attention import self_attention_context
from lstm_harness.models.cell import (
    Activations,
    GateTrace,
    ObservableSteps,
    State,
    lstm_cell,
    run_steps,
)
from lstm_harness.models.dropout import DropoutRates, bernoulli_mask, zoneout

Masks = tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]


def init_uniform(module: nn.Module, hidden: int) -> None:
    """nn.LSTM's initialisation: U(-1/sqrt(H), 1/sqrt(H)) for every parameter."""
    bound = 1.0 / math.sqrt(hidden)
    for p in module.parameters(recurse=False):
        nn.init.uniform_(p, -bound, bound)


class FusedLSTMLayer(ObservableSteps, nn.Module):
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
        h_prev, c_prev = state
        xw_t = torch.addmm(self.bias_ih + self.bias_hh, x_t, self.weight_ih.t())
        h, c = lstm_cell(xw_t, h_prev, c_prev, h_prev, self._w_hh_step.t())
        if self._step_observers:
            self._observed(x_t, state, (h, c))
        return h, (h, c)

    def trace(self, x: torch.Tensor, state: State | None = None,
              lengths: torch.Tensor | None = None,
              outputs: torch.Tensor | None = None) -> list[GateTrace]:
        """The reference cell :func:`~lstm_harness.models.cell.lstm_cell` (every option off)
        on this layer's weights, step by step over x [B, T, X] from ``state`` (zeros if None),
        without weight-drop or gradient: one trace per direction, the forward first (the
        backward reads each sequence reversed within its length and is turned back).
        ``outputs`` [B, T, D]: this layer's outputs on x; each step then reads its h_{t-1}
        from them (:func:`~lstm_harness.models.cell.run_steps`)."""
        batch, hid = x.shape[0], self.hidden
        h0, c0 = state if state is not None else (x.new_zeros(batch, self.output_size),) * 2
        valid = step_mask(x.shape[1], lengths, x.device)
        traces = []
        with torch.no_grad():
            for d, suffix in enumerate(["", "_reverse"][: self.directions]):
                seq = x if d == 0 else reverse_padded(x, lengths)
                xw = F.linear(seq.transpose(0, 1), getattr(self, "weight_ih" + suffix),
                              getattr(self, "bias_ih" + suffix) + getattr(self, "bias_hh" + suffix))
                w_hh_t = getattr(self, "weight_hh" + suffix).t()

                def cell(t: int, xw_t: torch.Tensor, s: State, acts: Activations | None,
                         w_hh_t: torch.Tensor = w_hh_t) -> State:
                    return lstm_cell(xw_t, s[0], s[1], s[0], w_hh_t, activations=acts)
                part = slice(d * hid, (d + 1) * hid)
                given = None
                if outputs is not None:
                    given = outputs[..., part] if d == 0 else reverse_padded(
                        outputs[..., part], lengths)
                    given = given.transpose(0, 1)
                _, _, trace = run_steps(cell, xw, (h0[:, part], c0[:, part]), valid,
                                        trace=True, given=given)
                traces.append(trace if d == 0 else trace.map(
                    lambda v: reverse_padded(v, lengths)))
        return traces


def _per_step(x: torch.Tensor, hid: int | None = None) -> list:
    """x [T, B, n H] -> x[t] for every t or, given H, the tuples (x[t], its n H-wide blocks):
    views made once for all steps (indexing and slicing in the loop cost a call each)."""
    if hid is None:
        return list(x.unbind(0))
    blocks = [x[..., k * hid : (k + 1) * hid].unbind(0) for k in range(x.shape[-1] // hid)]
    return list(zip(x.unbind(0), *blocks, strict=True))


def _per_step_or_same(x: torch.Tensor | None, steps: int) -> list:
    """A [T, ...] tensor per step, or the same [B, H] (or None) at every step."""
    return _per_step(x) if x is not None and x.dim() == 3 else [x] * steps


class SequenceLoop(torch.autograd.Function):
    """The custom layer's time loop (no self-attention) with a hand-written backward.

    Inputs, time-major: ``xw`` [T, B, G*H] = W' x_t + b for every step (G = 5 with the highway
    gate, else 4), ``h0``, ``c0`` [B, H], ``w_hh`` [G*H, H] (weight-dropped or not), the four
    LayerNorm parameters (or None), ``rec_mask`` (None, [B, H] or [T, B, H]) and ``keep_h``,
    ``keep_c`` (None or [T, B, H|1]): the weight k of the previous state in
    s_t = (1 - k) s~_t + k s_{t-1}, which is the zoneout mask d (or p at evaluation) and 1 on
    padded steps. Returns outputs [B, T, H] and the final (h, c).

    The forward runs without autograd and keeps, per step, the local derivatives that the
    backward needs (computed while the step's values are in cache); the backward runs the loop
    in reverse with a few pointwise products and one dgates_t W_hh product per step, then gets
    dW_hh = sum_t dgates_t^T (m_t * h_{t-1}) as a single matrix product (as in haste).
    """

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, gates_gain, gates_bias, cell_gain, cell_bias,
                rec_mask, keep_h, keep_c, highway: bool, residual_step: bool, eps: float):
        steps, batch, width = xw.shape
        hid = h0.shape[1]
        four = 4 * hid
        layernorm = gates_gain is not None
        hs = xw.new_empty(steps + 1, batch, hid)  # h_{t-1} = hs[t], h_t = hs[t + 1]
        cs = xw.new_empty(steps + 1, batch, hid)
        hs[0], cs[0] = h0, c0
        c_new = cs[1:] if keep_c is None else xw.new_empty(steps, batch, hid)  # C_t before zoneout
        h_in = hs[:-1] if rec_mask is None else xw.new_empty(steps, batch, hid)
        # the step's sigma(i), sigma(f), tanh(g), sigma(o) [, T], in one buffer reused (in
        # cache); f [and T] of every step are kept for the backward
        a = xw.new_empty(batch, width)
        a_blocks = a.split(hid, 1)
        kept = xw.new_empty(2 if highway else 1, steps, batch, hid)
        kept_s = [_per_step(k) for k in kept]
        # dL/d(gates_t) = [dC i' g, dC f' C_{t-1}, dC g' i, dh o' tanh(C^) (, dh T' (h~ - h_{t-1}))]
        # with the factors after dC / dh kept here; dL/dC^ = dh o tanh'(C^) (dh: dL/dh~)
        factors = xw.new_empty(steps, batch, width)
        d_tanh = xw.new_empty(steps, batch, hid)
        w_t = w_hh.t()
        ln: dict[str, list] = {"gates": [], "cell": []}
        if layernorm:
            xw_gates = _per_step(xw[..., :four] + gates_bias.reshape(four))
            xw_highway = _per_step(xw[..., four:])
            gain = gates_gain.reshape(four)
        xw_s, hs_s, cs_s, c_new_s, h_in_s, d_tanh_s = map(
            _per_step, (xw, hs, cs, c_new, h_in, d_tanh))
        factors_s = _per_step(factors, hid)
        rec_mask_s, keep_h_s, keep_c_s = (_per_step_or_same(m, steps)
                                          for m in (rec_mask, keep_h, keep_c))
        for t in range(steps):
            h_prev, c_prev, h_in_t = hs_s[t], cs_s[t], h_in_s[t]
            i, f, g, o, *tr = a_blocks
            fac, fac_i, fac_f, fac_g, fac_o, *fac_tr = factors_s[t]
            if rec_mask is not None:
                torch.mul(h_prev, rec_mask_s[t], out=h_in_t)
            if layernorm:
                rec = h_in_t @ w_t
                norm, _, rstd = torch.native_layer_norm(
                    rec[:, :four].reshape(batch, 4, hid), (hid,), None, None, eps)
                torch.addcmul(xw_gates[t], norm.view(batch, four), gain, out=a[:, :four])
                if highway:
                    torch.add(xw_highway[t], rec[:, four:], out=tr[0])
                ln["gates"].append((norm, rstd))
            else:
                torch.addmm(xw_s[t], h_in_t, w_t, out=a)
            # one sigmoid over every gate; tanh(g) = 2 sigma(2 g) - 1 (torch's tanh is ~4x slower)
            g.mul_(2)
            a.sigmoid_()
            g.mul_(2).sub_(1)
            for k, block in zip(kept_s, (f, *tr), strict=True):
                k[t].copy_(block)
            c = torch.mul(f, c_prev, out=c_new_s[t]).addcmul_(i, g)
            if keep_c is not None:
                torch.lerp(c, c_prev, keep_c_s[t], out=cs_s[t + 1])
            if layernorm:
                c_hat, mean, rstd = torch.native_layer_norm(c, (hid,), cell_gain, cell_bias, eps)
                ln["cell"].append((mean, rstd))
                tanh_c = torch.tanh(c_hat)
            else:
                tanh_c = torch.tanh(c)
            last = not (highway or residual_step or keep_h is not None)
            h = torch.mul(o, tanh_c, out=hs_s[t + 1] if last else None)
            torch.addcmul(o, h, tanh_c, value=-1, out=d_tanh_s[t])  # o (1 - tanh^2)
            torch.addcmul(a, a, a, value=-1, out=fac)  # s (1 - s)
            fac_i.mul_(g)
            fac_f.mul_(c_prev)
            torch.addcmul(i, i * g, g, value=-1, out=fac_g)  # i (1 - g^2)
            fac_o.mul_(tanh_c)
            if highway:
                fac_tr[0].mul_(h - h_prev)
                h = torch.lerp(h_prev, h, tr[0])
            if residual_step:
                h = h_prev + h
            if keep_h is not None:
                h = torch.lerp(h, h_prev, keep_h_s[t])
            if not last:
                hs_s[t + 1].copy_(h)
        out = hs[1:].transpose(0, 1)
        # out is saved so that autograd refuses a backward after an in-place change of it (a
        # view: it shares its version counter with hs)
        ctx.save_for_backward(w_hh, gates_gain, cell_gain, cell_bias, rec_mask, keep_h, keep_c,
                              out)
        ctx.buffers = c_new, h_in, kept, factors, d_tanh, ln
        ctx.options = highway, residual_step
        return out, hs[steps].clone(), cs[steps].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h, d_c):
        w_hh, gates_gain, cell_gain, cell_bias, rec_mask, keep_h, keep_c, _ = ctx.saved_tensors
        c_new, h_in, kept, factors, d_tanh, ln = ctx.buffers
        highway, residual_step = ctx.options
        steps, batch, width = factors.shape
        hid = d_tanh.shape[2]
        three, four = 3 * hid, 4 * hid
        layernorm = gates_gain is not None
        d_xw = factors.new_empty(steps, batch, width)  # dL/d(pre-activations) = dgates
        d_rec = factors.new_empty(steps, batch, width) if layernorm else d_xw
        d_c_hat = factors.new_empty(steps, batch, hid) if layernorm else None
        if layernorm:
            gain = gates_gain.reshape(four)
            zero, one = factors.new_zeros(batch, 4, 1), factors.new_ones(batch, 4, 1)
            d_gain = factors.new_zeros(batch, four)  # summed over the batch after the loop
            d_c_hat_s, c_new_s = map(_per_step, (d_c_hat, c_new))
            d_rec_s = _per_step(d_rec[..., :four].unflatten(-1, (4, hid)))
        d_out_s, d_tanh_s, d_xw_s, d_rec_all = map(_per_step, (
            d_out.transpose(0, 1), d_tanh, d_xw, d_rec))
        # [i, f, g] blocks of the factors and of dgates as [B, 3, H], and the o, T blocks
        fac3_s, dz3_s = (_per_step(x[..., :three].unflatten(-1, (3, hid)))
                         for x in (factors, d_xw))
        fac_o_s, dz_o_s = (_per_step(x[..., three:four]) for x in (factors, d_xw))
        if highway:
            tr_s = _per_step(kept[1])
            fac_tr_s, dz_tr_s = (_per_step(x[..., four:]) for x in (factors, d_xw))
        f_s = _per_step(kept[0])
        rec_mask_s, keep_h_s, keep_c_s = (_per_step_or_same(m, steps)
                                          for m in (rec_mask, keep_h, keep_c))
        gh, gc = d_h, d_c  # dL/dh_t, dL/dC_t from the later steps
        for t in range(steps - 1, -1, -1):
            gh = gh + d_out_s[t]
            gh_prev = None
            if keep_h is not None:  # h_t = (1 - k) h + k h_{t-1}
                gh_prev = gh * keep_h_s[t]
                gh = gh - gh_prev
            if residual_step:  # h = h_{t-1} + h~
                gh_prev = gh if gh_prev is None else gh_prev + gh
            if highway:  # h = T h~ + (1 - T) h_{t-1}
                torch.mul(gh, fac_tr_s[t], out=dz_tr_s[t])
                gh_tr = gh * tr_s[t]
                gh_prev = gh - gh_tr if gh_prev is None else gh_prev + gh - gh_tr
                gh = gh_tr
            # h~ = o tanh(C^), C^ = LN(C_t) or C_t; C_t = (1 - k) C~ + k C_{t-1}
            torch.mul(gh, fac_o_s[t], out=dz_o_s[t])
            gc_keep = None if keep_c is None else gc * keep_c_s[t]
            if layernorm:
                torch.mul(gh, d_tanh_s[t], out=d_c_hat_s[t])
                mean, rstd = ln["cell"][t]
                dc = torch.ops.aten.native_layer_norm_backward(
                    d_c_hat_s[t], c_new_s[t], (hid,), mean, rstd, cell_gain, cell_bias,
                    [True, False, False])[0].add_(gc)
            else:
                dc = torch.addcmul(gc, gh, d_tanh_s[t])
            if gc_keep is not None:
                dc.sub_(gc_keep)
            # C~ = f C_{t-1} + i g
            torch.mul(dc.unsqueeze(1), fac3_s[t], out=dz3_s[t])
            gc = dc * f_s[t] if gc_keep is None else gc_keep.addcmul_(dc, f_s[t])
            if layernorm:
                # LN backward from the normalised values: with mean 0 and rstd 1 it reads them
                # as x^ and leaves out the 1 / std factor, applied after
                norm, rstd = ln["gates"][t]
                dz = d_xw_s[t][:, :four]
                d_gain.addcmul_(dz, norm.view(batch, four))
                d_norm = torch.ops.aten.native_layer_norm_backward(
                    (dz * gain).view(batch, 4, hid), norm, (hid,), zero, one, None, None,
                    [True, False, False])[0]
                torch.mul(d_norm, rstd, out=d_rec_s[t])
                if highway:
                    d_rec_all[t][:, four:] = dz_tr_s[t]
            d_h_in = d_rec_all[t] @ w_hh
            if rec_mask is not None:
                d_h_in.mul_(rec_mask_s[t])
            gh = d_h_in if gh_prev is None else d_h_in.add_(gh_prev)
        d_w_hh = d_rec.view(-1, width).t() @ h_in.reshape(-1, hid)
        d_ln = [None] * 4
        if layernorm:
            d_ln[0] = d_gain.sum(0).view(4, hid)
            d_ln[1] = d_xw[..., :four].sum((0, 1)).view(4, hid)
            mean = torch.stack([m for m, _ in ln["cell"]])
            rstd = torch.stack([r for _, r in ln["cell"]])
            c_norm = (c_new - mean).mul_(rstd)
            d_ln[2] = torch.linalg.vecdot(d_c_hat.view(-1, hid), c_norm.view(-1, hid), dim=0)
            d_ln[3] = d_c_hat.sum((0, 1))
        return (d_xw, gh, gc, d_w_hh, *d_ln) + (None,) * 6


class CustomLSTMLayer(ObservableSteps, nn.Module):
    """A unidirectional LSTM layer with its own time loop.

    Step (Hochreiter & Schmidhuber 1997, nn.LSTM's gate order; each option changes one line):
      gates  = W' x_t + b + R(W h_{t-1})      R = LN per gate if layernorm (Ba et al. 2016),
                                              identity otherwise; h_{t-1} times the recurrent
                                              dropout mask; with self-attention the recurrent
                                              input is [h_{t-1}; h~_t] (Cheng et al. 2016)
      C_t    = f_t * C_{t-1} + i_t * C~_t
      h~_t   = o_t * tanh(LN(C_t))            (LN only for layernorm)
      highway (Zhang et al. 2016): T = sigma(W_T [h_{t-1}, x_t] + b_T),
               h_t = T * h~_t + (1 - T) * h_{t-1}
      residual_step: h_t = h_{t-1} + h~_t
      zoneout (Krueger et al. 2017): h_t = d * h_{t-1} + (1 - d) * h_t (and the same on C_t
               with zoneout_c)
    Padded steps (t >= length) keep the previous state.

    ``forward`` draws the per-step masks of the whole sequence (recurrent dropout (Semeniuta
    et al. 2016), zoneout) before the loop and, except with self-attention, runs the loop as
    :class:`~lstm_harness.models.compiled_loop.CompiledSequenceLoop` (C++, on CPU float32/64 when
    the extension is built) or :class:`SequenceLoop` (the same formula in PyTorch: CUDA, other
    dtypes, no compiler, ``LSTM_HARNESS_LOOP=python``); ``fast = False`` runs it step by step
    through autograd instead (the same masks: a reference).
    """

    fast = True

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

    def sequence_masks(self, steps: int, batch: int, like: torch.Tensor) -> Masks:
        """The recurrent dropout mask ([B, H] variational, [T, B, H] per step, or None) and the
        zoneout masks d of h and C ([T, B, H] or None) of a whole sequence, in training."""
        rates, shape = self.rates, (steps, batch, self.hidden)
        if not self.training:
            return None, None, None
        rec = self._rec_mask
        if rec is None and rates.recurrent > 0:
            rec = bernoulli_mask(shape, rates.recurrent, like)
        # d ~ Bernoulli(p) as u < p, u ~ U[0, 1) (~3x faster than bernoulli_ on CPU)
        keep_h, keep_c = (like.new_empty(shape).uniform_().lt_(p) if p > 0 else None
                          for p in (rates.zoneout, rates.zoneout_c))
        return rec, keep_h, keep_c

    # -- the step --------------------------------------------------------------------------
    def _cell(self, xw_t: torch.Tensor, state: State, masks: Masks | None = None,
              activations: Activations | None = None) -> State:
        """One step: :func:`~lstm_harness.models.cell.lstm_cell` on h_in (recurrent dropout,
        self-attention) and zoneout; ``masks`` (this step's, from :meth:`sequence_masks`) or
        drawn here; ``activations`` (if given) receives the gates."""
        h_prev, c_prev = state
        rates = self.rates
        h_in = h_prev
        if self.training and rates.recurrent > 0:
            mask = self._rec_mask if masks is None else masks[0]
            if mask is None:
                mask = bernoulli_mask(tuple(h_prev.shape), rates.recurrent, h_prev)
            h_in = h_prev * mask
        if self.self_attention:
            history = torch.stack(self._history, 1) if self._history else None
            h_att = self_attention_context(h_prev, history, None) if history is not None \
                else torch.zeros_like(h_prev)
            h_in = torch.cat([h_in, h_att], dim=1)
        h, c = lstm_cell(xw_t, h_prev, c_prev, h_in, self._w_hh_t, self._layernorm_params(),
                         self.ln_eps, self.highway, self.residual_step, activations)
        if masks is not None and self.training:  # zoneout with the given masks d
            h = h if masks[1] is None else torch.lerp(h, h_prev, masks[1])
            c = c if masks[2] is None else torch.lerp(c, c_prev, masks[2])
            return h, c
        h = zoneout(h_prev, h, rates.zoneout, self.training)
        c = zoneout(c_prev, c, rates.zoneout_c, self.training)
        return h, c

    def _layernorm_params(self) -> tuple[torch.Tensor, ...] | None:
        if not self.layernorm:
            return None
        return self.ln_gates_gain, self.ln_gates_bias, self.ln_cell_gain, self.ln_cell_bias

    def input_projection(self, x: torch.Tensor) -> torch.Tensor:
        """W' x + b for every step at once: [..., X] -> [..., blocks * H]."""
        return F.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)

    def step(self, x_t: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        h, c = self._cell(self.input_projection(x_t), state)
        if self.self_attention:
            self._history.append(h)
        if self._step_observers:
            self._observed(x_t, state, (h, c))
        return h, (h, c)

    def forward(self, x: torch.Tensor, state: State | None = None,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, State]:
        batch, steps, _ = x.shape
        self.begin(batch, x.device)
        if state is None:
            zeros = x.new_zeros(batch, self.hidden)
            state = (zeros, zeros)
        xw = self.input_projection(x.transpose(0, 1))  # time-major [T, B, blocks * H]
        valid = step_mask(steps, lengths, x.device)
        masks = self.sequence_masks(steps, batch, xw)
        # self-attention: only the compiled loop (the fallback is the per-step autograd loop)
        if self.fast and (not self.self_attention or compiled_loop.usable(xw)):
            return self._fast_forward(xw, state, valid, masks)
        out, state, _ = self._reference_loop(xw, state, valid, masks)
        return out, state

    def _reference_loop(self, xw: torch.Tensor, state: State, valid: torch.Tensor | None,
                        masks: Masks, trace: bool = False, given: torch.Tensor | None = None
                        ) -> tuple[torch.Tensor, State, GateTrace | None]:
        """:meth:`_cell` step by step through autograd (:func:`~lstm_harness.models.cell.
        run_steps`), with each step's masks."""
        def cell(t: int, xw_t: torch.Tensor, s: State, acts: Activations | None) -> State:
            return self._cell(xw_t, s, tuple(m if m is None or m.dim() == 2 else m[t]
                                             for m in masks), acts)
        return run_steps(cell, xw, state, valid,
                         self._history if self.self_attention else None, trace, given)

    def trace(self, x: torch.Tensor, state: State | None = None,
              lengths: torch.Tensor | None = None,
              outputs: torch.Tensor | None = None) -> list[GateTrace]:
        """The reference cell (:meth:`_cell`) step by step over x [B, T, X] from ``state``
        (zeros if None), in eval mode (zoneout its expectation, no dropout) without gradient:
        ``[trace]``. ``outputs`` [B, T, H]: this layer's outputs on x; each step then reads its
        h_{t-1} (and self-attention its history) from them
        (:func:`~lstm_harness.models.cell.run_steps`). The layer's mode and its decoding state
        (``begin``) are left as they were."""
        batch = x.shape[0]
        if state is None:
            state = (x.new_zeros(batch, self.hidden),) * 2
        valid = step_mask(x.shape[1], lengths, x.device)
        saved = {k: self.__dict__[k] for k in _DECODING_STATE if k in self.__dict__}
        was_training = self.training
        self.train(False)
        try:
            with torch.no_grad():
                self.begin(batch, x.device)
                xw = self.input_projection(x.transpose(0, 1))
                given = None if outputs is None else outputs.transpose(0, 1)
                _, _, trace = self._reference_loop(xw, state, valid, (None,) * 3, True, given)
        finally:
            self.train(was_training)
            for key in _DECODING_STATE:
                self.__dict__.pop(key, None)
            self.__dict__.update(saved)
        return [trace]

    def _fast_forward(self, xw: torch.Tensor, state: State, valid: torch.Tensor | None,
                      masks: Masks) -> tuple[torch.Tensor, State]:
        """:class:`SequenceLoop` with keep weights k = zoneout d (p at evaluation), 1 on padding."""
        rec_mask, *zone = masks
        keep = []
        for d, p in zip(zone, (self.rates.zoneout, self.rates.zoneout_c), strict=True):
            if d is None and p > 0 and not self.training:
                d = p
            if valid is not None:
                d = 1 - (1 - (0 if d is None else d)) * valid.to(xw.dtype)
            elif isinstance(d, float):
                d = xw.new_full((1, 1, 1), d).expand(*xw.shape[:2], self.hidden)
            keep.append(d)
        ln = ((self.ln_gates_gain, self.ln_gates_bias, self.ln_cell_gain, self.ln_cell_bias)
              if self.layernorm else (None,) * 4)
        args = (xw, state[0], state[1], self._w_hh_t.t(), *ln, rec_mask, *keep, self.highway,
                self.residual_step, self.ln_eps)
        # the compiled loop where it runs (CPU, float32/64, built), else the same in PyTorch
        if compiled_loop.usable(xw):
            out, h, c = compiled_loop.CompiledSequenceLoop.apply(*args, self.self_attention)
        else:
            out, h, c = SequenceLoop.apply(*args)
        return out, (h, c)


_DECODING_STATE = ("_w_hh_t", "_rec_mask", "_history")  # what ``begin`` sets


def step_mask(steps: int, lengths: torch.Tensor | None,
              device: torch.device) -> torch.Tensor | None:
    """[T, B, 1]: t < length (the steps a layer runs), or None without lengths."""
    if lengths is None:
        return None
    return (torch.arange(steps, device=device)[:, None]
            < lengths.to(device)[None, :]).unsqueeze(-1)


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

    def trace(self, x: torch.Tensor, state: State | None = None,
              lengths: torch.Tensor | None = None,
              outputs: torch.Tensor | None = None) -> list[GateTrace]:
        """Each half's ``trace`` (the backward half on the reversed sequence, turned back):
        ``[forward, backward]``; ``outputs`` [B, T, 2H] as for the halves."""
        half = self.fwd.output_size
        fwd_state = bwd_state = None
        if state is not None:
            h, c = state
            fwd_state, bwd_state = (h[:, :half], c[:, :half]), (h[:, half:], c[:, half:])
        out_f = out_b = None
        if outputs is not None:
            out_f, out_b = outputs[..., :half], reverse_padded(outputs[..., half:], lengths)
        (fwd,) = self.fwd.trace(x, fwd_state, lengths, out_f)
        (bwd,) = self.bwd.trace(reverse_padded(x, lengths), bwd_state, lengths, out_b)
        return [fwd, bwd.map(lambda v: reverse_padded(v, lengths))]
