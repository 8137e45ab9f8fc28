"""The example task plugin in examples/plugin-task: the task itself, then installed with pip
and run through the whole harness (Ray, MLflow, tables); and a broken plugin's message."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from pydantic import ValidationError

from lstm_harness.registry import TaskLookupError, load_task_class
from lstm_harness.tasks.base import EOS, N_SPECIAL, PAD, Task

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plugin-task"
PACKAGE = "lstm_harness_addition"
DISTRIBUTION = "lstm-harness-addition"


@pytest.fixture
def addition():
    """The example's module imported from the folder (not installed); removed afterwards so
    the installed copy is what the end-to-end test loads."""
    names = [PACKAGE, f"{PACKAGE}.task"]
    saved = {n: sys.modules.pop(n) for n in names if n in sys.modules}
    spec = importlib.util.spec_from_file_location(
        PACKAGE, EXAMPLE / PACKAGE / "__init__.py",
        submodule_search_locations=[str(EXAMPLE / PACKAGE)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        for n in names:
            sys.modules.pop(n, None)
        sys.modules.update(saved)


def number(ids: list[int]) -> int:
    return int("".join(str(t - N_SPECIAL) for t in ids))


def examples(batch) -> list[tuple[list[int], list[int]]]:
    """(source, target without EOS) token lists of each example."""
    return [(batch.src[i, : int(batch.src_len[i])].tolist(),
             batch.tgt[i, : int(batch.tgt_len[i]) - 1].tolist()) for i in range(batch.size)]


def digits(text: str) -> list[int]:
    return [N_SPECIAL + "0123456789+".index(c) for c in text]


# ---------------------------------------------------------------------- the task itself


def test_declaration_and_params(addition) -> None:
    cls = addition.AdditionTask
    assert issubclass(cls, Task) and cls.name == "addition" and cls.kind == "seq2seq"
    assert cls.metric_names() == ["exact_match", "exact_match_tf", "digit_accuracy",
                                  "digit_accuracy_tf"]
    assert cls.direction("digit_accuracy_tf") == "max"
    p = cls.Params()
    assert (p.max_digits, p.n_valid, p.n_test, p.data_seed) == (3, 256, 512, 1234)
    with pytest.raises(ValidationError, match="extra_forbidden|Extra inputs"):
        cls.Params(max_digit=2)
    with pytest.raises(ValidationError, match="half of the 100 possible pairs"):
        cls.Params(max_digits=1)  # 768 held-out pairs of 100 possible
    task = cls(cls.Params(max_digits=4))
    assert (task.src_vocab_size, task.tgt_vocab_size, task.max_target_len) == (14, 13, 5)


def test_examples_are_correct_sums(addition) -> None:
    task = addition.AdditionTask(addition.AdditionParams(max_digits=3))
    batches = [task.train_batch(step, 64, seed=0) for step in range(5)]
    batches.append(next(task.eval_batches("test", 64)))
    plus = N_SPECIAL + 10
    for batch in batches:
        assert batch.tgt[batch.tgt != PAD].max() < task.tgt_vocab_size
        for i, length in enumerate(batch.tgt_len.tolist()):
            assert batch.tgt[i, length - 1] == EOS and (batch.tgt[i, length:] == PAD).all()
        for src, tgt in examples(batch):
            assert src.count(plus) == 1 and EOS not in src
            cut = src.index(plus)
            a, b = number(src[:cut]), number(src[cut + 1:])
            assert 0 <= a < 1000 and 0 <= b < 1000
            assert number(tgt) == a + b
            assert tgt[0] != N_SPECIAL or tgt == [N_SPECIAL]  # no leading zero
            assert task.detokenize(tgt + [EOS, PAD]) == str(a + b)
            assert task.detokenize(src, "src") == f"{a}+{b}"


def test_training_is_deterministic_and_seeded(addition) -> None:
    make = addition.AdditionTask
    one, two = make(make.Params()), make(make.Params())
    for step in (0, 7):
        a, b = one.train_batch(step, 32, seed=3), two.train_batch(step, 32, seed=3)
        assert a.src.equal(b.src) and a.tgt.equal(b.tgt)
    assert not one.train_batch(1, 32, seed=3).src.equal(one.train_batch(2, 32, seed=3).src)
    assert not one.train_batch(1, 32, seed=3).src.equal(one.train_batch(1, 32, seed=4).src)
    # held-out splits depend on data_seed only, never on the trial seed
    assert one.held_out["valid"] == two.held_out["valid"]
    other = make(make.Params(data_seed=5))
    assert other.held_out["test"] != one.held_out["test"]


def test_held_out_pairs_never_in_training(addition) -> None:
    # 2-digit operands: 10,000 pairs, of which 2,500 held out, so collisions are common
    task = addition.AdditionTask(addition.AdditionParams(max_digits=2, n_valid=1000,
                                                         n_test=1500))
    valid, test = task.held_out["valid"], task.held_out["test"]
    assert (len(valid), len(test)) == (1000, 1500)
    held = set(valid) | set(test)
    assert len(held) == 2500  # distinct, and valid and test do not overlap
    held_sources = {tuple(digits(f"{a}+{b}")) for a, b in held}
    seen = 0
    for step in range(40):
        for src, _ in examples(task.train_batch(step, 64, seed=0)):
            assert tuple(src) not in held_sources
            seen += 1
    assert seen == 40 * 64


def test_length_bounds(addition) -> None:
    task = addition.AdditionTask(addition.AdditionParams(max_digits=3))
    assert task.length_bounds == (1, 4)
    for _, tgt in examples(task.train_batch(0, 64, seed=1, lengths=(1, 2))):
        assert 1 <= len(tgt) <= 2
    for _, tgt in examples(task.train_batch(0, 64, seed=1, lengths=(4, 9))):
        assert len(tgt) == 4


def test_score_reward_and_reference(addition) -> None:
    task = addition.AdditionTask(addition.AdditionParams(max_digits=3, n_valid=64, n_test=64))
    refs = [digits("432"), digits("1998"), digits("7")]
    hyps = [digits("432"), digits("1988"), []]
    # exact: 1 of 3; digits right at their position: 3 + 3 (1988 vs 1998) + 0, of 8
    assert task.score(hyps, refs) == pytest.approx({"exact_match": 1 / 3,
                                                    "digit_accuracy": 6 / 8})
    assert task.reward(hyps, refs) == pytest.approx([1.0, 0.75, 0.0])
    # a hypothesis too long: the metric ignores extra digits, the reward counts them
    assert task.reward([digits("4321")], [digits("432")]) == [0.75]
    assert task.score([digits("4321")], [digits("432")])["digit_accuracy"] == 1.0
    assert task.score([digits("4321")], [digits("432")])["exact_match"] == 0.0
    assert task.detokenize(digits("47+385"), "src") == "47+385"
    assert [task.token_text(t) for t in (EOS, N_SPECIAL, N_SPECIAL + 10)] == ["<eos>", "0", "+"]
    baseline = task.reference_scores("valid")["no_carry"]
    pairs = task.held_out["valid"]
    no_carry = sum(all(int(x) + int(y) < 10 for x, y in zip(str(a).zfill(3), str(b).zfill(3),
                                                            strict=True)) for a, b in pairs)
    assert baseline["exact_match"] == pytest.approx(no_carry / len(pairs))
    assert 0 < baseline["digit_accuracy"] < 1


# ---------------------------------------------------------------------- a broken plugin


def test_plugin_that_fails_to_import_is_named(tmp_path, monkeypatch) -> None:
    dist = tmp_path / "fake_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        '[lstm_harness.tasks]\nbroken = no_such_module:Thing\n')
    monkeypatch.syspath_prepend(str(tmp_path))  # also invalidates the import caches
    with pytest.raises(TaskLookupError) as info:
        load_task_class("broken")
    assert str(info.value) == (
        "task plugin 'broken' (no_such_module:Thing) failed to import: "
        "ModuleNotFoundError: No module named 'no_such_module'")
    with pytest.raises(TaskLookupError, match="unknown task 'brokn'; installed tasks: .*broken"):
        load_task_class("brokn")


# ---------------------------------------------------------------------- installed, end to end

TINY_ADDITION_SUITE = """
name: plugin
description: the example plugin through the whole harness
tasks:
  - {name: addition, params: {max_digits: 2, n_valid: 32, n_test: 32}}
base:
  model: {embed: 8, hidden: 16}
  train: {steps: 20, batch_size: 16, eval_every: 10, log_every: 10}
axes:
  width:
    h16: {}
seeds: [0]
metrics: [exact_match, digit_accuracy, digit_accuracy_tf]
"""


def pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def installed_example(tmp_path_factory):
    """The example installed into this environment (not editable, so Ray's worker processes
    import it from site-packages like any dependency); uninstalled even when the test fails.
    It is built from a copy so that the build leaves nothing in examples/."""
    source = tmp_path_factory.mktemp("plugin") / "plugin-task"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns(
        "build", "*.egg-info", "__pycache__"))
    try:
        done = pip("install", "--no-deps", "--no-build-isolation", str(source))
        assert done.returncode == 0, done.stdout + done.stderr
        importlib.invalidate_caches()
        yield
    finally:
        done = pip("uninstall", "-y", DISTRIBUTION)
        importlib.invalidate_caches()
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
        assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow
def test_installed_plugin_runs_through_the_harness(installed_example, tmp_path, monkeypatch):
    import ray

    from lstm_harness.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    if ray.is_initialized():  # fresh worker processes, started after the install
        ray.shutdown()

    listed = subprocess.run([sys.executable, "-m", "lstm_harness", "tasks"], capture_output=True,
                            text=True, timeout=300)
    lines = listed.stdout.splitlines()
    header = ("addition (seq2seq): metrics exact_match, exact_match_tf, digit_accuracy, "
              "digit_accuracy_tf")
    assert header in lines, listed.stdout + listed.stderr
    block = []  # the parameter lines under the header
    for line in lines[lines.index(header) + 1:]:
        if not line.startswith(" "):
            break
        block.append(line.strip())
    for param in ["max_digits: int = 3", "n_valid: int = 256", "n_test: int = 512",
                  "data_seed: int = 1234"]:
        assert any(line.startswith(param) for line in block), (param, block)
    assert "addition" not in listed.stderr  # no import error of this plugin

    suite = tmp_path / "plugin.yaml"
    suite.write_text(TINY_ADDITION_SUITE)
    try:
        code = main(["run", str(suite), "--no-progress", "--runs-dir", str(tmp_path / "runs"),
                     "--results-dir", str(tmp_path / "results")])
    finally:
        ray.shutdown()
    assert code == 0

    out = tmp_path / "results" / "plugin"
    table = (out / "table.md").read_text()
    assert "| width | addition · exact_match ↑ | addition · digit_accuracy ↑ |" in table
    assert "| h16 |" in table and "| *reference: no_carry* |" in table
    csv = pd.read_csv(out / "table.csv")
    trained = csv[csv["row"] == "h16"].set_index("metric")
    for metric in ["exact_match", "digit_accuracy", "digit_accuracy_tf"]:
        assert 0.0 <= float(trained.loc[metric, "mean"]) <= 1.0 and trained.loc[metric, "n"] == 1
