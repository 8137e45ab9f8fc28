"""A tiny language-model and copy-memory suite through Ray Tune and MLflow: the table has the
tasks' metrics, the reference rows (unigram, memoryless) and MC-dropout columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.cli import main

pytestmark = pytest.mark.slow

SUITE = """
name: lm_e2e
description: word-level LM on local files and copy memory
tasks:
  - {name: language_model, label: words, params: {source: files, files: corpus, bptt: 6}}
  - {name: copy_memory, params: {delay: 5, symbols: 2, n_valid: 16, n_test: 16}}
base:
  model: {embed: 8, hidden: 8}
  train: {steps: 12, batch_size: 4, eval_every: 6, eval_batch_size: 4, mc_samples: 2}
axes:
  reg:
    none: {}
    dropout: {model.dropout.output: 0.3, model.dropout.variational: true}
seeds: [0]
metrics: [perplexity, bpc, perplexity_mc, cross_entropy, accuracy]
table: {rows: [reg], baseline: none}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def test_lm_suite_end_to_end(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, n in (("train", 60), ("valid", 12), ("test", 12)):
        (corpus / f"{split}.txt").write_text(
            "\n".join(f"the cat number {i % 7} sat on the mat" for i in range(n)) + "\n")
    suite = tmp_path / "lm_e2e.yaml"
    suite.write_text(SUITE)
    assert main(["run", str(suite), "--no-progress"]) == 0

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("lm_e2e")
    trials = [r for r in client.search_runs([experiment.experiment_id])
              if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL]
    assert len(trials) == 4 and {r.info.status for r in trials} == {"FINISHED"}
    words = next(r for r in trials if r.data.tags[rs.TAG_TASK] == "words")
    for key in ("test.perplexity", "test.bpc", "test.perplexity_mc", "valid.perplexity",
                "reference.unigram.perplexity"):
        assert key in words.data.metrics, key
    history = client.get_metric_history(words.info.run_id, "valid.bpc")
    assert sorted(p.step for p in history) == [6, 12]
    memory = next(r for r in trials if r.data.tags[rs.TAG_TASK] == "copy_memory")
    assert memory.data.metrics["reference.memoryless.cross_entropy"] == pytest.approx(
        2 * 2.0794415416798357 / 9)

    table = (tmp_path / "results" / "lm_e2e" / "table.md").read_text()
    assert "words · perplexity ↓" in table and "copy_memory · cross_entropy ↓" in table
    assert "unigram" in table and "memoryless" in table
    csv = pd.read_csv(tmp_path / "results" / "lm_e2e" / "table.csv")
    ppl = csv[(csv["metric"] == "perplexity") & (csv["task"] == "words")
              & (csv["row"] == "dropout")]
    expected = next(r for r in trials if r.data.tags[rs.TAG_TASK] == "words"
                    and r.data.tags[f"{rs.TAG_VARIANT_PREFIX}reg"] == "dropout")
    assert ppl["mean"].iloc[0] == pytest.approx(expected.data.metrics["test.perplexity"])
