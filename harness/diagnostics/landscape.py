"""Loss-landscape probes (README "Diagnostics": curvature; Santurkar et al. 2018): local
curvature, gradient predictiveness, parameter-space exploration.

- :func:`top_hessian_eigenvalue`: the Hessian eigenvalue of largest magnitude by power
  iteration on Hessian-vector products (local curvature).
- :func:`gradient_predictiveness`: ||grad L(theta) - grad L(theta - eta grad L(theta))||
  (Santurkar et al. 2018).
- :func:`distance_from_init`: ||theta - theta_0||_2 (exploration), with :func:`snapshot`.
- :func:`double_backward_ready`: lets an LSTM model's loss be differentiated twice.

Hessian-vector products need double backward through the model. With the harness's LSTMs:

- ``CustomLSTMLayer``'s fast path is the autograd Function ``SequenceLoop`` whose backward is
  ``@once_differentiable``. Its second-order terms are not merely unsupported, they are
  *silently dropped*: ``once_differentiable`` only plants its error node when the incoming
  gradients require grad, and ``torch.autograd.grad(..., inputs=params)`` prunes that node
  anyway (its inputs are fresh leaves). Measured on a LayerNorm Seq2Seq: ||Hv|| 5.4 instead
  of 277.7. :func:`top_hessian_eigenvalue` therefore refuses a graph that contains a
  once-differentiable Function, and :func:`double_backward_ready` switches
  ``CustomLSTMLayer.fast = False`` (the per-step autograd loop, same math and masks).
- ``FusedLSTMLayer`` calls ``torch.lstm``. On CPU its double backward works (checked against
  finite differences in the tests). cuDNN's RNN kernel has no double backward, so on other
  devices :func:`double_backward_ready` swaps each fused layer's ``forward`` for a per-step
  loop of plain ops on the same weights (packed-sequence semantics, both directions,
  weight-drop kept); ``per_step_fused=True`` forces that on CPU too.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lstm_harness.models.layers import CustomLSTMLayer, FusedLSTMLayer, State, reverse_padded

LossFn = Callable[[], Tensor]
# every once_differentiable wrapper runs this code object (functools.wraps copies the names)
_ONCE_DIFFERENTIABLE_CODE = once_differentiable(lambda ctx: None).__code__


# -- Hessian-vector products --------------------------------------------------------------
def _once_differentiable_functions(loss: Tensor) -> list[str]:
    """Names of the custom autograd Functions in ``loss``'s graph whose backward is wrapped by
    ``torch.autograd.function.once_differentiable`` (no second derivative)."""
    found: list[str] = []
    seen: set[int] = set()
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        cls = getattr(node, "_forward_cls", None)
        code = getattr(getattr(cls, "backward", None), "__code__", None)
        if code is _ONCE_DIFFERENTIABLE_CODE and cls.__name__ not in found:
            found.append(cls.__name__)
        stack.extend(next_node for next_node, _ in node.next_functions)
    return found


def _dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def _normalised(vs: Sequence[Tensor]) -> list[Tensor]:
    norm = torch.sqrt(_dot(vs, vs))
    return [v / norm for v in vs]


def top_hessian_eigenvalue(loss_fn: LossFn, params: list[Tensor], iters: int = 20,
                           tol: float = 1e-4, generator: torch.Generator | None = None
                           ) -> float:
    """The eigenvalue of largest magnitude of H = d^2 L / d theta^2 (theta = ``params``).

    Power iteration: v_0 ~ N(0, I) (from ``generator``, a CPU generator), normalised; then
    u = H v_j by Pearlmutter's trick, H v = grad_theta (grad_theta L . v) (one extra backward
    through the graph of the gradient, which is built once), lambda_j = v_j . H v_j (the
    Rayleigh quotient, ||v_j|| = 1) and v_{j+1} = u / ||u||. Stops after ``iters`` products or
    once |lambda_j - lambda_{j-1}| <= tol |lambda_j|.

    The sign is kept: power iteration finds the eigenvalue of largest |lambda|, which at a
    non-convex point can be negative (then it is the most negative curvature, and the largest
    positive one is smaller in magnitude). Returns 0.0 when H v = 0 (e.g. a loss linear in
    theta).

    ``loss_fn`` is called once: a model in training mode keeps the dropout masks of that one
    forward pass for every product. With the harness's LSTMs call it inside
    ``with double_backward_ready(model):`` (a graph with a once-differentiable Function is
    refused with a RuntimeError rather than answered wrongly).
    """
    if iters < 1:
        raise ValueError(f"iters must be >= 1, got {iters}")
    loss = loss_fn()
    blocked = _once_differentiable_functions(loss)
    if blocked:
        raise RuntimeError(
            f"the loss's graph contains {', '.join(blocked)}, whose backward is "
            "once_differentiable: Hessian-vector products would silently miss its second "
            "derivative; compute it inside `with double_backward_ready(model):`")
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True,
                                materialize_grads=True)
    live = [i for i, g in enumerate(grads) if g.requires_grad]
    if not live:  # the gradient does not depend on theta: H = 0
        return 0.0
    v = _normalised([torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device)
                     for p in params])
    estimate = math.nan
    for _ in range(iters):
        hv = torch.autograd.grad(_dot([grads[i] for i in live], [v[i] for i in live]), params,
                                 retain_graph=True, allow_unused=True, materialize_grads=True)
        previous, estimate = estimate, float(_dot(v, hv))
        norm = float(torch.sqrt(_dot(hv, hv)))
        if norm == 0.0:
            return 0.0
        v = [h.detach() / norm for h in hv]
        if abs(estimate - previous) <= tol * abs(estimate):
            break
    return estimate


# -- gradient predictiveness ----------------------------------------------------------------
def gradient_predictiveness(loss_fn: LossFn, params: list[Tensor], step_size: float) -> float:
    """||grad L(theta) - grad L(theta - eta grad L(theta))||_2 with eta = ``step_size``.

    Santurkar, Tsipras, Ilyas & Madry 2018, "How Does Batch Normalization Help Optimization?",
    section 3.2: how much the gradient changes along a gradient step of size eta - small means
    the gradient at theta predicts the gradient a step away (a smooth landscape).
    Dividing by ||eta grad L(theta)|| gives their "effective beta-smoothness" along that step.
    For L = 1/2 x^T A x it is eta ||A (A x)||.

    ``loss_fn`` is evaluated at theta and at theta - eta grad L(theta) (pass a deterministic
    loss: a model in eval mode, or fixed dropout masks). The parameters are restored exactly
    afterwards (also on an exception) and ``.grad`` is not touched.
    """
    saved = [p.detach().clone() for p in params]
    try:
        g0 = torch.autograd.grad(loss_fn(), params, allow_unused=True, materialize_grads=True)
        with torch.no_grad():
            for p, g in zip(params, g0, strict=True):
                p.sub_(g, alpha=step_size)
        g1 = torch.autograd.grad(loss_fn(), params, allow_unused=True, materialize_grads=True)
        return float(torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g0, g1, strict=True))))
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)


# -- exploration ----------------------------------------------------------------------------
def snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A detached copy of every parameter, by name (theta_0 for :func:`distance_from_init`)."""
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def distance_from_init(model: nn.Module, initial: dict[str, Tensor]) -> float:
    """||theta - theta_0||_2 = sqrt(sum_p ||p - p_0||^2) over every parameter of ``model``;
    ``initial`` from :func:`snapshot` (a missing name is a KeyError)."""
    total = 0.0
    for name, p in model.named_parameters():
        if name not in initial:
            raise KeyError(f"parameter '{name}' is not in the initial snapshot")
        diff = p.detach() - initial[name].to(device=p.device, dtype=p.dtype)
        total += float(diff.square().sum())
    return math.sqrt(total)


# -- double backward through the LSTMs ------------------------------------------------------
def _per_step_fused_forward(layer: FusedLSTMLayer, x: Tensor, state: State | None = None,
                            lengths: Tensor | None = None) -> tuple[Tensor, State]:
    """``FusedLSTMLayer.forward`` as a loop of plain ops (twice differentiable everywhere).

    Per direction: gates = W_ih x_t + b_ih + b_hh + W_hh h_{t-1} (i, f, g, o), C_t = sigma(f)
    C_{t-1} + sigma(i) tanh(g), h_t = sigma(o) tanh(C_t); the reverse direction reads each
    sequence backwards within its length. As with packed sequences, steps t >= length keep the
    state and output 0, and the final state is the one at the true length.
    """
    batch, steps, _ = x.shape
    hid, dirs = layer.hidden, layer.directions
    if state is None:
        h0 = c0 = x.new_zeros(batch, dirs, hid)
    else:
        h0, c0 = (s.reshape(batch, dirs, hid) for s in state)
    valid = None
    if lengths is not None:
        valid = (torch.arange(steps, device=x.device)[None, :]
                 < lengths.to(x.device)[:, None]).unsqueeze(-1)  # [B, T, 1]
    w_hh = layer.recurrent_weights()  # one weight-drop mask per forward pass, as the kernel
    outs, hs, cs = [], [], []
    for d, suffix in enumerate(["", "_reverse"][:dirs]):
        bias = getattr(layer, f"bias_ih{suffix}") + getattr(layer, f"bias_hh{suffix}")
        xs = x if d == 0 else reverse_padded(x, lengths)
        xw = F.linear(xs, getattr(layer, f"weight_ih{suffix}"), bias).unbind(1)
        h, c = h0[:, d], c0[:, d]
        out = []
        for t in range(steps):
            i, f, g, o = (xw[t] + h @ w_hh[d].t()).chunk(4, 1)
            c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h_new = torch.sigmoid(o) * torch.tanh(c_new)
            if valid is None:
                h, c = h_new, c_new
                out.append(h)
            else:
                keep = valid[:, t]
                h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
                out.append(torch.where(keep, h_new, torch.zeros_like(h_new)))
        out_d = torch.stack(out, 1)
        outs.append(out_d if d == 0 else reverse_padded(out_d, lengths))
        hs.append(h)
        cs.append(c)
    return torch.cat(outs, 2), (torch.cat(hs, 1), torch.cat(cs, 1))


@contextmanager
def double_backward_ready(model: nn.Module, per_step_fused: bool | None = None
                          ) -> Iterator[nn.Module]:
    """Within the block ``model``'s loss can be differentiated twice (Hessian-vector products).

    Sets the class attribute ``CustomLSTMLayer.fast = False`` (per-step autograd loop instead
    of the once-differentiable ``SequenceLoop``; this affects every model in the process while
    the block runs) and, when ``per_step_fused`` (default: when a fused layer's weights are not
    on the CPU, where cuDNN's kernel has no double backward), gives each ``FusedLSTMLayer`` of
    ``model`` a per-step forward (:func:`_per_step_fused_forward`). Everything is restored on
    exit, also after an exception. Results equal the fast paths' up to rounding; the loops are
    slower (for diagnostics, not training).
    """
    fused = [m for m in model.modules() if isinstance(m, FusedLSTMLayer)]
    if per_step_fused is None:
        per_step_fused = any(p.device.type != "cpu" for m in fused for p in m.parameters())
    fast = CustomLSTMLayer.__dict__.get("fast", True)
    patched: list[FusedLSTMLayer] = []
    try:
        CustomLSTMLayer.fast = False
        if per_step_fused:
            for layer in fused:
                layer.forward = types.MethodType(_per_step_fused_forward, layer)
                patched.append(layer)
        yield model
    finally:
        CustomLSTMLayer.fast = fast
        for layer in patched:
            del layer.forward
