"""Ray address checks without Ray's private modules (issue #16: no private Ray attributes)."""

from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
import ray.util

from lstm_harness import endpoints


def test_endpoints_imports_nothing_private_from_ray():
    tree = ast.parse(Path(endpoints.__file__).read_text())
    modules = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in modules if m and "._private" in m], modules


def test_auto_without_ray_address_is_left_to_ray_init(monkeypatch):
    """``auto`` without $RAY_ADDRESS: ray.init looks up the cluster (and raises
    ConnectionError at once when there is none), so there is nothing to check here."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert endpoints.ray_address_problem("auto", timeout=0.5) is None
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert endpoints.ray_address_problem("auto", timeout=0.5) is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_auto_reads_ray_address(monkeypatch):
    port = free_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "127.0.0.1")
    problem = endpoints.ray_address_problem("auto", timeout=0.5)
    assert problem == f"nothing accepts connections at 127.0.0.1:{port} (connection refused)"


def test_loopback_is_taken_to_the_node_address(monkeypatch):
    """As Ray does: 127.0.0.1 / localhost mean this node's address."""
    seen = []
    monkeypatch.setattr(ray.util, "get_node_ip_address", lambda: "192.0.2.7")
    monkeypatch.setattr(endpoints, "tcp_problem",
                        lambda host, port, timeout: seen.append((host, port)))
    endpoints.ray_address_problem("localhost:6379")
    endpoints.ray_address_problem("10.1.2.3:6380")
    assert seen == [("192.0.2.7", 6379), ("10.1.2.3", 6380)]


@pytest.mark.parametrize("address", ["headnode", "headnode:port"])
def test_malformed_address(address):
    problem = endpoints.ray_address_problem(address)
    assert problem == (f"'{address}': expected host:port (the head's GCS, port 6379 by "
                       "default), ray://host:port, or auto")
