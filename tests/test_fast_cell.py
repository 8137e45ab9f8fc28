"""The custom layer's fast time loop (``SequenceLoop``, a hand-written backward) against autograd:
gradcheck in float64 of the Function itself with every option, and equality of values and
gradients with the per-step autograd loop (``CustomLSTMLayer.fast = False``) on the same masks."""

from __future__ import annotations

import itertools
import zlib

import pytest
import torch
from torch.autograd import gradcheck

from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.layers import CustomLSTMLayer, SequenceLoop

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
B, T, X, H = 3, 5, 4, 3
LENGTHS = torch.tensor([5, 2, 4])



# -- gradcheck of the Function ------------------------------------------------------------------

CELLS = [
    {},
    {"layernorm": True},
    {"highway": True},
    {"residual_step": True},
    {"layernorm": True, "highway": True},
]
MASKS = ["none", "variational", "per_step", "keep", "keep_broadcast"]


def loop_inputs(cell: dict, masks: str, gen: torch.Generator):
    gb, gt, gh = 2, 3, 3
    blocks = 5 if cell.get("highway") else 4

    def rand(*shape, scale=1.0):
        return (scale * torch.randn(*shape, generator=gen, dtype=F64)).requires_grad_()

    inputs = [rand(gt, gb, blocks * gh), rand(gb, gh, scale=0.5), rand(gb, gh, scale=0.5),
              rand(blocks * gh, gh, scale=0.7)]
    if cell.get("layernorm"):
        # gains away from 1 and biases away from 0; with H = 2 units layer norm is +-1 and its
        # derivative 1 / |a - b| blows up for close pairs, so H = 3
        inputs += [(1 + 0.3 * torch.randn(4, gh, generator=gen, dtype=F64)).requires_grad_(),
                   rand(4, gh, scale=0.3),
                   (1 + 0.3 * torch.randn(gh, generator=gen, dtype=F64)).requires_grad_(),
                   rand(gh, scale=0.3)]
    else:
        inputs += [None] * 4
    rec = keep_h = keep_c = None
    if masks == "variational":
        rec = 2 * torch.randint(0, 2, (gb, gh), generator=gen).to(F64)
    elif masks == "per_step":
        rec = 2 * torch.randint(0, 2, (gt, gb, gh), generator=gen).to(F64)
    elif masks == "keep":  # zoneout masks d, and 1 on padded steps
        keep_h = torch.randint(0, 2, (gt, gb, gh), generator=gen).to(F64)
        keep_c = torch.randint(0, 2, (gt, gb, gh), generator=gen).to(F64)
    elif masks == "keep_broadcast":  # evaluation zoneout p with lengths: [T, B, 1]
        keep_h = torch.tensor([[[0.3], [0.3]], [[0.3], [1.0]], [[1.0], [1.0]]], dtype=F64)
        keep_c = torch.full((gt, gb, 1), 0.6, dtype=F64)
    return inputs + [rec, keep_h, keep_c, bool(cell.get("highway")),
                     bool(cell.get("residual_step")), 1e-5]


@pytest.mark.parametrize("cell", CELLS, ids=lambda k: "+".join(k) or "vanilla")
@pytest.mark.parametrize("masks", MASKS)
def test_sequence_loop_gradcheck(cell, masks):
    # a fixed seed per case: hash() of a str changes between processes
    gen = torch.Generator().manual_seed(zlib.crc32(f"{sorted(cell)}/{masks}".encode()) % 1000)
    inputs = loop_inputs(cell, masks, gen)
    assert gradcheck(SequenceLoop.apply, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


def test_sequence_loop_outputs_refuse_in_place_changes():
    """The outputs are a view of the buffer that the backward reads: changing them in place
    would corrupt the gradients silently, so autograd must refuse it."""
    inputs = loop_inputs({}, "none", torch.Generator().manual_seed(0))
    out, h, c = SequenceLoop.apply(*inputs)
    with pytest.raises(RuntimeError, match="inplace"):
        out.mul_(2)


# -- the fast loop equals the autograd loop on the same masks ----------------------------------

RATES = {
    "none": DropoutRates(),
    "recurrent": DropoutRates(recurrent=0.3),
    "recurrent_variational": DropoutRates(recurrent=0.3, variational=True),
    "zoneout": DropoutRates(zoneout=0.3, zoneout_c=0.2),
    "weight_drop_zoneout": DropoutRates(weight_drop=0.3, zoneout=0.2),
    "all": DropoutRates(input=0.1, recurrent=0.2, output=0.1, zoneout=0.2, zoneout_c=0.3,
                        weight_drop=0.2),
}


def run(layer: CustomLSTMLayer, fast: bool, x, state, lengths, seed: int):
    """Values and gradients of every parameter, x and the initial state (same seed: same masks)."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    torch.manual_seed(seed)
    layer.fast = fast
    out, (h, c) = layer(x, state, lengths)
    del layer.fast  # back to the class default
    gen = torch.Generator().manual_seed(1)
    loss = sum((v * torch.randn(v.shape, generator=gen, dtype=F64)).sum() for v in (out, h, c))
    grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    return [out, h, c, *grads]


@pytest.mark.parametrize("cell", CELLS, ids=lambda k: "+".join(k) or "vanilla")
@pytest.mark.parametrize("rates", list(RATES))
@pytest.mark.parametrize("loop", ["auto", "python"])
def test_fast_loop_equals_autograd_loop(cell, rates, loop, monkeypatch):
    """Both time loops (the compiled one where it builds, and the PyTorch fallback)."""
    monkeypatch.setenv("LSTM_HARNESS_LOOP", loop)
    torch.manual_seed(3)
    layer = CustomLSTMLayer(X, H, RATES[rates], **cell).to(F64)
    if cell.get("layernorm"):
        with torch.no_grad():
            for p in (layer.ln_gates_gain, layer.ln_cell_gain):
                p.uniform_(0.5, 1.5)
            for p in (layer.ln_gates_bias, layer.ln_cell_bias):
                p.uniform_(-0.5, 0.5)
    x = torch.randn(B, T, X, dtype=F64)
    state = (torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64))
    for training, lengths in itertools.product([True, False], [None, LENGTHS]):
        layer.train(training)
        fast = run(layer, True, x, state, lengths, seed=11)
        slow = run(layer, False, x, state, lengths, seed=11)
        for a, b in zip(fast, slow, strict=True):
            scale = max(1.0, b.abs().max().item())
            assert (a - b).abs().max().item() <= 1e-12 * scale, (training, lengths)


def test_self_attention_keeps_the_autograd_loop(monkeypatch):
    """Self-attention reads every earlier state: SequenceLoop does not apply, so without the
    compiled loop (tests/test_compiled_loop.py) the layer runs the autograd loop (same result)."""
    monkeypatch.setenv("LSTM_HARNESS_LOOP", "python")
    torch.manual_seed(4)
    layer = CustomLSTMLayer(X, H, DropoutRates(), self_attention=True).to(F64)
    x = torch.randn(B, T, X, dtype=F64)
    state = (torch.randn(B, H, dtype=F64), torch.randn(B, H, dtype=F64))
    fast, slow = run(layer, True, x, state, None, 0), run(layer, False, x, state, None, 0)
    for a, b in zip(fast, slow, strict=True):
        assert torch.equal(a, b)
