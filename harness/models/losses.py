"""Token losses of sequence training: cross entropy and sequence focal loss.

Shapes: logits [B, T, V], target [B, T] (token ids, ``pad_id`` on padding). Both losses are
averaged over the non-pad target tokens of the batch (a batch with none gives 0).

- ``ce``: L_TF = -sum_t log P(y*_t | y*_<t, x) per token (Williams & Zipser 1989), optionally
  with label smoothing (Szegedy et al. 2016, "Rethinking the Inception Architecture"): torch's
  ``F.cross_entropy(label_smoothing=eps)``, i.e. target (1 - eps) one-hot + eps / V uniform.
- ``focal``: sequence focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection",
  applied per target token):
    L_focal = -sum_t alpha_t (1 - p_t)^gamma log p_t
  with p_t the predicted probability of the correct token and time-aware weights
  alpha_t = alpha_0 * f(t / T), T the example's true length and t = 0 .. T-1 the position:
    constant:    f = 1
    linear_up:   f = (t + 1) / T   (t / T shifted by one so the first token's weight is 1/T,
                                   not 0, and the last token's is 1)
    linear_down: f = (T - t) / T   (1 - t / T: 1 at the first token, 1/T at the last, never 0)
  gamma = 0 and alpha_0 = 1 give cross entropy.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from lstm_harness.strict import Strict

TimeWeight = Literal["constant", "linear_up", "linear_down"]


TOKEN_LOSSES = ("ce", "focal")
SEQUENCE_LOSSES = ("reinforce", "scst", "mrt", "mixer")


class LossConfig(Strict):
    """Token losses: ``ce`` (with ``label_smoothing``) or ``focal`` (``gamma``, ``alpha0``,
    ``time_weight``). Sequence-level losses (``training/sequence_level.py``): ``reinforce``,
    ``scst``, ``mrt``, ``mixer``, on the sentence reward ``reward`` of ``samples`` candidates
    per source, after ``pretrain_steps`` steps of cross entropy; ``mix_lambda`` > 0 trains on
    lambda * CE + (1 - lambda) * L_seq.

    Fields that do not apply to ``kind`` are ignored, so a suite can sweep ``kind`` over a base
    that sets them; ``focal`` refuses a label_smoothing > 0 (it has no smoothed form here).
    """

    kind: Literal["ce", "focal", "reinforce", "scst", "mrt", "mixer"] = "ce"
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    gamma: float = Field(2.0, ge=0)
    alpha0: float = Field(1.0, gt=0)
    time_weight: TimeWeight = "constant"
    reward: Literal["task", "bleu", "rouge1", "rouge2", "rougeL"] = Field(
        "task", description="sentence reward; task: the task's own (translation BLEU, "
        "summarization ROUGE-L)")
    samples: int = Field(5, ge=1, description="K candidates sampled per source")
    baseline: Literal["moving_average", "leave_one_out"] = "moving_average"
    baseline_decay: float = Field(0.9, ge=0, lt=1)
    temperature: float = Field(1.0, gt=0)
    top_k: int = Field(0, ge=0)
    mrt_alpha: float = Field(0.005, gt=0, description="sharpness alpha of Q(y|x)")
    mrt_reference: bool = Field(True, description="add the reference to MRT's candidates")
    mix_lambda: float = Field(0.0, ge=0, lt=1)
    pretrain_steps: int = Field(0, ge=0, description="cross-entropy steps before the "
                                "sequence-level loss starts")
    mixer_start: int | None = Field(None, ge=0, description="MIXER: tokens trained with cross "
                                    "entropy at first (default: the longest target)")
    mixer_every: int = Field(100, ge=1, description="MIXER: steps between boundary moves")
    mixer_delta: int = Field(2, ge=1, description="MIXER: tokens the boundary moves by")
    ar: float = Field(0.0, ge=0, description="activation regularisation alpha: "
                      "alpha mean(m * h_t)^2 on the top layer's dropped outputs (Merity et al. "
                      "2017); language_model and classify heads")
    tar: float = Field(0.0, ge=0, description="temporal activation regularisation beta: "
                       "beta mean(h_t - h_{t+1})^2 on the top layer's outputs before dropout "
                       "(Merity et al. 2017); language_model and classify heads")

    @model_validator(mode="after")
    def check(self) -> LossConfig:
        if self.kind == "focal" and self.label_smoothing > 0:
            raise ValueError("field 'label_smoothing': applies to kind 'ce' only "
                             f"(got {self.label_smoothing} with kind 'focal')")
        if self.kind == "reinforce" and self.baseline == "leave_one_out" and self.samples < 2:
            raise ValueError("field 'samples': the leave-one-out baseline needs samples >= 2")
        return self

    @property
    def sequence_level(self) -> bool:
        return self.kind in SEQUENCE_LOSSES


def _masked_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    count = mask.sum().clamp_min(1)
    return (per_token * mask).sum() / count


def token_cross_entropy(logits: torch.Tensor, target: torch.Tensor, pad_id: int,
                        label_smoothing: float = 0.0) -> torch.Tensor:
    """Mean cross entropy over non-pad tokens: F.cross_entropy(ignore_index=pad_id,
    label_smoothing=...) summed and divided by the number of non-pad tokens."""
    vocab = logits.shape[-1]
    total = F.cross_entropy(logits.reshape(-1, vocab), target.reshape(-1), ignore_index=pad_id,
                            label_smoothing=label_smoothing, reduction="sum")
    return total / (target != pad_id).sum().clamp_min(1)


def time_weights(mask: torch.Tensor, kind: TimeWeight, alpha0: float = 1.0,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
    """alpha_t = alpha0 * f(t / T) [B, T] (0 on padding); see the module text for f.

    T is ``lengths`` if given, otherwise the number of non-pad tokens of each row (padding
    at the end of a row, as the harness's batches have it).
    """
    mask = mask.to(torch.float32)
    if kind == "constant":
        return alpha0 * mask
    length = (lengths.to(mask.device, torch.float32) if lengths is not None
              else mask.sum(1)).clamp_min(1).unsqueeze(1)  # [B, 1]
    t = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32).unsqueeze(0)
    if kind == "linear_up":
        f = (t + 1) / length
    elif kind == "linear_down":
        f = (length - t) / length
    else:
        raise ValueError(f"unknown time weight '{kind}'; allowed: constant, linear_up, "
                         "linear_down")
    return alpha0 * f * mask


def sequence_focal_loss(logits: torch.Tensor, target: torch.Tensor, pad_id: int,
                        gamma: float = 2.0, alpha0: float = 1.0,
                        time_weight: TimeWeight = "constant",
                        lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over non-pad tokens of -alpha_t (1 - p_t)^gamma log p_t."""
    mask = target != pad_id
    if logits.dtype in (torch.float16, torch.bfloat16):  # the focal factor needs the range
        logits = logits.float()
    log_probs = F.log_softmax(logits, dim=-1)
    safe_target = target.masked_fill(~mask, 0).unsqueeze(-1)
    log_p = log_probs.gather(-1, safe_target).squeeze(-1)  # [B, T]
    # (1 - p)^gamma; the floor keeps its gradient finite where p rounds to 1 and gamma < 1
    modulating = (1 - log_p.exp()).clamp_min(torch.finfo(log_p.dtype).tiny).pow(gamma)
    alpha = time_weights(mask, time_weight, alpha0, lengths)
    return _masked_mean(-alpha * modulating * log_p, mask.to(log_p.dtype))


def sequence_loss(cfg: LossConfig, logits: torch.Tensor, target: torch.Tensor, pad_id: int,
                  lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The token loss ``cfg`` names, averaged over non-pad tokens (cross entropy for the
    sequence-level kinds: their pretraining stage)."""
    if cfg.kind != "focal":
        return token_cross_entropy(logits, target, pad_id, cfg.label_smoothing)
    return sequence_focal_loss(logits, target, pad_id, cfg.gamma, cfg.alpha0, cfg.time_weight,
                               lengths)
