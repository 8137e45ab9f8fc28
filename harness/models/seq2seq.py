"""The baseline encoder-decoder LSTM on nn.LSTM's fused kernel.

Encoder (SPEC "Encoder-Decoder Framework"): h_t^enc = LSTM_enc(h_{t-1}^enc, x_t), context
c = h_{T_x}^enc (the top layer's final state; both directions concatenated when bidirectional).
Decoder: h_t^dec = LSTM_dec(h_{t-1}^dec, [y_{t-1}; c]) started from the encoder's final states
(Sutskever et al. 2014; the context fed at every step as in Cho et al. 2014), and
y^_t = softmax(W_o h_t^dec + b_o).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from harness.config import ModelConfig
from tasks.base import BOS, EOS, PAD, Seq2SeqBatch


class Seq2Seq(nn.Module):
    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int) -> None:
        super().__init__()
        self.cfg = cfg
        directions = 2 if cfg.bidirectional else 1
        self.context_size = cfg.hidden * directions
        self.src_embed = nn.Embedding(src_vocab, cfg.embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, cfg.embed, padding_idx=PAD)
        self.encoder = nn.LSTM(cfg.embed, cfg.hidden, cfg.layers, batch_first=True,
                               bidirectional=cfg.bidirectional)
        # a bidirectional encoder's two final states per layer are mapped to the decoder's size
        self.bridge = nn.Linear(self.context_size, cfg.hidden) if directions == 2 else None
        self.decoder = nn.LSTM(cfg.embed + self.context_size, cfg.hidden, cfg.layers,
                               batch_first=True)
        self.out = nn.Linear(cfg.hidden, tgt_vocab)

    def encode(self, src: torch.Tensor, src_len: torch.Tensor):
        """Returns the context c [B, C] and the decoder's initial (h, c) [L, B, H]."""
        packed = pack_padded_sequence(self.src_embed(src), src_len.cpu(), batch_first=True,
                                      enforce_sorted=False)
        _, (h_n, c_n) = self.encoder(packed)
        if self.bridge is not None:
            layers, batch = self.cfg.layers, src.shape[0]
            h_n = h_n.view(layers, 2, batch, -1).transpose(1, 2).reshape(layers, batch, -1)
            c_n = c_n.view(layers, 2, batch, -1).transpose(1, 2).reshape(layers, batch, -1)
            context = h_n[-1]
            h_n, c_n = torch.tanh(self.bridge(h_n)), self.bridge(c_n)
        else:
            context = h_n[-1]
        return context, (h_n.contiguous(), c_n.contiguous())

    def decode_step(self, prev: torch.Tensor, context: torch.Tensor, state):
        """One decoder step for every example: prev [B] token ids -> logits [B, V], state."""
        step_in = torch.cat([self.tgt_embed(prev), context], dim=-1).unsqueeze(1)
        out, state = self.decoder(step_in, state)
        return self.out(out[:, 0]), state

    def forward(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """Teacher-forced logits [B, T, V]: the decoder reads y*_{t-1} (BOS first)."""
        context, state = self.encode(batch.src, batch.src_len)
        tgt_in = decoder_inputs(batch.tgt)
        emb = self.tgt_embed(tgt_in)
        steps = emb.shape[1]
        dec_in = torch.cat([emb, context.unsqueeze(1).expand(-1, steps, -1)], dim=-1)
        out, _ = self.decoder(dec_in, state)
        return self.out(out)

    def loss(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """L_TF = -sum_t log P(y_t | y*_<t, x), averaged over the batch's target tokens."""
        logits = self(batch)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tgt.reshape(-1),
                               ignore_index=PAD)

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, src_len: torch.Tensor, max_len: int) -> torch.Tensor:
        """Free-running greedy decoding: y^_t = argmax P(y | y^_<t, x); [B, <= max_len]."""
        context, state = self.encode(src, src_len)
        prev = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros_like(prev, dtype=torch.bool)
        tokens = []
        for _ in range(max_len):
            logits, state = self.decode_step(prev, context, state)
            prev = logits.argmax(-1).masked_fill(done, PAD)
            tokens.append(prev)
            done |= prev == EOS
            if bool(done.all()):
                break
        return torch.stack(tokens, dim=1)


def decoder_inputs(tgt: torch.Tensor) -> torch.Tensor:
    """[y_1 .. y_T, EOS] -> [BOS, y_1 .. y_T] (shifted right; PAD stays PAD)."""
    bos = torch.full_like(tgt[:, :1], BOS)
    return torch.cat([bos, tgt[:, :-1]], dim=1).masked_fill(tgt == PAD, PAD)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
