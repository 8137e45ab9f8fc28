"""Statistics of the table's cells over seeds.

Per cell, over the n seeds ``x_1..x_n`` of the matching trials (:class:`~lstm_harness.
reporting.table.Cell`):

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

import math
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from lstm_harness.reporting.table import Cell

__all__ = ["mark_best", "welch_p_value"]


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


def mark_best(cells: list[Cell], direction: str) -> None:
    """Mark the cells whose mean is the column's best (higher with ``direction`` "max", lower
    with "min"); only with >= 2 non-empty cells, ties all best."""
    filled = [c for c in cells if c.n]
    if len(filled) < 2:
        return
    pick = max if direction == "max" else min
    best = pick(c.mean for c in filled)
    for cell in filled:
        cell.best = math.isclose(cell.mean, best, rel_tol=1e-9, abs_tol=1e-12)
