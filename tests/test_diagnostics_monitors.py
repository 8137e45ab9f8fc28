"""Diagnostics: gradient monitors, loss-landscape probes and information flow, against torch
and hand-computed values."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.diagnostics.gradients import (
    GradientAction,
    GradientAnomalyDetector,
    NonFiniteError,
    TrainingStopped,
    check_finite,
    grad_norm,
    layer_grad_norms,
)
from lstm_harness.diagnostics.info_flow import information_flow, label_entropy
from lstm_harness.diagnostics.landscape import (
    _per_step_fused_forward,
    distance_from_init,
    double_backward_ready,
    gradient_predictiveness,
    snapshot,
    top_hessian_eigenvalue,
)
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.factory import build_model
from lstm_harness.models.layers import CustomLSTMLayer, FusedLSTMLayer
from lstm_harness.tasks.copy import CopyParams, CopyTask

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: faster on one thread


def tiny_task() -> CopyTask:
    return CopyTask(CopyParams(vocab=5, min_len=2, max_len=5, n_valid=4, n_test=4))


def tiny_model(task: CopyTask, **cfg) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(embed=8, hidden=8, layers=1, **cfg), task)


def first_batch(task: CopyTask):
    return next(iter(task.eval_batches("valid", 4)))


# -- gradient norms ---------------------------------------------------------------------------
def test_grad_norm_equals_clip_grad_norm() -> None:
    task = tiny_task()
    model = tiny_model(task)
    model.loss(first_batch(task)).backward()
    ours = grad_norm(model)
    theirs = float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9))
    assert ours == pytest.approx(theirs, rel=1e-6)
    assert ours > 0
    assert grad_norm(nn.Linear(2, 2)) == 0.0  # no gradients at all


def test_layer_grad_norms_groups_and_sum() -> None:
    task = tiny_task()
    model = tiny_model(task)
    model.loss(first_batch(task)).backward()
    norms = layer_grad_norms(model)
    assert list(norms) == ["grad.layer.encoders.0.stack.layers.0", "grad.layer.decoder.layers.0",
                           "grad.layer.head", "grad.layer.src_embed", "grad.layer.tgt_embed"]
    assert sum(v * v for v in norms.values()) == pytest.approx(grad_norm(model) ** 2, rel=1e-6)
    head = math.sqrt(float(model.head.weight.grad.square().sum() + model.head.bias.grad.square()
                           .sum()))
    assert norms["grad.layer.head"] == pytest.approx(head, rel=1e-6)
    model.head.bias.grad = None  # a parameter without a gradient is left out of its group
    assert layer_grad_norms(model)["grad.layer.head"] == pytest.approx(
        float(model.head.weight.grad.norm()), rel=1e-6)


def test_layer_grad_norms_bidirectional_layernorm_is_one_group() -> None:
    task = tiny_task()
    model = tiny_model(task, cell="layernorm", bidirectional=True)
    model.loss(first_batch(task)).backward()
    norms = layer_grad_norms(model)
    enc = "grad.layer.encoders.0.stack.layers.0"
    assert enc in norms and not any(k.startswith(enc + ".") for k in norms)
    by_hand = math.sqrt(sum(float(p.grad.square().sum()) for n, p in model.named_parameters()
                            if n.startswith("encoders.0.stack.layers.0.")))
    assert norms[enc] == pytest.approx(by_hand, rel=1e-6)


# -- anomaly detection ------------------------------------------------------------------------
def test_planted_spike_is_flagged_exactly_there() -> None:
    gen = torch.Generator().manual_seed(0)
    norms = (1 + 0.1 * torch.randn(60, generator=gen)).tolist()
    norms[45] = 10.0
    det = GradientAnomalyDetector(window=100, k=3.0, warmup=20)
    flags = []
    for g in norms:
        before = list(det.history)
        flags.append(det.update(g))
        if g == 10.0:  # judged against the earlier norms only, then added to them
            mean = sum(before) / len(before)
            std = math.sqrt(sum((x - mean) ** 2 for x in before) / len(before))
            assert det.threshold == pytest.approx(mean + 3 * std)
            assert list(det.history) == before + [10.0]
    assert [i for i, f in enumerate(flags) if f] == [45]
    assert (det.steps, det.anomalies, det.consecutive) == (60, 1, 0)
    assert len(det.history) == 60


def test_hand_threshold_and_sliding_window() -> None:
    det = GradientAnomalyDetector(window=2, k=1.0, warmup=2)
    assert not det.update(1.0) and not det.update(3.0)  # warmup; history [1, 3]
    assert not det.update(3.0)  # mu = 2, sigma = 1: 3 > 3 is false; history [3, 3]
    assert det.threshold == pytest.approx(3.0)
    assert det.update(3.5)  # mu = 3, sigma = 0; history [3, 3.5]
    assert det.update(3.6)  # mu = 3.25, sigma = 0.25: 3.6 > 3.5; history [3.5, 3.6]
    assert det.consecutive == 2
    assert not det.update(3.0)  # history [3.6, 3]
    assert det.consecutive == 0 and list(det.history) == [3.6, 3.0]


def test_warmup_respected_and_non_finite_always_flagged() -> None:
    det = GradientAnomalyDetector(window=10, k=3.0, warmup=5)
    assert not any(det.update(g) for g in [1.0, 1.0, 1.0, 1.0, 100.0])  # 5th: 4 in history
    assert list(det.history) == [1.0, 1.0, 1.0, 1.0, 100.0]
    assert not det.update(100.0)  # mu = 20.8, sigma = 39.6: threshold 139.6
    assert det.update(1000.0)
    fresh = GradientAnomalyDetector(window=10, warmup=5)
    assert fresh.update(math.nan) and fresh.update(math.inf)
    assert len(fresh.history) == 0 and fresh.anomalies == 2
    with pytest.raises(ValueError):
        GradientAnomalyDetector(window=10, warmup=11)


def test_detector_state_dict_round_trip() -> None:
    gen = torch.Generator().manual_seed(1)
    norms = (1 + 0.1 * torch.randn(80, generator=gen)).tolist()
    norms[30] = norms[60] = 5.0
    whole = GradientAnomalyDetector(window=16, warmup=8)
    expected = [(whole.update(g), whole.threshold) for g in norms]
    first = GradientAnomalyDetector(window=16, warmup=8)
    for g in norms[:40]:
        first.update(g)
    state = copy.deepcopy(first.state_dict())
    resumed = GradientAnomalyDetector(window=16, warmup=8)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == first.state_dict()
    got = [(resumed.update(g), resumed.threshold) for g in norms[40:]]
    assert got == expected[40:]
    assert resumed.anomalies == whole.anomalies
    assert expected[30][0] and expected[60][0]
    with pytest.raises(ValueError, match="window"):
        GradientAnomalyDetector(window=32, warmup=8).load_state_dict(state)


def test_gradient_actions() -> None:
    assert GradientAction("log")(True, 3, 10.0, 2.0)
    skip = GradientAction("skip")
    assert skip(False, 3, 1.0, 2.0) and not skip(True, 4, 10.0, 2.0)
    assert skip.skipped == 1
    stop = GradientAction("stop")
    assert stop(False, 5, 1.0, 2.0)
    with pytest.raises(TrainingStopped, match="at step 6") as info:
        stop(True, 6, 10.0, 2.0)
    assert "10" in info.value.reason and "2" in info.value.reason
    with pytest.raises(ValueError, match="unknown gradient action"):
        GradientAction("clip")  # type: ignore[arg-type]


def test_check_finite_names_loss_or_parameter() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 1))
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    check_finite(torch.tensor(1.0), model, 0)  # all finite: nothing
    with pytest.raises(NonFiniteError, match="loss is nan at step 7") as info:
        check_finite(torch.tensor(math.nan), model, 7)
    assert info.value.what == "loss"
    model[1].weight.grad[0, 1] = math.inf
    model[1].bias.grad[0] = math.nan
    with pytest.raises(NonFiniteError, match=r"parameter '1\.weight'.* at step 9") as info:
        check_finite(torch.tensor(0.5), model, 9)
    assert info.value.what == "1.weight" and info.value.step == 9


# -- curvature --------------------------------------------------------------------------------
def symmetric(eigenvalues: list[float], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigenvalues), len(eigenvalues), generator=gen,
                                       dtype=torch.float64))
    return q @ torch.diag(torch.tensor(eigenvalues, dtype=torch.float64)) @ q.T


@pytest.mark.parametrize("eigenvalues", [[4.0, 2.0, 1.0, 0.5, -1.0, 0.1],
                                         [-5.0, 2.0, 1.0, 0.3, 0.0, 1.5]])
def test_power_iteration_matches_eigvalsh_on_quadratic(eigenvalues: list[float]) -> None:
    a = symmetric(eigenvalues)
    x = nn.Parameter(torch.randn(6, dtype=torch.float64))
    top = top_hessian_eigenvalue(lambda: 0.5 * x @ a @ x, [x], iters=200, tol=1e-10,
                                 generator=torch.Generator().manual_seed(0))
    exact = torch.linalg.eigvalsh(a)
    exact = float(exact[exact.abs().argmax()])  # the largest in magnitude, with its sign
    assert top == pytest.approx(exact, rel=1e-3)
    assert exact == pytest.approx(max(eigenvalues, key=abs))


def test_power_iteration_matches_exact_hessian_of_mlp() -> None:
    torch.manual_seed(0)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    shapes = [(4, 3), (4,), (1, 4), (1,)]
    params = [nn.Parameter(torch.randn(s, dtype=torch.float64)) for s in shapes]

    def loss_of(w1, b1, w2, b2):
        return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()

    def flat_loss(theta: torch.Tensor) -> torch.Tensor:
        parts, start = [], 0
        for s in shapes:
            n = math.prod(s)
            parts.append(theta[start:start + n].view(s))
            start += n
        return loss_of(*parts)

    theta = torch.cat([p.detach().flatten() for p in params])
    eig = torch.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, theta))
    exact = float(eig[eig.abs().argmax()])
    top = top_hessian_eigenvalue(lambda: loss_of(*params), params, iters=500, tol=1e-12,
                                 generator=torch.Generator().manual_seed(0))
    assert top == pytest.approx(exact, rel=1e-3)


def test_linear_loss_has_zero_curvature() -> None:
    x = nn.Parameter(torch.randn(3))
    assert top_hessian_eigenvalue(lambda: (2 * x).sum(), [x]) == 0.0


def test_per_step_fused_forward_equals_kernel() -> None:
    torch.manual_seed(0)
    layer = FusedLSTMLayer(3, 5, bidirectional=True, rates=DropoutRates()).eval()
    x = torch.randn(4, 6, 3)
    lengths = torch.tensor([6, 2, 4, 1])
    state = (torch.randn(4, 10), torch.randn(4, 10))
    for lens, st in [(None, None), (lengths, state)]:
        out, (h, c) = layer(x, st, lens)
        out2, (h2, c2) = _per_step_fused_forward(layer, x, st, lens)
        for a, b in [(out, out2), (h, h2), (c, c2)]:
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def finite_difference_hvp(loss_fn, params, v, eps=1e-6) -> list[torch.Tensor]:
    def grads():
        return torch.autograd.grad(loss_fn(), params, allow_unused=True, materialize_grads=True)
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(d, alpha=eps)
    plus = grads()
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.sub_(d, alpha=2 * eps)
    minus = grads()
    with torch.no_grad():
        for p, d in zip(params, v, strict=True):
            p.add_(d, alpha=eps)
    return [(a - b) / (2 * eps) for a, b in zip(plus, minus, strict=True)]


@pytest.mark.parametrize("cell", ["lstm", "layernorm"])
def test_double_backward_through_lstm_matches_finite_differences(cell: str) -> None:
    task = tiny_task()
    model = tiny_model(task, cell=cell).double()
    batch = first_batch(task)
    params = list(model.parameters())
    v = [torch.randn_like(p) for p in params]
    fd = finite_difference_hvp(lambda: model.loss(batch), params, v)
    with double_backward_ready(model):
        g = torch.autograd.grad(model.loss(batch), params, create_graph=True)
        hv = torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, v, strict=True)), params)
    for a, b in zip(hv, fd, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_top_eigenvalue_of_seq2seq_fused_and_custom() -> None:
    task = tiny_task()
    batch = first_batch(task)
    values = {}
    for cell, per_step in [("lstm", False), ("lstm", True), ("layernorm", None)]:
        model = tiny_model(task, cell=cell)
        params = list(model.parameters())
        with double_backward_ready(model, per_step_fused=per_step):
            values[cell, per_step] = top_hessian_eigenvalue(
                lambda m=model: m.loss(batch), params, iters=6,
                generator=torch.Generator().manual_seed(0))
        assert math.isfinite(values[cell, per_step]) and values[cell, per_step] != 0.0
        assert CustomLSTMLayer.fast is True
        assert "forward" not in vars(model.decoder.layers[0])
    # the per-step fallback of the fused layer gives the same products
    assert values["lstm", True] == pytest.approx(values["lstm", False], rel=1e-4)


def test_once_differentiable_graph_is_refused_and_fast_restored() -> None:
    task = tiny_task()
    model = tiny_model(task, cell="layernorm")
    batch = first_batch(task)
    with pytest.raises(RuntimeError, match="SequenceLoop.*double_backward_ready"):
        top_hessian_eigenvalue(lambda: model.loss(batch), list(model.parameters()), iters=2)
    with pytest.raises(KeyError), double_backward_ready(model, per_step_fused=True):
        assert CustomLSTMLayer.fast is False
        raise KeyError("boom")
    assert CustomLSTMLayer.fast is True


# -- predictiveness and exploration -----------------------------------------------------------
def test_gradient_predictiveness_on_quadratic() -> None:
    a = symmetric([3.0, 1.0, 0.5, -0.2])
    x = nn.Parameter(torch.randn(4, dtype=torch.float64))
    before = x.detach().clone()
    eta = 0.1
    value = gradient_predictiveness(lambda: 0.5 * x @ a @ x, [x], eta)
    by_hand = eta * float(torch.linalg.vector_norm(a @ (a @ before)))
    assert value == pytest.approx(by_hand, rel=1e-10)
    assert torch.equal(x.detach(), before) and x.grad is None


def test_distance_from_init() -> None:
    model = nn.Linear(2, 2)  # weight 4 entries, bias 2
    theta0 = snapshot(model)
    assert distance_from_init(model, theta0) == 0.0
    with torch.no_grad():
        model.weight.add_(0.5)  # ||.|| = sqrt(4 * 0.25) = 1
        model.bias.sub_(torch.tensor([0.0, 2.0]))  # ||.|| = 2
    assert distance_from_init(model, theta0) == pytest.approx(math.sqrt(5.0))
    with pytest.raises(KeyError, match="bias"):
        distance_from_init(model, {"weight": theta0["weight"]})


# -- information flow -------------------------------------------------------------------------
def test_label_entropy_by_hand() -> None:
    assert label_entropy(torch.tensor([0, 0, 1, 2]), 3) == pytest.approx(1.5)
    assert label_entropy(torch.tensor([0, 0, 1, 2, -1, -1]), 4) == pytest.approx(1.5)
    assert label_entropy(torch.tensor([2, 2, 2]), 3) == 0.0


def test_information_flow_copy_and_noise() -> None:
    gen = torch.Generator().manual_seed(0)
    n, steps, classes = 200, 12, 4
    labels = torch.randint(0, classes, (n, steps), generator=gen)
    labels[:50, -2:] = -1  # padding
    # h_t carries y_{t+1} exactly (one-hot) and 4 noise features
    nxt = labels.roll(-1, dims=1).clamp_min(0)
    states = torch.cat([nn.functional.one_hot(nxt, classes).float(),
                        torch.randn(n, steps, 4, generator=gen)], dim=2)
    info = information_flow(states, labels, ks=[0, 1, 2], n_classes=classes)
    h = label_entropy(labels[labels >= 0], classes)
    assert h == pytest.approx(2.0, abs=0.01)
    assert info[1] == pytest.approx(h, abs=0.08) and info[1] <= h + 1e-9
    assert info[0] < 0.05 and info[2] < 0.05  # y_t, y_{t+2}: independent of y_{t+1}
    noise = torch.randn(n, steps, 8, generator=gen)
    assert information_flow(noise, labels, ks=[1], n_classes=classes)[1] < 0.05
    again = information_flow(states, labels, ks=[0, 1, 2], n_classes=classes)
    assert again == info  # deterministic
    assert math.isnan(information_flow(states, labels, ks=[steps], n_classes=classes)[steps])
    with pytest.raises(ValueError, match="labels"):
        information_flow(states, labels + 10, ks=[1], n_classes=classes)
