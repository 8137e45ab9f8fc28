"""A language model: embedding, LSTM stack, softmax over the vocabulary at every step.

  e_t = E'[x_t]                       E' = E with word-type embedding dropout (rate
                                      ``model.dropout.embedding``; Gal & Ghahramani 2016)
  h_t = LSTMStack(e_t)                every cell, dropout, skip and self-attention option of the
                                      zoo, per-layer hidden sizes (``model.hidden_sizes``)
  p(y_t | x_<=t) = softmax(W_o h_t^(L) + b_o)      W_o = E with ``model.tie_weights`` (Inan
                                      et al. 2017; Press & Wolf 2017)
  L = mean_t -log p(y*_t) (+ label smoothing or focal loss) + AR + TAR (Merity et al. 2017)

The stack's output dropout acts on every layer's output, the top one included, so it is also
the dropout before the softmax (Zaremba et al. 2014); with ``variational`` every mask is one per
sequence ("locked dropout"), as AWD-LSTM uses them.

Truncated BPTT (Zaremba et al. 2014; Merity et al. 2017): where a training batch continues the
previous batch's streams (``StreamBatch.reset`` False), the stack starts from that batch's final
states, detached; the carried states are part of the module's state dict (extra state), so a
resumed trial continues exactly. Evaluation carries its own states through a split (see
:func:`~lstm_harness.training.evaluate.evaluate_stream`) and leaves the training carry alone.

Initialisation as Zaremba et al. and Merity et al.: embedding and output weights U(-0.1, 0.1),
output bias 0; the LSTM layers as nn.LSTM.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.accuracy import token_accuracy
from lstm_harness.models.dropout import embedding_dropout
from lstm_harness.models.layers import State
from lstm_harness.models.losses import LossConfig, sequence_loss
from lstm_harness.models.regularization import TrueInputs, activation_regularization
from lstm_harness.models.seq2seq import rates_from
from lstm_harness.models.stack import LSTMStack
from lstm_harness.tasks.base import IGNORE, StreamBatch

INIT_RANGE = 0.1


class LanguageModel(nn.Module):
    """Token streams -> logits at every step [B, T, V] (see the module)."""

    attention = None  # no cross-attention (self-attention lives inside the stack's layers)

    def __init__(self, cfg: ModelConfig, vocab_size: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.rates = rates_from(cfg)
        self.embedding = nn.Embedding(vocab_size, cfg.embed)
        self_attention = cfg.attention is not None and cfg.attention.type == "self"
        self.stack = LSTMStack(cfg.embed, cfg, self.rates, self_attention=self_attention)
        self.head = nn.Linear(self.stack.output_size, vocab_size)
        nn.init.uniform_(self.embedding.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.uniform_(self.head.weight, -INIT_RANGE, INIT_RANGE)
        nn.init.zeros_(self.head.bias)
        if cfg.tie_weights:
            if self.stack.output_size != cfg.embed:
                raise ValueError(f"model.tie_weights: the top layer's size "
                                 f"({self.stack.output_size}) must equal model.embed "
                                 f"({cfg.embed}); set the last of model.hidden_sizes to "
                                 f"{cfg.embed}")
            self.head.weight = self.embedding.weight
        self._carry: list[State] | None = None

    # -- the computation ---------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        weight = embedding_dropout(self.embedding.weight, self.rates.embedding, self.training)
        return F.embedding(tokens, weight)

    def run(self, inputs: torch.Tensor, states: list[State] | None = None
            ) -> tuple[torch.Tensor, list[State], torch.Tensor, torch.Tensor]:
        """Logits [B, T, V], every layer's final state, the top layer's outputs after and
        before output dropout (for AR and TAR)."""
        dropped, finals, raw = self.stack.forward_with_raw(self.embed(inputs), None, states)
        return self.head(dropped), finals, dropped, raw

    def predict(self, inputs: torch.Tensor, states: list[State] | None = None
                ) -> tuple[torch.Tensor, list[State]]:
        """Logits and final states from ``states`` (None: zeros); the training carry is not
        touched."""
        logits, finals, _, _ = self.run(inputs, states)
        return logits, finals

    def forward(self, batch: StreamBatch) -> torch.Tensor:
        """Logits [B, T, V] of a batch from a zero state."""
        return self.predict(batch.inputs)[0]

    # -- what the training loop calls --------------------------------------------------------
    def _initial_states(self, batch: StreamBatch) -> list[State] | None:
        carry = self._carry
        if batch.reset or carry is None or carry[0][0].shape[0] != batch.size:
            return None
        return [(h.to(batch.inputs.device), c.to(batch.inputs.device)) for h, c in carry]

    def training_loss(self, batch: StreamBatch, loss_cfg: LossConfig, eps: float = 1.0,
                      feed: str = "argmax") -> tuple[torch.Tensor, torch.Tensor, TrueInputs]:
        """The configured token loss over the counted steps + AR + TAR; the final states are
        kept for the next batch of the same streams. ``eps`` and ``feed`` (scheduled
        sampling) do not apply: a language model always reads the true tokens."""
        logits, finals, dropped, raw = self.run(batch.inputs, self._initial_states(batch))
        self._carry = [(h.detach(), c.detach()) for h, c in finals]
        loss = sequence_loss(loss_cfg, logits, batch.targets, IGNORE)
        if loss_cfg.ar > 0 or loss_cfg.tar > 0:
            loss = loss + activation_regularization(dropped, raw, batch.counted, loss_cfg.ar,
                                                    loss_cfg.tar)
        return loss, logits, TrueInputs()

    def loss(self, batch: StreamBatch) -> torch.Tensor:
        """Mean cross entropy of the batch from a zero state (the monitors' loss)."""
        logits = self(batch)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.targets.reshape(-1),
                               ignore_index=IGNORE)

    @staticmethod
    def batch_accuracy(logits: torch.Tensor, batch: StreamBatch) -> float:
        """Share of counted targets whose argmax prediction is right."""
        return token_accuracy(logits, batch.targets, IGNORE)

    def select(self, task_index: int) -> None:
        if task_index != 0:
            raise ValueError("a language model trains one task (multi-task curricula need "
                             "sequence-to-sequence tasks)")

    # -- the carried states in checkpoints ---------------------------------------------------
    def get_extra_state(self) -> dict[str, torch.Tensor]:
        """The carried (h, c) of every layer, concatenated over layers: [B, sum of sizes]."""
        if self._carry is None:
            return {}
        return {"h": torch.cat([h for h, _ in self._carry], 1),
                "c": torch.cat([c for _, c in self._carry], 1)}

    def set_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        if not state:
            self._carry = None
            return
        sizes = [layer.output_size for layer in self.stack.layers]
        self._carry = list(zip(state["h"].split(sizes, 1), state["c"].split(sizes, 1),
                               strict=True))
