"""``lstm-harness report SUITE``: one self-contained HTML page from the suite's MLflow runs.

``results/<suite>/report.html`` holds, in order: the suite's name and description and how many
trials finished or failed; the ablation table (:meth:`.table.Table.to_html`, with its notes
and the diagnostic columns); the learning curves of every suite metric and the schedules
(:mod:`.plots`); the training-diagnostics figures (:mod:`.diagnostic_plots`:
gate means with their healthy bands, gradient norm with anomalies, top Hessian eigenvalue,
mutual information against k); a per-variant diagnostics section (per table row: gates whose
final mean left its healthy range, gradient-norm anomaly counts, top eigenvalue, failed trials
with their reasons, a non-finite loss or gradient among them); and provenance as in RUN.md
(command, suite file, date, git commit, machine, MLflow store, package versions).

Figures are embedded as base64 PNG and the style sheet is inline: the page needs no other file.
Everything is read from MLflow (like ``lstm-harness table``); every text that comes from a
suite or a run is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import math
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.reporting.build import build_table
from lstm_harness.reporting.diagnostic_plots import diagnostic_figures, ranges_from_params
from lstm_harness.reporting.plots import learning_curves, schedule_curves
from lstm_harness.reporting.provenance import git_commit, machine, package_versions
from lstm_harness.reporting.results import layout_for
from lstm_harness.reporting.runs import METRIC_COL, VARIANT_COL, load_trial_runs
from lstm_harness.reporting.table import Table
from lstm_harness.suite import Suite

__all__ = ["GateFlag", "ReportError", "RowDiagnostics", "render_report", "write_report"]

_GATE_RE = re.compile(rs.GATE_KEY_PATTERN)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.description { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: center; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; }
tr.baseline td { background: #f8f8ff; }
tr.reference td { font-style: italic; color: #666; }
caption { caption-side: top; text-align: left; font-weight: bold; padding-bottom: 0.3em; }
ul.notes { font-size: 0.85em; color: #444; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; }
section.variant { border: 1px solid #ddd; border-radius: 4px; padding: 0.2em 1em 0.6em;
                  margin: 1em 0; }
.unhealthy, .failed { color: #b00020; } .ok { color: #1b7f3b; }
td.unhealthy { background: #fde8ea; }
code { background: #f4f4f4; padding: 0 0.2em; border-radius: 3px; }
dl.provenance dt { font-weight: bold; } dl.provenance dd { margin: 0 0 0.4em 1.5em; }
"""

FIGURE_CAPTIONS = {
    "gates": "Gate means over training (first encoder layer), mean over seeds; shaded: the "
             "healthy range of the gate's mean (forget [0.3, 0.7], input [0.2, 0.6], output "
             "[0.2, 0.8] unless the suite sets monitor.ranges).",
    "grad_norm": "Gradient norm G_t over training, mean over seeds; red dots: steps a seed "
                 "flagged as anomalous (G_t above its running mean + 3 running standard "
                 "deviations).",
    "curvature": "Top eigenvalue of the Hessian of the training loss (local curvature), mean "
                 "± one sample standard deviation over seeds.",
    "mutual_information": "Final mutual information I(h_t; y_t+k) in bits between the hidden "
                          "state and the target k steps ahead, mean ± one sample standard "
                          "deviation over seeds.",
}


class ReportError(Exception):
    """The report cannot be made (no runs, unreadable store); the message says why."""


Gate = tuple[str, int, "str | None", str]  # (stack, layer, direction or None, gate)
_MONITOR_FLAG = re.compile(r"^(?P<stack>\S+) l(?P<layer>\d+)(?: (?P<direction>fwd|bwd))? "
                           r"(?P<gate>[a-z_]+) mean\b")


def _where(stack: str, layer: int, direction: str | None) -> str:
    return f"{stack} layer {layer}" + (f" {direction}" if direction else "")


@dataclass
class GateFlag:
    """A gate whose final mean left its healthy range in one trial: by the last logged gate
    metrics (``mean``, ``low``, ``high``), or by the monitor's own end-of-training flag
    (``monitor``: its text in the run's ``harness.diagnostics`` tag)."""

    task: str
    seed: int
    gate: Gate | None
    mean: float = math.nan
    low: float | None = None
    high: float | None = None
    monitor: str | None = None

    def text(self) -> str:
        trial = f"{self.task}, seed {self.seed}"
        if self.gate is None:
            return f"unhealthy gate in {trial} at the end (monitor): {self.monitor}"
        stack, layer, direction, gate = self.gate
        head = f"unhealthy {gate} gate ({_where(stack, layer, direction)}) in {trial}"
        if self.monitor is not None:
            return f"{head} at the end (monitor): {self.monitor}"
        mean = "not logged" if math.isnan(self.mean) else f"{self.mean:.3f}"
        span = (f"outside its healthy range [{self.low:g}, {self.high:g}]"
                if self.low is not None and self.high is not None else "marked unhealthy")
        return f"{head}: final mean {mean} {span}"


@dataclass
class RowDiagnostics:
    """What the per-variant section says about one table row."""

    row: str
    trials: list[tuple[str, int]] = field(default_factory=list)  # (task, seed) finished
    gates_monitored: int = 0  # finished trials with gate statistics
    flags: list[GateFlag] = field(default_factory=list)
    final_means: dict[Gate, list[float]] = field(default_factory=dict)
    anomalies: list[tuple[str, int, float]] = field(default_factory=list)
    top_eig: list[tuple[str, int, float]] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# gathering


def _row_of(finished: pd.DataFrame, table: Table) -> dict[str, str]:
    axes = table.layout.row_axes
    return {r["run_id"]: table.layout.row_label(tuple(str(r.get(VARIANT_COL + a)) for a in axes))
            for _, r in finished.iterrows()}


def _final(run: pd.Series, key: str) -> float:
    value = run.get(METRIC_COL + key)
    return float(value) if value is not None and pd.notna(value) else math.nan


def _gate_order(g: Gate) -> tuple:
    stack, layer, direction, gate = g
    return (0 if stack.startswith("enc") else 1, stack, layer, direction or "",
            rs.GATES.index(gate) if gate in rs.GATES else len(rs.GATES), gate)


def _gates_of(run: pd.Series) -> list[Gate]:
    """Every gate of the run with a final mean or healthy flag, encoder first."""
    out = set()
    for column, value in run.items():
        if not str(column).startswith(METRIC_COL) or pd.isna(value):
            continue
        match = _GATE_RE.match(str(column)[len(METRIC_COL):])
        if match and match["stat"] in ("mean", "healthy"):
            out.add((match["stack"], int(match["layer"]), match["direction"], match["gate"]))
    return sorted(out, key=_gate_order)


def _trial_flags(run: pd.Series, task: str, seed: int, gates: list[Gate],
                 ranges: dict[str, tuple[float, float]], monitor: str) -> list[GateFlag]:
    flags = []
    directional = {(s, k) for s, k, d, _ in gates if d}
    for g in gates:
        stack, layer, direction, gate = g
        if direction is None and (stack, layer) in directional:
            continue  # as the monitor does: a bidirectional layer is judged per direction
        mean = _final(run, rs.gate_key(stack, layer, gate, "mean", direction))
        healthy = _final(run, rs.gate_key(stack, layer, gate, "healthy", direction))
        low, high = ranges.get(gate, (None, None))
        if not math.isnan(healthy):
            bad = healthy < 0.5
        else:
            bad = low is not None and not math.isnan(mean) and not low <= mean <= high
        if bad:
            flags.append(GateFlag(task, seed, g, mean, low, high))
    known = {f.gate for f in flags}
    for item in (part.strip() for part in monitor.split(";")):
        if not item:
            continue
        match = _MONITOR_FLAG.match(item)
        g = None if match is None else (match["stack"], int(match["layer"]), match["direction"],
                                        match["gate"])
        if g is None or g not in known:
            flags.append(GateFlag(task, seed, g, monitor=item))
    return flags


def row_diagnostics(tracking_uri: str, finished: pd.DataFrame, table: Table,
                    row_of: dict[str, str]) -> dict[str, RowDiagnostics]:
    """Per table row: the final gate means and unhealthy-gate flags of every finished trial,
    anomaly counts and top eigenvalues.

    A gate is flagged when the last logged ``gates.<stack>.l<k>[.fwd|.bwd].<gate>.healthy`` is
    0, or, when the run logged no ``healthy`` flag for it, when its last logged mean lies
    outside the run's healthy range (params ``monitor.<gate>_range`` / ``monitor.ranges.<gate>``,
    else :data:`run_schema.DEFAULT_RANGES`); a bidirectional layer is judged per direction. The
    monitor's own end-of-training flags (tag ``harness.diagnostics``) are added where they name
    a gate not flagged that way.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    out = {row: RowDiagnostics(row) for row in table.rows}
    for _, run in finished.iterrows():
        row = row_of.get(run["run_id"])
        if row is None:
            continue
        diag = out.setdefault(row, RowDiagnostics(row))
        task, seed = str(run.get("task")), int(run.get("seed", -1))
        diag.trials.append((task, seed))
        gates = _gates_of(run)
        if gates:
            diag.gates_monitored += 1
            data = client.get_run(run["run_id"]).data
            ranges = ranges_from_params(data.params)
            monitor = data.tags.get(rs.TAG_DIAGNOSTICS, "")
            diag.flags += _trial_flags(run, task, seed, gates, ranges, monitor)
        for g in gates:
            mean = _final(run, rs.gate_key(g[0], g[1], g[3], "mean", g[2]))
            if not math.isnan(mean):
                diag.final_means.setdefault(g, []).append(mean)
        for key, target in ((rs.DIAG_GRAD_ANOMALIES, diag.anomalies),
                            (rs.DIAG_TOP_EIG, diag.top_eig)):
            value = _final(run, key)
            if not math.isnan(value):
                target.append((task, seed, value))
    return out


# --------------------------------------------------------------------------------------------
# rendering


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _img(path: Path, alt: str, caption: str) -> str:
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ReportError(f"figure {path} is not a PNG file")
    encoded = base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{encoded}" alt="{_esc(alt)}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


def _seeds_text(items: list[tuple[str, int, float]], fmt: str, several_tasks: bool) -> str:
    parts = []
    for task, seed, value in items:
        where = f"{task}, seed {seed}" if several_tasks else f"seed {seed}"
        parts.append(f"{where}: {value:{fmt}}")
    return "; ".join(parts)


def _gate_table(diag: RowDiagnostics) -> str:
    if not diag.final_means:
        return ""
    layers = list(dict.fromkeys(g[:3] for g in sorted(diag.final_means, key=_gate_order)))
    gates = list(dict.fromkeys(g[3] for g in sorted(diag.final_means, key=_gate_order)))
    flagged: dict[Gate, int] = {}
    for f in diag.flags:
        if f.gate is not None:
            flagged[f.gate] = flagged.get(f.gate, 0) + 1
    lines = ['<table class="gates">', "<caption>final gate means (mean over trials; ⚠ k/n: "
             "unhealthy at the end in k of n trials)</caption>",
             "<thead><tr><th>layer</th>" + "".join(f"<th>{_esc(g)}</th>" for g in gates)
             + "</tr></thead>", "<tbody>"]
    for stack, layer, direction in layers:
        cells = [f"<td>{_esc(_where(stack, layer, direction))}</td>"]
        for gate in gates:
            values = diag.final_means.get((stack, layer, direction, gate))
            if not values:
                cells.append("<td>—</td>")
                continue
            text = f"{np.mean(values):.3f}"
            bad = flagged.get((stack, layer, direction, gate), 0)
            if bad:
                cells.append(f'<td class="unhealthy" title="unhealthy at the end in {bad} of '
                             f'{len(values)} trials">{text} ⚠ {bad}/{len(values)}</td>')
            else:
                cells.append(f"<td>{text}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _variant_section(index: int, diag: RowDiagnostics, table: Table, several_tasks: bool) -> str:
    title = _esc(diag.row)
    if diag.row == table.baseline and len(table.rows) > 1:
        title += " (baseline)"
    items: list[str] = []
    n = len(diag.trials)
    items.append(f"<li>finished trials: {n}</li>")
    if diag.gates_monitored:
        healthy = table.diag_values(diag.row, rs.DIAG_FORGET_HEALTHY)
        if healthy:
            k = sum(v >= 0.5 for v in healthy)
            items.append(f"<li>forget gates healthy at the end: {k}/{len(healthy)} trials</li>")
        if diag.flags:
            for flag in diag.flags:
                items.append(f'<li class="unhealthy">⚠ {_esc(flag.text())}</li>')
        else:
            items.append(f'<li class="ok">all monitored gate means ended inside their healthy '
                         f"ranges ({diag.gates_monitored} trials)</li>")
    if diag.anomalies:
        mean = float(np.mean([v for *_, v in diag.anomalies]))
        cls = ' class="unhealthy"' if mean > 0 else ""
        items.append(f"<li{cls}>gradient-norm anomalies: mean {mean:.1f} "
                     f"({_esc(_seeds_text(diag.anomalies, '.0f', several_tasks))})</li>")
    if diag.top_eig:
        mean = float(np.mean([v for *_, v in diag.top_eig]))
        items.append(f"<li>top Hessian eigenvalue at the end: mean {mean:.4g} "
                     f"({_esc(_seeds_text(diag.top_eig, '.4g', several_tasks))})</li>")
    failures = [f for f in table.failures if f.row == diag.row]
    for f in failures:
        where = f"{f.task}, seed {f.seed}"
        if f.column_variant is not None:
            where += f", {table.layout.columns}={f.column_variant}"
        items.append(f'<li class="failed">✗ failed trial <code>{_esc(f.trial_key)}</code> '
                     f"({_esc(where)}): {_esc(f.reason)}</li>")
    logged = diag.gates_monitored or diag.anomalies or diag.top_eig
    if not n:
        items.append("<li>no finished trial: nothing to diagnose</li>")
    elif not logged:
        items.append("<li>no training diagnostics were logged for this row (suite "
                     "<code>monitor</code> options off)</li>")
    body = "\n".join(items)
    return (f'<section class="variant" id="variant-{index}">\n<h3>{title}</h3>\n'
            f"<ul>\n{body}\n</ul>\n{_gate_table(diag)}\n</section>")


def _launch_commands(tracking_uri: str, suite: str) -> list[tuple[str, str]]:
    """(start time UTC, command) of each ``lstm-harness run`` launch of the suite, oldest first."""
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        return []
    runs = client.search_runs([experiment.experiment_id],
                              filter_string=f"tags.`{rs.TAG_ROLE}` = '{rs.ROLE_LAUNCH}'",
                              order_by=["attributes.start_time ASC"], max_results=100)
    out = []
    for run in runs:
        command = run.data.tags.get(rs.TAG_COMMAND)
        if command:
            when = datetime.fromtimestamp((run.info.start_time or 0) / 1000, timezone.utc)
            out.append((f"{when:%Y-%m-%d %H:%M}", command))
    return out


def _provenance(suite: Suite, tracking_uri: str, command: str, commit: str | None) -> str:
    entries = [
        ("command", f"<code>{_esc(command)}</code>"),
        ("suite file", f"<code>{_esc(suite.path)}</code>"),
        ("date (UTC)", f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"),
        ("git commit", f"<code>{_esc(commit or git_commit(Path.cwd()))}</code>"),
        ("machine", _esc(machine())),
        ("MLflow store", f"<code>{_esc(tracking_uri)}</code>"),
    ]
    launches = _launch_commands(tracking_uri, suite.name)
    if launches:
        entries.append(("trials launched by", "<br>".join(
            f"{_esc(when)}: <code>{_esc(cmd)}</code>" for when, cmd in launches)))
    lines = ['<dl class="provenance">']
    lines += [f"<dt>{name}</dt><dd>{value}</dd>" for name, value in entries]
    lines.append("</dl>")
    lines.append("<details><summary>package versions</summary><ul>")
    lines += [f"<li>{_esc(name)} {_esc(ver)}</li>" for name, ver in package_versions().items()]
    lines.append("</ul></details>")
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _check_store(tracking_uri: str) -> None:
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():
            raise ReportError(f"no MLflow database at {db} (run the suite first, or pass "
                              "--runs-dir / --tracking-uri)")


def render_report(suite: Suite, tracking_uri: str, command: str, commit: str | None = None,
                  figure_dir: Path | None = None) -> str:
    """The report page as a string (see the module docstring). ``figure_dir``: where the PNGs
    are drawn before being embedded (default: a temporary folder, removed afterwards).

    Raises :class:`ReportError` when the store holds no trial run of the suite.
    """
    _check_store(tracking_uri)
    layout = layout_for(suite)
    try:
        finished, failed = load_trial_runs(tracking_uri, suite.name, layout.hyperparameters)
    except Exception as exc:  # the store's own exception types vary by backend
        raise ReportError(f"MLflow store {tracking_uri} cannot be read: "
                          f"{type(exc).__name__}: {exc}") from exc
    if finished.empty and failed.empty:
        raise ReportError(f"no trial runs of suite '{suite.name}' in the MLflow store "
                          f"{tracking_uri} (run `lstm-harness run {suite.path}` first, or pass "
                          "the --runs-dir / --tracking-uri it ran with)")
    caption = f"{suite.name}: {suite.spec.description}".rstrip(": ")
    table = build_table(finished, layout, failed, caption=caption)
    row_of = _row_of(finished, table)
    several_tasks = len(layout.tasks) > 1

    with tempfile.TemporaryDirectory(prefix="report-") as scratch:
        folder = Path(figure_dir) if figure_dir is not None else Path(scratch)
        curves: list[str] = []
        diagnostics: list[str] = []
        if len(finished):
            for metric in suite.spec.metrics:
                path = learning_curves(tracking_uri, finished, row_of, layout.tasks, metric,
                                       folder / f"curve_{metric}.png")
                if path is not None:
                    curves.append(_img(path, f"learning curve {metric}",
                                       f"{rs.VALID_PREFIX}{metric} over training, mean ± one "
                                       "sample standard deviation over seeds, per task."))
            path = schedule_curves(tracking_uri, finished, row_of, folder / "schedules.png")
            if path is not None:
                curves.append(_img(path, "schedules", "Schedules that change during training "
                                   "(first seed of each row)."))
            figures = diagnostic_figures(tracking_uri, finished, row_of, folder)
            for name, path in figures.items():
                diagnostics.append(_img(path, name.replace("_", " "), FIGURE_CAPTIONS[name]))

    per_row = row_diagnostics(tracking_uri, finished, table, row_of)
    variants = [_variant_section(i, diag, table, several_tasks)
                for i, diag in enumerate(per_row.values())]

    total = len(suite.trials())
    summary = (f"{len(finished)} of {total} trials finished"
               + (f", {len(failed)} failed" if len(failed) else "")
               + f" ({_count(len(table.rows), 'row')} × {_count(len(layout.tasks), 'task')} × "
               f"{_count(len(suite.spec.seeds), 'seed')}"
               + (" × column variants)" if layout.columns else ")"))
    title = f"{suite.name}: ablation report"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="description">{_esc(suite.spec.description or "(no description)")}</p>',
        f'<p class="summary">{_esc(summary)}</p>',
        '<section id="table">',
        "<h2>Ablation table</h2>",
        table.to_html(),
        "</section>",
        '<section id="curves">',
        "<h2>Learning curves</h2>",
        *(curves or ["<p>No validation metrics were logged.</p>"]),
        "</section>",
        '<section id="diagnostics">',
        "<h2>Training diagnostics</h2>",
        *(diagnostics or ["<p>No training diagnostics were logged (suite <code>monitor</code> "
                          "options off).</p>"]),
        "</section>",
        '<section id="variants">',
        "<h2>Per-variant diagnostics</h2>",
        *variants,
        "</section>",
        '<section id="provenance">',
        "<h2>Provenance</h2>",
        _provenance(suite, tracking_uri, command, commit),
        "</section>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def write_report(suite: Suite, tracking_uri: str, out_dir: Path, command: str,
                 commit: str | None = None) -> Path:
    """Write ``out_dir/report.html`` (see :func:`render_report`) and return its path."""
    page = render_report(suite, tracking_uri, command, commit)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(page, encoding="utf-8")
    return path
