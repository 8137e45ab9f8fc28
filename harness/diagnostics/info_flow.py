"""Information flow (README "Diagnostics": info_flow): I_k = I(h_t; y_{t+k}), estimated from
below with a linear probe.

For any conditional model q(y | h), Barber & Agakov 2003 ("The IM algorithm: a variational
approach to information maximization"):

    I(h; Y) = H(Y) - H(Y | h) >= H(Y) - E[-log2 q(Y | h)] = H(Y) - CE_q

since the cross entropy CE_q = H(Y | h) + E_h KL(p(.|h) || q(.|h)) >= H(Y | h). Here q is
multinomial logistic regression on h (a linear probe) fitted on the training examples, and
on the held-out examples

    I_k ~= max(0, H^(Y) - CE^_probe)   (bits)

with H^(Y) = -sum_c p^_c log2 p^_c the plug-in entropy of the held-out labels (p^_c their
frequencies) and CE^_probe = -mean log2 q(y | h) over the held-out pairs. The estimate is a
lower bound in expectation up to sampling noise: the held-out CE is unbiased for the probe's
cross entropy, the plug-in entropy is biased low (by about (C - 1) / (2 n ln 2) bits, Miller
1955), and a linear probe only sees linearly decodable information. Clipped at 0 because a
probe worse than the marginal only shows the bound is loose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -1
LN2 = math.log(2.0)


@dataclass(frozen=True)
class ProbeResult:
    """One probe's held-out numbers in bits: ``info`` = max(0, ``entropy`` - ``cross_entropy``)."""

    entropy: float
    cross_entropy: float
    info: float
    n_train: int
    n_test: int


def label_entropy(labels: Tensor, n_classes: int) -> float:
    """Plug-in entropy H^ = -sum_c p^_c log2 p^_c of integer labels (``IGNORE`` left out)."""
    labels = labels[labels != IGNORE]
    if labels.numel() == 0:
        return math.nan
    p = torch.bincount(labels.long().flatten(), minlength=n_classes).double()
    p = p[p > 0] / labels.numel()
    return float(-(p * p.log2()).sum())


def fit_probe(x: Tensor, y: Tensor, n_classes: int, epochs: int = 100,
              l2: float = 1e-3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Multinomial logistic regression q(y | x) = softmax(W z + b), z = (x - m) / s with the
    feature mean m and std s of ``x``; minimises mean CE + l2 ||W||^2 full-batch with L-BFGS
    (strong Wolfe line search, ``epochs`` iterations) from W = 0, b = 0: deterministic.
    Returns (W, b, m, s)."""
    m, s = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - m) / s
    w = torch.zeros(n_classes, x.shape[1], dtype=x.dtype, requires_grad=True)
    b = torch.zeros(n_classes, dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=epochs, history_size=20,
                            tolerance_grad=1e-9, tolerance_change=1e-12,
                            line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(F.linear(z, w, b), y) + l2 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach(), m, s


def probe_information(x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
                      n_classes: int, epochs: int = 100, l2: float = 1e-3) -> ProbeResult:
    """Fit a probe on (x_train [n, D], y_train [n]) and bound I(x; y) on the test pairs."""
    w, b, m, s = fit_probe(x_train, y_train, n_classes, epochs, l2)
    logits = F.linear((x_test - m) / s, w, b)
    ce = float(F.cross_entropy(logits, y_test)) / LN2
    h = label_entropy(y_test, n_classes)
    return ProbeResult(h, ce, max(0.0, h - ce), len(y_train), len(y_test))


def shifted_pairs(states: Tensor, labels: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(h_t, y_{t+k}) for every t with 0 <= t + k < T and y_{t+k} != IGNORE, over the examples
    of ``states`` [N, T, D] and ``labels`` [N, T] (k may be negative: past labels)."""
    steps = states.shape[1]
    if abs(k) >= steps:
        return states.new_empty(0, states.shape[2]), labels.new_empty(0)
    if k >= 0:
        h, y = states[:, : steps - k], labels[:, k:]
    else:
        h, y = states[:, -k:], labels[:, : steps + k]
    keep = y != IGNORE
    return h[keep], y[keep]


def information_flow(states: Tensor, labels: Tensor, ks: list[int], n_classes: int,
                     train_fraction: float = 0.5, epochs: int = 100, seed: int = 0,
                     l2: float = 1e-3) -> dict[int, float]:
    """{k: I_k in bits}, I_k the probe bound of I(h_t; y_{t+k}) (module text).

    ``states`` [N, T, D] (e.g. a layer's outputs h_t), ``labels`` [N, T] class ids in
    [0, n_classes) with -1 for ignored positions (padding). The examples (not the time steps:
    the steps of one sequence are correlated) are permuted with ``seed`` and the first
    round(train_fraction N) train every probe; the rest are held out. Computed on the CPU in
    float64. A k with no training or no held-out pair gives NaN.
    """
    if states.dim() != 3 or labels.shape != states.shape[:2]:
        raise ValueError(f"states [N, T, D] and labels [N, T] expected, got "
                         f"{tuple(states.shape)} and {tuple(labels.shape)}")
    labels = labels.detach().cpu().long()
    bad = (labels != IGNORE) & ((labels < 0) | (labels >= n_classes))
    if bool(bad.any()):
        raise ValueError(f"labels must be in [0, {n_classes}) or {IGNORE}")
    n = states.shape[0]
    n_train = round(train_fraction * n)
    if not 0 < n_train < n:
        raise ValueError(f"train_fraction {train_fraction} of {n} examples leaves no training "
                         "or no held-out example")
    states = states.detach().to("cpu", torch.float64)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    train, test = order[:n_train], order[n_train:]
    result: dict[int, float] = {}
    for k in ks:
        x_tr, y_tr = shifted_pairs(states[train], labels[train], k)
        x_te, y_te = shifted_pairs(states[test], labels[test], k)
        if len(y_tr) == 0 or len(y_te) == 0:
            result[k] = math.nan
            continue
        result[k] = probe_information(x_tr, y_tr, x_te, y_te, n_classes, epochs, l2).info
    return result
