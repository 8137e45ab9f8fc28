"""Token losses against torch and hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from lstm_harness.models.losses import (
    LossConfig,
    sequence_focal_loss,
    sequence_loss,
    time_weights,
    token_cross_entropy,
)

PAD = 0
LN3 = math.log(3.0)


def two_tokens() -> tuple[torch.Tensor, torch.Tensor]:
    """p_1 = 0.5 (logits 0, 0) and p_2 = 0.75 (logits ln 3, 0), both targets token 1."""
    logits = torch.tensor([[[-50.0, 0.0, 0.0], [-50.0, LN3, 0.0]]], dtype=torch.float64)
    return logits, torch.tensor([[1, 1]])


A = -(0.5**2) * math.log(0.5)  # token 1: -(1 - p)^2 log p
B = -(0.25**2) * math.log(0.75)  # token 2
EPS = 1e-12  # float64; the -50 logit of the pad class moves p by ~1e-22


def test_config_checks() -> None:
    assert LossConfig().kind == "ce"
    with pytest.raises(ValidationError, match="label_smoothing"):
        LossConfig(kind="focal", label_smoothing=0.1)
    with pytest.raises(ValidationError):
        LossConfig(label_smoothing=1.0)
    with pytest.raises(ValidationError):
        LossConfig(gamma=-1.0)
    with pytest.raises(ValidationError):
        LossConfig(alpha0=0.0)
    with pytest.raises(ValidationError):
        LossConfig(time_weight="quadratic")


def test_focal_gamma0_equals_cross_entropy() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 7)
    target = torch.randint(1, 7, (3, 5))
    target[0, 3:] = PAD
    target[2, 1:] = PAD
    focal = sequence_focal_loss(logits, target, PAD, gamma=0.0, alpha0=1.0)
    ce = token_cross_entropy(logits, target, PAD)
    torch_ce = F.cross_entropy(logits.reshape(-1, 7), target.reshape(-1), ignore_index=PAD)
    assert float(focal) == pytest.approx(float(ce), abs=1e-6)
    assert float(ce) == pytest.approx(float(torch_ce), abs=1e-6)


def test_focal_hand_example() -> None:
    logits, target = two_tokens()
    loss = sequence_focal_loss(logits, target, PAD, gamma=2.0)
    assert float(loss) == pytest.approx((A + B) / 2, abs=EPS)
    alpha = sequence_focal_loss(logits, target, PAD, gamma=2.0, alpha0=0.25)
    assert float(alpha) == pytest.approx(0.25 * (A + B) / 2, abs=EPS)


def test_padding_ignored() -> None:
    logits, target = two_tokens()
    padded_logits = torch.cat([logits, torch.randn(1, 3, 3, dtype=torch.float64) * 9], 1)
    padded_target = torch.tensor([[1, 1, PAD, PAD, PAD]])
    assert float(sequence_focal_loss(padded_logits, padded_target, PAD, gamma=2.0)) == \
        pytest.approx((A + B) / 2, abs=EPS)
    assert float(token_cross_entropy(padded_logits, padded_target, PAD)) == \
        pytest.approx((math.log(2) + math.log(4 / 3)) / 2, abs=EPS)
    # padding gets no gradient
    padded_logits.requires_grad_(True)
    sequence_focal_loss(padded_logits, padded_target, PAD, gamma=2.0,
                        time_weight="linear_up").backward()
    assert torch.count_nonzero(padded_logits.grad[:, 2:]) == 0
    everything_pad = torch.full((1, 5), PAD)
    assert float(sequence_focal_loss(padded_logits.detach(), everything_pad, PAD)) == 0.0


def test_time_weights_hand() -> None:
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]]).bool()  # T = 2 and T = 4
    up = time_weights(mask, "linear_up")
    assert up.tolist() == [[0.5, 1.0, 0.0, 0.0], [0.25, 0.5, 0.75, 1.0]]
    down = time_weights(mask, "linear_down", alpha0=2.0)
    assert down.tolist() == [[2.0, 1.0, 0.0, 0.0], [2.0, 1.5, 1.0, 0.5]]
    assert time_weights(mask, "constant", 3.0).tolist() == [[3.0, 3.0, 0, 0], [3.0] * 4]
    explicit = time_weights(mask, "linear_up", lengths=torch.tensor([4, 4]))
    assert explicit[0].tolist() == [0.25, 0.5, 0.0, 0.0]


def test_focal_time_weights_on_loss() -> None:
    logits, target = two_tokens()
    up = sequence_focal_loss(logits, target, PAD, gamma=2.0, time_weight="linear_up")
    assert float(up) == pytest.approx((0.5 * A + 1.0 * B) / 2, abs=EPS)
    down = sequence_focal_loss(logits, target, PAD, gamma=2.0, time_weight="linear_down")
    assert float(down) == pytest.approx((1.0 * A + 0.5 * B) / 2, abs=EPS)


def test_label_smoothing_equals_torch() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 4, 6)
    target = torch.randint(1, 6, (2, 4))
    target[1, 2:] = PAD
    ours = token_cross_entropy(logits, target, PAD, label_smoothing=0.1)
    ref = F.cross_entropy(logits.reshape(-1, 6), target.reshape(-1), ignore_index=PAD,
                          label_smoothing=0.1)
    assert float(ours) == pytest.approx(float(ref), abs=1e-6)
    # by hand: V = 2, p = (0.75, 0.25), eps = 0.2 -> target (0.9, 0.1)
    hand = token_cross_entropy(torch.tensor([[[LN3, 0.0]]]), torch.tensor([[0]]), pad_id=-100,
                               label_smoothing=0.2)
    assert float(hand) == pytest.approx(-0.9 * math.log(0.75) - 0.1 * math.log(0.25), abs=1e-6)


def test_sequence_loss_dispatch() -> None:
    logits, target = two_tokens()
    ce = sequence_loss(LossConfig(), logits, target, PAD)
    assert float(ce) == pytest.approx(float(token_cross_entropy(logits, target, PAD)))
    focal = sequence_loss(LossConfig(kind="focal", gamma=2.0, time_weight="linear_down"),
                          logits, target, PAD)
    assert float(focal) == pytest.approx((A + 0.5 * B) / 2, abs=EPS)


def test_focal_gradient_finite_when_certain() -> None:
    logits = torch.tensor([[[0.0, 200.0, -200.0]]], requires_grad=True)  # p = 1 exactly
    loss = sequence_focal_loss(logits, torch.tensor([[1]]), PAD, gamma=0.5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(loss.detach()) == 0.0
