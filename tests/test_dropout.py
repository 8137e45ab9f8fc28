"""The dropout family against its formulas (SPEC "Dropout in Recurrent Connections"): zero rates,
evaluation, variational and per-step masks, recurrent dropout, zoneout on h and c,
weight-drop (DropConnect on W_hh), rate changes in place, and the inverted-dropout mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.dropout import (
    DropoutRates,
    bernoulli_mask,
    sequence_dropout,
    set_dropout_rates,
    zoneout,
)
from lstm_harness.models.layers import CustomLSTMLayer, FusedLSTMLayer
from lstm_harness.models.seq2seq import Seq2Seq
from lstm_harness.models.stack import LSTMStack

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, X, H = 4, 7, 3, 6
F64 = torch.float64
ALL_ON = {"input": 0.3, "recurrent": 0.3, "output": 0.3, "zoneout": 0.3, "zoneout_c": 0.3,
          "weight_drop": 0.3}
VARIANTS = [{}, {"layernorm": True}, {"highway": True}, {"residual_step": True},
            {"self_attention": True}]



def plain_copy(layer: CustomLSTMLayer) -> CustomLSTMLayer:
    """The same cell with every rate zero: h~_t, c~_t from given (h_{t-1}, c_{t-1})."""
    kwargs = {k: getattr(layer, k) for k in ("layernorm", "highway", "residual_step",
                                             "self_attention")}
    plain = CustomLSTMLayer(layer.input_size, layer.hidden, DropoutRates(), **kwargs)
    plain.load_state_dict(layer.state_dict())
    return plain.to(layer.weight_hh.dtype).eval()


def stack(rates: DropoutRates, layers: int = 2, **cfg) -> LSTMStack:
    return LSTMStack(X, ModelConfig(embed=X, hidden=H, layers=layers, **cfg), rates)


# -- zero rates and evaluation ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: "+".join(k) or "vanilla")
def test_zero_rates_in_training_equal_the_plain_cell(kwargs):
    torch.manual_seed(0)
    layer = CustomLSTMLayer(X, H, DropoutRates(), **kwargs)
    x = torch.randn(B, T, X)
    train = layer.train()(x)
    plain = layer.eval()(x)
    assert torch.equal(train[0], plain[0]) and torch.equal(train[1][0], plain[1][0])
    assert torch.equal(train[1][1], plain[1][1])


def test_zero_rates_after_a_schedule_equal_the_plain_stack():
    """A stack built with every rate on (custom path), then set to zero in place: training
    output equals evaluation output exactly."""
    rates = DropoutRates(**ALL_ON, variational=False)
    torch.manual_seed(1)
    s = stack(rates, layers=2)
    assert isinstance(s.layers[0], CustomLSTMLayer)
    x = torch.randn(B, T, X)
    set_dropout_rates(s, **dict.fromkeys(ALL_ON, 0.0))
    s.train()
    a = s(x)[0]
    s.eval()
    assert torch.equal(a, s(x)[0])
    assert torch.equal(sequence_dropout(x, 0.0, True, True), x)
    assert torch.equal(zoneout(x, 2 * x, 0.0, True), 2 * x)


@pytest.mark.parametrize("fused", [True, False])
def test_zero_rates_fused_stack_training_equals_eval(fused):
    torch.manual_seed(2)
    s = stack(DropoutRates(), layers=2, cell="lstm" if fused else "layernorm")
    assert isinstance(s.layers[0], FusedLSTMLayer if fused else CustomLSTMLayer)
    x = torch.randn(B, T, X)
    a = s.train()(x)[0]
    assert torch.equal(a, s.eval()(x)[0])


@pytest.mark.parametrize("variational", [False, True])
def test_eval_is_deterministic_with_every_rate_on(variational):
    cfg = ModelConfig(embed=5, hidden=H, layers=2, bidirectional=True,
                      dropout=DropoutRates(**ALL_ON, variational=variational))
    torch.manual_seed(3)
    model = Seq2Seq(cfg, src_vocab=9, tgt_vocab=9).eval()
    src = torch.randint(3, 9, (B, T))
    lengths = torch.tensor([7, 3, 5, 1])
    torch.manual_seed(10)
    a = model.encode_batch(src, lengths)
    torch.manual_seed(11)
    b = model.encode_batch(src, lengths)
    assert torch.equal(a.keys, b.keys) and torch.equal(a.context, b.context)
    torch.manual_seed(12)
    g1 = model.greedy(src, lengths, max_len=5)
    g2 = model.greedy(src, lengths, max_len=5)
    assert torch.equal(g1, g2)
    model.train()  # and training really is random with these rates
    assert not torch.equal(model.encode_batch(src, lengths).keys,
                           model.encode_batch(src, lengths).keys)


# -- input / output dropout: variational vs per step --------------------------------------------

def zero_pattern(seq: torch.Tensor) -> torch.Tensor:
    return seq == 0  # [B, T, F]


def test_sequence_dropout_variational_mask_is_constant_over_time():
    torch.manual_seed(4)
    x = torch.ones(8, 20, 10)
    out = sequence_dropout(x, 0.5, variational=True, training=True)
    zeros = zero_pattern(out)
    assert zeros.any() and not zeros.all()
    assert (zeros == zeros[:, :1]).all()  # the same features dropped at every step
    assert set(out.unique().tolist()) == {0.0, 2.0}  # scaled by 1 / (1 - p)
    per_step = zero_pattern(sequence_dropout(x, 0.5, variational=False, training=True))
    assert not (per_step == per_step[:, :1]).all()
    assert torch.equal(sequence_dropout(x, 0.5, variational=True, training=False), x)


def capture_inputs(layer: nn.Module) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    layer.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    return seen


@pytest.mark.parametrize("custom", [False, True])
@pytest.mark.parametrize("variational", [False, True])
def test_stack_input_and_output_masks(custom, variational):
    """Layer 1 sees x times the input mask; layer 2 sees layer 1's output times the output
    mask: one mask per sequence with ``variational``, else new masks at every step."""
    rates = DropoutRates(input=0.5, output=0.5, variational=variational)
    torch.manual_seed(5)
    s = stack(rates, layers=2, cell="layernorm" if custom else "lstm").train()
    first, second = capture_inputs(s.layers[0]), capture_inputs(s.layers[1])
    s(torch.ones(B, T, X))
    for seen in (first, second):
        zeros = zero_pattern(seen[0])
        assert zeros.any() and not zeros.all()
        constant = bool((zeros == zeros[:, :1]).all())
        assert constant == variational


@pytest.mark.parametrize("variational", [False, True])
def test_stack_step_mode_input_masks(variational):
    rates = DropoutRates(input=0.5, variational=variational)
    torch.manual_seed(6)
    s = stack(rates, layers=1).train()
    seen = []
    layer = s.layers[0]
    original = layer.step

    def recording_step(x_t, state):
        seen.append(x_t.detach())
        return original(x_t, state)
    layer.step = recording_step
    s.begin(B, torch.device("cpu"))
    states = [(torch.zeros(B, H), torch.zeros(B, H))]
    for _ in range(T):
        _, states = s.step(torch.ones(B, X), states)
    zeros = torch.stack(seen, 1) == 0
    assert zeros.any() and not zeros.all()
    assert bool((zeros == zeros[:, :1]).all()) == variational


# -- recurrent dropout: h_t = LSTM(m^h * h_{t-1}, x_t) -----------------------------------------

def transparent_layer(rates: DropoutRates) -> CustomLSTMLayer:
    """i = 1, f = 0, o = 1 exactly (saturated biases), g = x_t + (m * h_{t-1}):
    C_t = tanh(x_t + m h_{t-1}), h_t = tanh(C_t), so each unit's mask can be read off."""
    layer = CustomLSTMLayer(H, H, rates).to(F64)
    with torch.no_grad():
        for p in (layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh):
            p.zero_()
        eye = torch.eye(H, dtype=F64)
        layer.weight_ih[2 * H : 3 * H] = eye
        layer.weight_hh[2 * H : 3 * H] = eye
        layer.bias_ih[:H] = 1e4
        layer.bias_ih[H : 2 * H] = -1e4
        layer.bias_ih[3 * H :] = 1e4
    return layer


def read_masks(out: torch.Tensor, x: torch.Tensor, h0: torch.Tensor, p: float) -> torch.Tensor:
    """The recurrent mask of every step [B, T, H], as 0 / 1 (dropped / kept)."""
    masks, h_prev = [], h0
    for t in range(x.shape[1]):
        dropped = torch.tanh(torch.tanh(x[:, t]))
        kept = torch.tanh(torch.tanh(x[:, t] + h_prev / (1 - p)))
        is_dropped = (out[:, t] - dropped).abs() < 1e-9
        is_kept = (out[:, t] - kept).abs() < 1e-9
        assert (is_dropped ^ is_kept).all(), "each unit is either dropped or kept and scaled"
        masks.append(is_kept)
        h_prev = out[:, t]
    return torch.stack(masks, 1)


def positive_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = 0.5 + torch.rand(B, T, H, generator=gen, dtype=F64)
    h0 = torch.full((B, H), 0.5, dtype=F64)
    return x, h0


def test_transparent_layer_reads_back_no_mask_without_dropout():
    layer = transparent_layer(DropoutRates()).train()
    x, h0 = positive_inputs(0)
    out, _ = layer(x, (h0, torch.zeros_like(h0)))
    assert read_masks(out, x, h0, 0.0).all()


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("mode", ["forward", "step"])
def test_recurrent_dropout_masks(variational, mode):
    p = 0.5
    layer = transparent_layer(DropoutRates(recurrent=p, variational=variational)).train()
    x, h0 = positive_inputs(1)
    torch.manual_seed(7)
    state = (h0, torch.zeros_like(h0))
    if mode == "forward":
        out, _ = layer(x, state)
    else:
        layer.begin(B, x.device)
        outs = []
        for t in range(T):
            h, state = layer.step(x[:, t], state)
            outs.append(h)
        out = torch.stack(outs, 1)
    masks = read_masks(out, x, h0, p)
    assert masks.any() and not masks.all()
    same_every_step = bool((masks == masks[:, :1]).all())
    assert same_every_step == variational
    if variational:  # one mask per sequence, fresh per sequence (per example too)
        out2, _ = layer(x, (h0, torch.zeros_like(h0)))
        masks2 = read_masks(out2, x, h0, p)
        assert not torch.equal(masks2[:, 0], masks[:, 0])
        assert not (masks[:, 0] == masks[:1, 0]).all()
    layer.eval()
    # in eval the mask is off: the output equals the plain cell's
    out_eval, _ = layer(x, (h0, torch.zeros_like(h0)))
    assert torch.equal(out_eval, plain_copy(layer)(x, (h0, torch.zeros_like(h0)))[0])


# -- zoneout ------------------------------------------------------------------------------------

def zoneout_inputs(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, X, generator=gen, dtype=F64)
    state = (torch.randn(B, H, generator=gen, dtype=F64),
             torch.randn(B, H, generator=gen, dtype=F64))
    return x, state


def test_zoneout_on_h_training_keeps_old_or_takes_new():
    p = 0.5
    torch.manual_seed(8)
    layer = CustomLSTMLayer(X, H, DropoutRates(zoneout=p)).to(F64).train()
    plain = plain_copy(layer)
    x, (h0, c0) = zoneout_inputs(0)
    out, (h_T, c_T) = layer(x, (h0, c0))
    plain.begin(B, x.device)
    h_prev, c_prev = h0, c0
    kept = taken = 0
    for t in range(T):
        h_new, (_, c_new) = plain.step(x[:, t], (h_prev, c_prev))
        is_old = (out[:, t] - h_prev).abs() < 1e-12
        is_new = (out[:, t] - h_new).abs() < 1e-12
        assert (is_old | is_new).all(), "zoneout output is h_{t-1} or h~_t, nothing else"
        kept += int((is_old & ~is_new).sum())
        taken += int((is_new & ~is_old).sum())
        h_prev, c_prev = out[:, t], c_new  # c is not zoned out (zoneout_c = 0)
    assert kept > 0 and taken > 0
    assert 0.3 < kept / (kept + taken) < 0.7
    assert torch.equal(h_T, out[:, -1])
    assert (c_T - c_prev).abs().max() < 1e-12


def test_zoneout_on_h_eval_is_the_expectation():
    p = 0.3
    torch.manual_seed(9)
    layer = CustomLSTMLayer(X, H, DropoutRates(zoneout=p)).to(F64).eval()
    plain = plain_copy(layer)
    x, (h0, c0) = zoneout_inputs(1)
    out, _ = layer(x, (h0, c0))
    plain.begin(B, x.device)
    h_prev, c_prev = h0, c0
    for t in range(T):
        h_new, (_, c_new) = plain.step(x[:, t], (h_prev, c_prev))
        expected = p * h_prev + (1 - p) * h_new
        assert (out[:, t] - expected).abs().max() < 1e-12
        assert (out[:, t] - h_new).abs().max() > 1e-3
        h_prev, c_prev = out[:, t], c_new


@pytest.mark.parametrize("training", [True, False])
def test_zoneout_on_c(training):
    p = 0.5
    torch.manual_seed(10)
    layer = CustomLSTMLayer(X, H, DropoutRates(zoneout_c=p)).to(F64).train(training)
    plain = plain_copy(layer)
    x, state = zoneout_inputs(2)
    layer.begin(B, x.device)
    plain.begin(B, x.device)
    kept = taken = 0
    for t in range(T):
        h, (h_again, c) = layer.step(x[:, t], state)
        h_new, (_, c_new) = plain.step(x[:, t], state)
        c_prev = state[1]
        # h comes from the new (not zoned-out) cell state: h~ = o tanh(C~_t)
        assert (h - h_new).abs().max() < 1e-12 and torch.equal(h, h_again)
        if training:
            is_old = (c - c_prev).abs() < 1e-12
            is_new = (c - c_new).abs() < 1e-12
            assert (is_old | is_new).all()
            kept += int((is_old & ~is_new).sum())
            taken += int((is_new & ~is_old).sum())
        else:
            assert (c - (p * c_prev + (1 - p) * c_new)).abs().max() < 1e-12
        state = (h, c)
    if training:
        assert kept > 0 and taken > 0


def test_zoneout_function_formula():
    prev, new = torch.randn(1000, dtype=F64), torch.randn(1000, dtype=F64)
    assert torch.allclose(zoneout(prev, new, 0.25, False), 0.25 * prev + 0.75 * new,
                          rtol=0, atol=1e-15)
    torch.manual_seed(11)
    out = zoneout(prev, new, 0.25, True)
    is_old, is_new = out == prev, out == new
    assert (is_old | is_new).all()
    assert 0.18 < is_old.double().mean() < 0.32


# -- weight-drop (DropConnect on W_hh, one mask per forward pass) -------------------------------

def nn_lstm_with(layer: FusedLSTMLayer, w_hh: list[torch.Tensor]) -> nn.LSTM:
    ref = nn.LSTM(layer.input_size, layer.hidden, batch_first=True,
                  bidirectional=layer.bidirectional)
    suffixes = [""] + (["_reverse"] if layer.bidirectional else [])
    with torch.no_grad():
        for suffix, w in zip(suffixes, w_hh, strict=True):
            getattr(ref, f"weight_ih_l0{suffix}").copy_(getattr(layer, f"weight_ih{suffix}"))
            getattr(ref, f"weight_hh_l0{suffix}").copy_(w)
            getattr(ref, f"bias_ih_l0{suffix}").copy_(getattr(layer, f"bias_ih{suffix}"))
            getattr(ref, f"bias_hh_l0{suffix}").copy_(getattr(layer, f"bias_hh{suffix}"))
    return ref


@pytest.mark.parametrize("bidirectional", [False, True])
def test_weight_drop_fused_one_mask_per_forward(bidirectional):
    p = 0.5
    torch.manual_seed(12)
    layer = FusedLSTMLayer(X, H, bidirectional, DropoutRates(weight_drop=p)).train()
    x = torch.randn(B, T, X)
    lengths = torch.tensor([7, 2, 5, 4])
    torch.manual_seed(100)
    out, (h, c) = layer(x, lengths=lengths)
    torch.manual_seed(100)
    w_hh = [w.detach() for w in layer.recurrent_weights()]  # the mask that forward drew
    plain_w = [layer.weight_hh] + ([layer.weight_hh_reverse] if bidirectional else [])
    for w, w0 in zip(w_hh, plain_w, strict=True):
        scale = w / w0
        assert ((scale.abs() < 1e-6) | ((scale - 1 / (1 - p)).abs() < 1e-4)).all()
        assert (w == 0).any()
    ref = nn_lstm_with(layer, w_hh)
    packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                               enforce_sorted=False)
    r_out, (r_h, r_c) = ref(packed)
    r_out, _ = nn.utils.rnn.pad_packed_sequence(r_out, batch_first=True, total_length=T)
    assert (out - r_out).abs().max() < 1e-5
    assert (h - r_h.transpose(0, 1).reshape(B, -1)).abs().max() < 1e-5
    assert (c - r_c.transpose(0, 1).reshape(B, -1)).abs().max() < 1e-5
    # two forwards in training draw different masks; evaluation uses W_hh itself
    assert not torch.equal(layer(x, lengths=lengths)[0], layer(x, lengths=lengths)[0])
    layer.eval()
    e_out = layer(x, lengths=lengths)[0]
    r_out, _ = nn_lstm_with(layer, [w.detach() for w in plain_w])(packed)
    r_out, _ = nn.utils.rnn.pad_packed_sequence(r_out, batch_first=True, total_length=T)
    assert (e_out - r_out).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["fused", "custom"])
def test_weight_drop_gradient_is_zero_exactly_where_dropped(kind):
    """One mask for every step and example: a dropped entry of W_hh gets no gradient at all
    (with a mask per step it would get gradient from the steps that kept it)."""
    p = 0.5
    torch.manual_seed(13)
    rates = DropoutRates(weight_drop=p)
    layer = (FusedLSTMLayer(X, H, False, rates) if kind == "fused"
             else CustomLSTMLayer(X, H, rates)).train()
    x = torch.randn(B, T, X)
    out, _ = layer(x, (torch.randn(B, H), torch.randn(B, H)))
    out.pow(2).sum().backward()
    zero = layer.weight_hh.grad == 0
    assert 0.35 < zero.float().mean() < 0.65
    assert (layer.weight_ih.grad != 0).all()
    layer.zero_grad()
    out, _ = layer(x, (torch.randn(B, H), torch.randn(B, H)))
    out.pow(2).sum().backward()
    assert not torch.equal(layer.weight_hh.grad == 0, zero)  # a new mask per forward


def test_weight_drop_custom_layer_matches_manual_loop():
    p = 0.4
    torch.manual_seed(14)
    layer = CustomLSTMLayer(X, H, DropoutRates(weight_drop=p)).to(F64).train()
    x, (h0, c0) = zoneout_inputs(3)
    torch.manual_seed(200)
    out, _ = layer(x, (h0, c0))
    torch.manual_seed(200)
    w_hh = layer.weight_hh * bernoulli_mask(tuple(layer.weight_hh.shape), p, layer.weight_hh)
    h, c = h0, c0
    for t in range(T):
        gates = x[:, t] @ layer.weight_ih.T + layer.bias_ih + layer.bias_hh + h @ w_hh.T
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        assert (out[:, t] - h).abs().max() < 1e-12


@pytest.mark.parametrize("bidirectional", [False, True])
def test_fused_kernel_kept_with_weight_drop_input_and_output_dropout(bidirectional):
    for variational in (False, True):
        rates = DropoutRates(input=0.2, output=0.3, weight_drop=0.4, variational=variational)
        s = LSTMStack(X, ModelConfig(embed=X, hidden=H, layers=3), rates, bidirectional)
        assert all(isinstance(layer, FusedLSTMLayer) for layer in s.layers)
    for name in ("recurrent", "zoneout", "zoneout_c"):
        s = LSTMStack(X, ModelConfig(embed=X, hidden=H, layers=2),
                      DropoutRates(**{name: 0.1}), bidirectional)
        assert not any(isinstance(layer, FusedLSTMLayer) for layer in s.layers)


# -- rates changed in place ---------------------------------------------------------------------

def test_set_dropout_rates_changes_every_layer_of_a_seq2seq():
    cfg = ModelConfig(embed=5, hidden=H, layers=2, bidirectional=True,
                      dropout=DropoutRates(recurrent=0.2, input=0.1))
    model = Seq2Seq(cfg, src_vocab=9, tgt_vocab=9)
    holders = [m for m in model.modules() if isinstance(getattr(m, "rates", None), DropoutRates)]
    recurrent_layers = [m for m in model.modules()
                        if isinstance(m, CustomLSTMLayer | FusedLSTMLayer)]
    assert len(recurrent_layers) == 2 * 2 + 2  # encoder: 2 bidirectional layers; decoder: 2
    assert all(m.rates is model.rates for m in holders)
    set_dropout_rates(model, input=0.05, recurrent=0.01, zoneout=0.2, weight_drop=0.3,
                      variational=True)
    for m in recurrent_layers:
        assert (m.rates.input, m.rates.recurrent, m.rates.zoneout, m.rates.weight_drop) == \
            (0.05, 0.01, 0.2, 0.3)
        assert m.rates.variational is True
        assert m.rates.output == 0.0  # untouched


def test_set_dropout_rates_rejects_unknown_names():
    model = Seq2Seq(ModelConfig(embed=5, hidden=H), src_vocab=9, tgt_vocab=9)
    with pytest.raises(ValueError) as err:
        set_dropout_rates(model, input=0.1, recurent=0.2)
    message = str(err.value)
    assert "recurent" in message
    for name in ("input", "recurrent", "output", "zoneout", "zoneout_c", "weight_drop",
                 "variational"):
        assert name in message
    assert model.rates.input == 0.0  # nothing changed


# -- the mask -----------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_bernoulli_mask_is_inverted_dropout(p):
    torch.manual_seed(15)
    like = torch.empty(0, dtype=F64)
    mask = bernoulli_mask((200_000,), p, like)
    assert mask.dtype == F64
    values = mask.unique()
    assert len(values) == 2 and values[0] == 0
    assert abs(values[1].item() - 1 / (1 - p)) < 1e-12  # kept units scaled by 1 / (1 - p)
    assert abs((mask == 0).double().mean().item() - p) < 0.01
    assert abs(mask.mean().item() - 1.0) < 0.03
