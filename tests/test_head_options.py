"""Every option of the README's option table, on every model head: the trial trains, or
``validate`` refuses the suite with one message that names the option and the head.

The heads: the encoder-decoder (copy), the forecaster (Mackey-Glass), the language model
(copy memory) and the sequence classifier (adding). The README's table is read by the test, so
an option added there without a case here fails ``test_every_readme_option_has_a_case``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import yaml

from lstm_harness.registry import installed_task_names
from lstm_harness.suite import SuiteError, load_suite
from lstm_harness.trial import Runtime, execute_trial

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = Runtime(tracking_uri=None, experiment_id=None, parent_run_id=None)

HEADS = {
    "seq2seq": {"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 4,
                                           "n_valid": 8, "n_test": 8, "n_train": 64}},
    "forecast": {"name": "timeseries", "params": {"series": "mackey_glass", "mg_length": 300,
                                                  "history": 8, "horizon": 3}},
    "lm": {"name": "copy_memory", "params": {"delay": 4, "symbols": 2, "n_valid": 8,
                                             "n_test": 8}},
    "classify": {"name": "adding", "params": {"length": 6, "n_valid": 8, "n_test": 8}},
}
HEAD_WORDS = {"seq2seq": ("encoder-decoder",), "forecast": ("forecaster", "forecasting task"),
              "lm": ("language model",), "classify": ("sequence classifier",)}
METRIC = {"seq2seq": "exact_match", "forecast": "mse", "lm": "cross_entropy",
          "classify": "mse"}

ATT = "model.attention"
CASES: dict[str, list[dict]] = {  # README path -> overrides that switch it on
    "model.embed": [{"model.embed": 6}],
    "model.hidden": [{"model.hidden": 10}],
    "model.layers": [{"model.layers": 2}],
    "model.bidirectional": [{"model.bidirectional": True}],
    "model.cell": [{"model.cell": "layernorm"}],
    "model.dropout.input": [{"model.dropout.input": 0.2}],
    "model.dropout.recurrent": [{"model.dropout.recurrent": 0.2}],
    "model.dropout.output": [{"model.dropout.output": 0.2}],
    "model.dropout.zoneout": [{"model.dropout.zoneout": 0.2}],
    "model.dropout.zoneout_c": [{"model.dropout.zoneout_c": 0.2}],
    "model.dropout.weight_drop": [{"model.dropout.weight_drop": 0.2}],
    "model.dropout.embedding": [{"model.dropout.embedding": 0.2}],
    "model.dropout.variational": [{"model.dropout.variational": True,
                                   "model.dropout.output": 0.2,
                                   "model.dropout.recurrent": 0.2}],
    "model.skip": [{"model.skip": s, "model.layers": 2}
                   for s in ("residual", "residual_step", "highway", "dense")],
    "model.context": [{"model.context": "hierarchical", "model.layers": 2}],
    "model.combine": [{"model.context": "hierarchical", "model.combine": c, "model.layers": 2}
                      for c in ("sum", "mean", "project")],
    "model.fuse": [{"model.fuse": "sum"}],
    "model.attention": [{ATT: {"type": "bahdanau"}}, {ATT: {"type": "luong", "score": "dot"}},
                        {ATT: {"type": "luong", "score": "general"}},
                        {ATT: {"type": "local", "score": "concat", "coverage": True}},
                        {ATT: {"type": "self"}}],
    "model.hidden_sizes": [{"model.hidden_sizes": [10, 6]}],
    "model.tie_weights": [{"model.tie_weights": True, "model.hidden_sizes": [10, 8]}],
    "model.readout": [{"model.readout": "mean"}],
    "train.steps": [{"train.steps": 3}],
    "train.batch_size": [{"train.batch_size": 3}],
    "train.eval_every": [{"train.eval_every": 1}],
    "train.eval_batch_size": [{"train.eval_batch_size": 3}],
    "train.log_every": [{"train.log_every": 1}],
    "train.mc_samples": [{"train.mc_samples": 2, "model.dropout.output": 0.2}],
    "train.length_buckets": [{"train.length_buckets": [0, 2, 4]}],
    "train.steps_to_target": [{"train.steps_to_target": {"metric": "loss", "value": 100.0}}],
    "train.optimizer": [{"train.optimizer": "sgd", "train.momentum": 0.9}],
    "train.lr": [{"train.lr": 0.01}],
    "train.weight_decay": [{"train.weight_decay": 0.01}],
    "train.sampling": [{"train.sampling": {"schedule": "inverse_sigmoid", "k": 2}}],
    "train.curriculum": [{"train.curriculum": {"kind": k}} for k in (
        "length_linear", "length_exponential", "adaptive", "naive", "mix", "combined")]
    + [{"train.curriculum": {"kind": "perplexity", "pretrain_steps": 1}},
       {"train.curriculum": {"kind": "multitask", "tasks": [
           {"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 3,
                                       "n_valid": 8, "n_test": 8}}]}}],
    "train.loss": [{"train.loss": {"kind": "ce", "label_smoothing": 0.1}},
                   {"train.loss": {"kind": "focal", "time_weight": "linear_up"}},
                   {"train.loss": {"kind": "ar_tar", "ar": 1.0, "tar": 1.0}}]
    + [{"train.loss": {"kind": k, "reward": "bleu", "samples": 2}}
       for k in ("reinforce", "scst", "mrt", "mixer")],
    "train.clip": [{"train.clip": {"kind": k}} for k in ("norm", "adaptive", "per_gate")],
    "train.lr_schedule": [{"train.lr_schedule": {"kind": k}} for k in (
        "exponential", "step", "cosine", "warm_restarts")],
    "train.dropout_schedule": [{"train.dropout_schedule": {"kind": "exponential"},
                                "model.dropout.output": 0.2}],
    "monitor": [{"monitor": {m: True, "every": 2}}
                for m in ("gates", "cells", "curvature", "info_flow")]
    + [{"monitor": {"grad_anomaly": True, "grad_action": "skip", "grad_window": 2}}],
}
# covered elsewhere: a second suite stage through Ray and MLflow
ELSEWHERE = {"train.init_from": "tests/test_init_from.py"}


def expand(path: str) -> list[str]:
    """`model.dropout.{a,b}` -> [model.dropout.a, model.dropout.b]."""
    match = re.fullmatch(r"(.*)\{(.*)\}(.*)", path)
    if not match:
        return [path]
    head, names, tail = match.groups()
    return [f"{head}{n}{tail}" for n in names.split(",")]


def readme_option_paths() -> list[str]:
    text = (ROOT / "README.md").read_text()
    table = text.split("| path | values |", 1)[1].split("\n\n", 1)[0]
    paths = []
    for line in table.splitlines()[2:]:
        first = line.split("|")[1]
        paths += [p for cell in re.findall(r"`([^`]+)`", first) for p in expand(cell)]
    return paths


def test_every_readme_option_has_a_case() -> None:
    paths = readme_option_paths()
    assert len(paths) > 30
    missing = [p for p in paths if p not in CASES and p not in ELSEWHERE]
    assert not missing, f"README options without a head test case: {missing}"


def suite_text(head: str, overrides: dict) -> str:
    loss = overrides.get("train.loss")
    if loss is not None and loss.get("kind") == "ar_tar":  # AR/TAR ride on cross entropy
        overrides = {**overrides, "train.loss": {"ar": loss["ar"], "tar": loss["tar"]}}
    base: dict = {"model": {"embed": 8, "hidden": 8},
                  "train": {"steps": 2, "batch_size": 4, "eval_every": 2, "log_every": 1,
                            "eval_batch_size": 8}}
    for dotted, value in overrides.items():
        node = base
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value if not isinstance(value, dict) else {**node.get(leaf, {}), **value}
    return yaml.safe_dump({"name": "heads", "tasks": [HEADS[head]], "base": base,
                           "seeds": [0], "metrics": [METRIC[head]]})


PARAMS = [pytest.param(head, path, overrides, id=f"{head}-{path}-{i}")
          for path, variants in CASES.items() for i, overrides in enumerate(variants)
          for head in HEADS]


@pytest.mark.parametrize("head, path, overrides", PARAMS)
def test_option_trains_or_is_refused_naming_it_and_the_head(tmp_path: Path, head: str,
                                                            path: str, overrides: dict) -> None:
    if HEADS[head]["name"] not in installed_task_names():
        pytest.skip(f"task {HEADS[head]['name']} is not installed")
    file = tmp_path / "heads.yaml"
    file.write_text(suite_text(head, overrides))
    try:
        suite = load_suite(file)
    except SuiteError as exc:
        lines = str(exc).splitlines()
        named = set(overrides)  # dotted paths, e.g. model.tie_weights, train.loss, monitor
        for line in lines:  # one line per problem, each naming the head and an option set
            assert line.startswith(f"{file}: "), line
            assert any(word in line for word in HEAD_WORDS[head]), line
            assert any(option in line for option in named), line
        return
    (trial,) = suite.trials()
    final = execute_trial(trial, RUNTIME)
    tests = {k: v for k, v in final.items() if k.startswith("test.")}
    assert tests and all(math.isfinite(v) for v in tests.values()), final
