"""``train.init_from``: trials that start from another trial's final model run in a later
stage; validation of the names; end to end through Ray and MLflow."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.cli import main
from lstm_harness.suite import SuiteError, load_suite, trial_key

COPY = {"name": "copy", "params": {"vocab": 5, "min_len": 2, "max_len": 4, "n_valid": 16,
                                   "n_test": 16}}


def suite_dict(name: str, axes: dict, steps: int = 6, seeds: list[int] | None = None) -> dict:
    return {
        "name": name,
        "tasks": [COPY],
        "base": {"model": {"embed": 8, "hidden": 16},
                 "train": {"steps": steps, "batch_size": 8, "eval_every": 20, "log_every": 2,
                           "eval_batch_size": 16, "init_from": {"objective": "ce-pretrain"}}},
        "axes": axes,
        "seeds": seeds or [0],
        "metrics": ["exact_match"],
    }


def write(folder: Path, suite: dict) -> Path:
    path = folder / f"{suite['name']}.yaml"
    path.write_text(yaml.safe_dump(suite, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- stages


def test_stages_order_trials_by_their_sources(tmp_path):
    axes = {
        "objective": {
            "ce-pretrain": {"train.init_from": None},
            "rl": {"train.loss": {"kind": "reinforce", "reward": "rouge1", "samples": 2}},
            "more": {"train.init_from": {"objective": "rl", "opt": "adam"}},  # two axes named
        },
        "opt": {"adam": {}, "sgd": {"train.optimizer": "sgd"}},
    }
    suite = load_suite(write(tmp_path, suite_dict("stages", axes, seeds=[0, 1])))
    trials = {t.key: t for t in suite.trials()}
    assert len(trials) == 12
    for key, trial in trials.items():
        v, seed = trial.variants, trial.seed
        expected = {"ce-pretrain": None,
                    "rl": trial_key({"objective": "ce-pretrain", "opt": v["opt"]}, "copy", seed),
                    "more": trial_key({"objective": "rl", "opt": "adam"}, "copy", seed),
                    }[v["objective"]]
        assert trial.init_from == expected, key
        assert expected is None or expected in trials
    assert trials["rl/sgd|copy|s1"].init_from == "ce-pretrain/sgd|copy|s1"
    assert trials["more/sgd|copy|s0"].init_from == "rl/adam|copy|s0"

    stages = suite.stages()
    assert [sorted({t.variants["objective"] for t in s}) for s in stages] == [
        ["ce-pretrain"], ["rl"], ["more"]]
    assert [len(s) for s in stages] == [4, 4, 4]
    assert sorted(t.key for s in stages for t in s) == sorted(trials)
    position = {t.key: i for i, s in enumerate(stages) for t in s}
    for key, trial in trials.items():  # every source runs in an earlier stage
        if trial.init_from:
            assert position[trial.init_from] < position[key]


def test_suite_without_init_from_is_one_stage(tmp_path):
    suite = suite_dict("flat", {"opt": {"adam": {}, "sgd": {"train.optimizer": "sgd"}}})
    del suite["base"]["train"]["init_from"]
    loaded = load_suite(write(tmp_path, suite))
    assert [len(s) for s in loaded.stages()] == [2]
    assert all(t.init_from is None for t in loaded.trials())


BAD = {
    "unknown_axis": ({"ce-pretrain": {"train.init_from": None},
                      "rl": {"train.init_from": {"optimizer": "adam"}}},
                     ["variant objective.rl", "train.init_from", "unknown axis 'optimizer'",
                      "axes: objective"]),
    "unknown_variant": ({"ce-pretrain": {"train.init_from": None},
                         "rl": {"train.init_from": {"objective": "ce"}}},
                        ["variant objective.rl", "train.init_from",
                         "axis 'objective' has no variant 'ce'",
                         "variants: ce-pretrain, rl"]),
    "self": ({"ce-pretrain": {}, "rl": {}},  # ce-pretrain keeps the base's init_from
             ["variant objective.ce-pretrain", "train.init_from names the trial itself"]),
    "cycle": ({"ce-pretrain": {"train.init_from": None},
               "a": {"train.init_from": {"objective": "b"}},
               "b": {"train.init_from": {"objective": "a"}}},
              ["train.init_from: the variants a -> b -> a start from each other (a cycle)"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_init_from_errors(tmp_path, case):
    variants, expected = BAD[case]
    path = write(tmp_path, suite_dict(f"bad-{case}", {"objective": copy.deepcopy(variants)}))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert str(path) in message
    for text in expected:
        assert text in message, (text, message)


def test_cycle_message_names_the_variants_in_order(tmp_path):
    """x starts from a, which is on the cycle a -> b -> c -> a: the message shows the cycle."""
    variants = {"ce-pretrain": {"train.init_from": None},
                "x": {"train.init_from": {"objective": "a"}},
                "a": {"train.init_from": {"objective": "b"}},
                "b": {"train.init_from": {"objective": "c"}},
                "c": {"train.init_from": {"objective": "a"}}}
    path = write(tmp_path, suite_dict("cycle", {"objective": variants}))
    with pytest.raises(SuiteError, match=r"the variants a -> b -> c -> a start from each "
                                         r"other \(a cycle\)"):
        load_suite(path)


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def trial_runs(db: Path, suite: str) -> tuple[MlflowClient, dict[str, object]]:
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(suite)
    runs = client.search_runs([experiment.experiment_id])
    return client, {r.data.tags[rs.TAG_TRIAL_KEY]: r for r in runs
                    if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL}


def final_weights(client: MlflowClient, run, folder: Path) -> dict[str, torch.Tensor]:
    folder.mkdir()
    return torch.load(client.download_artifacts(run.info.run_id, "model.pt", str(folder)),
                      weights_only=True)


@pytest.mark.slow
def test_init_from_end_to_end(tmp_path, monkeypatch, capsys):
    """Through Ray: the reinforce trial runs after ce-pretrain and starts from its final
    model (with lr 1e-12 it ends where it started); when the source fails, so does the
    dependent trial, with a message naming the missing source."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    runs, results = tmp_path / "runs", tmp_path / "results"
    axes = {"objective": {
        "ce-pretrain": {"train.init_from": None, "train.steps": 20},
        "reinforce": {"train.loss": {"kind": "reinforce", "reward": "rouge1", "samples": 2},
                      "train.lr": 1.0e-12},
    }}
    args = ["--no-progress", "--runs-dir", str(runs), "--results-dir", str(results),
            "--max-failures", "0"]
    good = write(tmp_path, suite_dict("initfrom", axes))
    assert main(["run", str(good), *args]) == 0

    client, trials = trial_runs(runs / "mlflow.db", "initfrom")
    assert set(trials) == {"ce-pretrain|copy|s0", "reinforce|copy|s0"}
    assert {r.info.status for r in trials.values()} == {"FINISHED"}
    source, target = trials["ce-pretrain|copy|s0"], trials["reinforce|copy|s0"]
    assert source.info.end_time <= target.info.start_time  # a later stage
    before = final_weights(client, source, tmp_path / "source")
    after = final_weights(client, target, tmp_path / "target")
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.allclose(after[name], value, atol=1e-6), name
    # ... and it did train with the sequence-level loss (tiny updates)
    history = client.get_metric_history(target.info.run_id, "seq.reward")
    assert sorted(p.step for p in history) == [2, 4, 6]

    # the source fails at run time (a perplexity curriculum from a trial that does not exist)
    axes["objective"]["ce-pretrain"]["train.curriculum"] = {"kind": "perplexity",
                                                           "from_trial": "nowhere|copy|s0"}
    bad = write(tmp_path, suite_dict("initfrom-missing", axes))
    capsys.readouterr()
    assert main(["run", str(bad), *args]) == 1
    out = capsys.readouterr().err  # the CLI reports on stderr
    failed = {line.split(": ", 1)[0].split()[-1]: line for line in out.splitlines()
              if line.startswith("FAILED")}
    assert set(failed) == {"ce-pretrain|copy|s0", "reinforce|copy|s0"}, out
    reason = failed["reinforce|copy|s0"]
    assert "no finished trial 'ce-pretrain|copy|s0'" in reason, reason
    assert "init_from" in reason, reason
    _, trials = trial_runs(runs / "mlflow.db", "initfrom-missing")
    assert not [r for r in trials.values() if r.info.status == "FINISHED"]
