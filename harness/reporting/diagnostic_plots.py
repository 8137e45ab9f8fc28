"""Figures of the training diagnostics logged by ``harness/diagnostics`` (names in run_schema).

Every function takes the finished-runs frame of :func:`~lstm_harness.reporting.runs.
load_trial_runs` and ``row_of`` (run id -> table row label), draws one line per row (per row
and task when the runs cover several tasks), averaging the row's seeds step by step, writes a
PNG through :func:`~lstm_harness.reporting.plots.save` and returns its path, or ``None`` when
no run logged the metric.

* :func:`gate_curves` — gate means ``gates.<stack>.l<k>.<gate>.mean`` over training, one panel
  per gate, the healthy range shaded (``axhspan``);
* :func:`grad_norm_curve` — ``grad.norm`` over training, anomalies (``grad.anomaly`` = 1) as red
  dots at the anomalous seed's norm;
* :func:`curvature_curve` — ``landscape.top_eigenvalue`` over training, ± one std over seeds;
* :func:`mi_curve` — final ``info.mi.k<k>`` against k, mean ± std over seeds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs
from lstm_harness.reporting.plots import save
from lstm_harness.reporting.runs import METRIC_COL, metric_histories

__all__ = [
    "BAND_GID",
    "curvature_curve",
    "diagnostic_figures",
    "gate_curves",
    "gate_layers",
    "grad_norm_curve",
    "healthy_ranges",
    "mi_curve",
    "parse_range",
    "ranges_from_params",
    "run_ranges",
]

BAND_GID = "healthy-band"  # gid of the shaded healthy range in gate panels
_GATE_RE = re.compile(rs.GATE_KEY_PATTERN)
_RANGE_PARAM_RE = re.compile(rs.RANGE_PARAM_PATTERN)
_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


# --------------------------------------------------------------------------------------------
# names and ranges


def parse_range(text: str) -> tuple[float, float] | None:
    """``"[0.3, 0.7]"`` (or ``"(0.3, 0.7)"``, ``"0.3,0.7"``) -> ``(0.3, 0.7)``; None if the text
    does not hold exactly two numbers with low <= high."""
    numbers = [float(x) for x in _FLOAT_RE.findall(str(text))]
    if len(numbers) != 2 or numbers[0] > numbers[1]:
        return None
    return numbers[0], numbers[1]


def ranges_from_params(params: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Healthy gate-mean ranges: :data:`run_schema.DEFAULT_RANGES`, overridden by the params
    ``monitor.<gate>_range`` (the trial's ``monitor`` config) or ``monitor.ranges.<gate>``."""
    ranges = dict(rs.DEFAULT_RANGES)
    for name, value in params.items():
        match = _RANGE_PARAM_RE.match(name)
        parsed = parse_range(value) if match else None
        if parsed is not None:
            ranges[match["a"] or match["b"]] = parsed
    return ranges


def run_ranges(client: MlflowClient, run_id: str) -> dict[str, tuple[float, float]]:
    """The healthy gate-mean ranges of one run (:func:`ranges_from_params` of its params)."""
    return ranges_from_params(client.get_run(run_id).data.params)


def healthy_ranges(tracking_uri: str, run_ids: Iterable[str]) -> dict[str, tuple[float, float]]:
    """The healthy ranges to shade: those of the first of ``run_ids`` (a suite sets them in its
    base config), defaults when there is none."""
    for run_id in run_ids:
        return run_ranges(MlflowClient(tracking_uri=tracking_uri), run_id)
    return dict(rs.DEFAULT_RANGES)


def _stack_order(stack: str) -> tuple[int, str]:
    return (0 if stack.startswith("enc") else 1, stack)


def _pooled_mean(column: str) -> re.Match | None:
    """The match of a gate-mean column over both directions (``metrics.gates.<stack>.l<k>.
    <gate>.mean``), None for any other column."""
    match = _GATE_RE.match(column[len(METRIC_COL):]) if column.startswith(METRIC_COL) else None
    ok = match is not None and match["stat"] == "mean" and match["direction"] is None
    return match if ok else None


def gate_layers(runs: pd.DataFrame) -> list[tuple[str, int]]:
    """Every (stack, layer) with a logged gate mean, encoder stacks first (a bidirectional
    layer's directions pooled)."""
    found = set()
    for column in runs.columns:
        match = _pooled_mean(column)
        if match and runs[column].notna().any():
            found.add((match["stack"], int(match["layer"])))
    return sorted(found, key=lambda p: (*_stack_order(p[0]), p[1]))


def _gates_of(runs: pd.DataFrame, pairs: list[tuple[str, int]]) -> list[str]:
    gates = set()
    for column in runs.columns:
        match = _pooled_mean(column)
        if match and (match["stack"], int(match["layer"])) in pairs:
            gates.add(match["gate"])
    return [g for g in rs.GATES if g in gates] + sorted(gates - set(rs.GATES))


def _groups(runs: pd.DataFrame, row_of: dict[str, str]) -> dict[str, list[str]]:
    """Line label -> run ids: the row label, with the task when the runs span several tasks."""
    several = runs["task"].nunique() > 1 if "task" in runs.columns else False
    out: dict[str, list[str]] = {}
    for _, run in runs.iterrows():
        row = row_of.get(run["run_id"])
        if row is None:
            continue
        label = f"{row} · {run['task']}" if several else row
        out.setdefault(label, []).append(run["run_id"])
    return out


def _seed_frame(histories: dict[str, pd.Series], ids: list[str]) -> pd.DataFrame | None:
    """The seeds' histories side by side, one column per run, steps sorted (seeds that logged
    at different steps leave NaN, skipped by the mean)."""
    present = [histories[r] for r in ids if r in histories]
    return pd.concat(present, axis=1, sort=True) if present else None


def _finish(ax, ylabel: str) -> None:
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)


# --------------------------------------------------------------------------------------------
# figures


def gate_curves(tracking_uri: str, runs: pd.DataFrame, row_of: dict[str, str], out_path: Path,
                layers: str = "first",
                ranges: dict[str, tuple[float, float]] | None = None) -> Path | None:
    """Gate means over training: one panel per gate (input, forget, output, cell[, transform]),
    one line per row (mean over its seeds), the gate's healthy range shaded (input, forget,
    output). A bidirectional layer shows its directions pooled.

    ``layers``: ``"first"`` (default) the first encoder layer (stack ``enc`` — else the first
    ``enc*`` stack — layer 0), ``"all"`` one row of panels per (stack, layer). ``ranges``:
    default :func:`healthy_ranges` of the runs.
    """
    if layers not in ("first", "all"):
        raise ValueError("layers must be 'first' or 'all'")
    pairs = gate_layers(runs)
    if not pairs:
        return None
    if layers == "first":
        pairs = pairs[:1]
    gates = _gates_of(runs, pairs)
    ids = list(runs["run_id"])
    panels = []
    for stack, layer in pairs:
        for gate in gates:
            histories = metric_histories(tracking_uri, ids, rs.gate_key(stack, layer, gate))
            panels.append((stack, layer, gate, histories))
    if not any(h for *_, h in panels):
        return None
    ranges = healthy_ranges(tracking_uri, ids) if ranges is None else ranges
    groups = _groups(runs, row_of)
    fig, axes = plt.subplots(len(pairs), len(gates), figsize=(3.8 * len(gates), 3.0 * len(pairs)),
                             squeeze=False)
    for ax, (stack, layer, gate, histories) in zip(axes.flat, panels, strict=True):
        if gate in ranges:
            lo, hi = ranges[gate]
            ax.axhspan(lo, hi, color="tab:green", alpha=0.15, lw=0, gid=BAND_GID,
                       label=f"healthy [{lo:g}, {hi:g}]")
        for label, group in groups.items():
            frame = _seed_frame(histories, group)
            if frame is None:
                continue
            mean = frame.mean(axis=1)
            ax.plot(np.asarray(mean.index, dtype=float), mean.values,
                    label=f"{label} (n={frame.shape[1]})")
        if gate != "cell":
            ax.set_ylim(-0.02, 1.02)
        ax.set_title(f"{gate} gate · {stack} layer {layer}", fontsize=9)
        _finish(ax, f"mean {gate} activation")
    axes[0][0].legend(fontsize=7)
    return save(fig, out_path, dpi=110)


def grad_norm_curve(tracking_uri: str, runs: pd.DataFrame, row_of: dict[str, str],
                    out_path: Path) -> Path | None:
    """``grad.norm`` over training, one line per row (mean over seeds), each seed's anomalous
    steps (``grad.anomaly`` = 1) as red dots at that seed's norm; log scale when all norms are
    positive."""
    ids = list(runs["run_id"])
    norms = metric_histories(tracking_uri, ids, rs.GRAD_NORM)
    if not norms:
        return None
    flags = metric_histories(tracking_uri, ids, rs.GRAD_ANOMALY)
    fig, ax = plt.subplots(figsize=(7.0, 3.6))
    marked = False
    for label, group in _groups(runs, row_of).items():
        frame = _seed_frame(norms, group)
        if frame is None:
            continue
        mean = frame.mean(axis=1)
        ax.plot(np.asarray(mean.index, dtype=float), mean.values, lw=1.0,
                label=f"{label} (n={frame.shape[1]})")
        for run_id in group:
            if run_id not in flags or run_id not in norms:
                continue
            steps = [s for s, v in flags[run_id].items() if v > 0.5]
            norm = norms[run_id]
            steps = [s for s in steps if s in norm.index]
            if steps:
                ax.scatter(steps, norm.loc[steps].values, color="red", s=18, zorder=3,
                           label="_nolegend_" if marked else "anomaly")
                marked = True
    values = pd.concat(list(norms.values()))
    if len(values) and (values > 0).all() and values.max() > 20 * values.min():
        ax.set_yscale("log")
    ax.set_title(r"gradient norm $G_t$", fontsize=9)
    _finish(ax, rs.GRAD_NORM)
    ax.legend(fontsize=7)
    return save(fig, out_path, dpi=110)


def curvature_curve(tracking_uri: str, runs: pd.DataFrame, row_of: dict[str, str],
                    out_path: Path) -> Path | None:
    """``landscape.top_eigenvalue`` (top Hessian eigenvalue of the training loss) over
    training, one line per row: mean over seeds with a band of ± one sample std."""
    histories = metric_histories(tracking_uri, list(runs["run_id"]), rs.LANDSCAPE_TOP_EIG)
    if not histories:
        return None
    fig, ax = plt.subplots(figsize=(6.0, 3.4))
    for label, group in _groups(runs, row_of).items():
        frame = _seed_frame(histories, group)
        if frame is None:
            continue
        mean = frame.mean(axis=1)
        std = frame.std(axis=1, ddof=1).fillna(0.0)
        steps = np.asarray(mean.index, dtype=float)
        ax.plot(steps, mean.values, marker="o", ms=3, label=f"{label} (n={frame.shape[1]})")
        ax.fill_between(steps, (mean - std).values, (mean + std).values, alpha=0.2)
    ax.set_title("local curvature: top Hessian eigenvalue", fontsize=9)
    _finish(ax, rs.LANDSCAPE_TOP_EIG)
    ax.legend(fontsize=7)
    return save(fig, out_path, dpi=110)


def _mi_columns(runs: pd.DataFrame) -> list[tuple[int, str]]:
    prefix = METRIC_COL + rs.INFO_MI_PREFIX
    out = []
    for column in runs.columns:
        tail = column[len(prefix):] if column.startswith(prefix) else ""
        if tail.isdigit() and runs[column].notna().any():
            out.append((int(tail), column))
    return sorted(out)


def mi_curve(runs: pd.DataFrame, row_of: dict[str, str], out_path: Path) -> Path | None:
    """Final ``info.mi.k<k>`` (mutual information between the hidden state and the target k
    steps ahead, bits) against k, one line per row: mean ± sample std over seeds (error bars)."""
    columns = _mi_columns(runs)
    if not columns:
        return None
    by_id = runs.set_index("run_id")
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    for label, group in _groups(runs, row_of).items():
        ks, means, stds, counts = [], [], [], []
        for k, column in columns:
            values = by_id.loc[group, column].dropna().astype(float)
            if not len(values):
                continue
            ks.append(k)
            means.append(float(values.mean()))
            stds.append(float(values.std(ddof=1)) if len(values) > 1 else 0.0)
            counts.append(len(values))
        if ks:
            ax.errorbar(ks, means, yerr=stds, marker="o", ms=4, capsize=3,
                        label=f"{label} (n={max(counts)})")
    ax.set_xticks([k for k, _ in columns])
    ax.set_xlabel("k (steps ahead)")
    ax.set_ylabel(r"$I(h_t;\,y_{t+k})$ [bits]")
    ax.set_title("information flow: final mutual information", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return save(fig, out_path, dpi=110)


FIGURES = {
    "gates": "gate_means.png",
    "grad_norm": "grad_norm.png",
    "curvature": "curvature.png",
    "mutual_information": "mutual_information.png",
}


def diagnostic_figures(tracking_uri: str, runs: pd.DataFrame, row_of: dict[str, str],
                       out_dir: Path, all_layers: bool = False) -> dict[str, Path]:
    """Every diagnostic figure that some run has data for, written into ``out_dir`` under the
    names of :data:`FIGURES`; returns name -> path."""
    if runs.empty:
        return {}
    made = {
        "gates": gate_curves(tracking_uri, runs, row_of, out_dir / FIGURES["gates"],
                             layers="all" if all_layers else "first"),
        "grad_norm": grad_norm_curve(tracking_uri, runs, row_of, out_dir / FIGURES["grad_norm"]),
        "curvature": curvature_curve(tracking_uri, runs, row_of, out_dir / FIGURES["curvature"]),
        "mutual_information": mi_curve(runs, row_of, out_dir / FIGURES["mutual_information"]),
    }
    return {name: path for name, path in made.items() if path is not None}
