"""Member replicas in the directory (issue 16 item 6): ``replica_endpoints`` in the spec and
the signed directory, the balanced gRPC target, and the pin checked on every replica."""

from __future__ import annotations

import json

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from hedui.keys.directory import MemberSpec
from hedui.node.client import balanced_target
from hedui.node.pinning import PinError, PinningInterceptor

GOOD, BAD = b"\x01" * 32, b"\x02" * 32


def _spec(**kw) -> dict:
    return {"code": "tax", "name": "tax", "endpoint": "10.0.0.1:7000", "cert": "c.crt", "signing_key": "s.pub",
            "roles": ["provider"], **kw}


def test_one_endpoint_keeps_the_plain_target():
    assert balanced_target("10.0.0.1:7000", ()) == ("10.0.0.1:7000", [])


def test_replicas_make_one_round_robin_target_checked_against_the_endpoint_host():
    target, opts = balanced_target("127.0.0.1:7000", ["127.0.0.2:7001", "localhost:7002"])
    assert target.startswith("ipv4:127.0.0.1:7000,127.0.0.2:7001,")
    assert "127.0.0.1:7002" in target                     # a name is resolved to its addresses
    o = dict(opts)
    assert json.loads(o["grpc.service_config"]) == {"loadBalancingConfig": [{"round_robin": {}}]}
    assert o["grpc.ssl_target_name_override"] == "127.0.0.1" and o["grpc.default_authority"] == "127.0.0.1:7000"


def test_spec_refuses_bad_or_repeated_replicas():
    assert MemberSpec.model_validate(_spec(replica_endpoints=["10.0.0.2:7000"])).replica_endpoints == ["10.0.0.2:7000"]
    for bad in (["10.0.0.2"], ["10.0.0.2:0"], [":7000"], ["10.0.0.2:7000", "10.0.0.2:7000"], ["h:99999"]):
        with pytest.raises(ValidationError):
            MemberSpec.model_validate(_spec(replica_endpoints=bad))


@given(st.lists(st.text(max_size=30), max_size=5))
@settings(max_examples=200, deadline=None)
def test_any_replica_list_is_accepted_only_as_distinct_host_ports(v):
    try:
        got = MemberSpec.model_validate(_spec(replica_endpoints=v)).replica_endpoints
    except ValidationError:
        return
    assert len(set(got)) == len(got)
    for e in got:
        host, _, port = e.rpartition(":")
        assert host and 1 <= int(port) <= 65535


class _Probe:
    def __init__(self, answers: dict[str, bytes | None]) -> None:
        self.answers, self.calls = answers, []

    def __call__(self, endpoint: str, ca: bytes) -> bytes:
        self.calls.append(endpoint)
        got = self.answers[endpoint]
        if got is None:
            raise ConnectionRefusedError(endpoint)
        return got


def _pin(probe, replicas=("b:2", "c:3")):
    return PinningInterceptor("tax", "a:1", b"", lambda: GOOD, probe, replicas=tuple(replicas))


def test_every_replica_is_pinned_once():
    probe = _Probe({"a:1": GOOD, "b:2": GOOD, "c:3": GOOD})
    pin = _pin(probe)
    pin.check()
    pin.check()
    assert probe.calls == ["a:1", "b:2", "c:3"]


def test_a_replica_with_another_certificate_fails_the_channel():
    pin = _pin(_Probe({"a:1": GOOD, "b:2": BAD, "c:3": GOOD}))
    with pytest.raises(PinError) as e:
        pin.check()
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED and "SERVER_NOT_PINNED: tax at b:2" in e.value.details()


def test_a_replica_that_is_down_does_not_stop_calls_and_is_pinned_when_it_answers():
    probe = _Probe({"a:1": GOOD, "b:2": None, "c:3": GOOD})
    pin = _pin(probe)
    pin.check()                                   # a and c passed: calls go on
    assert probe.calls == ["a:1", "b:2", "c:3"]
    pin.check()                                   # within the retry delay: no probe
    assert len(probe.calls) == 3
    pin._retry_at = 0.0                           # the delay is over
    probe.answers["b:2"] = BAD                    # what came up at b presents another certificate
    with pytest.raises(PinError, match="SERVER_NOT_PINNED: tax at b:2"):
        pin.check()
    probe.answers["b:2"] = GOOD
    pin.check()
    assert probe.calls[-1] == "b:2"
    n = len(probe.calls)
    pin._retry_at = 0.0
    pin.check()                                   # everything pinned: never probed again
    assert len(probe.calls) == n


def test_no_replica_reachable_is_unavailable_and_not_cached():
    probe = _Probe({"a:1": None, "b:2": None, "c:3": None})
    pin = _pin(probe)
    for _ in range(2):
        with pytest.raises(PinError) as e:
            pin.check()
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "2 replica(s)" in e.value.details()
    assert len(probe.calls) == 6


def _node_config(store: dict):
    from hedui.node.config import NodeConfig

    return NodeConfig.model_validate({
        "node": {"member": "tax", "roles": ["provider"]}, "tls": {"cert": "c", "key": "k", "ca": "ca"},
        "keys": {"signing": "s"}, "directory": {"path": "d", "authority_key": "a"}, "provider": {}, "store": store})


def test_read_replica_is_postgresql_only():
    from hedui.node.errors import ConfigError

    pg = "postgresql://hedui@db/hedui"
    assert _node_config({"url": pg}).read_store_url() is None
    assert _node_config({"url": pg, "read_database_url": pg + "-replica"}).read_store_url() == pg + "-replica"
    for store in ({"url": "sqlite:///n.db", "read_database_url": pg}, {"url": pg, "read_database_url": "sqlite:///r.db"}):
        with pytest.raises(ConfigError, match="read_database_url"):
            _node_config(store).read_store_url()
    for bad in (0, 257):
        with pytest.raises(ValidationError):
            _node_config({"index_partitions": bad})
