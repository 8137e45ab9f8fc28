"""Quick checks of network endpoints before anything is launched: does a server answer at
host:port, is a port free to listen on, does a Ray cluster address lead anywhere.

Each check returns ``None`` when all is well, else one line saying what is wrong (the caller
adds what the user should do). They take at most ``timeout`` seconds: ``ray.init`` on an
address where nothing listens retries for minutes before it gives up.
"""

from __future__ import annotations

import errno
import os
import socket
from urllib.parse import urlsplit

CONNECT_TIMEOUT_S = 5.0
RAY_GCS_PORT = 6379  # default port of ``ray start --head``
RAY_CLIENT_PORT = 10001  # default port of a ``ray://`` address


def split_host_port(address: str, default_port: int | None = None) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``, or ``scheme://host:port/...``) as (host, port);
    ``ValueError`` when the port is missing (and there is no default) or not a number."""
    parts = urlsplit(address if "//" in address else f"//{address}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"'{address}': the port is not a number from 0 to 65535") from None
    if not parts.hostname:
        raise ValueError(f"'{address}': no host name")
    if port is None:
        if default_port is None:
            raise ValueError(f"'{address}': expected host:port")
        port = default_port
    return parts.hostname, port


def tcp_problem(host: str, port: int, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why a TCP connection to ``host:port`` does not open within ``timeout`` s (None: it does)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"the host name '{host}' does not resolve ({exc.strerror})"
    except TimeoutError:
        return f"nothing answered at {host}:{port} within {timeout:g} s"
    except OSError as exc:
        if exc.errno == errno.ECONNREFUSED:
            return f"nothing accepts connections at {host}:{port} (connection refused)"
        return f"cannot connect to {host}:{port} ({exc.strerror or exc})"


def port_problem(host: str, port: int) -> str | None:
    """Why a server could not listen on ``host:port`` (None: the port is free). Binds with
    SO_REUSEADDR like uvicorn does, so a port with a listener is in use and a port left in
    TIME_WAIT is not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        return f"the host name '{host}' does not resolve ({exc.strerror})"
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use"
            return f"cannot listen on {host}:{port} ({exc.strerror or exc})"
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        import ipaddress

        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ray_address_problem(address: str | None, timeout: float = CONNECT_TIMEOUT_S) -> str | None:
    """Why ``ray.init(address=...)`` would not reach a cluster (None: the head answers, or no
    address was given, or there is nothing to check before ``ray.init``). ``auto`` is
    ``$RAY_ADDRESS`` when set, as Ray reads it; without it ``ray.init`` itself looks up the
    last ``ray start`` on this machine and raises ``ConnectionError`` at once when there is
    none. ``127.0.0.1`` / ``localhost`` are taken to the node's address
    (``ray.util.get_node_ip_address``) as Ray does; ``ray://host[:port]`` is a Ray Client
    server (port 10001)."""
    if address is None or address == "local":
        return None
    if address.startswith("ray://"):
        try:
            host, port = split_host_port(address, RAY_CLIENT_PORT)
        except ValueError as exc:
            return str(exc)
        return tcp_problem(host, port, timeout)
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if address in ("", "auto", "local"):
            return None
    try:
        host, port = split_host_port(address)
    except ValueError:
        return f"'{address}': expected host:port (the head's GCS, port {RAY_GCS_PORT} " \
               "by default), ray://host:port, or auto"
    if host in ("127.0.0.1", "localhost"):
        from ray.util import get_node_ip_address

        host = get_node_ip_address()
    return tcp_problem(host, port, timeout)
