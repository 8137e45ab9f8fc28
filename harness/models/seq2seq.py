"""Encoder-decoder LSTMs: tokens to tokens (:class:`Seq2Seq`) and values to values
(:class:`Forecaster`), sharing one encoder/decoder core with every option of the zoo.

Encoder (Sutskever et al. 2014; Cho et al. 2014): h_t^enc = LSTM_enc(h_{t-1}^enc, x_t), one stack
per input stream. Context (``model.context``): ``last`` c = h_{T_x}^enc of the top layer;
``hierarchical`` c = combine(h_{T_x}^(1), ..., h_{T_x}^(L)) over the layers with ``combine``
in concat | sum | mean | project (a learned linear map of the concatenation). Several input
streams (multi-modal) are fused with ``fuse``: concat, sum (after a projection to a common size)
or attention over modalities (softmax of v^T tanh(W c_m) over streams m).

Decoder: h_t^dec = LSTM_dec(h_{t-1}^dec, [y_{t-1}; c]) started from the encoder's final states,
y^_t = softmax(W_o h_t^dec + b_o). With attention (``model.attention``):
- bahdanau: c_t = attend(h_{t-1}^dec); input [y_{t-1}; c_t]; output from [h_t^dec; c_t];
- luong / local: c_t = attend(h_t^dec), h~_t = tanh(W_c [c_t; h_t]), output from h~_t, and with
  input feeding the next input is [y_{t-1}; h~_{t-1}];
- coverage adds lambda * sum_t sum_i min(alpha_{t,i}, c_{t,i}) to the loss (See et al. 2017);
- self: intra-attention inside the encoder's LSTM layers (Cheng et al. 2016).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.accuracy import forecast_accuracy, token_accuracy
from lstm_harness.models.attention import Attention, LuongOutput
from lstm_harness.models.dropout import DropoutRates
from lstm_harness.models.layers import State
from lstm_harness.models.losses import LossConfig, sequence_loss
from lstm_harness.models.stack import LSTMStack
from lstm_harness.tasks.base import BOS, EOS, PAD, ForecastBatch, Seq2SeqBatch


def rates_from(cfg: ModelConfig) -> DropoutRates:
    """The model's own copy of the suite's dropout rates (a dropout schedule changes them in
    place)."""
    return cfg.dropout.model_copy()


class Encoder(nn.Module):
    """One input stream: its stack and its context vector."""

    def __init__(self, input_size: int, cfg: ModelConfig, rates: DropoutRates) -> None:
        super().__init__()
        self_attention = cfg.attention is not None and cfg.attention.type == "self"
        self.stack = LSTMStack(input_size, cfg, rates, cfg.bidirectional, self_attention)
        self.cfg = cfg
        width = self.stack.output_size
        tops = [layer.output_size for layer in self.stack.layers]  # every layer's width
        self.project = None
        if cfg.context == "last":
            self.context_size = width
        elif cfg.combine == "concat":
            self.context_size = sum(tops)
        elif cfg.combine == "project":
            self.context_size = width
            self.project = nn.Linear(sum(tops), width)
        else:
            if len(set(tops)) > 1:
                raise ValueError(f"model.combine: {cfg.combine} adds the layers' final states, "
                                 f"which needs equal sizes (got {tops}); use concat or project")
            self.context_size = width

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None):
        outputs, finals = self.stack(x, lengths)
        return outputs, finals, self.summarize(finals)

    def summarize(self, finals: list[State]) -> torch.Tensor:
        """The context c: the top layer's final h, or combine(h^(1), ..., h^(L))."""
        tops = [h for h, _ in finals]
        if self.cfg.context == "last":
            return tops[-1]
        if self.cfg.combine == "concat":
            return torch.cat(tops, dim=1)
        if self.cfg.combine == "project":
            return self.project(torch.cat(tops, dim=1))
        if self.cfg.combine == "sum":
            return torch.stack(tops).sum(0)
        return torch.stack(tops).mean(0)


class ModalityFusion(nn.Module):
    """c = fuse(c^1, ..., c^M): concat, sum of projections, or attention over modalities."""

    def __init__(self, sizes: list[int], how: str, width: int) -> None:
        super().__init__()
        self.how = how
        if how == "concat" or len(sizes) == 1:
            self.how = "concat"
            self.output_size = sum(sizes)
            return
        self.output_size = width
        self.proj = nn.ModuleList(nn.Linear(s, width) for s in sizes)
        if how == "attention":
            self.score = nn.Sequential(nn.Linear(width, width), nn.Tanh(),
                                       nn.Linear(width, 1, bias=False))

    def forward(self, contexts: list[torch.Tensor]) -> torch.Tensor:
        if self.how == "concat":
            return torch.cat(contexts, dim=1)
        projected = torch.stack([p(c) for p, c in zip(self.proj, contexts, strict=True)], 1)
        if self.how == "sum":
            return projected.sum(1)
        weights = torch.softmax(self.score(projected).squeeze(-1), dim=1)  # [B, M]
        self.last_weights = weights.detach()
        return (weights.unsqueeze(-1) * projected).sum(1)


@dataclass
class Memory:
    """What the decoder reads: encoder states of the first stream, mask, context, init."""

    keys: torch.Tensor  # [B, S, D]
    mask: torch.Tensor  # [B, S] True = real position
    lengths: torch.Tensor  # [B]
    context: torch.Tensor  # [B, C]
    init: list[State]
    proj_keys: torch.Tensor | None = None


@dataclass
class DecoderState:
    states: list[State]
    feed: torch.Tensor | None = None  # h~_{t-1} for Luong input feeding
    coverage: torch.Tensor | None = None
    coverage_loss: list[torch.Tensor] = field(default_factory=list)
    alphas: list[torch.Tensor] = field(default_factory=list)
    truth_fraction: float = 1.0  # share of decoder inputs that were ground truth


class EncoderDecoder(nn.Module):
    """The shared core; subclasses give embeddings, the head and the loss."""

    def __init__(self, cfg: ModelConfig, stream_sizes: list[int], tgt_input_size: int,
                 out_features: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.rates = rates_from(cfg)
        self.encoders = nn.ModuleList(Encoder(s, cfg, self.rates) for s in stream_sizes)
        key_size = self.encoders[0].stack.output_size
        self.fusion = ModalityFusion([e.context_size for e in self.encoders], cfg.fuse, key_size)
        self.bridge = None
        if key_size != cfg.hidden:  # bidirectional encoder -> decoder size
            self.bridge = nn.Linear(key_size, cfg.hidden)
        att = cfg.attention
        self.attention = None
        self.luong_out = None
        if att is not None and att.type != "self":
            query = cfg.hidden
            self.attention = Attention(att.type, att.score, query, key_size, window=att.window,
                                       coverage=att.coverage)
            if att.type == "bahdanau":
                dec_in, feat = tgt_input_size + key_size, cfg.hidden + key_size
            else:
                self.luong_out = LuongOutput(key_size, cfg.hidden)
                dec_in = tgt_input_size + (cfg.hidden if att.input_feeding else 0)
                feat = cfg.hidden
        else:
            dec_in, feat = tgt_input_size + self.fusion.output_size, cfg.hidden
        self.decoder = LSTMStack(dec_in, cfg, self.rates)
        self.head = nn.Linear(feat, out_features)

    # -- encoder -------------------------------------------------------------------------
    def encode(self, streams: list[torch.Tensor], lengths: torch.Tensor | None) -> Memory:
        outs = [enc(x, lengths if i == 0 else None)
                for i, (enc, x) in enumerate(zip(self.encoders, streams, strict=True))]
        keys, finals, _ = outs[0]
        context = self.fusion([c for _, _, c in outs])
        batch, steps = keys.shape[:2]
        if lengths is None:
            lengths = torch.full((batch,), steps, dtype=torch.long, device=keys.device)
        lengths = lengths.to(keys.device)
        mask = torch.arange(steps, device=keys.device)[None, :] < lengths[:, None]
        init = finals
        if self.bridge is not None:
            init = [(torch.tanh(self.bridge(h)), self.bridge(c)) for h, c in finals]
        proj = self.attention.precompute(keys) if self.attention is not None else None
        return Memory(keys, mask, lengths, context, init, proj)

    # -- decoder -------------------------------------------------------------------------
    def start(self, memory: Memory) -> DecoderState:
        batch = memory.keys.shape[0]
        self.decoder.begin(batch, memory.keys.device)
        state = DecoderState(states=list(memory.init))
        att = self.cfg.attention
        if self.luong_out is not None and att.input_feeding:
            state.feed = memory.keys.new_zeros(batch, self.cfg.hidden)
        if att is not None and att.coverage:
            state.coverage = torch.zeros_like(memory.mask, dtype=memory.keys.dtype)
        return state

    def _attend(self, query: torch.Tensor, memory: Memory, state: DecoderState):
        context, alpha = self.attention(query, memory.keys, memory.mask, memory.proj_keys,
                                        state.coverage, memory.lengths)
        if state.coverage is not None:
            state.coverage_loss.append(
                Attention.coverage_loss(alpha, state.coverage, memory.mask))
            state.coverage = state.coverage + alpha
        state.alphas.append(alpha)
        return context

    def step(self, x_emb: torch.Tensor, memory: Memory, state: DecoderState) -> torch.Tensor:
        """One decoder step from the embedded previous output; returns head features."""
        if self.attention is None:
            out, state.states = self.decoder.step(torch.cat([x_emb, memory.context], 1),
                                                  state.states)
            return out
        if self.luong_out is None:  # bahdanau: attend with h_{t-1}
            context = self._attend(state.states[-1][0], memory, state)
            out, state.states = self.decoder.step(torch.cat([x_emb, context], 1), state.states)
            return torch.cat([out, context], 1)
        step_in = x_emb if state.feed is None else torch.cat([x_emb, state.feed], 1)
        out, state.states = self.decoder.step(step_in, state.states)
        attentional = self.luong_out(self._attend(out, memory, state), out)
        if state.feed is not None:
            state.feed = attentional
        return attentional

    def teacher_forced(self, memory: Memory, tgt_emb: torch.Tensor):
        """Head features [B, T, F] given the true previous outputs, and the decoder state
        (coverage losses, attention weights)."""
        if self.attention is None:  # one call over the whole sequence: the fast path
            steps = tgt_emb.shape[1]
            ctx = memory.context.unsqueeze(1).expand(-1, steps, -1)
            out, _ = self.decoder(torch.cat([tgt_emb, ctx], 2), states=memory.init)
            return out, DecoderState(states=[])
        state = self.start(memory)
        feats = [self.step(tgt_emb[:, t], memory, state) for t in range(tgt_emb.shape[1])]
        return torch.stack(feats, 1), state

    def scheduled_sampling(self, memory: Memory, truth: torch.Tensor, eps: float,
                           embed, predict, real: torch.Tensor) -> tuple[torch.Tensor,
                                                                        DecoderState]:
        """Scheduled sampling (Bengio et al. 2015): at every step and for every example the
        decoder reads the ground truth y*_{t-1} with probability eps, else the model's own
        previous prediction ``predict(output)`` (no gradient through the choice).

        truth: the teacher-forced decoder inputs [B, T(, K)]; real: [B, T] bool, positions whose
        input counts (padding excluded). Returns head outputs [B, T, ...] and the state, whose
        ``truth_fraction`` is the share of counted inputs that were ground truth.
        """
        state = self.start(memory)
        batch, steps = truth.shape[:2]
        prev = truth[:, 0]
        outputs = []
        from_truth = counted = 0
        for t in range(steps):
            out = self.output(self.output_dropout(self.step(embed(prev), memory, state)))
            outputs.append(out)
            if t + 1 == steps:
                break
            coin = torch.rand(batch, device=truth.device) < eps
            coin_b = coin.view(batch, *([1] * (truth.dim() - 2)))
            prev = torch.where(coin_b, truth[:, t + 1], predict(out.detach()))
            counted_now = real[:, t + 1]
            from_truth += int((coin & counted_now).sum())
            counted += int(counted_now.sum())
        state.truth_fraction = from_truth / counted if counted else 1.0
        return torch.stack(outputs, 1), state

    def output(self, feats: torch.Tensor) -> torch.Tensor:
        """The output layer (W_o h + b_o) of the task being trained."""
        return self.head(feats)

    def output_dropout(self, feats: torch.Tensor) -> torch.Tensor:
        return F.dropout(feats, self.rates.output, self.training) if self.rates.output else feats

    def coverage_penalty(self, state: DecoderState, token_mask: torch.Tensor) -> torch.Tensor:
        """lambda * mean over target tokens of sum_i min(alpha_{t,i}, c_{t,i})."""
        if not state.coverage_loss:
            return token_mask.new_zeros((), dtype=torch.float)
        per_step = torch.stack(state.coverage_loss, 1)  # [B, T]
        weight = self.cfg.attention.coverage_weight
        return weight * (per_step * token_mask).sum() / token_mask.sum().clamp(min=1)


class TaskIO(nn.Module):
    """A task's own source and target embeddings and output layer (multi-task models)."""

    def __init__(self, embed: int, features: int, src_vocab: int, tgt_vocab: int) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(src_vocab, embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, embed, padding_idx=PAD)
        self.head = nn.Linear(features, tgt_vocab)


class Seq2Seq(EncoderDecoder):
    """Tokens to tokens. ``extra_vocabs``: (source, target) vocabulary sizes of further tasks
    trained with the same encoder and decoder (multi-task curriculum); a task whose
    vocabularies differ from the first task's gets its own embeddings and output layer, the
    others share the first task's. ``select(i)`` chooses the task the next calls are for."""

    def __init__(self, cfg: ModelConfig, src_vocab: int, tgt_vocab: int,
                 extra_vocabs: list[tuple[int, int]] | None = None) -> None:
        super().__init__(cfg, [cfg.embed], cfg.embed, tgt_vocab)
        self.src_embed = nn.Embedding(src_vocab, cfg.embed, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab, cfg.embed, padding_idx=PAD)
        self.task_io = nn.ModuleList()
        self.io_of = [None]  # task index -> index in task_io (None: the first task's)
        for src, tgt in extra_vocabs or []:
            if (src, tgt) == (src_vocab, tgt_vocab):
                self.io_of.append(None)
            else:
                self.io_of.append(len(self.task_io))
                self.task_io.append(TaskIO(cfg.embed, self.head.in_features, src, tgt))
        self.active = 0

    def select(self, task_index: int) -> None:
        if not 0 <= task_index < len(self.io_of):
            raise ValueError(f"task index {task_index} out of range (model has "
                             f"{len(self.io_of)} tasks)")
        self.active = task_index

    def _io(self):
        index = self.io_of[self.active]
        return self if index is None else self.task_io[index]

    def embed_src(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._io().src_embed(tokens)

    def embed_tgt(self, tokens: torch.Tensor) -> torch.Tensor:
        return self._io().tgt_embed(tokens)

    def output(self, feats: torch.Tensor) -> torch.Tensor:
        return self._io().head(feats)

    def encode_batch(self, src: torch.Tensor, src_len: torch.Tensor) -> Memory:
        return self.encode([self.embed_src(src)], src_len)

    def forward_with_state(self, batch: Seq2SeqBatch, eps: float = 1.0,
                           feed: str = "argmax"):
        """Logits [B, T, V] and the decoder state; ``eps`` < 1: scheduled sampling, feeding
        back the ``argmax`` or a ``sample`` of the model's previous output."""
        memory = self.encode_batch(batch.src, batch.src_len)
        truth = decoder_inputs(batch.tgt)
        if eps >= 1.0:
            feats, state = self.teacher_forced(memory, self.embed_tgt(truth))
            return self.output(self.output_dropout(feats)), state

        def predict(logits: torch.Tensor) -> torch.Tensor:
            if feed == "sample":
                return torch.multinomial(torch.softmax(logits, -1), 1).squeeze(1)
            return logits.argmax(-1)
        return self.scheduled_sampling(memory, truth, eps, self.embed_tgt, predict,
                                       truth != PAD)

    def training_loss(self, batch: Seq2SeqBatch, loss_cfg: LossConfig, eps: float = 1.0,
                      feed: str = "argmax"):
        """The configured token loss (cross entropy with label smoothing, or sequence focal
        loss) + the coverage penalty; returns (loss, logits, decoder state)."""
        logits, state = self.forward_with_state(batch, eps, feed)
        loss = sequence_loss(loss_cfg, logits, batch.tgt, PAD, lengths=batch.tgt_len)
        return loss + self.coverage_penalty(state, (batch.tgt != PAD).float()), logits, state

    @staticmethod
    def batch_accuracy(logits: torch.Tensor, batch: Seq2SeqBatch) -> float:
        """Teacher-forced token accuracy of a training batch (the curricula's signal)."""
        return token_accuracy(logits, batch.tgt, PAD)

    def forward(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """Teacher-forced logits [B, T, V]: the decoder reads y*_{t-1} (BOS first)."""
        return self.forward_with_state(batch)[0]

    def loss(self, batch: Seq2SeqBatch) -> torch.Tensor:
        """L_TF = -sum_t log P(y_t | y*_<t, x) per target token (+ the coverage penalty)."""
        logits, state = self.forward_with_state(batch)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.tgt.reshape(-1),
                             ignore_index=PAD)
        return ce + self.coverage_penalty(state, (batch.tgt != PAD).float())

    @torch.no_grad()
    def greedy(self, src: torch.Tensor, src_len: torch.Tensor, max_len: int,
               return_attention: bool = False):
        """Free-running greedy decoding: y^_t = argmax P(y | y^_<t, x); [B, <= max_len]."""
        memory = self.encode_batch(src, src_len)
        state = self.start(memory)
        prev = torch.full((src.shape[0],), BOS, dtype=torch.long, device=src.device)
        done = torch.zeros_like(prev, dtype=torch.bool)
        tokens = []
        for _ in range(max_len):
            feats = self.step(self.embed_tgt(prev), memory, state)
            prev = self.output(feats).argmax(-1).masked_fill(done, PAD)
            tokens.append(prev)
            done |= prev == EOS
            if bool(done.all()):
                break
        out = torch.stack(tokens, dim=1)
        if return_attention:
            alphas = torch.stack(state.alphas, 1) if state.alphas else None
            return out, alphas
        return out


class Forecaster(EncoderDecoder):
    """Values to values: history (+ covariate streams) -> the next ``horizon`` steps.

    The first ``targets`` columns of the history are the forecast variables; the decoder reads
    the previous value y_{t-1} (the last observed value first) through a linear map.
    """

    def __init__(self, cfg: ModelConfig, history_features: int, targets: int,
                 covariate_features: list[int] | None = None) -> None:
        streams = [history_features, *(covariate_features or [])]
        super().__init__(cfg, [cfg.embed] * len(streams), cfg.embed, targets)
        self.targets = targets
        self.inputs = nn.ModuleList(nn.Linear(f, cfg.embed) for f in streams)
        self.tgt_proj = nn.Linear(targets, cfg.embed)

    def encode_batch(self, batch: ForecastBatch) -> Memory:
        streams = [batch.history, *batch.covariates]
        return self.encode([proj(x) for proj, x in zip(self.inputs, streams, strict=True)],
                           None)

    def forward_with_state(self, batch: ForecastBatch, eps: float = 1.0):
        """Predictions [B, T, K]; ``eps`` < 1: scheduled sampling on the previous values."""
        memory = self.encode_batch(batch)
        last = batch.history[:, -1:, : self.targets]
        prev = torch.cat([last, batch.target[:, :-1]], dim=1)  # y*_{t-1}
        if eps >= 1.0:
            feats, state = self.teacher_forced(memory, self.tgt_proj(prev))
            return self.head(self.output_dropout(feats)), state
        return self.scheduled_sampling(memory, prev, eps, self.tgt_proj, lambda out: out,
                                       batch.step_mask)

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        return self.forward_with_state(batch)[0]

    def select(self, task_index: int) -> None:
        if task_index != 0:
            raise ValueError("a forecaster trains one task (multi-task curricula need "
                             "token tasks)")

    def loss(self, batch: ForecastBatch) -> torch.Tensor:
        """Mean squared error of the teacher-forced predictions (+ the coverage penalty)."""
        pred, state = self.forward_with_state(batch)
        return self._mse(pred, batch, state)

    def _mse(self, pred: torch.Tensor, batch: ForecastBatch, state: DecoderState
             ) -> torch.Tensor:
        """1/(N K) sum over counted steps of ||y^_t - y*_t||^2, N the counted steps."""
        mask = batch.step_mask.float()
        per_step = ((pred - batch.target) ** 2).mean(-1)
        mse = (per_step * mask).sum() / mask.sum().clamp(min=1)
        return mse + self.coverage_penalty(state, mask)

    def training_loss(self, batch: ForecastBatch, loss_cfg: LossConfig, eps: float = 1.0,
                      feed: str = "argmax"):
        """L = 1/(T K) sum_t ||y^_t - y*_t||^2 (+ the coverage penalty) with scheduled
        sampling when eps < 1 (the previous prediction is fed back; ``feed`` has no meaning
        for real values). Token losses (focal, label smoothing) are refused."""
        if loss_cfg.kind != "ce" or loss_cfg.label_smoothing > 0:
            raise ValueError(f"loss kind '{loss_cfg.kind}' with label_smoothing "
                             f"{loss_cfg.label_smoothing} applies to token tasks; a forecasting "
                             "task trains on the mean squared error (leave train.loss at its "
                             "default)")
        pred, state = self.forward_with_state(batch, eps)
        return self._mse(pred, batch, state), pred, state

    @staticmethod
    def batch_accuracy(preds: torch.Tensor, batch: ForecastBatch) -> float:
        """Share of forecast values within the curricula's tolerance (see
        :func:`forecast_accuracy`)."""
        return forecast_accuracy(preds, batch.target, batch.step_mask)

    @torch.no_grad()
    def free_running(self, batch: ForecastBatch, horizon: int) -> torch.Tensor:
        """Predict ``horizon`` steps feeding back each prediction: [B, horizon, targets]."""
        memory = self.encode_batch(batch)
        state = self.start(memory)
        prev = batch.history[:, -1, : self.targets]
        preds = []
        for _ in range(horizon):
            prev = self.head(self.step(self.tgt_proj(prev), memory, state))
            preds.append(prev)
        return torch.stack(preds, 1)


def decoder_inputs(tgt: torch.Tensor) -> torch.Tensor:
    """[y_1 .. y_T, EOS] -> [BOS, y_1 .. y_T] (shifted right; PAD stays PAD)."""
    bos = torch.full_like(tgt[:, :1], BOS)
    return torch.cat([bos, tgt[:, :-1]], dim=1).masked_fill(tgt == PAD, PAD)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
