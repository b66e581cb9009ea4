"""The testbed's port picker (node/testbed/ports.py): free, never twice, outside the range the
kernel hands out for outgoing connections (the CI failure of 2026-12-01: a node's port, chosen
at set-up, was taken as a source port before the node bound it)."""

from __future__ import annotations

import socket

from hedui.node.testbed import free_port
from hedui.node.testbed.ports import _ephemeral_start


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range():
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    start = _ephemeral_start()
    assert all(p < start for p in ports)
    for p in ports[:20]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_a_port_in_use_is_never_given(monkeypatch):
    from hedui.node.testbed import ports

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        busy = held.getsockname()[1]
        spare = free_port()
        ports._given.discard(spare)
        # The picker draws the busy port first: it must skip it and give the next free one.
        draws = iter([busy, spare])
        monkeypatch.setattr(ports._rng, "randrange", lambda lo, hi: next(draws))
        monkeypatch.setattr(ports, "_ephemeral_start", lambda: 65000)
        assert ports.free_port() == spare
