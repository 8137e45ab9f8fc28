"""Activation regularisation of the top LSTM layer (Merity et al. 2017, "Regularizing and
Optimizing LSTM Language Models", Sec. 4.6), and what a head without a decoder reports.

  AR  = alpha * mean_{b,t,j} (m * h_t)^2          on the top layer's outputs after dropout
  TAR = beta  * mean_{b,t,j} (h_t - h_{t+1})^2     on the top layer's outputs before dropout

AWD-LSTM's code takes the mean over every element of [B, T, H] (``x.pow(2).mean()``); here the
mean runs over the counted steps only (``mask``), which is the same when every step counts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def activation_regularization(dropped: torch.Tensor, raw: torch.Tensor,
                              mask: torch.Tensor | None, ar: float,
                              tar: float) -> torch.Tensor:
    """alpha mean (m h_t)^2 + beta mean (h_t - h_{t+1})^2 over [B, T, H]; ``mask`` [B, T]
    True where a step counts (TAR pairs count where both steps do)."""
    total = dropped.new_zeros(())
    if ar > 0:
        total = total + ar * _masked_mean_square(dropped, mask)
    if tar > 0 and raw.shape[1] > 1:
        pair_mask = None if mask is None else mask[:, 1:] & mask[:, :-1]
        total = total + tar * _masked_mean_square(raw[:, 1:] - raw[:, :-1], pair_mask)
    return total


def _masked_mean_square(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return x.pow(2).mean()
    weights = mask.to(x.dtype).unsqueeze(-1)
    count = weights.sum() * x.shape[-1]
    return (x.pow(2) * weights).sum() / count.clamp_min(1)


@dataclass(frozen=True)
class TrueInputs:
    """A head without a decoder reads only true inputs: the share of ground-truth decoder
    inputs the training loop logs (``train.truth_fraction``) is 1."""

    truth_fraction: float = 1.0
