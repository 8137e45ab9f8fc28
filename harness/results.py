"""MLflow runs -> ``results/<suite>/``: tables, figures and RUN.md."""

from __future__ import annotations

from pathlib import Path

from lstm_harness.diagnostic_plots import diagnostic_figures
from lstm_harness.plots import learning_curves, schedule_curves
from lstm_harness.provenance import write_run_md
from lstm_harness.suite import Suite
from lstm_harness.tables import TableLayout, build_table, load_trial_runs, write_table


def layout_for(suite: Suite) -> TableLayout:
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
        task_metrics={label: cls.metric_names() for label, cls in suite.task_classes.items()})


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
        row_of = {r["run_id"]: layout.row_label(tuple(r[f"variant.{a}"] for a in row_axes))
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
