"""`lstm-harness validate` on bad and good suite files, and suite expansion into trials.

Every bad suite must exit 2 with one message on stderr that names the file, the field path and
what is allowed; nothing may be launched (no ``runs/`` directory appears in the cwd).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lstm_harness.cli import EXIT_BAD_INPUT, EXIT_OK, main
from lstm_harness.config import ModelConfig, TrainConfig
from lstm_harness.suite import SuiteError, load_suite
from lstm_harness.trial_spec import TrialTask

QUICK = Path(__file__).resolve().parents[1] / "ablations" / "quick.yaml"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

GOOD: dict[str, Any] = {
    "name": "probe",
    "tasks": [{"name": "copy", "params": {"min_len": 2, "max_len": 4}}],
    "base": {"model": {"embed": 16}, "train": {"steps": 10}},
    "axes": {"width": {"narrow": {}, "wide": {"model.hidden": 256}}},
    "seeds": [0, 1],
    "metrics": ["exact_match"],
}


@pytest.fixture(autouse=True)
def in_tmp_cwd(tmp_path, monkeypatch):
    """Run in an empty cwd and check afterwards that validation launched nothing."""
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / "runs").exists(), "validate must not create runs/"


def suite(**changes: Any) -> dict[str, Any]:
    """A copy of GOOD with top-level keys replaced (a value of None removes the key)."""
    out = copy.deepcopy(GOOD)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def write(tmp_path: Path, content: dict[str, Any] | list | str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    # sort_keys=False: axis order matters (it orders trial keys and the default table rows)
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    path.write_text(text)
    return path


def validate(path: Path, capsys) -> tuple[int, str]:
    """Exit code and stderr of ``lstm-harness validate path``; stdout must stay empty."""
    code = main(["validate", str(path)])
    captured = capsys.readouterr()
    assert captured.out == ""
    return code, ANSI.sub("", captured.err)


def bad(tmp_path: Path, capsys, content: dict[str, Any] | list | str) -> str:
    """Validate a bad suite: exit 2 and exactly one error line that starts with the file."""
    path = write(tmp_path, content)
    code, err = validate(path, capsys)
    assert code == EXIT_BAD_INPUT, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err  # one message, not wrapped by rich
    assert lines[0].startswith(f"error: {path}: "), err
    return lines[0].removeprefix(f"error: {path}: ")


# ------------------------------------------------------------------ file-level problems


def test_missing_file(tmp_path, capsys):
    path = tmp_path / "nope.yaml"
    code, err = validate(path, capsys)
    assert code == EXIT_BAD_INPUT
    assert err.strip() == f"error: {path}: suite file not found"


def test_invalid_yaml_reports_line(tmp_path, capsys):
    msg = bad(tmp_path, capsys, "name: x\ntasks: [\n  foo: : bar\n")
    assert msg.startswith("line 3, column "), msg
    assert "invalid YAML" in msg


def test_duplicate_variant_name_is_refused(tmp_path, capsys):
    text = ("name: d\ntasks: [{name: copy}]\naxes:\n  w:\n    a: {}\n"
            "    a: {model.hidden: 3}\nmetrics: [exact_match]\n")
    msg = bad(tmp_path, capsys, text)
    assert msg == "line 6, column 5: invalid YAML: duplicate key 'a'", msg


def test_top_level_list(tmp_path, capsys):
    msg = bad(tmp_path, capsys, ["name", "tasks"])
    assert msg.startswith("(top level): a suite is a mapping with keys: "), msg
    assert {"name", "tasks", "axes", "seeds", "metrics", "base"} <= set(
        msg.split("keys: ")[1].split(", "))


def test_empty_file_is_not_a_mapping(tmp_path, capsys):
    assert bad(tmp_path, capsys, "").startswith("(top level): a suite is a mapping")


def test_path_with_brackets_is_printed_verbatim(tmp_path, capsys):
    """rich must not read '[...]' in a path or a user key as markup."""
    path = write(tmp_path, suite(base={"model": {"[bold]x": 1}}), name="d[red]/s.yaml")
    code, err = validate(path, capsys)
    assert code == EXIT_BAD_INPUT
    assert err.startswith(f"error: {path}: base.model"), err
    assert "unknown key '[bold]x'" in err


# ------------------------------------------------------------------ top-level schema


def test_unknown_top_level_key(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(axis={"a": {"x": {}}}))
    assert msg.startswith("axis: unknown key 'axis'; allowed: "), msg
    allowed = msg.split("allowed: ")[1].split(", ")
    assert "tasks" in allowed and "axes" in allowed and "metrics" in allowed


def test_missing_metrics_default_to_every_task_metric(tmp_path, capsys):
    path = write(tmp_path, suite(metrics=None))
    code, err = validate(path, capsys)
    assert code == EXIT_OK, err
    # free-running first, then the teacher-forced variants
    assert load_suite(path).spec.metrics == ["exact_match", "token_accuracy",
                                             "exact_match_tf", "token_accuracy_tf"]


def test_default_metrics_of_several_tasks_in_task_order(tmp_path):
    from lstm_harness.registry import load_task_class

    tasks = [{"name": "copy", "params": {"min_len": 2, "max_len": 4}},
             {"name": "timeseries", "label": "ts"}]
    path = write(tmp_path, suite(metrics=None, tasks=tasks))
    copy_cls, series_cls = load_task_class("copy"), load_task_class("timeseries")
    plain = [*copy_cls.metrics, *series_cls.metrics]
    variants = [m for cls in (copy_cls, series_cls) for m in cls.metric_names()
                if m not in cls.metrics]
    assert load_suite(path).spec.metrics == plain + variants
    assert load_suite(path).search_metric() == "exact_match"


def test_two_wrong_fields_are_both_reported(tmp_path, capsys):
    """Every problem in one pass: a top-level field and the base config, each one line."""
    path = write(tmp_path, suite(seeds="abc", base={"train": {"steps": "many"}}))
    code, err = validate(path, capsys)
    assert code == EXIT_BAD_INPUT, err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"error: {path}: seeds: ") and "'abc'" in lines[0], err
    assert lines[1].startswith(f"error: {path}: base.train.steps: "), err
    assert "'many'" in lines[1], err


def test_missing_metrics_do_not_hide_other_problems(tmp_path, capsys):
    content = suite(metrics=None, tasks=[{"name": "nosuchtask"}],
                    table={"rows": ["nosuchaxis"]})
    path = write(tmp_path, content)
    code, err = validate(path, capsys)
    assert code == EXIT_BAD_INPUT, err
    lines = err.strip().splitlines()
    assert len(lines) == 2, err
    assert lines[0].startswith(f"error: {path}: tasks[0].name: "), err
    assert lines[1] == (f"error: {path}: table.rows: unknown axis 'nosuchaxis'; axes: width"), err


def test_seeds_wrong_type(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(seeds="abc"))
    assert msg.startswith("seeds: "), msg
    assert "list" in msg and "'abc'" in msg


def test_train_steps_wrong_type(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(base={"train": {"steps": "many"}}))
    assert msg.startswith("base.train.steps: "), msg
    assert "integer" in msg and "'many'" in msg


def test_unknown_key_in_base(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(base={"model": {"hiddn": 64}}))
    assert msg.startswith("base.model.hiddn: unknown key 'hiddn'; allowed: "), msg
    assert set(msg.split("allowed: ")[1].split(", ")) == set(ModelConfig.model_fields)


# ------------------------------------------------------------------ allowed values and ranges


def test_optimizer_not_allowed(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(base={"train": {"optimizer": "rmsprop"}}))
    assert msg.startswith("base.train.optimizer: "), msg
    assert "'adam'" in msg and "'sgd'" in msg and "'rmsprop'" in msg


def test_axis_override_literal_not_allowed(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(axes={"arch": {"gru": {"model.cell": "foo"}}}))
    assert msg.startswith("axes.arch.gru: model.cell: "), msg
    assert "'lstm'" in msg and "'foo'" in msg


def test_axis_override_unknown_path(tmp_path, capsys):
    msg = bad(tmp_path, capsys,
              suite(axes={"width": {"narrow": {}, "wide": {"model.hiden": 3}}}))
    assert msg.startswith("axes.width.wide: model.hiden: unknown key 'hiden'; allowed: "), msg
    assert set(msg.split("allowed: ")[1].split(", ")) == set(ModelConfig.model_fields)


def test_axis_override_unknown_section(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(axes={"opt": {"a": {"optim.lr": 0.1}}}))
    assert msg == "axes.opt.a: optim: unknown key 'optim'; allowed: model, train, monitor"


def test_negative_lr(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(base={"train": {"lr": -1}}))
    assert msg.startswith("base.train.lr: "), msg
    assert "greater than 0" in msg and "(got -1)" in msg


def test_zero_hidden_in_variant(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(axes={"width": {"ok": {}, "zero": {"model.hidden": 0}}}))
    assert msg.startswith("axes.width.zero: model.hidden: "), msg
    assert "greater than or equal to 1" in msg and "(got 0)" in msg


def test_zero_hidden_in_base(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(base={"model": {"hidden": 0}}))
    assert msg.startswith("base.model.hidden: "), msg
    assert "greater than or equal to 1" in msg


# ------------------------------------------------------------------ tasks and metrics


def test_unknown_task(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(tasks=[{"name": "cpy"}]))
    assert msg.startswith("tasks[0].name: unknown task 'cpy'; installed tasks: "), msg
    assert "copy" in msg.split("installed tasks: ")[1].split(", ")


def test_task_min_len_above_max_len(tmp_path, capsys):
    msg = bad(tmp_path, capsys,
              suite(tasks=[{"name": "copy", "params": {"min_len": 9, "max_len": 3}}]))
    assert msg.startswith("tasks[0].params: "), msg
    assert "min_len (9) must be <= max_len (3)" in msg


def test_task_unknown_param(tmp_path, capsys):
    msg = bad(tmp_path, capsys,
              suite(tasks=[{"name": "copy"}, {"name": "copy", "label": "r",
                                               "params": {"lenght": 3}}]))
    assert msg.startswith("tasks[1].params.lenght: unknown key 'lenght'; allowed: "), msg
    allowed = msg.split("allowed: ")[1].split(", ")
    assert "min_len" in allowed and "max_len" in allowed and "variant" in allowed


def test_task_param_not_allowed(tmp_path, capsys):
    msg = bad(tmp_path, capsys,
              suite(tasks=[{"name": "copy", "params": {"variant": "sort"}}]))
    assert msg.startswith("tasks[0].params.variant: "), msg
    assert all(f"'{v}'" in msg for v in ("copy", "reverse", "memory"))


def test_duplicate_task_label(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(tasks=[{"name": "copy"}, {"name": "copy"}]))
    assert msg.startswith("tasks[1].label: task label 'copy' is used twice"), msg


def test_unknown_metric(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(metrics=["exact_match", "bleu"]))
    assert msg.startswith("metrics[1]: unknown metric 'bleu'; the suite's tasks report: "), msg
    reported = msg.split("report: ")[1].split(" (and ")[0].split(", ")
    assert {"exact_match", "exact_match_tf", "token_accuracy", "token_accuracy_tf"} == set(
        reported)
    assert msg.endswith("(and <metric>_len<lo>-<hi> per source length with "
                        "train.length_buckets)"), msg


# ------------------------------------------------------------------ table, seeds, axes


def test_table_rows_unknown_axis(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(table={"rows": ["depth"]}))
    assert msg == "table.rows: unknown axis 'depth'; axes: width"


def test_table_baseline_unknown_variant(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(table={"baseline": "medium"}))
    assert msg == "table.baseline: unknown variant 'medium' of axis 'width'; " \
                  "variants: narrow, wide"


def test_table_columns_also_in_rows(tmp_path, capsys):
    axes = {"width": {"narrow": {}}, "depth": {"d1": {}, "d2": {"model.layers": 2}}}
    msg = bad(tmp_path, capsys, suite(axes=axes, table={"rows": ["width"], "columns": "width"}))
    assert msg == "table.columns: axis 'width' is also in table.rows"


def test_duplicate_seeds(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(seeds=[0, 1, 0]))
    assert msg.startswith("seeds: duplicate seeds"), msg
    assert "[0, 1, 0]" in msg


def test_empty_axis(tmp_path, capsys):
    msg = bad(tmp_path, capsys, suite(axes={"a": {}}))
    assert msg == "axes.a: an axis needs at least one variant"


# ------------------------------------------------------------------ good suites


def test_quick_suite_is_valid(capsys):
    code, err = validate(QUICK, capsys)
    assert code == EXIT_OK, err
    assert err.strip() == (f"{QUICK}: valid — 12 trials "
                           "(2 variant combinations x 2 tasks x 3 seeds)")


def test_good_suite_is_valid(tmp_path, capsys):
    code, err = validate(write(tmp_path, suite()), capsys)
    assert code == EXIT_OK, err
    assert "valid — 4 trials (2 variant combinations x 1 tasks x 2 seeds)" in err
    assert "error" not in err


# ------------------------------------------------------------------ expansion into trials


def test_trial_count_is_product():
    axes = {"width": {"h64": {}, "h128": {"model.hidden": 128}, "h256": {"model.hidden": 256}},
            "opt": {"adam": {}, "sgd": {"train.optimizer": "sgd", "train.momentum": 0.9}}}
    tasks = [{"name": "copy"}, {"name": "copy", "label": "rev",
                                "params": {"variant": "reverse"}}]
    s = load_suite(write(Path.cwd(), suite(axes=axes, tasks=tasks, seeds=[0, 1, 2])))
    trials = s.trials()
    assert len(trials) == 3 * 2 * 2 * 3
    keys = [t.key for t in trials]
    assert len(set(keys)) == len(keys)
    assert "h128/sgd|rev|s2" in keys
    sgd = next(t for t in trials if t.key == "h256/sgd|copy|s0")
    assert sgd.variants == {"width": "h256", "opt": "sgd"}
    assert sgd.config["model"]["hidden"] == 256
    assert sgd.config["train"]["optimizer"] == "sgd"
    assert sgd.config["train"]["momentum"] == 0.9


def test_quick_suite_keys_and_overrides():
    trials = {t.key: t for t in load_suite(QUICK).trials()}
    assert len(trials) == 12
    assert "h128|reverse|s2" in trials and "h64|copy|s0" in trials
    wide, narrow = trials["h128|reverse|s2"], trials["h64|reverse|s2"]
    assert wide.config["model"]["hidden"] == 128
    assert narrow.config["model"]["hidden"] == 64  # the base value
    # a dotted override changes only its leaf: sibling base settings survive
    assert wide.config["model"]["embed"] == narrow.config["model"]["embed"] == 32
    assert wide.config["train"] == narrow.config["train"]
    assert wide.task == TrialTask("copy", "reverse", {"variant": "reverse", "vocab": 10,
                                                       "min_len": 3, "max_len": 10})
    assert wide.seed == 2 and wide.suite == "quick"


def test_override_lands_only_in_its_variant():
    s = load_suite(write(Path.cwd(), suite()))
    by_variant = {t.variants["width"]: t.config for t in s.trials()}
    assert by_variant["wide"]["model"]["hidden"] == 256
    assert by_variant["narrow"]["model"]["hidden"] == ModelConfig().hidden  # schema default
    assert by_variant["wide"]["model"]["embed"] == by_variant["narrow"]["model"]["embed"] == 16
    assert by_variant["narrow"]["train"]["steps"] == 10
    assert by_variant["narrow"]["train"]["lr"] == TrainConfig().lr


def test_no_axes_gives_baseline_keys():
    s = load_suite(write(Path.cwd(), suite(axes=None)))
    assert [t.key for t in s.trials()] == ["baseline|copy|s0", "baseline|copy|s1"]


def test_fingerprint_stable_and_sensitive():
    path = write(Path.cwd(), suite())
    first = load_suite(path).fingerprint()
    assert load_suite(path).fingerprint() == first
    assert load_suite(write(Path.cwd(), suite(), name="copy.yaml")).fingerprint() == first
    more_seeds = load_suite(write(Path.cwd(), suite(seeds=[0, 1, 2]), name="s3.yaml"))
    assert more_seeds.fingerprint() != first
    wider = suite(axes={"width": {"narrow": {}, "wide": {"model.hidden": 512}}})
    assert load_suite(write(Path.cwd(), wider, name="w.yaml")).fingerprint() != first


def test_load_suite_raises_suite_error(tmp_path):
    path = write(tmp_path, suite(seeds=[3, 3]))
    with pytest.raises(SuiteError, match=re.escape(f"{path}: seeds: duplicate seeds")):
        load_suite(path)


# No test of a clash that exists only across two axes: every TrialConfig field is validated
# on its own (no cross-field validators), and each variant is already checked against the base,
# so with the current schema no combination of individually valid overrides can be invalid.


def test_every_problem_line_carries_the_error_prefix(tmp_path, capsys):
    path = write(tmp_path, {"name": "x", "tasks": [{"name": "copy",
                                                    "params": {"vocab": -1, "max_len": 0}}],
                            "seeds": [0], "metrics": ["exact_match"]})
    code, err = validate(path, capsys)
    assert code == EXIT_BAD_INPUT
    assert err.strip().splitlines() == [
        f"error: {path}: tasks[0].params.vocab: Input should be greater than or equal to 2 "
        "(got -1)",
        f"error: {path}: tasks[0].params.max_len: Input should be greater than or equal to 1 "
        "(got 0)"]
