"""Every model-zoo option can be selected from a suite and trained end to end (a few steps)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from lstm_harness.suite import load_suite
from lstm_harness.tracking import prepare_experiment
from lstm_harness.trial import Runtime, execute_trial

OPTIONS = {
    "lstm": {},
    "layernorm": {"model.cell": "layernorm"},
    "dropout": {"model.dropout": {"input": 0.2, "output": 0.2}},
    "variational": {"model.dropout": {"input": 0.2, "recurrent": 0.2, "output": 0.2,
                                      "variational": True}},
    "recurrent": {"model.dropout.recurrent": 0.3},
    "zoneout": {"model.dropout": {"zoneout": 0.1, "zoneout_c": 0.05}},
    "weight_drop": {"model.dropout.weight_drop": 0.3},
    "residual": {"model.skip": "residual", "model.layers": 3},
    "residual_step": {"model.skip": "residual_step", "model.layers": 2},
    "highway": {"model.skip": "highway", "model.layers": 2},
    "dense": {"model.skip": "dense", "model.layers": 3},
    "bidirectional": {"model.bidirectional": True},
    "hier_concat": {"model.context": "hierarchical", "model.layers": 2},
    "hier_sum": {"model.context": "hierarchical", "model.combine": "sum", "model.layers": 2},
    "hier_mean": {"model.context": "hierarchical", "model.combine": "mean", "model.layers": 2},
    "hier_project": {"model.context": "hierarchical", "model.combine": "project",
                     "model.layers": 2},
    "bahdanau": {"model.attention": {"type": "bahdanau"}},
    "luong_dot": {"model.attention": {"type": "luong", "score": "dot"}},
    "luong_general": {"model.attention": {"type": "luong", "score": "general"}},
    "luong_concat": {"model.attention": {"type": "luong", "score": "concat"}},
    "no_input_feeding": {"model.attention": {"type": "luong", "input_feeding": False}},
    "local_p": {"model.attention": {"type": "local", "score": "general", "window": 2}},
    "self": {"model.attention": {"type": "self"}},
    "coverage": {"model.attention": {"type": "bahdanau", "coverage": True}},
    "everything": {"model.cell": "layernorm", "model.bidirectional": True, "model.layers": 2,
                   "model.skip": "residual", "model.dropout": {"zoneout": 0.1, "input": 0.1},
                   "model.attention": {"type": "luong", "score": "concat", "coverage": True}},
}


def suite_file(tmp_path: Path) -> Path:
    suite = {
        "name": "zoo",
        "tasks": [{"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 5,
                                               "n_valid": 16, "n_test": 16}}],
        "base": {"model": {"embed": 8, "hidden": 8},
                 "train": {"steps": 4, "batch_size": 8, "eval_every": 4, "log_every": 2}},
        "axes": {"option": OPTIONS},
        "seeds": [0],
        "metrics": ["exact_match"],
    }
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def trials(tmp_path_factory):
    suite = load_suite(suite_file(tmp_path_factory.mktemp("zoo")))
    return {t.variants["option"]: t for t in suite.trials()}


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_trains_end_to_end(trials, option):
    final = execute_trial(trials[option], Runtime(None, None, None))
    assert 0.0 <= final["test.token_accuracy"] <= 1.0
    assert final["test.loss"] > 0 and final["cost.params"] > 0


def test_attention_heatmap_is_logged_to_mlflow(trials, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment = prepare_experiment(uri, "zoo", tmp_path / "artifacts")
    execute_trial(trials["bahdanau"], Runtime(uri, experiment, None))
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([experiment])
    assert "attention.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
    local = client.download_artifacts(run.info.run_id, "attention.png", str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_trains_in_the_forecaster(trials, option):
    """The same options drive the forecaster (values in, values out, one covariate stream)."""
    import torch

    from lstm_harness.config import ModelConfig
    from lstm_harness.models.seq2seq import Forecaster
    from lstm_harness.tasks.base import ForecastBatch

    torch.manual_seed(0)
    cfg = ModelConfig.model_validate(trials[option].config["model"])
    model = Forecaster(cfg, history_features=2, targets=1, covariate_features=[3])
    t = torch.linspace(0, 6, 16)
    series = torch.sin(t + torch.rand(8, 1) * 3)  # [8, 16] phase-shifted sines
    history = torch.stack([series[:, :12], torch.cos(t[:12]).expand(8, -1)], dim=-1)
    batch = ForecastBatch(history, series[:, 12:, None], [torch.randn(8, 12, 3)],
                          torch.arange(8))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    model.eval()
    assert model.free_running(batch, 4).shape == (8, 4, 1)
