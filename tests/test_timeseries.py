"""Tests of the time-series forecasting task (statsmodels series and Mackey-Glass)."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from statsmodels.api import datasets

import lstm_harness.tasks.timeseries as ts
from lstm_harness.tasks.base import ForecastBatch
from lstm_harness.tasks.timeseries import (
    TimeSeriesParams,
    TimeSeriesTask,
    forecast_metrics,
    mackey_glass,
)


def make(**kwargs: object) -> TimeSeriesTask:
    return TimeSeriesTask(TimeSeriesTask.Params(**kwargs))


def all_eval(task: TimeSeriesTask, split: str, batch_size: int = 7) -> ForecastBatch:
    batches = list(task.eval_batches(split, batch_size))
    return ForecastBatch(torch.cat([b.history for b in batches]),
                         torch.cat([b.target for b in batches]),
                         [torch.cat([b.covariates[j] for b in batches])
                          for j in range(len(batches[0].covariates))],
                         torch.cat([b.ids for b in batches]))


# ---------------------------------------------------------------------- params and data


def test_params_defaults() -> None:
    p = TimeSeriesTask.Params()
    assert TimeSeriesTask.Params is TimeSeriesParams
    assert (p.series, p.horizon, p.history_steps, p.seasonal_period) == ("sunspots", 8, 24, 11)
    assert (p.valid_fraction, p.test_fraction, p.stride, p.transform) == (0.15, 0.15, 1, "none")
    assert TimeSeriesTask.name == "timeseries" and TimeSeriesTask.kind == "forecast"
    assert TimeSeriesTask.metrics == {"mse": "min", "mae": "min", "smape": "min", "mase": "min"}
    assert TimeSeriesParams(series="co2").history_steps == 52  # one season fits the window


@pytest.mark.parametrize("series,length,column", [
    ("sunspots", 309, "SUNACTIVITY"), ("nile", 100, "volume"), ("elnino", 732, "sst"),
    ("co2", 2284, "co2"), ("macrodata", 203, "realgdp"), ("mackey_glass", 1500, "x")])
def test_series_lengths(series: str, length: int, column: str) -> None:
    task = make(series=series)
    assert task.values.shape == (length, 1)
    assert task.target_columns == [column]
    assert not np.isnan(task.values).any()
    assert task.ranges["test"][1] == length


def test_co2_gaps_interpolated_and_elnino_flattened() -> None:
    raw = datasets.co2.load_pandas().data["co2"].to_numpy()
    gap = int(np.flatnonzero(np.isnan(raw))[0])
    values = make(series="co2").values[:, 0]
    # the first gap is one week long: the mean of its neighbours
    assert np.isnan(raw[gap]) and not np.isnan(raw[gap - 1]) and not np.isnan(raw[gap + 1])
    assert values[gap] == pytest.approx((raw[gap - 1] + raw[gap + 1]) / 2)
    el = datasets.elnino.load_pandas().data
    sst = make(series="elnino").values[:, 0]
    assert sst[0] == el["JAN"][0] and sst[11] == el["DEC"][0] and sst[12] == el["JAN"][1]
    assert sst[-1] == el["DEC"].iloc[-1]


def test_transforms() -> None:
    raw = datasets.macrodata.load_pandas().data["realgdp"].to_numpy()
    assert np.allclose(make(series="macrodata", transform="log").values[:, 0], np.log(raw))
    growth = make(series="macrodata", transform="diff_log").values[:, 0]
    assert len(growth) == 202
    assert growth[0] == pytest.approx(100 * math.log(raw[1] / raw[0]))
    with pytest.raises(ValueError, match="infl"):
        make(series="macrodata", covariates=["infl"], transform="log")


def test_unknown_column_names_it_and_lists_allowed() -> None:
    with pytest.raises(ValidationError) as info:
        TimeSeriesParams(series="macrodata", covariates=["gdp_growth"])
    message = str(info.value)
    assert "'gdp_growth'" in message and "covariates" in message
    assert "allowed columns: realgdp, realcons, realinv" in message
    with pytest.raises(ValidationError, match="allowed columns: volume"):
        TimeSeriesParams(series="nile", targets=["SUNACTIVITY"])


@pytest.mark.parametrize("kwargs,match", [
    ({"season": 30, "history": 24}, "season"),
    ({"series": "macrodata", "targets": ["realgdp"], "features": ["realgdp"]}, "more than once"),
    ({"valid_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
    ({"mg_tau": 30}, "mackey_glass"),
    ({"window": 3}, "window"),
])
def test_params_refused(kwargs: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        TimeSeriesParams(**kwargs)


def test_split_without_window_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="split 'test' has no window") as info:
        make(series="nile", horizon=12, test_fraction=0.1)  # the test range holds 10 steps
    assert "shorter history/horizon" in str(info.value)
    with pytest.raises(ValueError, match="split 'train' has no window"):
        make(series="nile", history=60, horizon=15)


def test_missing_statsmodels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "statsmodels.api", None)
    with pytest.raises(ValueError, match="statsmodels") as info:
        make(series="nile")
    assert "mackey_glass" in str(info.value)
    assert make(series="mackey_glass", mg_length=200).values.shape == (200, 1)


def test_mackey_glass_deterministic_and_bounded() -> None:
    a = mackey_glass(600, 17, 1).copy()
    mackey_glass.cache_clear()
    b = mackey_glass(600, 17, 1)
    assert np.array_equal(a, b)
    assert 0.2 < a.min() and a.max() < 1.5 and a.std() > 0.1  # bounded, not a fixed point
    coarse = mackey_glass(100, 17, 3)
    assert np.allclose(coarse, mackey_glass(298, 17, 1)[::3])  # every 3rd sample


# ---------------------------------------------------------------------- windows and scaling


def test_windows_split_chronologically() -> None:
    task = make(series="elnino", history=24, horizon=6)
    horizon = 6
    last = {}
    for split in ("train", "valid", "test"):
        starts = task.window_starts(split)
        lo, hi = task.ranges[split]
        assert starts.min() >= lo and starts.max() + horizon <= hi
        assert np.all(np.diff(starts) == 1)
        last[split] = (starts.min(), starts.max() + horizon - 1)
    assert last["train"][1] < last["valid"][0] and last["valid"][1] < last["test"][0]
    # an evaluation window's history may reach back into the previous range
    assert task.window_starts("valid")[0] == task.ranges["valid"][0]
    assert task.window_starts("train")[0] == 24
    assert len(make(series="elnino", history=24, horizon=6, stride=3).window_starts("test")) \
        == math.ceil(len(task.window_starts("test")) / 3)


def test_scaler_fitted_on_training_range_only(monkeypatch: pytest.MonkeyPatch) -> None:
    base = make(series="sunspots")
    lo, _ = base.ranges["valid"]
    assert np.allclose(base.scaler_mean, base.values[:lo].mean(0))
    assert np.allclose(base.scaler_std, base.values[:lo].std(0))
    original = ts.load_series

    def shifted(params: TimeSeriesParams):
        frame = original(params)
        frame.iloc[lo:, 0] = frame.iloc[lo:, 0] * 100 + 7  # valid and test ranges changed
        return frame

    monkeypatch.setattr(ts, "load_series", shifted)
    changed = make(series="sunspots")
    assert not np.allclose(changed.values, base.values)
    assert np.array_equal(changed.scaler_mean, base.scaler_mean)
    assert np.array_equal(changed.scaler_std, base.scaler_std)


def test_batches_hold_scaled_windows() -> None:
    task = make(series="nile", history=10, horizon=4)
    raw = task.values[:, 0]
    z = (raw - task.scaler_mean[0]) / task.scaler_std[0]
    batch = next(iter(task.eval_batches("test", 3)))
    t0 = int(task.window_starts("test")[1])
    assert batch.history.shape == (3, 10, 1) and batch.target.shape == (3, 4, 1)
    assert batch.covariates == [] and batch.ids.tolist() == [0, 1, 2]
    assert torch.allclose(batch.history[1, :, 0], torch.tensor(z[t0 - 10:t0]).float())
    assert torch.allclose(batch.target[1, :, 0], torch.tensor(z[t0:t0 + 4]).float())


def test_eval_batches_full_and_in_order() -> None:
    task = make(series="sunspots")
    full = all_eval(task, "valid")
    assert full.ids.tolist() == list(range(len(task.window_starts("valid"))))
    assert full.target.shape[1] == task.horizon == 8
    with pytest.raises(ValueError, match="allowed splits: valid, test"):
        task.eval_batches("train", 4)


def test_macrodata_covariates() -> None:
    task = make(series="macrodata", features=["cpi"], covariates=["realcons", "realinv", "unemp"],
                history=12, horizon=4)
    assert (task.n_targets, task.n_features, task.covariate_features) == (1, 2, [3])
    batch = task.train_batch(0, 5, seed=0)
    assert batch.history.shape == (5, 12, 2) and batch.target.shape == (5, 4, 1)
    assert len(batch.covariates) == 1 and batch.covariates[0].shape == (5, 12, 3)
    raw = datasets.macrodata.load_pandas().data
    t0 = int(task.window_starts("train")[int(batch.ids[0])])
    unemp = (raw["unemp"].to_numpy() - task.scaler_mean[4]) / task.scaler_std[4]
    assert torch.allclose(batch.covariates[0][0, :, 2], torch.tensor(unemp[t0 - 12:t0]).float())
    cpi = (raw["cpi"].to_numpy() - task.scaler_mean[1]) / task.scaler_std[1]
    assert torch.allclose(batch.history[0, :, 1], torch.tensor(cpi[t0 - 12:t0]).float())


# ---------------------------------------------------------------------- training pool


def test_pool_and_training_batches_deterministic() -> None:
    task = make(series="sunspots")
    assert task.train_pool_size == len(task.window_starts("train")) == 217 - 24 - 8 + 1
    assert task.pool_lengths() == [8] * task.train_pool_size
    a, b = task.train_batch(3, 16, seed=1), task.train_batch(3, 16, seed=1)
    assert torch.equal(a.history, b.history) and torch.equal(a.ids, b.ids)
    assert not torch.equal(a.ids, task.train_batch(4, 16, seed=1).ids)
    assert not torch.equal(a.ids, task.train_batch(3, 16, seed=2).ids)
    assert a.ids.tolist() == task.draw_pool_ids(3, 16, 1)
    pooled = task.pool_batch(a.ids.tolist())
    assert torch.equal(pooled.history, a.history) and torch.equal(pooled.target, a.target)
    with pytest.raises(ValueError, match="0..185"):
        task.pool_batch([186])


def test_curriculum_lengths_truncate_target() -> None:
    task = make(series="sunspots")
    full = task.train_batch(5, 12, seed=0)
    short = task.train_batch(5, 12, seed=0, lengths=(1, 3))
    assert short.target.shape == (12, 3, 1) and torch.equal(short.ids, full.ids)
    assert torch.equal(short.target, full.target[:, :3])
    assert task.train_batch(5, 12, seed=0, lengths=(2, 99)).target.shape[1] == 8


# ---------------------------------------------------------------------- metrics


def test_metrics_hand_computed() -> None:
    y = np.array([[[1.0], [2.0]], [[0.0], [-4.0]]])
    yhat = np.array([[[2.0], [2.0]], [[0.0], [-2.0]]])
    naive = np.array([[[0.0], [4.0]], [[1.0], [-4.0]]])
    m = forecast_metrics(y, yhat, naive)
    # errors 1, 0, 0, 2; naive errors 1, 2, 1, 0
    assert m["mse"] == pytest.approx(5 / 4) and m["mae"] == pytest.approx(3 / 4)
    # sMAPE terms 2/3, 0, 0 (0/0), 4/6
    assert m["smape"] == pytest.approx(100 * (2 / 3 + 2 / 3) / 4)
    assert m["mase"] == pytest.approx(0.75 / 1.0)
    assert m["mae_step1"] == pytest.approx(0.5) and m["mae_step2"] == pytest.approx(1.0)
    assert m["mase_step1"] == pytest.approx(0.5 / 1.0)
    assert m["mase_step2"] == pytest.approx(1.0 / 1.0)
    assert math.isnan(forecast_metrics(y, yhat, y)["mase"])  # naive perfect: undefined


def test_seasonal_naive_hand_computed() -> None:
    task = make(series="elnino", history=24, horizon=14)  # m = 12 < horizon
    y = task.values[:, 0]
    naive = task.naive_forecasts("test")
    t0 = int(task.window_starts("test")[2])
    want = [y[t0 - 12 + h - 1] for h in range(1, 13)] + [y[t0 - 12], y[t0 - 11]]
    assert np.allclose(naive[2, :, 0], want)
    # nile: one window per held-out range, m = 1 repeats the last observed value
    nile = make(series="nile", horizon=15)
    vol = datasets.nile.load_pandas().data["volume"].to_numpy()
    assert len(nile.window_starts("test")) == 1
    ref = nile.reference_scores("test")["seasonal naive"]
    assert ref["mae"] == pytest.approx(np.abs(vol[85:] - vol[84]).mean())
    assert ref["mse"] == pytest.approx(((vol[85:] - vol[84]) ** 2).mean())
    assert ref["mase"] == 1.0
    assert set(ref) == {"mse", "mae", "smape", "mase"}


@pytest.mark.parametrize("series", ["sunspots", "macrodata", "mackey_glass"])
def test_reference_mase_is_one_and_score_matches(series: str) -> None:
    task = make(series=series)
    for split in ("valid", "test"):
        ref = task.reference_scores(split)["seasonal naive"]
        assert ref["mase"] == 1.0
        batch = all_eval(task, split)
        naive = torch.from_numpy((task.naive_forecasts(split) - task.scaler_mean[:1])
                                 / task.scaler_std[:1]).float()
        got = task.score(naive, batch.target, batch.ids, split=split)
        assert got["mase"] == pytest.approx(1.0, rel=1e-5)
        assert got["mae"] == pytest.approx(ref["mae"], rel=1e-5)
        assert got["smape"] == pytest.approx(ref["smape"], rel=1e-4)
        # the split is recovered from the targets when not given
        assert task.score(naive, batch.target, batch.ids)["mase"] == pytest.approx(got["mase"])
    with pytest.raises(ValueError, match="allowed splits"):
        task.reference_scores("train")


def test_perfect_prediction_and_inverse_scaling() -> None:
    task = make(series="co2", horizon=6)
    batch = all_eval(task, "test", 64)
    perfect = task.score(batch.target, batch.target, batch.ids, split="test")
    assert perfect["mse"] == 0 and perfect["mae"] == 0 and perfect["mase"] == 0
    assert perfect["smape"] == 0
    assert [k for k in perfect if k.startswith("mase_step")] == [f"mase_step{h}"
                                                                 for h in range(1, 7)]
    # a shift of 0.1 on the model scale is 0.1 * std on the original scale
    off = task.score(batch.target + 0.1, batch.target, batch.ids, split="test")
    assert off["mae"] == pytest.approx(0.1 * task.scaler_std[0], rel=1e-4)
    assert off["mse"] == pytest.approx((0.1 * task.scaler_std[0]) ** 2, rel=1e-3)
    assert off["mae_step3"] == pytest.approx(off["mae"], rel=1e-4)
    with pytest.raises(ValueError, match="windows of split 'valid'"):
        task.score(batch.target, batch.target, batch.ids + 1, split="valid")
