"""Loopback ports for a federation whose endpoints are written down before its nodes bind.

The directory names every member's endpoint, so a port is chosen when the federation is
created and bound only later (after keys, data and indexes are made). A port taken from the
kernel with ``bind(0)`` comes from the ephemeral range, the same range outgoing connections
(PostgreSQL clients, gRPC channels, other tests' servers) draw their source ports from; in
between, one of them can take it, and the node then fails with ``BIND_FAILED`` (CI saw this
once). Ports are therefore drawn at random from below the ephemeral range, where the kernel
never hands out a port by itself, checked to be free now, and never handed out twice by one
process.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["free_port"]

_LOW = 20000
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()
_lock = threading.Lock()
_rng = random.SystemRandom()


def _ephemeral_start() -> int:
    try:
        first = int(_RANGE_FILE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768  # Linux default
    return first


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free now and outside the kernel's ephemeral range."""
    high = _ephemeral_start()
    with _lock:
        if high - _LOW >= 1000:
            for _ in range(200):
                port = _rng.randrange(_LOW, high)
                if port not in _given and _bindable(host, port):
                    _given.add(port)
                    return port
        # A machine whose ephemeral range starts low: let the kernel choose.
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        _given.add(port)
        return port
