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
                      step_mask: torch.Tensor | None = None,
                      tolerance: float = FORECAST_TOLERANCE) -> float:
    """Fraction of forecast values with |y^ - y*| < tolerance over the counted steps
    (``step_mask`` [B, T]), on the model's scale (a forecasting task standardises with the
    training range's mean and std, so the default 0.25 is a quarter of a standard deviation):
    the forecasting analogue of token accuracy."""
    close = ((preds - target).abs() < tolerance).float()  # [B, T, K]
    if step_mask is None:
        step_mask = torch.ones(close.shape[:2], dtype=torch.bool, device=close.device)
    counted = step_mask.unsqueeze(-1).expand_as(close)
    total = int(counted.sum())
    return float(close[counted].sum()) / total if total else 1.0
