"""The demo's steps, as a library (the CLI prints them; tests assert on the summary)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from hedui.node.client import PeerClient
from hedui.node.testbed import DEFAULT_MEMBERS, MemberPlan, Testbed
from hedui.v1 import node_pb2

__all__ = ["run_demo"]


def run_demo(root: Path, say: Callable = print) -> dict:
    steps: list[dict] = []

    def step(name: str, result: str) -> None:
        steps.append({"name": name, "result": result})
        say(f"[bold cyan]•[/] {name}: {result}")

    members = [MemberPlan(m.code, m.name, list(m.roles), m.region) for m in DEFAULT_MEMBERS]
    tb = Testbed(root, members)
    tb.create()
    step("federation", f"CA, {len(members)} members, directory v{tb.version} signed")
    with tb:
        tb.start()
        step("nodes", ", ".join(f"{c}@127.0.0.1:{tb.servers[c].port}" for c in tb.servers))
        pings = _mtls_matrix(tb)
        step("mTLS", f"{pings} authenticated pings (hub↔departments), each side identified by certificate + directory")
        for extend in DEMO_STEPS:
            extend(tb, step)
    step("stop", "all nodes stopped")
    return {"steps": steps, "members": [m.code for m in members]}


def _mtls_matrix(tb: Testbed) -> int:
    hub = tb.runtime("hub")
    n = 0
    for code in tb.servers:
        if code == "hub":
            continue
        with PeerClient.to_member(hub, code) as c:
            r = c.node.Ping(node_pb2.PingRequest(nonce=os.urandom(8)), timeout=10)
            assert r.member == code and r.caller == "hub", (r.member, r.caller)
            n += 1
        with PeerClient.to_member(tb.runtime(code), "hub") as c:
            r = c.node.Ping(node_pb2.PingRequest(nonce=os.urandom(8)), timeout=10)
            assert r.member == "hub" and r.caller == code
            n += 1
    return n


# Later flows append (testbed, step) callables here.
DEMO_STEPS: list[Callable] = []


# Active discovery: detection at several departments, push, leads, referrals, escalation.
from hedui.node.demo_discovery import discovery_step as _discovery_step  # noqa: E402

DEMO_STEPS.append(_discovery_step)
