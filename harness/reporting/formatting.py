"""How the table's numbers read: decimals per column, cells (mean ± std, bold, dagger, n,
failures), cost and diagnostic values, column labels."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from lstm_harness import run_schema as rs
from lstm_harness.reporting.styles import EMPTY, Style

if TYPE_CHECKING:
    from lstm_harness.reporting.table import Cell, Column, Table

__all__ = ["cell_text", "column_decimals", "cost_label", "cost_text", "diag_text",
           "metric_label", "reference_text"]


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


def column_decimals(table: Table) -> dict[Column, int | None]:
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


def cost_text(key: str, value: float) -> str:
    if math.isnan(value):
        return EMPTY
    return _COST_FORMAT.get(key, lambda x: f"{x:.3g}")(value)


def diag_text(table: Table, row: str, key: str) -> str:
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


def cell_text(cell: Cell, decimals: int | None, common_n: int, style: Style) -> str:
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


def reference_text(value: float | None, decimals: int | None, style: Style) -> str:
    return style.empty if value is None or math.isnan(value) else _num(value, decimals)


def metric_label(table: Table, metric: str, style: Style) -> str:
    arrow = style.up if table.layout.directions[metric] == "max" else style.down
    return f"{style.esc(metric)} {arrow}"


def cost_label(key: str) -> str:
    return rs.COST_METRICS.get(key, key)
