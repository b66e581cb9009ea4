"""The provider's read side (issue 16 item 3), on SQLite and PostgreSQL: a Lookup reads the
hub's revocation serial and the index on one snapshot connection, so a build's swap that
commits in between is not seen half; the directory's policy index gives what a scan of the
policy gives; metric children are cached, not re-created."""

from __future__ import annotations

import datetime as dt
import json
import os
from itertools import product

import pytest
from sqlalchemy import update

from hedui.common.errors import Unavailable
from hedui.keys.directory import TrustedDirectory
from hedui.keys.signing import SigningKey
from hedui.node.metrics import Metrics
from hedui.node.verification import consent
from hedui.node.verification.consent_state import RevocationState
from hedui.node.verification.index_read import read_live, read_live_in, snapshot
from hedui.node.verification.index_tables import index_progress, token_index
from hedui.v1 import common_pb2, directory_pb2

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
HUB = SigningKey.generate("hub")
KEYS = {HUB.keyid: HUB.public}
TOK = b"\x07" * 64


def _index(engine) -> None:
    fact = {"name": "wage", "value": "10.00", "unit": "CNY", "on": "2026-05-01", "attrs": {}}
    with engine.begin() as c:
        c.execute(index_progress.insert(), {"epoch": 1, "source": "tax", "run": 1, "mode": "full", "status": "done",
                                            "fingerprint": "x", "rows_read": 1, "started_at": T0, "updated_at": T0,
                                            "completed_at": T0, "data_date": dt.date(2026, 6, 30), "live_gen": 1})
        c.execute(token_index.insert(), {"epoch": 1, "source": "tax", "token": TOK, "gen": 1, "part": 0, "row_count": 1,
                                         "facts": json.dumps({"t:id=1": [fact]})})


def test_a_lookups_reads_share_one_snapshot(engine):
    """The serial is the snapshot's first read; a swap committed after it (here: the source's
    live build withdrawn) is not seen by the index read of the same Lookup, and is by the next."""
    _index(engine)
    state = RevocationState(engine)
    state.apply("hub", KEYS, consent.sign_revocations(HUB, "hub", [os.urandom(32)], T0), T0)
    env = consent.sign_revocations(HUB, "hub", [os.urandom(32), os.urandom(32)], T0)   # serial 2: a write
    with snapshot(engine) as conn:
        with pytest.raises(Exception) as stale:   # no list at all: refused from the snapshot's serial (1)
            state.apply("hub", KEYS, common_pb2.Envelope(), T0, conn=conn)
        assert getattr(stale.value, "reason", None) == "REVOCATIONS_STALE"
        state.apply("hub", KEYS, env, T0, conn=conn)   # newer: written in a transaction of its own
        with engine.begin() as w:
            w.execute(update(index_progress).values(live_gen=None))
        live = read_live_in(conn, 1, [TOK, b"\x00" * 64], ["tax"])
    assert list(live.facts) == [TOK] and live.data_dates == {"tax": dt.date(2026, 6, 30)}
    assert [str(f.value) for f in live.facts[TOK]] == ["10.00"]
    assert state.serial("hub") == 2
    with pytest.raises(Unavailable) as e:
        read_live(engine, 1, [TOK], ["tax"])
    assert e.value.reason == "INDEX_NOT_READY"


def _rule(caller: str, provider: str, method: str, n: int) -> directory_pb2.AccessRule:
    return directory_pb2.AccessRule(caller=caller, provider=provider, method=method, per_minute=n)


def test_the_policy_index_gives_what_a_scan_gives():
    rules = [_rule(c, p, m, i) for i, (c, p, m) in enumerate(product(["hub", "ops"], ["tax", "*", "land"], ["L", "E"]))]
    rules += [_rule("hub", "tax", "L", 99), _rule("hub", "*", "L", 98)]   # several per key, in list order
    d = TrustedDirectory(common_pb2.Envelope(), directory_pb2.Directory(version=1, policy=rules))
    for caller, provider, method in product(["hub", "ops", "nobody"], ["tax", "land", "other"], ["L", "E", "X"]):
        want = [r for r in rules if r.caller == caller and r.provider in ("*", provider) and r.method == method]
        assert d.rules(caller, provider, method) == want


def test_signing_keys_of_one_member_are_its_part_of_all():
    keys = {c: SigningKey.generate(c) for c in ("hub", "tax")}
    msg = directory_pb2.Directory(version=1, members=[directory_pb2.Member(code=c, signing_key=k.public.raw)
                                                      for c, k in keys.items()])
    d = TrustedDirectory(common_pb2.Envelope(), msg)
    for c in keys:
        assert d.signing_keys_of(c) == {k: v for k, v in d.signing_keys().items() if v.owner == c} != {}
    assert d.signing_keys_of("nobody") == {}


def test_metric_children_are_cached_and_count():
    m = Metrics()
    a = m.child(m.calls, "/x", "OK")
    assert a is m.child(m.calls, "/x", "OK") is m.calls.labels("/x", "OK")
    assert m.child(m.outcomes, "served", "/x", "hub", "ok") is not a
    a.inc()
    m.child(m.calls, "/x", "OK").inc()
    assert m.registry.get_sample_value("hedui_rpc_total", {"method": "/x", "code": "OK"}) == 2
