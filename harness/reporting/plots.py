"""Figures from MLflow runs: learning curves per variant, a band over seeds."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from lstm_harness import run_schema as rs
from lstm_harness.reporting.runs import VARIANT_COL, metric_histories


def save(fig, out_path: Path, dpi: int = 120) -> Path:
    """Write a figure as PNG (creating its folder) and free it."""
    fig.tight_layout()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=dpi)
    plt.close(fig)
    return out_path


def learning_curves(tracking_uri: str, runs: pd.DataFrame, row_of: dict[str, str],
                    tasks: list[str], metric: str, out_path: Path) -> Path | None:
    """One panel per task: ``valid.<metric>`` against step, mean over seeds with a band of
    ± one sample standard deviation, one line per table row. ``row_of``: run id -> row label."""
    key = rs.VALID_PREFIX + metric
    histories = metric_histories(tracking_uri, list(runs["run_id"]), key)
    if not histories:
        return None
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        task_runs = runs[runs["task"] == task]
        for row in dict.fromkeys(row_of[r] for r in task_runs["run_id"]):
            ids = [r for r in task_runs["run_id"] if row_of[r] == row and r in histories]
            if not ids:
                continue
            frame = pd.concat([histories[r] for r in ids], axis=1, sort=True)
            mean = frame.mean(axis=1)
            std = frame.std(axis=1, ddof=1).fillna(0.0)
            steps = np.asarray(mean.index, dtype=float)
            ax.plot(steps, mean.values, label=f"{row} (n={len(ids)})")
            ax.fill_between(steps, (mean - std).values, (mean + std).values, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("training step")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return save(fig, out_path, dpi=120)


def attention_heatmap(alpha: np.ndarray, source: list[str], output: list[str],
                      out_path: Path, title: str = "") -> Path:
    """Attention weights alpha [T_out, T_src] of one decoded example as a heatmap."""
    fig, ax = plt.subplots(figsize=(1.0 + 0.35 * len(source), 1.0 + 0.35 * len(output)))
    ax.imshow(alpha, cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), source, rotation=90, fontsize=7)
    ax.set_yticks(range(len(output)), output, fontsize=7)
    ax.set_xlabel("source position")
    ax.set_ylabel("output step")
    if title:
        ax.set_title(title, fontsize=8)
    return save(fig, out_path, dpi=110)


SCHEDULE_KEYS = {rs.TRAIN_EPS: "teacher-forcing probability eps_i",
                 rs.CURRICULUM_LENGTH: "curriculum length L_t",
                 rs.CURRICULUM_P_HARD: "curriculum p(hard)",
                 rs.TRAIN_LR: "learning rate",
                 rs.TRAIN_DROPOUT_PREFIX + "input": "input dropout rate",
                 rs.TRAIN_DROPOUT_PREFIX + "recurrent": "recurrent dropout rate",
                 rs.TRAIN_DROPOUT_PREFIX + "output": "output dropout rate",
                 rs.TRAIN_DROPOUT_PREFIX + "zoneout": "zoneout rate"}


def schedule_curves(tracking_uri: str, runs: pd.DataFrame, row_of: dict[str, str],
                    out_path: Path) -> Path | None:
    """One panel per schedule that changes during training (eps_i, L_t, learning rate,
    dropout rates), one line per table row (its first seed's run)."""
    first = runs.sort_values("seed").drop_duplicates(
        subset=["task", *[c for c in runs.columns if c.startswith(VARIANT_COL)]])
    panels = []
    for key, title in SCHEDULE_KEYS.items():
        histories = metric_histories(tracking_uri, list(first["run_id"]), key)
        if any(h.nunique() > 1 for h in histories.values()):
            panels.append((key, title, histories))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), squeeze=False)
    colors = {row: f"C{i}" for i, row in enumerate(dict.fromkeys(row_of[r]
                                                                 for r in first["run_id"]))}
    for ax, (_, title, histories) in zip(axes[0], panels, strict=True):
        for run_id, series in histories.items():  # one colour per row in every panel
            ax.plot(series.index, series.values, label=row_of[run_id],
                    color=colors[row_of[run_id]])
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=color, label=row) for row, color in colors.items()]
    axes[0][0].legend(handles=handles, fontsize=7)
    return save(fig, out_path, dpi=120)
