"""Per-source-length metrics (``train.length_buckets``; Bahdanau et al. 2015 Fig. 2) and the
copy task's length-generalisation split (``eval_max_len``)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from lstm_harness.config import ModelConfig, TrainConfig
from lstm_harness.models.factory import build_model
from lstm_harness.tasks.base import length_bucket_metric, strip_special, unbucketed
from lstm_harness.tasks.copy import CopyParams, CopyTask
from lstm_harness.training.evaluate import bucketed_scores, evaluate_seq2seq


def test_bucket_names_and_directions() -> None:
    assert length_bucket_metric("exact_match", 11, 20) == "exact_match_len11-20"
    assert unbucketed("exact_match_len11-20") == "exact_match"
    assert unbucketed("token_accuracy_tf") == "token_accuracy_tf"
    assert CopyTask.direction("exact_match_len1-10") == "max"


def test_bucketed_scores_by_hand() -> None:
    task = CopyTask(CopyParams(vocab=5))
    refs = [[3, 4], [3, 4, 5], [3, 4, 5, 6], [5, 5, 5, 5, 5]]
    hyps = [[3, 4], [3, 4, 6], [3, 4, 5, 6], [5]]
    lengths = [2, 3, 4, 5]
    out = bucketed_scores(task, hyps, refs, lengths, [0, 2, 4, 10, 20])
    # (0, 2]: one exact pair; (2, 4]: 1 of 2 exact, tokens 2/3 + 4/4 = 6/7; (4, 10]: 0, 1/5
    assert out == pytest.approx({
        "exact_match_len1-2": 1.0, "token_accuracy_len1-2": 1.0,
        "exact_match_len3-4": 0.5, "token_accuracy_len3-4": 6 / 7,
        "exact_match_len5-10": 0.0, "token_accuracy_len5-10": 1 / 5})
    assert not any(k.endswith("len11-20") for k in out)  # an empty bucket is left out


def test_evaluation_reports_buckets_equal_to_scoring_the_subsets() -> None:
    task = CopyTask(CopyParams(vocab=6, min_len=2, max_len=6, n_test=40))
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed=8, hidden=12), task)
    device = torch.device("cpu")
    plain = evaluate_seq2seq(model, task, "test", 16, device)
    bucketed = evaluate_seq2seq(model, task, "test", 16, device, [0, 3, 6])
    assert {k: bucketed[k] for k in plain} == pytest.approx(plain)
    model.eval()
    hyps, refs, lengths = [], [], []
    with torch.no_grad():
        for batch in task.eval_batches("test", 16):
            free = model.greedy(batch.src, batch.src_len, task.max_target_len + 1)
            hyps += [strip_special(r) for r in free.tolist()]
            refs += [strip_special(r) for r in batch.tgt.tolist()]
            lengths += batch.src_len.tolist()
    short = [i for i, n in enumerate(lengths) if n <= 3]
    expected = task.score([hyps[i] for i in short], [refs[i] for i in short])
    assert bucketed["exact_match_len1-3"] == pytest.approx(expected["exact_match"])
    assert bucketed["token_accuracy_len1-3"] == pytest.approx(expected["token_accuracy"])
    assert "exact_match_len4-6" in bucketed and "exact_match_tf_len1-3" not in bucketed


def test_length_bucket_edges_must_increase() -> None:
    assert TrainConfig(length_buckets=[0, 10, 20]).length_buckets == [0, 10, 20]
    for edges in ([10, 10], [0, 20, 10], [-1, 5], [5]):
        with pytest.raises(ValidationError, match="length_buckets"):
            TrainConfig(length_buckets=edges)


def test_eval_max_len_makes_held_out_sequences_longer_than_training() -> None:
    task = CopyTask(CopyParams(variant="reverse", vocab=8, min_len=3, max_len=10,
                               eval_max_len=20, n_test=300))
    test_lengths = [len(x) for x in task.split_sequences("test")]
    assert min(test_lengths) >= 3 and max(test_lengths) == 20
    assert sum(n > 10 for n in test_lengths) > 100
    for step in range(5):
        assert int(task.train_batch(step, 64, seed=0).src_len.max()) <= 10
    assert task.max_target_len == 20
    default = CopyTask(CopyParams(variant="reverse", vocab=8, min_len=3, max_len=10))
    same = CopyTask(CopyParams(variant="reverse", vocab=8, min_len=3, max_len=10,
                               eval_max_len=10))
    assert default.split_sequences("test") == same.split_sequences("test")
    with pytest.raises(ValidationError, match="eval_max_len"):
        CopyParams(max_len=10, eval_max_len=5)


SUITE = """
name: buckets
tasks:
  - {name: copy, params: {variant: reverse, vocab: 5, min_len: 2, max_len: 4, eval_max_len: 6,
                          n_valid: 16, n_test: 32}}
base:
  model: {embed: 8, hidden: 8}
  train: {steps: 4, batch_size: 8, eval_every: 4, length_buckets: [0, 4, 6]}
seeds: [0]
metrics: [exact_match, exact_match_len1-4, exact_match_len5-6, token_accuracy_len5-6]
"""


def test_a_suite_names_per_length_metrics_and_its_trials_report_them(tmp_path) -> None:
    from lstm_harness.suite import SuiteError, load_suite
    from lstm_harness.trial import Runtime, execute_trial

    file = tmp_path / "buckets.yaml"
    file.write_text(SUITE)
    suite = load_suite(file)
    assert suite.directions()["exact_match_len5-6"] == "max"
    (trial,) = suite.trials()
    final = execute_trial(trial, Runtime(tracking_uri=None, experiment_id=None,
                                         parent_run_id=None))
    for name in ("exact_match_len1-4", "exact_match_len5-6", "token_accuracy_len5-6"):
        assert 0.0 <= final[f"test.{name}"] <= 1.0
    file.write_text(SUITE.replace("token_accuracy_len5-6", "bleu_len5-6"))
    with pytest.raises(SuiteError, match=r"metrics\[3\]: unknown metric 'bleu_len5-6'"):
        load_suite(file)


def test_per_length_names_must_match_the_configured_buckets(tmp_path) -> None:
    from lstm_harness.suite import SuiteError, load_suite

    file = tmp_path / "buckets.yaml"
    file.write_text(SUITE.replace("exact_match_len5-6,", "exact_match_len1-10,"))
    with pytest.raises(SuiteError, match=r"metrics\[2\]: unknown metric 'exact_match_len1-10'"):
        load_suite(file)
    file.write_text(SUITE.replace(", length_buckets: [0, 4, 6]", ""))
    with pytest.raises(SuiteError, match=r"metrics\[1\]: unknown metric 'exact_match_len1-4'"):
        load_suite(file)
