"""Accuracy signals of a training batch, for the curricula (adaptive, naive, combined)."""

from __future__ import annotations

import torch

FORECAST_TOLERANCE = 0.25


def token_accuracy(logits: torch.Tensor, target: torch.Tensor, pad_id: int) -> float:
    """Fraction of non-pad target tokens whose argmax prediction is right."""
    mask = target != pad_id
    correct = (logits.argmax(-1) == target) & mask
    return float(correct.sum()) / max(int(mask.sum()), 1)


def forecast_accuracy(preds: torch.Tensor, target: torch.Tensor,
                      tolerance: float = FORECAST_TOLERANCE) -> float:
    """Fraction of forecast values with |y^ - y*| < tolerance, on the model's scale (a
    forecasting task standardises with the training range's mean and std, so the default
    0.25 is a quarter of a standard deviation): the forecasting analogue of token accuracy."""
    if target.numel() == 0:
        return 1.0
    return float(((preds - target).abs() < tolerance).float().mean())
