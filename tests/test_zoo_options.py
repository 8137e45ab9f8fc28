"""Every model-zoo option can be selected from a suite and trained end to end (a few steps)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

import lstm_harness.trial as trial_module
from lstm_harness.config import ModelConfig, set_dotted
from lstm_harness.models.factory import build_model
from lstm_harness.models.layers import BidirectionalLayer, CustomLSTMLayer, FusedLSTMLayer
from lstm_harness.models.seq2seq import Seq2Seq, count_parameters
from lstm_harness.models.stack import LSTMStack
from lstm_harness.suite import load_suite
from lstm_harness.tasks.copy import CopyParams, CopyTask
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
def test_option_trains_end_to_end(trials, option, monkeypatch):
    built: list[Seq2Seq] = []
    original = trial_module.build_model

    def build_and_keep(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(trial_module, "build_model", build_and_keep)
    final = execute_trial(trials[option], Runtime(None, None, None))
    assert 0.0 <= final["test.token_accuracy"] <= 1.0
    assert final["test.loss"] > 0 and final["cost.params"] > 0
    # the option took effect in the model the trial trained
    (model,) = built
    assert final["cost.params"] == count_parameters(model)
    EFFECTS[option](model, trials[option].config["model"])


# ----------------------------------------------------------------------------- effects
# Each option's mark on the model the trial built (E = embed = 8, H = hidden = 8): the layer
# class, parameter shapes and counts, the shared dropout rates, and where an option adds no
# parameters, outputs that change with it (same weights, the option off).

E = H = 8


def lstm_params(inputs: int, hidden: int = H, blocks: int = 4) -> int:
    """Parameters of one LSTM layer direction: W_ih, W_hh, b_ih, b_hh of ``blocks`` gates."""
    return blocks * hidden * (inputs + hidden) + 2 * blocks * hidden


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def encoder(model: Seq2Seq) -> LSTMStack:
    return model.encoders[0].stack


def layers(model: Seq2Seq) -> list[torch.nn.Module]:
    """Every recurrent layer of the encoder and the decoder."""
    return [*encoder(model).layers, *model.decoder.layers]


def batch():
    return CopyTask(CopyParams(vocab=5, min_len=2, max_len=5, n_valid=16,
                               n_test=16)).train_batch(0, 16, seed=0)


def logits(model: Seq2Seq, training: bool = False) -> torch.Tensor:
    model.train(training)
    with torch.no_grad():
        return model(batch())


def same_weights_without(model: Seq2Seq, config: dict, **changes) -> Seq2Seq:
    """A model of ``config`` with ``changes`` (dotted model settings) and ``model``'s weights."""
    tree = copy.deepcopy(config)
    for path, value in changes.items():
        set_dotted(tree, path, value)
    task = CopyTask(CopyParams(vocab=5, min_len=2, max_len=5, n_valid=16, n_test=16))
    other = build_model(ModelConfig.model_validate(tree), task)
    missing, unexpected = other.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(".projections." in k for k in unexpected)  # residual's own
    return other


def changes_outputs(model: Seq2Seq, config: dict, **off) -> bool:
    return not torch.allclose(logits(model), logits(same_weights_without(model, config, **off)))


def stochastic_in_training(model: Seq2Seq) -> bool:
    """Two training-mode passes differ (dropout masks), evaluation passes do not."""
    torch.manual_seed(0)
    first, second = logits(model, training=True), logits(model, training=True)
    assert torch.equal(logits(model), logits(model))
    return not torch.allclose(first, second)


def rates(model: Seq2Seq) -> dict[str, float]:
    return {k: v for k, v in vars(model.rates).items() if v}


def check_lstm(model, config):
    assert all(type(layer) is FusedLSTMLayer for layer in layers(model))
    assert len(encoder(model).layers) == len(model.decoder.layers) == 1
    assert params(encoder(model).layers[0]) == lstm_params(E)
    assert model.attention is None and rates(model) == {}
    assert not stochastic_in_training(model)


def check_layernorm(model, config):
    assert all(type(layer) is CustomLSTMLayer and layer.layernorm for layer in layers(model))
    # gains and biases of the four gates' and the cell's normalisation: 4H + 4H + H + H
    assert params(encoder(model).layers[0]) == lstm_params(E) + 10 * H


def check_dropout(model, config):
    assert all(type(layer) is FusedLSTMLayer for layer in layers(model))
    assert rates(model) == {"input": 0.2, "output": 0.2}
    assert stochastic_in_training(model)


def check_variational(model, config):
    assert all(type(layer) is CustomLSTMLayer for layer in layers(model))  # recurrent dropout
    assert rates(model) == {"input": 0.2, "recurrent": 0.2, "output": 0.2, "variational": True}
    layer = encoder(model).layers[0]
    layer.train()
    layer.begin(16, torch.device("cpu"))
    assert layer._rec_mask.shape == (16, H)  # one recurrent mask per sequence
    assert stochastic_in_training(model)


def check_recurrent(model, config):
    assert all(type(layer) is CustomLSTMLayer for layer in layers(model))
    assert rates(model) == {"recurrent": 0.3}
    layer = encoder(model).layers[0].train()
    layer.begin(16, torch.device("cpu"))
    masks = layer.sequence_masks(5, 16, torch.ones(1))
    assert masks[0].shape == (5, 16, H)  # a fresh mask per step
    assert stochastic_in_training(model)


def check_zoneout(model, config):
    assert all(type(layer) is CustomLSTMLayer for layer in layers(model))
    assert rates(model) == {"zoneout": 0.1, "zoneout_c": 0.05}
    assert stochastic_in_training(model)
    # evaluation mixes in the expectation p h_{t-1} + (1 - p) h~_t
    assert changes_outputs(model, config, **{"dropout.zoneout": 0.0, "dropout.zoneout_c": 0.0})


def check_weight_drop(model, config):
    assert all(type(layer) is FusedLSTMLayer for layer in layers(model))  # in the fused kernel
    assert rates(model) == {"weight_drop": 0.3}
    layer = encoder(model).layers[0].train()
    (w_hh,) = layer.recurrent_weights()
    assert 0.15 < float((w_hh == 0).float().mean()) < 0.45  # DropConnect on W_hh
    assert stochastic_in_training(model)


def check_residual(model, config):
    stack = encoder(model)
    assert len(stack.layers) == 3 and all(type(layer) is FusedLSTMLayer for layer in stack.layers)
    assert all(isinstance(p, torch.nn.Identity) for p in stack.projections)  # equal widths
    assert changes_outputs(model, config, skip="none")


def check_residual_step(model, config):
    assert len(encoder(model).layers) == 2
    assert all(type(layer) is CustomLSTMLayer and layer.residual_step for layer in layers(model))
    assert changes_outputs(model, config, skip="none")


def check_highway(model, config):
    assert all(type(layer) is CustomLSTMLayer and layer.highway for layer in layers(model))
    first, second = encoder(model).layers
    assert first.weight_ih.shape == (5 * H, E)  # the transform gate T: a fifth gate block
    assert params(first) == lstm_params(E, blocks=5)
    assert params(second) == lstm_params(H, blocks=5)


def check_dense(model, config):
    stack = encoder(model)
    assert all(type(layer) is FusedLSTMLayer for layer in stack.layers)
    # layer l reads the input and every lower layer's output
    assert [layer.weight_ih.shape[1] for layer in stack.layers] == [E, E + H, E + 2 * H]
    assert params(stack) == lstm_params(E) + lstm_params(E + H) + lstm_params(E + 2 * H)


def check_bidirectional(model, config):
    (layer,) = encoder(model).layers
    assert type(layer) is FusedLSTMLayer and layer.bidirectional and layer.output_size == 2 * H
    assert params(layer) == 2 * lstm_params(E)  # one LSTM per direction
    assert model.bridge is not None and model.bridge.in_features == 2 * H  # -> decoder size
    assert not model.decoder.layers[0].bidirectional


def final_states() -> list[tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(1)
    return [(torch.randn(3, H), torch.randn(3, H)) for _ in range(2)]


def check_hier_concat(model, config):
    enc = model.encoders[0]
    (h1, _), (h2, _) = finals = final_states()
    assert enc.context_size == 2 * H
    assert torch.equal(enc.summarize(finals), torch.cat([h1, h2], 1))


def check_hier_sum(model, config):
    (h1, _), (h2, _) = finals = final_states()
    assert torch.allclose(model.encoders[0].summarize(finals), h1 + h2)


def check_hier_mean(model, config):
    (h1, _), (h2, _) = finals = final_states()
    assert torch.allclose(model.encoders[0].summarize(finals), (h1 + h2) / 2)


def check_hier_project(model, config):
    enc = model.encoders[0]
    (h1, _), (h2, _) = finals = final_states()
    assert enc.project is not None and enc.project.in_features == 2 * H
    with torch.no_grad():
        assert torch.allclose(enc.summarize(finals), enc.project(torch.cat([h1, h2], 1)))


def check_attention(kind: str, score: str, feeding: bool = True):
    def check(model, config):
        att = model.attention
        assert (att.kind, att.score) == (kind, score)
        dec_in = model.decoder.layers[0].input_size
        if kind == "bahdanau":  # the context enters the decoder and the output layer
            assert dec_in == E + H and model.head.in_features == 2 * H
            assert model.luong_out is None
        else:  # Luong: input feeding puts h~_{t-1} beside the input
            assert dec_in == (E + H if feeding else E) and model.luong_out is not None
    return check


def check_luong_general(model, config):
    check_attention("luong", "general")(model, config)
    assert model.attention.key_proj.weight.shape == (H, H)  # score = h^T W h_s


def check_luong_concat(model, config):
    check_attention("luong", "concat")(model, config)
    assert model.attention.v is not None  # score = v^T tanh(W [h; h_s])


def check_local(model, config):
    check_attention("local", "general")(model, config)
    assert model.attention.window == 2 and model.attention.pos_proj is not None


def check_self(model, config):
    assert model.attention is None  # intra-attention inside the encoder, not in the decoder
    for layer in encoder(model).layers:
        assert type(layer) is CustomLSTMLayer and layer.self_attention
        assert layer.weight_hh.shape == (4 * H, 2 * H)  # reads [h_{t-1}; h~_t]


def check_coverage(model, config):
    check_attention("bahdanau", "concat")(model, config)
    assert model.attention.use_coverage and model.attention.cov_proj is not None
    model.eval()
    with torch.no_grad():
        _, state = model.forward_with_state(batch())
    assert len(state.coverage_loss) > 0 and state.coverage is not None


def check_everything(model, config):
    stack = encoder(model)
    assert len(stack.layers) == 2
    for layer in stack.layers:  # a custom step (layernorm, zoneout) in both directions
        assert type(layer) is BidirectionalLayer
        assert all(type(d) is CustomLSTMLayer and d.layernorm for d in (layer.fwd, layer.bwd))
    # residual: the input (E wide) is projected to the bidirectional width 2H; then identity
    assert isinstance(stack.projections[0], torch.nn.Linear)
    assert stack.projections[0].weight.shape == (2 * H, E)
    assert isinstance(stack.projections[1], torch.nn.Identity)
    assert rates(model) == {"input": 0.1, "zoneout": 0.1}
    att = model.attention
    assert (att.kind, att.score, att.use_coverage) == ("luong", "concat", True)


EFFECTS = {
    "lstm": check_lstm,
    "layernorm": check_layernorm,
    "dropout": check_dropout,
    "variational": check_variational,
    "recurrent": check_recurrent,
    "zoneout": check_zoneout,
    "weight_drop": check_weight_drop,
    "residual": check_residual,
    "residual_step": check_residual_step,
    "highway": check_highway,
    "dense": check_dense,
    "bidirectional": check_bidirectional,
    "hier_concat": check_hier_concat,
    "hier_sum": check_hier_sum,
    "hier_mean": check_hier_mean,
    "hier_project": check_hier_project,
    "bahdanau": check_attention("bahdanau", "concat"),
    "luong_dot": check_attention("luong", "dot"),
    "luong_general": check_luong_general,
    "luong_concat": check_luong_concat,
    "no_input_feeding": check_attention("luong", "general", feeding=False),
    "local_p": check_local,
    "self": check_self,
    "coverage": check_coverage,
    "everything": check_everything,
}


def test_every_option_has_an_effect_check():
    assert set(EFFECTS) == set(OPTIONS)


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
