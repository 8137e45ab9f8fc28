"""MLflow runs -> ``results/<suite>/``: tables (md, tex, csv), figures and RUN.md."""

from __future__ import annotations

from pathlib import Path

from lstm_harness.config import MonitorConfig
from lstm_harness.reporting.build import build_table
from lstm_harness.reporting.diagnostic_plots import diagnostic_figures
from lstm_harness.reporting.plots import learning_curves, schedule_curves
from lstm_harness.reporting.provenance import write_run_md
from lstm_harness.reporting.runs import VARIANT_COL, load_trial_runs
from lstm_harness.reporting.table import Table, TableLayout
from lstm_harness.suite import Suite

__all__ = ["grad_k", "layout_for", "write_results", "write_table"]


def layout_for(suite: Suite) -> TableLayout:
    """The table layout of ``suite``: its axes, tasks, metrics, row and column axes, baseline,
    alpha and searched hyperparameters."""
    spec = suite.spec
    searched, note = [], ""
    if spec.search.kind == "optuna":
        searched = list(spec.search.space)
        note = (f"Hyperparameters per row (and task): the best of an Optuna search of "
                f"{spec.search.trials} trials on valid.{suite.search_metric()} "
                f"(seed {spec.search.seed}), re-run over the seeds:")
    return TableLayout(
        axes={axis: list(variants) for axis, variants in spec.axes.items()},
        tasks=suite.task_labels(), metrics=list(spec.metrics), directions=suite.directions(),
        rows=suite.row_axes(), columns=spec.table.columns,
        baseline=suite.baseline() if suite.row_axes() else None, alpha=spec.table.alpha,
        hyperparameters=searched, search_note=note,
        task_metrics={label: cls.metric_names() for label, cls in suite.task_classes.items()},
        grad_k=grad_k(suite))


def grad_k(suite: Suite) -> list[float]:
    """The distinct ``monitor.grad_k`` of the suite's trials that detect gradient anomalies,
    in trial order (the default when none does)."""
    monitors = [t.config["monitor"] for t in suite.trials()]
    found = dict.fromkeys(float(m["grad_k"]) for m in monitors if m["grad_anomaly"])
    return list(found) or [MonitorConfig().grad_k]


def write_results(suite: Suite, tracking_uri: str, out_dir: Path, command: str,
                  summary: str, commit: str | None = None) -> list[Path]:
    """Write the table (md, tex, csv), learning-curve, schedule and diagnostic figures and
    RUN.md; return the paths.
    ``commit``: the git commit the trials ran (default: HEAD now)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    layout = layout_for(suite)
    finished, failed = load_trial_runs(tracking_uri, suite.name, layout.hyperparameters)
    caption = f"{suite.name}: {suite.spec.description}".rstrip(": ")
    written = write_table(build_table(finished, layout, failed, caption=caption), out_dir)
    if len(finished):
        row_axes = layout.row_axes
        row_of = {r["run_id"]: layout.row_label(tuple(r[VARIANT_COL + a] for a in row_axes))
                  for _, r in finished.iterrows()}
        for metric in suite.spec.metrics:
            if metric.endswith("_tf"):
                continue  # curves show the free-running metric; the table has both
            figure = learning_curves(tracking_uri, finished, row_of, layout.tasks, metric,
                                     out_dir / "figures" / f"curve_{metric}.png")
            if figure is not None:
                written.append(figure)
        figure = schedule_curves(tracking_uri, finished, row_of,
                                 out_dir / "figures" / "schedules.png")
        if figure is not None:
            written.append(figure)
        written += diagnostic_figures(tracking_uri, finished, row_of,
                                      out_dir / "figures").values()
    written.append(write_run_md(out_dir, suite.path, command, summary, tracking_uri, commit))
    return written


def write_table(table: Table, out_dir: Path) -> list[Path]:
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
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "table.md", out_dir / "table.tex", out_dir / "table.csv"]
    paths[0].write_text(table.to_markdown(), encoding="utf-8")
    paths[1].write_text(table.to_latex(), encoding="utf-8")
    table.frame().to_csv(paths[2], index=False)
    return paths
