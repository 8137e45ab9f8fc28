"""The ablation table's model: its layout, its cells and the built table.

A :class:`Table` (made by :func:`lstm_harness.reporting.build.build_table`) is a grid of rows
(product of the row axes' variants) x columns (task x metric [x column-axis variant]); each
:class:`Cell` keeps its seeds' final values. :meth:`Table.frame` is the CSV content; the
markdown, LaTeX and HTML renderings are :mod:`lstm_harness.reporting.render`.

Diagnostic columns (after the cost columns, only when some run logged them): ``forget healthy``
= k/n, the row's finished trials whose final ``diag.forget_healthy`` is 1 (every forget-gate
mean ended inside its healthy range) over those that logged it; ``grad anomalies`` = mean of
``diag.grad_anomalies`` (steps flagged as gradient-norm anomalies); ``top eig.`` = mean of
``diag.top_eigenvalue`` (last estimate of the top Hessian eigenvalue).

Hyperparameters (suites with ``search: {kind: optuna}``): the layout names the searched config
paths; a note per row lists the values the row's finished trials ran with, per task (read from
the runs' MLflow params, so a row whose seeds ran different values shows each set).
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lstm_harness import run_schema as rs
from lstm_harness.reporting import render
from lstm_harness.reporting.runs import VARIANT_COL
from lstm_harness.search_space import describe

__all__ = ["Cell", "Column", "FailedTrial", "Table", "TableLayout", "parse_param"]

HP_COL = "hp."  # + dotted config path: CSV column of the row's searched values for the task

Column = tuple[str, str, "str | None"]  # (task, metric, column variant or None)


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
    # the trials' monitor.grad_k (anomaly: G_t > mean + k std), for the grad anomalies note
    grad_k: list[float] = field(default_factory=lambda: [3.0])

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
            text = " or ".join(describe({p: parse_param(v) for p, v in values.items()}, paths)
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
        return render.markdown(self)

    def to_latex(self) -> str:
        """A booktabs ``table`` environment with the notes under the tabular."""
        return render.latex(self)

    def to_html(self) -> str:
        """An HTML fragment: ``<table class="ablation">`` with caption, then the notes as a
        ``<ul class="notes">``; every text from the runs or the suite is escaped."""
        return render.html(self)


def parse_param(text: str) -> object:
    """An MLflow param string back as int or float where it is one (for formatting)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
