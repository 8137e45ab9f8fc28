"""A sequence classifier: LSTM stack over the whole sequence, one output per sequence.

  x_t                                 real-valued inputs [B, T, F] read as they are (a pixel
                                      per step for pixel sequences), or token ids embedded
                                      (E', with word-type embedding dropout ``model.dropout.
                                      embedding``; Gal & Ghahramani 2016)
  h_t = LSTMStack(x_t)                every cell, dropout, skip, bidirectional and
                                      self-attention option of the zoo, per-layer sizes
  r = m * h_T^(L)                     ``readout: last``: the last state (the top layer's final
                                      h at each sequence's true length), or with
                                      ``context: hierarchical`` combine(h_T^(1), ..., h_T^(L));
                                      m the output dropout mask (rate ``dropout.output``, the
                                      dropout before the output layer of Zaremba et al. 2014)
  r = 1/T sum_t h_t^(L)               ``readout: mean``: mean-pool of the top layer's (dropped)
                                      outputs over the true length
  y^ = W_o r + b_o                    logits over the classes (``output: classes``: cross
                                      entropy, with label smoothing or focal loss) or the
                                      predicted values (``output: values``: mean squared error)
  L = loss(y^, y*) + AR + TAR         activation regularisation of the top layer (Merity et al.
                                      2017), over the true steps

The setting of Le, Jaitly & Hinton (2015) and Krueger et al. (2017) for sequential pixels, and
of Hochreiter & Schmidhuber (1997) for the adding and temporal-order problems: the label is read
from the state after the last step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.accuracy import forecast_accuracy
from lstm_harness.models.dropout import embedding_dropout
from lstm_harness.models.losses import LossConfig, sequence_loss
from lstm_harness.models.regularization import TrueInputs, activation_regularization
from lstm_harness.models.seq2seq import Encoder, rates_from
from lstm_harness.tasks.base import IGNORE, SequenceBatch, SequenceTask


class SequenceClassifier(nn.Module):
    """Sequences -> class logits [B, C] or values [B, K] (see the module)."""

    attention = None  # no cross-attention (self-attention lives inside the stack's layers)

    def __init__(self, cfg: ModelConfig, task: SequenceTask) -> None:
        super().__init__()
        self.cfg = cfg
        self.rates = rates_from(cfg)
        self.classes = task.output == "classes"
        vocab = task.input_vocab_size
        self.embedding = nn.Embedding(vocab, cfg.embed) if vocab is not None else None
        input_size = cfg.embed if vocab is not None else task.input_features
        self.encoder = Encoder(input_size, cfg, self.rates)
        width = (self.encoder.stack.output_size if cfg.readout == "mean"
                 else self.encoder.context_size)
        self.head = nn.Linear(width, task.n_outputs)

    # -- the computation ---------------------------------------------------------------------
    def run(self, batch: SequenceBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                 torch.Tensor]:
        """Outputs [B, C|K], the top layer's outputs after and before output dropout
        [B, T, D] (for AR and TAR), and the mask of true steps [B, T]."""
        x = batch.inputs
        if self.embedding is not None:
            weight = embedding_dropout(self.embedding.weight, self.rates.embedding,
                                       self.training)
            x = F.embedding(x, weight)
        steps = x.shape[1]
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if batch.lengths is not None:
            mask = torch.arange(steps, device=x.device) < batch.lengths.to(x.device)[:, None]
        top, finals, raw = self.encoder.stack.forward_with_raw(x, batch.lengths)
        if self.cfg.readout == "mean":
            weights = mask.to(top.dtype).unsqueeze(-1)
            summary = (top * weights).sum(1) / weights.sum(1).clamp_min(1)
        else:  # the final states are not the dropped outputs: the output dropout here
            summary = F.dropout(self.encoder.summarize(finals), self.rates.output,
                                self.training)
        return self.head(summary), top, raw, mask

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        """Class logits [B, C] or predicted values [B, K]."""
        return self.run(batch)[0]

    def predict(self, batch: SequenceBatch) -> torch.Tensor:
        """Class probabilities [B, C] or predicted values [B, K] (what tasks score)."""
        out = self(batch)
        return torch.softmax(out.float(), dim=-1) if self.classes else out

    def _task_loss(self, out: torch.Tensor, batch: SequenceBatch,
                   loss_cfg: LossConfig | None) -> torch.Tensor:
        if not self.classes:
            return F.mse_loss(out, batch.labels.to(out.dtype))
        if loss_cfg is None:
            return F.cross_entropy(out, batch.labels)
        return sequence_loss(loss_cfg, out.unsqueeze(1), batch.labels.unsqueeze(1), IGNORE)

    # -- what the training loop calls --------------------------------------------------------
    def training_loss(self, batch: SequenceBatch, loss_cfg: LossConfig, eps: float = 1.0,
                      feed: str = "argmax") -> tuple[torch.Tensor, torch.Tensor, TrueInputs]:
        """The configured loss (cross entropy, label smoothing or focal for classes; mean
        squared error for values) + AR + TAR. ``eps`` and ``feed`` (scheduled sampling) do
        not apply: a classifier reads only true inputs."""
        out, dropped, raw, mask = self.run(batch)
        loss = self._task_loss(out, batch, loss_cfg)
        if loss_cfg.ar > 0 or loss_cfg.tar > 0:
            loss = loss + activation_regularization(dropped, raw, mask, loss_cfg.ar,
                                                    loss_cfg.tar)
        return loss, out, TrueInputs()

    def loss(self, batch: SequenceBatch) -> torch.Tensor:
        """Cross entropy (classes) or mean squared error (values) of the batch (the
        monitors' loss)."""
        return self._task_loss(self(batch), batch, None)

    def batch_accuracy(self, out: torch.Tensor, batch: SequenceBatch) -> float:
        """Classes: share of argmax predictions that are right. Values: share of predicted
        values within 0.25 of the label (the curricula's accuracy signal)."""
        if self.classes:
            return float((out.argmax(-1) == batch.labels).float().mean())
        return forecast_accuracy(out.unsqueeze(1), batch.labels.to(out.dtype).unsqueeze(1))

    def select(self, task_index: int) -> None:
        if task_index != 0:
            raise ValueError("a sequence classifier trains one task (multi-task curricula "
                             "need sequence-to-sequence tasks)")
