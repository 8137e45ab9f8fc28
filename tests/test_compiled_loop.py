"""The compiled C++ time loop (``CompiledSequenceLoop``) against the PyTorch fallback
(``SequenceLoop``), autograd and nn.LSTM.

- gradcheck in float64 of the compiled Function with every cell option and mask kind;
- compiled vs fallback on the same inputs: outputs and the gradient of every input (xw, h0,
  c0, W_hh, the LayerNorm parameters) to 1e-5 in float32 and 1e-12 in float64;
- the layer (``CustomLSTMLayer``) with every dropout/zoneout setting, training and evaluation,
  with and without padding: the compiled loop vs ``LSTM_HARNESS_LOOP=python`` on the same masks;
- self-attention (compiled only) vs the layer's per-step autograd loop, and gradcheck;
- batch rows split over threads (row blocks) vs the fallback, also through a retained graph,
  under inference_mode / no_grad, and with self-attention;
- the layer with no technique, pushed through the compiled loop, vs nn.LSTM with copied weights.

The compiled tests skip only when no C++ compiler or ninja is installed (then the fallback is
what runs, and is tested); with both installed a failed build fails the tests.
"""

from __future__ import annotations

import itertools
import shutil
import zlib

import pytest
import torch
from torch import nn
from torch.autograd import gradcheck

from lstm_harness.models import compiled_loop
from lstm_harness.models.compiled_loop import CompiledSequenceLoop
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.layers import CustomLSTMLayer, SequenceLoop

pytestmark = pytest.mark.usefixtures("one_thread")

F64, F32 = torch.float64, torch.float32
HAS_TOOLCHAIN = bool((shutil.which("c++") or shutil.which("g++")) and shutil.which("ninja"))
needs_compiled = pytest.mark.skipif(
    not HAS_TOOLCHAIN, reason="no C++ compiler or ninja: the PyTorch fallback runs")

CELLS = [
    {},
    {"layernorm": True},
    {"highway": True},
    {"residual_step": True},
    {"layernorm": True, "highway": True},
    {"highway": True, "residual_step": True},
    {"layernorm": True, "residual_step": True},
]
MASKS = ["none", "variational", "per_step", "keep", "keep_broadcast", "keep_scalar", "all"]


def cell_id(cell: dict) -> str:
    return "+".join(cell) or "vanilla"


def loop_inputs(cell: dict, masks: str, gen: torch.Generator, dtype: torch.dtype = F64,
                size: tuple[int, int, int] = (3, 2, 3)) -> list:
    """SequenceLoop's arguments: random inputs (requiring grad) and masks of the given kind."""
    steps, batch, hid = size
    blocks = 5 if cell.get("highway") else 4

    def rand(*shape, scale=1.0, shift=0.0):
        x = shift + scale * torch.randn(*shape, generator=gen, dtype=F64)
        return x.to(dtype).requires_grad_()

    inputs = [rand(steps, batch, blocks * hid), rand(batch, hid, scale=0.5),
              rand(batch, hid, scale=0.5), rand(blocks * hid, hid, scale=0.7)]
    if cell.get("layernorm"):  # gains away from 1, biases away from 0 (H = 3: see test_fast_cell)
        inputs += [rand(4, hid, scale=0.3, shift=1.0), rand(4, hid, scale=0.3),
                   rand(hid, scale=0.3, shift=1.0), rand(hid, scale=0.3)]
    else:
        inputs += [None] * 4

    def bits(*shape):
        return torch.randint(0, 2, shape, generator=gen).to(dtype)

    rec = keep_h = keep_c = None
    if masks == "variational":
        rec = 2 * bits(batch, hid)
    elif masks == "per_step":
        rec = 2 * bits(steps, batch, hid)
    elif masks == "keep":  # zoneout masks d (1 also on padded steps)
        keep_h, keep_c = bits(steps, batch, hid), bits(steps, batch, hid)
    elif masks == "keep_broadcast":  # evaluation zoneout p with padding: [T, B, 1]
        keep_h = torch.full((steps, batch, 1), 0.3, dtype=dtype)
        keep_h[-1, -1] = 1.0
        keep_c = torch.full((steps, batch, 1), 0.6, dtype=dtype)
    elif masks == "keep_scalar":  # evaluation zoneout p without padding: an expanded scalar
        keep_h = torch.full((1, 1, 1), 0.25, dtype=dtype).expand(steps, batch, hid)
    elif masks == "all":  # recurrent dropout per step and zoneout on h and c together
        rec = 2 * bits(steps, batch, hid)
        keep_h, keep_c = bits(steps, batch, hid), bits(steps, batch, hid)
    return inputs + [rec, keep_h, keep_c, bool(cell.get("highway")),
                     bool(cell.get("residual_step")), 1e-5]


def values_and_grads(loop: type[torch.autograd.Function], inputs: list) -> list[torch.Tensor]:
    """Outputs of ``loop`` and the gradient of every differentiable input, for a fixed random
    weighting of the three outputs (fresh leaves: the two loops never share a graph)."""
    leaves = [x.detach().clone().requires_grad_(x.requires_grad)
              if isinstance(x, torch.Tensor) else x for x in inputs]
    outputs = loop.apply(*leaves)
    gen = torch.Generator().manual_seed(7)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64).to(o.dtype)).sum()
               for o in outputs)
    wrt = [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad]
    return [*outputs, *torch.autograd.grad(loss, wrt)]


def assert_close(got: list[torch.Tensor], want: list[torch.Tensor], tol: float) -> None:
    assert len(got) == len(want)
    for k, (a, b) in enumerate(zip(got, want, strict=True)):
        assert a.shape == b.shape and a.dtype == b.dtype, k
        scale = max(1.0, b.abs().max().item())
        err = (a - b).abs().max().item()
        assert err <= tol * scale, f"tensor {k}: max error {err:.3g} (scale {scale:.3g})"


def seed_of(*parts: object) -> int:
    # a fixed seed per case: hash() of a str changes between processes
    return zlib.crc32("/".join(map(str, parts)).encode()) % 10_000


# -- the build ----------------------------------------------------------------------------------

def test_backend_is_named(monkeypatch):
    name = compiled_loop.backend()
    assert name.startswith(("compiled C++ loop", "PyTorch fallback ("))
    monkeypatch.setenv(compiled_loop.ENV_LOOP, "python")
    assert compiled_loop.backend() == "PyTorch fallback (LSTM_HARNESS_LOOP=python)"
    assert not compiled_loop.usable(torch.zeros(2, 1, 4))


def test_build_retries_without_openmp(monkeypatch):
    """A compiler that refuses -fopenmp: the build tries again without it (serial per-step
    passes), and says so; both failing keeps both reasons for the fallback's message."""
    tried = []

    def compile_(openmp: bool, verbose: bool):
        tried.append(openmp)
        if openmp:
            raise RuntimeError("c++: error: unsupported option '-fopenmp'")
        return "module"

    monkeypatch.setattr(compiled_loop, "OPENMP", True)
    monkeypatch.setattr(compiled_loop, "_compile", compile_)
    monkeypatch.setattr(compiled_loop, "_state", {})
    compiled_loop._build(verbose=False)
    assert tried == [True, False]
    assert compiled_loop._state == {"openmp": False, "reason": "", "module": "module"}

    def fail(openmp: bool, verbose: bool):
        raise OSError(f"no compiler ({'with' if openmp else 'without'} OpenMP)")

    monkeypatch.setattr(compiled_loop, "_compile", fail)
    monkeypatch.setattr(compiled_loop, "_state", {})
    compiled_loop._build(verbose=False)
    assert compiled_loop._state["module"] is None
    assert compiled_loop._state["reason"] == ("OSError: no compiler (with OpenMP); "
                                              "OSError: no compiler (without OpenMP)")


@needs_compiled
def test_compiler_present_means_compiled():
    """With g++ and ninja installed a build failure is a bug, not a reason to skip."""
    assert compiled_loop.available(), compiled_loop.backend()
    assert compiled_loop.backend().startswith("compiled C++ loop")
    assert compiled_loop.usable(torch.zeros(2, 1, 4))
    assert compiled_loop.usable(torch.zeros(2, 1, 4, dtype=F64))
    assert not compiled_loop.usable(torch.zeros(2, 1, 4, dtype=torch.bfloat16))
    assert not compiled_loop.usable(torch.zeros(0, 1, 4))


def test_stale_torch_baton_is_removed(tmp_path):
    """A build killed mid-way leaves torch's 'lock' file: under our OS lock it is stale."""
    folder = tmp_path / "build"
    folder.mkdir()
    (folder / "lock").write_text("")
    with compiled_loop._build_lock(folder):
        assert not (folder / "lock").exists()


def test_the_layer_runs_the_fallback_when_forced(monkeypatch):
    monkeypatch.setenv(compiled_loop.ENV_LOOP, "python")
    layer = CustomLSTMLayer(4, 3, DropoutRates(), layernorm=True)
    out, _ = layer(torch.randn(2, 5, 4))
    assert type(out.grad_fn).__name__ == "SequenceLoopBackward"


@needs_compiled
def test_the_layer_runs_the_compiled_loop():
    layer = CustomLSTMLayer(4, 3, DropoutRates(), layernorm=True)
    out, _ = layer(torch.randn(2, 5, 4))
    assert type(out.grad_fn).__name__ == "CompiledSequenceLoopBackward"
    with torch.no_grad():  # the same path without autograd
        out2, _ = layer(torch.randn(2, 5, 4))
    assert out2.shape == (2, 5, 3)


# -- gradcheck of the compiled Function ----------------------------------------------------------

@needs_compiled
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
@pytest.mark.parametrize("masks", MASKS)
def test_compiled_loop_gradcheck(cell, masks):
    inputs = loop_inputs(cell, masks, torch.Generator().manual_seed(seed_of(cell_id(cell), masks)))
    assert gradcheck(CompiledSequenceLoop.apply, inputs, eps=1e-6, atol=1e-7, rtol=1e-5)


# -- compiled == fallback on the same inputs -----------------------------------------------------

@needs_compiled
@pytest.mark.parametrize("cell", CELLS, ids=cell_id)
@pytest.mark.parametrize("masks", MASKS)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
def test_compiled_equals_fallback(cell, masks, dtype):
    """Every output and input gradient, at a size with several vector widths per row."""
    gen = torch.Generator().manual_seed(seed_of(cell_id(cell), masks, dtype))
    inputs = loop_inputs(cell, masks, gen, dtype, size=(7, 5, 19))
    tol = 1e-5 if dtype == F32 else 1e-12
    assert_close(values_and_grads(CompiledSequenceLoop, inputs),
                 values_and_grads(SequenceLoop, inputs), tol)


@needs_compiled
def test_compiled_equals_fallback_at_benchmark_width():
    """H = 64 with LayerNorm, highway and every mask, float32 (the benchmark's kernel paths)."""
    gen = torch.Generator().manual_seed(5)
    inputs = loop_inputs({"layernorm": True, "highway": True}, "all", gen, F32,
                         size=(6, 8, 64))
    assert_close(values_and_grads(CompiledSequenceLoop, inputs),
                 values_and_grads(SequenceLoop, inputs), 1e-5)


@needs_compiled
@pytest.mark.parametrize("cell", [{}, {"layernorm": True, "highway": True}], ids=cell_id)
def test_repeat_backward_and_inplace_change(cell):
    """A retained graph gives the same gradients twice (layernorm recomputes its overwritten
    buffer); changing the outputs in place is refused."""
    inputs = loop_inputs(cell, "all", torch.Generator().manual_seed(0), F64, size=(4, 3, 5))
    leaves = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
    out, h, c = CompiledSequenceLoop.apply(*inputs)
    loss = (out * out).sum() + h.sum() + c.sum()
    first = torch.autograd.grad(loss, leaves, retain_graph=True)
    second = torch.autograd.grad(loss, leaves)
    assert_close(list(second), list(first), 1e-12)
    out, h, c = CompiledSequenceLoop.apply(*inputs)
    with pytest.raises(RuntimeError, match="inplace"):
        out.mul_(2)


# -- the layer: compiled vs LSTM_HARNESS_LOOP=python, same masks --------------------------------

RATES = {
    "none": DropoutRates(),
    "recurrent": DropoutRates(recurrent=0.3),
    "recurrent_variational": DropoutRates(recurrent=0.3, variational=True),
    "zoneout_h": DropoutRates(zoneout=0.3),
    "zoneout_hc": DropoutRates(zoneout=0.3, zoneout_c=0.2),
    "all": DropoutRates(input=0.1, recurrent=0.2, output=0.1, zoneout=0.2, zoneout_c=0.3,
                        weight_drop=0.2),
}
LAYER_CELLS = [{}, {"layernorm": True}, {"highway": True}, {"residual_step": True},
               {"layernorm": True, "highway": True, "residual_step": True}]


def layer_run(layer: CustomLSTMLayer, x, state, lengths, seed: int) -> list[torch.Tensor]:
    """Values and gradients of every parameter, x and the initial state."""
    x = x.clone().requires_grad_()
    state = tuple(s.clone().requires_grad_() for s in state)
    torch.manual_seed(seed)
    out, (h, c) = layer(x, state, lengths)
    gen = torch.Generator().manual_seed(1)
    loss = sum((v * torch.randn(v.shape, generator=gen).to(v.dtype)).sum() for v in (out, h, c))
    return [out, h, c, *torch.autograd.grad(loss, [x, *state, *layer.parameters()])]


@needs_compiled
@pytest.mark.parametrize("cell", LAYER_CELLS, ids=cell_id)
@pytest.mark.parametrize("rates", list(RATES))
def test_layer_compiled_equals_fallback(cell, rates, monkeypatch):
    torch.manual_seed(seed_of(cell_id(cell), rates))
    batch, steps, inp, hid = 4, 9, 6, 16
    layer = CustomLSTMLayer(inp, hid, RATES[rates], **cell)
    if cell.get("layernorm"):
        with torch.no_grad():
            for p in (layer.ln_gates_gain, layer.ln_cell_gain):
                p.uniform_(0.5, 1.5)
            for p in (layer.ln_gates_bias, layer.ln_cell_bias):
                p.uniform_(-0.5, 0.5)
    x = torch.randn(batch, steps, inp)
    state = (torch.randn(batch, hid), torch.randn(batch, hid))
    lengths = torch.tensor([9, 3, 7, 1])
    for training, lens in itertools.product([True, False], [None, lengths]):
        layer.train(training)
        monkeypatch.setenv(compiled_loop.ENV_LOOP, "compiled")
        fast = layer_run(layer, x, state, lens, seed=11)
        monkeypatch.setenv(compiled_loop.ENV_LOOP, "python")
        slow = layer_run(layer, x, state, lens, seed=11)
        assert_close(fast, slow, 1e-5)


# -- self-attention: compiled vs the layer's per-step autograd loop ------------------------------

ATTENTION_CELLS = [{}, {"layernorm": True}, {"highway": True},
                   {"layernorm": True, "highway": True, "residual_step": True}]


# float32 to 1e-5 except with residual_step, whose growing states (|h| ~ 1e3 here) make float32
# itself only ~1e-5 relative to float64 on either path: that cell is checked in float64 only
ATTENTION_CASES = [pytest.param(cell, dtype, id=f"{cell_id(cell)}-{dtype}")
                   for cell in ATTENTION_CELLS for dtype in (F32, F64)
                   if not (dtype == F32 and cell.get("residual_step"))]


@needs_compiled
@pytest.mark.parametrize(("cell", "dtype"), ATTENTION_CASES)
@pytest.mark.parametrize("rates", ["none", "recurrent", "recurrent_variational", "zoneout_hc",
                                   "all"])
def test_self_attention_compiled_equals_autograd_loop(cell, rates, dtype):
    """Self-attention (Cheng et al. 2016) has no PyTorch SequenceLoop: its reference is the
    per-step autograd loop (``fast = False``), on the same masks."""
    torch.manual_seed(seed_of(cell_id(cell), rates, dtype))
    batch, steps, inp, hid = 4, 9, 6, 16
    layer = CustomLSTMLayer(inp, hid, RATES[rates], self_attention=True, **cell).to(dtype)
    x = torch.randn(batch, steps, inp, dtype=dtype)
    state = (torch.randn(batch, hid, dtype=dtype), torch.randn(batch, hid, dtype=dtype))
    lengths = torch.tensor([9, 3, 7, 1])
    tol = 1e-5 if dtype == F32 else 1e-12
    for training, lens in itertools.product([True, False], [None, lengths]):
        layer.train(training)
        fast = layer_run(layer, x, state, lens, seed=11)
        assert type(fast[0].grad_fn).__name__ == "CompiledSequenceLoopBackward"
        layer.fast = False
        slow = layer_run(layer, x, state, lens, seed=11)
        del layer.fast
        assert_close(fast, slow, tol)


@needs_compiled
@pytest.mark.parametrize("hid", [64, 40])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_self_attention_at_benchmark_width(dtype, hid):
    """H = 64 (the benchmark's width) and H = 40 (a width of whole vectors whose register blocks
    leave a remainder): the attention's vector kernels (scores eight history rows at a time and
    the remaining rows one by one, weighted sums and the rank-2 update in register blocks) over
    21 steps, with zoneout and recurrent dropout, padded, vs the autograd loop."""
    torch.manual_seed(3)
    batch, steps = 5, 21
    layer = CustomLSTMLayer(8, hid, RATES["all"], self_attention=True).to(dtype)
    x = torch.randn(batch, steps, 8, dtype=dtype)
    state = (torch.randn(batch, hid, dtype=dtype), torch.randn(batch, hid, dtype=dtype))
    lengths = torch.tensor([21, 4, 17, 1, 10])
    fast = layer_run(layer, x, state, lengths, seed=2)
    layer.fast = False
    slow = layer_run(layer, x, state, lengths, seed=2)
    assert_close(fast, slow, 1e-5 if dtype == F32 else 1e-12)


@needs_compiled
@pytest.mark.parametrize("cell", [{}, {"layernorm": True, "highway": True}], ids=cell_id)
@pytest.mark.parametrize("masks", ["none", "per_step", "keep", "all"])
def test_self_attention_gradcheck(cell, masks):
    gen = torch.Generator().manual_seed(seed_of("attention", cell_id(cell), masks))
    inputs = loop_inputs(cell, masks, gen, size=(4, 2, 3))
    hid = inputs[1].shape[1]
    blocks = 5 if cell.get("highway") else 4
    inputs[3] = (0.5 * torch.randn(blocks * hid, 2 * hid, generator=gen,
                                   dtype=F64)).requires_grad_()
    assert gradcheck(CompiledSequenceLoop.apply, [*inputs, True], eps=1e-6, atol=1e-7,
                     rtol=1e-5)


# -- batch rows split over threads ---------------------------------------------------------------

@pytest.fixture
def three_threads():
    """Three intra-op threads (after ``one_thread``): the row-block split is about correctness,
    so it may ask for more threads than the machine has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    yield
    torch.set_num_threads(threads)


@needs_compiled
def test_row_blocks(three_threads):
    """Each thread runs the whole loop for a block of rows when every thread gets at least 8
    rows; fewer rows: one block (the loop splits each step instead). Only with OpenMP (else
    ATen runs serially)."""
    module = compiled_loop._load()
    if not compiled_loop.threaded():
        assert [module.row_blocks(b) for b in (8, 24, 64)] == [1, 1, 1]
        return
    assert [module.row_blocks(b) for b in (1, 8, 16, 23, 24, 29, 64)] == [1, 1, 1, 1, 3, 3, 3]
    torch.set_num_threads(2)
    assert [module.row_blocks(b) for b in (15, 16)] == [1, 2]
    torch.set_num_threads(1)
    assert module.row_blocks(64) == 1


ROW_BLOCK_CELLS = [{}, {"layernorm": True}, {"highway": True}, {"residual_step": True},
                   {"layernorm": True, "highway": True, "residual_step": True}]


@needs_compiled
@pytest.mark.parametrize("cell", ROW_BLOCK_CELLS, ids=cell_id)
@pytest.mark.parametrize("masks", ["none", "variational", "per_step", "keep_broadcast", "all"])
@pytest.mark.parametrize("batch", [24, 29], ids=["3x8", "10+10+9"])
def test_row_blocks_equal_fallback(cell, masks, batch, three_threads):
    """Rows split over three threads (three blocks of 8; of 10, 10 and 9) vs the PyTorch
    fallback, values and every gradient, float64."""
    gen = torch.Generator().manual_seed(seed_of("rows", cell_id(cell), masks, batch))
    inputs = loop_inputs(cell, masks, gen, size=(7, batch, 16))
    assert_close(values_and_grads(CompiledSequenceLoop, inputs),
                 values_and_grads(SequenceLoop, inputs), 1e-12)


@needs_compiled
@pytest.mark.parametrize("cell", [{}, {"layernorm": True, "highway": True}], ids=cell_id)
def test_row_blocks_equal_fallback_float32(cell, three_threads):
    gen = torch.Generator().manual_seed(seed_of("rows32", cell_id(cell)))
    inputs = loop_inputs(cell, "all", gen, dtype=F32, size=(9, 26, 24))
    assert_close(values_and_grads(CompiledSequenceLoop, inputs),
                 values_and_grads(SequenceLoop, inputs), 1e-5)


@needs_compiled
def test_row_blocks_repeat_backward(three_threads):
    """A retained graph (LayerNorm: x^ recomputed for the second backward) under the split:
    both backwards give the fallback's gradients."""
    gen = torch.Generator().manual_seed(9)
    inputs = loop_inputs({"layernorm": True}, "all", gen, size=(6, 24, 16))
    leaves = [x.detach().clone().requires_grad_(x.requires_grad)
              if isinstance(x, torch.Tensor) else x for x in inputs]
    out = CompiledSequenceLoop.apply(*leaves)
    loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64)).sum() for o in out)
    wrt = [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad]
    first = torch.autograd.grad(loss, wrt, retain_graph=True)
    second = torch.autograd.grad(loss, wrt)
    fallback_out = SequenceLoop.apply(*inputs)
    gen = torch.Generator().manual_seed(9)
    loop_inputs({"layernorm": True}, "all", gen, size=(6, 24, 16))  # the same draws as above
    fallback_loss = sum((o * torch.randn(o.shape, generator=gen, dtype=F64)).sum()
                        for o in fallback_out)
    want = torch.autograd.grad(fallback_loss, [x for x in inputs
                                               if isinstance(x, torch.Tensor) and x.requires_grad])
    assert_close(list(first), list(want), 1e-12)
    assert_close(list(second), list(want), 1e-12)


@needs_compiled
@pytest.mark.parametrize("mode", ["inference_mode", "no_grad"])
def test_row_blocks_under_inference_and_no_grad(mode, three_threads):
    """The worker threads run under the caller's thread-local state: the split works inside
    torch.inference_mode() (whose tensors refuse in-place updates outside it) and no_grad."""
    gen = torch.Generator().manual_seed(12)
    inputs = [x.detach() if isinstance(x, torch.Tensor) else x
              for x in loop_inputs({"layernorm": True}, "all", gen, size=(5, 24, 16))]
    want = SequenceLoop.apply(*inputs)
    with getattr(torch, mode)():
        got = CompiledSequenceLoop.apply(*inputs)
    assert_close([g.clone() for g in got], list(want), 1e-12)


@needs_compiled
@pytest.mark.parametrize("hid", [16, 12], ids=["vector-width", "scalar-width"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=["float32", "float64"])
def test_self_attention_row_blocks_equal_autograd_loop(dtype, hid, three_threads):
    """Self-attention with 25 rows over three threads (blocks of 9, 8 and 8), with LayerNorm,
    dropout and zoneout, padded, vs the per-step autograd loop; H = 16 takes the vector
    kernels, H = 12 the scalar ones (not a whole number of 8-float vectors)."""
    torch.manual_seed(5)
    batch, steps = 25, 13
    layer = CustomLSTMLayer(6, hid, RATES["all"], self_attention=True, layernorm=True).to(dtype)
    x = torch.randn(batch, steps, 6, dtype=dtype)
    state = (torch.randn(batch, hid, dtype=dtype), torch.randn(batch, hid, dtype=dtype))
    lengths = torch.randint(1, steps + 1, (batch,))
    fast = layer_run(layer, x, state, lengths, seed=4)
    layer.fast = False
    slow = layer_run(layer, x, state, lengths, seed=4)
    assert_close(fast, slow, 1e-5 if dtype == F32 else 1e-12)


# -- the layer with no technique through the compiled loop == nn.LSTM ---------------------------

@needs_compiled
@pytest.mark.parametrize("lengths", [None, [6, 2, 5]], ids=["full", "padded"])
def test_compiled_plain_layer_equals_nn_lstm(lengths):
    """No technique: the custom layer (forced onto its loop) computes nn.LSTM with copied
    weights; outputs, final state and gradients of x, h0, c0 and every weight agree to 1e-5.
    With padding, nn.LSTM runs each sequence to its length (packed) and the layer keeps the
    state on padded steps (keep weight 1): the final states and valid outputs agree."""
    torch.manual_seed(2)
    batch, steps, inp, hid = 3, 6, 5, 24
    layer = CustomLSTMLayer(inp, hid, DropoutRates())
    ref = nn.LSTM(inp, hid, batch_first=True)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(ref, f"{name}_l0").copy_(getattr(layer, name))
    x = torch.randn(batch, steps, inp)
    h0, c0 = torch.randn(batch, hid), torch.randn(batch, hid)
    lens = None if lengths is None else torch.tensor(lengths)

    def grads(module_out, leaves):
        out, (h, c) = module_out
        if lens is not None:  # padded outputs differ by definition (zeros vs the held state)
            valid = (torch.arange(steps)[None, :] < lens[:, None]).unsqueeze(-1)
            out = out * valid
        gen = torch.Generator().manual_seed(3)
        loss = sum((v * torch.randn(v.shape, generator=gen)).sum() for v in (out, h, c))
        return [out, h, c, *torch.autograd.grad(loss, leaves)]

    leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
    out = layer(leaves[0], (leaves[1], leaves[2]), lens)
    assert type(out[0].grad_fn).__name__ == "CompiledSequenceLoopBackward"
    got = grads(out, [*leaves, layer.weight_ih, layer.weight_hh, layer.bias_ih, layer.bias_hh])

    leaves = [t.clone().requires_grad_() for t in (x, h0, c0)]
    hx = (leaves[1].unsqueeze(0), leaves[2].unsqueeze(0))
    if lens is None:
        out, (h, c) = ref(leaves[0], hx)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(leaves[0], lens, batch_first=True,
                                                   enforce_sorted=False)
        out, (h, c) = ref(packed, hx)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=steps)
    want = grads((out, (h[0], c[0])), [*leaves, ref.weight_ih_l0, ref.weight_hh_l0,
                                       ref.bias_ih_l0, ref.bias_hh_l0])
    assert_close(got, want, 1e-5)


# -- without a compiler: the fallback still trains ---------------------------------------------

def test_fallback_layer_trains_without_the_extension(monkeypatch):
    """What runs where the extension cannot be built: the layer's loss decreases."""
    monkeypatch.setenv(compiled_loop.ENV_LOOP, "python")
    torch.manual_seed(0)
    layer = CustomLSTMLayer(3, 8, DropoutRates(zoneout=0.1), layernorm=True, highway=True)
    x, target = torch.randn(4, 6, 3), torch.randn(4, 6, 8)
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = (layer(x)[0] - target).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
