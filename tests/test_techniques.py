"""Training techniques: selectable from a suite, trained end to end, checked where they act."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml
from checkpoints import final_test_metrics, run_keeping_checkpoints

from lstm_harness.config import ModelConfig
from lstm_harness.models.seq2seq import Forecaster, Seq2Seq
from lstm_harness.suite import load_suite
from lstm_harness.tasks.base import EOS, ForecastBatch
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.training.curriculum import Curriculum, CurriculumConfig
from lstm_harness.training.losses import LossConfig
from lstm_harness.trial import Runtime, execute_trial

TECHNIQUES = {
    "teacher_forcing": {},
    "always_sample": {"train.sampling": {"schedule": "always"}},
    "linear": {"train.sampling": {"schedule": "linear", "alpha": 0.1, "eps_min": 0.2}},
    "exponential": {"train.sampling": {"schedule": "exponential", "k": 0.9}},
    "inverse_sigmoid": {"train.sampling": {"schedule": "inverse_sigmoid", "k": 2, "c": 1,
                                           "feed": "sample"}},
    "length_linear": {"train.curriculum": {"kind": "length_linear", "start": 2, "alpha": 0.5}},
    "length_exponential": {"train.curriculum": {"kind": "length_exponential", "start": 2,
                                                "beta": 2, "tau": 4}},
    "adaptive": {"train.curriculum": {"kind": "adaptive", "p0": 0.1, "alpha": 1.0}},
    "naive": {"train.curriculum": {"kind": "naive", "advance_at": 0.1, "ema": 0.0}},
    "perplexity": {"train.curriculum": {"kind": "perplexity", "pretrain_steps": 3}},
    "multitask": {"train.curriculum": {"kind": "multitask", "introduce_every": 2, "tasks": [
        {"name": "copy", "params": {"variant": "reverse", "vocab": 4, "min_len": 1,
                                    "max_len": 4, "n_valid": 4, "n_test": 4}}]}},
    "mix": {"train.curriculum": {"kind": "mix"}},
    "combined": {"train.curriculum": {"kind": "combined", "mix_fraction": 0.25}},
    "clip_norm": {"train.clip": {"kind": "norm", "threshold": 0.5}},
    "clip_adaptive": {"train.clip": {"kind": "adaptive", "threshold": 1.0, "alpha": 0.9}},
    "clip_per_gate": {"train.clip": {"kind": "per_gate", "threshold": 0.5}},
    "lr_exponential": {"train.lr_schedule": {"kind": "exponential", "lam": 0.05}},
    "lr_step": {"train.lr_schedule": {"kind": "step", "step_size": 3, "gamma": 0.5}},
    "lr_cosine": {"train.lr_schedule": {"kind": "cosine", "warmup": 2}},
    "lr_restarts": {"train.lr_schedule": {"kind": "warm_restarts", "t0": 3}},
    "dropout_schedule": {"model.dropout": {"input": 0.3, "output": 0.3},
                         "train.dropout_schedule": {"kind": "exponential", "lam": 0.1}},
    "label_smoothing": {"train.loss": {"kind": "ce", "label_smoothing": 0.1}},
    "focal": {"train.loss": {"kind": "focal", "gamma": 2.0, "time_weight": "linear_down"}},
}


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    suite = {
        "name": "techniques",
        "tasks": [{"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 6,
                                               "n_valid": 16, "n_test": 16, "n_train": 200}}],
        "base": {"model": {"embed": 8, "hidden": 8},
                 "train": {"steps": 8, "batch_size": 8, "eval_every": 4, "log_every": 2}},
        "axes": {"technique": TECHNIQUES},
        "seeds": [0],
        "metrics": ["exact_match"],
    }
    path: Path = tmp_path_factory.mktemp("techniques") / "techniques.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return {t.variants["technique"]: t for t in load_suite(path).trials()}


@pytest.mark.parametrize("technique", list(TECHNIQUES))
def test_technique_trains_end_to_end(trials, technique):
    final = execute_trial(trials[technique], Runtime(None, None, None))
    assert 0.0 <= final["test.token_accuracy"] <= 1.0


@pytest.mark.parametrize("technique", ["linear", "length_linear", "naive", "clip_adaptive",
                                       "lr_cosine", "dropout_schedule", "perplexity"])
def test_resumed_trial_with_techniques_equals_uninterrupted(trials, technique):
    runtime = Runtime(None, None, None)
    full, checkpoints = run_keeping_checkpoints(trials[technique], runtime)
    middle = checkpoints[0]
    assert middle["state"]["step"] == 4
    resumed = execute_trial(trials[technique], runtime, resume=middle)
    assert final_test_metrics(resumed) == final_test_metrics(full)


def copy_task(**kw) -> CopyTask:
    return CopyTask(CopyParams(**{"vocab": 6, "min_len": 2, "max_len": 12, "n_valid": 8,
                                  "n_test": 8, **kw}))


@pytest.mark.parametrize("eps", [0.0, 0.25, 0.5, 0.9, 1.0])
def test_ground_truth_fraction_follows_eps(eps):
    task = copy_task()
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=8, hidden=8), task.src_vocab_size, task.tgt_vocab_size)
    batch = task.train_batch(0, 512, seed=0)
    _, _, state = model.training_loss(batch, LossConfig(), eps=eps)
    assert state.truth_fraction == pytest.approx(eps, abs=0.02)


def test_sampled_inputs_are_the_models_predictions_when_eps_is_zero():
    """With eps = 0 the decoder reads its own argmax: the logits equal greedy decoding's."""
    task = copy_task()
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=8, hidden=8), task.src_vocab_size, task.tgt_vocab_size)
    model.eval()
    batch = task.train_batch(0, 16, seed=0)
    logits, _ = model.forward_with_state(batch, eps=0.0)
    greedy = model.greedy(batch.src, batch.src_len, batch.tgt.shape[1])
    predicted = logits.argmax(-1)
    for row in range(16):  # identical up to the first EOS greedy emits
        steps = greedy.shape[1]
        limit = next((t + 1 for t in range(steps) if greedy[row, t] == EOS), steps)
        assert predicted[row, :limit].tolist() == greedy[row, :limit].tolist()


def test_forecaster_scheduled_sampling_feeds_back_its_outputs():
    torch.manual_seed(0)
    model = Forecaster(ModelConfig(embed=8, hidden=8), history_features=1, targets=1)
    model.eval()
    batch = ForecastBatch(torch.randn(4, 10, 1), torch.randn(4, 5, 1), [], torch.arange(4))
    sampled, state = model.forward_with_state(batch, eps=0.0)
    assert state.truth_fraction == 0.0
    torch.testing.assert_close(sampled, model.free_running(batch, 5))
    forced, _ = model.forward_with_state(batch, eps=1.0)
    assert not torch.allclose(forced, sampled)


def target_lengths(batch) -> list[int]:
    return (batch.tgt_len - 1).tolist()  # tgt_len counts the EOS


def test_length_curriculum_limits_every_batch():
    task = copy_task()
    cur = Curriculum(CurriculumConfig(kind="length_linear", start=3, alpha=0.5), task)
    for step in [0, 4, 10, 30]:
        batch = cur.batch(step, 64, seed=0)
        limit = min(12, int(3 + 0.5 * step))
        assert max(target_lengths(batch)) <= limit
        assert cur.last["curriculum.length"] == limit
    exp = Curriculum(CurriculumConfig(kind="length_exponential", start=2, beta=2, tau=10), task)
    assert [exp.length_limit(s) for s in (0, 10, 20, 30)] == [2, 4, 8, 12]


def test_adaptive_curriculum_hard_share_follows_accuracy():
    task = copy_task()  # lengths 2..12, hard = longer than 2 + floor(0.5 * 10) = 7
    cur = Curriculum(CurriculumConfig(kind="adaptive", p0=0.25, alpha=0.5, ema=0.0), task)
    batch = cur.batch(0, 64, seed=0)
    assert sum(n > 7 for n in target_lengths(batch)) == 16  # p(hard) = 0.25 at accuracy 0
    cur.observe(1.0)  # ema 0: the running accuracy is the last value
    batch = cur.batch(1, 64, seed=0)
    assert cur.last["curriculum.p_hard"] == 0.75
    assert sum(n > 7 for n in target_lengths(batch)) == 48


def test_naive_curriculum_advances_a_stage_when_accurate():
    task = copy_task()
    cur = Curriculum(CurriculumConfig(kind="naive", start=3, stage_size=2, advance_at=0.8,
                                      ema=0.0), task)
    assert max(target_lengths(cur.batch(0, 64, seed=0))) <= 3
    cur.observe(0.5)
    assert cur.stage_max == 3
    cur.observe(0.9)
    assert cur.stage_max == 5 and cur.accuracy.value == 0.0
    assert max(target_lengths(cur.batch(1, 64, seed=0))) <= 5
    combined = Curriculum(CurriculumConfig(kind="combined", start=3, mix_fraction=0.5), task)
    lengths = target_lengths(combined.batch(0, 64, seed=0))
    assert max(lengths[:32]) <= 3 and max(lengths[32:]) > 3


def test_schedule_figure_from_mlflow(trials, tmp_path):
    from lstm_harness.reporting.plots import schedule_curves
    from lstm_harness.reporting.runs import load_trial_runs
    from lstm_harness.tracking import prepare_experiment

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "techniques", tmp_path / "artifacts")
    for name in ["linear", "length_linear", "lr_cosine", "dropout_schedule"]:
        execute_trial(trials[name], Runtime(uri, experiment, None))
    runs, _ = load_trial_runs(uri, "techniques")
    assert len(runs) == 4
    row_of = {r: v for r, v in zip(runs["run_id"], runs["variant.technique"], strict=True)}
    path = schedule_curves(uri, runs, row_of, tmp_path / "schedules.png")
    assert path is not None and path.read_bytes()[:4] == b"\x89PNG"
    plain = runs[runs["variant.technique"] == "linear"]
    assert schedule_curves(uri, plain.iloc[0:0], row_of, tmp_path / "none.png") is None


def test_perplexity_curriculum_orders_the_pool_and_runs_three_phases():
    task = copy_task(n_train=60)
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=8, hidden=8), task.src_vocab_size, task.tgt_vocab_size)
    cfg = CurriculumConfig(kind="perplexity", pretrain_steps=10, phases=[1, 1, 2])
    cur = Curriculum(cfg, task, total_steps=50)
    assert cur.batch(0, 16, seed=0).ids.min() >= 0  # pretraining: the pool, uniformly
    cur.prepare(5, model, torch.device("cpu"))
    assert cur.order is None  # still pretraining
    cur.prepare(10, model, torch.device("cpu"))
    from lstm_harness.training.curriculum import pool_perplexity
    ppl = pool_perplexity(model, task, torch.device("cpu"))
    assert [ppl[i] for i in cur.order] == sorted(ppl)
    assert [cur.phase(s) for s in (10, 19, 20, 29, 30, 49)] == [0, 0, 1, 1, 2, 2]
    low = set(cur.order[:20])
    assert set(cur.batch(12, 64, seed=0).ids.tolist()) <= low
    assert set(cur.batch(25, 64, seed=0).ids.tolist()) <= set(cur.order[:40])
    assert set(cur.batch(40, 256, seed=0).ids.tolist()) - set(cur.order[:40])  # high third
    only = Curriculum(cfg.model_copy(update={"cumulative": False}), task, 50)
    only.order = cur.order
    assert set(only.batch(40, 64, seed=0).ids.tolist()) <= set(cur.order[40:])


def test_perplexity_matches_a_hand_computation():
    from lstm_harness.training.curriculum import pool_perplexity

    task = copy_task(n_train=3)
    torch.manual_seed(0)
    model = Seq2Seq(ModelConfig(embed=8, hidden=8), task.src_vocab_size, task.tgt_vocab_size)
    model.eval()
    batch = task.pool_batch([1])
    with torch.no_grad():
        log_p = torch.log_softmax(model(batch), -1)[0]
    target = batch.tgt[0, : int(batch.tgt_len[0])]
    expected = torch.exp(-log_p[torch.arange(len(target)), target].mean())
    assert pool_perplexity(model, task, torch.device("cpu"))[1] == pytest.approx(
        float(expected), rel=1e-5)


def test_perplexity_curriculum_needs_a_pool():
    with pytest.raises(ValueError, match="set params.n_train"):
        Curriculum(CurriculumConfig(kind="perplexity"), copy_task(), 10)


def test_perplexity_curriculum_scores_with_a_named_earlier_trial(tmp_path):
    from lstm_harness.tracking import prepare_experiment

    suite = {
        "name": "ppl",
        "tasks": [{"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 6,
                                               "n_valid": 16, "n_test": 16, "n_train": 64}}],
        "base": {"model": {"embed": 8, "hidden": 8},
                 "train": {"steps": 6, "batch_size": 8, "eval_every": 6}},
        "axes": {"c": {"plain": {}, "scored": {"train.curriculum": {
            "kind": "perplexity", "from_trial": "plain|copy|s0", "phases": [1, 1, 1]}}}},
        "seeds": [0], "metrics": ["exact_match"]}
    path = tmp_path / "ppl.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    plain, scored = load_suite(path).trials()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime = Runtime(uri, prepare_experiment(uri, "ppl", tmp_path / "art"), None)
    with pytest.raises(Exception, match=re.escape("no finished trial 'plain|copy|s0'")):
        execute_trial(scored, runtime)
    execute_trial(plain, runtime)
    final = execute_trial(scored, runtime)
    assert 0 <= final["test.token_accuracy"] <= 1


MULTITASK = {"kind": "multitask", "temperature": 0.5, "introduce_every": 3,
             "tasks": [{"name": "copy", "label": "short_copy",
                        "params": {"vocab": 3, "min_len": 1, "max_len": 3, "n_valid": 4,
                                   "n_test": 4}},
                       {"name": "copy", "label": "reverse",
                        "params": {"variant": "reverse", "vocab": 5, "min_len": 2,
                                   "max_len": 6, "n_valid": 4, "n_test": 4}}]}


def multitask_curriculum(**changes):
    from lstm_harness.training.multitask import MultiTaskCurriculum

    cfg = CurriculumConfig(**{**MULTITASK, **changes})
    aux = [ref.build() for ref in cfg.tasks]
    return MultiTaskCurriculum(cfg, copy_task(), aux, ["main", "short_copy", "reverse"])


def test_multitask_introduces_tasks_in_declared_order_and_keeps_them():
    cur = multitask_curriculum()
    assert [cur.active(s) for s in (0, 2, 3, 6, 100)] == [[1], [1], [1, 2], [1, 2, 0],
                                                          [1, 2, 0]]
    assert multitask_curriculum(main_first=True).active(3) == [0, 1]
    assert multitask_curriculum(introduce_every=0).active(0) == [1, 2, 0]


def test_multitask_weights_are_a_softmax_of_log_performance():
    cur = multitask_curriculum()
    cur.performance[1].value, cur.performance[2].value, cur.performance[0].value = 0.8, 0.2, 0.0
    weights = cur.weights(10)  # perf floored at 0.01; tau = 0.5: w_i ~ perf_i^2
    total = 0.8**2 + 0.2**2 + 0.01**2
    assert weights == pytest.approx({1: 0.8**2 / total, 2: 0.2**2 / total, 0: 0.01**2 / total})
    parts = cur.parts(10, 4, seed=0)
    assert [(i, w) for i, w, _ in parts] == pytest.approx(list(weights.items()))
    assert cur.last["curriculum.weight.short_copy"] == pytest.approx(weights[1])


def test_multitask_model_has_task_specific_io_where_vocabularies_differ():
    main = copy_task()
    same, other = copy_task(), copy_task(vocab=3)
    model = Seq2Seq(ModelConfig(embed=8, hidden=8), main.src_vocab_size, main.tgt_vocab_size,
                    [(same.src_vocab_size, same.tgt_vocab_size),
                     (other.src_vocab_size, other.tgt_vocab_size)])
    assert model.io_of == [None, None, 0] and len(model.task_io) == 1
    model.select(2)
    logits = model(other.train_batch(0, 4, seed=0))
    assert logits.shape[-1] == other.tgt_vocab_size
    model.select(0)
    assert model(main.train_batch(0, 4, seed=0)).shape[-1] == main.tgt_vocab_size
    with pytest.raises(ValueError, match="out of range"):
        model.select(3)


def test_multitask_trial_trains_end_to_end_and_resumes_exactly(tmp_path):
    suite = {"name": "mt", "tasks": [{"name": "copy", "params": {
                 "vocab": 5, "min_len": 2, "max_len": 6, "n_valid": 16, "n_test": 16}}],
             "base": {"model": {"embed": 8, "hidden": 8},
                      "train": {"steps": 8, "batch_size": 8, "eval_every": 4, "log_every": 2,
                                "curriculum": MULTITASK}},
             "seeds": [0], "metrics": ["exact_match"]}
    path = tmp_path / "mt.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    (trial,) = load_suite(path).trials()
    full, checkpoints = run_keeping_checkpoints(trial, Runtime(None, None, None))
    resumed = execute_trial(trial, Runtime(None, None, None), resume=checkpoints[0])
    assert final_test_metrics(resumed) == final_test_metrics(full)


def test_multitask_auxiliary_task_errors_name_the_field():
    with pytest.raises(ValueError, match="unknown task 'nope'; installed tasks: .*copy"):
        CurriculumConfig(kind="multitask", tasks=[{"name": "nope"}])
    with pytest.raises(ValueError, match="min_len"):
        CurriculumConfig(kind="multitask", tasks=[{"name": "copy",
                                                   "params": {"min_len": 0}}])
    with pytest.raises(ValueError, match="at least one auxiliary task"):
        CurriculumConfig(kind="multitask")
