"""The baseline encoder-decoder: shapes, masking, decoding, and a short run that learns."""

from __future__ import annotations

import torch

from lstm_harness.config import ModelConfig, MonitorConfig, TrainConfig
from lstm_harness.diagnostics.monitor import Monitors
from lstm_harness.models.seq2seq import Seq2Seq, count_parameters, decoder_inputs
from lstm_harness.tasks.base import BOS, EOS, PAD
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.training.evaluate import evaluate
from lstm_harness.training.loop import TrainState, train
from lstm_harness.training.optim import make_optimizer
from lstm_harness.training.techniques import Techniques


def small_task(**kw) -> CopyTask:
    params = {"vocab": 6, "min_len": 2, "max_len": 6, "n_valid": 64, "n_test": 64, **kw}
    return CopyTask(CopyParams(**params))


def test_decoder_inputs_shift_right_and_keep_padding():
    tgt = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD]])
    assert decoder_inputs(tgt).tolist() == [[BOS, 5, 6, PAD], [BOS, 7, PAD, PAD]]


def test_shapes_unidirectional_and_bidirectional():
    task = small_task()
    batch = task.train_batch(0, 8, seed=0)
    for bidirectional, layers in [(False, 1), (True, 2)]:
        cfg = ModelConfig(embed=8, hidden=12, layers=layers, bidirectional=bidirectional)
        model = Seq2Seq(cfg, task.src_vocab_size, task.tgt_vocab_size)
        logits = model(batch)
        assert logits.shape == (8, batch.tgt.shape[1], task.tgt_vocab_size)
        memory = model.encode_batch(batch.src, batch.src_len)
        assert memory.context.shape == (8, 12 * (2 if bidirectional else 1))
        assert memory.keys.shape == (8, batch.src.shape[1], 12 * (2 if bidirectional else 1))
        assert len(memory.init) == layers
        assert all(h.shape == c.shape == (8, 12) for h, c in memory.init)
        out = model.greedy(batch.src, batch.src_len, max_len=7)
        assert out.shape[0] == 8 and out.shape[1] <= 7


def test_parameter_count_matches_formula():
    cfg = ModelConfig(embed=4, hidden=5, layers=1)
    model = Seq2Seq(cfg, src_vocab=10, tgt_vocab=9)
    lstm = lambda x, h: 4 * h * (x + h) + 8 * h  # noqa: E731  (two bias vectors in nn.LSTM)
    expected = 10 * 4 + 9 * 4 + lstm(4, 5) + lstm(4 + 5, 5) + 5 * 9 + 9
    assert count_parameters(model) == expected


def test_encoder_ignores_padding():
    """Padding after a sequence does not change its encoding (packed sequences)."""
    task = small_task()
    model = Seq2Seq(ModelConfig(embed=8, hidden=12), task.src_vocab_size, task.tgt_vocab_size)
    src = torch.tensor([[4, 5, 6]])
    padded = torch.tensor([[4, 5, 6, PAD, PAD]])
    a = model.encode_batch(src, torch.tensor([3]))
    b = model.encode_batch(padded, torch.tensor([3]))
    torch.testing.assert_close(a.context, b.context)
    torch.testing.assert_close(a.keys, b.keys[:, :3])


def test_greedy_stops_after_eos_with_padding():
    task = small_task()
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=8, hidden=12), task.src_vocab_size, task.tgt_vocab_size)
    with torch.no_grad():  # make EOS the argmax everywhere
        model.head.bias.fill_(-10.0)
        model.head.bias[EOS] = 10.0
    batch = task.train_batch(0, 4, seed=0)
    out = model.greedy(batch.src, batch.src_len, max_len=5)
    assert out[:, 0].tolist() == [EOS] * 4
    assert out.shape[1] == 1  # every sequence finished, decoding stopped


def test_short_training_run_learns():
    task = small_task(variant="reverse")
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=16, hidden=32), task.src_vocab_size, task.tgt_vocab_size)
    cfg = TrainConfig(steps=150, batch_size=32, lr=1e-2, eval_every=150, log_every=10)
    losses: list[float] = []
    evals: list[dict] = []
    before = evaluate(model, task, "valid", 64, torch.device("cpu"))
    optimizer = make_optimizer(model.parameters(), cfg)
    train(model, optimizer, task, cfg, seed=0, state=TrainState(), device=torch.device("cpu"),
          techniques=Techniques(cfg, model, optimizer, task),
          monitors=Monitors(MonitorConfig(grad_anomaly=False), task, torch.device("cpu")),
          on_log=lambda s, m: losses.append(m["train.loss"]),
          on_eval=lambda s, m: evals.append(m))
    assert len(losses) == 15 and len(evals) == 1
    assert sum(losses[-3:]) / 3 < 0.6 * sum(losses[:3]) / 3
    assert evals[0]["loss"] < 0.6 * before["loss"]
    assert evals[0]["token_accuracy"] > before["token_accuracy"] + 0.2
