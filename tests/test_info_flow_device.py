"""The information-flow monitor on a forecasting model runs wherever the model and batch are
(its quantile bins are built on the values' device)."""

from __future__ import annotations

import pytest
import torch

from lstm_harness.config import ModelConfig, MonitorConfig
from lstm_harness.diagnostics.monitor import Monitors
from lstm_harness.models.seq2seq import Forecaster
from lstm_harness.tasks.timeseries import TimeSeriesParams, TimeSeriesTask

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA"))]


@pytest.mark.parametrize("device", DEVICES)
def test_forecast_information_flow_on_the_models_device(device: str) -> None:
    task = TimeSeriesTask(TimeSeriesParams(series="mackey_glass", mg_length=400, history=12,
                                           horizon=6))
    torch.manual_seed(0)
    where = torch.device(device)
    batch = next(iter(task.eval_batches("valid", 4)))
    model = Forecaster(ModelConfig(embed=8, hidden=8), history_features=batch.history.shape[-1],
                       targets=batch.target.shape[-1]).to(where)
    monitors = Monitors(MonitorConfig(info_flow=True, info_k=2), task, where)
    out = monitors.info_flow(model)
    assert set(out) == {"info.mi.k1", "info.mi.k2"}
    assert all(v == v for v in out.values())  # not NaN
