"""Forecasting through the harness: the forecaster's loss, accuracy and scheduled sampling,
mixed-horizon batches, every training technique on a time-series task, suite validation of
forecasting tasks and held-out evaluation."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
import yaml
from checkpoints import final_test_metrics, run_keeping_checkpoints

import lstm_harness.trial as trial_module
from lstm_harness.config import ModelConfig, TrainConfig
from lstm_harness.models.accuracy import forecast_accuracy
from lstm_harness.models.losses import LossConfig
from lstm_harness.models.seq2seq import Forecaster
from lstm_harness.suite import SuiteError, load_suite
from lstm_harness.tasks.base import ForecastBatch, concat_batches
from lstm_harness.tasks.timeseries import TimeSeriesParams, TimeSeriesTask
from lstm_harness.training.curriculum import Curriculum, CurriculumConfig, pool_perplexity
from lstm_harness.training.evaluate import evaluate, evaluate_forecast
from lstm_harness.training.techniques import Techniques
from lstm_harness.trial import Runtime, execute_trial

CPU = torch.device("cpu")
TASK_PARAMS = {"series": "mackey_glass", "mg_length": 400, "history": 12, "horizon": 6}
HORIZON = TASK_PARAMS["horizon"]


@pytest.fixture(scope="module")
def task() -> TimeSeriesTask:
    return TimeSeriesTask(TimeSeriesParams(**TASK_PARAMS))


def forecaster(features: int = 2, targets: int = 2, seed: int = 0, **cfg) -> Forecaster:
    torch.manual_seed(seed)
    return Forecaster(ModelConfig(embed=8, hidden=8, **cfg), history_features=features,
                      targets=targets)


def random_batch(size: int = 3, steps: int = 4, features: int = 2, targets: int = 2,
                 target_len: list[int] | None = None, seed: int = 1) -> ForecastBatch:
    g = torch.Generator().manual_seed(seed)
    return ForecastBatch(history=torch.randn(size, 6, features, generator=g),
                         target=torch.randn(size, steps, targets, generator=g),
                         covariates=[], ids=torch.arange(size),
                         target_len=None if target_len is None else torch.tensor(target_len))


# ---------------------------------------------------------------------- loss


def test_training_loss_is_the_masked_mse_by_hand():
    model = forecaster()
    batch = random_batch(target_len=[4, 2, 1])
    loss, pred, state = model.training_loss(batch, LossConfig())
    loss, pred = loss.detach(), pred.detach()
    assert pred.shape == (3, 4, 2) and state.truth_fraction == 1.0
    total, counted = 0.0, 0
    for row, steps in enumerate([4, 2, 1]):
        for t in range(steps):
            for k in range(2):
                total += (float(pred[row, t, k]) - float(batch.target[row, t, k])) ** 2
            counted += 1
    assert counted == 7
    assert float(loss) == pytest.approx(total / (counted * 2), rel=1e-5)
    assert float(model.loss(batch).detach()) == pytest.approx(float(loss), rel=1e-6)

    # padding steps do not count: changing their targets (which are also the decoder's
    # inputs of the following, padded, steps) changes nothing
    padded = ForecastBatch(batch.history, batch.target.clone(), [], batch.ids, batch.target_len)
    padded.target[0, 4:] = 0.0  # (no padding in row 0)
    padded.target[1, 2:] = 100.0
    padded.target[2, 1:] = -50.0
    loss_padded, pred_padded, _ = model.training_loss(padded, LossConfig())
    torch.testing.assert_close(loss_padded, loss)
    torch.testing.assert_close(pred_padded[0], pred[0])
    assert not torch.allclose(pred_padded[1, 3], pred[1, 3])  # the padded step did change

    # without target_len every step counts: the plain mean squared error
    full = ForecastBatch(batch.history, batch.target, [], batch.ids)
    loss_full, pred_full, _ = model.training_loss(full, LossConfig())
    torch.testing.assert_close(loss_full, F.mse_loss(pred_full, batch.target))


def test_training_loss_with_scheduled_sampling_ignores_padding_too():
    model = forecaster()
    model.eval()  # eps = 0 is then deterministic
    batch = random_batch(target_len=[4, 2, 1])
    loss, pred, state = model.training_loss(batch, LossConfig(), eps=0.0)
    assert state.truth_fraction == 0.0
    mask = batch.step_mask.unsqueeze(-1).float()
    expected = (((pred - batch.target) ** 2) * mask).sum() / (mask.sum() * 2)
    torch.testing.assert_close(loss, expected)
    changed = ForecastBatch(batch.history, batch.target.clone(), [], batch.ids,
                            batch.target_len)
    changed.target[1, 2:] = 7.0
    torch.testing.assert_close(model.training_loss(changed, LossConfig(), eps=0.0)[0], loss)


@pytest.mark.parametrize("loss_cfg", [LossConfig(kind="focal"),
                                      LossConfig(kind="focal", gamma=0.0),
                                      LossConfig(kind="ce", label_smoothing=0.1)])
def test_token_losses_are_refused(loss_cfg):
    model = forecaster()
    with pytest.raises(ValueError, match="mean squared error"):
        model.training_loss(random_batch(), loss_cfg)


# ---------------------------------------------------------------------- accuracy


def test_forecast_accuracy_by_hand():
    preds = torch.zeros(2, 3, 1)
    target = torch.tensor([[0.1, 0.3, -0.2], [0.24, -0.25, 5.0]]).unsqueeze(-1)
    # |error| < 0.25: 0.1 yes, 0.3 no, -0.2 yes | 0.24 yes, -0.25 no (strict), 5.0 no
    assert forecast_accuracy(preds, target) == pytest.approx(3 / 6)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    assert forecast_accuracy(preds, target, mask) == pytest.approx(3 / 5)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert forecast_accuracy(preds, target, mask) == 1.0
    assert forecast_accuracy(preds, target, torch.zeros(2, 3, dtype=torch.bool)) == 1.0
    assert forecast_accuracy(preds, target, tolerance=1.0) == pytest.approx(5 / 6)
    # several variables: every value of a counted step counts
    two = torch.stack([target.squeeze(-1), torch.zeros(2, 3)], -1)  # second column exact
    assert forecast_accuracy(torch.zeros(2, 3, 2), two, step_mask=None) == pytest.approx(9 / 12)
    batch = ForecastBatch(torch.zeros(2, 4, 1), target, [], torch.arange(2),
                          target_len=torch.tensor([3, 2]))
    assert Forecaster.batch_accuracy(preds, batch) == pytest.approx(3 / 5)


# ---------------------------------------------------------------------- mixed horizons


def test_concat_batches_of_different_horizons():
    g = torch.Generator().manual_seed(0)
    first = ForecastBatch(torch.randn(2, 5, 3, generator=g), torch.randn(2, 4, 2, generator=g),
                          [torch.randn(2, 5, 4, generator=g)], torch.tensor([10, 11]))
    second = ForecastBatch(torch.randn(3, 5, 3, generator=g), torch.randn(3, 2, 2, generator=g),
                           [torch.randn(3, 5, 4, generator=g)], torch.tensor([20, 21, 22]))
    both = concat_batches([first, second])
    assert isinstance(both, ForecastBatch)
    assert both.history.shape == (5, 5, 3) and both.target.shape == (5, 4, 2)
    torch.testing.assert_close(both.history, torch.cat([first.history, second.history]))
    torch.testing.assert_close(both.target[:2], first.target)
    torch.testing.assert_close(both.target[2:, :2], second.target)
    assert bool((both.target[2:, 2:] == 0).all())
    assert both.target_len.tolist() == [4, 4, 2, 2, 2]
    assert both.step_mask.tolist() == [[True] * 4] * 2 + [[True, True, False, False]] * 3
    assert len(both.covariates) == 1 and both.covariates[0].shape == (5, 5, 4)
    torch.testing.assert_close(both.covariates[0],
                               torch.cat([first.covariates[0], second.covariates[0]]))
    assert both.ids.tolist() == [10, 11, 20, 21, 22]
    # throughput: history and covariate steps of every window + counted forecast steps
    assert both.tokens == 5 * 5 + 5 * 5 + (4 + 4 + 2 + 2 + 2)

    # batches of one horizon stay unpadded; lengths already set are kept
    same = concat_batches([first, first])
    assert same.target_len is None and same.target.shape == (4, 4, 2)
    nested = concat_batches([both, second])
    assert nested.target_len.tolist() == [4, 4, 2, 2, 2, 2, 2, 2]
    assert nested.target.shape == (8, 4, 2)


# ---------------------------------------------------------------------- scheduled sampling


def test_eps_one_feeds_the_true_previous_values():
    model = forecaster(features=3, targets=2)
    model.eval()
    batch = random_batch(size=4, steps=5, features=3, targets=2)
    forced, state = model.forward_with_state(batch, eps=1.0)
    assert state.truth_fraction == 1.0
    # by hand: y*_{t-1} at every step, the last observed value first
    with torch.no_grad():
        memory = model.encode_batch(batch)
        dec = model.start(memory)
        prev, by_hand = batch.history[:, -1, :2], []
        for t in range(5):
            by_hand.append(model.head(model.step(model.tgt_proj(prev), memory, dec)))
            prev = batch.target[:, t]
    torch.testing.assert_close(forced.detach(), torch.stack(by_hand, 1), rtol=1e-5, atol=1e-6)
    # the step-by-step sampling path with eps = 1 reads the truth every time, too
    truth = torch.cat([batch.history[:, -1:, :2], batch.target[:, :-1]], 1)
    with torch.no_grad():
        sampled, sampled_state = model.scheduled_sampling(
            model.encode_batch(batch), truth, 1.0, model.tgt_proj, lambda out: out,
            batch.step_mask)
    assert sampled_state.truth_fraction == 1.0
    torch.testing.assert_close(sampled, forced.detach(), rtol=1e-5, atol=1e-6)


def test_eps_zero_is_free_running():
    model = forecaster(features=3, targets=2, dropout={"input": 0.3, "output": 0.3})
    model.eval()  # dropout off
    batch = random_batch(size=4, steps=5, features=3, targets=2, target_len=[5, 3, 1, 5])
    sampled, state = model.forward_with_state(batch, eps=0.0)
    assert state.truth_fraction == 0.0
    torch.testing.assert_close(sampled.detach(), model.free_running(batch, 5))
    forced = model(batch)
    assert not torch.allclose(forced, sampled)
    # the first step reads the last observed value either way
    torch.testing.assert_close(forced[:, 0], sampled[:, 0])


def test_truth_fraction_follows_eps_over_counted_steps():
    torch.manual_seed(0)
    model = forecaster(features=1, targets=1)
    lengths = torch.randint(1, 7, (2000,), generator=torch.Generator().manual_seed(3))
    batch = random_batch(size=2000, steps=6, features=1, targets=1,
                         target_len=lengths.tolist())
    for eps in (0.5, 0.2):
        with torch.no_grad():
            _, state = model.forward_with_state(batch, eps=eps)
        assert state.truth_fraction == pytest.approx(eps, abs=0.05)
    # windows of one step have no fed-back input that counts: nothing to sample
    single = random_batch(size=8, steps=6, features=1, targets=1, target_len=[1] * 8)
    assert model.forward_with_state(single, eps=0.0)[1].truth_fraction == 1.0


# ---------------------------------------------------------------------- curricula


def test_length_curriculum_cuts_the_horizon(task):
    cur = Curriculum(CurriculumConfig(kind="length_linear", start=2, alpha=0.5), task)
    for step in [0, 1, 2, 5, 8, 30]:
        batch = cur.batch(step, 16, seed=0)
        limit = cur.length_limit(step)
        assert limit == min(HORIZON, 2 + step // 2)
        assert batch.target.shape == (16, limit, 1) and batch.target_len is None
        assert cur.last["curriculum.length"] == limit
        assert batch.history.shape == (16, 12, 1)
    full = task.pool_batch(cur.batch(0, 16, seed=0).ids.tolist())
    torch.testing.assert_close(cur.batch(0, 16, seed=0).target, full.target[:, :2])


def test_adaptive_curriculum_mixes_horizons(task):
    # lengths 1..6: hard = longer than 1 + floor(0.5 * 5) = 3, easy windows forecast 3 steps
    cur = Curriculum(CurriculumConfig(kind="adaptive", p0=0.25, alpha=0.5, ema=0.0), task)
    batch = cur.batch(0, 16, seed=0)
    assert batch.target.shape == (16, HORIZON, 1)
    assert batch.target_len.tolist() == [3] * 12 + [6] * 4
    assert bool((batch.target[:12, 3:] == 0).all())
    cur.observe(1.0)
    batch = cur.batch(1, 16, seed=0)
    assert cur.last["curriculum.p_hard"] == 0.75
    assert batch.target_len.tolist() == [3] * 4 + [6] * 12
    loss, pred, _ = forecaster(1, 1).training_loss(batch, LossConfig())
    mask = batch.step_mask.unsqueeze(-1).float()
    torch.testing.assert_close(loss, (((pred - batch.target) ** 2) * mask).sum() / mask.sum())


def test_naive_and_combined_curricula_on_a_forecast(task):
    cur = Curriculum(CurriculumConfig(kind="naive", start=2, stage_size=2, advance_at=0.5,
                                      ema=0.0), task)
    assert cur.batch(0, 8, seed=0).target.shape == (8, 2, 1)
    model = forecaster(1, 1)
    batch = cur.batch(0, 8, seed=0)
    accuracy = model.batch_accuracy(model(batch).detach(), batch)
    cur.observe(accuracy)
    assert cur.stage_max == (4 if accuracy >= 0.5 else 2)
    cur.observe(0.9)
    assert cur.stage_max >= 4 and cur.batch(1, 8, seed=0).target.shape[1] == cur.stage_max
    combined = Curriculum(CurriculumConfig(kind="combined", start=2, mix_fraction=0.25), task)
    batch = combined.batch(0, 16, seed=0)
    assert batch.target_len.tolist() == [2] * 12 + [HORIZON] * 4
    mix = Curriculum(CurriculumConfig(kind="mix"), task).batch(0, 16, seed=0)
    assert mix.target.shape == (16, HORIZON, 1) and mix.target_len is None


def test_pool_perplexity_is_the_window_mse(task):
    model = forecaster(1, 1)
    scores = pool_perplexity(model, task, CPU)
    assert len(scores) == task.train_pool_size
    assert all(math.isfinite(s) and s >= 0 for s in scores)
    assert model.training  # restored
    model.eval()
    for window in (0, 17, task.train_pool_size - 1):
        batch = task.pool_batch([window])
        with torch.no_grad():
            pred = model(batch)
        by_hand = sum((float(pred[0, t, 0]) - float(batch.target[0, t, 0])) ** 2
                      for t in range(HORIZON)) / HORIZON
        assert scores[window] == pytest.approx(by_hand, rel=1e-4)
    cur = Curriculum(CurriculumConfig(kind="perplexity", pretrain_steps=0), task,
                     total_steps=30)
    cur.prepare(0, model, CPU)
    assert [scores[i] for i in cur.order] == pytest.approx(sorted(scores), rel=1e-5)
    low = set(cur.order[: len(cur.order) // 3])
    assert set(cur.batch(0, 64, seed=0).ids.tolist()) <= low


def test_dropout_schedule_changes_the_forecasters_rates(task):
    model = Forecaster(ModelConfig(embed=8, hidden=8, dropout={"input": 0.3, "output": 0.2}),
                       task.n_features, task.n_targets)
    cfg = TrainConfig(steps=10, dropout_schedule={"kind": "exponential", "lam": 0.1})
    techniques = Techniques(cfg, model, torch.optim.Adam(model.parameters()), task)
    rates = techniques.apply_dropout_schedule(model, 10)
    assert rates == pytest.approx({"train.dropout.input": 0.3 * math.exp(-1),
                                   "train.dropout.output": 0.2 * math.exp(-1)})
    assert model.rates.output == pytest.approx(0.2 * math.exp(-1))


# ---------------------------------------------------------------------- end to end

STEPS = 6
LR = 1e-3

TECHNIQUES = {
    "teacher_forcing": {},
    "always": {"train.sampling": {"schedule": "always"}},
    "linear": {"train.sampling": {"schedule": "linear", "alpha": 0.1, "eps_min": 0.2}},
    "inverse_sigmoid": {"train.sampling": {"schedule": "inverse_sigmoid", "k": 2, "c": 1}},
    "length_linear": {"train.curriculum": {"kind": "length_linear", "start": 2, "alpha": 0.5}},
    "adaptive": {"train.curriculum": {"kind": "adaptive", "p0": 0.25, "alpha": 1.0}},
    "combined": {"train.curriculum": {"kind": "combined", "mix_fraction": 0.25}},
    "perplexity": {"train.curriculum": {"kind": "perplexity", "pretrain_steps": 2}},
    "naive": {"train.curriculum": {"kind": "naive", "advance_at": 0.1, "ema": 0.0}},
    "mix": {"train.curriculum": {"kind": "mix"}},
    "clip_norm": {"train.clip": {"kind": "norm", "threshold": 0.5}},
    "clip_adaptive": {"train.clip": {"kind": "adaptive", "threshold": 1.0, "alpha": 0.9}},
    "clip_per_gate": {"train.clip": {"kind": "per_gate", "threshold": 0.5}},
    "lr_cosine": {"train.lr_schedule": {"kind": "cosine", "warmup": 2}},
    "lr_restarts": {"train.lr_schedule": {"kind": "warm_restarts", "t0": 3, "warmup": 1}},
    "dropout_schedule": {"model.dropout": {"input": 0.3, "output": 0.3},
                         "train.dropout_schedule": {"kind": "exponential", "lam": 0.1}},
    "attention_sampling": {"model.attention": {"type": "bahdanau", "coverage": True},
                           "train.sampling": {"schedule": "linear", "alpha": 0.2}},
}


def suite_dict(**changes) -> dict:
    suite = {"name": "forecasting",
             "tasks": [{"name": "timeseries", "params": dict(TASK_PARAMS)}],
             "base": {"model": {"embed": 8, "hidden": 8},
                      "train": {"steps": STEPS, "batch_size": 8, "lr": LR, "eval_every": STEPS,
                                "log_every": 1, "eval_batch_size": 64}},
             "axes": {"technique": TECHNIQUES}, "seeds": [0], "metrics": ["mase", "mase_tf"]}
    suite.update(changes)
    return suite


def write_suite(path, suite: dict):
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    path = write_suite(tmp_path_factory.mktemp("forecasting") / "forecasting.yaml",
                       suite_dict())
    return {t.variants["technique"]: t for t in load_suite(path).trials()}


@pytest.fixture
def train_logs(monkeypatch):
    """Every on_log record of the trials run in the test (one per step with log_every 1)."""
    records: list[dict[str, float]] = []
    real_train = trial_module.train

    def spy(model, optimizer, task, cfg, seed, state, device, techniques, monitors,
            on_log, on_eval):
        def log(state, metrics):
            records.append(dict(metrics))
            on_log(state, metrics)
        real_train(model, optimizer, task, cfg, seed, state, device, techniques, monitors,
                   log, on_eval)

    monkeypatch.setattr(trial_module, "train", spy)
    return records


def cosine(t: int, period: int) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / period))


def expected_logs(technique: str) -> dict[str, list[float]]:
    """Per-step values a technique logs, computed by hand (step i = 0 .. STEPS-1)."""
    steps = range(STEPS)
    if technique == "teacher_forcing":
        return {"train.eps": [1.0] * STEPS, "train.truth_fraction": [1.0] * STEPS}
    if technique == "always":
        return {"train.eps": [0.0] * STEPS, "train.truth_fraction": [0.0] * STEPS}
    if technique == "linear":
        return {"train.eps": [max(0.2, 1 - 0.1 * i) for i in steps]}
    if technique == "inverse_sigmoid":
        return {"train.eps": [2 / (2 + math.exp((i - 1) / 2)) for i in steps]}
    if technique == "length_linear":
        return {"curriculum.length": [min(HORIZON, 2 + i // 2) for i in steps]}
    if technique == "perplexity":  # pretraining 2 steps, then phases of 4/3 steps each
        return {"curriculum.phase": [-1, -1, 0, 0, 1, 2]}
    if technique == "clip_norm":
        return {"clip.threshold": [0.5] * STEPS}
    if technique == "lr_cosine":  # warmup 0.01 -> 1 over 2 steps, then cosine over 4
        return {"train.lr": [LR * f for f in [0.01, 0.505, 1.0, cosine(1, 4), cosine(2, 4),
                                               cosine(3, 4)]]}
    if technique == "lr_restarts":  # warmup 1 step, then periods of 3 steps
        return {"train.lr": [LR * f for f in [0.01, 1.0, cosine(1, 3), cosine(2, 3), 1.0,
                                               cosine(1, 3)]]}
    if technique == "dropout_schedule":
        return {"train.dropout.output": [0.3 * math.exp(-0.1 * i) for i in steps],
                "train.dropout.input": [0.3 * math.exp(-0.1 * i) for i in steps]}
    if technique == "attention_sampling":
        return {"train.eps": [max(0.0, 1 - 0.2 * i) for i in steps]}
    return {}


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_technique_trains_a_forecaster_end_to_end(trials, train_logs, technique):
    final = execute_trial(trials[technique], Runtime(None, None, None))
    for name in ("test.mase", "test.mase_tf", "test.mse", "test.mse_tf", "test.mae",
                 "test.smape", "test.loss"):
        assert math.isfinite(final[name]), name
    assert final["test.mse"] >= 0 and final["test.mase"] > 0
    assert len(train_logs) == STEPS
    for record in train_logs:
        assert math.isfinite(record["train.loss"]) and 0 <= record["train.accuracy"] <= 1
        assert 0 <= record["train.truth_fraction"] <= 1
    for key, values in expected_logs(technique).items():
        assert [r[key] for r in train_logs] == pytest.approx(values, rel=1e-6, abs=1e-12), key

    if technique == "clip_adaptive":  # tau_t = 0.9 tau_{t-1} + 0.1 ||g_t||, tau_0 = 1
        tau = 1.0
        for record in train_logs:
            assert record["clip.threshold"] == pytest.approx(tau)
            tau = 0.9 * tau + 0.1 * record["clip.grad_norm"]
    if technique == "clip_per_gate":
        for gate in ("input", "forget", "cell", "output"):
            assert all(f"clip.threshold.{gate}" in r for r in train_logs)
        assert [r["clip.threshold.forget"] for r in train_logs][0] == 0.5
    if technique == "adaptive":
        assert all(r["curriculum.p_hard"] >= 0.25 for r in train_logs)
    if technique == "naive":
        lengths = [r["curriculum.length"] for r in train_logs]
        assert lengths[0] == 2 and lengths == sorted(lengths) and max(lengths) <= HORIZON
    if technique in ("linear", "inverse_sigmoid", "attention_sampling"):
        last = train_logs[-1]  # eps well below 1: some inputs were the model's own
        assert last["train.truth_fraction"] < 1


def test_adaptive_and_combined_trials_train_on_mixed_horizons(trials, monkeypatch):
    """The loop's batches under adaptive / combined hold windows of two horizons."""
    seen: list[ForecastBatch] = []
    real = Forecaster.training_loss

    def spy(self, batch, *args, **kwargs):
        seen.append(batch)
        return real(self, batch, *args, **kwargs)

    monkeypatch.setattr(Forecaster, "training_loss", spy)
    for technique in ("adaptive", "combined"):
        seen.clear()
        execute_trial(trials[technique], Runtime(None, None, None))
        assert len(seen) == STEPS
        assert all(b.target_len is not None and b.target.shape[1] == HORIZON for b in seen)
        assert all(len(set(b.target_len.tolist())) == 2 for b in seen)


@pytest.mark.parametrize("technique", ["linear", "adaptive", "perplexity"])
def test_resumed_forecasting_trial_equals_uninterrupted(trials, technique):
    config = copy.deepcopy(trials[technique].config)
    config["train"]["eval_every"] = 3  # a checkpoint in the middle
    trial = replace(trials[technique], config=config)
    runtime = Runtime(None, None, None)
    full, checkpoints = run_keeping_checkpoints(trial, runtime)
    assert [c["state"]["step"] for c in checkpoints] == [3, 6]
    resumed = execute_trial(trial, runtime, resume=checkpoints[0])
    assert final_test_metrics(resumed) == final_test_metrics(full)


# ---------------------------------------------------------------------- suite validation


def test_suite_refuses_token_losses_for_a_forecasting_task(tmp_path):
    focal = suite_dict(axes={"loss": {"mse": {}, "focal": {"train.loss": {"kind": "focal"}}}})
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(tmp_path / "focal.yaml", focal))
    message = str(err.value)
    assert "'timeseries' is a forecasting task" in message
    assert "mean squared error" in message and "loss.focal" in message

    smooth = suite_dict(axes={})
    smooth["base"]["train"]["loss"] = {"label_smoothing": 0.1}
    with pytest.raises(SuiteError, match="(?s)base.*mean squared error"):
        load_suite(write_suite(tmp_path / "smooth.yaml", smooth))


def test_suite_refuses_the_multitask_curriculum_for_a_forecasting_task(tmp_path):
    multitask = {"train.curriculum": {"kind": "multitask", "tasks": [
        {"name": "copy", "params": {"vocab": 4, "min_len": 1, "max_len": 3}}]}}
    suite = suite_dict(axes={"c": {"none": {}, "mt": multitask}})
    with pytest.raises(SuiteError) as err:
        load_suite(write_suite(tmp_path / "mt.yaml", suite))
    message = str(err.value)
    assert "'timeseries' is a forecasting task" in message
    assert "multitask" in message and "c.mt" in message


def test_valid_forecasting_suite_loads(tmp_path):
    suite = load_suite(write_suite(tmp_path / "ok.yaml", suite_dict()))
    trials = suite.trials()
    assert len(trials) == len(TECHNIQUES)
    assert {t.task.name for t in trials} == {"timeseries"}
    assert suite.directions()["mase_tf"] == "min"


# ---------------------------------------------------------------------- evaluation


def whole_split(task: TimeSeriesTask, split: str) -> ForecastBatch:
    batches = list(task.eval_batches(split, 1000))
    assert len(batches) == 1
    return batches[0]


def test_evaluate_forecast_by_hand(task):
    model = Forecaster(ModelConfig(embed=8, hidden=8), task.n_features, task.n_targets)
    model.train()
    metrics = evaluate_forecast(model, task, "test", 16, CPU)
    assert model.training  # restored
    for name in ("mse", "mae", "smape", "mase", "loss"):
        assert name in metrics and math.isfinite(metrics[name])
        if name != "loss":
            assert f"{name}_tf" in metrics
    batch = whole_split(task, "test")
    model.eval()
    with torch.no_grad():
        free = model.free_running(batch, HORIZON)
        forced = model(batch)
    by_hand = task.score(free, batch.target, batch.ids, split="test")
    forced_score = task.score(forced, batch.target, batch.ids, split="test")
    for name in ("mse", "mae", "smape", "mase"):
        assert metrics[name] == pytest.approx(by_hand[name], rel=1e-5)
        assert metrics[f"{name}_tf"] == pytest.approx(forced_score[name], rel=1e-5)
    assert metrics["loss"] == pytest.approx(float(F.mse_loss(forced, batch.target)), rel=1e-5)
    assert evaluate(model, task, "test", 16, CPU) == pytest.approx(metrics, rel=1e-6)


class Oracle(torch.nn.Module):
    """Predicts the true targets (teacher-forced and free-running)."""

    def forward(self, batch: ForecastBatch) -> torch.Tensor:
        return batch.target.clone()

    def free_running(self, batch: ForecastBatch, horizon: int) -> torch.Tensor:
        return batch.target[:, :horizon].clone()


class LastValue(Oracle):
    """Repeats the last observed value: the seasonal-naive forecast of a season of 1."""

    def free_running(self, batch: ForecastBatch, horizon: int) -> torch.Tensor:
        return batch.history[:, -1:, :1].expand(-1, horizon, -1).clone()


def test_evaluate_forecast_of_perfect_and_naive_predictors(task):
    perfect = evaluate_forecast(Oracle(), task, "valid", 16, CPU)
    for name in ("mse", "mae", "smape", "mase", "mse_tf", "mase_tf", "loss"):
        assert perfect[name] == pytest.approx(0.0, abs=1e-6), name
    naive = evaluate_forecast(LastValue(), task, "valid", 16, CPU)
    reference = task.reference_scores("valid")["seasonal naive"]
    assert naive["mase"] == pytest.approx(1.0, rel=1e-4)
    assert naive["mse"] == pytest.approx(reference["mse"], rel=1e-4)
    assert naive["mase_tf"] == pytest.approx(0.0, abs=1e-6)  # the oracle's teacher forcing
