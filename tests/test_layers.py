"""LSTM layers against their formulas: nn.LSTM equivalence (values and gradients), step mode,
the LayerNorm LSTM (SPEC "Layer Normalization in LSTM Cells"), gradcheck, and padding."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer

B, T, X, H = 3, 6, 4, 5
TOL = 1e-5
LENGTHS = torch.tensor([4, 2, 6])  # unsorted, one full length, one shorter than T in the max
VARIANTS = [
    {},
    {"layernorm": True},
    {"highway": True},
    {"residual_step": True},
    {"self_attention": True},
    {"layernorm": True, "highway": True},
]


pytestmark = pytest.mark.usefixtures("one_thread")


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    diff = max_diff(a, b)
    assert diff <= tol, f"max abs diff {diff} > {tol}"


def copy_from(dst: nn.Module, lstm: nn.LSTM, src_suffix: str = "_l0",
              dst_suffix: str = "") -> None:
    """nn.LSTM's weights into a layer (the first 4H rows: the highway block is extra)."""
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            src = getattr(lstm, name + src_suffix)
            getattr(dst, name + dst_suffix)[: src.shape[0]].copy_(src)


def loss_weights(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(123)
    return [torch.randn(s, generator=gen) for s in shapes]


def run_with_grads(fn, params, x, state, out_mask=None):
    """fn(x, state) -> (out, (h, c)); returns out, h, c and grads of params, x (and state)."""
    x = x.clone().requires_grad_()
    leaves = [x]
    if state is not None:
        state = tuple(s.clone().requires_grad_() for s in state)
        leaves += list(state)
    out, (h, c) = fn(x, state)
    w_out, w_h, w_c = loss_weights(out.shape, h.shape, c.shape)
    if out_mask is not None:
        w_out = w_out * out_mask
    loss = (out * w_out).sum() + (h * w_h).sum() + (c * w_c).sum()
    grads = torch.autograd.grad(loss, list(params) + leaves)
    return out, h, c, grads


def nn_lstm_fn(lstm: nn.LSTM, lengths: torch.Tensor | None = None):
    """nn.LSTM with our conventions: state [B, D] = [fwd; bwd], outputs padded to T."""
    dirs = 2 if lstm.bidirectional else 1

    def fn(x, state):
        hx = None
        if state is not None:
            hx = tuple(s.view(x.shape[0], dirs, -1).transpose(0, 1).contiguous() for s in state)
        if lengths is None:
            out, (h, c) = lstm(x, hx)
        else:
            packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = lstm(packed, hx)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        final = tuple(s.transpose(0, 1).reshape(x.shape[0], -1) for s in (h, c))
        return out, final
    return fn


def valid_mask(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    return (torch.arange(steps)[None, :] < lengths[:, None]).float().unsqueeze(-1)


def lstm_params(lstm: nn.LSTM) -> list[torch.Tensor]:
    names = ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"]
    if lstm.bidirectional:
        names += [n + "_reverse" for n in names]
    return [getattr(lstm, n) for n in names]


def compare(ours, ref):
    out, h, c, grads = ours
    r_out, r_h, r_c, r_grads = ref
    assert_close(out, r_out)
    assert_close(h, r_h)
    assert_close(c, r_c)
    assert len(grads) == len(r_grads)
    for g, rg in zip(grads, r_grads, strict=True):
        assert_close(g, rg)
        assert rg.abs().max() > 0  # the reference gradient is not trivially zero


# -- 1. the vanilla cells equal nn.LSTM ---------------------------------------------------------

@pytest.mark.parametrize("with_state", [False, True])
def test_custom_layer_equals_nn_lstm(with_state):
    torch.manual_seed(0)
    ref = nn.LSTM(X, H, batch_first=True)
    layer = CustomLSTMLayer(X, H, DropoutRates())
    copy_from(layer, ref)
    x = torch.randn(B, T, X)
    state = (torch.randn(B, H), torch.randn(B, H)) if with_state else None
    ours = run_with_grads(layer, [layer.weight_ih, layer.weight_hh, layer.bias_ih,
                                  layer.bias_hh], x, state)
    compare(ours, run_with_grads(nn_lstm_fn(ref), lstm_params(ref), x, state))


@pytest.mark.parametrize("with_state", [False, True])
def test_custom_layer_with_lengths_equals_nn_lstm_per_example(with_state):
    torch.manual_seed(1)
    ref = nn.LSTM(X, H, batch_first=True)
    layer = CustomLSTMLayer(X, H, DropoutRates())
    copy_from(layer, ref)
    x = torch.randn(B, T, X)
    state = (torch.randn(B, H), torch.randn(B, H)) if with_state else None
    out, (h, c) = layer(x, state, LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        hx = None if state is None else (state[0][b : b + 1, None].transpose(0, 1),
                                          state[1][b : b + 1, None].transpose(0, 1))
        r_out, (r_h, r_c) = ref(x[b : b + 1, :n], hx)
        assert_close(out[b, :n], r_out[0])
        assert_close(h[b], r_h[0, 0])  # the final state is the state at the true length
        assert_close(c[b], r_c[0, 0])
    # gradients against the packed reference (padded outputs carry no loss)
    mask = valid_mask(LENGTHS, T)
    params = [layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh]
    ours = run_with_grads(lambda x, s: layer(x, s, LENGTHS), params, x, state, mask)
    theirs = run_with_grads(nn_lstm_fn(ref, LENGTHS), lstm_params(ref), x, state, mask)
    ours = (ours[0] * mask, *ours[1:])
    compare(ours, theirs)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("with_lengths", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_fused_layer_equals_nn_lstm(bidirectional, with_lengths, with_state):
    torch.manual_seed(2)
    ref = nn.LSTM(X, H, batch_first=True, bidirectional=bidirectional)
    layer = FusedLSTMLayer(X, H, bidirectional, DropoutRates())
    copy_from(layer, ref)
    if bidirectional:
        copy_from(layer, ref, "_l0_reverse", "_reverse")
    d = 2 * H if bidirectional else H
    assert layer.output_size == d
    x = torch.randn(B, T, X)
    state = (torch.randn(B, d), torch.randn(B, d)) if with_state else None
    lengths = LENGTHS if with_lengths else None
    names = ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    if bidirectional:
        names += [n + "_reverse" for n in names]
    params = [getattr(layer, n) for n in names]
    ours = run_with_grads(lambda x, s: layer(x, s, lengths), params, x, state)
    theirs = run_with_grads(nn_lstm_fn(ref, lengths), lstm_params(ref), x, state)
    assert ours[0].shape == (B, T, d) and ours[1].shape == (B, d)
    compare(ours, theirs)
    if with_lengths:  # padded outputs are zero, as pad_packed_sequence gives
        assert (ours[0] * (1 - valid_mask(LENGTHS, T))).abs().max() == 0


def test_fused_bidirectional_final_state_order_is_forward_then_backward():
    """h = [h_fwd at the true end; h_bwd at position 0] (the outputs' halves say so)."""
    torch.manual_seed(3)
    layer = FusedLSTMLayer(X, H, True, DropoutRates())
    x = torch.randn(B, T, X)
    out, (h, _) = layer(x, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS.tolist()):
        assert_close(h[b, :H], out[b, n - 1, :H])
        assert_close(h[b, H:], out[b, 0, H:])


@pytest.mark.parametrize("with_state", [False, True])
def test_bidirectional_custom_layer_equals_nn_lstm(with_state):
    torch.manual_seed(4)
    ref = nn.LSTM(X, H, batch_first=True, bidirectional=True)
    layer = BidirectionalLayer(CustomLSTMLayer(X, H, DropoutRates()),
                               CustomLSTMLayer(X, H, DropoutRates()))
    copy_from(layer.fwd, ref)
    copy_from(layer.bwd, ref, "_l0_reverse")
    assert layer.output_size == 2 * H
    x = torch.randn(B, T, X)
    state = (torch.randn(B, 2 * H), torch.randn(B, 2 * H)) if with_state else None
    mask = valid_mask(LENGTHS, T)
    params = [getattr(m, n) for m in (layer.fwd, layer.bwd)
              for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
    out, h, c, grads = run_with_grads(lambda x, s: layer(x, s, LENGTHS), params, x, state, mask)
    theirs = run_with_grads(nn_lstm_fn(ref, LENGTHS), lstm_params(ref), x, state, mask)
    compare((out * mask, h, c, grads), theirs)
    # and without lengths
    ours = run_with_grads(layer, params, x, state)
    compare(ours, run_with_grads(nn_lstm_fn(ref), lstm_params(ref), x, state))


# -- 2. step() equals forward() -----------------------------------------------------------------

def run_steps(layer, x, state):
    layer.begin(x.shape[0], x.device)
    outs = []
    for t in range(x.shape[1]):
        out, state = layer.step(x[:, t], state)
        outs.append(out)
    return torch.stack(outs, 1), state


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "+".join(k) or "vanilla")
def test_custom_step_equals_forward(kwargs):
    torch.manual_seed(5)
    layer = CustomLSTMLayer(X, H, DropoutRates(), **kwargs)
    x = torch.randn(B, T, X)
    state = (torch.randn(B, H), torch.randn(B, H))
    out, (h, c) = layer(x, state)
    s_out, (s_h, s_c) = run_steps(layer, x, state)
    assert_close(s_out, out)
    assert_close(s_h, h)
    assert_close(s_c, c)


def test_fused_step_equals_forward():
    torch.manual_seed(6)
    layer = FusedLSTMLayer(X, H, False, DropoutRates())
    x = torch.randn(B, T, X)
    state = (torch.randn(B, H), torch.randn(B, H))
    out, (h, c) = layer(x, state)
    s_out, (s_h, s_c) = run_steps(layer, x, state)
    assert_close(s_out, out)
    assert_close(s_h, h)
    assert_close(s_c, c)
    with pytest.raises(ValueError):
        FusedLSTMLayer(X, H, True, DropoutRates()).begin(B, x.device)


# -- 3. the LayerNorm LSTM (Ba et al. 2016) -----------------------------------------------------

def ln_ref(v, gain, bias, eps):
    """LN(h) = g * (h - mu) / sqrt(var + eps) + b over the last dimension (SPEC)."""
    mu = v.mean(-1, keepdim=True)
    var = ((v - mu) ** 2).mean(-1, keepdim=True)
    return gain * (v - mu) / torch.sqrt(var + eps) + bias


def ln_lstm_reference(layer, x, state):
    """Per gate k: pre_k = LN(W_k h_{t-1}) + W'_k x_t + b_k; C_t = f C + i C~;
    h_t = o tanh(LN(C_t)). W_k = weight_hh rows, W'_k = weight_ih rows, b = bias_ih + bias_hh."""
    hid, eps = layer.hidden, layer.ln_eps
    h, c = state
    outs = []
    for t in range(x.shape[1]):
        pre = []
        for k in range(4):
            rows = slice(k * hid, (k + 1) * hid)
            rec = h @ layer.weight_hh[rows].T
            inp = x[:, t] @ layer.weight_ih[rows].T + layer.bias_ih[rows] + layer.bias_hh[rows]
            pre.append(ln_ref(rec, layer.ln_gates_gain[k], layer.ln_gates_bias[k], eps) + inp)
        i, f, o = torch.sigmoid(pre[0]), torch.sigmoid(pre[1]), torch.sigmoid(pre[3])
        g = torch.tanh(pre[2])
        c = f * c + i * g
        h = o * torch.tanh(ln_ref(c, layer.ln_cell_gain, layer.ln_cell_bias, eps))
        outs.append(h)
    return torch.stack(outs, 1), (h, c)


def ln_layer(seed: int) -> CustomLSTMLayer:
    torch.manual_seed(seed)
    layer = CustomLSTMLayer(X, H, DropoutRates(), layernorm=True)
    with torch.no_grad():  # gains and biases away from 1 / 0, so that they are exercised
        for p in (layer.ln_gates_gain, layer.ln_cell_gain):
            p.uniform_(0.5, 1.5)
        for p in (layer.ln_gates_bias, layer.ln_cell_bias):
            p.uniform_(-0.5, 0.5)
    return layer


@pytest.mark.parametrize("with_state", [False, True])
def test_layernorm_lstm_equals_reference(with_state):
    layer = ln_layer(7)
    x = torch.randn(B, T, X) * 2
    state = (torch.randn(B, H), torch.randn(B, H)) if with_state else None
    out, (h, c) = layer(x, state)
    ref_state = state or (torch.zeros(B, H), torch.zeros(B, H))
    r_out, (r_h, r_c) = ln_lstm_reference(layer, x, ref_state)
    assert_close(out, r_out)
    assert_close(h, r_h)
    assert_close(c, r_c)
    # the layer is really not the vanilla cell
    plain = CustomLSTMLayer(X, H, DropoutRates())
    plain.load_state_dict({k: v for k, v in layer.state_dict().items()
                           if not k.startswith("ln_")})
    assert max_diff(plain(x, state)[0], out) > 1e-2


def test_layernorm_input_term_is_not_normalised():
    """From a zero state LN(W h) = beta, so gates = beta + W' x + b: scaling x must change the
    output (LN(W h + W' x) would be scale-invariant in x up to eps)."""
    layer = ln_layer(8)
    x = torch.randn(B, 1, X)
    with torch.no_grad():
        layer.bias_ih.zero_()
        layer.bias_hh.zero_()
        h1 = layer(x)[0][:, 0]
        h3 = layer(3 * x)[0][:, 0]
        assert max_diff(h1, h3) > 1e-2
        zeros = (torch.zeros(B, H), torch.zeros(B, H))
        assert_close(h3, ln_lstm_reference(layer, 3 * x, zeros)[0][:, 0])

        def wrong(x_t):  # LN over the whole pre-activation, input included
            pre = (x_t @ layer.weight_ih.T).view(B, 4, H)
            pre = ln_ref(pre, layer.ln_gates_gain, layer.ln_gates_bias, layer.ln_eps)
            i, f, g, o = pre.unbind(1)
            c = torch.sigmoid(i) * torch.tanh(g)
            ln_c = ln_ref(c, layer.ln_cell_gain, layer.ln_cell_bias, layer.ln_eps)
            return torch.sigmoid(o) * torch.tanh(ln_c)
        assert max_diff(wrong(3 * x[:, 0]), wrong(x[:, 0])) < 1e-3  # what a wrong cell would do
        assert max_diff(h3, wrong(3 * x[:, 0])) > 1e-2


# -- 4. gradcheck in float64 --------------------------------------------------------------------

def gradcheck_layer(layer: nn.Module, lengths: torch.Tensor | None, d: int) -> None:
    torch.manual_seed(9)
    gb, gt, gx = 2, 3, 3
    layer = layer.double()
    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for _, p in layer.named_parameters()]
    x = torch.randn(gb, gt, gx, dtype=torch.float64, requires_grad=True)
    h0 = (0.5 * torch.randn(gb, d, dtype=torch.float64)).requires_grad_()
    c0 = (0.5 * torch.randn(gb, d, dtype=torch.float64)).requires_grad_()

    def fn(x, h0, c0, *ps):
        out, (h, c) = functional_call(layer, dict(zip(names, ps, strict=True)),
                                      (x, (h0, c0), lengths))
        return out, h, c
    assert gradcheck(fn, (x, h0, c0, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "+".join(k) or "vanilla")
@pytest.mark.parametrize("lengths", [None, torch.tensor([3, 2])], ids=["full", "lengths"])
def test_gradcheck_custom_cells(kwargs, lengths):
    torch.manual_seed(10)
    layer = CustomLSTMLayer(3, 2, DropoutRates(), **kwargs)
    gradcheck_layer(layer, lengths, 2)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("lengths", [None, torch.tensor([2, 3])], ids=["full", "lengths"])
def test_gradcheck_fused(bidirectional, lengths):
    torch.manual_seed(11)
    layer = FusedLSTMLayer(3, 2, bidirectional, DropoutRates())
    gradcheck_layer(layer, lengths, 4 if bidirectional else 2)


@pytest.mark.parametrize("kwargs", [{}, {"layernorm": True}], ids=["vanilla", "layernorm"])
def test_gradcheck_zoneout_and_all_rates_in_eval(kwargs):
    """In eval mode zoneout is its expectation (deterministic) and the other rates are off."""
    rates = DropoutRates(input=0.3, recurrent=0.3, output=0.3, zoneout=0.3, zoneout_c=0.4,
                         weight_drop=0.3, variational=True)
    torch.manual_seed(12)
    layer = CustomLSTMLayer(3, 2, rates, **kwargs).eval()
    gradcheck_layer(layer, None, 2)
    gradcheck_layer(FusedLSTMLayer(3, 2, False, rates).eval(), None, 2)


# -- 8. padding ---------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "+".join(k) or "vanilla")
def test_custom_layer_padding_changes_nothing(kwargs):
    torch.manual_seed(13)
    layer = CustomLSTMLayer(X, H, DropoutRates(), **kwargs)
    x = torch.randn(B, T, X)
    junk = x.clone()
    pad = valid_mask(LENGTHS, T) == 0
    junk = torch.where(pad, 100 * torch.randn(B, T, X), junk)
    state = (torch.randn(B, H), torch.randn(B, H))
    out, (h, c) = layer(x, state, LENGTHS)
    out_j, (h_j, c_j) = layer(junk, state, LENGTHS)
    assert torch.equal(h, h_j) and torch.equal(c, c_j)
    for b, n in enumerate(LENGTHS.tolist()):
        assert torch.equal(out[b, :n], out_j[b, :n])
        alone, (h_a, c_a) = layer(x[b : b + 1, :n], (state[0][b : b + 1], state[1][b : b + 1]))
        assert_close(out[b, :n], alone[0])
        assert_close(h[b], h_a[0])  # the state at the true length
        assert_close(c[b], c_a[0])
        assert_close(h[b], out[b, n - 1])
