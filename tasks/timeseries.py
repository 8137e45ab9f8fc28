"""Time-series forecasting on built-in data: statsmodels' classic series and Mackey-Glass.

A window of ``history`` past values (targets first, then extra ``features``) is the input, the
next ``horizon`` values of the ``targets`` are the output; ``covariates`` are exogenous
columns read over the same history window as a second input stream. The series is split
chronologically into train / valid / test ranges; a standard scaler fitted on the training
range only puts every batch on the model's scale, and :meth:`TimeSeriesTask.score` maps
predictions back before computing MSE, MAE, sMAPE and MASE (against the seasonal-naive
forecast on the same windows).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator
from typing import ClassVar, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field, model_validator

from lstm_harness.tasks.base import Direction, ForecastBatch, ForecastTask, TaskParams

Series = Literal["sunspots", "co2", "nile", "elnino", "macrodata", "mackey_glass"]
Split = Literal["valid", "test"]
_SPLITS: tuple[str, ...] = ("valid", "test")
_RANGES: tuple[str, ...] = ("train", "valid", "test")

#: Columns a task may read, per series (macrodata's ``year``/``quarter`` are dates, not data).
COLUMNS: dict[str, tuple[str, ...]] = {
    "sunspots": ("SUNACTIVITY",),
    "co2": ("co2",),
    "nile": ("volume",),
    "elnino": ("sst",),
    "macrodata": ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1",
                  "tbilrate", "unemp", "pop", "infl", "realint"),
    "mackey_glass": ("x",),
}

#: Seasonal period m used by the seasonal-naive reference when ``season`` is not given.
DEFAULT_SEASON: dict[str, int] = {"sunspots": 11, "co2": 52, "nile": 1, "elnino": 12,
                                  "macrodata": 4, "mackey_glass": 1}

_DEFAULT_TARGETS: dict[str, list[str]] = {"macrodata": ["realgdp"]}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")

# Mackey-Glass integration: explicit Euler with this many sub-steps per unit of time, started
# from a constant history x = 1.2 and run this many time units before the first sample.
MG_SUBSTEPS = 10
MG_WARMUP = 500
MG_X0 = 1.2


class TimeSeriesParams(TaskParams):
    """Parameters of :class:`TimeSeriesTask`."""

    series: Series = Field("sunspots", description="which series: a statsmodels data set or "
                           "the synthetic Mackey-Glass system")
    targets: list[str] | None = Field(None, description="columns to forecast (default: "
                                      "realgdp for macrodata, the series for the others)")
    features: list[str] = Field([], description="extra columns read in the "
                                "history window after the targets (macrodata)")
    covariates: list[str] = Field([], description="exogenous columns fed as "
                                  "a second input stream over the history window (macrodata)")
    transform: Literal["none", "log", "diff_log"] = Field(
        "none", description="applied to every column read before scaling: log, or diff_log = "
        "100 * (log x_t - log x_{t-1}) (growth rate in percent; one step shorter)")
    history: int | None = Field(None, ge=1, description="steps S in the input window "
                                "(default 24, or the season m where that is longer: co2 52)")
    horizon: int = Field(8, ge=1, description="steps T to forecast")
    season: int | None = Field(None, ge=1, description="seasonal period m of the seasonal-naive "
                               "reference (default per series: sunspots 11, co2 52, nile 1, "
                               "elnino 12, macrodata 4, mackey_glass 1); m <= history")
    valid_fraction: float = Field(0.15, gt=0, lt=1, description="share of time steps in the "
                                  "validation range (after the training range)")
    test_fraction: float = Field(0.15, gt=0, lt=1, description="share of time steps in the "
                                 "test range (the last ones)")
    stride: int = Field(1, ge=1, description="steps between consecutive windows' targets")
    mg_length: int = Field(1500, ge=10, description="Mackey-Glass: number of samples")
    mg_tau: int = Field(17, ge=1, description="Mackey-Glass: delay tau (time units)")
    mg_sample: int = Field(1, ge=1, description="Mackey-Glass: time units between samples")

    @model_validator(mode="after")
    def _check(self) -> TimeSeriesParams:
        allowed = COLUMNS[self.series]
        for field in ("targets", "features", "covariates"):
            for col in getattr(self, field) or []:
                if col not in allowed:
                    raise ValueError(
                        f"{field}: unknown column {col!r} for series {self.series!r}; "
                        f"allowed columns: {', '.join(allowed)}")
        if self.targets is not None and not self.targets:
            raise ValueError("targets must name at least one column (or be left out)")
        used = self.target_columns + self.features + self.covariates
        repeated = sorted({c for c in used if used.count(c) > 1})
        if repeated:
            raise ValueError(f"column(s) {', '.join(repeated)} named more than once across "
                             "targets, features and covariates")
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError(f"valid_fraction + test_fraction ({self.valid_fraction} + "
                             f"{self.test_fraction}) must be < 1: nothing is left to train on")
        if self.seasonal_period > self.history_steps:
            raise ValueError(f"season ({self.seasonal_period}) must be <= history "
                             f"({self.history_steps}): the seasonal-naive forecast reads one "
                             "season back inside the history window")
        mg_set = [f for f, info in type(self).model_fields.items()
                  if f.startswith("mg_") and getattr(self, f) != info.default]
        if mg_set and self.series != "mackey_glass":
            raise ValueError(f"{', '.join(mg_set)} only apply to series: mackey_glass "
                             f"(series is {self.series!r})")
        return self

    @property
    def target_columns(self) -> list[str]:
        """The forecast columns, defaults resolved."""
        if self.targets is not None:
            return list(self.targets)
        return list(_DEFAULT_TARGETS.get(self.series, COLUMNS[self.series][:1]))

    @property
    def history_steps(self) -> int:
        """The window length S, default resolved: 24, or the season m where that is longer."""
        return self.history if self.history is not None else max(24, self.seasonal_period)

    @property
    def seasonal_period(self) -> int:
        """The seasonal period m, default resolved."""
        return self.season if self.season is not None else DEFAULT_SEASON[self.series]


# ---------------------------------------------------------------------- data


@functools.lru_cache(maxsize=8)
def mackey_glass(length: int = 1500, tau: int = 17, sample: int = 1, beta: float = 0.2,
                 gamma: float = 0.1, n: float = 10.0) -> np.ndarray:
    """``length`` samples of the Mackey-Glass delay differential equation (Mackey & Glass 1977)

        dx/dt = beta * x(t - tau) / (1 + x(t - tau)^n) - gamma * x(t),

    integrated by explicit Euler with ``MG_SUBSTEPS`` sub-steps per time unit from the constant
    history x = ``MG_X0``, the first ``MG_WARMUP`` time units dropped, then one sample every
    ``sample`` time units. Deterministic; read-only array (cached)."""
    dt = 1.0 / MG_SUBSTEPS
    delay = tau * MG_SUBSTEPS
    steps = (MG_WARMUP + (length - 1) * sample) * MG_SUBSTEPS
    x = [MG_X0] * (delay + 1 + steps)
    for i in range(delay, delay + steps):
        xd = x[i - delay]
        x[i + 1] = x[i] + dt * (beta * xd / (1.0 + xd**n) - gamma * x[i])
    first = delay + MG_WARMUP * MG_SUBSTEPS
    out = np.asarray(x[first::sample * MG_SUBSTEPS][:length], dtype=np.float64)
    out.setflags(write=False)
    return out


def load_series(params: TimeSeriesParams) -> pd.DataFrame:
    """The raw series of ``params.series`` as a frame with the columns of :data:`COLUMNS`
    (one row per time step, in time order; no transform, no scaling)."""
    if params.series == "mackey_glass":
        x = mackey_glass(params.mg_length, params.mg_tau, params.mg_sample)
        return pd.DataFrame({"x": np.array(x)})
    try:
        from statsmodels.api import datasets
    except ImportError as err:
        raise ValueError(
            f"series {params.series!r} is loaded from the package 'statsmodels', which is not "
            "installed (pip install statsmodels); series: mackey_glass is synthetic and needs "
            "no download") from err
    if params.series == "sunspots":
        frame = datasets.sunspots.load_pandas().data[["SUNACTIVITY"]]
    elif params.series == "co2":
        frame = datasets.co2.load_pandas().data[["co2"]]
        frame = frame.interpolate(method="linear", limit_direction="both")
    elif params.series == "nile":
        frame = datasets.nile.load_pandas().data[["volume"]]
    elif params.series == "elnino":
        months = datasets.elnino.load_pandas().data[list(_MONTHS)].to_numpy(dtype=np.float64)
        frame = pd.DataFrame({"sst": months.reshape(-1)})  # year by year, January first
    else:
        frame = datasets.macrodata.load_pandas().data[list(COLUMNS["macrodata"])]
    return frame.astype(np.float64).reset_index(drop=True)


def forecast_metrics(y: np.ndarray, yhat: np.ndarray, naive: np.ndarray,
                     per_step: bool = True) -> dict[str, float]:
    """MSE, MAE, sMAPE and MASE of forecasts ``yhat`` of ``y`` (both [N, T, K], original scale),
    averaged over windows, steps and variables; MASE against the forecasts ``naive`` of the
    same windows: MASE = MAE(yhat) / MAE(naive) (NaN when the naive forecast is perfect).
    ``per_step`` adds ``mae_step{h}`` and ``mase_step{h}`` for h = 1..T (the same ratio per
    step). sMAPE = 100 * mean(2|y - yhat| / (|y| + |yhat|)), a term 0/0 counting as 0."""
    y, yhat, naive = (np.asarray(a, dtype=np.float64) for a in (y, yhat, naive))
    if y.shape != yhat.shape or y.shape != naive.shape or y.ndim != 3:
        raise ValueError(f"forecast_metrics needs three [N, T, K] arrays of one shape; got "
                         f"{y.shape}, {yhat.shape}, {naive.shape}")
    err = np.abs(y - yhat)
    naive_err = np.abs(y - naive)
    denom = np.abs(y) + np.abs(yhat)
    ratio = np.divide(2.0 * err, denom, out=np.zeros_like(err), where=denom > 0)

    def mase(num: float, den: float) -> float:
        return num / den if den > 0 else math.nan

    mae, naive_mae = float(err.mean()), float(naive_err.mean())
    out = {"mse": float((err**2).mean()), "mae": mae, "smape": 100.0 * float(ratio.mean()),
           "mase": mase(mae, naive_mae)}
    if per_step:
        step_mae, step_naive = err.mean(axis=(0, 2)), naive_err.mean(axis=(0, 2))
        for h in range(y.shape[1]):
            out[f"mae_step{h + 1}"] = float(step_mae[h])
            out[f"mase_step{h + 1}"] = mase(float(step_mae[h]), float(step_naive[h]))
    return out


# ---------------------------------------------------------------------- task


class TimeSeriesTask(ForecastTask):
    """Forecast the next ``horizon`` values of a real or synthetic time series.

    Data (``series``):

    * ``sunspots``: yearly sunspot numbers 1700-2008 (309 steps, column ``SUNACTIVITY``);
    * ``co2``: weekly Mauna Loa CO2 1958-2001 (2,284 steps, column ``co2``; the 59 missing
      weeks filled by linear interpolation);
    * ``nile``: yearly Nile flow at Aswan 1871-1970 (100 steps, column ``volume``);
    * ``elnino``: monthly Pacific sea-surface temperature 1950-2010, the 61 x 12 table read
      year by year into one series (732 steps, column ``sst``);
    * ``macrodata``: quarterly US macroeconomic data 1959-2009 (203 steps, 12 columns): the
      multivariate case -- ``targets`` (default ``realgdp``), extra history ``features`` and
      exogenous ``covariates`` (a second input stream, ``ForecastBatch.covariates[0]``
      [B, history, n_cov]);
    * ``mackey_glass``: the chaotic delay system of Mackey & Glass (1977), "Oscillation and
      chaos in physiological control systems", Science 197(4300):
      dx/dt = beta x(t-tau) / (1 + x(t-tau)^n) - gamma x(t), beta = 0.2, gamma = 0.1, n = 10,
      tau = ``mg_tau`` (17: chaotic), explicit Euler with 10 sub-steps per time unit, sampled
      every ``mg_sample`` time units (:func:`mackey_glass`; deterministic, no download).

    The statsmodels series are loaded from the installed package (no network). ``transform``
    (``log`` or ``diff_log`` = 100 x log growth rate) is applied to every column read; the
    metrics are on that transformed scale.

    Split: the N time steps are cut chronologically into train / valid / test ranges, the
    last ``round(N * test_fraction)`` steps for test, the ``round(N * valid_fraction)``
    before them for valid, the rest for training. A window (history steps t0-S .. t0-1,
    target steps t0 .. t0+T-1) belongs to the range that holds its whole target; its history
    may reach back into the previous range. Each range's windows are every ``stride``-th
    target start from its first possible one.

    Scaling: per column z = (x - mean) / std, mean and std (population) over the training
    range only (std 0 is taken as 1); history, targets and covariates are scaled alike.
    Training draws windows of the training range uniformly by (seed, step) from the finite
    pool; a length curriculum (``lengths=(lo, hi)``) truncates the target to its first ``hi``
    steps.

    Metrics, on the original (transformed, unscaled) scale, averaged over all windows, steps
    and target variables:

    * MSE = mean (y - yhat)^2, MAE = mean |y - yhat|;
    * sMAPE = 100 * mean 2 |y - yhat| / (|y| + |yhat|) (0/0 counted as 0), the symmetric MAPE
      of Makridakis (1993), "Accuracy measures: theoretical and practical concerns", IJF 9(4),
      in the bounded [0, 200] form of the M3/M4 competitions;
    * MASE = MAE / MAE(seasonal naive). Hyndman & Koehler (2006), "Another look at measures
      of forecast accuracy", IJF 22(4), scale by the in-sample one-step (seasonal) naive
      error; here the scale is the seasonal-naive forecast of the SAME evaluation windows,
      yhat_{t+h} = y_{t+h-m*ceil(h/m)} (m = ``season``; m = 1 repeats the last value), so
      the seasonal-naive reference row has MASE = 1 exactly and MASE < 1 beats it;
    * per step h = 1..T: ``mae_step{h}``, ``mase_step{h}`` (extras).
    """

    name: ClassVar[str] = "timeseries"
    kind: ClassVar[Literal["seq2seq", "forecast"]] = "forecast"
    Params: ClassVar[type[TaskParams]] = TimeSeriesParams
    metrics: ClassVar[dict[str, Direction]] = {"mse": "min", "mae": "min", "smape": "min",
                                               "mase": "min"}

    params: TimeSeriesParams

    def __init__(self, params: TimeSeriesParams | None = None) -> None:
        super().__init__(params if params is not None else TimeSeriesParams())
        p = self.params
        self.target_columns = p.target_columns
        self.columns: list[str] = self.target_columns + list(p.features) + list(p.covariates)
        self.season = p.seasonal_period
        frame = load_series(p)
        self.values = self._transform(frame[self.columns].to_numpy(dtype=np.float64))
        n = len(self.values)
        n_test = int(round(n * p.test_fraction))
        n_valid = int(round(n * p.valid_fraction))
        n_train = n - n_valid - n_test
        #: range name -> (first step, one past the last step)
        self.ranges: dict[str, tuple[int, int]] = {
            "train": (0, n_train), "valid": (n_train, n_train + n_valid), "test": (n_train +
                                                                                n_valid, n)}
        train = self.values[:n_train]
        self.scaler_mean = train.mean(axis=0) if n_train else np.zeros(len(self.columns))
        std = train.std(axis=0) if n_train else np.ones(len(self.columns))
        self.scaler_std = np.where(std > 0, std, 1.0)
        self._scaled = torch.from_numpy(
            (self.values - self.scaler_mean) / self.scaler_std).to(torch.float32)
        self._starts = {name: self._window_starts(name) for name in _RANGES}
        self._naive: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ data

    def _transform(self, values: np.ndarray) -> np.ndarray:
        how = self.params.transform
        if how == "none":
            return values
        bad = [c for c, col in zip(self.columns, values.T, strict=True) if (col <= 0).any()]
        if bad:
            raise ValueError(f"transform {how!r} needs positive values; column(s) "
                             f"{', '.join(bad)} of series {self.params.series!r} have values "
                             "<= 0 (use transform: none)")
        logs = np.log(values)
        return logs if how == "log" else 100.0 * np.diff(logs, axis=0)

    def _window_starts(self, name: str) -> np.ndarray:
        """First target step t0 of every window of range ``name``."""
        p = self.params
        lo, hi = self.ranges[name]
        first = max(lo, p.history_steps)
        starts = np.arange(first, hi - p.horizon + 1, p.stride, dtype=np.int64)
        if len(starts) == 0:
            bigger = {"train": "smaller valid_fraction/test_fraction",
                      "valid": "larger valid_fraction", "test": "larger test_fraction"}[name]
            raise ValueError(
                f"split {name!r} has no window: its range holds {hi - lo} of the "
                f"{len(self.values)} time steps of series {p.series!r} (steps {lo}..{hi - 1}), "
                f"but a window needs horizon={p.horizon} target steps inside it and "
                f"history={p.history_steps} steps before them; use a shorter history/horizon or a "
                f"{bigger}")
        return starts

    def window_starts(self, split: str) -> np.ndarray:
        """First target step of each window of ``split`` ("train", "valid" or "test"), in
        window order (a copy)."""
        if split not in _RANGES:
            raise ValueError(f"unknown split {split!r}; allowed splits: {', '.join(_RANGES)}")
        return self._starts[split].copy()

    def _batch(self, starts: np.ndarray, ids: torch.Tensor, steps: int | None = None
               ) -> ForecastBatch:
        p = self.params
        t0 = torch.from_numpy(np.asarray(starts, dtype=np.int64))
        k, f = self.n_targets, self.n_features
        hist = self._scaled[(t0[:, None] + torch.arange(-p.history_steps, 0))]          # [B, S, C]
        steps = p.horizon if steps is None else steps
        target = self._scaled[(t0[:, None] + torch.arange(steps)), :k]            # [B, T, K]
        covs = [hist[:, :, f:].contiguous()] if p.covariates else []
        return ForecastBatch(history=hist[:, :, :f].contiguous(), target=target.contiguous(),
                             covariates=covs, ids=ids)

    def _check_split(self, split: str) -> None:
        if split not in _SPLITS:
            raise ValueError(f"unknown split {split!r}; allowed splits: {', '.join(_SPLITS)}")

    def naive_forecasts(self, split: str) -> np.ndarray:
        """Seasonal-naive forecasts [N, T, K] of every window of ``split``, original scale:
        yhat_{t+h} = y_{t+h-m*ceil(h/m)} with t = t0 - 1 the last observed step."""
        self._check_split(split)
        if split not in self._naive:
            m, horizon = self.season, self.params.horizon
            h = np.arange(1, horizon + 1)
            back = h - m * np.ceil(h / m).astype(np.int64)                 # in [1 - m, 0]
            idx = self._starts[split][:, None] - 1 + back[None, :]          # [N, T]
            self._naive[split] = self.values[idx][:, :, : self.n_targets]
        return self._naive[split]

    def split_targets(self, split: str) -> np.ndarray:
        """True targets [N, T, K] of every window of ``split``, original scale."""
        self._check_split(split)
        idx = self._starts[split][:, None] + np.arange(self.params.horizon)[None, :]
        return self.values[idx][:, :, : self.n_targets]

    def to_original(self, scaled: torch.Tensor | np.ndarray) -> np.ndarray:
        """Model-scale values [..., K] of the targets back on the original scale."""
        k = self.n_targets
        values = np.asarray(torch.as_tensor(scaled).detach().cpu(), dtype=np.float64)
        return values * self.scaler_std[:k] + self.scaler_mean[:k]

    # ------------------------------------------------------------------ ForecastTask API

    @property
    def n_features(self) -> int:
        return len(self.target_columns) + len(self.params.features)

    @property
    def n_targets(self) -> int:
        return len(self.target_columns)

    @property
    def covariate_features(self) -> list[int]:
        return [len(self.params.covariates)] if self.params.covariates else []

    @property
    def horizon(self) -> int:
        return self.params.horizon

    @property
    def train_pool_size(self) -> int:
        return len(self._starts["train"])

    def pool_batch(self, ids: list[int]) -> ForecastBatch:
        ids = [int(i) for i in ids]
        size = self.train_pool_size
        if any(not 0 <= i < size for i in ids):
            raise ValueError(f"training-pool ids must lie in 0..{size - 1}")
        return self._batch(self._starts["train"][ids], torch.tensor(ids, dtype=torch.long))

    def pool_lengths(self) -> list[int]:
        return [self.params.horizon] * self.train_pool_size

    def train_batch(self, step: int, batch_size: int, seed: int,
                    lengths: tuple[int, int] | None = None) -> ForecastBatch:
        """``batch_size`` training windows drawn uniformly from the pool by (seed, step); with
        ``lengths`` the targets are cut to the first ``hi`` steps of the clipped bounds (every
        window can be, so windows are drawn from the whole pool)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        _, hi = self.clip_lengths(lengths)
        ids = self.draw_pool_ids(step, batch_size, seed)
        return self._batch(self._starts["train"][ids], torch.tensor(ids, dtype=torch.long),
                           steps=hi)

    def eval_batches(self, split: Split, batch_size: int) -> Iterator[ForecastBatch]:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._check_split(split)  # eagerly
        starts = self._starts[split]

        def batches() -> Iterator[ForecastBatch]:
            for first in range(0, len(starts), batch_size):
                chunk = starts[first:first + batch_size]
                yield self._batch(chunk, torch.arange(first, first + len(chunk)))

        return batches()

    def _infer_split(self, targets: np.ndarray, ids: np.ndarray) -> str:
        """The split whose windows ``ids`` hold ``targets`` (model scale)."""
        steps = targets.shape[1]
        for split in ("test", "valid"):
            starts = self._starts[split]
            if ids.max(initial=-1) >= len(starts):
                continue
            idx = starts[ids][:, None] + np.arange(steps)[None, :]
            truth = self._scaled[torch.from_numpy(idx), : self.n_targets].numpy()
            if np.allclose(truth, targets, rtol=1e-4, atol=1e-4):
                return split
        raise ValueError("score(): the targets match the windows ids of neither the valid nor "
                         "the test split; pass split='valid' or split='test'")

    def score(self, preds: torch.Tensor, targets: torch.Tensor, ids: torch.Tensor,
              split: Split | None = None) -> dict[str, float]:
        """MSE, MAE, sMAPE, MASE (+ ``mae_step{h}``, ``mase_step{h}``) of ``preds`` against
        ``targets`` ([N, T, K], model scale, T <= horizon) of the windows ``ids`` of
        ``split``, on the original scale. ``split`` names whose seasonal-naive forecasts
        scale MASE; None: the split whose windows ``ids`` hold these targets."""
        preds_a = np.asarray(torch.as_tensor(preds).detach().cpu(), dtype=np.float64)
        targets_a = np.asarray(torch.as_tensor(targets).detach().cpu(), dtype=np.float64)
        ids_a = np.asarray(torch.as_tensor(ids).detach().cpu(), dtype=np.int64).reshape(-1)
        if preds_a.shape != targets_a.shape or preds_a.ndim != 3:
            raise ValueError(f"score() needs preds and targets of one shape [N, T, K]; got "
                             f"{tuple(preds_a.shape)} and {tuple(targets_a.shape)}")
        n, steps, k = targets_a.shape
        if n == 0 or len(ids_a) != n:
            raise ValueError(f"score() needs one id per window and at least one window; got "
                             f"{len(ids_a)} ids for {n} windows")
        if k != self.n_targets or not 1 <= steps <= self.horizon:
            raise ValueError(f"score() expects [N, T <= {self.horizon}, {self.n_targets}] "
                             f"forecasts; got {tuple(targets_a.shape)}")
        if split is None:
            split = self._infer_split(targets_a, ids_a)
        naive = self.naive_forecasts(split)
        if ids_a.min() < 0 or ids_a.max() >= len(naive):
            raise ValueError(f"ids must lie in 0..{len(naive) - 1} (the windows of split "
                             f"{split!r})")
        return forecast_metrics(self.to_original(targets_a), self.to_original(preds_a),
                                naive[ids_a, :steps])

    def reference_scores(self, split: Split) -> dict[str, dict[str, float]]:
        """The seasonal-naive forecast on ``split``: {"seasonal naive": {mse, mae, smape,
        mase}} (MASE = 1 by construction, unless the naive forecast is perfect: NaN)."""
        naive = self.naive_forecasts(split)
        scores = forecast_metrics(self.split_targets(split), naive, naive, per_step=False)
        return {"seasonal naive": scores}
