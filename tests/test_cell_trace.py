"""The layers' gate traces through the reference cell (``layer.trace``), the step observers
(``layer.observe_steps``), and the gate monitor recording through them without a copy of the
cell equations (issue #16, item 4)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.diagnostics import gates as gates_module
from lstm_harness.diagnostics.gates import gate_statistics
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.factory import build_model
from lstm_harness.models.layers import (
    BidirectionalLayer,
    CustomLSTMLayer,
    FusedLSTMLayer,
    reverse_padded,
)
from lstm_harness.tasks.copy import CopyParams, CopyTask

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, X, H = 2, 4, 3, 2
GATE_NAMES = ("input", "forget", "cell", "output")
LENGTHS = torch.tensor([4, 2])


def inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, X, generator=gen)
    state = (0.5 * torch.randn(B, H, generator=gen), torch.randn(B, H, generator=gen))
    return x, state


def by_hand(x, state, w_ih, w_hh, bias, norm=None):
    """Gates, C_t and h_t of a plain (``norm`` None) or LayerNorm LSTM, one step at a time."""
    h, c = state
    gates = {g: [] for g in GATE_NAMES}
    cells, hidden = [], []
    for t in range(x.shape[1]):
        rec = h @ w_hh.T
        if norm is not None:
            rec = torch.cat([norm["gain"][k] * F.layer_norm(rec[:, k * H:(k + 1) * H], (H,))
                             + norm["bias"][k] for k in range(4)], 1)
        z = x[:, t] @ w_ih.T + bias + rec
        i, f, g, o = (torch.sigmoid(z[:, :H]), torch.sigmoid(z[:, H:2 * H]),
                      torch.tanh(z[:, 2 * H:3 * H]), torch.sigmoid(z[:, 3 * H:]))
        c = f * c + i * g
        c_out = c if norm is None else F.layer_norm(c, (H,), norm["c_gain"], norm["c_bias"])
        h = o * torch.tanh(c_out)
        for name, value in zip(GATE_NAMES, (i, f, g, o), strict=True):
            gates[name].append(value)
        cells.append(c)
        hidden.append(h)
    return ({k: torch.stack(v, 1) for k, v in gates.items()}, torch.stack(cells, 1),
            torch.stack(hidden, 1))


def check(trace, gates, cells, hidden, tol: float = 1e-6) -> None:
    for name in GATE_NAMES:
        torch.testing.assert_close(trace.gates[name], gates[name], atol=tol, rtol=0)
    torch.testing.assert_close(trace.cells, cells, atol=tol, rtol=0)
    torch.testing.assert_close(trace.hidden, hidden, atol=tol, rtol=0)


def test_fused_trace_equals_a_hand_computation():
    torch.manual_seed(0)
    layer = FusedLSTMLayer(X, H, False, DropoutRates())
    x, state = inputs()
    (trace,) = layer.trace(x, state)
    with torch.no_grad():
        expected = by_hand(x, state, layer.weight_ih, layer.weight_hh,
                           layer.bias_ih + layer.bias_hh)
    check(trace, *expected)
    assert trace.valid.all() and set(trace.gates) == set(GATE_NAMES)
    assert not trace.hidden.requires_grad


def test_layernorm_custom_trace_equals_a_hand_computation():
    torch.manual_seed(1)
    layer = CustomLSTMLayer(X, H, DropoutRates(recurrent=0.5, weight_drop=0.5),
                            layernorm=True)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.startswith("ln_"):
                p.add_(0.5 * torch.randn(p.shape, generator=gen))
    layer.train()  # the trace runs in eval mode (no dropout, no weight-drop): mode restored
    x, state = inputs(1)
    (trace,) = layer.trace(x, state)
    assert layer.training
    norm = {"gain": layer.ln_gates_gain, "bias": layer.ln_gates_bias,
            "c_gain": layer.ln_cell_gain, "c_bias": layer.ln_cell_bias}
    with torch.no_grad():
        expected = by_hand(x, state, layer.weight_ih, layer.weight_hh,
                           layer.bias_ih + layer.bias_hh, norm)
    check(trace, *expected)


@pytest.mark.parametrize("kind", ["fused", "custom"])
def test_trace_with_outputs_reads_each_previous_h_from_them(kind):
    """Given the outputs of a run, step t reads h_{t-1} from them (C carried), so each step
    is checked on its own: here against a hand computation from other outputs."""
    torch.manual_seed(6)
    layer = (FusedLSTMLayer(X, H, False, DropoutRates()) if kind == "fused"
             else CustomLSTMLayer(X, H, DropoutRates()))
    x, (h0, c0) = inputs(6)
    given = torch.randn(B, T, H, generator=torch.Generator().manual_seed(8))
    (trace,) = layer.trace(x, (h0, c0), None, given)
    with torch.no_grad():
        w_ih, w_hh, bias = layer.weight_ih, layer.weight_hh, layer.bias_ih + layer.bias_hh
        c = c0
        for t in range(T):
            h_prev = h0 if t == 0 else given[:, t - 1]
            gates, cells, hidden = by_hand(x[:, t:t + 1], (h_prev, c), w_ih, w_hh, bias)
            for name in GATE_NAMES:
                torch.testing.assert_close(trace.gates[name][:, t], gates[name][:, 0])
            torch.testing.assert_close(trace.hidden[:, t], hidden[:, 0])
            c = cells[:, 0]
            torch.testing.assert_close(trace.cells[:, t], c)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "padded"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_fused_trace_hidden_equals_nn_lstm_with_copied_weights(bidirectional, lengths):
    torch.manual_seed(3)
    layer = FusedLSTMLayer(X, H, bidirectional, DropoutRates())
    lstm = nn.LSTM(X, H, batch_first=True, bidirectional=bidirectional)
    # weight_ih -> weight_ih_l0, weight_ih_reverse -> weight_ih_l0_reverse, ...
    lstm.load_state_dict({name.replace("_reverse", "") + "_l0"
                          + ("_reverse" if "_reverse" in name else ""): value
                          for name, value in layer.state_dict().items()})
    x, _ = inputs(3)
    traces = layer.trace(x, None, lengths)
    with torch.no_grad():
        if lengths is None:
            out, _ = lstm(x)
        else:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True,
                                                       enforce_sorted=False)
            out, _ = nn.utils.rnn.pad_packed_sequence(lstm(packed)[0], batch_first=True,
                                                      total_length=T)
    assert len(traces) == (2 if bidirectional else 1)
    for d, trace in enumerate(traces):
        valid = trace.valid
        torch.testing.assert_close(trace.hidden[valid], out[..., d * H:(d + 1) * H][valid],
                                   atol=1e-6, rtol=0)


def test_bidirectional_custom_trace_reads_the_reversed_sequence():
    torch.manual_seed(4)
    layer = BidirectionalLayer(CustomLSTMLayer(X, H, DropoutRates()),
                               CustomLSTMLayer(X, H, DropoutRates()))
    x, _ = inputs(4)
    fwd, bwd = layer.trace(x, None, LENGTHS)
    with torch.no_grad():
        out, _ = layer.eval()(x, None, LENGTHS)
        (back,) = layer.bwd.trace(reverse_padded(x, LENGTHS), None, LENGTHS)
    valid = fwd.valid
    torch.testing.assert_close(fwd.hidden[valid], out[..., :H][valid], atol=1e-6, rtol=0)
    torch.testing.assert_close(bwd.hidden[valid], out[..., H:][valid], atol=1e-6, rtol=0)
    torch.testing.assert_close(bwd.gates["forget"], reverse_padded(back.gates["forget"],
                                                                   LENGTHS))


def test_trace_leaves_the_decoding_state_alone():
    torch.manual_seed(5)
    layer = CustomLSTMLayer(X, H, DropoutRates(weight_drop=0.5), self_attention=True).train()
    layer.begin(B, torch.device("cpu"))
    x, state = inputs(5)
    w_hh_t, history = layer._w_hh_t, layer._history
    layer.step(x[:, 0], state)
    layer.trace(x, state)
    assert layer._w_hh_t is w_hh_t and layer._history is history and len(history) == 1


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_step_observers_record_decoder_steps_and_leave_nothing(cell):
    task = CopyTask(CopyParams(vocab=6, min_len=2, max_len=5, n_valid=8, n_test=8))
    batch = next(task.eval_batches("valid", 4))
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=6, hidden=8, cell=cell,
                                    attention={"type": "bahdanau"}), task).eval()
    (layer,) = model.decoder.layers
    with torch.no_grad():
        model(batch)  # what decoding itself leaves on the layer (``begin``)
    before = dict(layer.__dict__)
    seen = []
    with torch.no_grad(), layer.observe_steps(lambda *call: seen.append(call)):
        model(batch)
        assert "_step_observers" in layer.__dict__  # on the instance within the block only
    assert len(seen) == batch.tgt.shape[1]
    for (x_t, (h_prev, _), (h, c)), nxt in zip(seen, seen[1:] + [None], strict=True):
        assert x_t.shape[0] == batch.tgt.shape[0] and h.shape == h_prev.shape
        if nxt is not None:  # the next step starts from this step's state
            assert nxt[1][0] is h and nxt[1][1] is c
    assert layer.__dict__.keys() == before.keys()
    assert "step" not in layer.__dict__ and "_step_observers" not in layer.__dict__
    # the gate monitor records through the observers: the recorded steps trace back exactly
    stats = gate_statistics(model, batch)
    assert stats["gates.dec.l0.recompute_error"] < 1e-5
    assert layer.__dict__.keys() == before.keys() and not layer._forward_hooks


def test_nested_observers_restore_each_other():
    layer = FusedLSTMLayer(X, H, False, DropoutRates())
    layer.begin(B, torch.device("cpu"))
    x, state = inputs(6)
    outer, inner = [], []
    with layer.observe_steps(lambda *c: outer.append(c)):
        with layer.observe_steps(lambda *c: inner.append(c)):
            layer.step(x[:, 0], state)
        layer.step(x[:, 1], state)
    layer.step(x[:, 2], state)
    assert (len(outer), len(inner)) == (2, 1)
    assert "_step_observers" not in layer.__dict__


def test_gates_module_has_no_cell_equations():
    """The monitor traces through the layers' reference cell: no activation, LayerNorm or
    matrix product of its own, and no patched ``step``."""
    source = Path(gates_module.__file__).read_text()
    tree = ast.parse(source)
    called = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called.add(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", ""))
        if isinstance(node, ast.BinOp):
            assert not isinstance(node.op, ast.MatMult), ast.unparse(node)
    assert not called & {"sigmoid", "tanh", "layer_norm", "linear", "lerp",
                         "self_attention_context", "__setattr__", "__delattr__"}, called
    for name in ("_Cell", "_fused_cell", "_custom_cell", "_recompute"):
        assert not hasattr(gates_module, name)
    assert "torch.nn.functional" not in source
