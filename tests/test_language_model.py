"""The language_model task (streams, truncated BPTT, metrics, unigram reference) and the
LanguageModel head (carried states, tying, per-layer sizes, AR/TAR, embedding dropout,
MC-dropout evaluation, exact resumption)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from checkpoints import final_test_metrics, run_keeping_checkpoints

from lstm_harness.config import ModelConfig
from lstm_harness.models.dropout import embedding_dropout
from lstm_harness.models.language_model import LanguageModel
from lstm_harness.models.losses import LossConfig
from lstm_harness.models.regularization import activation_regularization
from lstm_harness.tasks.base import IGNORE, StreamBatch
from lstm_harness.tasks.language_model import (
    EOS_ID,
    UNK_ID,
    LanguageModelParams,
    LanguageModelTask,
)
from lstm_harness.training.evaluate import evaluate_stream
from lstm_harness.trial import Runtime, execute_trial
from lstm_harness.trial_spec import TrialSpec, TrialTask

RUNTIME = Runtime(tracking_uri=None, experiment_id=None, parent_run_id=None)
WORDS = "the a cat dog sat ran on under mat rug big small red".split()


def corpus(folder: Path, lines: int = 300, seed: int = 0) -> Path:
    """Three files of random short sentences over a 13-word vocabulary."""
    g = torch.Generator().manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", lines), ("valid", lines // 5), ("test", lines // 5)):
        rows = []
        for _ in range(n):
            length = int(torch.randint(3, 9, (1,), generator=g))
            rows.append(" ".join(WORDS[int(i)] for i in torch.randint(0, len(WORDS),
                                                                       (length,), generator=g)))
        (folder / f"{split}.txt").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def task(tmp_path: Path) -> LanguageModelTask:
    return LanguageModelTask(LanguageModelParams(source="files", files=str(corpus(tmp_path)),
                                                 bptt=7))


def lm(task: LanguageModelTask, **model) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(ModelConfig(**{"embed": 8, "hidden": 16, **model}), task.vocab_size)


# -- the task ---------------------------------------------------------------------------------

def test_vocabulary_caps_by_frequency_and_keeps_unk(tmp_path: Path) -> None:
    folder = tmp_path / "v"
    folder.mkdir()
    (folder / "train.txt").write_text("b b b a a c <unk>\nc d\n")
    (folder / "valid.txt").write_text("a z b\n")
    (folder / "test.txt").write_text("d\n")
    task = LanguageModelTask(LanguageModelParams(source="files", files=str(folder),
                                                 vocab_size=4))
    # <unk>, <eos>, then the 2 most frequent words (b: 3; a and c: 2 each, a first)
    assert task.vocab.tokens == ["<unk>", "<eos>", "b", "a"]
    b, a = 2, 3
    assert task.ids["train"].tolist() == [b, b, b, a, a, UNK_ID, UNK_ID, EOS_ID,
                                          UNK_ID, UNK_ID, EOS_ID]
    assert task.ids["valid"].tolist() == [a, UNK_ID, b, EOS_ID]


def test_char_level_units(tmp_path: Path) -> None:
    folder = tmp_path / "c"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text("ab a\nba\n")
    task = LanguageModelTask(LanguageModelParams(source="files", files=str(folder),
                                                 level="char"))
    assert task.vocab.tokens == ["<unk>", "<eos>", " ", "a", "b"]
    assert task.ids["train"].tolist() == [3, 4, 2, 3, EOS_ID, 4, 3, EOS_ID]


def test_streams_and_bptt_batches(task: LanguageModelTask) -> None:
    ids = task.ids["train"]
    streams = task.streams("train", 4)
    length = len(ids) // 4
    assert torch.equal(streams, ids[: 4 * length].view(4, length))
    k = task.batches_per_epoch("train", 4)
    assert k == math.ceil((length - 1) / 7)
    first, second = task.train_batch(0, 4, seed=0), task.train_batch(1, 4, seed=5)
    assert first.reset and not second.reset
    assert torch.equal(first.inputs, streams[:, :7]) and torch.equal(first.targets,
                                                                      streams[:, 1:8])
    assert torch.equal(second.inputs, streams[:, 7:14])
    last = task.train_batch(k - 1, 4, seed=0)
    assert last.targets[:, -1].tolist() == streams[:, -1].tolist()
    wrapped = task.train_batch(k, 4, seed=0)  # the next epoch starts the streams again
    assert wrapped.reset and torch.equal(wrapped.inputs, first.inputs)
    again = task.train_batch(1, 4, seed=0)  # a pure function of (batch size, step)
    assert torch.equal(again.inputs, second.inputs)


def test_eval_batches_cover_the_split_in_order(task: LanguageModelTask) -> None:
    batches = list(task.eval_batches("valid", 3))
    assert [b.reset for b in batches] == [True] + [False] * (len(batches) - 1)
    streams = task.streams("valid", 3)
    assert torch.equal(torch.cat([b.targets for b in batches], 1), streams[:, 1:])


def test_metrics_by_hand(task: LanguageModelTask) -> None:
    targets = torch.tensor([2, EOS_ID, UNK_ID])
    word = task.vocab.tokens[2]
    nll = torch.tensor([math.log(2), math.log(4), math.log(8)], dtype=torch.float64)
    got = task.score(nll, torch.tensor([True, False, False]), targets)
    chars = (len(word) + 1) + 0 + len("<unk>") + 1  # <eos> is the line break after a word
    assert got["perplexity"] == pytest.approx(math.exp((1 + 2 + 3) * math.log(2) / 3))
    assert got["bpc"] == pytest.approx(6 / chars)
    assert got["accuracy"] == pytest.approx(1 / 3)


def test_char_bpc_is_nats_over_ln2_per_character(tmp_path: Path) -> None:
    task = LanguageModelTask(LanguageModelParams(source="files", level="char",
                                                 files=str(corpus(tmp_path))))
    nll = torch.full((10,), 0.7, dtype=torch.float64)
    got = task.score(nll, torch.zeros(10, dtype=torch.bool), torch.full((10,), 3))
    assert got["bpc"] == pytest.approx(0.7 / math.log(2))
    assert got["perplexity"] == pytest.approx(math.exp(0.7))


def test_unigram_reference_by_hand(tmp_path: Path) -> None:
    folder = tmp_path / "u"
    folder.mkdir()
    (folder / "train.txt").write_text("a a b\n")  # a: 2, b: 1, <eos>: 1, <unk>: 0 of N = 4
    (folder / "valid.txt").write_text("b a\n")
    (folder / "test.txt").write_text("b a\n")
    task = LanguageModelTask(LanguageModelParams(source="files", files=str(folder)))
    v = task.vocab_size  # <unk>, <eos>, a, b
    assert v == 4
    p = {"a": 3 / 8, "b": 2 / 8, "<eos>": 2 / 8}  # (count + 1) / (N + V)
    ref = task.reference_scores("test")["unigram"]
    nll = -(math.log(p["a"]) + math.log(p["<eos>"])) / 2  # targets after the first token
    assert ref["perplexity"] == pytest.approx(math.exp(nll))
    assert ref["accuracy"] == pytest.approx(0.5)  # the most frequent token, a, once in two


# -- the head ---------------------------------------------------------------------------------

def test_carried_state_equals_one_long_pass(task: LanguageModelTask) -> None:
    model = lm(task, layers=2).eval()
    full = torch.cat([task.train_batch(s, 4, 0).inputs for s in range(3)], 1)
    one_pass = model.predict(full)[0]
    loss_cfg = LossConfig()
    chunks = []
    for step in range(3):
        _, logits, _ = model.training_loss(task.train_batch(step, 4, 0), loss_cfg)
        chunks.append(logits)
    assert torch.allclose(torch.cat(chunks, 1), one_pass, atol=1e-5)
    # a reset batch starts from zeros again
    _, restarted, _ = model.training_loss(task.train_batch(0, 4, 0), loss_cfg)
    assert torch.allclose(restarted, chunks[0], atol=1e-6)


def test_evaluation_carries_its_own_state_and_leaves_the_training_carry(
        task: LanguageModelTask) -> None:
    model = lm(task)
    streams = task.streams("valid", 3)
    model.eval()
    with torch.no_grad():
        logits = model.predict(streams[:, :-1])[0]
    log_p = torch.log_softmax(logits, -1).gather(2, streams[:, 1:].unsqueeze(-1)).squeeze(-1)
    expected = -log_p.double().mean()
    model.train()
    model.training_loss(task.train_batch(0, 4, 0), LossConfig())
    carry = [tuple(s.clone() for s in state) for state in model._carry]
    metrics = evaluate_stream(model, task, "valid", 3, torch.device("cpu"))
    assert metrics["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert all(torch.equal(a, b) for old, new in zip(carry, model._carry, strict=True)
               for a, b in zip(old, new, strict=True))
    assert model.training


def test_carry_is_in_the_state_dict(task: LanguageModelTask) -> None:
    model = lm(task, hidden_sizes=[16, 12])
    model.training_loss(task.train_batch(0, 4, 0), LossConfig())
    copy = lm(task, hidden_sizes=[16, 12])
    copy.load_state_dict(model.state_dict())
    assert [h.shape[1] for h, _ in copy._carry] == [16, 12]
    for (h0, c0), (h1, c1) in zip(model._carry, copy._carry, strict=True):
        assert torch.equal(h0, h1) and torch.equal(c0, c1)


def test_tied_weights_share_the_embedding(task: LanguageModelTask) -> None:
    model = lm(task, hidden_sizes=[16, 8], tie_weights=True)
    assert model.head.weight is model.embedding.weight
    assert [layer.output_size for layer in model.stack.layers] == [16, 8]
    untied = lm(task, hidden_sizes=[16, 8])
    shared = task.vocab_size * 8
    assert (sum(p.numel() for p in untied.parameters())
            - sum(p.numel() for p in model.parameters())) == shared
    with pytest.raises(ValueError, match=r"top layer's size \(16\) must equal model.embed "
                                         r"\(8\)"):
        lm(task, tie_weights=True)


def test_activation_regularization_by_hand() -> None:
    dropped = torch.tensor([[[1.0, 2.0], [0.0, 2.0], [3.0, 0.0]]])  # [1, 3, 2]
    raw = torch.tensor([[[1.0, 1.0], [2.0, 3.0], [2.0, 0.0]]])
    mask = torch.tensor([[True, True, False]])
    ar = (1 + 4 + 0 + 4) / 4  # counted steps 0 and 1
    tar = ((2 - 1) ** 2 + (3 - 1) ** 2) / 2  # the pair (0, 1) only
    got = activation_regularization(dropped, raw, mask, ar=2.0, tar=3.0)
    assert float(got) == pytest.approx(2.0 * ar + 3.0 * tar)
    unmasked = activation_regularization(dropped, raw, None, ar=1.0, tar=0.0)
    assert float(unmasked) == pytest.approx(dropped.pow(2).mean().item())


def test_ar_tar_change_the_training_loss(task: LanguageModelTask) -> None:
    model = lm(task)
    batch = task.train_batch(0, 4, 0)
    plain = model.training_loss(batch, LossConfig())[0]
    regularised = model.training_loss(batch, LossConfig(ar=2.0, tar=1.0))[0]
    _, _, dropped, raw = model.run(batch.inputs)
    extra = activation_regularization(dropped, raw, batch.counted, 2.0, 1.0)
    assert float(regularised.detach()) == pytest.approx(float((plain + extra).detach()),
                                                        rel=1e-5)


def test_embedding_dropout_drops_whole_rows() -> None:
    torch.manual_seed(0)
    weight = torch.randn(50, 6)
    dropped = embedding_dropout(weight, 0.4, training=True)
    zero_rows = (dropped == 0).all(1)
    assert 5 < int(zero_rows.sum()) < 35
    kept = ~zero_rows
    assert torch.allclose(dropped[kept], weight[kept] / 0.6)
    assert embedding_dropout(weight, 0.4, training=False) is weight


def test_mc_dropout_evaluation(task: LanguageModelTask) -> None:
    device = torch.device("cpu")
    plain = lm(task)
    metrics = evaluate_stream(plain, task, "valid", 3, device, mc_samples=3)
    for name in ("perplexity", "bpc", "accuracy", "loss"):  # no dropout: MC is the same
        assert metrics[f"{name}_mc"] == pytest.approx(metrics[name], rel=1e-6)
    dropped = lm(task, dropout={"output": 0.5, "embedding": 0.3})
    torch.manual_seed(1)
    metrics = evaluate_stream(dropped, task, "valid", 3, device, mc_samples=4)
    assert metrics["perplexity_mc"] != pytest.approx(metrics["perplexity"], rel=1e-4)
    # loss_mc = mean_t -log (1/N sum_s p_s(y_t)), by hand on a split that is one batch
    one = LanguageModelTask(LanguageModelParams(source="files", files=task.params.files,
                                                bptt=10_000))
    (batch,) = list(one.eval_batches("valid", 3))
    torch.manual_seed(2)
    metrics = evaluate_stream(dropped, one, "valid", 3, device, mc_samples=4)
    dropped.train()
    torch.manual_seed(2)  # the standard pass before the MC passes draws no random numbers
    with torch.no_grad():
        probs = sum(torch.softmax(dropped.predict(batch.inputs)[0], -1) for _ in range(4)) / 4
    nll = -probs.log().gather(2, batch.targets.unsqueeze(-1)).double().mean()
    assert metrics["loss_mc"] == pytest.approx(float(nll), rel=1e-6)


def test_ignored_targets_do_not_count(task: LanguageModelTask) -> None:
    model = lm(task)
    batch = task.train_batch(0, 4, 0)
    targets = batch.targets.clone()
    targets[:, :3] = IGNORE
    masked = StreamBatch(batch.inputs, targets, batch.ids)
    logits = model(masked)
    expected = torch.nn.functional.cross_entropy(logits[:, 3:].reshape(-1, task.vocab_size),
                                                 batch.targets[:, 3:].reshape(-1))
    assert model.loss(masked).item() == pytest.approx(expected.item(), rel=1e-5)


# -- trials -----------------------------------------------------------------------------------

def lm_trial(folder: Path, **train) -> TrialSpec:
    return TrialSpec(
        config={"model": {"embed": 8, "hidden": 16,
                          "dropout": {"output": 0.2, "variational": True, "weight_drop": 0.2,
                                      "embedding": 0.1}},
                "train": {"steps": 30, "batch_size": 4, "eval_every": 10,
                          "eval_batch_size": 3, **train}},
        task=TrialTask("language_model", "language_model",
                       {"source": "files", "files": str(folder), "bptt": 7}),
        seed=0, key="lm", suite="lm")


def test_resumed_lm_trial_equals_the_uninterrupted_one(tmp_path: Path) -> None:
    trial = lm_trial(corpus(tmp_path / "c"))
    full, checkpoints = run_keeping_checkpoints(trial, RUNTIME)
    middle = checkpoints[1]
    assert middle["state"]["step"] == 20
    assert middle["model"]["_extra_state"]  # the carried states travel with the weights
    resumed = execute_trial(trial, RUNTIME, resume=middle)
    assert final_test_metrics(resumed) == final_test_metrics(full)


def test_trial_reports_mc_metrics_only_when_asked(tmp_path: Path) -> None:
    folder = corpus(tmp_path / "c")
    plain = execute_trial(lm_trial(folder), RUNTIME)
    assert "test.perplexity" in plain and "test.perplexity_mc" not in plain
    mc = execute_trial(lm_trial(folder, mc_samples=2), RUNTIME)
    assert mc["test.perplexity"] == plain["test.perplexity"]  # the same model
    assert mc["test.perplexity_mc"] != mc["test.perplexity"]
