"""Sequence-level training: the model is scored on whole decoded sentences with a sentence
reward R(y, y*) (BLEU or ROUGE on token ids, ``training/rewards.py``), not on each next token
(Williams 1992; Ranzato et al. 2016; Rennie et al. 2017; Shen et al. 2016). The protocol is
the standard one: ``pretrain_steps`` of cross entropy (or ``train.init_from`` another trial's
cross-entropy model), then the sequence-level loss.

For a source x with reference y*, K candidates y_k are drawn from the model pi(y | x)
(``samples``, ``temperature``, ``top_k``):

- ``reinforce`` (Williams 1992; Ranzato et al. 2016): L = -1/K sum_k (R(y_k) - b_k) log pi(y_k|x),
  whose gradient is the REINFORCE estimate (R - b) grad log pi(y). Baseline b: a moving average
  of the mean reward, b <- d b + (1 - d) mean R (``baseline_decay`` d; the b of a step is the
  one before its update), or leave-one-out b_k = 1/(K-1) sum_{j != k} R(y_j).
- ``scst`` (Rennie et al. 2017, self-critical): as reinforce with b = R(y^), y^ the model's
  greedy decode (test-time inference, dropout off): a sample is pushed up exactly when it
  beats greedy.
- ``mrt`` (Shen et al. 2016, minimum risk training): over the candidate set S(x) (the K samples,
  plus y* with ``mrt_reference``; duplicates removed), Q(y|x) = P(y|x)^alpha /
  sum_{y' in S} P(y'|x)^alpha (``mrt_alpha``) and L = sum_{y in S} Q(y|x) (1 - R(y, y*)).
- ``mixer`` (Ranzato et al. 2016): the first Delta target tokens are trained with cross entropy
  (teacher forced), the rest of the sentence is sampled and trained with REINFORCE (moving
  average baseline); Delta starts at ``mixer_start`` (default: the longest target) and moves
  ``mixer_delta`` tokens toward the start every ``mixer_every`` steps of this stage.
- ``mix_lambda`` = lambda > 0 (reinforce, scst, mrt): L = lambda L_CE + (1 - lambda) L_seq.

Logged per step (``seq.*``): mean reward of the candidates, mean baseline, variance of the
advantage, the policy's entropy per token estimated from the samples (-mean log pi of the
sampled tokens), the mean number of distinct candidates per source, and MIXER's boundary.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from lstm_harness.models.losses import LossConfig, token_cross_entropy
from lstm_harness.tasks.base import EOS, PAD, Seq2SeqBatch
from lstm_harness.training.decoding import Decoded, greedy, sample, sequence_logprob
from lstm_harness.training.rewards import token_reward


def content_lengths(tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Tokens before the EOS (``lengths`` counts the EOS where one was produced)."""
    last = tokens.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    return lengths - ((lengths > 0) & (last == EOS)).long()


def first_occurrence(tokens: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """[B, k] True for the first of each group of equal rows among each source's ``k`` rows
    (example-major): rows are equal when their lengths and tokens up to that length agree."""
    n, width = tokens.shape
    masked = tokens.masked_fill(torch.arange(width, device=tokens.device) >= lengths[:, None],
                                PAD).view(n // k, k, width)
    lens = lengths.view(n // k, k)
    same = (masked[:, :, None] == masked[:, None]).all(-1) & (lens[:, :, None] == lens[:, None])
    earlier = torch.ones(k, k, dtype=torch.bool, device=tokens.device).tril(-1)  # i > j
    return ~(same & earlier).any(-1)  # row i equals no earlier row j


def distinct_counts(tokens: torch.Tensor, lengths: torch.Tensor, k: int) -> torch.Tensor:
    """Per source, the number of distinct sequences among its ``k`` rows. [B]"""
    return first_occurrence(tokens, lengths, k).sum(1)


def policy_gradient_loss(logp: torch.Tensor, reward: torch.Tensor,
                         baseline: torch.Tensor) -> torch.Tensor:
    """L = -mean_i (R_i - b_i) log pi(y_i): its gradient is the REINFORCE estimate of
    -grad E[R] (the advantage carries no gradient)."""
    return -((reward - baseline).detach() * logp).mean()


def leave_one_out_baseline(reward: torch.Tensor) -> torch.Tensor:
    """b_k = 1/(K-1) sum_{j != k} R_j over the K samples of each source: [B, K] -> [B, K]."""
    k = reward.shape[1]
    return (reward.sum(1, keepdim=True) - reward) / (k - 1)


def mrt_weights(logp: torch.Tensor, alpha: float, keep: torch.Tensor) -> torch.Tensor:
    """Q(y|x) = P(y|x)^alpha / sum_{y' in S} P(y'|x)^alpha = softmax(alpha log P) over each
    source's candidates that are kept (duplicates get 0): [B, G] -> [B, G]."""
    return torch.softmax((alpha * logp).masked_fill(~keep, float("-inf")), 1)


def mrt_loss(q: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
    """L = mean over sources of sum_y Q(y|x) (1 - R(y, y*))."""
    return (q * (1 - reward)).sum(1).mean()


class SequenceObjective:
    """The sequence-level loss of a trial, with its state (the moving-average baseline)."""

    def __init__(self, cfg: LossConfig, max_len: int, task_reward: str | None = None) -> None:
        self.cfg, self.max_len = cfg, max_len
        self.reward_name = task_reward if cfg.reward == "task" else cfg.reward
        if cfg.sequence_level and self.reward_name is None:
            raise ValueError("train.loss.reward: 'task', but the task declares no default "
                             "reward; name one: bleu, rouge1, rouge2, rougeL")
        self.average: float | None = None  # moving-average baseline

    def active(self, step: int) -> bool:
        return self.cfg.sequence_level and step >= self.cfg.pretrain_steps

    # -- rewards -------------------------------------------------------------------------------
    def rewards(self, tokens: torch.Tensor, lengths: torch.Tensor,
                batch: Seq2SeqBatch) -> torch.Tensor:
        """R(y, y*) of each candidate row (example-major, the same number per source: the
        rewards take each source's reference once)."""
        return token_reward(self.reward_name, tokens, content_lengths(tokens, lengths),
                            batch.tgt, batch.tgt_len - 1)  # tgt_len counts the EOS

    def _moving_baseline(self, rewards: torch.Tensor) -> torch.Tensor:
        before = float(rewards.mean()) if self.average is None else self.average
        d = self.cfg.baseline_decay
        self.average = d * before + (1 - d) * float(rewards.mean())
        return torch.full_like(rewards, before)

    # -- objectives ----------------------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: Seq2SeqBatch, step: int
             ) -> tuple[torch.Tensor, dict[str, float]]:
        kind = self.cfg.kind
        if kind == "mixer":
            return self.mixer(model, batch, step)
        seq_loss, stats = self.mrt(model, batch) if kind == "mrt" else \
            self.policy_gradient(model, batch, self_critical=kind == "scst")
        lam = self.cfg.mix_lambda
        if lam > 0:
            ce = token_cross_entropy(model(batch), batch.tgt, PAD)
            seq_loss = lam * ce + (1 - lam) * seq_loss
            stats["seq.ce"] = float(ce.detach())
        return seq_loss, stats

    def _sample(self, model, batch: Seq2SeqBatch) -> Decoded:
        return sample(model, batch.src, batch.src_len, self.max_len, k=self.cfg.samples,
                      temperature=self.cfg.temperature, top_k=self.cfg.top_k)

    def policy_gradient(self, model, batch: Seq2SeqBatch, self_critical: bool
                        ) -> tuple[torch.Tensor, dict[str, float]]:
        """REINFORCE (moving-average or leave-one-out baseline) or SCST (greedy baseline)."""
        k = self.cfg.samples
        drawn = self._sample(model, batch)
        with torch.no_grad():
            reward = self.rewards(drawn.tokens, drawn.lengths, batch)
            if self_critical:
                was_training = model.training
                model.eval()
                best = greedy(model, batch.src, batch.src_len, self.max_len)
                model.train(was_training)
                baseline = self.rewards(best.tokens, best.lengths, batch).repeat_interleave(k)
            elif self.cfg.baseline == "leave_one_out":
                baseline = leave_one_out_baseline(reward.view(-1, k)).reshape(-1)
            else:
                baseline = self._moving_baseline(reward)
            advantage = reward - baseline
        loss = policy_gradient_loss(drawn.scores, reward, baseline)
        return loss, self._stats(drawn, reward, baseline, advantage, k)

    def mrt(self, model, batch: Seq2SeqBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """Minimum risk training over the deduplicated candidate set."""
        k = self.cfg.samples
        with torch.no_grad():
            drawn = self._sample(model, batch)
        tokens, lengths, group = drawn.tokens, drawn.lengths, k
        if self.cfg.mrt_reference:  # the reference joins each source's candidates
            width = max(tokens.shape[1], batch.tgt.shape[1])
            pad = lambda t: F.pad(t, (0, width - t.shape[1]), value=PAD)  # noqa: E731
            tokens = torch.cat([pad(tokens).view(batch.size, k, width),
                                pad(batch.tgt).unsqueeze(1)], 1).view(-1, width)
            lengths = torch.cat([lengths.view(batch.size, k), batch.tgt_len.unsqueeze(1)],
                                1).view(-1)
            group = k + 1
        keep = first_occurrence(tokens, lengths, group)  # [B, group]
        src = batch.src.repeat_interleave(group, 0)
        src_len = batch.src_len.repeat_interleave(group, 0)
        logp = sequence_logprob(model, src, src_len, tokens, lengths).view(-1, group)
        with torch.no_grad():
            reward = self.rewards(tokens, lengths, batch).view(-1, group)
        q = mrt_weights(logp, self.cfg.mrt_alpha, keep)
        loss = mrt_loss(q, reward)
        stats = self._stats(drawn, reward[:, :k].reshape(-1), None, None, k)  # the samples
        stats["seq.q_max"] = float(q.detach().max(1).values.mean())
        stats["seq.candidates"] = float(keep.sum(1).float().mean())
        return loss, stats

    def mixer_boundary(self, step: int) -> int:
        """Delta_t: tokens trained with cross entropy at this step of the MIXER stage."""
        start = self.max_len if self.cfg.mixer_start is None else self.cfg.mixer_start
        moves = (step - self.cfg.pretrain_steps) // self.cfg.mixer_every
        return max(0, start - self.cfg.mixer_delta * moves)

    def mixer(self, model, batch: Seq2SeqBatch, step: int
              ) -> tuple[torch.Tensor, dict[str, float]]:
        """Cross entropy on the first Delta target tokens, REINFORCE on the sampled rest."""
        k = self.cfg.samples
        delta = min(self.mixer_boundary(step), batch.tgt.shape[1])
        src, src_len = batch.src.repeat_interleave(k, 0), batch.src_len.repeat_interleave(k, 0)
        tgt = batch.tgt.repeat_interleave(k, 0)
        memory = model.encode_batch(src, src_len)
        state = model.start(memory)
        prev = torch.full_like(tgt[:, 0], 1)  # BOS
        ce_terms, logps, chosen = [], [], []
        done = torch.zeros_like(prev, dtype=torch.bool)
        for t in range(delta):  # teacher-forced prefix
            logits = model.output(model.output_dropout(model.step(model.embed_tgt(prev),
                                                                  memory, state)))
            ce_terms.append(F.cross_entropy(logits, tgt[:, t], ignore_index=PAD,
                                            reduction="none"))
            prev = tgt[:, t]
            chosen.append(prev.masked_fill(done, PAD))
            logps.append(torch.zeros_like(ce_terms[-1]))
            done = done | (prev == EOS) | (prev == PAD)
        for _ in range(delta, self.max_len):  # sampled continuation
            if bool(done.all()):
                break
            logits = model.output(model.output_dropout(model.step(model.embed_tgt(prev),
                                                                  memory, state)))
            log_probs = F.log_softmax(logits / self.cfg.temperature, -1)
            token = torch.multinomial(log_probs.detach().exp(), 1).squeeze(1)
            token = token.masked_fill(done, PAD)
            logps.append(log_probs.gather(1, token.unsqueeze(1)).squeeze(1)
                         .masked_fill(done, 0.0))
            chosen.append(token)
            prev = token.masked_fill(done, PAD)
            done = done | (token == EOS)
        tokens = torch.stack(chosen, 1) if chosen else tgt[:, :0]
        lengths = (tokens != PAD).sum(1)
        sampled = torch.stack(logps, 1)[:, delta:] if len(logps) > delta else None
        ce = (torch.stack(ce_terms, 1).sum() / (tgt[:, :delta] != PAD).sum().clamp(min=1)
              if ce_terms else torch.zeros((), device=src.device))
        with torch.no_grad():
            reward = self.rewards(tokens, lengths, batch)
            baseline = self._moving_baseline(reward)
            advantage = reward - baseline
        rl = policy_gradient_loss(sampled.sum(1), reward, baseline) if sampled is not None \
            else ce * 0
        n_sampled = int((sampled != 0).sum()) if sampled is not None else 0
        stats = {"seq.reward": float(reward.mean()), "seq.baseline": float(baseline.mean()),
                 "seq.advantage_var": float(advantage.var()) if advantage.numel() > 1 else 0.0,
                 "seq.entropy": float(-sampled.detach().sum() / max(n_sampled, 1))
                 if sampled is not None else 0.0,
                 "seq.boundary": float(delta), "seq.ce": float(ce.detach()),
                 "seq.distinct": float(distinct_counts(tokens, lengths, k).float().mean())}
        return ce + rl, stats

    def _stats(self, drawn: Decoded, reward: torch.Tensor, baseline: torch.Tensor | None,
               advantage: torch.Tensor | None, k: int) -> dict[str, float]:
        counted = drawn.logprobs != 0
        stats = {"seq.reward": float(reward.mean()),
                 "seq.entropy": float(-drawn.logprobs.detach().sum()
                                      / counted.sum().clamp(min=1)),
                 "seq.distinct": float(distinct_counts(drawn.tokens, drawn.lengths, k)
                                       .float().mean())}
        if baseline is not None:
            stats["seq.baseline"] = float(baseline.mean())
            stats["seq.advantage_var"] = (float(advantage.var()) if advantage.numel() > 1
                                          else 0.0)
        return stats

    def state_dict(self) -> dict[str, Any]:
        return {"average": self.average}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average = state.get("average")
