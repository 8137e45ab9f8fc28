"""Attention: masking, hand-computed scores, precompute, local-p, coverage, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lstm_harness.models.attention import Attention, LuongOutput, self_attention_context

# (kind, score, coverage) for every supported combination
COMBOS = [
    ("bahdanau", None, False),
    ("bahdanau", "concat", True),
    ("luong", "dot", False),
    ("luong", "general", False),
    ("luong", "concat", False),
    ("luong", "concat", True),
    ("local", None, False),
    ("local", "dot", False),
    ("local", "general", False),
    ("local", "concat", False),
    ("local", "concat", True),
]
IDS = [f"{k}-{s}-{'cov' if c else 'nocov'}" for k, s, c in COMBOS]


def make_inputs(batch=3, src=6, size=4, lengths=(6, 4, 1), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(batch, size, generator=g, dtype=dtype)
    keys = torch.randn(batch, src, size, generator=g, dtype=dtype)
    src_len = torch.tensor(lengths)
    mask = torch.arange(src).unsqueeze(0) < src_len.unsqueeze(1)
    coverage = torch.rand(batch, src, generator=g, dtype=dtype) * mask
    return query, keys, mask, src_len, coverage


def build(kind, score, coverage, size=4, **kw) -> Attention:
    torch.manual_seed(0)
    return Attention(kind, score, size, size, coverage=coverage, **kw)


def call(attn: Attention, query, keys, mask, src_len, coverage, **kw):
    cov = coverage if attn.use_coverage else None
    return attn(query, keys, mask, coverage=cov, src_len=src_len, **kw)


@pytest.mark.parametrize(("kind", "score", "cov"), COMBOS, ids=IDS)
def test_weights_are_masked_normalised_and_context_is_weighted_sum(kind, score, cov):
    query, keys, mask, src_len, coverage = make_inputs()
    attn = build(kind, score, cov)
    context, alpha = call(attn, query, keys, mask, src_len, coverage)
    assert context.shape == (3, 4) and alpha.shape == (3, 6)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3), atol=1e-6, rtol=0)
    assert torch.all(alpha[~mask] == 0)
    assert torch.all(alpha >= 0)
    assert alpha[2, 0] == 1.0  # a single real position takes all the mass
    expected = torch.einsum("bs,bsk->bk", alpha, keys)
    torch.testing.assert_close(context, expected)


@pytest.mark.parametrize(("kind", "score", "cov"), COMBOS, ids=IDS)
def test_precompute_path_equals_plain_path(kind, score, cov):
    query, keys, mask, src_len, coverage = make_inputs(seed=1)
    attn = build(kind, score, cov)
    proj = attn.precompute(keys)
    assert (proj is None) == (attn.score == "dot")
    plain = call(attn, query, keys, mask, src_len, coverage)
    cached = call(attn, query, keys, mask, src_len, coverage, proj_keys=proj)
    for a, b in zip(plain, cached, strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_dot_score_matches_hand_computed_softmax():
    q = np.array([[1.0, 2.0]])
    k = np.array([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, True, False]])
    e = np.array([1.0, 2.0, 3.0])  # q . k_i for the three real positions
    expected = np.exp(e) / np.exp(e).sum()
    attn = Attention("luong", "dot", 2, 2)
    context, alpha = attn(torch.tensor(q), torch.tensor(k), mask)
    np.testing.assert_allclose(alpha.numpy()[0], [*expected, 0.0], atol=1e-12)
    np.testing.assert_allclose(context.numpy()[0], expected @ k[0, :3], atol=1e-12)


def test_general_with_identity_equals_dot():
    query, keys, mask, src_len, _ = make_inputs(seed=2)
    general = Attention("luong", "general", 4, 4)
    with torch.no_grad():
        general.key_proj.weight.copy_(torch.eye(4))
    dot = Attention("luong", "dot", 4, 4)
    for a, b in zip(general(query, keys, mask), dot(query, keys, mask), strict=True):
        torch.testing.assert_close(a, b)


def test_general_rectangular_sizes():
    attn = Attention("luong", "general", 3, 5)
    ctx, alpha = attn(torch.randn(2, 3), torch.randn(2, 4, 5), torch.ones(2, 4, dtype=torch.bool))
    assert ctx.shape == (2, 5) and alpha.shape == (2, 4)
    assert attn.precompute(torch.randn(2, 4, 5)).shape == (2, 4, 3)


@pytest.mark.parametrize("with_coverage", [False, True])
def test_bahdanau_matches_manual_formula(with_coverage):
    w1 = torch.tensor([[0.5, -1.0], [0.25, 0.75], [1.0, 0.0]])  # attn 3 x query 2
    w2 = torch.tensor([[1.0, 0.5], [-0.5, 0.2], [0.3, -0.7]])  # attn 3 x key 2
    v = torch.tensor([0.7, -1.2, 0.4])
    wc = torch.tensor([0.9, -0.3, 1.5])
    attn = Attention("bahdanau", None, 2, 2, attn_size=3, coverage=with_coverage)
    with torch.no_grad():
        attn.query_proj.weight.copy_(w1)
        attn.key_proj.weight.copy_(w2)
        attn.v.weight.copy_(v.unsqueeze(0))
        if with_coverage:
            attn.cov_proj.weight.copy_(wc.unsqueeze(1))
    q = torch.tensor([[0.3, -0.8]])
    h = torch.tensor([[[1.0, 2.0], [-1.0, 0.5], [0.2, 0.2]]])
    cov = torch.tensor([[0.6, 0.1, 0.3]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    e = []
    for i in range(3):
        pre = w1 @ q[0] + w2 @ h[0, i]
        if with_coverage:
            pre = pre + wc * cov[0, i]
        e.append(float(v @ torch.tanh(pre)))
    expected = [math.exp(x) / sum(math.exp(y) for y in e) for x in e]
    context, alpha = attn(q, h, mask, coverage=cov if with_coverage else None)
    torch.testing.assert_close(alpha[0], torch.tensor(expected))
    torch.testing.assert_close(context[0], torch.tensor(expected) @ h[0])


def test_bahdanau_rejects_non_additive_score():
    for score in ("dot", "general"):
        with pytest.raises(ValueError, match="bahdanau"):
            Attention("bahdanau", score, 4, 4)
    with pytest.raises(ValueError):
        Attention("luong", "cosine", 4, 4)
    with pytest.raises(ValueError):
        Attention("global", "dot", 4, 4)


@pytest.mark.parametrize("kind", ["luong", "local"])
def test_dot_with_mismatched_sizes_names_both(kind):
    with pytest.raises(ValueError) as info:
        Attention(kind, "dot", 5, 7)
    assert "5" in str(info.value) and "7" in str(info.value)
    assert "query_size" in str(info.value) and "key_size" in str(info.value)


def test_row_without_real_position_is_rejected():
    attn = Attention("luong", "dot", 2, 2)
    mask = torch.tensor([[True, False], [False, False]])
    with pytest.raises(ValueError, match="no real source position"):
        attn(torch.randn(2, 2), torch.randn(2, 2, 2), mask)


def test_luong_default_score_is_general():
    assert Attention("luong", None, 3, 4).score == "general"
    assert Attention("local", None, 3, 4).score == "general"
    assert Attention("bahdanau", None, 3, 4).score == "concat"


# ---- local-p ------------------------------------------------------------------------------------


def local_with_centre(logit: float, window: int, score="dot", size=4) -> Attention:
    """A local attention whose p_t = (len - 1) * sigmoid(logit), whatever the query."""
    attn = Attention("local", score, size, size, window=window)
    with torch.no_grad():
        attn.pos_v.weight.zero_()
        attn.pos_v.bias.fill_(logit)
    return attn


def test_local_window_cut_and_gaussian_renormalised():
    batch, src, window = 2, 12, 2
    query, keys, mask, src_len, _ = make_inputs(batch, src, lengths=(12, 9), seed=3)
    attn = local_with_centre(0.3, window)
    p = attn.position(query, src_len)
    expected_p = (src_len.float() - 1) * torch.sigmoid(torch.tensor(0.3))
    torch.testing.assert_close(p, expected_p)
    _, alpha = attn(query, keys, mask, src_len=src_len)
    dist = (torch.arange(src).unsqueeze(0) - p.unsqueeze(1)).abs()
    outside = (dist > window) | ~mask
    assert outside.any(dim=1).all()
    assert torch.all(alpha[outside] == 0)
    assert torch.all(alpha[~outside] > 0)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(batch), atol=1e-6, rtol=0)
    # Luong's alpha = softmax(e) * exp(-(i - p)^2 / (2 sigma^2)), renormalised on the window
    e = torch.einsum("bk,bsk->bs", query, keys)
    a = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
    sigma = window / 2
    gauss = torch.exp(-(dist**2) / (2 * sigma**2))
    unnorm = (a * gauss).masked_fill(outside, 0.0)
    torch.testing.assert_close(alpha, unnorm / unnorm.sum(-1, keepdim=True))


def test_local_forced_sigmoid_puts_centre_at_last_real_position():
    query, keys, mask, src_len, _ = make_inputs(3, 10, lengths=(10, 7, 3), seed=4)
    attn = local_with_centre(100.0, window=1)
    p = attn.position(query, src_len)
    torch.testing.assert_close(p, (src_len - 1).float())
    _, alpha = attn(query, keys, mask, src_len=src_len)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3), atol=1e-6, rtol=0)
    for b, length in enumerate(src_len.tolist()):
        # window D = 1 around p_t = len - 1: only the last two real positions can carry weight
        assert torch.all(alpha[b, : length - 2] == 0)
        assert torch.all(alpha[b, length:] == 0)
        assert alpha[b, length - 1] > 0
        torch.testing.assert_close(alpha[b, length - 2 : length].sum(), torch.tensor(1.0))


def test_local_keeps_nearest_position_despite_peaked_scores():
    """Scores that put all softmax mass outside the window must not zero the window out."""
    attn = local_with_centre(-100.0, window=1, score="dot", size=1)  # p_t = 0
    keys = torch.tensor([[[0.0], [0.0], [0.0], [1.0]]])
    query = torch.tensor([[500.0]])  # softmax(e) ~ 1 at position 3, ~e^-500 elsewhere
    _, alpha = attn(query, keys, torch.ones(1, 4, dtype=torch.bool), src_len=torch.tensor([4]))
    assert torch.isfinite(alpha).all()
    assert alpha[0, 0] > 0 and torch.all(alpha[0, 2:] == 0)
    torch.testing.assert_close(alpha.sum(), torch.tensor(1.0))


def test_local_needs_src_len_and_valid_window():
    query, keys, mask, _, _ = make_inputs()
    with pytest.raises(ValueError, match="src_len"):
        build("local", "general", False)(query, keys, mask)
    with pytest.raises(ValueError, match="window"):
        Attention("local", "general", 4, 4, window=0)


# ---- coverage -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "score"), [("bahdanau", None), ("luong", "concat"),
                                             ("local", "concat")])
def test_coverage_changes_the_scores(kind, score):
    query, keys, mask, src_len, coverage = make_inputs(seed=5)
    attn = build(kind, score, True, window=10)
    _, zero_cov = attn(query, keys, mask, coverage=torch.zeros_like(coverage), src_len=src_len)
    _, with_cov = attn(query, keys, mask, coverage=coverage, src_len=src_len)
    assert not torch.allclose(zero_cov[:2], with_cov[:2])
    assert torch.all(with_cov[~mask] == 0)


def test_coverage_loss_is_sum_of_minimums():
    alpha = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.9, 0.1, 0.0, 0.0]])
    cov = torch.tensor([[0.2, 0.6, 0.0, 0.7], [1.5, 0.4, 0.3, 0.0]])
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    # row 0: min(.5,.2)+min(.3,.6)+min(.2,0) = 0.5; row 1: min(.9,1.5)+min(.1,.4) = 1.0
    loss = Attention.coverage_loss(alpha, cov, mask)
    torch.testing.assert_close(loss, torch.tensor([0.5, 1.0]))
    torch.testing.assert_close(Attention.coverage_loss(alpha, cov, None), torch.tensor([0.5, 1.0]))


def test_coverage_over_a_decode_accumulates_past_weights():
    query, keys, mask, src_len, _ = make_inputs(seed=6)
    attn = build("bahdanau", None, True)
    proj = attn.precompute(keys)
    cov = torch.zeros(mask.shape)
    total = []
    for step in range(3):
        _, alpha = attn(query + step, keys, mask, proj_keys=proj, coverage=cov)
        total.append(alpha)
        loss = Attention.coverage_loss(alpha, cov, mask)
        assert loss.shape == (3,) and torch.all(loss >= 0) and torch.all(loss <= 1 + 1e-6)
        cov = cov + alpha
    torch.testing.assert_close(cov, torch.stack(total).sum(0))


@pytest.mark.parametrize(("kind", "score"), [("luong", "dot"), ("luong", "general"),
                                             ("local", "dot"), ("local", None)])
def test_coverage_rejected_for_multiplicative_scores(kind, score):
    with pytest.raises(ValueError, match="coverage is only supported with additive"):
        Attention(kind, score, 4, 4, coverage=True)


def test_coverage_argument_must_match_construction():
    query, keys, mask, _, coverage = make_inputs()
    with pytest.raises(ValueError, match="coverage"):
        build("bahdanau", None, True)(query, keys, mask)
    with pytest.raises(ValueError, match="coverage"):
        build("bahdanau", None, False)(query, keys, mask, coverage=coverage)


# ---- gradients ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "score", "cov"), COMBOS, ids=IDS)
def test_gradcheck(kind, score, cov):
    torch.manual_seed(0)
    # window 10 > S: the hard cut never applies, so local attention is smooth here
    attn = Attention(kind, score, 3, 3, window=10, coverage=cov).double()
    query, keys, mask, src_len, coverage = make_inputs(2, 4, 3, (4, 2), seed=7,
                                                       dtype=torch.float64)
    query.requires_grad_(True)
    keys.requires_grad_(True)
    inputs = (query, keys)
    if cov:
        coverage.requires_grad_(True)
        inputs = (query, keys, coverage)

    def fn(q, k, c=None):
        return attn(q, k, mask, coverage=c, src_len=src_len)

    assert torch.autograd.gradcheck(fn, inputs)


def test_gradcheck_local_small_window_away_from_boundary():
    """With a real cut (D=1), gradients are exact wherever no |i - p_t| sits on D."""
    attn = local_with_centre(0.0, window=1, score="general", size=3).double()
    query, keys, mask, src_len, _ = make_inputs(2, 6, 3, (6, 4), seed=8, dtype=torch.float64)
    p = attn.position(query, src_len)  # 2.5 and 1.5: distances to integers are 0.5
    torch.testing.assert_close(p, torch.tensor([2.5, 1.5], dtype=torch.float64))
    query.requires_grad_(True)
    keys.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda q, k: attn(q, k, mask, src_len=src_len), (query, keys)
    )


# ---- Luong output and LSTM self-attention -------------------------------------------------------


def test_luong_output_formula():
    layer = LuongOutput(context_size=3, hidden_size=2, output_size=5)
    ctx, hid = torch.randn(4, 3), torch.randn(4, 2)
    out = layer(ctx, hid)
    assert out.shape == (4, 5)
    torch.testing.assert_close(out, torch.tanh(torch.cat([ctx, hid], -1) @ layer.proj.weight.T))
    assert LuongOutput(3, 2)(ctx, hid).shape == (4, 2)


def test_self_attention_hand_computed_two_steps():
    h_prev = torch.tensor([[1.0, 0.0]])
    history = torch.tensor([[[2.0, 1.0], [0.0, 3.0]]])
    # beta = softmax([h_prev . h_1, h_prev . h_2]) = softmax([2, 0])
    b1 = math.exp(2) / (math.exp(2) + 1.0)
    expected = torch.tensor([[2.0 * b1, 3.0 * (1 - b1) + 1.0 * b1]])
    torch.testing.assert_close(self_attention_context(h_prev, history), expected)


def test_self_attention_empty_history_and_masking():
    h_prev = torch.randn(3, 4)
    out = self_attention_context(h_prev, torch.empty(3, 0, 4))
    assert out.shape == (3, 4) and torch.all(out == 0)
    history = torch.randn(3, 5, 4)
    hmask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5])
    masked = self_attention_context(h_prev, history, hmask)
    torch.testing.assert_close(masked[0], self_attention_context(h_prev[:1], history[:1])[0])
    torch.testing.assert_close(
        masked[1], self_attention_context(h_prev[1:2], history[1:2, :2])[0]
    )
    assert torch.all(masked[2] == 0)


def test_self_attention_gradcheck():
    g = torch.Generator().manual_seed(9)
    h_prev = torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    history = torch.randn(2, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    hmask = torch.tensor([[True, True], [True, False]])
    assert torch.autograd.gradcheck(self_attention_context, (h_prev, history))
    assert torch.autograd.gradcheck(
        lambda h, hist: self_attention_context(h, hist, hmask), (h_prev, history)
    )
