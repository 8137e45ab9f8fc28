"""A stack of LSTM layers with a skip scheme, the dropout family, sequence and step modes.

Skip schemes (``model.skip``):
- ``none``: h^(l) = LSTM^(l)(h_{t-1}^(l), h_t^(l-1)).
- ``residual`` (Kim et al. 2017): h_t^(l) = P h_t^(l-1) + LSTM^(l)(h_{t-1}^(l), h_t^(l-1)) in
  every layer (h^(0) = x), P the identity, or a learned linear projection where the sizes
  differ (the first layer when the input width is not the layer width).
- ``residual_step`` (a per-step residual connection; no single paper):
  h_t = h_{t-1} + LSTM(h_{t-1}, x_t) in every layer.
- ``highway`` (Zhang et al. 2016): h_t = T * h~_t + (1 - T) * h_{t-1} in every layer.
- ``dense`` (DenseNet-style): layer l reads [h_t^(0); h_t^(1); ...; h_t^(l-1)] (h^(0) = x).

The fused kernel is used for every layer unless the cell or a technique needs its own step
(LayerNorm LSTM, recurrent dropout, zoneout, highway, residual_step, self-attention).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.models.dropout import DropoutRates, bernoulli_mask, sequence_dropout
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer, State

if TYPE_CHECKING:  # annotations only: the config layer composes the monitor configs, which
    # import this module (diagnostics/gates.py)
    from lstm_harness.config import ModelConfig


def needs_custom_step(cfg: ModelConfig, rates: DropoutRates, self_attention: bool) -> bool:
    return (cfg.cell != "lstm" or rates.needs_custom_step() or self_attention
            or cfg.skip in ("highway", "residual_step"))


class LSTMStack(nn.Module):
    def __init__(self, input_size: int, cfg: ModelConfig, rates: DropoutRates,
                 bidirectional: bool = False, self_attention: bool = False) -> None:
        super().__init__()
        self.cfg, self.rates, self.skip = cfg, rates, cfg.skip
        self.input_size = input_size
        self.custom = needs_custom_step(cfg, rates, self_attention)
        self.layers = nn.ModuleList()
        self.projections = nn.ModuleList()
        size = input_size
        read = input_size  # what a dense layer reads: the input and every lower layer's output
        directions = 2 if bidirectional else 1
        for hidden in cfg.layer_sizes():
            width = hidden * directions
            in_size = read if cfg.skip == "dense" else size
            self.layers.append(self._layer(in_size, hidden, bidirectional, self_attention))
            if cfg.skip == "residual" and size != width:
                self.projections.append(nn.Linear(size, width, bias=False))
            else:
                self.projections.append(nn.Identity())
            size = width
            read += width
        self.output_size = size

    def _layer(self, in_size: int, hidden: int, bidirectional: bool,
               self_attention: bool) -> nn.Module:
        cfg, rates = self.cfg, self.rates
        if not self.custom:
            return FusedLSTMLayer(in_size, hidden, bidirectional, rates)

        def one() -> CustomLSTMLayer:
            return CustomLSTMLayer(
                in_size, hidden, rates, layernorm=cfg.cell == "layernorm",
                highway=cfg.skip == "highway", residual_step=cfg.skip == "residual_step",
                self_attention=self_attention)
        return BidirectionalLayer(one(), one()) if bidirectional else one()

    # -- whole sequences -------------------------------------------------------------------
    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                states: list[State] | None = None) -> tuple[torch.Tensor, list[State]]:
        """x [B, T, X] -> top outputs [B, T, D] and every layer's final state."""
        top, finals, _ = self.forward_with_raw(x, lengths, states)
        return top, finals

    def forward_with_raw(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                         states: list[State] | None = None
                         ) -> tuple[torch.Tensor, list[State], torch.Tensor]:
        """As :meth:`forward`, and the top layer's outputs before output dropout (what
        temporal activation regularisation reads, Merity et al. 2017)."""
        rates, training = self.rates, self.training
        inputs = [sequence_dropout(x, rates.input, rates.variational, training)]
        finals: list[State] = []
        layer_in = raw = inputs[0]
        for index, layer in enumerate(self.layers):
            if self.skip == "dense":
                layer_in = torch.cat(inputs, dim=2)
            out, final = layer(layer_in, None if states is None else states[index], lengths)
            if self.skip == "residual":
                out = out + self.projections[index](layer_in)
            raw = out
            out = sequence_dropout(out, rates.output, rates.variational, training)
            finals.append(final)
            inputs.append(out)
            layer_in = out
        return layer_in, finals, raw

    # -- one step at a time (decoders) -----------------------------------------------------
    def begin(self, batch: int, device: torch.device) -> None:
        """Draw every mask that stays fixed for a sequence, before the first ``step``."""
        for layer in self.layers:
            layer.begin(batch, device)
        rates, like = self.rates, next(self.parameters())
        self._step_masks: dict[str, list[torch.Tensor] | None] = {"input": None, "output": None}
        if self.training and rates.variational:
            if rates.input > 0:
                self._step_masks["input"] = [
                    bernoulli_mask((batch, self.input_size), rates.input, like)]
            if rates.output > 0:
                self._step_masks["output"] = [
                    bernoulli_mask((batch, layer.output_size), rates.output, like)
                    for layer in self.layers]

    def _drop(self, x: torch.Tensor, kind: str, index: int) -> torch.Tensor:
        p = getattr(self.rates, kind)
        if not self.training or p <= 0:
            return x
        masks = self._step_masks[kind]
        if masks is not None:
            return x * masks[index]
        return F.dropout(x, p, training=True)

    def step(self, x_t: torch.Tensor, states: list[State]) -> tuple[torch.Tensor, list[State]]:
        """One time step for every layer: x_t [B, X] -> top output [B, D], new states."""
        inputs = [self._drop(x_t, "input", 0)]
        layer_in = inputs[0]
        new_states = []
        for index, layer in enumerate(self.layers):
            if self.skip == "dense":
                layer_in = torch.cat(inputs, dim=1)
            out, state = layer.step(layer_in, states[index])
            if self.skip == "residual":
                out = out + self.projections[index](layer_in)
            out = self._drop(out, "output", index)
            new_states.append(state)
            inputs.append(out)
            layer_in = out
        return layer_in, new_states
