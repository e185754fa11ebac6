"""Loopback ports for the servers tests start, safe while other tests run beside them (``pytest -n``).

Asked for port 0, the kernel hands out a port from its ephemeral range, the range every outgoing
connection (every test's HTTP client) also takes its local port from. A probe that found such a
port free and closed it leaves a window: before the server binds it, a client of a test running
beside it may take it, and the server fails to start ("address already in use"). So:

- a server in this process binds its socket first and hands it to uvicorn (``listening_socket``):
  the port is the server's from the start, and the kernel gives no outgoing connection a bound port;
- a server in another process, which takes a port number, gets one below the ephemeral range
  (``free_port``), which the kernel never picks on its own, from a share of that range of its own
  for each pytest-xdist worker, so two workers never pick the same one.
"""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

_LOWEST = 10_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _worker_share() -> tuple[int, int]:
    """This pytest-xdist worker's index and the number of workers (0 and 1 without xdist)."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(name[2:]) if name.startswith("gw") and name[2:].isdigit() else 0
    return index % max(count, 1), max(count, 1)


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nothing listens on now, for a server started in another process (never the
    same one twice in a process). Where the ephemeral range leaves no room below it (it starts at
    1024 on some machines), a port the kernel picks, as before."""
    end = _ephemeral_start()
    index, count = _worker_share()
    candidates = [port for port in range(_LOWEST, end) if port % count == index and port not in _handed_out]
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def listening_socket() -> socket.socket:
    """A socket bound to a loopback port, for a server in this process (uvicorn ``run(sockets=…)``)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
