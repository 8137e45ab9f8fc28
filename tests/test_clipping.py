"""Gradient clipping against torch and hand-computed thresholds."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.layers import FusedLSTMLayer
from lstm_harness.training.clipping import ClipConfig, GradientClipper, gate_blocks


class TwoParams(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(2))
        self.b = nn.Parameter(torch.zeros(1))

    def set_grads(self, a: list[float], b: list[float]) -> None:
        self.a.grad = torch.tensor(a)
        self.b.grad = torch.tensor(b)

    def norm(self) -> float:
        return math.sqrt(float(self.a.grad.square().sum() + self.b.grad.square().sum()))


def test_config_checks() -> None:
    with pytest.raises(ValidationError):
        ClipConfig(kind="norm", threshold=0.0)
    with pytest.raises(ValidationError):
        ClipConfig(alpha=1.5)
    with pytest.raises(ValidationError):
        ClipConfig(kind="value")


def test_none_leaves_grads() -> None:
    model = TwoParams()
    model.set_grads([3.0, 0.0], [4.0])
    logs = GradientClipper(ClipConfig()).clip(model)
    assert logs == {"clip.grad_norm": pytest.approx(5.0)}
    assert model.a.grad.tolist() == [3.0, 0.0] and model.b.grad.tolist() == [4.0]


def test_norm_equals_torch() -> None:
    model, reference = TwoParams(), TwoParams()
    model.set_grads([3.0, 0.0], [4.0])
    reference.set_grads([3.0, 0.0], [4.0])
    logs = GradientClipper(ClipConfig(kind="norm", threshold=1.0)).clip(model)
    torch.nn.utils.clip_grad_norm_(list(reference.parameters()), 1.0)
    assert torch.equal(model.a.grad, reference.a.grad)
    assert torch.equal(model.b.grad, reference.b.grad)
    assert model.a.grad.tolist() == pytest.approx([0.6, 0.0], abs=1e-6)
    assert model.b.grad.tolist() == pytest.approx([0.8], abs=1e-6)
    assert logs == {"clip.grad_norm": pytest.approx(5.0), "clip.threshold": 1.0}


def test_adaptive_threshold_sequence() -> None:
    # tau_0 = 2, alpha = 0.5; norms 5, 1, 4
    # step 1: clip to 2;    tau_1 = 0.5 * 2 + 0.5 * 5 = 3.5
    # step 2: 1 < 3.5 kept; tau_2 = 0.5 * 3.5 + 0.5 * 1 = 2.25
    # step 3: clip to 2.25; tau_3 = 0.5 * 2.25 + 0.5 * 4 = 3.125
    model = TwoParams()
    clipper = GradientClipper(ClipConfig(kind="adaptive", threshold=2.0, alpha=0.5))
    expected = [([3.0, 0.0], [4.0], 5.0, 2.0, 2.0, 3.5),
                ([0.6, 0.0], [0.8], 1.0, 3.5, 1.0, 2.25),
                ([0.0, 4.0], [0.0], 4.0, 2.25, 2.25, 3.125)]
    for a, b, norm, used, after, tau in expected:
        model.set_grads(a, b)
        logs = clipper.clip(model)
        assert logs["clip.grad_norm"] == pytest.approx(norm)
        assert logs["clip.threshold"] == pytest.approx(used)
        assert model.norm() == pytest.approx(after, abs=1e-5)
        assert clipper.tau == pytest.approx(tau)
    model.set_grads([0.6, 0.0], [0.8])
    clipper.clip(model)  # a norm under the threshold leaves the gradient as it was
    assert model.a.grad.tolist() == [pytest.approx(0.6)] + [0.0]
    resumed = GradientClipper(clipper.cfg)
    resumed.load_state_dict(clipper.state_dict())
    assert resumed.tau == clipper.tau


def test_adaptive_skips_non_finite_norm() -> None:
    model = TwoParams()
    clipper = GradientClipper(ClipConfig(kind="adaptive", threshold=2.0, alpha=0.5))
    model.set_grads([float("inf"), 0.0], [0.0])
    clipper.clip(model)
    assert clipper.tau == 2.0


class WithHead(nn.Module):
    """One real fused LSTM layer (H = 2: gate rows i 0:2, f 2:4, g 4:6, o 6:8) and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = FusedLSTMLayer(3, 2, False, DropoutRates())
        self.head = nn.Linear(2, 1, bias=False)

    def set_grads(self) -> None:
        for p in self.parameters():
            p.grad = torch.zeros_like(p)
        lstm = self.lstm
        lstm.weight_ih.grad[2] = torch.tensor([3.0, 0.0, 0.0])  # forget: 3 and 4 -> norm 5
        lstm.bias_hh.grad[2:4] = torch.tensor([4.0, 0.0])
        lstm.weight_hh.grad[0:2] = torch.tensor([[0.3, 0.0], [0.0, 0.4]])  # input: 0.5
        lstm.bias_ih.grad[6:8] = torch.tensor([0.0, 2.0])  # output: 2; cell: 0
        self.head.weight.grad = torch.tensor([[6.0, 8.0]])  # others: 10


def block_norm(t: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(t))


def test_per_gate_blocks() -> None:
    model = WithHead()
    model.set_grads()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    clipper = GradientClipper(ClipConfig(kind="per_gate", threshold=1.0, alpha=0.5))
    logs = clipper.clip(model)
    lstm = model.lstm
    # forget gate norm 5 > 1: both of its blocks scaled by 1/5 -> gate norm 1
    assert block_norm(lstm.weight_ih.grad[2:4]) == pytest.approx(0.6, abs=1e-6)
    assert block_norm(lstm.bias_hh.grad[2:4]) == pytest.approx(0.8, abs=1e-6)
    # output gate norm 2 -> 1
    assert block_norm(lstm.bias_ih.grad[6:8]) == pytest.approx(1.0, abs=1e-6)
    # input gate (0.5) and cell gate (0) under their threshold: bit-for-bit unchanged
    assert torch.equal(lstm.weight_hh.grad[0:2], before["lstm.weight_hh"][0:2])
    assert torch.equal(lstm.weight_hh.grad[4:6], before["lstm.weight_hh"][4:6])
    # the head is clipped by norm with the threshold: 10 -> 1
    assert block_norm(model.head.weight.grad) == pytest.approx(1.0, abs=1e-6)
    assert logs["clip.grad_norm"] == pytest.approx(math.sqrt(25 + 0.25 + 4 + 100))
    assert logs["clip.threshold"] == 1.0
    for gate, norm in {"input": 0.5, "forget": 5.0, "cell": 0.0, "output": 2.0}.items():
        assert logs[f"clip.threshold.{gate}"] == 1.0
        assert logs[f"clip.grad_norm.{gate}"] == pytest.approx(norm)
    assert "clip.threshold.transform" not in logs
    # tau_1 = 0.5 * 1 + 0.5 * norm, per gate
    model.set_grads()
    logs = clipper.clip(model)
    expected = {"input": 0.75, "forget": 3.0, "cell": 0.5, "output": 1.5}
    for gate, tau in expected.items():
        assert logs[f"clip.threshold.{gate}"] == pytest.approx(tau)
    assert block_norm(lstm.weight_ih.grad[2:4]) == pytest.approx(0.6 * 3, abs=1e-6)
    assert block_norm(lstm.bias_ih.grad[6:8]) == pytest.approx(1.5, abs=1e-6)
    assert torch.equal(lstm.weight_hh.grad[0:2], before["lstm.weight_hh"][0:2])


def test_per_gate_norm_is_over_all_layers() -> None:
    model = nn.LSTM(2, 2, num_layers=2)  # weight_ih_l0, ..., bias_hh_l1, hidden_size = 2
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.bias_ih_l0.grad[2] = 3.0  # forget gate, layer 0
    model.bias_ih_l1.grad[3] = 4.0  # forget gate, layer 1: together 5
    logs = GradientClipper(ClipConfig(kind="per_gate", threshold=1.0)).clip(model)
    assert logs["clip.grad_norm.forget"] == pytest.approx(5.0)
    assert float(model.bias_ih_l0.grad[2]) == pytest.approx(0.6, abs=1e-6)
    assert float(model.bias_ih_l1.grad[3]) == pytest.approx(0.8, abs=1e-6)


class Highway(nn.Module):
    """Stand-in for a highway layer: 5 row blocks of H = 2, the fifth the transform gate."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = 2
        self.weight_ih = nn.Parameter(torch.zeros(10, 3))
        self.bias_hh = nn.Parameter(torch.zeros(10))
        self.ln_gates_gain = nn.Parameter(torch.ones(4, 2))


def test_gate_blocks_layouts() -> None:
    blocks, others = gate_blocks(Highway())
    assert [(b.name, b.gate, b.start, b.stop) for b in blocks if b.name == "weight_ih"] == [
        ("weight_ih", "input", 0, 2), ("weight_ih", "forget", 2, 4), ("weight_ih", "cell", 4, 6),
        ("weight_ih", "output", 6, 8), ("weight_ih", "transform", 8, 10)]
    assert len(blocks) == 10 and len(others) == 1  # the LayerNorm gain is not a gate tensor
    bi = FusedLSTMLayer(3, 2, True, DropoutRates())
    blocks, others = gate_blocks(bi)
    assert len({b.name for b in blocks}) == 8 and not others  # *_reverse included
    blocks, others = gate_blocks(nn.GRU(2, 2))  # 3H rows: not LSTM gates
    assert not blocks and len(others) == 4


def test_per_gate_transform_group() -> None:
    model = Highway()
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    model.bias_hh.grad[8:10] = torch.tensor([0.0, 4.0])
    logs = GradientClipper(ClipConfig(kind="per_gate", threshold=2.0)).clip(model)
    assert logs["clip.grad_norm.transform"] == pytest.approx(4.0)
    assert logs["clip.threshold.transform"] == 2.0
    assert block_norm(model.bias_hh.grad[8:10]) == pytest.approx(2.0, abs=1e-5)
