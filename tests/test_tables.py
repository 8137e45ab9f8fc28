"""Tests of lstm_harness.reporting (tables) against a real (temporary SQLite) MLflow store."""

from __future__ import annotations

import math
import pathlib
import time

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from scipy import stats

from lstm_harness import run_schema as rs
from lstm_harness.reporting.build import build_table
from lstm_harness.reporting.results import write_table
from lstm_harness.reporting.runs import load_trial_runs
from lstm_harness.reporting.statistics import welch_p_value
from lstm_harness.reporting.table import TableLayout

SUITE = "ablate-cells"
AXES = {"cell": ["lstm", "gru"], "norm": ["none", "layer"]}
TASKS = ["copy", "add"]
METRICS = ["exact_match", "exact_match_tf", "perplexity", "bleu"]
DIRECTIONS = {"exact_match": "max", "exact_match_tf": "max", "perplexity": "min", "bleu": "max"}

# (cell, norm) -> per-seed final test values on "copy" (seeds 0, 1, 2)
COPY_EM = {
    ("lstm", "none"): [0.90, 0.92, 0.91],  # baseline
    ("lstm", "layer"): [0.92, 0.90, 0.91],  # same sample as the baseline: no dagger
    ("gru", "none"): [0.60, 0.61, 0.62],  # clearly worse: dagger
    ("gru", "layer"): [0.97, 0.98, 0.99],  # clearly better: dagger and bold
}
COPY_PPL = {
    ("lstm", "none"): [1.5, 1.6, 1.7],
    ("lstm", "layer"): [1.6, 1.5, 1.7],
    ("gru", "none"): [3.0, 3.1, 3.2],
    ("gru", "layer"): [1.2, 1.25, 1.3],  # best of a "min" metric
}
# "add" only has two seeds and two rows
ADD_EM = {("lstm", "none"): [0.5, 0.7], ("gru", "layer"): [0.8, 0.9]}
ADD_PPL = {("lstm", "none"): [2.0, 2.2], ("gru", "layer"): [1.8, 1.9]}
PARAMS = {"lstm": 1_234_567, "gru": 987_654}


def trial_key(cell: str, norm: str, task: str, seed: int) -> str:
    return f"{task}|cell={cell}|norm={norm}|seed={seed}"


def log_trial(
    client: MlflowClient,
    experiment_id: str,
    *,
    cell: str,
    norm: str,
    task: str,
    seed: int,
    metrics: dict[str, float],
    status: str = "FINISHED",
    end_time: int,
    failure: str | None = None,
    suite: str = SUITE,
) -> str:
    """Create one trial run the way the harness writes it; return its run id."""
    tags = {
        rs.TAG_ROLE: rs.ROLE_TRIAL,
        rs.TAG_SUITE: suite,
        rs.TAG_TRIAL_KEY: trial_key(cell, norm, task, seed),
        rs.TAG_TASK: task,
        rs.TAG_SEED: str(seed),
        rs.TAG_VARIANT_PREFIX + "cell": cell,
        rs.TAG_VARIANT_PREFIX + "norm": norm,
    }
    if failure is not None:
        tags[rs.TAG_FAILURE] = failure
    run = client.create_run(experiment_id, tags=tags)
    run_id = run.info.run_id
    for step in range(3):
        client.log_metric(run_id, rs.TRAIN_LOSS, 3.0 - step, step=step)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value, step=0)
    client.set_terminated(run_id, status=status, end_time=end_time)
    return run_id


def costs(cell: str, seed: int, wall: float | None = None) -> dict[str, float]:
    return {
        rs.COST_PARAMS: PARAMS[cell],
        rs.COST_WALL: 100.0 + 10 * seed if wall is None else wall,
        rs.COST_TOKENS_PER_S: 5000.0,
        rs.COST_PEAK_MEM: 512.4,
    }


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A SQLite MLflow store with the suite above, including resumed and failed trials."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root.resolve()}/mlflow.db"
    assert uri.startswith("sqlite:////")
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(SUITE, artifact_location=(root / "artifacts").as_uri())
    t0 = int(time.time() * 1000)
    ids: dict[str, str] = {}

    launch = client.create_run(exp, tags={rs.TAG_ROLE: rs.ROLE_LAUNCH, rs.TAG_SUITE: SUITE})
    client.set_terminated(launch.info.run_id, status="FINISHED", end_time=t0)
    # a trial of another suite logged into this experiment must be ignored
    log_trial(
        client, exp, cell="lstm", norm="none", task="copy", seed=0, suite="other",
        metrics={"test.exact_match": 0.0}, end_time=t0 + 9000,
    )  # fmt: skip

    for (cell, norm), em in COPY_EM.items():
        for seed, value in enumerate(em):
            metrics = {
                "test.exact_match": value,
                "test.exact_match_tf": min(1.0, value + 0.05),
                "test.perplexity": COPY_PPL[(cell, norm)][seed],
                **{k: v for k, v in costs(cell, seed).items()},
            }
            key = trial_key(cell, norm, "copy", seed)
            if (cell, norm, seed) == ("lstm", "none", 0):
                # resumed trial with two FINISHED runs: only the newer one counts
                ids["stale"] = log_trial(
                    client, exp, cell=cell, norm=norm, task="copy", seed=seed,
                    metrics={**metrics, "test.exact_match": 0.10, rs.COST_WALL: 999.0},
                    end_time=t0 + 1000,
                )  # fmt: skip
            if (cell, norm, seed) == ("lstm", "none", 1):
                # crashed then resumed: FAILED run first, FINISHED one later
                ids["crashed"] = log_trial(
                    client, exp, cell=cell, norm=norm, task="copy", seed=seed,
                    metrics={"test.exact_match": 0.0}, status="FAILED",
                    end_time=t0 + 1000, failure="node lost",
                )  # fmt: skip
            ids[key] = log_trial(
                client, exp, cell=cell, norm=norm, task="copy", seed=seed,
                metrics=metrics, end_time=t0 + 2000,
            )  # fmt: skip

    for (cell, norm), em in ADD_EM.items():
        for seed, value in enumerate(em):
            metrics = {
                "test.exact_match": value,
                "test.perplexity": ADD_PPL[(cell, norm)][seed],
                **costs(cell, seed),
            }
            ids[trial_key(cell, norm, "add", seed)] = log_trial(
                client, exp, cell=cell, norm=norm, task="add", seed=seed,
                metrics=metrics, end_time=t0 + 2000,
            )  # fmt: skip

    # a trial that only ever failed (twice; the latest reason is kept)
    for offset, reason in ((1000, "CUDA out of memory"), (3000, "NaN loss at step 40")):
        log_trial(
            client, exp, cell="gru", norm="none", task="copy", seed=3,
            metrics={}, status="FAILED", end_time=t0 + offset, failure=reason,
        )  # fmt: skip
    return {"uri": uri, "ids": ids}


@pytest.fixture(scope="module")
def loaded(store: dict[str, object]) -> tuple[pd.DataFrame, pd.DataFrame]:
    return load_trial_runs(str(store["uri"]), SUITE)


def layout(**overrides: object) -> TableLayout:
    kwargs: dict[str, object] = {
        "axes": AXES,
        "tasks": TASKS,
        "metrics": METRICS,
        "directions": DIRECTIONS,
    }
    kwargs.update(overrides)
    return TableLayout(**kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------- loading


def test_load_keeps_latest_finished_run_per_trial_key(store, loaded) -> None:
    finished, failed = loaded
    ids = store["ids"]
    assert finished["trial_key"].is_unique
    assert len(finished) == 4 * 3 + 2 * 2
    stale_key = trial_key("lstm", "none", "copy", 0)
    row = finished.set_index("trial_key").loc[stale_key]
    assert row["run_id"] == ids[stale_key] != ids["stale"]
    assert row["metrics.test.exact_match"] == pytest.approx(0.90)
    assert ids["stale"] not in set(finished["run_id"])
    # FAILED then FINISHED: counted once as finished, not listed as failed
    resumed = trial_key("lstm", "none", "copy", 1)
    assert (finished["trial_key"] == resumed).sum() == 1
    assert resumed not in set(failed["trial_key"])
    # the last logged value of a stepped metric
    assert set(finished["metrics.train.loss"]) == {1.0}


def test_load_columns_and_types(loaded) -> None:
    finished, _ = loaded
    for col in ["run_id", "trial_key", "task", "seed", "variant.cell", "variant.norm"]:
        assert col in finished.columns
    assert "end_time" in finished.columns
    assert finished["seed"].dtype.kind == "i"
    assert set(finished["task"]) == {"copy", "add"}
    assert {"metrics.test.exact_match", "metrics.cost.params"} <= set(finished.columns)
    assert "metrics.test.bleu" not in finished.columns


def test_load_failed_only_trials_with_reason(loaded) -> None:
    _, failed = loaded
    assert list(failed["trial_key"]) == [trial_key("gru", "none", "copy", 3)]
    assert failed.iloc[0]["failure"] == "NaN loss at step 40"
    assert failed.iloc[0]["variant.cell"] == "gru"
    assert failed.iloc[0]["seed"] == 3


def test_missing_experiment_gives_empty_frames(store) -> None:
    finished, failed = load_trial_runs(str(store["uri"]), "no-such-suite")
    assert finished.empty and failed.empty
    assert {"run_id", "trial_key", "task", "seed"} <= set(finished.columns)
    assert "failure" in failed.columns
    table = build_table(finished, layout(), failed)
    assert table.columns == []
    assert table.rows == ["lstm / none", "lstm / layer", "gru / none", "gru / layer"]
    assert list(table.frame().columns[:4]) == ["row", "task", "metric", "column_variant"]


# ---------------------------------------------------------------------------------- cells


def test_rows_are_the_product_of_two_axes(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    assert table.rows == ["lstm / none", "lstm / layer", "gru / none", "gru / layer"]
    assert table.layout.row_header == "cell / norm"
    assert table.baseline == "lstm / none"


def test_cell_mean_std_n(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    cell = table.cell("lstm / none", "copy", "exact_match")
    assert cell.n == 3
    assert cell.mean == pytest.approx((0.90 + 0.92 + 0.91) / 3)
    assert cell.std == pytest.approx(0.01)  # sqrt((0.01^2 + 0.01^2 + 0) / 2)
    add = table.cell("lstm / none", "add", "exact_match")
    assert add.n == 2
    assert add.mean == pytest.approx(0.6)
    assert add.std == pytest.approx(math.sqrt(((0.5 - 0.6) ** 2 + (0.7 - 0.6) ** 2) / 1))
    empty = table.cell("lstm / layer", "add", "exact_match")
    assert empty.n == 0 and math.isnan(empty.mean)


def test_unreported_metric_pairs_are_dropped(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    pairs = {(task, metric) for task, metric, _ in table.columns}
    assert pairs == {
        ("copy", "exact_match"),
        ("copy", "exact_match_tf"),
        ("copy", "perplexity"),
        ("add", "exact_match"),
        ("add", "perplexity"),
    }
    assert [c[:2] for c in table.columns][:3] == [
        ("copy", "exact_match"),
        ("copy", "exact_match_tf"),
        ("copy", "perplexity"),
    ]
    assert "bleu" not in table.to_markdown()


def test_best_is_bold_for_max_and_min_metrics(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    em = [table.cell(r, "copy", "exact_match").best for r in table.rows]
    assert em == [False, False, False, True]
    ppl = [table.cell(r, "copy", "perplexity").best for r in table.rows]
    assert ppl == [False, False, False, True]
    add_ppl = [table.cell(r, "add", "perplexity").best for r in table.rows]
    assert add_ppl == [False, False, False, True]


def test_ties_are_all_bold_and_single_rows_are_not() -> None:
    runs = pd.DataFrame(
        {
            "run_id": list("abcdef"),
            "trial_key": list("abcdef"),
            "task": ["t"] * 6,
            "seed": [0, 1, 0, 1, 0, 1],
            "variant.x": ["a", "a", "b", "b", "c", "c"],
            "metrics.test.acc": [0.5, 0.7, 0.7, 0.5, 0.1, 0.2],
            "metrics.test.loss": [1.0, 1.0, np.nan, np.nan, np.nan, np.nan],
        }
    )
    lay = TableLayout(
        axes={"x": ["a", "b", "c"]},
        tasks=["t"],
        metrics=["acc", "loss"],
        directions={"acc": "max", "loss": "min"},
    )
    table = build_table(runs, lay)
    assert [table.cell(r, "t", "acc").best for r in table.rows] == [True, True, False]
    # only one non-empty row: nothing is bold
    assert not any(table.cell(r, "t", "loss").best for r in table.rows)
    md = table.to_markdown()
    assert "| a (baseline) | **0.600 ± 0.141** | 1.000 ± 0.000 |" in md
    assert "| b | **0.600 ± 0.141** | — |" in md


def test_dagger_marks_clear_differences_only(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    sig = {r: table.cell(r, "copy", "exact_match").significant for r in table.rows}
    assert sig == {
        "lstm / none": False,  # the baseline is never marked
        "lstm / layer": False,  # same distribution
        "gru / none": True,
        "gru / layer": True,
    }
    same = table.cell("lstm / layer", "copy", "exact_match")
    assert same.p_value == pytest.approx(1.0)
    assert math.isnan(table.cell("lstm / none", "copy", "exact_match").p_value)


def test_p_value_equals_scipy_welch(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    cell = table.cell("gru / layer", "add", "exact_match")
    expected = stats.ttest_ind(
        ADD_EM[("gru", "layer")], ADD_EM[("lstm", "none")], equal_var=False
    ).pvalue
    assert cell.p_value == pytest.approx(expected, rel=1e-12)
    assert cell.significant == (expected < 0.05)
    gru = table.cell("gru / none", "copy", "perplexity")
    expected = stats.ttest_ind(
        COPY_PPL[("gru", "none")], COPY_PPL[("lstm", "none")], equal_var=False
    ).pvalue
    assert gru.p_value == pytest.approx(expected, rel=1e-12)


def test_welch_edge_cases() -> None:
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert math.isnan(welch_p_value([1.0], [1.0, 2.0]))
    a, b = [0.1, 0.2, 0.4], [0.5, 0.6, 0.55]
    assert welch_p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)


def test_baseline_override_and_alpha(loaded) -> None:
    table = build_table(loaded[0], layout(baseline={"cell": "gru", "norm": "layer"}), loaded[1])
    assert table.baseline == "gru / layer"
    assert not table.cell("gru / layer", "copy", "exact_match").significant
    assert table.cell("lstm / none", "copy", "exact_match").significant
    strict = build_table(loaded[0], layout(alpha=1e-12), loaded[1])
    assert not strict.cell("gru / layer", "add", "exact_match").significant


def test_column_axis_moves_variants_into_columns(loaded) -> None:
    table = build_table(loaded[0], layout(columns="norm"), loaded[1])
    assert table.rows == ["lstm", "gru"]
    assert table.baseline == "lstm"
    assert table.columns[:2] == [("copy", "exact_match", "none"), ("copy", "exact_match", "layer")]
    cell = table.cell("gru", "copy", "exact_match", "layer")
    assert cell.mean == pytest.approx(0.98) and cell.n == 3
    assert table.cell("gru", "copy", "exact_match", "none").failed == 1
    assert table.cell("gru", "copy", "exact_match", "layer").failed == 0
    assert "copy · exact_match ↑ · layer" in table.to_markdown()


def test_no_axes_gives_a_single_baseline_row() -> None:
    runs = pd.DataFrame(
        {"task": ["t", "t", "t"], "seed": [0, 1, 2], "metrics.test.acc": [0.1, 0.2, 0.3]}
    )
    lay = TableLayout(axes={}, tasks=["t"], metrics=["acc"], directions={"acc": "max"})
    table = build_table(runs, lay)
    assert table.rows == ["baseline"]
    cell = table.cell("baseline", "t", "acc")
    assert cell.mean == pytest.approx(0.2) and cell.n == 3 and not cell.best
    assert "| baseline | 0.200 ± 0.100 |" in table.to_markdown()


def test_a_task_whose_every_trial_failed_keeps_its_columns_with_the_failures_marked() -> None:
    """No finished run reports the task's metrics; the task's own metric list keeps its
    columns, so the failures show as marked cells, not only as a footnote."""
    runs = pd.DataFrame({"task": ["a"], "seed": [0], "variant.x": ["v"], "metrics.test.acc": [0.5]})
    failed = pd.DataFrame({"trial_key": ["v|b|s0"], "task": ["b"], "seed": [0],
                           "variant.x": ["v"], "failure": ["corrupt checkpoint /c/trial.pt"]})
    lay = TableLayout(axes={"x": ["v"]}, tasks=["a", "b"], metrics=["acc", "bleu"],
                      directions={"acc": "max", "bleu": "max"},
                      task_metrics={"a": ["acc"], "b": ["bleu"]})
    table = build_table(runs, lay, failed)
    assert table.cell("v", "b", "bleu").failed == 1 and table.cell("v", "b", "bleu").n == 0
    md = table.to_markdown()
    assert "| x | a · acc ↑ | b · bleu ↑ |" in md
    assert "| v | 0.500 | — (1 failed) |" in md
    # without the task's metric list (or without failures) such a column is still dropped
    lay_unknown = TableLayout(axes={"x": ["v"]}, tasks=["a", "b"], metrics=["acc", "bleu"],
                              directions={"acc": "max", "bleu": "max"})
    assert "bleu" not in build_table(runs, lay_unknown, failed).to_markdown().splitlines()[2]
    assert "b · bleu" not in build_table(runs, lay).to_markdown()


def test_costs_failures_and_formatting(loaded) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    base = table.costs["lstm / none"]
    # copy seeds 0-2 and add seeds 0-1: wall = 100 + 10 * seed (the stale 999 s run not counted)
    assert base[rs.COST_WALL] == pytest.approx((100 + 110 + 120 + 100 + 110) / 5)
    assert base[rs.COST_PARAMS] == PARAMS["lstm"]
    # every cost the runs logged, in run_schema's order (no train.steps_to_target here)
    assert table.cost_keys == [k for k in rs.COST_METRICS if k != rs.COST_TARGET_REACHED]
    assert [f.trial_key for f in table.failures] == [trial_key("gru", "none", "copy", 3)]
    assert table.cell("gru / none", "copy", "perplexity").failed == 1
    assert table.cell("gru / none", "add", "exact_match").failed == 0
    md = table.to_markdown()
    assert "| lstm / none (baseline) | 0.910 ± 0.010 |" in md
    assert "**0.980 ± 0.010**†" in md
    assert "0.610 ± 0.010† (1 failed)" in md
    assert "**1.250 ± 0.050**†" in md
    assert "0.600 ± 0.141 (n=2)" in md
    assert "1.23M" in md and "987,654" in md and "| 108 | 5,000 | 512 |" in md
    assert "NaN loss at step 40" in md
    assert "Welch's t-test" in md and "p < 0.05" in md and "`lstm / none`" in md


def test_write_table_files(loaded, tmp_path: pathlib.Path) -> None:
    table = build_table(loaded[0], layout(), loaded[1])
    paths = write_table(table, tmp_path / "out")
    assert [p.name for p in paths] == ["table.md", "table.tex", "table.csv"]
    assert all(p.is_file() for p in paths)

    md = paths[0].read_text(encoding="utf-8")
    header = md.splitlines()[2]
    assert header.startswith("| cell / norm | copy · exact_match ↑ |")
    assert md.splitlines()[3].startswith("| --- | :---: |")
    assert "| lstm / layer | 0.910 ± 0.010 |" in md
    assert "—" in md  # empty cells

    tex = paths[1].read_text(encoding="utf-8")
    for token in ("\\toprule", "\\midrule", "\\bottomrule", "\\textbf{0.980 $\\pm$ 0.010}"):
        assert token in tex
    assert "$^\\dagger$" in tex and "exact\\_match" in tex and "exact_match" not in tex

    csv = pd.read_csv(paths[2])
    assert len(csv) == len(table.rows) * len(table.columns)
    for col in ["row", "task", "metric", "column_variant", "mean", "std", "n", "significant",
                "p_value", "best", "failed", rs.COST_PARAMS]:  # fmt: skip
        assert col in csv.columns
    sel = csv[(csv["row"] == "gru / layer") & (csv["task"] == "copy")]
    means = dict(zip(sel["metric"], sel["mean"], strict=True))
    assert means["exact_match"] == pytest.approx(0.98)
    assert means["perplexity"] == pytest.approx(1.25)
    assert bool(sel.set_index("metric").loc["exact_match", "significant"])
    assert sel[rs.COST_PARAMS].iloc[0] == PARAMS["gru"]
    empty = csv[(csv["row"] == "lstm / layer") & (csv["task"] == "add")]
    assert (empty["n"] == 0).all() and empty["mean"].isna().all()


def test_latex_escapes_specials() -> None:
    runs = pd.DataFrame(
        {
            "task": ["a&b_%#"] * 2,
            "seed": [0, 1],
            "variant.x": ["v_1", "v_1"],
            "metrics.test.acc": [0.1, 0.3],
        }
    )
    lay = TableLayout(
        axes={"x": ["v_1"]}, tasks=["a&b_%#"], metrics=["acc"], directions={"acc": "max"}
    )
    tex = build_table(runs, lay).to_latex()
    assert "a\\&b\\_\\%\\#" in tex and "v\\_1 & 0.200 $\\pm$ 0.141 \\\\" in tex
    assert "a&b" not in tex


def test_reference_rows_come_from_each_tasks_runs(tmp_path: pathlib.Path) -> None:
    ref = "metrics." + rs.REFERENCE_PREFIX
    runs = pd.DataFrame(
        {
            "task": ["mt", "mt", "ts", "ts"],
            "seed": [0, 1, 0, 1],
            "variant.x": ["a", "a", "a", "a"],
            "metrics.test.bleu": [10.0, 12.0, np.nan, np.nan],
            "metrics.test.mase": [np.nan, np.nan, 0.8, 0.9],
            ref + "copy source.bleu": [7.5, 7.5, np.nan, np.nan],
            ref + "seasonal naive.mase": [np.nan, np.nan, 1.0, 1.0],
            ref + "seasonal naive.mae": [np.nan, np.nan, 3.0, 3.0],  # not a table metric
        }
    )
    lay = TableLayout(axes={"x": ["a"]}, tasks=["mt", "ts"], metrics=["bleu", "mase"],
                      directions={"bleu": "max", "mase": "min"})
    table = build_table(runs, lay)
    assert table.references == {
        "reference: copy source": {("mt", "bleu", None): 7.5},
        "reference: seasonal naive": {("ts", "mase", None): 1.0},
    }
    md = table.to_markdown()
    # the column's decimals (2 for means >= 10), no cost columns in this frame
    assert "| *reference: copy source* | 7.50 | — |\n" in md
    assert "| *reference: seasonal naive* | — | 1.000 |\n" in md
    assert "Reference rows (italic)" in md
    # references are never bold and never tested against the baseline
    assert table.cell("a", "mt", "bleu").best is False
    tex = table.to_latex()
    assert "\\textit{reference: copy source} & 7.50 & --- \\\\" in tex
    write_table(table, tmp_path)
    csv = pd.read_csv(tmp_path / "table.csv")
    refs = csv[csv["reference"]]
    assert sorted(refs["row"]) == ["reference: copy source", "reference: seasonal naive"]
    assert refs.set_index("row").loc["reference: copy source", "mean"] == 7.5
