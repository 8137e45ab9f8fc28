"""Batched decoding: greedy, sampling, beam search and teacher-forced sequence scoring."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lstm_harness.config import ModelConfig
from lstm_harness.models.attention import AttentionConfig
from lstm_harness.models.seq2seq import DecoderState, Memory, Seq2Seq
from lstm_harness.tasks.base import BOS, EOS, PAD, Seq2SeqBatch, pad_sequences
from lstm_harness.training.decoding import (
    Decoded,
    beam_search,
    expand_memory,
    greedy,
    length_penalty_factor,
    sample,
    sequence_logprob,
)

SRC_VOCAB, TGT_VOCAB = 9, 8

ATTENTIONS = {
    "none": None,
    "bahdanau": AttentionConfig(type="bahdanau"),
    "luong_general_feed": AttentionConfig(type="luong", score="general", input_feeding=True),
    "local": AttentionConfig(type="local", window=2),
    "luong_concat_coverage": AttentionConfig(type="luong", score="concat", coverage=True),
}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one thread is faster on the busy machine."""


def make_model(attention: AttentionConfig | None, seed: int = 0, layers: int = 1,
               bidirectional: bool = False) -> Seq2Seq:
    torch.manual_seed(seed)
    cfg = ModelConfig(embed=16, hidden=32, layers=layers, bidirectional=bidirectional,
                      attention=attention)
    return Seq2Seq(cfg, SRC_VOCAB, TGT_VOCAB).eval()


def make_src(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 8, (batch,), generator=gen).tolist()
    seqs = [torch.randint(3, SRC_VOCAB, (n,), generator=gen).tolist() for n in lengths]
    return pad_sequences(seqs)


def check_after_eos(out: Decoded) -> None:
    """PAD and log-prob 0 after the first EOS; lengths count up to and including it."""
    steps = out.tokens.shape[1]
    for row, length in zip(out.tokens.tolist(), out.lengths.tolist(), strict=True):
        if EOS in row:
            assert length == row.index(EOS) + 1
        else:
            assert length == steps
        assert all(tok == PAD for tok in row[length:])
    after = torch.arange(steps)[None, :] >= out.lengths[:, None]
    assert bool((out.logprobs[after] == 0).all())


# -- greedy ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_greedy_equals_model_greedy(name):
    model = make_model(ATTENTIONS[name], seed=1)
    src, src_len = make_src(6, seed=2)
    out = greedy(model, src, src_len, max_len=9)
    assert torch.equal(out.tokens, model.greedy(src, src_len, max_len=9))
    check_after_eos(out)
    torch.testing.assert_close(out.scores, out.logprobs.sum(1))
    torch.testing.assert_close(out.scores, sequence_logprob(model, src, src_len, out.tokens,
                                                            out.lengths))


def test_greedy_two_layer_bidirectional_equals_model_greedy():
    model = make_model(ATTENTIONS["luong_general_feed"], seed=3, layers=2, bidirectional=True)
    src, src_len = make_src(5, seed=4)
    assert torch.equal(greedy(model, src, src_len, 8).tokens, model.greedy(src, src_len, 8))


def test_decoding_stops_when_every_row_has_ended():
    model = make_model(ATTENTIONS["bahdanau"], seed=5)
    with torch.no_grad():
        model.head.bias[EOS] += 50.0
    src, src_len = make_src(4, seed=6)
    for out in (greedy(model, src, src_len, 10), sample(model, src, src_len, 10, k=3),
                beam_search(model, src, src_len, 10, beam_size=3)):
        assert out.tokens.shape[1] == 1
        assert bool((out.tokens == EOS).all()) and bool((out.lengths == 1).all())


def test_rows_stop_at_eos_and_pad_after():
    model = make_model(ATTENTIONS["local"], seed=7)
    with torch.no_grad():
        model.head.bias[EOS] += 1.0  # ends at various steps
    src, src_len = make_src(4, seed=8)
    out = sample(model, src, src_len, max_len=12, k=16,
                 generator=torch.Generator().manual_seed(0))
    ended = (out.tokens == EOS).any(1)
    assert bool(ended.any()) and len(set(out.lengths.tolist())) > 2
    check_after_eos(out)
    check_after_eos(beam_search(model, src, src_len, max_len=12, beam_size=3))


# -- sampling ----------------------------------------------------------------------------

def test_sample_shapes_and_example_major_rows():
    model = make_model(ATTENTIONS["luong_general_feed"], seed=9)
    src, src_len = make_src(3, seed=10)
    out = sample(model, src, src_len, max_len=7, k=4)
    steps = out.tokens.shape[1]
    assert out.tokens.shape == out.logprobs.shape == (12, steps) and steps <= 7
    assert out.lengths.shape == out.scores.shape == (12,)
    # rows b*k + j decode example b: with top_k=1 all k samples of an example equal its greedy
    one = sample(model, src, src_len, max_len=7, k=4, top_k=1)
    ref = greedy(model, src, src_len, max_len=7)
    assert torch.equal(one.tokens, ref.tokens.repeat_interleave(4, 0))
    # log-probs are of the truncated distribution: the one token left has probability 1
    assert bool((one.scores == 0).all())
    # example-major: scoring the k rows against the batch's sources gives the sample scores
    torch.testing.assert_close(
        sequence_logprob(model, src, src_len, out.tokens, out.lengths), out.scores)


@pytest.mark.parametrize("name", ["none", "bahdanau", "luong_concat_coverage"])
def test_sample_logprobs_are_the_models(name):
    model = make_model(ATTENTIONS[name], seed=11)
    src, src_len = make_src(5, seed=12)
    out = sample(model, src, src_len, max_len=8, k=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.scores, out.logprobs.sum(1))
    rescored = sequence_logprob(model, src.repeat_interleave(2, 0),
                                src_len.repeat_interleave(2, 0), out.tokens, out.lengths)
    torch.testing.assert_close(rescored, out.scores)
    check_after_eos(out)


def test_sample_gradients_flow():
    model = make_model(ATTENTIONS["bahdanau"], seed=13)
    src, src_len = make_src(3, seed=14)
    out = sample(model, src, src_len, max_len=6, k=2)
    assert out.scores.requires_grad
    out.scores.sum().backward()
    for name in ("head.weight", "tgt_embed.weight", "src_embed.weight"):
        grad = dict(model.named_parameters())[name].grad
        assert grad is not None and bool(grad.abs().sum() > 0), name
    with torch.no_grad():
        assert not sample(model, src, src_len, max_len=6).scores.requires_grad


def test_sample_reproducible_with_generator():
    model = make_model(ATTENTIONS["local"], seed=15)
    src, src_len = make_src(4, seed=16)
    a, b = (sample(model, src, src_len, 8, k=3, generator=torch.Generator().manual_seed(7))
            for _ in range(2))
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs)
    c = sample(model, src, src_len, 8, k=3, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a.tokens, c.tokens)


def test_sample_low_temperature_is_greedy_and_reports_scaled_logprobs():
    model = make_model(ATTENTIONS["none"], seed=17)
    src, src_len = make_src(5, seed=18)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        cold = sample(model, src, src_len, 8, k=2, temperature=1e-6, generator=gen)
        ref = greedy(model, src, src_len, 8)
        assert torch.equal(cold.tokens, ref.tokens.repeat_interleave(2, 0))
        # log-probs of the temperature-scaled distribution: ~0 for a near one-hot
        assert float(cold.logprobs.abs().max()) < 1e-3
        hot = sample(model, src, src_len, 8, temperature=2.0, generator=gen)
        memory = model.encode_batch(src, src_len)
        state = model.start(memory)
        logits = model.output(model.step(model.embed_tgt(torch.full((5,), BOS)), memory, state))
        expect = F.log_softmax(logits / 2.0, -1).gather(1, hot.tokens[:, :1]).squeeze(1)
        torch.testing.assert_close(hot.logprobs[:, 0], expect)


def test_sample_top_k_restricts_and_renormalises():
    model = make_model(ATTENTIONS["bahdanau"], seed=19)
    src, src_len = make_src(2, seed=20)
    with torch.no_grad():
        out = sample(model, src, src_len, 1, k=200, top_k=2,
                     generator=torch.Generator().manual_seed(3))
        memory = model.encode_batch(src, src_len)
        logits = model.output(model.step(model.embed_tgt(torch.full((2,), BOS)), memory,
                                         model.start(memory)))
    top = logits.topk(2, -1)
    logq = F.log_softmax(top.values, -1)
    for b in range(2):
        drawn = out.tokens[b * 200:(b + 1) * 200, 0]
        assert set(drawn.tolist()) <= set(top.indices[b].tolist())
        for j, tok in enumerate(top.indices[b].tolist()):
            rows = drawn == tok
            if rows.any():
                torch.testing.assert_close(out.logprobs[b * 200:(b + 1) * 200, 0][rows],
                                           logq[b, j].expand(int(rows.sum())))


# -- sequence_logprob --------------------------------------------------------------------

@pytest.mark.parametrize("name", ["none", "bahdanau", "luong_general_feed", "local"])
def test_sequence_logprob_matches_training_cross_entropy(name):
    model = make_model(ATTENTIONS[name], seed=21)
    src, src_len = make_src(4, seed=22)
    gen = torch.Generator().manual_seed(23)
    tgt, tgt_len = pad_sequences([torch.randint(3, TGT_VOCAB, (n,), generator=gen).tolist()
                                  for n in (3, 1, 5, 2)], append_eos=True)
    batch = Seq2SeqBatch(src, src_len, tgt, tgt_len, torch.full((4,), -1))
    logits = model(batch)
    ce = F.cross_entropy(logits.transpose(1, 2), tgt, ignore_index=PAD, reduction="none")
    got = sequence_logprob(model, src, src_len, tgt, tgt_len)
    torch.testing.assert_close(got, -ce.sum(1))
    got.sum().backward()
    assert model.head.weight.grad is not None
    # only the first `lengths` tokens count
    shorter = sequence_logprob(model, src, src_len, tgt, torch.ones_like(tgt_len))
    torch.testing.assert_close(shorter, -ce[:, 0])


def test_expand_memory_repeats_every_example():
    model = make_model(ATTENTIONS["luong_concat_coverage"], seed=24, layers=2)
    src, src_len = make_src(3, seed=25)
    memory = model.encode_batch(src, src_len)
    big = expand_memory(memory, 4)
    for small, large in [(memory.keys, big.keys), (memory.mask, big.mask),
                         (memory.lengths, big.lengths), (memory.context, big.context),
                         (memory.proj_keys, big.proj_keys), (memory.init[1][1], big.init[1][1])]:
        assert torch.equal(large, small.repeat_interleave(4, 0))


# -- beam search -------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(ATTENTIONS))
def test_beam_size_one_is_greedy(name):
    model = make_model(ATTENTIONS[name], seed=26)
    src, src_len = make_src(6, seed=27)
    beam = beam_search(model, src, src_len, max_len=9, beam_size=1)
    ref = greedy(model, src, src_len, max_len=9)
    assert torch.equal(beam.tokens, ref.tokens) and torch.equal(beam.lengths, ref.lengths)
    torch.testing.assert_close(beam.scores, ref.scores)
    torch.testing.assert_close(beam.logprobs, ref.logprobs)


@pytest.mark.parametrize("name", list(ATTENTIONS))
@pytest.mark.parametrize("alpha", [0.0, 0.8])
def test_beam_scores_are_consistent_with_rescoring(name, alpha):
    """Reordering the decoder state by the backpointers is right: the returned hypothesis,
    rescored teacher-forced, has the log-prob the beam accumulated. Weights doubled and EOS made
    rarer so that hypotheses are long and depend on their state: leaving out the reorder of any
    part (either layer's (h, c), Luong's feed, coverage) moves these log-probs by > 5e-3."""
    model = make_model(ATTENTIONS[name], seed=28, layers=2)
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(2.0)
        model.head.bias[EOS] -= 1.0
    src, src_len = make_src(8, seed=29)
    out = beam_search(model, src, src_len, max_len=8, beam_size=3, length_penalty=alpha)
    check_after_eos(out)
    total = sequence_logprob(model, src, src_len, out.tokens, out.lengths)
    torch.testing.assert_close(out.logprobs.sum(1), total)
    torch.testing.assert_close(out.scores, total / length_penalty_factor(out.lengths, alpha))


A, B = 3, 4  # the table model's two ordinary tokens
VOCAB = 5


class TableModel:
    """A fake decoder with hand-set probabilities (float64), implementing the decoding interface.

    log P(y_t | y_<t) = log_softmax(log probs[y_{t-1}] + n_{t-1} W)[y_t], with n_{t-1} the
    counts of the tokens read before y_{t-1} (y_0 = BOS included) and W = ``history`` (zero by
    default: then P(y_t | y_{t-1}) = probs[y_{t-1}, y_t]). The counts live in the decoder state
    (one (h, c) "layer"), so with a non-zero W a misordered beam state gives wrong log-probs.
    """

    def __init__(self, probs: dict[int, dict[int, float]] | torch.Tensor,
                 history: torch.Tensor | None = None) -> None:
        if isinstance(probs, dict):
            table = torch.full((VOCAB, VOCAB), 1.0 / VOCAB, dtype=torch.float64)
            for prev, row in probs.items():
                table[prev] = torch.tensor([row.get(y, 0.0) for y in range(VOCAB)],
                                           dtype=torch.float64)
            probs = table
        self.logits = probs.log()
        self.history = torch.zeros(VOCAB, VOCAB, dtype=torch.float64) if history is None \
            else history

    def encode_batch(self, src: torch.Tensor, src_len: torch.Tensor) -> Memory:
        zeros = torch.zeros(src.shape[0], VOCAB, dtype=torch.float64)
        return Memory(keys=zeros[:, None, :], mask=torch.ones(src.shape[0], 1, dtype=torch.bool),
                      lengths=src_len, context=zeros, init=[(zeros, zeros)])

    def start(self, memory: Memory) -> DecoderState:
        return DecoderState(states=list(memory.init))

    def step(self, x_emb: torch.Tensor, memory: Memory, state: DecoderState) -> torch.Tensor:
        counts = state.states[0][0]
        state.states = [(counts + x_emb, counts)]
        return torch.cat([x_emb, counts], 1)

    def output(self, feats: torch.Tensor) -> torch.Tensor:
        prev, counts = feats[:, :VOCAB], feats[:, VOCAB:]
        # (indexing: a product with the table would give 0 * -inf = nan)
        return self.logits[prev.argmax(-1)] + counts @ self.history

    def embed_tgt(self, tokens: torch.Tensor) -> torch.Tensor:
        return F.one_hot(tokens, VOCAB).to(torch.float64)

    def logprob(self, seq: list[int]) -> float:
        """log P(seq) by the definition, one prefix at a time (no decoder state)."""
        total, counts = 0.0, torch.zeros(VOCAB, dtype=torch.float64)
        for prev, y in zip((BOS, *seq), seq, strict=False):
            total += float(F.log_softmax(self.logits[prev] + counts @ self.history, -1)[y])
            counts[prev] += 1
        return total


def brute_force(model: TableModel, max_len: int, alpha: float) -> tuple[list[int], float]:
    """The best sequence over all sequences ending in EOS within max_len tokens, or of max_len
    tokens without EOS, by log P(Y) / ((5 + |Y|) / 6) ** alpha."""
    best, best_score = [], -math.inf
    for n in range(1, max_len + 1):
        for body in itertools.product([EOS, A, B], repeat=n):
            if EOS in body[:-1] or (body[-1] != EOS and n < max_len):
                continue
            score = model.logprob(list(body)) / ((5 + n) / 6) ** alpha
            if score > best_score:
                best, best_score = list(body), score
    return best, best_score


def decode_one(fn, model: TableModel, max_len: int, **kw) -> tuple[list[int], float]:
    out = fn(model, torch.zeros(2, 1, dtype=torch.long), torch.ones(2, dtype=torch.long),
             max_len, **kw)
    assert torch.equal(out.tokens[0], out.tokens[1])
    return out.tokens[0, : int(out.lengths[0])].tolist(), float(out.scores[0])


def test_beam_search_finds_the_best_sequence_greedy_misses():
    model = TableModel({BOS: {A: 0.6, B: 0.4},
                        A: {EOS: 0.3, A: 0.4, B: 0.3},
                        B: {EOS: 0.9, A: 0.05, B: 0.05}})
    tokens, score = decode_one(greedy, model, 4)
    assert tokens == [A, A, A, A]
    assert score == pytest.approx(math.log(0.6 * 0.4 ** 3))
    best, best_score = brute_force(model, 4, 0.0)
    assert best == [B, EOS] and best_score == pytest.approx(math.log(0.36))
    for beam_size in (2, 3):
        tokens, score = decode_one(beam_search, model, 4, beam_size=beam_size)
        assert tokens == best
        assert score == pytest.approx(best_score, abs=1e-12)
    for alpha in (0.6, 1.0):
        tokens, score = decode_one(beam_search, model, 4, beam_size=3, length_penalty=alpha)
        expect, expect_score = brute_force(model, 4, alpha)
        assert tokens == expect and score == pytest.approx(expect_score, abs=1e-12)


def test_length_penalty_ranking_formula():
    """EOS alone: log 0.5 = -0.6931; A EOS: log 0.45 = -0.7985. Plain sums prefer the short
    one; with alpha = 1, lp(2) = 7/6 and -0.7985 / (7/6) = -0.6845 > -0.6931 / 1."""
    model = TableModel({BOS: {EOS: 0.5, A: 0.5},
                        A: {EOS: 0.9, A: 0.05, B: 0.05},
                        B: {EOS: 1 / 3, A: 1 / 3, B: 1 / 3}})
    tokens, score = decode_one(beam_search, model, 3, beam_size=2)
    assert tokens == [EOS] and score == pytest.approx(math.log(0.5), abs=1e-12)
    tokens, score = decode_one(beam_search, model, 3, beam_size=2, length_penalty=1.0)
    assert tokens == [A, EOS]
    assert score == pytest.approx(math.log(0.45) / (7 / 6), abs=1e-12)
    expect, expect_score = brute_force(model, 3, 1.0)
    assert tokens == expect and score == pytest.approx(expect_score, abs=1e-12)
    factor = length_penalty_factor(torch.tensor([1, 2, 7]), 0.6)
    torch.testing.assert_close(factor, torch.tensor([1.0, (7 / 6) ** 0.6, 2.0 ** 0.6]))


def test_invalid_arguments():
    model = make_model(None)
    src, src_len = make_src(2, seed=0)
    with pytest.raises(ValueError):
        greedy(model, src, src_len, 0)
    with pytest.raises(ValueError):
        sample(model, src, src_len, 3, temperature=0.0)
    with pytest.raises(ValueError):
        beam_search(model, src, src_len, 3, beam_size=0)


def random_history_model(seed: int) -> TableModel:
    """Random next-token table over EOS, A, B (PAD and BOS impossible) and a strong history W."""
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(VOCAB, VOCAB, generator=gen, dtype=torch.float64)
    probs[:, [PAD, BOS]] = 0.0
    probs[:, EOS] *= 0.3  # longer sequences compete
    probs[BOS, EOS] = 0.0
    history = 2.0 * torch.randn(VOCAB, VOCAB, generator=gen, dtype=torch.float64)
    return TableModel(probs / probs.sum(1, keepdim=True), history)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_exhaustive_beam_is_brute_force(seed, alpha):
    """A beam wide enough to keep every hypothesis (at most 7 finished + 8 x 3 candidates at
    step 4) is exhaustive: it finds the brute-force optimum; narrower beams return a hypothesis
    with its true score, never above the optimum."""
    model = random_history_model(seed)
    best, best_score = brute_force(model, 4, alpha)
    tokens, score = decode_one(beam_search, model, 4, beam_size=31, length_penalty=alpha)
    assert tokens == best and score == pytest.approx(best_score, abs=1e-12)
    for beam_size in (2, 3):
        tokens, score = decode_one(beam_search, model, 4, beam_size=beam_size,
                                   length_penalty=alpha)
        assert score == pytest.approx(model.logprob(tokens) / ((5 + len(tokens)) / 6) ** alpha,
                                      abs=1e-12)
        assert score <= best_score + 1e-12


def test_beam_search_reorders_the_state_with_the_beams():
    """EOS after "x A" is likely only when x = B, which the model reads from its state (W[B, EOS]
    = log 9801 makes P(EOS | B A) = 0.99). Beam 2: step 1 keeps A (.55, row 0), B (.45, row 1);
    step 2 keeps B A (.4275) in row 0, taken from row 1, and A A (.3795) in row 1: the state rows
    must swap for step 3 to find B A EOS (.4232); greedy gives A A A (.2623)."""
    history = torch.zeros(VOCAB, VOCAB, dtype=torch.float64)
    history[B, EOS] = math.log(9801)
    model = TableModel({BOS: {A: 0.55, B: 0.45},
                        A: {EOS: 0.01, A: 0.69, B: 0.3},
                        B: {A: 0.95, B: 0.05}}, history)
    assert decode_one(greedy, model, 3)[0] == [A, A, A]
    best, best_score = brute_force(model, 3, 0.0)
    assert best == [B, A, EOS] and best_score == pytest.approx(math.log(0.45 * 0.95 * 0.99))
    for alpha in (0.0, 0.5):
        tokens, score = decode_one(beam_search, model, 3, beam_size=2, length_penalty=alpha)
        assert tokens == [B, A, EOS]
        assert score == pytest.approx(math.log(0.45 * 0.95 * 0.99) / (8 / 6) ** alpha,
                                      abs=1e-12)
