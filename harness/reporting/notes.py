"""The notes under a table: what cells, bold, daggers, cost and diagnostic columns and
reference rows mean, the searched hyperparameters per row and the failed trials."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lstm_harness import run_schema as rs
from lstm_harness.reporting.styles import Style

if TYPE_CHECKING:
    from lstm_harness.reporting.table import Table

__all__ = ["table_notes"]


def table_notes(table: Table, style: Style) -> list[str]:
    layout, esc = table.layout, style.esc
    n = table.common_n
    notes = [
        f"Cells: mean {style.pm} sample standard deviation (ddof = 1) of the final test metric "
        f"over seeds; n = number of seeds"
        + (f" (n = {n} unless marked (n=k))" if n else "")
        + f"; {style.empty} = no finished trial"
        + (f" (in {rs.STEPS_TO_TARGET} columns: no seed reached the target; n counts the "
           "seeds that did)" if rs.STEPS_TO_TARGET in layout.metrics else "")
        + ".",
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
            + (" target reached: the share of trials whose validation metric reached the "
               "value of train.steps_to_target (steps_to_target: the first evaluation step "
               "at which it did, over those trials)."
               if rs.COST_TARGET_REACHED in table.cost_keys else "")
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
            k = " or ".join(f"{k:g}" for k in layout.grad_k)
            parts.append(
                "grad anomalies: mean number of training steps whose gradient norm exceeded its "
                f"running mean by more than {k} running standard deviations"
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
