"""Building the ablation table from the runs frame of :func:`~lstm_harness.reporting.runs.
load_trial_runs`: the final ``test.<metric>`` values aggregated over seeds into the layout's
grid, the best mean per column, Welch's test against the baseline row
(:mod:`lstm_harness.reporting.statistics`), cost and diagnostic means, reference rows, failed
trials and the searched hyperparameters per row.
"""

from __future__ import annotations

import pandas as pd

from lstm_harness import run_schema as rs
from lstm_harness.reporting.runs import METRIC_COL, PARAM_COL, VARIANT_COL
from lstm_harness.reporting.statistics import mark_best, welch_p_value
from lstm_harness.reporting.table import Cell, Column, FailedTrial, Table, TableLayout

__all__ = ["REFERENCE_ROW", "build_table"]

REFERENCE_ROW = "reference: "  # + baseline name: label of a reference row


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
        mark_best(column_cells, layout.directions[column[1]])
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
    def logged(keys) -> list[str]:
        """The keys some in-scope run logged, in their given order."""
        return [key for key in keys if METRIC_COL + key in runs.columns
                and runs.loc[in_scope, METRIC_COL + key].notna().any()]

    cost_keys = logged(rs.COST_METRICS)
    costs = {
        labels[combo]: {
            key: float(runs.loc[row_masks[combo] & in_scope, METRIC_COL + key].mean())
            for key in cost_keys
        }
        for combo in combos
    }

    diag_keys = logged(rs.DIAG_METRICS)
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
