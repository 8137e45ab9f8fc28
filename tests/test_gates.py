"""Gate statistics (SPEC "Gate Activation Monitoring", "Cell State Analysis"): the recomputed
gates against a hand computation and nn.LSTMCell, recomputed hidden states against every
cell's real outputs, healthy-range flags, padding, memory utilisation, and the keys of whole
models (attention, forecaster, bidirectional and multi-stream encoders)."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.diagnostics.gates import (
    HealthyRanges,
    cell_utilisation,
    gate_health,
    gate_statistics,
    layer_traces,
    model_traces,
    unhealthy,
)
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.factory import build_model
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer
from lstm_harness.models.seq2seq import Forecaster
from lstm_harness.models.stack import LSTMStack
from lstm_harness.tasks.base import PAD, ForecastBatch
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.tasks.timeseries import TimeSeriesParams, TimeSeriesTask

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, X, H = 3, 6, 4, 5
LENGTHS = torch.tensor([4, 2, 6])
TOL = 1e-5
STATS = ("mean", "var", "saturated")


@pytest.fixture(scope="module")
def copy_task() -> CopyTask:
    return CopyTask(CopyParams(vocab=6, min_len=2, max_len=6, n_valid=16, n_test=16))


@pytest.fixture(scope="module")
def copy_batch(copy_task):
    batch = next(copy_task.eval_batches("valid", 8))
    assert (batch.src_len < batch.src.shape[1]).any()  # some padding to exclude
    return batch


def seq2seq(task, seed: int = 0, **cfg):
    torch.manual_seed(seed)
    return build_model(ModelConfig(embed=8, hidden=12, **cfg), task)


def assert_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    diff = (a - b).abs().max().item()
    assert diff <= tol, f"max abs diff {diff} > {tol}"


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, X, generator=gen)
    state = (torch.randn(B, H, generator=gen) * 0.5, torch.randn(B, H, generator=gen))
    return x, state


# -- the recomputation against references -------------------------------------------------------

def test_fused_gates_equal_hand_computation_and_lstmcell_loop():
    torch.manual_seed(0)
    layer = FusedLSTMLayer(X, H, False, DropoutRates())
    x, (h0, c0) = inputs()
    (trace,), out = layer_traces(layer, x, (h0, c0))
    # by hand, from the layer's weights
    h, c = h0, c0
    hand = {g: [] for g in ("input", "forget", "cell", "output")}
    for t in range(T):
        z = (x[:, t] @ layer.weight_ih.T + layer.bias_ih + h @ layer.weight_hh.T
             + layer.bias_hh).detach()
        i, f, g, o = z.chunk(4, 1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        for name, value in zip(hand, (i, f, g, o), strict=True):
            hand[name].append(value)
        c = f * c + i * g
        h = o * torch.tanh(c)
    for name, values in hand.items():
        assert_close(trace.gates[name], torch.stack(values, 1))
    # an nn.LSTMCell loop with copied weights: its gates are those whose C and h it returns
    cell = nn.LSTMCell(X, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(layer, name))
        h, c = h0, c0
        for t in range(T):
            z = cell.weight_ih @ x[:, t].T
            z = (z.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh)
            i, f, g, o = z.chunk(4, 1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            h_new, c_new = cell(x[:, t], (h, c))
            assert_close(c_new, f * c + i * g)
            assert_close(h_new, o * torch.tanh(c_new))
            for name, value in zip(hand, (i, f, g, o), strict=True):
                assert_close(trace.gates[name][:, t], value)
            assert_close(trace.cells[:, t], c_new)
            assert_close(trace.hidden[:, t], h_new)
            h, c = h_new, c_new
    assert_close(trace.actual, out)


CUSTOM = {
    "plain": {},
    "layernorm": {"layernorm": True},
    "highway": {"highway": True},
    "residual_step": {"residual_step": True},
    "self_attention": {"self_attention": True},
    "layernorm_highway": {"layernorm": True, "highway": True},
}
RATES = {
    "none": DropoutRates(),
    "zoneout": DropoutRates(zoneout=0.3, zoneout_c=0.2),  # its expectation at evaluation
    "recurrent": DropoutRates(recurrent=0.4, variational=True, weight_drop=0.3),  # off
}


def randomise_layernorm(layer: nn.Module) -> None:
    """LayerNorm gains and biases away from their (1, 0) start so that they matter."""
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("ln_"):
                p.copy_(p + 0.3 * torch.randn(p.shape, generator=gen))


def check_reproduces(traces, out, final_c, lengths, widths) -> None:
    """Recomputed h_t == the layer's outputs (valid steps) and C at each sequence's last step
    == the layer's final C, per direction (columns ``widths`` of out / final_c)."""
    valid = torch.ones(B, T, dtype=torch.bool) if lengths is None else \
        torch.arange(T)[None, :] < lengths[:, None]
    last = (torch.full((B,), T) if lengths is None else lengths) - 1
    for trace, (lo, hi) in zip(traces, widths, strict=True):
        assert torch.equal(trace.valid, valid)
        assert_close(trace.hidden[valid], out[..., lo:hi][valid])
        assert_close(trace.actual[valid], out[..., lo:hi][valid])
        if lo == 0:  # forward: the state after the last valid step
            assert_close(trace.cells[torch.arange(B), last], final_c[:, lo:hi])
        else:  # backward: the state after reading the first step
            assert_close(trace.cells[:, 0], final_c[:, lo:hi])


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_fused_recomputation_reproduces_outputs(bidirectional, lengths):
    torch.manual_seed(1)
    layer = FusedLSTMLayer(X, H, bidirectional, DropoutRates())
    x, _ = inputs(1)
    gen = torch.Generator().manual_seed(3)
    dirs = 2 if bidirectional else 1
    state = tuple(torch.randn(B, dirs * H, generator=gen) for _ in range(2))
    traces, out = layer_traces(layer, x, state, lengths)
    _, (_, c_final) = layer(x, state, lengths)
    assert len(traces) == dirs
    check_reproduces(traces, out, c_final.detach(), lengths, [(0, H), (H, 2 * H)][:dirs])


@pytest.mark.parametrize("rates", list(RATES), ids=list(RATES))
@pytest.mark.parametrize("variant", list(CUSTOM), ids=list(CUSTOM))
def test_custom_recomputation_reproduces_outputs(variant, rates):
    torch.manual_seed(2)
    layer = CustomLSTMLayer(X, H, RATES[rates], **CUSTOM[variant])
    randomise_layernorm(layer)
    layer.train()  # layer_traces runs it in eval mode and restores the mode
    x, state = inputs(2)
    traces, out = layer_traces(layer, x, state, LENGTHS)
    assert layer.training
    layer.eval()
    with torch.no_grad():
        _, (_, c_final) = layer(x, state, LENGTHS)
    check_reproduces(traces, out, c_final, LENGTHS, [(0, H)])
    assert ("transform" in traces[0].gates) == CUSTOM[variant].get("highway", False)


@pytest.mark.parametrize("layernorm", [False, True], ids=["lstm", "layernorm"])
def test_custom_bidirectional_recomputation_reproduces_outputs(layernorm):
    torch.manual_seed(3)
    rates = DropoutRates(zoneout=0.2)
    layer = BidirectionalLayer(CustomLSTMLayer(X, H, rates, layernorm=layernorm),
                               CustomLSTMLayer(X, H, rates, layernorm=layernorm))
    randomise_layernorm(layer)
    x, _ = inputs(3)
    traces, out = layer_traces(layer, x, None, LENGTHS)
    with torch.no_grad():
        _, (_, c_final) = layer.eval()(x, None, LENGTHS)
    check_reproduces(traces, out, c_final, LENGTHS, [(0, H), (H, 2 * H)])


# -- healthy ranges ----------------------------------------------------------------------------

def test_forget_bias_plus_five_is_flagged_default_init_is_not(copy_task, copy_batch):
    model = seq2seq(copy_task, layers=2)
    stats = gate_statistics(model, copy_batch)
    assert not [f for f in unhealthy(stats) if " forget " in f]
    health = gate_health(stats)
    assert all(health[f"gates.{s}.l{k}.forget.healthy"] == 1.0
               for s in ("enc", "dec") for k in (0, 1))
    with torch.no_grad():
        layer = model.encoders[0].stack.layers[0]
        layer.bias_ih[12:24].fill_(5.0)  # the forget block (i, f, g, o; hidden 12)
        layer.bias_hh[12:24].zero_()
    stats = gate_statistics(model, copy_batch)
    assert stats["gates.enc.l0.forget.mean"] > 0.95
    assert stats["gates.enc.l0.forget.saturated"] > 0.9
    assert gate_health(stats)["gates.enc.l0.forget.healthy"] == 0.0
    flags = [f for f in unhealthy(stats) if " forget " in f]
    assert len(flags) == 1 and flags[0].startswith("enc l0 forget mean 0.9")
    assert "outside [0.3, 0.7]" in flags[0] and "saturated" in flags[0]
    # the other layers are untouched
    assert stats["gates.enc.l1.forget.mean"] < 0.95


def test_health_rules_and_configurable_ranges():
    stats = {"gates.enc.l0.forget.mean": 0.99, "gates.enc.l0.forget.saturated": 0.97,
             "gates.enc.l0.input.mean": 0.2, "gates.enc.l0.output.mean": 0.81,
             "gates.enc.l0.cell.mean": 0.0, "gates.dec.l1.input.mean": math.nan,
             "gates.enc.l1.fwd.forget.mean": 0.1, "gates.enc.l1.bwd.forget.mean": 0.5,
             "gates.enc.l1.forget.mean": 0.3, "cells.enc.l0.utilisation": 0.5}
    health = gate_health(stats)
    assert health == {"gates.enc.l0.forget.healthy": 0.0, "gates.enc.l0.input.healthy": 1.0,
                      "gates.enc.l0.output.healthy": 0.0, "gates.enc.l1.fwd.forget.healthy": 0.0,
                      "gates.enc.l1.bwd.forget.healthy": 1.0, "gates.enc.l1.forget.healthy": 1.0}
    assert unhealthy(stats) == [
        "enc l0 forget mean 0.99 outside [0.3, 0.7] (saturated 0.97)",
        "enc l0 output mean 0.81 outside [0.2, 0.8]",
        "enc l1 fwd forget mean 0.10 outside [0.3, 0.7]",
    ]
    wide = HealthyRanges(forget=(0.0, 1.0), output=None, cell=(-0.1, 0.1))
    assert gate_health(stats, wide)["gates.enc.l0.forget.healthy"] == 1.0
    assert "gates.enc.l0.output.healthy" not in gate_health(stats, wide)
    assert gate_health(stats, wide)["gates.enc.l0.cell.healthy"] == 1.0
    assert unhealthy(stats, wide) == []
    with pytest.raises(ValidationError):
        HealthyRanges(forget=(0.7, 0.3))
    with pytest.raises(ValidationError):
        HealthyRanges(forgets=(0.3, 0.7))


# -- padding and utilisation -------------------------------------------------------------------

@pytest.mark.parametrize("cfg", [{}, {"cell": "layernorm", "bidirectional": True},
                                 {"attention": {"type": "bahdanau"}}],
                         ids=["fused", "layernorm_bi", "bahdanau"])
def test_padding_is_excluded(copy_task, copy_batch, cfg):
    model = seq2seq(copy_task, layers=2, **cfg)
    stats = gate_statistics(model, copy_batch)
    src = copy_batch.src.clone()
    gen = torch.Generator().manual_seed(0)
    src_pad = torch.arange(src.shape[1])[None, :] >= copy_batch.src_len[:, None]
    assert src_pad.any()
    src[src_pad] = torch.randint(3, copy_task.src_vocab_size, (int(src_pad.sum()),),
                                 generator=gen)
    # (target padding is where tgt == PAD: the decoder's side is tested on a forecaster)
    changed = type(copy_batch)(src, copy_batch.src_len, copy_batch.tgt, copy_batch.tgt_len,
                               copy_batch.ids)
    other = gate_statistics(model, changed)
    assert stats.keys() == other.keys()
    for key, value in stats.items():
        if key.endswith("recompute_error"):
            continue
        assert other[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_utilisation_of_a_hand_made_cell_sequence():
    # example 0, 3 steps: unit 0 = 1, 2, 3 (mean 2, std sqrt(2/3)); unit 1 = 2, 2, 2 (mean 2,
    # std 0): ||std|| / ||mean|| = sqrt(2/3) / sqrt(8)
    # example 1, 2 counted steps then padding: unit 0 = 0, 4 (mean 2, std 2); unit 1 = -1, -1
    # (mean -1, std 0): 2 / sqrt(5)
    # example 2: a single counted step, left out
    cells = torch.tensor([[[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]],
                          [[0.0, -1.0], [4.0, -1.0], [100.0, 50.0]],
                          [[5.0, 5.0], [9.0, 9.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True, True], [True, True, False], [True, False, False]])
    expected = (math.sqrt(2 / 3) / math.sqrt(8) + 2 / math.sqrt(5)) / 2
    assert cell_utilisation(cells, mask) == pytest.approx(expected, rel=1e-12)
    assert math.isnan(cell_utilisation(cells[2:], mask[2:]))
    constant = torch.ones(1, 4, 3)
    assert cell_utilisation(constant) == 0.0


def test_cell_statistics_of_a_model_match_the_traces(copy_task, copy_batch):
    model = seq2seq(copy_task, layers=1)
    stats = gate_statistics(model, copy_batch)
    found, _ = model_traces(model, copy_batch)
    (trace,) = found[("enc", 0, None)]
    valid = torch.arange(trace.cells.shape[1])[None, :] < copy_batch.src_len[:, None]
    assert torch.equal(trace.counted, valid)
    norms = trace.cells.double().norm(dim=-1)[valid]
    assert stats["cells.enc.l0.norm"] == pytest.approx(norms.mean().item())
    assert stats["cells.enc.l0.utilisation"] == pytest.approx(
        cell_utilisation(trace.cells, valid))
    forget = trace.gates["forget"][valid].double()
    assert stats["gates.enc.l0.forget.mean"] == pytest.approx(forget.mean().item())
    assert stats["gates.enc.l0.forget.var"] == pytest.approx(forget.var(unbiased=False).item())
    g = trace.gates["cell"][valid]
    assert stats["gates.enc.l0.cell.saturated"] == pytest.approx(
        (g.abs() > 0.95).double().mean().item())
    (dec,) = found[("dec", 0, None)]
    assert torch.equal(dec.counted, copy_batch.tgt != PAD)


# -- whole models ------------------------------------------------------------------------------

def layer_keys(stack: str, k: int, gates=("input", "forget", "cell", "output")) -> set[str]:
    keys = {f"gates.{stack}.l{k}.{g}.{s}" for g in gates for s in STATS}
    return keys | {f"cells.{stack}.l{k}.utilisation", f"cells.{stack}.l{k}.norm",
                   f"gates.{stack}.l{k}.recompute_error"}


def check_model_stats(stats: dict[str, float], expected: set[str]) -> None:
    assert expected <= stats.keys(), sorted(expected - stats.keys())
    for key, value in stats.items():
        assert math.isfinite(value), key
        if key.endswith(".saturated") or key.endswith(".mean") and ".cell." not in key:
            assert 0.0 <= value <= 1.0, key
        if key.endswith("recompute_error"):
            assert value < TOL, key


@pytest.mark.parametrize("attention", [
    {"type": "bahdanau"}, {"type": "luong", "score": "general"}, {"type": "self"}, None],
    ids=["bahdanau", "luong", "self", "none"])
def test_keys_of_a_two_layer_seq2seq(copy_task, copy_batch, attention):
    model = seq2seq(copy_task, layers=2, attention=attention)
    model.train()
    stats = gate_statistics(model, copy_batch)
    assert model.training
    expected = set().union(*(layer_keys(s, k) for s in ("enc", "dec") for k in (0, 1)))
    check_model_stats(stats, expected)
    assert set(stats) == expected
    # nothing stays behind
    for layer in [*model.encoders[0].stack.layers, *model.decoder.layers]:
        assert not layer._forward_hooks and "step" not in layer.__dict__
    health = gate_health(stats)
    assert len(health) == 2 * 2 * 3


@pytest.mark.parametrize("cfg", [{}, {"skip": "highway", "dropout": {"zoneout": 0.1}},
                                 {"cell": "layernorm", "skip": "residual_step"},
                                 {"skip": "dense", "dropout": {"recurrent": 0.2}}],
                         ids=["fused", "highway_zoneout", "layernorm_residual_step",
                              "dense_recurrent"])
def test_forecaster_on_mackey_glass(cfg):
    task = TimeSeriesTask(TimeSeriesParams(series="mackey_glass", mg_length=400, history=12,
                                           horizon=6))
    batch = next(task.eval_batches("valid", 8))
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=8, hidden=12, layers=2, **cfg), task)
    assert isinstance(model, Forecaster)
    stats = gate_statistics(model, batch)
    gates = ("input", "forget", "cell", "output")
    if cfg.get("skip") == "highway":
        gates += ("transform",)
    expected = set().union(*(layer_keys(s, k, gates) for s in ("enc", "dec") for k in (0, 1)))
    check_model_stats(stats, expected)
    assert set(stats) == expected


def test_forecaster_streams_and_target_padding():
    torch.manual_seed(0)
    model = Forecaster(ModelConfig(embed=6, hidden=8, layers=1,
                                   attention={"type": "bahdanau"}), 2, 1, [3])
    gen = torch.Generator().manual_seed(0)
    history, covariate = torch.randn(4, 7, 2, generator=gen), torch.randn(4, 7, 3, generator=gen)
    target = torch.randn(4, 5, 1, generator=gen)
    lengths = torch.tensor([5, 3, 1, 4])
    batch = ForecastBatch(history, target, [covariate], torch.arange(4), lengths)
    stats = gate_statistics(model, batch)
    expected = set().union(*(layer_keys(s, 0) for s in ("enc0", "enc1", "dec")))
    check_model_stats(stats, expected)
    # targets past each window's horizon are only read at steps that do not count
    padded = torch.arange(5)[None, :] >= lengths[:, None]
    changed = target.clone()
    changed[padded] = 100.0
    other = gate_statistics(model, ForecastBatch(history, changed, [covariate],
                                                 torch.arange(4), lengths))
    for key, value in stats.items():
        if not key.endswith("recompute_error"):
            assert other[key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    # ... while every step counting would see them
    full = gate_statistics(model, ForecastBatch(history, changed, [covariate], torch.arange(4)))
    assert full["gates.dec.l0.input.mean"] != pytest.approx(stats["gates.dec.l0.input.mean"])


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_bidirectional_encoder(copy_task, copy_batch, cell):
    model = seq2seq(copy_task, layers=2, bidirectional=True, cell=cell,
                    attention={"type": "luong", "score": "general"})
    stats = gate_statistics(model, copy_batch)
    expected = set()
    for k in (0, 1):
        expected |= layer_keys("enc", k) | layer_keys("dec", k)
        for d in ("fwd", "bwd"):
            expected |= {f"gates.enc.l{k}.{d}.{g}.{s}" for g in ("input", "forget", "cell",
                                                                 "output") for s in STATS}
            expected |= {f"cells.enc.l{k}.{d}.utilisation", f"cells.enc.l{k}.{d}.norm"}
    check_model_stats(stats, expected)
    assert set(stats) == expected
    for k in (0, 1):
        for g in ("input", "forget", "cell", "output"):
            pooled = stats[f"gates.enc.l{k}.{g}.mean"]
            halves = [stats[f"gates.enc.l{k}.{d}.{g}.mean"] for d in ("fwd", "bwd")]
            assert pooled == pytest.approx(sum(halves) / 2)
        # ||[C_fwd; C_bwd]|| >= each half's
        assert stats[f"cells.enc.l{k}.norm"] >= max(
            stats[f"cells.enc.l{k}.{d}.norm"] for d in ("fwd", "bwd"))
    # a forget bias of +5 in the backward direction is flagged for that direction only
    with torch.no_grad():
        layer = model.encoders[0].stack.layers[0]
        if cell == "lstm":
            layer.bias_ih_reverse[12:24].fill_(5.0)
        else:
            layer.bwd.bias_ih[12:24].fill_(5.0)
    flags = [f for f in unhealthy(gate_statistics(model, copy_batch)) if " forget " in f]
    assert len(flags) == 1 and flags[0].startswith("enc l0 bwd forget mean 0.9"), flags


def test_a_bare_stack_with_lengths():
    torch.manual_seed(0)
    cfg = ModelConfig(embed=X, hidden=H, layers=2, skip="residual", cell="layernorm")
    stack = LSTMStack(X, cfg, DropoutRates(zoneout=0.1))
    x, _ = inputs(4)
    stats = gate_statistics(stack, (x, LENGTHS))
    check_model_stats(stats, layer_keys("stack", 0) | layer_keys("stack", 1))
    x_changed = x.clone()
    x_changed[torch.arange(T)[None, :] >= LENGTHS[:, None]] = 9.0

    def stats_of(batch) -> dict[str, float]:
        return {k: v for k, v in gate_statistics(stack, batch).items()
                if not k.endswith("recompute_error")}
    assert stats_of((x_changed, LENGTHS)) == pytest.approx(stats_of((x, LENGTHS)))
    assert stats_of(x) != pytest.approx(stats_of((x, LENGTHS)))  # no lengths: every step counts
