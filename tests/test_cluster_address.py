"""``--address`` where no Ray cluster listens: a clear message and exit 2 within seconds
(``ray.init`` alone keeps retrying such an address for minutes)."""

from __future__ import annotations

import socket
import time

import pytest
from mlflow.tracking import MlflowClient

from harness.cli import EXIT_BAD_INPUT, main
from harness.cluster_address import check_reachable, host_and_port


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:1", ("127.0.0.1", 1)),
    ("ray://head.example:10001", ("head.example", 10001)),
    ("[::1]:6379", ("::1", 6379)),
    ("auto", None),
    ("local", None),
    ("head.example", None),
])
def test_host_and_port(address, expected):
    assert host_and_port(address) == expected


def test_listening_address_passes_and_closed_port_is_refused():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        check_reachable(f"127.0.0.1:{port}")
    with pytest.raises(ConnectionError, match=f"nothing accepts connections at 127.0.0.1:{port}"):
        check_reachable(f"127.0.0.1:{port}")


def test_run_with_unreachable_address_exits_2_quickly(tmp_path, monkeypatch, tiny_suite, capsys):
    import ray

    ray.shutdown()  # a Ray left connected by an earlier test would be used instead
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    started = time.monotonic()
    code = main(["run", str(tiny_suite()), "--no-progress", "--address", "127.0.0.1:1"])
    assert time.monotonic() - started < 30
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert ("error: cannot reach the Ray cluster at '127.0.0.1:1': nothing accepts connections "
            "at 127.0.0.1:1 (Connection refused)") in err
    assert not ray.is_initialized()
    client = MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tiny")
    assert client.search_runs([experiment.experiment_id]) == []  # nothing was launched
