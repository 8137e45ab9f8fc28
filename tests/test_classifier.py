"""The SequenceClassifier head (kind ``classify``): readouts against nn.LSTM with copied
weights, true lengths, hierarchical context, token inputs, losses and AR/TAR, evaluation and
MC-dropout evaluation by hand, and sequence batches of several lengths concatenated."""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar, Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lstm_harness.config import ModelConfig
from lstm_harness.models.classifier import SequenceClassifier
from lstm_harness.models.factory import build_model
from lstm_harness.models.losses import LossConfig
from lstm_harness.models.regularization import activation_regularization
from lstm_harness.tasks.base import (
    Direction,
    SequenceBatch,
    SequenceTask,
    TaskParams,
    concat_batches,
)
from lstm_harness.training.evaluate import evaluate_sequences


class ToyParams(TaskParams):
    output: Literal["classes", "values"] = "classes"
    tokens: bool = False


class ToyTask(SequenceTask):
    """Random sequences of 3 features (or token ids < 6) of length 7; label: a class of 4 or
    2 values."""

    name: ClassVar[str] = "toy"
    Params: ClassVar[type[TaskParams]] = ToyParams
    metrics: ClassVar[dict[str, Direction]] = {"accuracy": "max"}

    def __init__(self, params: ToyParams) -> None:
        super().__init__(params)
        self.output = params.output  # an instance attribute: the test flips it

    @property
    def input_features(self) -> int:
        return 3

    @property
    def input_vocab_size(self) -> int | None:
        return 6 if self.params.tokens else None

    @property
    def n_outputs(self) -> int:
        return 4 if self.output == "classes" else 2

    @property
    def sequence_length(self) -> int:
        return 7

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> SequenceBatch:
        g = torch.Generator().manual_seed(seed * 1000 + step)
        if self.params.tokens:
            inputs = torch.randint(0, 6, (batch_size, 7), generator=g)
        else:
            inputs = torch.randn(batch_size, 7, 3, generator=g)
        if self.output == "classes":
            labels = torch.randint(0, 4, (batch_size,), generator=g)
        else:
            labels = torch.randn(batch_size, 2, generator=g)
        return SequenceBatch(inputs, labels, torch.arange(batch_size))

    def eval_batches(self, split: Literal["valid", "test"],
                     batch_size: int) -> Iterator[SequenceBatch]:
        for start in range(0, 10, batch_size):
            batch = self.train_batch(start, min(batch_size, 10 - start), seed=99)
            yield batch

    def score(self, outputs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        if self.output == "classes":
            return {"accuracy": float((outputs.argmax(1) == labels).float().mean())}
        return {"accuracy": float(-((outputs - labels) ** 2).mean())}


def classifier(task: ToyTask | None = None, **model) -> SequenceClassifier:
    torch.manual_seed(0)
    task = task or ToyTask(ToyParams())
    return build_model(ModelConfig(**{"embed": 5, "hidden": 8, **model}), task)


def reference_lstm(model: SequenceClassifier, layers: int = 1) -> nn.LSTM:
    """nn.LSTM with the classifier's stack weights copied in."""
    stack = model.encoder.stack
    ref = nn.LSTM(stack.input_size, 8, layers, batch_first=True)
    with torch.no_grad():
        for index, layer in enumerate(stack.layers):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{index}").copy_(getattr(layer, name))
    return ref


def test_factory_builds_a_classifier_for_classify_tasks() -> None:
    assert isinstance(classifier(), SequenceClassifier)


def test_last_readout_is_the_final_state_of_nn_lstm() -> None:
    model = classifier().eval()
    batch = ToyTask(ToyParams()).train_batch(0, 4, 0)
    _, (h_n, _) = reference_lstm(model)(batch.inputs)
    expected = model.head(h_n[-1])
    torch.testing.assert_close(model(batch), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(model.predict(batch), torch.softmax(expected, -1),
                               atol=1e-6, rtol=1e-5)


def test_last_readout_stops_at_the_true_length() -> None:
    model = classifier().eval()
    batch = ToyTask(ToyParams()).train_batch(0, 3, 0)
    lengths = torch.tensor([7, 4, 2])
    padded = SequenceBatch(batch.inputs, batch.labels, batch.ids, lengths)
    ref = reference_lstm(model)
    for row, length in enumerate(lengths.tolist()):
        _, (h_n, _) = ref(batch.inputs[row : row + 1, :length])
        torch.testing.assert_close(model(padded)[row], model.head(h_n[-1, 0]),
                                   atol=1e-6, rtol=1e-5)


def test_mean_readout_pools_the_true_steps() -> None:
    model = classifier(readout="mean").eval()
    batch = ToyTask(ToyParams()).train_batch(0, 2, 0)
    padded = SequenceBatch(batch.inputs, batch.labels, batch.ids, torch.tensor([7, 3]))
    outputs, _ = reference_lstm(model)(batch.inputs)
    first = outputs[0].mean(0)
    out_short, _ = reference_lstm(model)(batch.inputs[1:, :3])
    second = out_short[0].mean(0)
    torch.testing.assert_close(model(padded), model.head(torch.stack([first, second])),
                               atol=1e-6, rtol=1e-5)


def test_hierarchical_context_concatenates_every_layers_final_state() -> None:
    model = classifier(layers=2, context="hierarchical", combine="concat").eval()
    assert model.head.in_features == 16
    batch = ToyTask(ToyParams()).train_batch(0, 4, 0)
    _, (h_n, _) = reference_lstm(model, layers=2)(batch.inputs)
    torch.testing.assert_close(model(batch), model.head(torch.cat([h_n[0], h_n[1]], 1)),
                               atol=1e-6, rtol=1e-5)


def test_hierarchical_concat_with_per_layer_sizes() -> None:
    model = classifier(hidden_sizes=[8, 4], context="hierarchical", combine="concat")
    assert model.head.in_features == 12
    with pytest.raises(ValueError, match="model.combine: sum .* equal sizes"):
        classifier(hidden_sizes=[8, 4], context="hierarchical", combine="sum")


def test_token_inputs_are_embedded() -> None:
    task = ToyTask(ToyParams(tokens=True))
    model = classifier(task).eval()
    assert model.embedding.num_embeddings == 6 and model.encoder.stack.input_size == 5
    batch = task.train_batch(0, 4, 0)
    _, (h_n, _) = reference_lstm(model)(model.embedding(batch.inputs))
    torch.testing.assert_close(model(batch), model.head(h_n[-1]), atol=1e-6, rtol=1e-5)


def test_losses_by_hand() -> None:
    task = ToyTask(ToyParams())
    model = classifier(task).eval()
    batch = task.train_batch(0, 6, 0)
    logits = model(batch)
    loss, out, inputs = model.training_loss(batch, LossConfig())
    torch.testing.assert_close(loss, F.cross_entropy(logits, batch.labels))
    assert inputs.truth_fraction == 1.0
    smoothed, _, _ = model.training_loss(batch, LossConfig(label_smoothing=0.2))
    torch.testing.assert_close(smoothed, F.cross_entropy(logits, batch.labels,
                                                         label_smoothing=0.2))
    focal, _, _ = model.training_loss(batch, LossConfig(kind="focal", gamma=2.0))
    log_p = F.log_softmax(logits, -1).gather(1, batch.labels[:, None]).squeeze(1)
    torch.testing.assert_close(focal, (-(1 - log_p.exp()) ** 2 * log_p).mean())
    assert model.batch_accuracy(out, batch) == float((logits.argmax(1) == batch.labels)
                                                     .float().mean())


def test_regression_loss_and_accuracy() -> None:
    task = ToyTask(ToyParams(output="values"))
    model = classifier(task).eval()
    batch = task.train_batch(0, 6, 0)
    loss, out, _ = model.training_loss(batch, LossConfig())
    torch.testing.assert_close(loss, F.mse_loss(out, batch.labels))
    close = ((out - batch.labels).abs() < 0.25).float().mean()
    assert model.batch_accuracy(out, batch) == pytest.approx(float(close))
    torch.testing.assert_close(model.predict(batch), out)  # values, not probabilities


def test_ar_tar_are_added_on_the_top_layer() -> None:
    task = ToyTask(ToyParams())
    model = classifier(task, dropout={"output": 0.3}).train()
    batch = task.train_batch(0, 4, 0)
    torch.manual_seed(5)
    plain, _, _ = model.training_loss(batch, LossConfig())
    torch.manual_seed(5)
    out, dropped, raw, mask = model.run(batch)
    reg = activation_regularization(dropped, raw, mask, 2.0, 1.0)
    torch.manual_seed(5)
    with_reg, _, _ = model.training_loss(batch, LossConfig(ar=2.0, tar=1.0))
    assert float(reg.detach()) > 0
    torch.testing.assert_close(with_reg, plain + reg)


def test_evaluation_by_hand_and_mc_dropout() -> None:
    task = ToyTask(ToyParams())
    model = classifier(task, dropout={"output": 0.5})
    model.train()
    metrics = evaluate_sequences(model, task, "test", 4, torch.device("cpu"))
    assert model.training  # evaluation restores the mode
    model.eval()
    batches = list(task.eval_batches("test", 4))
    probs = torch.cat([model.predict(b) for b in batches])
    labels = torch.cat([b.labels for b in batches])
    assert metrics["accuracy"] == float((probs.argmax(1) == labels).float().mean())
    nll = -probs.gather(1, labels[:, None]).log().mean()
    assert metrics["loss"] == pytest.approx(float(nll), rel=1e-6)

    torch.manual_seed(3)
    with_mc = evaluate_sequences(model, task, "test", 4, torch.device("cpu"), mc_samples=3)
    torch.manual_seed(3)
    model.eval()
    model.predict(batches[0])  # the deterministic pass draws nothing
    model.train()
    with torch.no_grad():
        mc = torch.cat([sum(model.predict(b) for _ in range(3)) / 3 for b in batches])
    assert with_mc["accuracy_mc"] == float((mc.argmax(1) == labels).float().mean())
    assert with_mc["loss_mc"] == pytest.approx(float(-mc.gather(1, labels[:, None]).log()
                                                     .mean()), rel=1e-5)
    assert with_mc["loss_mc"] != pytest.approx(with_mc["loss"])


def test_sequence_batches_of_several_lengths_concatenate() -> None:
    a = SequenceBatch(torch.ones(2, 3, 1), torch.tensor([0, 1]), torch.tensor([0, 1]))
    b = SequenceBatch(torch.ones(1, 5, 1) * 2, torch.tensor([2]), torch.tensor([7]),
                      torch.tensor([4]))
    both = concat_batches([a, b])
    assert both.inputs.shape == (3, 5, 1)
    assert both.lengths.tolist() == [3, 3, 4]
    assert both.labels.tolist() == [0, 1, 2] and both.ids.tolist() == [0, 1, 7]
    assert float(both.inputs[0, 3:].abs().sum()) == 0.0  # padding
    same = concat_batches([a, a])
    assert same.lengths is None and same.inputs.shape == (4, 3, 1)
