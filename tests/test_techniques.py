"""Training techniques: selectable from a suite, trained end to end, checked where they act."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from checkpoints import final_test_metrics, run_keeping_checkpoints

import lstm_harness.trial as trial_module
from lstm_harness import run_schema as rs
from lstm_harness.config import ModelConfig, TrialConfig
from lstm_harness.models.losses import LossConfig
from lstm_harness.models.seq2seq import Forecaster, Seq2Seq
from lstm_harness.suite import load_suite
from lstm_harness.tasks.base import EOS, PAD, ForecastBatch
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.training.clipping import GATES, GradientClipper, gate_blocks
from lstm_harness.training.curriculum import Curriculum, CurriculumConfig
from lstm_harness.training.multitask import MultiTaskCurriculum
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
    # thresholds below this model's gradient norms (~0.3 overall, ~0.1 for the cell gate), so
    # that clipping scales the gradients (the effect checks below show it did)
    "clip_norm": {"train.clip": {"kind": "norm", "threshold": 0.1}},
    "clip_adaptive": {"train.clip": {"kind": "adaptive", "threshold": 0.1, "alpha": 0.9}},
    "clip_per_gate": {"train.clip": {"kind": "per_gate", "threshold": 0.05}},
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
def test_technique_trains_end_to_end(trials, technique, monkeypatch):
    seen = watch(monkeypatch)
    final = execute_trial(trials[technique], Runtime(None, None, None))
    assert 0.0 <= final["test.token_accuracy"] <= 1.0
    # the technique took effect in the trial: what it logged, trained on, clipped, computed
    assert sorted(seen.logs) == [2, 4, 6, 8] and sorted(seen.batches) == list(range(8))
    EFFECTS[technique](seen, TrialConfig.model_validate(trials[technique].config))


# ----------------------------------------------------------------------------- effects
# What each technique changes in a trial of 8 steps (log_every 2): the values logged at steps
# s = 2, 4, 6, 8 (computed at step i = s - 1, before the update), the batches of every step,
# the gradients after clipping, the loss on a batch, against the papers' formulas by hand.

LOGGED = [1, 3, 5, 7]  # the step i of each logged value


@dataclass
class Seen:
    """What a trial did: logged training values by step s, the target lengths of each step's
    batch (per task index), every clipping, and the model it built."""

    logs: dict[int, dict[str, float]] = field(default_factory=dict)
    batches: dict[int, list[tuple[int, list[int]]]] = field(default_factory=dict)
    clips: list[dict[str, Any]] = field(default_factory=list)
    models: list[torch.nn.Module] = field(default_factory=list)
    ranges: dict[int, list[tuple[int, int] | None]] = field(default_factory=dict)
    first_loss: dict[str, Any] = field(default_factory=dict)  # the loss of the first step

    def logged(self, key: str) -> list[float]:
        return [self.logs[s][key] for s in sorted(self.logs)]

    def lengths(self, step: int, task_index: int = 0) -> list[int]:
        return [n for index, lengths in self.batches[step] if index == task_index
                for n in lengths]


def watch(monkeypatch) -> Seen:
    """Record what the next trial logs, trains on and clips, and the model it builds."""
    seen = Seen()
    train, build = trial_module.train, trial_module.build_model

    def recording_train(*args, **kwargs):
        args = list(args)
        on_log = args[-2]

        def log(state, metrics):
            if rs.TRAIN_EPS in metrics:  # the step's training values (not the monitors')
                seen.logs[state.step] = dict(metrics)
            on_log(state, metrics)
        args[-2] = log
        return train(*args, **kwargs)

    def recording_build(*args, **kwargs):
        seen.models.append(build(*args, **kwargs))
        return seen.models[-1]

    def recording_parts(original):
        def parts(self, step, batch_size, seed):
            out = original(self, step, batch_size, seed)
            seen.batches[step] = [(index, (batch.tgt_len - 1).tolist())
                                  for index, _, batch in out]
            return out
        return parts

    clip = GradientClipper.clip

    def recording_clip(self, model):
        out = clip(self, model)
        after = {"all": grad_norm([p.grad for p in model.parameters() if p.grad is not None])}
        if self.cfg.kind == "per_gate":
            blocks, others = gate_blocks(model)
            for gate in GATES:
                group = [b.param.grad[b.start:b.stop] for b in blocks
                         if b.gate == gate and b.param.grad is not None]
                if group:
                    after[gate] = grad_norm(group)
            after["others"] = grad_norm([p.grad for p in others if p.grad is not None])
        seen.clips.append({**out, "after": after})
        return out

    draw = CopyTask.train_batch

    def recording_draw(self, step, batch_size, seed, lengths=None):
        seen.ranges.setdefault(step, []).append(lengths)
        return draw(self, step, batch_size, seed, lengths)

    training_loss = Seq2Seq.training_loss

    def recording_loss(self, batch, loss_cfg, *args, **kwargs):
        out = training_loss(self, batch, loss_cfg, *args, **kwargs)
        if not seen.first_loss and self.training:
            seen.first_loss.update(loss=out[0].detach(), logits=out[1].detach(), batch=batch)
        return out

    monkeypatch.setattr(CopyTask, "train_batch", recording_draw)
    monkeypatch.setattr(Seq2Seq, "training_loss", recording_loss)
    monkeypatch.setattr(trial_module, "train", recording_train)
    monkeypatch.setattr(trial_module, "build_model", recording_build)
    monkeypatch.setattr(Curriculum, "parts", recording_parts(Curriculum.parts))
    monkeypatch.setattr(MultiTaskCurriculum, "parts", recording_parts(MultiTaskCurriculum.parts))
    monkeypatch.setattr(GradientClipper, "clip", recording_clip)
    return seen


def grad_norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.sqrt(sum((t.double() ** 2).sum() for t in tensors)))


def approx(values: list[float]):
    return pytest.approx(values, rel=1e-6, abs=1e-12)


def sampling(expected_eps: list[float]):
    def check(seen: Seen, cfg: TrialConfig) -> None:
        assert seen.logged(rs.TRAIN_EPS) == approx(expected_eps)
        fractions = seen.logged(rs.TRAIN_TRUTH_FRACTION)
        if min(expected_eps) == 1.0:
            assert fractions == [1.0] * 4
        else:  # the decoder read its own predictions at some inputs
            assert min(fractions) < 1.0
    return check


def length_curriculum(limits: list[int]):
    """L_i for i = 0..7: every batch no longer; the logged L_i at the logged steps."""
    def check(seen: Seen, cfg: TrialConfig) -> None:
        assert seen.logged(rs.CURRICULUM_LENGTH) == [limits[i] for i in LOGGED]
        for step, limit in enumerate(limits):
            assert max(seen.lengths(step)) <= limit
        assert set(seen.lengths(0)) == {2}  # L_0 = L_start = the shortest length
    return check


def check_adaptive(seen: Seen, cfg: TrialConfig) -> None:
    # p(hard) = min(1, p0 + alpha * running accuracy), p0 = 0.1, alpha = 1
    for s in seen.logs:
        accuracy = seen.logs[s]["curriculum.accuracy"]
        assert seen.logs[s][rs.CURRICULUM_P_HARD] == pytest.approx(min(1.0, 0.1 + accuracy))
    assert seen.logged(rs.CURRICULUM_P_HARD)[-1] > 0.1  # it moved with the accuracy
    # hard = longer than 2 + floor(0.5 * (6 - 2)) = 4: round(p(hard) * 8) of each batch
    for s in seen.logs:
        hard = sum(n > 4 for n in seen.lengths(s - 1))
        assert hard == round(seen.logs[s][rs.CURRICULUM_P_HARD] * 8)


def check_naive(seen: Seen, cfg: TrialConfig) -> None:
    # the current stage bounds every batch; with ema 0 the stage grows by stage_size (1) each
    # step whose batch accuracy reached 0.1
    stages = seen.logged(rs.CURRICULUM_LENGTH)
    assert stages[0] in (2.0, 3.0) and stages == sorted(stages)
    for s in seen.logs:
        assert max(seen.lengths(s - 1)) <= seen.logs[s][rs.CURRICULUM_LENGTH]
    accuracies = [seen.logs[s][rs.TRAIN_ACCURACY] for s in sorted(seen.logs)]
    if max(accuracies[:-1]) >= 0.1:  # observed before the last logged stage was drawn
        assert stages[-1] > 2.0


def check_perplexity(seen: Seen, cfg: TrialConfig) -> None:
    # pretraining (phase -1) until step 3, then phases 0, 1, 2 over the remaining steps
    phases = seen.logged("curriculum.phase")
    assert phases[0] == -1.0 and all(p >= 0 for p in phases[1:]) and phases == sorted(phases)


def check_multitask(seen: Seen, cfg: TrialConfig) -> None:
    # the auxiliary task (index 1) first; the main task joins after introduce_every = 2 steps
    for step in (0, 1):
        assert {index for index, _ in seen.batches[step]} == {1}
    for step in range(2, 8):
        assert {index for index, _ in seen.batches[step]} == {0, 1}
    assert all(n <= 4 for step in seen.batches for n in seen.lengths(step, 1))  # max_len 4
    assert any(key.startswith("curriculum.weight.") for key in seen.logs[8])


def check_mix(seen: Seen, cfg: TrialConfig) -> None:
    # every batch drawn from the whole range 2..6 of the task, asked for explicitly (the
    # copy task's own distribution; no curriculum passes no range), no curriculum value logged
    assert all(seen.ranges[step] == [(2, 6)] for step in range(8))
    lengths = [n for step in seen.batches for n in seen.lengths(step)]
    assert min(lengths) == 2 and max(lengths) == 6
    assert not any(key.startswith("curriculum.") for key in seen.logs[2])


def check_combined(seen: Seen, cfg: TrialConfig) -> None:
    # round(0.25 * 8) = 2 examples of each batch from the whole range, 6 from the stage
    outside = 0
    for s in seen.logs:
        lengths, stage = seen.lengths(s - 1), seen.logs[s][rs.CURRICULUM_LENGTH]
        assert len(lengths) == 8 and max(lengths[:6]) <= stage
        outside += sum(n > stage for n in lengths[6:])
    assert outside > 0


def check_clip_norm(seen: Seen, cfg: TrialConfig) -> None:
    assert len(seen.clips) == 8
    for clip in seen.clips:
        assert clip["clip.threshold"] == 0.1
        expected = min(clip["clip.grad_norm"], 0.1)  # g <- 0.1 / ||g|| * g above 0.1
        assert clip["after"]["all"] == pytest.approx(expected, rel=1e-4)
    assert any(clip["clip.grad_norm"] > 0.1 for clip in seen.clips)  # some step was scaled


def check_clip_adaptive(seen: Seen, cfg: TrialConfig) -> None:
    tau = 0.1  # tau_0 = threshold; tau_t = 0.9 tau_{t-1} + 0.1 ||g_t||, step t clips to tau_{t-1}
    for clip in seen.clips:
        assert clip["clip.threshold"] == pytest.approx(tau)
        assert clip["after"]["all"] == pytest.approx(min(clip["clip.grad_norm"], tau), rel=1e-4)
        tau = 0.9 * tau + 0.1 * clip["clip.grad_norm"]
    assert any(clip["clip.grad_norm"] > clip["clip.threshold"] for clip in seen.clips)


def check_clip_per_gate(seen: Seen, cfg: TrialConfig) -> None:
    scaled = 0
    for clip in seen.clips:
        for gate in ("input", "forget", "cell", "output"):
            tau, before = clip[f"clip.threshold.{gate}"], clip[f"clip.grad_norm.{gate}"]
            assert clip["after"][gate] == pytest.approx(min(before, tau), rel=1e-4)
            scaled += before > tau
        assert clip["after"]["others"] <= clip["clip.threshold"] * (1 + 1e-4)
    first = seen.clips[0]
    assert all(first[f"clip.threshold.{g}"] == 0.05 for g in ("input", "forget", "cell"))
    assert scaled > 0


def lr_schedule(factors: list[float]):
    """eta_i / eta_0 at the logged steps i = 1, 3, 5, 7."""
    def check(seen: Seen, cfg: TrialConfig) -> None:
        assert seen.logged(rs.TRAIN_LR) == approx([cfg.train.lr * f for f in factors])
    return check


def check_dropout_schedule(seen: Seen, cfg: TrialConfig) -> None:
    expected = [0.3 * math.exp(-0.1 * i) for i in LOGGED]  # p_i = p_0 exp(-lambda i)
    assert seen.logged(rs.TRAIN_DROPOUT_PREFIX + "input") == approx(expected)
    assert seen.logged(rs.TRAIN_DROPOUT_PREFIX + "output") == approx(expected)
    (model,) = seen.models  # the model's own rates followed (last set at step 7)
    assert model.rates.input == pytest.approx(0.3 * math.exp(-0.7))


def same_batch_losses(seen: Seen, cfg: TrialConfig) -> tuple[torch.Tensor, ...]:
    """(the loss the trial trained on at its first step, the plain cross entropy of the same
    logits, the logits, the batch)."""
    loss, logits, batch = (seen.first_loss[k] for k in ("loss", "logits", "batch"))
    flat, target = logits.reshape(-1, logits.shape[-1]), batch.tgt.reshape(-1)
    return loss, F.cross_entropy(flat, target, ignore_index=PAD), logits, batch


def check_label_smoothing(seen: Seen, cfg: TrialConfig) -> None:
    loss, plain, logits, batch = same_batch_losses(seen, cfg)
    flat, target = logits.reshape(-1, logits.shape[-1]), batch.tgt.reshape(-1)
    # target (1 - 0.1) one-hot + 0.1 / V uniform, mean over non-pad tokens
    log_p = torch.log_softmax(flat, -1)[target != PAD]
    smooth = -(0.9 * log_p.gather(1, target[target != PAD, None]).squeeze(1)
               + 0.1 * log_p.mean(1)).mean()
    assert float(loss) == pytest.approx(float(smooth), rel=1e-5)
    assert float(loss) != pytest.approx(float(plain), rel=1e-3)


def check_focal(seen: Seen, cfg: TrialConfig) -> None:
    loss, plain, logits, batch = same_batch_losses(seen, cfg)
    # -alpha_t (1 - p_t)^2 log p_t, alpha_t = (T - t) / T (linear_down), mean over tokens
    log_p = torch.log_softmax(logits, -1).gather(2, batch.tgt.unsqueeze(2)).squeeze(2)
    mask = batch.tgt != PAD
    t = torch.arange(batch.tgt.shape[1]).unsqueeze(0)
    alpha = (batch.tgt_len.unsqueeze(1) - t) / batch.tgt_len.unsqueeze(1)
    per_token = -alpha * (1 - log_p.exp()) ** 2 * log_p
    assert float(loss) == pytest.approx(float(per_token[mask].mean()), rel=1e-5)
    assert float(loss) < float(plain)  # well-classified and late tokens weigh less


def constant(seen: Seen, cfg: TrialConfig) -> None:
    """Teacher forcing: eps 1, the lr and no dropout or curriculum values unchanged."""
    sampling([1.0] * 4)(seen, cfg)
    assert seen.logged(rs.TRAIN_LR) == [cfg.train.lr] * 4
    assert not any(k.startswith((rs.TRAIN_DROPOUT_PREFIX, "curriculum.")) for k in seen.logs[2])
    assert all(clip.keys() == {"clip.grad_norm", "after"} for clip in seen.clips)
    assert all(lengths == [None] for lengths in seen.ranges.values())  # the task's own draws
    loss, plain, _, _ = same_batch_losses(seen, cfg)
    assert float(loss) == pytest.approx(float(plain), rel=1e-6)  # plain cross entropy


def cosine(t: float, period: float) -> float:
    return 0.5 * (1 + math.cos(math.pi * t / period))


EFFECTS: dict[str, Callable[[Seen, TrialConfig], None]] = {
    "teacher_forcing": constant,
    "always_sample": sampling([0.0] * 4),
    "linear": sampling([max(0.2, 1 - 0.1 * i) for i in LOGGED]),
    "exponential": sampling([0.9 ** i for i in LOGGED]),
    "inverse_sigmoid": sampling([2 / (2 + math.exp((i - 1) / 2)) for i in LOGGED]),
    # L_i = floor(2 + 0.5 i); floor(2 * 2^(i / 4)) capped at the longest length 6
    "length_linear": length_curriculum([2, 2, 3, 3, 4, 4, 5, 5]),
    "length_exponential": length_curriculum([2, 2, 2, 3, 4, 4, 5, 6]),
    "adaptive": check_adaptive,
    "naive": check_naive,
    "perplexity": check_perplexity,
    "multitask": check_multitask,
    "mix": check_mix,
    "combined": check_combined,
    "clip_norm": check_clip_norm,
    "clip_adaptive": check_clip_adaptive,
    "clip_per_gate": check_clip_per_gate,
    "lr_exponential": lr_schedule([math.exp(-0.05 * i) for i in LOGGED]),
    "lr_step": lr_schedule([0.5 ** (i // 3) for i in LOGGED]),
    # linear warmup over 2 steps from 0.01, then cosine over the 6 steps left
    "lr_cosine": lr_schedule([0.505, *(cosine(i - 2, 6) for i in LOGGED[1:])]),
    "lr_restarts": lr_schedule([cosine(i % 3, 3) for i in LOGGED]),
    "dropout_schedule": check_dropout_schedule,
    "label_smoothing": check_label_smoothing,
    "focal": check_focal,
}


def test_every_technique_has_an_effect_check():
    assert set(EFFECTS) == set(TECHNIQUES)


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
