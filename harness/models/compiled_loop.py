"""The custom LSTM layer's time loop as a compiled C++ extension, with the PyTorch fallback.

:class:`CompiledSequenceLoop` computes exactly what :class:`~lstm_harness.models.layers.
SequenceLoop` computes (the same inputs, outputs, formulas and hand-written backward), but the
time loop runs in C++ (``csrc/lstm_loop.cpp``): per step one BLAS product h_in W_hh^T and ONE
fused pointwise pass over each batch row for the gates, LayerNorm, masks and zoneout mixing
(the Python loop issues ~25 small ATen calls per step). Step, with gates in nn.LSTM's order:

    pre = W' x_t + b + R(m_t * h_{t-1} W_hh^T)   R = LN per gate (Ba et al. 2016) or identity,
                                                m_t the recurrent dropout mask
                                                (Semeniuta et al. 2016)
    i, f, o = sigma(pre),  g = tanh(pre),  C~ = f C_{t-1} + i g    (Hochreiter & Schmidhuber 1997)
    h~ = o tanh(LN(C~))                         (LN only with layernorm)
    h = T h~ + (1 - T) h_{t-1}                  highway, T = sigma(pre_T) (Zhang et al. 2016)
    h = h_{t-1} + h                             residual_step
    s_t = (1 - k) s + k s_{t-1}  for s = h, C   zoneout keep weight k (Krueger et al. 2017):
                                                the mask d in training, p at evaluation, 1 on
                                                padded steps

The extension is compiled once with ``torch.utils.cpp_extension.load`` (g++ and ninja) into
``~/.cache/lstm_harness/`` (or ``$LSTM_HARNESS_BUILD_DIR``), in a folder named after a hash of
the sources, flags and torch version; ``python -m lstm_harness.models.compiled_loop --build``
does it at install time. Concurrent processes (Ray workers) serialise the build on an
``fcntl`` lock, which the OS releases if a builder dies. If the build or import fails, or the
tensors are not float32/float64 on the CPU (CUDA runs the fallback), the layer runs the
PyTorch loop; ``LSTM_HARNESS_LOOP=python`` forces the fallback, ``LSTM_HARNESS_LOOP=compiled``
makes a failed build an error. :func:`backend` names the path taken.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch.autograd.function import once_differentiable

CSRC = Path(__file__).resolve().parent / "csrc"
SOURCES = ["lstm_loop.cpp"]
HEADERS = ["lstm_loop_kernels.h", "lstm_loop_rows.h"]
# OpenMP where torch's own intra-op threads are OpenMP (the Linux wheels): ATen's parallel_for
# is compiled into the extension from the headers, and without -fopenmp it runs every range on
# the calling thread. The extension then links the libgomp.so.1 torch has already loaded. A
# compiler without OpenMP support gets a second try without it (serial per-step passes).
OPENMP = sys.platform.startswith("linux") and torch.backends.openmp.is_available()
# (-Wno-psabi: the kernels' 32-byte vector helpers are static, no ABI crosses a call boundary)
CFLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-Wno-psabi"]


def _flags(openmp: bool) -> tuple[list[str], list[str]]:
    """(compile, link) flags."""
    return CFLAGS + ["-fopenmp"] * openmp, ["-fopenmp"] * openmp


ENV_LOOP = "LSTM_HARNESS_LOOP"
ENV_BUILD_DIR = "LSTM_HARNESS_BUILD_DIR"
DTYPES = (torch.float32, torch.float64)

_state: dict[str, object] = {}
_state_lock = threading.Lock()  # one build per process, even from several threads


def _digest(openmp: bool = OPENMP) -> str:
    h = hashlib.sha256()
    for name in SOURCES + HEADERS:
        h.update(name.encode())
        h.update((CSRC / name).read_bytes())
    h.update(" ".join(sum(_flags(openmp), [])).encode())
    h.update(torch.__version__.encode())
    h.update(sys.version.encode())
    return h.hexdigest()[:16]


def build_directory(openmp: bool = OPENMP) -> Path:
    """Where the extension is built: one folder per (sources, flags, torch, Python)."""
    root = os.environ.get(ENV_BUILD_DIR) or Path.home() / ".cache" / "lstm_harness"
    return Path(root) / f"lstm_loop-{_digest(openmp)}"


@contextlib.contextmanager
def _build_lock(folder: Path) -> Iterator[None]:
    """An exclusive lock on the build folder, released by the OS if the holder dies. Under it,
    a ``lock`` file left by torch's FileBaton (a killed build) is stale and removed: otherwise
    torch would wait on it forever."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own baton only
        yield
        return
    with open(folder / "build.flock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            (folder / "lock").unlink(missing_ok=True)
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _load(verbose: bool = False) -> ModuleType | None:
    """Build (if needed) and import the extension once per process; None with the reason kept
    for :func:`backend` if that fails."""
    if "module" in _state:
        return _state["module"]  # type: ignore[return-value]
    with _state_lock:
        if "module" not in _state:
            _build(verbose)
    return _state["module"]  # type: ignore[return-value]


def _build(verbose: bool) -> None:
    module, reasons = None, []
    for openmp in [True, False] if OPENMP else [False]:
        try:
            module = _compile(openmp, verbose)
            _state["openmp"] = openmp
            break
        except Exception as error:  # noqa: BLE001 -- any failure means: use the fallback
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            reasons.append(f"{type(error).__name__}: {first[:200]}")
    _state["reason"] = "" if module is not None else "; ".join(reasons)
    _state["module"] = module


def _compile(openmp: bool, verbose: bool) -> ModuleType:
    from torch.utils import cpp_extension

    folder = build_directory(openmp)
    cflags, ldflags = _flags(openmp)
    with _build_lock(folder):
        return cpp_extension.load(
            name=f"lstm_harness_loop_{_digest(openmp)}",
            sources=[str(CSRC / s) for s in SOURCES],
            extra_cflags=cflags, extra_ldflags=ldflags, extra_include_paths=[str(CSRC)],
            build_directory=str(folder), verbose=verbose)


def threaded() -> bool:
    """Whether the loaded extension was built with OpenMP (its per-step passes and row blocks
    run on torch's intra-op threads)."""
    return _load() is not None and bool(_state.get("openmp"))


def forced_fallback() -> bool:
    return os.environ.get(ENV_LOOP, "auto").lower() == "python"


def available() -> bool:
    """Whether the compiled loop is built and allowed (``LSTM_HARNESS_LOOP`` not 'python')."""
    if forced_fallback():
        return False
    module = _load()
    if module is None and os.environ.get(ENV_LOOP, "auto").lower() == "compiled":
        raise RuntimeError(f"{ENV_LOOP}=compiled but the C++ loop failed: {_state['reason']}")
    return module is not None


def usable(xw: torch.Tensor) -> bool:
    """Whether a loop on tensors like ``xw`` runs compiled: CPU, float32/float64, T >= 1."""
    return (xw.device.type == "cpu" and xw.dtype in DTYPES and xw.shape[0] > 0
            and available())


def backend() -> str:
    """The time loop the custom layer runs on CPU: 'compiled C++ loop (...)' or 'PyTorch
    fallback (<reason>)'."""
    if forced_fallback():
        return f"PyTorch fallback ({ENV_LOOP}=python)"
    module = _load()
    if module is None:
        return f"PyTorch fallback (C++ extension unavailable: {_state['reason']})"
    isa = "AVX2+FMA kernels" if module.x86_64_v3() else "baseline-ISA kernels"
    threads = "" if _state.get("openmp") else "; per-step passes on one thread (no OpenMP)"
    return f"compiled C++ loop ({isa}{threads}; CUDA tensors use the PyTorch fallback)"


def _unit_stride(m: torch.Tensor | None, steps: int, batch: int, hid: int,
                 dtype: torch.dtype) -> torch.Tensor | None:
    """A mask as [B, H] or [T, B, H] with unit stride over H (a [T, B, 1] keep weight or an
    expanded scalar is materialised)."""
    if m is None:
        return None
    m = m.to(dtype)
    if m.dim() == 2 and m.shape == (batch, hid) and m.is_contiguous():
        return m
    m = m.expand(steps, batch, hid)
    if m.stride(2) != 1 or m.stride(1) != hid or m.stride(0) not in (0, batch * hid):
        m = m.contiguous()
    return m


def _keep_graph() -> bool:
    """Whether the running backward retains the graph (True where torch cannot say)."""
    query = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", None)
    try:
        return True if query is None else bool(query())
    except RuntimeError:
        return True


class CompiledSequenceLoop(torch.autograd.Function):
    """:class:`~lstm_harness.models.layers.SequenceLoop` with its loop in C++: the same inputs
    (time-major ``xw`` [T, B, G H], ``h0``, ``c0``, ``w_hh``, the four LayerNorm parameters or
    None, ``rec_mask``, ``keep_h``, ``keep_c``, ``highway``, ``residual_step``, ``eps``) and
    outputs ([B, T, H] and the final (h, c)); and ``self_attention``, which SequenceLoop lacks:
    the recurrent input is then [m_t h_{t-1}, ctx_t] with ctx_t = sum_{k<t} beta_k h_k,
    beta = softmax_k(h_k . h_{t-1}) over the earlier outputs (Cheng et al. 2016), ``w_hh``
    [G H, 2 H] (the layer's per-step autograd loop is its fallback).

    Memory: the forward keeps h, C, the activations [T, B, G H] (and with layernorm x^ and the
    statistics), not tanh(LN(C~)), which the backward recomputes. The buffers are saved tensors,
    so autograd frees them once this backward has run. With layernorm the backward writes
    dL/d(h_in W_hh^T) over the saved normalised gates x^; a repeat backward through a retained
    graph first recomputes x^ = (h_in W_hh^T - mean) * rstd from the saved h_in and statistics.
    The last backward (graph not retained) writes dL/d(pre) over the activations: no new
    [T, B, G H] buffer."""

    @staticmethod
    def forward(ctx, xw, h0, c0, w_hh, gates_gain, gates_bias, cell_gain, cell_bias,
                rec_mask, keep_h, keep_c, highway: bool, residual_step: bool, eps: float,
                self_attention: bool | None = None):
        module = _load()
        if module is None:
            raise RuntimeError(f"the C++ loop is unavailable: {_state['reason']}")
        steps, batch, _ = xw.shape
        hid = h0.shape[1]
        masks = [_unit_stride(m, steps, batch, hid, xw.dtype) for m in (rec_mask, keep_h, keep_c)]
        buffers = module.forward(xw, h0, c0, w_hh, gates_gain, gates_bias, cell_gain, cell_bias,
                                 *masks, bool(highway), bool(residual_step), float(eps),
                                 bool(self_attention))
        hs, cs = buffers[0], buffers[1]
        out = hs[1:].transpose(0, 1)
        # out is saved so that autograd refuses a backward after an in-place change of it; the
        # buffers are saved tensors too, so that autograd frees them as soon as this backward
        # has run (not when the graph dies), unless the graph is retained
        ctx.save_for_backward(w_hh, gates_gain, cell_gain, cell_bias, out, *buffers, *masks)
        ctx.n_buffers = len(buffers)
        ctx.options = bool(highway), bool(residual_step)
        ctx.spent = False
        ctx.n_options = 6 if self_attention is None else 7  # inputs with no gradient
        return out, hs[steps].clone(), cs[steps].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_h, d_c):
        saved = ctx.saved_tensors
        w_hh, gates_gain, cell_gain, cell_bias, _ = saved[:5]
        buffers, masks = saved[5 : 5 + ctx.n_buffers], saved[5 + ctx.n_buffers :]
        (hs, cs, acts, c_new, h_in, xhat, rstd_g, mean_g, mean_c, rstd_c, beta) = buffers
        if ctx.spent and xhat is not None:  # a retained graph: x^ was overwritten, recompute
            # it with the forward's own per-step products (bitwise the same values); through
            # .data, so that the saved tensor's version (checked on unpacking) stays
            steps, batch, _ = acts.shape
            hid = hs.shape[2]
            w_t = w_hh.t()
            for t in range(steps):
                rec = (h_in[t] @ w_t)[:, : 4 * hid].view(batch, 4, hid)
                xhat.data[t, :, : 4 * hid] = ((rec - mean_g[t].unsqueeze(-1))
                                              * rstd_g[t].unsqueeze(-1)).view(batch, 4 * hid)
        ctx.spent = True
        # the last backward through this graph writes dL/d(pre) over the activations
        last = not _keep_graph()
        grads = _load().backward(d_out, d_h, d_c, w_hh, gates_gain, cell_gain, cell_bias, *masks,
                                 *ctx.options, hs, cs, acts, c_new, h_in, xhat, rstd_g, mean_c,
                                 rstd_c, beta, last)
        return tuple(grads) + (None,) * ctx.n_options


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the compiled LSTM time loop.")
    parser.add_argument("--build", action="store_true", help="compile it now (verbose)")
    parser.add_argument("--strict", action="store_true", help="exit 1 if it is unavailable")
    args = parser.parse_args(argv)
    if args.build and not forced_fallback():
        print(f"building in {build_directory()}", flush=True)
        _load(verbose=True)
    print(f"lstm_harness time loop: {backend()}")
    return 1 if args.strict and "fallback" in backend() else 0


if __name__ == "__main__":
    raise SystemExit(main())
