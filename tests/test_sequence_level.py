"""Sequence-level training (REINFORCE, SCST, MRT, MIXER): the estimators against exact
gradients on toys, the baselines and candidate sets on hand-made inputs, each kind end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

import lstm_harness.trial as trial_module
from lstm_harness.config import ModelConfig
from lstm_harness.models.losses import LossConfig, token_cross_entropy
from lstm_harness.models.seq2seq import Seq2Seq
from lstm_harness.suite import SuiteError, load_suite
from lstm_harness.tasks.base import EOS, PAD, Seq2SeqBatch, pad_sequences
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.training import sequence_level as sl
from lstm_harness.training.decoding import Decoded
from lstm_harness.training.sequence_level import (
    SequenceObjective,
    content_lengths,
    distinct_counts,
    first_occurrence,
    leave_one_out_baseline,
    mrt_loss,
    mrt_weights,
    policy_gradient_loss,
)
from lstm_harness.trial import Runtime, execute_trial


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Tiny tensors: one thread is faster on the busy machine."""


def make_batch(sources: list[list[int]], targets: list[list[int]]) -> Seq2SeqBatch:
    src, src_len = pad_sequences(sources)
    tgt, tgt_len = pad_sequences(targets, append_eos=True)
    return Seq2SeqBatch(src, src_len, tgt, tgt_len, torch.full((len(sources),), -1))


def decoded(rows: list[list[int]], width: int | None = None) -> Decoded:
    """Hand-made candidates (EOS included where given), PAD after; scores are leaf tensors."""
    width = width or max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, :len(row)] = torch.tensor(row)
    lengths = torch.tensor([len(r) for r in rows])
    logprobs = torch.where(tokens != PAD, -0.5, 0.0)
    return Decoded(tokens, lengths, logprobs, logprobs.sum(1).clone().requires_grad_(True))


def tiny_model(seed: int = 0, vocab: int = 8) -> Seq2Seq:
    torch.manual_seed(seed)
    return Seq2Seq(ModelConfig(embed=8, hidden=16), vocab, vocab)


# ----------------------------------------------------------------------------- REINFORCE


@pytest.mark.parametrize("baseline", ["none", "constant", "leave_one_out"])
def test_reinforce_estimate_matches_exact_gradient(baseline):
    """E[(R(y) - b) grad log pi(y)] = grad E[R]: the loss's gradient with 200k samples is
    -grad sum_y pi(y) R(y), whatever the baseline (constant, or leave-one-out in groups)."""
    rewards = torch.tensor([0.1, 0.9, 0.4, 0.0, 0.7])
    theta0 = torch.tensor([0.3, -0.2, 0.5, 0.1, -0.6])

    theta = theta0.clone().requires_grad_(True)
    (torch.softmax(theta, 0) * rewards).sum().backward()
    exact = -theta.grad

    n, k = 200_000, 4
    gen = torch.Generator().manual_seed(0)
    y = torch.multinomial(torch.softmax(theta0, 0), n, replacement=True, generator=gen)
    theta = theta0.clone().requires_grad_(True)
    logp = torch.log_softmax(theta, 0)[y]
    r = rewards[y]
    if baseline == "none":
        b = torch.zeros(n)
    elif baseline == "constant":
        b = torch.full((n,), 0.6)
    else:
        b = leave_one_out_baseline(r.view(-1, k)).reshape(-1)
    policy_gradient_loss(logp, r, b).backward()
    # per-sample gradients are O(1): the standard error of the mean is ~ 1 / sqrt(n) ~ 0.002
    assert torch.allclose(theta.grad, exact, atol=0.01), (theta.grad, exact)
    assert exact.abs().max() > 0.05  # the comparison is not trivially between zeros


def test_policy_gradient_loss_carries_no_gradient_through_the_advantage():
    logp = torch.tensor([-1.0, -2.0], requires_grad=True)
    reward = torch.tensor([1.0, 0.0], requires_grad=True)
    baseline = torch.tensor([0.25, 0.25], requires_grad=True)
    loss = policy_gradient_loss(logp, reward, baseline)
    assert loss.item() == pytest.approx(-(0.75 * -1.0 + -0.25 * -2.0) / 2)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([-0.375, 0.125]))
    assert reward.grad is None and baseline.grad is None


# ----------------------------------------------------------------------------- SCST


def test_scst_pushes_up_exactly_the_samples_that_beat_greedy(monkeypatch):
    """b = R(greedy): d loss / d log pi(y_i) = -(R_i - R(greedy)) / N, negative exactly for
    the samples with a higher reward than the greedy decode; greedy runs in eval mode."""
    batch = make_batch([[3, 4, 5], [6, 7]], [[3, 4, 5], [6, 7]])
    samples = decoded([[3, 4, 5, EOS], [3, EOS], [3, 4, EOS],  # source 0
                       [6, EOS], [3, 3, EOS], [4, EOS]])       # source 1
    best = decoded([[3, 4, EOS], [3, EOS]])
    greedy_modes = []

    def fake_greedy(model, *args, **kwargs):
        greedy_modes.append(model.training)
        return best

    monkeypatch.setattr(sl, "sample", lambda *args, **kwargs: samples)
    monkeypatch.setattr(sl, "greedy", fake_greedy)
    cfg = LossConfig(kind="scst", samples=3, reward="rouge1")
    objective = SequenceObjective(cfg, max_len=6)
    model = torch.nn.Linear(1, 1).train()
    loss, stats = objective.loss(model, batch, step=0)
    loss.backward()

    assert greedy_modes == [False] and model.training  # eval for greedy, then train again
    # ROUGE-1 F1: greedy 0.8 and 0 (F1 of [3,4] and [3] against [3,4,5] and [6,7])
    reward = torch.tensor([1.0, 0.5, 0.8, 2 / 3, 0.0, 0.0])
    baseline = torch.tensor([0.8, 0.8, 0.8, 0.0, 0.0, 0.0])
    expected = -(reward - baseline) / 6
    assert torch.allclose(samples.scores.grad, expected, atol=1e-6)
    beats = (reward > baseline).tolist()
    assert [g < 0 for g in samples.scores.grad.tolist()] == beats == [True, False, False,
                                                                       True, False, False]
    assert samples.scores.grad[2] == 0 and samples.scores.grad[4] == 0  # ties: no push
    assert stats["seq.reward"] == pytest.approx(reward.mean().item())
    assert stats["seq.baseline"] == pytest.approx(baseline.mean().item())
    assert stats["seq.advantage_var"] == pytest.approx((reward - baseline).var().item())
    assert stats["seq.entropy"] == pytest.approx(0.5)
    assert stats["seq.distinct"] == 3.0


def test_reinforce_with_leave_one_out_baseline_through_the_objective(monkeypatch):
    batch = make_batch([[3, 4, 5]], [[3, 4, 5]])
    samples = decoded([[3, 4, 5, EOS], [3, EOS], [3, 4, EOS]])
    monkeypatch.setattr(sl, "sample", lambda *args, **kwargs: samples)
    cfg = LossConfig(kind="reinforce", baseline="leave_one_out", samples=3, reward="rouge1")
    loss, stats = SequenceObjective(cfg, max_len=6).loss(torch.nn.Linear(1, 1), batch, 0)
    loss.backward()
    reward = torch.tensor([1.0, 0.5, 0.8])
    baseline = torch.tensor([0.65, 0.9, 0.75])
    assert torch.allclose(samples.scores.grad, -(reward - baseline) / 3, atol=1e-6)
    assert stats["seq.baseline"] == pytest.approx(baseline.mean().item())


# ----------------------------------------------------------------------------- MRT


def test_first_occurrence_and_distinct_counts_on_hand_made_rows():
    tokens = torch.tensor([
        [3, 4, EOS, PAD],  # source 0: kept
        [3, 4, EOS, 7],    # equal to row 0 up to its length (3): duplicate
        [3, EOS, PAD, PAD],  # kept
        [3, 4, EOS, PAD],  # exact duplicate of row 0
        [5, 6, 7, 3],      # source 1, length 2: kept
        [5, 6, 3, 3],      # same first 2 tokens and length: duplicate
        [5, 6, 3, 3],      # length 3: different from both
        [5, 6, PAD, PAD],  # length 2: duplicate of row 4 once the padding is ignored
    ])
    lengths = torch.tensor([3, 3, 2, 3, 2, 2, 3, 2])
    keep = first_occurrence(tokens, lengths, 4)
    assert keep.tolist() == [[True, False, True, False], [True, False, True, False]]
    assert distinct_counts(tokens, lengths, 4).tolist() == [2, 2]
    assert distinct_counts(tokens, lengths, 2).tolist() == [1, 2, 1, 2]
    assert distinct_counts(tokens, lengths, 1).tolist() == [1] * 8


def test_mrt_weights_are_a_distribution_over_the_kept_candidates():
    logp = torch.tensor([[-1.0, -1.0, -3.0, -1.0], [-0.5, -2.0, -4.0, -0.1]])
    keep = torch.tensor([[True, False, True, False], [True, True, True, True]])
    q = mrt_weights(logp, 0.5, keep)
    assert torch.allclose(q.sum(1), torch.ones(2))
    assert q[0, 1] == 0 and q[0, 3] == 0
    assert torch.allclose(q[0, [0, 2]], torch.softmax(0.5 * logp[0, [0, 2]], 0))
    p = logp[1].exp() ** 0.5  # Q = P^alpha / sum P^alpha
    assert torch.allclose(q[1], p / p.sum())
    reward = torch.tensor([[1.0, 1.0, 0.0, 1.0], [0.2, 0.4, 0.6, 0.8]])
    expected = ((q * (1 - reward)).sum(1)).mean()
    assert mrt_loss(q, reward).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("alpha", [1.0, 0.005])
def test_raising_a_reward_raises_its_mrt_weight_after_a_step(alpha):
    """One SGD step on L = sum_y Q(y) (1 - R(y)) with logp = log_softmax(theta) as the model:
    the candidate whose reward was raised ends with a larger Q than without the raise."""
    theta0 = torch.tensor([0.2, -0.1, 0.4, 0.0, -0.3])
    keep = torch.ones(1, 5, dtype=torch.bool)
    base = torch.tensor([[0.3, 0.5, 0.2, 0.6, 0.4]])
    j = 2
    raised = base.clone()
    raised[0, j] = 0.9

    def q_after_step(reward: torch.Tensor) -> float:
        theta = theta0.clone().requires_grad_(True)
        mrt_loss(mrt_weights(torch.log_softmax(theta, 0)[None], alpha, keep), reward).backward()
        with torch.no_grad():
            theta -= (1.0 / alpha) * theta.grad
            return mrt_weights(torch.log_softmax(theta, 0)[None], alpha, keep)[0, j].item()

    assert q_after_step(raised) > q_after_step(base)
    # and the step itself moves Q(y_j) up when y_j has the best reward
    before = mrt_weights(torch.log_softmax(theta0, 0)[None], alpha, keep)[0, j].item()
    assert q_after_step(raised) > before


@pytest.mark.parametrize("reference", [True, False])
def test_mrt_candidates_include_the_reference(monkeypatch, reference):
    """Source 0's samples are all one sequence (the reference joins it: 2 candidates, or 1);
    source 1 samples its reference (which is then a duplicate: 2 either way)."""
    batch = make_batch([[3, 4], [5, 6]], [[3, 4], [5, 6]])
    samples = decoded([[3, EOS], [3, EOS], [3, EOS], [5, 6, EOS], [6, EOS], [6, EOS]])
    monkeypatch.setattr(sl, "sample", lambda *args, **kwargs: samples)
    cfg = LossConfig(kind="mrt", samples=3, reward="rouge1", mrt_alpha=1.0,
                     mrt_reference=reference)
    model = tiny_model()
    loss, stats = SequenceObjective(cfg, max_len=4).loss(model, batch, 0)
    expected = (2 + 2) / 2 if reference else (1 + 2) / 2
    assert stats["seq.candidates"] == expected
    assert stats["seq.distinct"] == 1.5  # of the samples only
    assert stats["seq.reward"] == pytest.approx((3 * 2 / 3 + 1.0 + 2 * 2 / 3) / 6)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    if not reference:  # source 0 has one candidate (Q = 1, risk 1 - 2/3)
        assert loss.item() > (1 / 3) / 2


# ----------------------------------------------------------------------------- helpers


def test_leave_one_out_baseline_content_lengths_and_distinct_counts():
    reward = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.9]])
    assert torch.allclose(leave_one_out_baseline(reward),
                          torch.tensor([[2.5, 2.0, 1.5], [0.45, 0.45, 0.0]]))
    assert torch.allclose(leave_one_out_baseline(torch.tensor([[0.2, 0.8]])),
                          torch.tensor([[0.8, 0.2]]))

    tokens = torch.tensor([[3, 4, EOS, PAD], [3, 4, 5, 6], [EOS, PAD, PAD, PAD],
                           [PAD, PAD, PAD, PAD], [3, EOS, PAD, PAD]])
    lengths = torch.tensor([3, 4, 1, 0, 2])
    assert content_lengths(tokens, lengths).tolist() == [2, 4, 0, 0, 1]

    rows = torch.tensor([[3, 4, EOS], [3, 4, EOS], [4, 3, EOS], [3, EOS, PAD],
                         [5, EOS, PAD], [5, EOS, 9], [5, EOS, PAD], [5, EOS, 7]])
    lens = torch.tensor([3, 3, 3, 2, 2, 2, 2, 2])
    assert distinct_counts(rows, lens, 4).tolist() == [3, 1]


# ----------------------------------------------------------------------------- MIXER


def test_mixer_boundary_schedule():
    cfg = LossConfig(kind="mixer", pretrain_steps=10, mixer_start=6, mixer_every=5,
                     mixer_delta=2)
    objective = SequenceObjective(cfg, max_len=9, task_reward="bleu")
    # Delta_t = max(0, start - delta * ((t - pretrain) // every))
    got = {t: objective.mixer_boundary(t) for t in (10, 14, 15, 19, 20, 25, 29, 30, 100)}
    assert got == {10: 6, 14: 6, 15: 4, 19: 4, 20: 2, 25: 0, 29: 0, 30: 0, 100: 0}
    default = SequenceObjective(LossConfig(kind="mixer", pretrain_steps=3, mixer_every=4),
                                max_len=9, task_reward="bleu")
    assert [default.mixer_boundary(t) for t in (3, 6, 7, 11)] == [9, 9, 7, 5]


@pytest.mark.parametrize("attention", [None, {"type": "luong", "score": "general"}])
def test_mixer_with_boundary_past_the_target_is_cross_entropy(attention):
    task = CopyTask(CopyParams(vocab=5, min_len=2, max_len=5, n_valid=4, n_test=4))
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=8, hidden=16, attention=attention),
                    task.src_vocab_size, task.tgt_vocab_size).eval()
    batch = task.train_batch(0, 6, seed=0)
    cfg = LossConfig(kind="mixer", samples=2, pretrain_steps=4, reward="rouge1")
    objective = SequenceObjective(cfg, task.max_target_len + 1)
    assert objective.mixer_boundary(4) >= batch.tgt.shape[1]
    loss, stats = objective.loss(model, batch, step=4)
    expected = token_cross_entropy(model(batch), batch.tgt, PAD)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert stats["seq.boundary"] == batch.tgt.shape[1]
    assert stats["seq.entropy"] == 0.0  # nothing sampled
    assert stats["seq.reward"] == pytest.approx(1.0)  # the prefix is the whole reference
    assert stats["seq.ce"] == pytest.approx(expected.item(), rel=1e-5)

    # a boundary inside the sentence: sampled tokens get REINFORCE, the prefix is the target's
    cfg = LossConfig(kind="mixer", samples=2, mixer_start=1, reward="rouge1")
    loss, stats = SequenceObjective(cfg, task.max_target_len + 1).loss(model, batch, step=0)
    assert stats["seq.boundary"] == 1.0 and stats["seq.entropy"] > 0
    assert torch.isfinite(loss)


# ----------------------------------------------------------------------------- baseline


def test_moving_average_baseline_recursion_and_state_round_trip(monkeypatch):
    """b <- d b + (1 - d) mean R; a step uses the b from before its update (the first step:
    that step's mean reward); state_dict carries b."""
    batch = make_batch([[3, 4, 5]], [[3, 4, 5]])
    draws = [decoded([[3, 4, 5, EOS], [3, EOS]]),       # R = 1.0, 0.5
             decoded([[3, 4, EOS], [7, EOS]]),          # R = 0.8, 0.0
             decoded([[3, 4, 5, EOS], [3, 4, EOS]])]    # R = 1.0, 0.8
    means = [0.75, 0.4, 0.9]
    d = 0.8
    cfg = LossConfig(kind="reinforce", samples=2, reward="rouge1", baseline_decay=d)
    model = torch.nn.Linear(1, 1)

    def run(objective: SequenceObjective, draw: Decoded) -> dict[str, float]:
        monkeypatch.setattr(sl, "sample", lambda *args, **kwargs: draw)
        return objective.loss(model, batch, 0)[1]

    objective = SequenceObjective(cfg, max_len=6)
    assert objective.state_dict() == {"average": None}
    stats = run(objective, draws[0])
    assert stats["seq.baseline"] == pytest.approx(means[0])
    assert objective.average == pytest.approx(means[0])
    stats = run(objective, draws[1])
    assert stats["seq.baseline"] == pytest.approx(means[0])
    b2 = d * means[0] + (1 - d) * means[1]
    assert objective.average == pytest.approx(b2)

    restored = SequenceObjective(cfg, max_len=6)
    restored.load_state_dict(objective.state_dict())
    assert restored.average == pytest.approx(b2)
    for obj in (objective, restored):
        stats = run(obj, draws[2])
        assert stats["seq.baseline"] == pytest.approx(b2)
        assert stats["seq.advantage_var"] == pytest.approx(
            torch.tensor([1.0 - b2, 0.8 - b2]).var().item())
        assert obj.average == pytest.approx(d * b2 + (1 - d) * means[2])


# ----------------------------------------------------------------------------- end to end


KINDS = {
    "reinforce_ma": {"kind": "reinforce", "samples": 2},
    "reinforce_loo": {"kind": "reinforce", "samples": 2, "baseline": "leave_one_out"},
    "scst": {"kind": "scst", "samples": 2},
    "mrt": {"kind": "mrt", "samples": 3, "mrt_alpha": 0.5},
    "mixer": {"kind": "mixer", "samples": 1, "mixer_start": 2, "mixer_every": 1,
              "mixer_delta": 1},
    "reinforce_mix": {"kind": "reinforce", "samples": 2, "mix_lambda": 0.5},
}
PRETRAIN, STEPS = 2, 5


def write_suite(folder: Path, task: dict, axes: dict, name: str = "seqlevel") -> Path:
    suite = {
        "name": name,
        "tasks": [task],
        "base": {"model": {"embed": 8, "hidden": 8},
                 "train": {"steps": STEPS, "batch_size": 8, "eval_every": 100, "log_every": 1,
                           "eval_batch_size": 16}},
        "axes": axes,
        "seeds": [0],
        "metrics": ["exact_match"] if task["name"] == "copy" else ["bleu"],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


COPY = {"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 4, "n_valid": 8,
                                   "n_test": 8}}


@pytest.fixture(scope="module")
def kind_trials(tmp_path_factory):
    axes = {"objective": {name: {"train.loss": {**loss, "reward": "rouge1",
                                                "pretrain_steps": PRETRAIN}}
                          for name, loss in KINDS.items()}}
    path = write_suite(tmp_path_factory.mktemp("seqlevel"), COPY, axes)
    return {t.variants["objective"]: t for t in load_suite(path).trials()}


@pytest.fixture
def train_logs(monkeypatch):
    """Every on_log record of the trials run in the test (one per step with log_every 1)."""
    records: list[tuple[int, dict[str, float]]] = []
    real_train = trial_module.train

    def spy(model, optimizer, task, cfg, seed, state, device, techniques, monitors,
            on_log, on_eval):
        def log(state, metrics):
            records.append((state.step, dict(metrics)))
            on_log(state, metrics)
        real_train(model, optimizer, task, cfg, seed, state, device, techniques, monitors,
                   log, on_eval)

    monkeypatch.setattr(trial_module, "train", spy)
    return records


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_trains_end_to_end_and_logs(kind_trials, train_logs, kind):
    final = execute_trial(kind_trials[kind], Runtime(None, None, None))
    assert 0.0 <= final["test.token_accuracy"] <= 1.0
    assert [step for step, _ in train_logs] == list(range(1, STEPS + 1))
    for step, metrics in train_logs[:PRETRAIN]:  # the cross-entropy stage
        assert not [k for k in metrics if k.startswith("seq.")], (step, metrics)
        assert "train.accuracy" in metrics
    expected = {"seq.reward", "seq.entropy", "seq.distinct"}
    if kind != "mrt":
        expected |= {"seq.baseline", "seq.advantage_var"}
    if kind == "mrt":
        expected |= {"seq.candidates", "seq.q_max"}
    if kind == "mixer":
        expected |= {"seq.boundary"}
    if kind == "reinforce_mix":
        expected |= {"seq.ce"}
    for step, metrics in train_logs[PRETRAIN:]:
        assert expected <= set(metrics), (step, expected - set(metrics))
        assert all(torch.isfinite(torch.tensor(metrics[k])) for k in expected)
        assert 0.0 <= metrics["seq.reward"] <= 1.0
        assert metrics["seq.entropy"] >= 0.0
    if kind == "mixer":  # Delta: 2, 1, 0 over the three sequence-level steps
        assert [m["seq.boundary"] for _, m in train_logs[PRETRAIN:]] == [2.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- validation


def test_task_reward_needs_a_task_with_a_default_reward(tmp_path):
    axes = {"objective": {"ce": {}, "scst": {"train.loss": {"kind": "scst"}}}}
    path = write_suite(tmp_path, COPY, axes, name="copyreward")
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert "'copy'" in message and "default reward" in message and "objective.scst" in message

    axes["objective"]["scst"]["train.loss"]["reward"] = "rouge1"  # a named reward is fine
    assert len(load_suite(write_suite(tmp_path, COPY, axes, name="named")).trials()) == 2

    translation = {"name": "translation", "params": {"source": "gettext", "lang": "de"}}
    axes = {"objective": {"ce": {}, "scst": {"train.loss": {"kind": "scst"}}}}
    suite = load_suite(write_suite(tmp_path, translation, axes, name="translationreward"))
    assert suite.task_classes["translation"].default_reward == "bleu"
    assert len(suite.trials()) == 2
