"""Paper-style ablation tables from the trial runs of one suite (one MLflow experiment).

Reading: :func:`load_trial_runs` turns the suite's trial runs into a frame with one line per
trial (the latest FINISHED run of each ``harness.trial_key``) plus a frame of failed trials.
Building: :func:`build_table` aggregates the final ``test.<metric>`` values over seeds into a
grid of rows (product of the row axes' variants) x columns (task x metric [x column-axis
variant]). Writing: :func:`write_table` renders ``table.md``, ``table.tex`` and ``table.csv``;
:meth:`Table.to_html` gives an HTML fragment (used by the HTML report).

Diagnostic columns (after the cost columns, only when some run logged them): ``forget healthy``
= k/n, the row's finished trials whose final ``diag.forget_healthy`` is 1 (every forget-gate
mean ended inside its healthy range) over those that logged it; ``grad anomalies`` = mean of
``diag.grad_anomalies`` (steps flagged as gradient-norm anomalies); ``top eig.`` = mean of
``diag.top_eigenvalue`` (last estimate of the top Hessian eigenvalue).

Hyperparameters (suites with ``search: {kind: optuna}``): the layout names the searched config
paths; a note per row lists the values the row's finished trials ran with, per task (read from
the runs' MLflow params, so a row whose seeds ran different values shows each set).

Statistics per cell, over the n seeds ``x_1..x_n`` of the matching trials:

* mean ``m = sum(x_i) / n``;
* sample standard deviation ``s = sqrt(sum((x_i - m)^2) / (n - 1))`` (ddof = 1; 0 if n == 1);
* significance against the baseline row by Welch's t-test (two-sided, unequal variances):
  ``t = (m_a - m_b) / sqrt(s_a^2 / n_a + s_b^2 / n_b)`` with Welch-Satterthwaite degrees of
  freedom ``df = (s_a^2/n_a + s_b^2/n_b)^2 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1))``,
  computed by ``scipy.stats.ttest_ind(a, b, equal_var=False)``. A cell is marked when
  ``p < alpha``. The test needs ``n >= 2`` in both cells; if both samples are constant
  (``s_a = s_b = 0``) the t statistic is undefined and we set ``p = 0`` when the means differ,
  ``p = 1`` when they are equal.
"""

from __future__ import annotations

import html
import itertools
import math
import pathlib
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from scipy import stats

from lstm_harness import run_schema as rs
from lstm_harness.search_space import describe

__all__ = [
    "Cell",
    "Table",
    "TableLayout",
    "build_table",
    "load_trial_runs",
    "welch_p_value",
    "write_table",
]

EMPTY = "—"
DAGGER = "†"
VARIANT_COL = "variant."  # + axis name: column of the runs frame holding the variant name
METRIC_COL = "metrics."  # + metric key (e.g. "test.exact_match", "cost.params")
PARAM_COL = "params."  # + dotted config path: a searched hyperparameter, as MLflow logged it
HP_COL = "hp."  # + dotted config path: CSV column of the row's searched values for the task
_BASE_COLUMNS = ["run_id", "trial_key", "task", "seed", "end_time"]
_FAILED_COLUMNS = [*_BASE_COLUMNS, "failure"]
_PAGE = 1000

Column = tuple[str, str, "str | None"]  # (task, metric, column variant or None)


# --------------------------------------------------------------------------------------------
# layout


@dataclass
class TableLayout:
    """What the table shows: axes and tasks in suite order, metrics and their better direction.

    ``rows`` defaults to every axis except ``columns``; ``baseline`` defaults to the first
    variant of every row axis.
    """

    axes: dict[str, list[str]]
    tasks: list[str]
    metrics: list[str]
    directions: dict[str, str]
    rows: list[str] | None = None
    columns: str | None = None
    baseline: dict[str, str] | None = None
    alpha: float = 0.05
    hyperparameters: list[str] = field(default_factory=list)  # searched config paths
    search_note: str = ""  # how they were chosen (the notes' heading for them)
    # the metrics each task reports, where known: a task none of whose trials finished still
    # gets its columns (with the failures marked) instead of vanishing from the table
    task_metrics: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for metric in self.metrics:
            if self.directions.get(metric) not in ("max", "min"):
                raise ValueError(f"metric {metric!r} needs a direction 'max' or 'min'")
        if self.columns is not None and self.columns not in self.axes:
            raise ValueError(f"column axis {self.columns!r} is not an axis")
        for axis in self.rows or []:
            if axis not in self.axes:
                raise ValueError(f"row axis {axis!r} is not an axis")
            if axis == self.columns:
                raise ValueError(f"axis {axis!r} cannot be both a row and the column axis")
        for axis, variant in (self.baseline or {}).items():
            if axis not in self.row_axes:
                raise ValueError(f"baseline axis {axis!r} is not a row axis")
            if variant not in self.axes[axis]:
                raise ValueError(f"baseline variant {variant!r} is not a variant of {axis!r}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError("alpha must lie in (0, 1)")

    @property
    def row_axes(self) -> list[str]:
        """Axes forming the rows, in order."""
        if self.rows is not None:
            return list(self.rows)
        return [axis for axis in self.axes if axis != self.columns]

    @property
    def column_variants(self) -> list[str | None]:
        """Variants of the column axis, or ``[None]`` when there is none."""
        return list(self.axes[self.columns]) if self.columns is not None else [None]

    def row_combos(self) -> list[tuple[str, ...]]:
        """Every combination of the row axes' variants, in suite order."""
        return list(itertools.product(*(self.axes[axis] for axis in self.row_axes)))

    def baseline_combo(self) -> tuple[str, ...]:
        """The variants of the baseline row."""
        chosen = self.baseline or {}
        return tuple(chosen.get(axis, self.axes[axis][0]) for axis in self.row_axes)

    def row_label(self, combo: Sequence[str]) -> str:
        """Row label: variant names joined with " / " ("baseline" when there are no row axes)."""
        return " / ".join(combo) if combo else "baseline"

    @property
    def row_header(self) -> str:
        """Header of the label column: axis names joined with " / "."""
        return " / ".join(self.row_axes) if self.row_axes else "variant"


# --------------------------------------------------------------------------------------------
# reading MLflow


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "seed" else object) for c in columns})


def load_trial_runs(tracking_uri: str, suite: str, params: Sequence[str] = ()
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trial runs of ``suite`` as ``(finished, failed)`` frames.

    ``finished``: the latest FINISHED run (by end time) per ``harness.trial_key``, with columns
    ``run_id, trial_key, task, seed, variant.<axis>..., end_time, metrics.<key>...`` (last logged
    value of each metric), and ``params.<path>`` for each of ``params`` (the logged value, a
    string; NaN where a run lacks it). ``failed``: trial keys without any FINISHED run but
    with a FAILED one (latest per key), same identification columns plus ``failure`` (the
    ``harness.failure`` tag, "" when absent). Both are empty if the experiment does not exist.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        return _empty(_BASE_COLUMNS), _empty(_FAILED_COLUMNS)

    records: list[dict[str, object]] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids=[experiment.experiment_id],
            filter_string=f"tags.`{rs.TAG_ROLE}` = '{rs.ROLE_TRIAL}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_PAGE,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if tags.get(rs.TAG_ROLE) != rs.ROLE_TRIAL or tags.get(rs.TAG_SUITE) != suite:
                continue
            end_ms = run.info.end_time or run.info.start_time or 0
            record: dict[str, object] = {
                "run_id": run.info.run_id,
                "trial_key": tags.get(rs.TAG_TRIAL_KEY, run.info.run_id),
                "task": tags.get(rs.TAG_TASK),
                "seed": int(tags.get(rs.TAG_SEED, -1)),
                "end_time": pd.Timestamp(end_ms, unit="ms", tz="UTC"),
                "_status": run.info.status,
                "_start": run.info.start_time or 0,
                "failure": tags.get(rs.TAG_FAILURE, ""),
            }
            for tag, value in tags.items():
                if tag.startswith(rs.TAG_VARIANT_PREFIX):
                    record[VARIANT_COL + tag[len(rs.TAG_VARIANT_PREFIX) :]] = value
            for key, value in run.data.metrics.items():
                record[METRIC_COL + key] = value
            for key in params:
                record[PARAM_COL + key] = run.data.params.get(key)
            records.append(record)
        token = page.token
        if not token:
            break

    if not records:
        return _empty(_BASE_COLUMNS), _empty(_FAILED_COLUMNS)
    frame = pd.DataFrame.from_records(records)
    frame = frame.sort_values(["end_time", "_start", "run_id"], kind="stable")
    variant_cols = sorted(c for c in frame.columns if c.startswith(VARIANT_COL))
    metric_cols = sorted(c for c in frame.columns if c.startswith(METRIC_COL))
    param_cols = [PARAM_COL + key for key in params]
    ident = ["run_id", "trial_key", "task", "seed", *variant_cols, "end_time"]

    done = frame[frame["_status"] == "FINISHED"].drop_duplicates("trial_key", keep="last")
    finished = done[ident + param_cols + metric_cols].reset_index(drop=True)

    bad = frame[(frame["_status"] == "FAILED") & ~frame["trial_key"].isin(done["trial_key"])]
    failed = bad.drop_duplicates("trial_key", keep="last")[[*ident, "failure"]]
    failed = failed.reset_index(drop=True)
    failed["failure"] = failed["failure"].fillna("")
    return finished, failed


# --------------------------------------------------------------------------------------------
# statistics


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Welch's t-test p value of samples ``a`` vs ``b`` (NaN if either has n < 2).

    ``t = (m_a - m_b) / sqrt(s_a^2/n_a + s_b^2/n_b)``; when both samples are constant the
    statistic is undefined and the p value is 0 if the means differ, else 1.
    """
    xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(xa) < 2 or len(xb) < 2:
        return math.nan
    if np.ptp(xa) == 0 and np.ptp(xb) == 0:
        return 0.0 if xa[0] != xb[0] else 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(xa, xb, equal_var=False).pvalue)


@dataclass
class Cell:
    """One (row, column) cell: the seeds' final values and what the table marks on them."""

    row: str
    task: str
    metric: str
    column_variant: str | None
    values: list[float]
    p_value: float = math.nan
    significant: bool = False
    best: bool = False
    failed: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        """``sum(x) / n`` (NaN when empty)."""
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample std ``sqrt(sum((x - mean)^2) / (n - 1))``; 0 when n == 1, NaN when empty."""
        if not self.values:
            return math.nan
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0


@dataclass
class FailedTrial:
    """A failed trial inside the table's scope."""

    trial_key: str
    row: str
    task: str
    seed: int
    column_variant: str | None
    reason: str


@dataclass
class Table:
    """A built ablation table: rows, columns, cells, per-row cost means and failed trials.

    ``cells[(row_label, (task, metric, column_variant))]`` holds every cell.
    """

    layout: TableLayout
    rows: list[str]
    baseline: str
    columns: list[Column]
    cells: dict[tuple[str, Column], Cell]
    cost_keys: list[str]
    costs: dict[str, dict[str, float]]
    failures: list[FailedTrial] = field(default_factory=list)
    caption: str = ""
    row_variants: dict[str, tuple[str, ...]] = field(default_factory=dict)
    references: dict[str, dict[Column, float]] = field(default_factory=dict)
    diag_keys: list[str] = field(default_factory=list)
    diagnostics: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    hyperparameters: dict[str, dict[str, list[dict[str, str]]]] = field(default_factory=dict)

    def hyperparameter_text(self, row: str) -> str:
        """``lr=0.0031, hidden=128`` (one task) or ``copy: lr=...; reverse: lr=...``: the
        searched values the row's finished trials ran with (distinct sets joined by " or ")."""
        per_task = self.hyperparameters.get(row, {})
        paths = self.layout.hyperparameters
        parts = []
        for task, sets in per_task.items():
            text = " or ".join(describe({p: _parse_param(v) for p, v in values.items()}, paths)
                              for values in sets)
            parts.append(text if len(self.layout.tasks) == 1 else f"{task}: {text}")
        return "; ".join(parts)

    def diag_values(self, row: str, key: str) -> list[float]:
        """The final ``key`` (a ``diag.*`` metric) of each of the row's finished trials that
        logged it."""
        return self.diagnostics.get(row, {}).get(key, [])

    def diag_mean(self, row: str, key: str) -> float:
        """Mean of :meth:`diag_values` (for ``diag.forget_healthy``: the healthy fraction k/n);
        NaN when no trial logged it."""
        values = self.diag_values(row, key)
        if key == rs.DIAG_FORGET_HEALTHY:
            values = [1.0 if v >= 0.5 else 0.0 for v in values]
        return float(np.mean(values)) if values else math.nan

    def cell(self, row: str, task: str, metric: str, column_variant: str | None = None) -> Cell:
        """The cell of ``row`` under (task, metric[, column variant])."""
        return self.cells[(row, (task, metric, column_variant))]

    @property
    def common_n(self) -> int:
        """The most frequent n over non-empty cells (0 if all are empty)."""
        counts = Counter(c.n for c in self.cells.values() if c.n)
        return counts.most_common(1)[0][0] if counts else 0

    def frame(self) -> pd.DataFrame:
        """The CSV content: one line per row x column (see :func:`write_table`)."""
        lines = []
        for row in self.rows:
            for column in self.columns:
                cell = self.cells[(row, column)]
                line: dict[str, object] = {
                    "row": row,
                    "task": column[0],
                    "metric": column[1],
                    "column_variant": column[2] if column[2] is not None else "",
                    "mean": cell.mean,
                    "std": cell.std,
                    "n": cell.n,
                    "significant": cell.significant,
                    "p_value": cell.p_value,
                    "best": cell.best,
                    "baseline": row == self.baseline,
                    "failed": cell.failed,
                    "reference": False,
                }
                for axis, variant in zip(self.layout.row_axes, self.row_variants[row], strict=True):
                    line[VARIANT_COL + axis] = variant
                for key in self.cost_keys:
                    line[key] = self.costs[row][key]
                for key in self.diag_keys:
                    line[key] = self.diag_mean(row, key)
                    if key == rs.DIAG_FORGET_HEALTHY:
                        line[key + ".n"] = len(self.diag_values(row, key))
                sets = self.hyperparameters.get(row, {}).get(column[0], [])
                for path in self.layout.hyperparameters:
                    line[HP_COL + path] = " | ".join(
                        dict.fromkeys(v[path] for v in sets if path in v))
                lines.append(line)
        for row, values in self.references.items():
            for column, value in values.items():
                lines.append({"row": row, "task": column[0], "metric": column[1],
                              "column_variant": column[2] if column[2] is not None else "",
                              "mean": value, "n": 0, "significant": False, "best": False,
                              "baseline": False, "failed": 0, "reference": True})
        names = ["row", "task", "metric", "column_variant", "mean", "std", "n", "significant"]
        names += ["p_value", "best", "baseline", "failed", "reference"]
        names += [VARIANT_COL + axis for axis in self.layout.row_axes] + self.cost_keys
        for key in self.diag_keys:
            names += [key, key + ".n"] if key == rs.DIAG_FORGET_HEALTHY else [key]
        names += [HP_COL + path for path in self.layout.hyperparameters]
        return pd.DataFrame(lines, columns=names)

    def to_markdown(self) -> str:
        """GitHub markdown: caption line, table, notes."""
        return _render_markdown(self)

    def to_latex(self) -> str:
        """A booktabs ``table`` environment with the notes under the tabular."""
        return _render_latex(self)

    def to_html(self) -> str:
        """An HTML fragment: ``<table class="ablation">`` with caption, then the notes as a
        ``<ul class="notes">``; every text from the runs or the suite is escaped."""
        return _render_html(self)


# --------------------------------------------------------------------------------------------
# building


def _mask(runs: pd.DataFrame, axis: str, variant: str) -> pd.Series:
    col = VARIANT_COL + axis
    if col not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs[col] == variant


def _row_masks(runs: pd.DataFrame, layout: TableLayout) -> dict[tuple[str, ...], pd.Series]:
    masks = {}
    for combo in layout.row_combos():
        mask = pd.Series(True, index=runs.index)
        for axis, variant in zip(layout.row_axes, combo, strict=True):
            mask &= _mask(runs, axis, variant)
        masks[combo] = mask
    return masks


def _column_mask(runs: pd.DataFrame, layout: TableLayout, variant: str | None) -> pd.Series:
    if layout.columns is None or variant is None:
        return pd.Series(True, index=runs.index)
    return _mask(runs, layout.columns, variant)


def _task_mask(runs: pd.DataFrame, task: str) -> pd.Series:
    if "task" not in runs.columns:
        return pd.Series(False, index=runs.index)
    return runs["task"] == task


def build_table(
    runs: pd.DataFrame,
    layout: TableLayout,
    failed: pd.DataFrame | None = None,
    caption: str | None = None,
) -> Table:
    """Aggregate ``metrics.test.<metric>`` over seeds into the ablation grid of ``layout``.

    Columns are task x metric [x column variant] in suite order; a (task, metric) pair that no
    run reports is dropped, unless the task has failed trials and reports that metric
    (``layout.task_metrics``). Each cell keeps its seeds' values (mean, sample std, n), whether it
    is the best of its column (only with >= 2 non-empty rows; ties all best) and Welch's p value
    against the baseline row. Cost columns are the mean of ``metrics.cost.*`` over each row's
    finished trials (across tasks, seeds and column variants of the layout).
    """
    combos = layout.row_combos()
    labels = {combo: layout.row_label(combo) for combo in combos}
    baseline = labels.get(layout.baseline_combo(), "")
    row_masks = _row_masks(runs, layout)
    col_variants = layout.column_variants

    failed_tasks = (set(failed["task"]) if failed is not None and "task" in failed.columns
                    else set())
    columns: list[Column] = []
    for task in layout.tasks:
        in_task = runs[_task_mask(runs, task)]
        for metric in layout.metrics:
            col = METRIC_COL + rs.TEST_PREFIX + metric
            reported = col in in_task.columns and in_task[col].notna().sum() > 0
            failed_only = task in failed_tasks and metric in layout.task_metrics.get(task, ())
            if reported or failed_only:
                columns.extend((task, metric, variant) for variant in col_variants)

    cells: dict[tuple[str, Column], Cell] = {}
    for combo in combos:
        for task, metric, variant in columns:
            mask = row_masks[combo] & _task_mask(runs, task) & _column_mask(runs, layout, variant)
            col = METRIC_COL + rs.TEST_PREFIX + metric
            values = runs.loc[mask, col].dropna() if col in runs.columns else []
            cells[(labels[combo], (task, metric, variant))] = Cell(
                labels[combo], task, metric, variant, [float(v) for v in values]
            )

    for column in columns:
        column_cells = [cells[(labels[combo], column)] for combo in combos]
        _mark_best(column_cells, layout.directions[column[1]])
        if baseline:
            base = cells[(baseline, column)]
            for cell in column_cells:
                if cell is not base:
                    cell.p_value = welch_p_value(cell.values, base.values)
                    cell.significant = bool(cell.p_value < layout.alpha)

    in_scope = pd.Series(False, index=runs.index)
    for task in layout.tasks:
        in_scope |= _task_mask(runs, task)
    if layout.columns is not None:
        in_columns = pd.Series(False, index=runs.index)
        for variant in layout.axes[layout.columns]:
            in_columns |= _mask(runs, layout.columns, variant)
        in_scope &= in_columns
    cost_keys = [
        key
        for key in rs.COST_METRICS
        if METRIC_COL + key in runs.columns and runs.loc[in_scope, METRIC_COL + key].notna().any()
    ]
    costs = {
        labels[combo]: {
            key: float(runs.loc[row_masks[combo] & in_scope, METRIC_COL + key].mean())
            for key in cost_keys
        }
        for combo in combos
    }

    diag_keys = [
        key
        for key in rs.DIAG_METRICS
        if METRIC_COL + key in runs.columns and runs.loc[in_scope, METRIC_COL + key].notna().any()
    ]
    diagnostics = {
        labels[combo]: {
            key: [float(v) for v in runs.loc[row_masks[combo] & in_scope, METRIC_COL + key]
                  .dropna()]
            for key in diag_keys
        }
        for combo in combos
    }

    failures = _collect_failures(failed, layout, labels, cells, columns)
    references = _references(runs, columns)
    hyperparameters = {labels[combo]: _row_hyperparameters(runs, row_masks[combo], layout)
                       for combo in combos}
    if caption is None:
        axes = ", ".join(layout.row_axes) or "baseline"
        caption = (
            f"Ablation over {axes}: final test metrics, mean ± std over seeds "
            f"(tasks: {', '.join(layout.tasks)})."
        )
    return Table(
        layout=layout,
        rows=[labels[combo] for combo in combos],
        baseline=baseline,
        columns=columns,
        cells=cells,
        cost_keys=cost_keys,
        costs=costs,
        failures=failures,
        caption=caption,
        row_variants={labels[combo]: combo for combo in combos},
        references=references,
        diag_keys=diag_keys,
        diagnostics=diagnostics,
        hyperparameters=hyperparameters,
    )


def _row_hyperparameters(runs: pd.DataFrame, mask: pd.Series, layout: TableLayout
                         ) -> dict[str, list[dict[str, str]]]:
    """Task -> the distinct sets of searched values among the row's finished trials."""
    cols = [PARAM_COL + path for path in layout.hyperparameters]
    if not cols or any(c not in runs.columns for c in cols):
        return {}
    out: dict[str, list[dict[str, str]]] = {}
    for task in layout.tasks:
        sets: list[dict[str, str]] = []
        for _, run in runs.loc[mask & _task_mask(runs, task), cols].iterrows():
            values = {c[len(PARAM_COL):]: run[c] for c in cols if isinstance(run[c], str)}
            if values and values not in sets:
                sets.append(values)
        if sets:
            out[task] = sets
    return out


def _parse_param(text: str) -> object:
    """An MLflow param string back as int or float where it is one (for formatting)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


REFERENCE_ROW = "reference: "


def _references(runs: pd.DataFrame, columns: list[Column]) -> dict[str, dict[Column, float]]:
    """Reference rows: ``metrics.reference.<baseline>.<metric>`` of each task's runs (the same
    value in every run of the task; their mean is taken), under the table's columns."""
    prefix = METRIC_COL + rs.REFERENCE_PREFIX
    out: dict[str, dict[Column, float]] = {}
    for name in sorted(c for c in runs.columns if c.startswith(prefix)):
        baseline, _, metric = name[len(prefix):].rpartition(".")
        for column in columns:
            task, col_metric, _ = column
            if col_metric != metric:
                continue
            values = runs.loc[_task_mask(runs, task), name].dropna()
            if len(values):
                out.setdefault(REFERENCE_ROW + baseline, {})[column] = float(values.mean())
    return out


def _mark_best(cells: list[Cell], direction: str) -> None:
    filled = [c for c in cells if c.n]
    if len(filled) < 2:
        return
    pick = max if direction == "max" else min
    best = pick(c.mean for c in filled)
    for cell in filled:
        cell.best = math.isclose(cell.mean, best, rel_tol=1e-9, abs_tol=1e-12)


def _collect_failures(
    failed: pd.DataFrame | None,
    layout: TableLayout,
    labels: dict[tuple[str, ...], str],
    cells: dict[tuple[str, Column], Cell],
    columns: list[Column],
) -> list[FailedTrial]:
    if failed is None or failed.empty:
        return []
    out = []
    for _, trial in failed.iterrows():
        task = trial.get("task")
        if task not in layout.tasks:
            continue
        combo = tuple(trial.get(VARIANT_COL + axis) for axis in layout.row_axes)
        if combo not in labels:
            continue
        variant = None
        if layout.columns is not None:
            variant = trial.get(VARIANT_COL + layout.columns)
            if variant not in layout.axes[layout.columns]:
                continue
        row = labels[combo]
        reason = trial.get("failure")
        reason = reason if isinstance(reason, str) and reason else "no reason recorded"
        seed = trial.get("seed")
        out.append(
            FailedTrial(
                str(trial.get("trial_key")),
                row,
                task,
                int(seed) if pd.notna(seed) else -1,
                variant,
                reason,
            )
        )
        for column in columns:
            if column[0] == task and column[2] == variant:
                cells[(row, column)].failed += 1
    return out


# --------------------------------------------------------------------------------------------
# formatting


def _decimals(magnitude: float) -> int | None:
    """Decimals for a column whose largest |mean| is ``magnitude`` (None: scientific)."""
    if magnitude >= 100:
        return 1
    if magnitude >= 10:
        return 2
    if magnitude == 0 or magnitude >= 1e-3:
        return 3
    return None


def _num(x: float, decimals: int | None) -> str:
    return f"{x:.2e}" if decimals is None else f"{x:.{decimals}f}"


def _column_decimals(table: Table) -> dict[Column, int | None]:
    out = {}
    for column in table.columns:
        means = [abs(table.cells[(r, column)].mean) for r in table.rows]
        means = [m for m in means if not math.isnan(m)]
        out[column] = _decimals(max(means) if means else 0.0)
    return out


def _fmt_params(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x:,.0f}"


def _fmt_wall(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}"


def _fmt_rate(x: float) -> str:
    return f"{x:.1f}" if x < 100 else f"{x:,.0f}"


_COST_FORMAT: dict[str, Callable[[float], str]] = {
    rs.COST_PARAMS: _fmt_params,
    rs.COST_WALL: _fmt_wall,
    rs.COST_TOKENS_PER_S: _fmt_rate,
    rs.COST_PEAK_MEM: lambda x: f"{x:,.0f}",
}


def _cost_text(key: str, value: float) -> str:
    if math.isnan(value):
        return EMPTY
    return _COST_FORMAT.get(key, lambda x: f"{x:.3g}")(value)


def _diag_text(table: Table, row: str, key: str) -> str:
    """``k/n`` for forget healthy, the mean for the other diagnostic columns."""
    values = table.diag_values(row, key)
    if not values:
        return EMPTY
    if key == rs.DIAG_FORGET_HEALTHY:
        return f"{sum(v >= 0.5 for v in values)}/{len(values)}"
    mean = float(np.mean(values))
    if key == rs.DIAG_GRAD_ANOMALIES:
        return f"{mean:.1f}"
    return f"{mean:.3g}"


@dataclass(frozen=True)
class _Style:
    pm: str
    dagger: str
    empty: str
    up: str
    down: str
    geq: str
    lt: str
    esc: Callable[[str], str]
    bold: Callable[[str], str]
    code: Callable[[str], str]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "±": r"$\pm$",
    "†": r"$^\dagger$",
    "—": "---",
    "·": r"$\cdot$",
    "↑": r"$\uparrow$",
    "↓": r"$\downarrow$",
    "≥": r"$\geq$",
}


def _tex_escape(text: str) -> str:
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in text)


MD = _Style(
    pm="±",
    dagger=DAGGER,
    empty=EMPTY,
    up="↑",
    down="↓",
    geq="≥",
    lt="<",
    esc=_md_escape,
    bold=lambda s: f"**{s}**",
    code=lambda s: f"`{s}`",
)
TEX = _Style(
    pm="$\\pm$",
    dagger="$^\\dagger$",
    empty="---",
    up="$\\uparrow$",
    down="$\\downarrow$",
    geq="$\\geq$",
    lt="$<$",
    esc=_tex_escape,
    bold=lambda s: f"\\textbf{{{s}}}",
    code=lambda s: f"\\texttt{{{_tex_escape(s)}}}",
)


def _cell_text(cell: Cell, decimals: int | None, common_n: int, style: _Style) -> str:
    if not cell.n:
        text = style.empty
    else:
        text = _num(cell.mean, decimals)
        if cell.n > 1:
            text += f" {style.pm} {_num(cell.std, decimals)}"
        if cell.best:
            text = style.bold(text)
        if cell.significant:
            text += style.dagger
        if cell.n != common_n:
            text += f" (n={cell.n})"
    if cell.failed:
        text += f" ({cell.failed} failed)"
    return text


def _reference_text(value: float | None, decimals: int | None, style: _Style) -> str:
    return style.empty if value is None or math.isnan(value) else _num(value, decimals)


def _metric_label(table: Table, metric: str, style: _Style) -> str:
    arrow = style.up if table.layout.directions[metric] == "max" else style.down
    return f"{style.esc(metric)} {arrow}"


def _notes(table: Table, style: _Style) -> list[str]:
    layout, esc = table.layout, style.esc
    n = table.common_n
    notes = [
        f"Cells: mean {style.pm} sample standard deviation (ddof = 1) of the final test metric "
        f"over seeds; n = number of seeds"
        + (f" (n = {n} unless marked (n=k))" if n else "")
        + f"; {style.empty} = no finished trial.",
        f"Bold: best mean per column ({style.up} higher is better, {style.down} lower is "
        f"better; ties all bold; only columns with {style.geq} 2 non-empty rows).",
    ]
    if table.baseline and len(table.rows) > 1:
        notes.append(
            f"{style.dagger}: differs from the baseline row {style.code(table.baseline)} by "
            f"Welch's t-test over seeds (two-sided, unequal variances), "
            f"p {style.lt} {layout.alpha:g}; "
            f"needs n {style.geq} 2 in both rows; the baseline row is never marked."
        )
    if table.cost_keys:
        scope = "tasks, seeds and column variants" if layout.columns else "tasks and seeds"
        notes.append(
            f"Cost columns: mean over the row's finished trials across {scope}. params: "
            "trainable parameters; wall s/trial: a trial's wall time including evaluation; "
            "train tok/s: non-padding source + target tokens per second of training steps; "
            "peak MB: peak resident memory of the trial's process (CPU, Python and libraries "
            "included) or peak CUDA memory allocated (GPU)."
        )
    if table.diag_keys:
        parts = []
        if rs.DIAG_FORGET_HEALTHY in table.diag_keys:
            lo, hi = rs.DEFAULT_RANGES["forget"]
            parts.append(
                "forget healthy: k/n = trials whose every forget-gate mean ended inside its "
                f"healthy range (default [{lo}, {hi}]) over the row's finished trials that "
                "monitored the gates"
            )
        if rs.DIAG_GRAD_ANOMALIES in table.diag_keys:
            parts.append(
                "grad anomalies: mean number of training steps whose gradient norm exceeded its "
                "running mean by more than 3 running standard deviations"
            )
        if rs.DIAG_TOP_EIG in table.diag_keys:
            parts.append(
                "top eig.: mean of the last estimate of the largest Hessian eigenvalue of the "
                "training loss (local curvature)"
            )
        notes.append("Diagnostic columns: " + "; ".join(style.esc(p) for p in parts) + ".")
    if table.references:
        notes.append(
            "Reference rows (italic): the task's trivial baselines, computed without training on "
            "the same test split (one value, no seeds)."
        )
    rows_hp = [(row, table.hyperparameter_text(row)) for row in table.rows]
    rows_hp = [(row, text) for row, text in rows_hp if text]
    if rows_hp:
        notes.append(esc(layout.search_note or "Hyperparameters per row:"))
        for row, text in rows_hp:
            notes.append(f"{style.code(row)}: {esc(text)}")
    if table.failures:
        notes.append(f"Failed trials ({len(table.failures)}):")
        for f in table.failures:
            where = f"{f.row}, {f.task}, seed {f.seed}"
            if f.column_variant is not None:
                where += f", {layout.columns}={f.column_variant}"
            notes.append(f"{style.code(f.trial_key)} ({esc(where)}): {esc(f.reason)}")
    return notes


def _cost_label(key: str) -> str:
    return rs.COST_METRICS.get(key, key)


def _render_markdown(table: Table) -> str:
    decimals, n = _column_decimals(table), table.common_n
    header = [MD.esc(table.layout.row_header)]
    for task, metric, variant in table.columns:
        label = f"{MD.esc(task)} · {_metric_label(table, metric, MD)}"
        header.append(label + (f" · {MD.esc(variant)}" if variant is not None else ""))
    header += [_cost_label(key) for key in table.cost_keys]
    header += [rs.DIAG_METRICS[key] for key in table.diag_keys]
    align = ["---"] + [":---:"] * len(table.columns)
    align += ["---:"] * (len(table.cost_keys) + len(table.diag_keys))
    lines = [f"**Table.** {MD.esc(table.caption)}", "", _md_row(header), _md_row(align)]
    for row in table.rows:
        label = MD.esc(row)
        if row == table.baseline and len(table.rows) > 1:
            label += " (baseline)"
        out = [label]
        out += [_cell_text(table.cells[(row, c)], decimals[c], n, MD) for c in table.columns]
        out += [_cost_text(key, table.costs[row][key]) for key in table.cost_keys]
        out += [_diag_text(table, row, key) for key in table.diag_keys]
        lines.append(_md_row(out))
    for row, values in table.references.items():
        out = [f"*{MD.esc(row)}*"]
        out += [_reference_text(values.get(c), decimals[c], MD) for c in table.columns]
        out += [MD.empty] * (len(table.cost_keys) + len(table.diag_keys))
        lines.append(_md_row(out))
    notes = _notes(table, MD)
    lines.append("")
    for note in notes:
        lines.append(f"- {note}" if not note.startswith("`") else f"  - {note}")
    return "\n".join(lines) + "\n"


def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _spans(keys: list[object]) -> list[tuple[object, int]]:
    """Runs of equal consecutive keys as (key, length)."""
    return [(key, len(list(group))) for key, group in itertools.groupby(keys)]


def _render_latex(table: Table) -> str:
    decimals, n = _column_decimals(table), table.common_n
    ncols, ncost, ndiag = len(table.columns), len(table.cost_keys), len(table.diag_keys)
    spec = "l" + "c" * ncols + "r" * (ncost + ndiag)
    lines = [
        "% requires \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        f"\\caption{{{TEX.esc(table.caption)}}}",
        f"\\begin{{tabular}}{{{spec}}}",
        "\\toprule",
    ]
    levels: list[list[object]] = [[c[0] for c in table.columns], [c[:2] for c in table.columns]]
    if table.layout.columns is not None:
        levels.append(list(table.columns))
    for depth, keys in enumerate(levels):
        last = depth == len(levels) - 1
        out = [TEX.esc(table.layout.row_header) if last else ""]
        rules, start = [], 2
        for key, width in _spans(keys):
            if depth == 0:
                text = TEX.esc(str(key))
            elif depth == 1:
                text = _metric_label(table, key[1], TEX)  # type: ignore[index]
            else:
                text = TEX.esc(str(key[2]))  # type: ignore[index]
            out.append(f"\\multicolumn{{{width}}}{{c}}{{{text}}}" if width > 1 else text)
            if not last:
                rules.append(f"\\cmidrule(lr){{{start}-{start + width - 1}}}")
            start += width
        if depth == 0 and ncost:
            out.append(f"\\multicolumn{{{ncost}}}{{c}}{{cost}}" if ncost > 1 else "cost")
            rules.append(f"\\cmidrule(lr){{{start}-{start + ncost - 1}}}")
        elif last:
            out += [TEX.esc(_cost_label(key)) for key in table.cost_keys]
        else:
            out += [""] * ncost
        dstart = start + ncost
        if depth == 0 and ndiag:
            out.append(f"\\multicolumn{{{ndiag}}}{{c}}{{diagnostics}}" if ndiag > 1
                       else "diagnostics")
            rules.append(f"\\cmidrule(lr){{{dstart}-{dstart + ndiag - 1}}}")
        elif last:
            out += [TEX.esc(rs.DIAG_METRICS[key]) for key in table.diag_keys]
        else:
            out += [""] * ndiag
        lines.append(" & ".join(out) + " \\\\")
        if rules:
            lines.append(" ".join(rules))
    lines.append("\\midrule")
    for row in table.rows:
        label = TEX.esc(row)
        if row == table.baseline and len(table.rows) > 1:
            label += " (baseline)"
        out = [label]
        out += [_cell_text(table.cells[(row, c)], decimals[c], n, TEX) for c in table.columns]
        out += [TEX.esc(_cost_text(key, table.costs[row][key])) for key in table.cost_keys]
        out += [TEX.esc(_diag_text(table, row, key)) for key in table.diag_keys]
        lines.append(" & ".join(out) + " \\\\")
    if table.references:
        lines.append("\\midrule")
    for row, values in table.references.items():
        out = [f"\\textit{{{TEX.esc(row)}}}"]
        out += [_reference_text(values.get(c), decimals[c], TEX) for c in table.columns]
        out += [TEX.empty] * (ncost + ndiag)
        lines.append(" & ".join(out) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}", "", "\\smallskip", "{\\footnotesize"]
    lines += [note + " \\\\" for note in _notes(table, TEX)]
    lines += ["}", "\\end{table}"]
    return "\n".join(lines) + "\n"


def _html_escape(text: str) -> str:
    return html.escape(text, quote=True)


HTML = _Style(
    pm="±",
    dagger=DAGGER,
    empty=EMPTY,
    up="↑",
    down="↓",
    geq="≥",
    lt="&lt;",
    esc=_html_escape,
    bold=lambda s: f"<strong>{s}</strong>",
    code=lambda s: f"<code>{_html_escape(s)}</code>",
)


def _html_row(cells: list[str], tag: str = "td", cls: str = "") -> str:
    attr = f' class="{cls}"' if cls else ""
    return f"<tr{attr}>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _render_html(table: Table) -> str:
    decimals, n = _column_decimals(table), table.common_n
    header = [HTML.esc(table.layout.row_header)]
    for task, metric, variant in table.columns:
        label = f"{HTML.esc(task)} · {_metric_label(table, metric, HTML)}"
        header.append(label + (f" · {HTML.esc(variant)}" if variant is not None else ""))
    header += [HTML.esc(_cost_label(key)) for key in table.cost_keys]
    header += [HTML.esc(rs.DIAG_METRICS[key]) for key in table.diag_keys]
    lines = [
        '<table class="ablation">',
        f"<caption>{HTML.esc(table.caption)}</caption>",
        "<thead>",
        _html_row(header, "th"),
        "</thead>",
        "<tbody>",
    ]
    for row in table.rows:
        label = HTML.esc(row)
        is_baseline = row == table.baseline and len(table.rows) > 1
        if is_baseline:
            label += " (baseline)"
        out = [label]
        out += [_cell_text(table.cells[(row, c)], decimals[c], n, HTML) for c in table.columns]
        out += [HTML.esc(_cost_text(key, table.costs[row][key])) for key in table.cost_keys]
        out += [HTML.esc(_diag_text(table, row, key)) for key in table.diag_keys]
        lines.append(_html_row(out, cls="baseline" if is_baseline else ""))
    for row, values in table.references.items():
        out = [f"<em>{HTML.esc(row)}</em>"]
        out += [_reference_text(values.get(c), decimals[c], HTML) for c in table.columns]
        out += [HTML.empty] * (len(table.cost_keys) + len(table.diag_keys))
        lines.append(_html_row(out, cls="reference"))
    lines += ["</tbody>", "</table>", '<ul class="notes">']
    items: list[tuple[str, list[str]]] = []
    for note in _notes(table, HTML):
        if note.startswith("<code>") and items:  # a failed trial: nested under its heading
            items[-1][1].append(note)
        else:
            items.append((note, []))
    for note, children in items:
        inner = "".join(f"<li>{child}</li>" for child in children)
        lines.append(f"<li>{note}" + (f"<ul>{inner}</ul>" if children else "") + "</li>")
    lines.append("</ul>")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# writing


def write_table(table: Table, out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Write ``table.md``, ``table.tex`` and ``table.csv`` into ``out_dir``; return the paths.

    CSV layout: one line per row x column with ``row, task, metric, column_variant`` (empty
    without a column axis), ``mean, std, n, significant, p_value, best, baseline, failed``,
    one ``variant.<axis>`` column per row axis, and the row's cost means in one column per
    cost metric key (``cost.params``, ``cost.wall_time_s``, ...; repeated on each of the row's
    lines; absent when no run logged that cost). Diagnostic columns follow when runs logged
    them: ``diag.forget_healthy`` (healthy fraction k/n) with ``diag.forget_healthy.n`` (n),
    ``diag.grad_anomalies`` and ``diag.top_eigenvalue`` (means over the row's trials).
    With a search, ``hp.<path>`` columns give the searched values the row's trials of the
    line's task ran with (distinct values joined by " | ").
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "table.md", out_dir / "table.tex", out_dir / "table.csv"]
    paths[0].write_text(table.to_markdown(), encoding="utf-8")
    paths[1].write_text(table.to_latex(), encoding="utf-8")
    table.frame().to_csv(paths[2], index=False)
    return paths
