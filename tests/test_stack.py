"""Stacks against their formulas (SPEC "Skip Connections and Highway Networks"): highway,
residual (deep and per-step), dense, gradient flow; hierarchical context and multi-modal
fusion of the encoder-decoders."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer
from lstm_harness.models.seq2seq import Forecaster, ModalityFusion, Seq2Seq
from lstm_harness.models.stack import LSTMStack
from lstm_harness.tasks.base import ForecastBatch

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, X, H = 3, 6, 4, 5
TOL = 1e-5



def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= tol, f"max abs diff {diff} > {tol}"


def make_stack(layers: int, skip: str = "none", bidirectional: bool = False,
               input_size: int = X, **cfg) -> LSTMStack:
    model = ModelConfig(embed=input_size, hidden=H, layers=layers, skip=skip, **cfg)
    return LSTMStack(input_size, model, DropoutRates(), bidirectional)


def lstm_of(layer: nn.Module) -> nn.LSTM:
    """An nn.LSTM with a layer's (first 4H rows of) weights."""
    bidirectional = isinstance(layer, BidirectionalLayer) or getattr(layer, "bidirectional",
                                                                      False)
    parts = [(layer.fwd, ""), (layer.bwd, "_reverse")] if isinstance(layer, BidirectionalLayer) \
        else [(layer, "")] + ([(layer, "_reverse")] if bidirectional else [])
    first = parts[0][0]
    ref = nn.LSTM(first.input_size, first.hidden, batch_first=True, bidirectional=bidirectional)
    with torch.no_grad():
        for module, suffix in parts:
            src_suffix = "" if isinstance(layer, BidirectionalLayer) else suffix
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                src = getattr(module, name + src_suffix)
                getattr(ref, f"{name}_l0{suffix}").copy_(src[: 4 * first.hidden])
    return ref


def cell_step(layer: CustomLSTMLayer, x_t, h, c):
    """The vanilla LSTM step with a layer's first 4H rows: (h~_t, C_t)."""
    hid = layer.hidden
    gates = (x_t @ layer.weight_ih[: 4 * hid].T + h @ layer.weight_hh[: 4 * hid].T
             + layer.bias_ih[: 4 * hid] + layer.bias_hh[: 4 * hid])
    i, f, g, o = gates.chunk(4, 1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


# -- highway ------------------------------------------------------------------------------------

def test_highway_layer_formula():
    """T = sigma(W_T [h_{t-1}, x_t] + b_T); h_t = T h~_t + (1 - T) h_{t-1}."""
    torch.manual_seed(0)
    layer = CustomLSTMLayer(X, H, DropoutRates(), highway=True).double()
    x = torch.randn(B, T, X, dtype=torch.float64)
    h, c = torch.randn(B, H, dtype=torch.float64), torch.randn(B, H, dtype=torch.float64)
    out, (h_T, c_T) = layer(x, (h, c))
    for t in range(T):
        h_new, c = cell_step(layer, x[:, t], h, c)
        gate = torch.sigmoid(h @ layer.weight_hh[4 * H :].T + x[:, t] @ layer.weight_ih[4 * H :].T
                             + layer.bias_ih[4 * H :] + layer.bias_hh[4 * H :])
        h = gate * h_new + (1 - gate) * h
        assert_close(out[:, t], h, 1e-12)
    assert_close(c_T, c, 1e-12)
    # initialised to favour carrying: T = sigma(-2) where the weights contribute nothing
    assert torch.all(layer.bias_ih[4 * H :] + layer.bias_hh[4 * H :] == -2.0)


def test_highway_stack_with_transform_gate_open_equals_plain_stack():
    torch.manual_seed(1)
    s = make_stack(3, "highway")
    assert all(isinstance(layer, CustomLSTMLayer) and layer.highway for layer in s.layers)
    with torch.no_grad():
        for layer in s.layers:
            layer.bias_ih[4 * H :] = 1e4  # T = 1: h_t = h~_t
    ref = nn.LSTM(X, H, num_layers=3, batch_first=True)
    with torch.no_grad():
        for k, layer in enumerate(s.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{k}").copy_(getattr(layer, name)[: 4 * H])
    x = torch.randn(B, T, X)
    out, finals = s(x)
    r_out, (r_h, r_c) = ref(x)
    assert_close(out, r_out)
    for k, (h, c) in enumerate(finals):
        assert_close(h, r_h[k])
        assert_close(c, r_c[k])
    # and a plain custom stack built from CustomLSTMLayers with the same weights
    layer_in = x
    for layer in s.layers:
        plain = CustomLSTMLayer(layer.input_size, H, DropoutRates())
        with torch.no_grad():
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(plain, name).copy_(getattr(layer, name)[: 4 * H])
        layer_in, _ = plain(layer_in)
    assert_close(out, layer_in)


def test_highway_with_transform_gate_shut_carries_the_state():
    torch.manual_seed(2)
    s = make_stack(2, "highway")
    with torch.no_grad():
        for layer in s.layers:
            layer.bias_ih[4 * H :] = -1e4  # T = 0: h_t = h_{t-1}
    state = [(torch.randn(B, H), torch.randn(B, H)) for _ in range(2)]
    out, finals = s(torch.randn(B, T, X), states=state)
    assert torch.equal(out, state[1][0][:, None].expand(B, T, H))
    assert torch.equal(finals[0][0], state[0][0])


# -- residual -----------------------------------------------------------------------------------

def test_residual_stack_adds_each_layers_input():
    torch.manual_seed(3)
    s = make_stack(3, "residual")
    assert all(isinstance(layer, FusedLSTMLayer) for layer in s.layers)
    x = torch.randn(B, T, X)
    out, finals = s(x)
    o1 = lstm_of(s.layers[0])(x)[0] + s.projections[0](x)  # layer 1: X != H, projected
    o2 = lstm_of(s.layers[1])(o1)[0] + o1
    o3 = lstm_of(s.layers[2])(o2)[0] + o2
    assert_close(out, o3)
    # the plain stack with the same LSTM weights differs by exactly the added inputs
    plain = make_stack(3, "none")
    plain.load_state_dict({k: v for k, v in s.state_dict().items()
                           if not k.startswith("projections")})
    p1 = plain.layers[0](x)[0]
    assert_close(p1 + s.projections[0](x), o1)
    assert (out - plain(x)[0]).abs().max() > 1e-2
    # the final states are the LSTMs' own (the residual is on the outputs)
    assert_close(finals[1][0], lstm_of(s.layers[1])(o1)[1][0][0])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("input_size", [X, H], ids=["embed!=hidden", "embed==hidden"])
def test_residual_projection_only_where_sizes_differ(bidirectional, input_size):
    """Every layer adds its input; only a first layer whose input width differs from the
    layer width D (H, or 2H bidirectional) gets a linear projection P (no bias)."""
    torch.manual_seed(4)
    s = make_stack(3, "residual", bidirectional, input_size=input_size, cell="layernorm")
    d = 2 * H if bidirectional else H
    assert s.output_size == d
    needs_projection = input_size != d
    assert isinstance(s.projections[0], nn.Linear) == needs_projection
    if needs_projection:
        assert s.projections[0].weight.shape == (d, input_size)
    assert all(isinstance(p, nn.Identity) for p in s.projections[1:])
    x = torch.randn(B, T, input_size)
    out, finals = s(x)
    assert out.shape == (B, T, d)
    assert all(h.shape == c.shape == (B, d) for h, c in finals)
    o1 = s.layers[0](x)[0] + s.projections[0](x)
    o2 = s.layers[1](o1)[0] + o1
    assert_close(out, s.layers[2](o2)[0] + o2)


def test_residual_stack_step_equals_forward():
    torch.manual_seed(5)
    s = make_stack(3, "residual")
    x = torch.randn(B, T, X)
    out, _ = s(x)
    s.begin(B, x.device)
    states = [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(3)]
    for t in range(T):
        o, states = s.step(x[:, t], states)
        assert_close(o, out[:, t])


def test_residual_step_is_h_prev_plus_lstm():
    """h_t = h_{t-1} + LSTM(h_{t-1}, x_t) in every layer (C_t the LSTM's own)."""
    torch.manual_seed(6)
    s = make_stack(2, "residual_step")
    assert all(layer.residual_step for layer in s.layers)
    x = torch.randn(B, T, X, dtype=torch.float64)
    s = s.double()
    out, finals = s(x)
    layer_in = x
    for k, layer in enumerate(s.layers):
        h = c = torch.zeros(B, H, dtype=torch.float64)
        outs = []
        for t in range(T):
            h_new, c = cell_step(layer, layer_in[:, t], h, c)
            h = h + h_new
            outs.append(h)
        layer_in = torch.stack(outs, 1)
        assert_close(finals[k][0], h, 1e-12)
        assert_close(finals[k][1], c, 1e-12)
    assert_close(out, layer_in, 1e-12)


# -- dense --------------------------------------------------------------------------------------

@pytest.mark.parametrize("bidirectional", [False, True])
def test_dense_layer_sizes_and_values(bidirectional):
    torch.manual_seed(7)
    layers = 4
    s = make_stack(layers, "dense", bidirectional)
    d = 2 * H if bidirectional else H
    for index, layer in enumerate(s.layers):  # layer l (1-based) reads X + (l - 1) * D
        assert lstm_of(layer).input_size == X + index * d
    assert s.output_size == d
    x = torch.randn(B, T, X)
    out, finals = s(x)
    assert out.shape == (B, T, d) and len(finals) == layers
    assert all(h.shape == c.shape == (B, d) for h, c in finals)
    inputs = [x]
    for layer in s.layers:
        inputs.append(lstm_of(layer)(torch.cat(inputs, 2))[0])
    assert_close(out, inputs[-1])


def test_dense_stack_step_equals_forward():
    torch.manual_seed(8)
    s = make_stack(3, "dense", cell="layernorm")
    x = torch.randn(B, T, X)
    out, _ = s(x)
    s.begin(B, x.device)
    states = [(torch.zeros(B, H), torch.zeros(B, H)) for _ in range(3)]
    for t in range(T):
        o, states = s.step(x[:, t], states)
        assert_close(o, out[:, t])


# -- gradient flow ------------------------------------------------------------------------------

def first_layer_grad(s: LSTMStack, x: torch.Tensor) -> float:
    out, _ = s(x)
    out.sum().backward()
    grads = [p.grad for p in s.layers[0].parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    return torch.cat([g.flatten() for g in grads]).norm().item()


def test_gradient_reaches_the_first_of_six_layers():
    x = torch.randn(B, 10, X, generator=torch.Generator().manual_seed(0))
    norms = {}
    for skip in ("none", "residual", "dense", "highway"):
        torch.manual_seed(9)
        s = make_stack(6, skip)
        if skip == "residual":
            torch.manual_seed(9)
            plain = make_stack(6, "none")
            # the same LSTM init as the plain stack (the projection keeps its own)
            s.load_state_dict(plain.state_dict(), strict=False)
        norms[skip] = first_layer_grad(s, x)
        assert norms[skip] > 0
    # skips shorten the path from the loss to layer 1 (by orders of magnitude at this init)
    assert norms["residual"] > 10 * norms["none"]
    assert norms["dense"] > 10 * norms["none"]


# -- hierarchical context -----------------------------------------------------------------------

def seq2seq(combine: str, bidirectional: bool = False) -> Seq2Seq:
    torch.manual_seed(10)
    cfg = ModelConfig(embed=4, hidden=H, layers=3, bidirectional=bidirectional,
                      context="hierarchical", combine=combine)
    return Seq2Seq(cfg, src_vocab=11, tgt_vocab=11).eval()


SRC = torch.randint(3, 11, (B, T), generator=torch.Generator().manual_seed(1))
SRC_LEN = torch.tensor([6, 2, 4])


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("combine", ["concat", "sum", "mean", "project"])
def test_hierarchical_context(combine, bidirectional):
    model = seq2seq(combine, bidirectional)
    enc = model.encoders[0]
    d = 2 * H if bidirectional else H
    memory = model.encode_batch(SRC, SRC_LEN)
    _, finals = enc.stack(model.src_embed(SRC), SRC_LEN)
    tops = [h for h, _ in finals]
    assert len(tops) == 3
    if combine == "concat":
        expected = torch.cat(tops, 1)
        assert enc.context_size == 3 * d
    elif combine == "sum":
        expected = tops[0] + tops[1] + tops[2]
    elif combine == "mean":
        expected = (tops[0] + tops[1] + tops[2]) / 3
    else:
        assert isinstance(enc.project, nn.Linear)
        assert (enc.project.in_features, enc.project.out_features) == (3 * d, d)
        expected = enc.project(torch.cat(tops, 1))
    assert memory.context.shape == (B, 3 * d if combine == "concat" else d)
    assert_close(memory.context, expected)
    if combine != "project":
        assert enc.project is None
    # the decoder reads [y_{t-1}; c]: its first layer's input is embed + context size
    assert model.decoder.layers[0].input_size == 4 + memory.context.shape[1]
    tgt = torch.randint(3, 11, (B, 5))
    from lstm_harness.tasks.base import Seq2SeqBatch
    fields = Seq2SeqBatch.__dataclass_fields__
    kwargs = {"src": SRC, "src_len": SRC_LEN, "tgt": tgt}
    if "tgt_len" in fields:
        kwargs["tgt_len"] = torch.full((B,), 5)
    if "ids" in fields:
        kwargs["ids"] = torch.arange(B)
    logits = model(Seq2SeqBatch(**kwargs))
    assert logits.shape == (B, 5, 11)


def test_last_context_is_the_top_layer():
    torch.manual_seed(11)
    model = Seq2Seq(ModelConfig(embed=4, hidden=H, layers=3), src_vocab=11, tgt_vocab=11)
    memory = model.encode_batch(SRC, SRC_LEN)
    _, finals = model.encoders[0].stack(model.src_embed(SRC), SRC_LEN)
    assert_close(memory.context, finals[-1][0])


# -- multi-modal fusion -------------------------------------------------------------------------

def forecast_batch(seed: int, cov_scale: float = 1.0) -> ForecastBatch:
    gen = torch.Generator().manual_seed(seed)
    history = torch.randn(B, 8, 3, generator=gen)
    target = torch.randn(B, 4, 1, generator=gen)
    covariate = cov_scale * torch.randn(B, 5, 2, generator=gen)
    return ForecastBatch(history, target, [covariate], torch.arange(B))


@pytest.mark.parametrize("fuse", ["concat", "sum", "attention"])
def test_forecaster_fuses_two_streams(fuse):
    torch.manual_seed(12)
    cfg = ModelConfig(embed=4, hidden=H, layers=2, fuse=fuse)
    model = Forecaster(cfg, history_features=3, targets=1, covariate_features=[2]).eval()
    assert len(model.encoders) == 2
    fusion = model.fusion
    assert isinstance(fusion, ModalityFusion)
    assert fusion.output_size == (2 * H if fuse == "concat" else H)
    batch = forecast_batch(0)
    pred = model(batch)
    assert pred.shape == (B, 4, 1)
    assert model.free_running(batch, 3).shape == (B, 3, 1)
    memory = model.encode_batch(batch)
    assert memory.context.shape == (B, fusion.output_size)
    # the covariate stream influences the prediction; the history keys are the first stream's
    other = forecast_batch(0)
    other.covariates[0] = forecast_batch(1).covariates[0]
    other_memory = model.encode_batch(other)
    assert (other_memory.context - memory.context).abs().max() > 1e-3
    assert (model(other) - pred).abs().max() > 1e-6  # small at init, exactly 0 if ignored
    assert_close(other_memory.keys, memory.keys, 0.0)
    contexts = [enc(proj(x), None)[2] for enc, proj, x in
                zip(model.encoders, model.inputs, [batch.history, *batch.covariates],
                    strict=True)]
    if fuse == "concat":
        assert_close(memory.context, torch.cat(contexts, 1))
    elif fuse == "sum":
        assert_close(memory.context, fusion.proj[0](contexts[0]) + fusion.proj[1](contexts[1]))
    else:
        memory = model.encode_batch(batch)  # last_weights are those of the latest call
        weights = fusion.last_weights
        assert weights.shape == (B, 2)
        assert_close(weights.sum(1), torch.ones(B))
        assert (weights > 0).all()
        projected = [p(c) for p, c in zip(fusion.proj, contexts, strict=True)]
        scores = torch.cat([fusion.score(p) for p in projected], 1)
        assert_close(weights, torch.softmax(scores, 1))
        assert_close(memory.context, weights[:, :1] * projected[0] + weights[:, 1:] * projected[1])
    loss = model.loss(batch)
    loss.backward()
    cov_grad = model.inputs[1].weight.grad
    assert cov_grad is not None and cov_grad.abs().sum() > 0
