"""``search: {kind: optuna}``: suite validation, the search space, hyperparameters in tables,
study bookkeeping, and a tiny tune-then-ablate suite run end to end through the CLI."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from lstm_harness import run_schema as rs
from lstm_harness.cli import EXIT_BAD_INPUT, EXIT_OK, main
from lstm_harness.reporting.build import build_table
from lstm_harness.reporting.table import TableLayout
from lstm_harness.search import (
    close_running,
    expected_params,
    search_experiment,
    storage_url,
    study_state,
    tuned_trials,
)
from lstm_harness.search_space import describe, format_value, parse_distribution, short_names
from lstm_harness.suite import load_suite
from lstm_harness.trial_spec import SearchChoice

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")

GOOD: dict[str, Any] = {
    "name": "tune",
    "tasks": [{"name": "copy", "params": {"min_len": 2, "max_len": 4}}],
    "base": {"model": {"embed": 8, "hidden": 16}, "train": {"steps": 12, "eval_every": 3}},
    "axes": {"cell": {"lstm": {}, "ln": {"model.cell": "layernorm"}}},
    "seeds": [0, 1],
    "metrics": ["exact_match"],
    "search": {"kind": "optuna", "trials": 4, "max_concurrent": 2,
               "space": {"train.lr": {"loguniform": [1.0e-3, 1.0e-1]}}},
}


def with_search(**changes: Any) -> dict[str, Any]:
    """GOOD with keys of ``search`` replaced (None removes one)."""
    out = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            out["search"].pop(key, None)
        else:
            out["search"][key] = value
    return out


def bad(tmp_path: Path, capsys, content: dict[str, Any]) -> str:
    """``validate`` of a bad suite: exit 2, one error line naming the file; returns the rest."""
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    code = main(["validate", str(path)])
    err = ANSI.sub("", capsys.readouterr().err).strip()
    assert code == EXIT_BAD_INPUT, err
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {path}: "), err
    return err.removeprefix(f"error: {path}: ")


# ------------------------------------------------------------------ validation


def test_good_search_suite_is_valid(tmp_path, capsys):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    assert main(["validate", str(path)]) == EXIT_OK
    suite = load_suite(path)
    assert suite.search_metric() == "exact_match"  # default: the suite's first metric
    assert list(suite.spec.search.distributions()) == ["train.lr"]


def test_unknown_path_names_the_key_and_allowed_fields(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(space={"train.lrr": {"uniform": [0.1, 0.2]}}))
    assert msg.startswith("search.space.train.lrr: unknown config field 'lrr' in train; "
                          "allowed: steps, batch_size, optimizer, lr,"), msg


def test_unknown_section(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(space={"optim.lr": {"uniform": [0.1, 0.2]}}))
    assert msg == ("search.space.optim.lr: unknown config field 'optim' in the trial config; "
                   "allowed: model, train, monitor")


def test_a_section_is_not_a_setting(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(space={"model.dropout": {"choice": [0.1, 0.2]}}))
    assert msg.startswith("search.space.model.dropout: 'model.dropout' is a section; search "
                          "one of its settings: model.dropout.input,"), msg


def test_unknown_distribution_kind(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(space={"train.lr": {"normal": [0.1, 0.2]}}))
    assert msg.startswith("search.space.train.lr: give exactly one of uniform, loguniform, "
                          "int, choice"), msg
    assert "'normal'" in msg


@pytest.mark.parametrize("dist, expected", [
    ({"loguniform": [1.0e-2, 1.0e-4]}, "loguniform needs low < high (got [0.01, 0.0001])"),
    ({"loguniform": [0, 1.0e-2]}, "loguniform needs 0 < low (got [0, 0.01])"),
    ({"uniform": [0.1]}, "uniform takes [low, high], two numbers (got [0.1])"),
    ({"uniform": [0.0, 0.1]},
     "uniform value 0.0 is refused with variant cell.lstm: train.lr: Input should be greater "
     "than 0 (got 0.0)"),
])
def test_bad_bounds_name_the_key(tmp_path, capsys, dist, expected):
    msg = bad(tmp_path, capsys, with_search(space={"train.lr": dist}))
    assert msg == f"search.space.train.lr: {expected}"


@pytest.mark.parametrize("dist, expected", [
    ({"int": [8, 32.5]}, "int takes [low, high], two integers (got [8, 32.5])"),
    ({"int": [8, 32], "step": 5}, "int: step 5 does not divide high - low = 24"),
    ({"int": [8, 32], "q": 8}, "unknown key 'q' beside 'int'; allowed: step, log"),
    ({"int": [0, 32]}, "int value 0 is refused with variant cell.lstm: model.hidden: Input "
                       "should be greater than or equal to 1 (got 0)"),
    ({"choice": []}, "choice takes a non-empty list of values (got [])"),
    ({"choice": [{"hidden": 8}]}, "choice values must be numbers, strings, booleans or null "
                                  "(got {'hidden': 8}); for structured settings, use an axis "
                                  "instead"),
])
def test_bad_integer_and_choice_distributions(tmp_path, capsys, dist, expected):
    msg = bad(tmp_path, capsys, with_search(space={"model.hidden": dist}))
    assert msg == f"search.space.model.hidden: {expected}"


def test_metric_the_task_does_not_report(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(metric="valid.bleu"))
    assert msg.startswith("search.metric: task 'copy' does not report 'bleu'; it reports: "
                          "exact_match,"), msg


def test_search_on_the_test_split_is_refused(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(metric="test.exact_match"))
    assert msg == ("search.metric: 'test.exact_match': a search tunes on the validation "
                   "split; name 'exact_match' or 'valid.exact_match'")


def test_empty_space(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(space={}))
    assert msg.startswith("search.space: an optuna search needs at least one setting"), msg


def test_grid_takes_no_search_settings(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(kind="grid"))
    assert msg == ("search: max_concurrent, space, trials only with kind: optuna (kind grid, "
                   "the default, runs every combination of the axes' variants)")


def test_unknown_search_key(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(trails=3))
    assert msg.startswith("search.trails: unknown key 'trails'; allowed: kind, metric, trials"), \
        msg


def test_searched_path_set_by_a_variant(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(space={"model.cell": {"choice": ["lstm"]}}))
    assert msg == ("search.space.model.cell: variant axes.cell.ln sets model.cell, which the "
                   "search would override; search it or vary it on an axis, not both")


def test_asha_grace_period_needs_room(tmp_path, capsys):
    msg = bad(tmp_path, capsys, with_search(asha={"grace_period": 4}))
    assert msg == ("search.asha.grace_period: 4, but variant cell.lstm trains with 4 "
                   "validation evaluations (train.steps / train.eval_every); ASHA needs "
                   "grace_period below that")


def test_init_from_cannot_be_searched(tmp_path, capsys):
    suite = with_search()
    suite["axes"]["cell"]["ln"]["train.init_from"] = {"cell": "lstm"}
    msg = bad(tmp_path, capsys, suite)
    assert msg == ("variant cell.ln: train.init_from cannot be combined with search kind "
                   "optuna (each search trains from scratch)")


@pytest.mark.parametrize("path", sorted((ROOT / "ablations").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_ablation_suite_validates(path, capsys):
    assert main(["validate", str(path)]) == EXIT_OK, capsys.readouterr().err


def test_example_suite_searches_per_cell_and_task():
    suite = load_suite(ROOT / "ablations" / "optuna_lr.yaml")
    assert suite.spec.search.kind == "optuna"
    assert suite.search_metric() == "exact_match"
    assert set(suite.spec.search.space) == {"train.lr", "model.hidden", "model.dropout.output"}


def test_validate_counts_the_search_trials(capsys):
    assert main(["validate", str(ROOT / "ablations" / "optuna_lr.yaml")]) == EXIT_OK
    assert ("valid — 12 trials (2 variant combinations x 2 tasks x 3 seeds), after 48 search "
            "trials (4 Optuna studies x 12 trials)") in capsys.readouterr().err


# ------------------------------------------------------------------ space, values, tables


def test_distributions_become_optuna_ones_with_inclusive_bounds():
    assert parse_distribution({"loguniform": [1.0e-4, 1.0e-2]}).to_optuna() == \
        FloatDistribution(1.0e-4, 1.0e-2, log=True)
    assert parse_distribution({"int": [8, 32], "step": 8}).to_optuna() == \
        IntDistribution(8, 32, step=8)
    assert parse_distribution({"int": [1, 64], "log": True}).to_optuna() == \
        IntDistribution(1, 64, log=True)
    assert parse_distribution({"choice": ["lstm", "layernorm"]}).to_optuna().choices == \
        ("lstm", "layernorm")


def test_values_are_described_briefly():
    assert format_value(0.0031234) == "0.00312"
    assert format_value(3.1e-5) == "3.1e-5"
    assert format_value(128) == "128"
    assert short_names(["train.lr", "model.dropout.output"]) == {
        "train.lr": "lr", "model.dropout.output": "dropout.output"}
    assert describe({"model.hidden": 128, "train.lr": 0.0031},
                    ["train.lr", "model.hidden"]) == "lr=0.0031, hidden=128"


def test_table_notes_and_csv_give_each_rows_hyperparameters(tmp_path):
    runs = pd.DataFrame([
        {"run_id": f"r{i}", "trial_key": f"{cell}|{task}|s{seed}", "task": task, "seed": seed,
         "variant.cell": cell, "end_time": pd.Timestamp(0, unit="ms", tz="UTC"),
         "params.train.lr": lr, "params.model.hidden": "64",
         "metrics.test.exact_match": 0.5 + 0.1 * seed}
        for i, (cell, task, seed, lr) in enumerate([
            ("lstm", "copy", 0, "0.0031"), ("lstm", "copy", 1, "0.0031"),
            ("lstm", "reverse", 0, "0.02"), ("lstm", "reverse", 1, "0.02"),
            ("ln", "copy", 0, "0.001"), ("ln", "copy", 1, "0.005"),  # seeds ran different lr
        ])])
    layout = TableLayout(axes={"cell": ["lstm", "ln"]}, tasks=["copy", "reverse"],
                         metrics=["exact_match"], directions={"exact_match": "max"},
                         hyperparameters=["train.lr", "model.hidden"],
                         search_note="Hyperparameters per row:")
    table = build_table(runs, layout)
    assert table.hyperparameter_text("lstm") == (
        "copy: lr=0.0031, hidden=64; reverse: lr=0.02, hidden=64")
    assert table.hyperparameter_text("ln") == "copy: lr=0.001, hidden=64 or lr=0.005, hidden=64"
    markdown = table.to_markdown()
    assert "- Hyperparameters per row:\n  - `lstm`: copy: lr=0.0031, hidden=64; reverse: " \
           "lr=0.02, hidden=64\n  - `ln`: copy: lr=0.001, hidden=64 or lr=0.005, hidden=64" \
           in markdown
    assert "<li>Hyperparameters per row:<ul><li><code>lstm</code>: copy:" in table.to_html()
    frame = table.frame()
    line = frame[(frame["row"] == "lstm") & (frame["task"] == "reverse")].iloc[0]
    assert line["hp.train.lr"] == "0.02" and line["hp.model.hidden"] == "64"
    assert frame[(frame["row"] == "ln") & (frame["task"] == "copy")].iloc[0][
        "hp.train.lr"] == "0.001 | 0.005"


def test_table_without_search_has_no_hyperparameter_note():
    runs = pd.DataFrame([{"run_id": "r", "trial_key": "a|copy|s0", "task": "copy", "seed": 0,
                          "variant.cell": "lstm", "end_time": pd.Timestamp(0, tz="UTC"),
                          "metrics.test.exact_match": 0.5}])
    layout = TableLayout(axes={"cell": ["lstm"]}, tasks=["copy"], metrics=["exact_match"],
                         directions={"exact_match": "max"})
    table = build_table(runs, layout)
    assert "Hyperparameters" not in table.to_markdown()
    assert not any(c.startswith("hp.") for c in table.frame().columns)


# ------------------------------------------------------------------ study bookkeeping


def test_study_state_counts_finished_trials_and_closes_stale_ones(tmp_path):
    url = storage_url(tmp_path, "s")
    (tmp_path / "optuna").mkdir()
    study = optuna.create_study(study_name="a|copy#1", storage=url, direction="maximize")
    dist = {"train.lr": FloatDistribution(1e-4, 1e-1, log=True)}
    for lr, value, state in [(1e-3, 0.4, TrialState.COMPLETE), (1e-2, 0.7, TrialState.COMPLETE),
                             (3e-2, None, TrialState.PRUNED), (5e-2, None, TrialState.FAIL)]:
        study.add_trial(create_trial(params={"train.lr": lr}, distributions=dist, value=value,
                                     state=state))
    study.ask(dist)  # left RUNNING, as by a killed launch
    state = study_state(url, "a|copy#1")
    assert (state.counted, state.best, state.value) == (3, {"train.lr": 1e-2}, 0.7)
    assert close_running(url, "a|copy#1") == 1
    states = [t.state for t in optuna.load_study(study_name="a|copy#1", storage=url).trials]
    assert states.count(TrialState.FAIL) == 2 and TrialState.RUNNING not in states
    assert study_state(url, "missing").counted == 0


def test_tuned_trials_apply_the_best_values(tmp_path):
    path = tmp_path / "suite.yaml"
    path.write_text(yaml.safe_dump(GOOD, sort_keys=False))
    trials = load_suite(path).trials()
    rows = tuned_trials(trials, {"lstm|copy": {"train.lr": 0.02}}, {"lstm|copy": "study"})
    assert [t.key for t in rows] == ["lstm|copy|s0", "lstm|copy|s1"]  # ln: no best yet
    assert all(t.config["train"]["lr"] == 0.02 for t in rows)
    assert rows[0].search == SearchChoice("study", {"train.lr": 0.02})
    assert rows[0].as_dict()["search"] == {"study": "study", "values": {"train.lr": 0.02}}
    assert expected_params(rows[0], ["train.lr"]) == {"train.lr": "0.02"}


# ------------------------------------------------------------------ end to end

TINY = """
name: tiny-search
tasks:
  - {name: copy, params: {vocab: 5, min_len: 2, max_len: 4, n_valid: 32, n_test: 32}}
base:
  model: {embed: 8, hidden: 16}
  train: {steps: 8, batch_size: 16, eval_every: 2, log_every: 4}
axes:
  cell:
    lstm: {}
seeds: [0, 1]
metrics: [token_accuracy, exact_match]
search:
  kind: optuna
  trials: 4
  max_concurrent: 2
  seed: 3
  asha: {grace_period: 1, reduction_factor: 2}
  space:
    train.lr: {loguniform: [1.0e-3, 1.0e-1]}
"""


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    yield
    import ray

    ray.shutdown()


def runs_of(client: MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


@pytest.mark.slow
def test_tune_then_ablate_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    assert main(["run", str(path), "--no-progress"]) == EXIT_OK, capsys.readouterr().err

    # the study, where the docs say: one per (variant combination, task), 4 finished trials
    url = f"sqlite:///{tmp_path / 'runs' / 'optuna' / 'tiny-search.db'}"
    (name,) = optuna.get_all_study_names(url)
    assert name.startswith("lstm|copy#")
    study = optuna.load_study(study_name=name, storage=url)
    assert len(study.trials) == 4
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert study.user_attrs["metric"] == "valid.token_accuracy"
    best_lr = study.best_trial.params["train.lr"]

    # search runs live in their own experiment; the table's trials ran the best lr
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    search_runs = runs_of(client, search_experiment("tiny-search"))
    assert len(search_runs) == 4
    assert all(r.data.tags[rs.TAG_TRIAL_KEY].startswith("lstm|copy|s3|search-")
               for r in search_runs)
    assert {float(r.data.params["train.lr"]) for r in search_runs} == {
        t.params["train.lr"] for t in study.trials}
    trials = [r for r in runs_of(client, "tiny-search")
              if r.data.tags.get(rs.TAG_ROLE) == rs.ROLE_TRIAL]
    assert sorted(r.data.tags[rs.TAG_TRIAL_KEY] for r in trials) == [
        "lstm|copy|s0", "lstm|copy|s1"]
    assert all(r.info.status == "FINISHED" for r in trials)
    assert {r.data.params["train.lr"] for r in trials} == {str(best_lr)}

    # the table says which hyperparameters the row used
    results = tmp_path / "results" / "tiny-search"
    table = (results / "table.md").read_text()
    assert f"  - `lstm`: lr={format_value(best_lr)}\n" in table
    assert "Optuna search of 4 trials on valid.token_accuracy" in table
    csv = pd.read_csv(results / "table.csv")
    assert set(csv["hp.train.lr"]) == {best_lr}
    # and so does the report
    assert main(["report", str(path)]) == EXIT_OK
    assert f"lr={format_value(best_lr)}" in (results / "report.html").read_text()

    # a second launch runs nothing: no new runs, no new study trials
    counts = (len(search_runs), len(runs_of(client, "tiny-search")))
    assert main(["run", str(path), "--no-progress"]) == EXIT_OK
    assert "2/2 trials finished (2 from earlier launches)" in ANSI.sub(
        "", capsys.readouterr().err)
    assert (len(runs_of(client, search_experiment("tiny-search"))),
            len(runs_of(client, "tiny-search"))) == counts
    assert len(optuna.load_study(study_name=name, storage=url).trials) == 4
