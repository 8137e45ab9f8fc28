"""Reading a suite's trial runs from MLflow (one experiment per suite, names in run_schema).

:func:`load_trial_runs` turns the suite's trial runs into a frame with one line per trial (the
latest FINISHED run of each ``harness.trial_key``) plus a frame of failed trials;
:func:`metric_histories` reads one step metric of several runs.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from lstm_harness import run_schema as rs

__all__ = ["METRIC_COL", "PARAM_COL", "VARIANT_COL", "load_trial_runs", "metric_histories"]

VARIANT_COL = "variant."  # + axis name: column of the runs frame holding the variant name
METRIC_COL = "metrics."  # + metric key (e.g. "test.exact_match", "cost.params")
PARAM_COL = "params."  # + dotted config path: a searched hyperparameter, as MLflow logged it
_BASE_COLUMNS = ["run_id", "trial_key", "task", "seed", "end_time"]
_FAILED_COLUMNS = [*_BASE_COLUMNS, "failure"]
_PAGE = 1000


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "seed" else object) for c in columns})


def load_trial_runs(tracking_uri: str, suite: str, params: Sequence[str] = ()
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trial runs of ``suite`` as ``(finished, failed)`` frames.

    ``finished``: the latest FINISHED run (by end time) per ``harness.trial_key``, with columns
    ``run_id, trial_key, task, seed, variant.<axis>..., end_time, metrics.<key>...`` (last logged
    value of each metric), and ``params.<path>`` for each of ``params`` (the logged value, a
    string; NaN where a run lacks it). ``failed``: trial keys without any FINISHED run but
    with a FAILED one (latest per key), same identification columns plus ``failure`` (the
    ``harness.failure`` tag, "" when absent). Both are empty if the experiment does not exist.
    """
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(suite)
    if experiment is None:
        return _empty(_BASE_COLUMNS), _empty(_FAILED_COLUMNS)

    records: list[dict[str, object]] = []
    token: str | None = None
    while True:
        page = client.search_runs(
            experiment_ids=[experiment.experiment_id],
            filter_string=f"tags.`{rs.TAG_ROLE}` = '{rs.ROLE_TRIAL}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=_PAGE,
            page_token=token,
        )
        for run in page:
            tags = run.data.tags
            if tags.get(rs.TAG_ROLE) != rs.ROLE_TRIAL or tags.get(rs.TAG_SUITE) != suite:
                continue
            end_ms = run.info.end_time or run.info.start_time or 0
            record: dict[str, object] = {
                "run_id": run.info.run_id,
                "trial_key": tags.get(rs.TAG_TRIAL_KEY, run.info.run_id),
                "task": tags.get(rs.TAG_TASK),
                "seed": int(tags.get(rs.TAG_SEED, -1)),
                "end_time": pd.Timestamp(end_ms, unit="ms", tz="UTC"),
                "_status": run.info.status,
                "_start": run.info.start_time or 0,
                "failure": tags.get(rs.TAG_FAILURE, ""),
            }
            for tag, value in tags.items():
                if tag.startswith(rs.TAG_VARIANT_PREFIX):
                    record[VARIANT_COL + tag[len(rs.TAG_VARIANT_PREFIX) :]] = value
            for key, value in run.data.metrics.items():
                record[METRIC_COL + key] = value
            for key in params:
                record[PARAM_COL + key] = run.data.params.get(key)
            records.append(record)
        token = page.token
        if not token:
            break

    if not records:
        return _empty(_BASE_COLUMNS), _empty(_FAILED_COLUMNS)
    frame = pd.DataFrame.from_records(records)
    frame = frame.sort_values(["end_time", "_start", "run_id"], kind="stable")
    variant_cols = sorted(c for c in frame.columns if c.startswith(VARIANT_COL))
    metric_cols = sorted(c for c in frame.columns if c.startswith(METRIC_COL))
    param_cols = [PARAM_COL + key for key in params]
    ident = ["run_id", "trial_key", "task", "seed", *variant_cols, "end_time"]

    done = frame[frame["_status"] == "FINISHED"].drop_duplicates("trial_key", keep="last")
    finished = done[ident + param_cols + metric_cols].reset_index(drop=True)

    bad = frame[(frame["_status"] == "FAILED") & ~frame["trial_key"].isin(done["trial_key"])]
    failed = bad.drop_duplicates("trial_key", keep="last")[[*ident, "failure"]]
    failed = failed.reset_index(drop=True)
    failed["failure"] = failed["failure"].fillna("")
    return finished, failed

def metric_histories(tracking_uri: str, run_ids: list[str], key: str) -> dict[str, pd.Series]:
    """run id -> the metric's values indexed by step."""
    client = MlflowClient(tracking_uri=tracking_uri)
    out = {}
    for run_id in run_ids:
        points = client.get_metric_history(run_id, key)
        if points:
            out[run_id] = pd.Series({p.step: p.value for p in points}).sort_index()
    return out
