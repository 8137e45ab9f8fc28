"""Fail fast on a Ray address where nothing listens.

``ray.init(address="host:port")`` keeps retrying an unreachable GCS for minutes (seen on Ray
2.60: still retrying after 5 minutes against 127.0.0.1:1), so the driver first opens a plain TCP
connection to the address and raises ``ConnectionError`` within seconds when that fails.
"""

from __future__ import annotations

import socket

CONNECT_TIMEOUT_S = 5.0


def host_and_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``host:port``, ``ray://host:port`` or ``[v6]:port``; None for the
    addresses Ray resolves itself (``auto``, ``local``) or forms without a port."""
    target = address.strip().removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ``ConnectionError`` if nothing accepts a TCP connection at ``address``."""
    target = host_and_port(address)
    if target is None:
        return
    host, port = target
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConnectionError(
            f"nothing accepts connections at {host}:{port} ({reason}); give the address of "
            "a running cluster's head, as printed by `ray start --head` (e.g. 10.0.0.5:6379), "
            "or 'auto' on a cluster node") from exc
