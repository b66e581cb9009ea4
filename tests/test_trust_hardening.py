"""Issue 18, finding 6, reproduced as attacks and refused: a second directory under an
accepted version number (split view), the replay cache keeping every signed answer forever,
and a hostile provider's bad OPRF proof flooding the hub's stderr with a Rust panic trace.
Storage tests run on SQLite and PostgreSQL; expectations are read back with straight SQL."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from types import SimpleNamespace

import pytest
from sqlalchemy import text

from hedui.common.clock import FixedClock
from hedui.keys import oprf
from hedui.node import policy
from hedui.node.errors import ConfigError, PermissionDenied, Reason
from hedui.node.store.db import open_engine
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import common_pb2, directory_pb2

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)


# ---------------------------------------------------------------- split view


@pytest.fixture
def bed(tmp_path, monkeypatch, store_url):
    plan = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])]
    tb = Testbed(tmp_path / "fed", plan, clock=FixedClock(NOW), store=lambda code: store_url)
    tb.create()
    monkeypatch.setenv("HEDUI_KEY_PASSPHRASE", tb.passphrase)
    return tb, store_url


def _admin_entries(url: str) -> list[dict]:
    eng = open_engine(url)
    try:
        with eng.connect() as c:
            rows = c.execute(text("SELECT entry FROM audit_entries ORDER BY seq")).scalars().all()
    finally:
        eng.dispose()
    return [e for e in (json.loads(bytes(r).decode()) for r in rows) if e.get("kind") == "admin"]


def _state(url: str, key: str):
    eng = open_engine(url)
    try:
        with eng.connect() as c:
            return c.execute(text("SELECT value FROM node_state WHERE key = :k"), {"k": key}).scalar()
    finally:
        eng.dispose()


def test_same_version_other_content_is_refused_and_audited(bed, caplog):
    from hedui.node.runtime import Runtime

    tb, url = bed
    Runtime.open(tb.config_path("tax"), clock=tb.clock).close()  # accepts v1
    genuine = tb.directory_path.read_bytes()
    # The attack: the authority's key signs a second v1 (here: another expiry) for this node.
    tb.valid_days = 20
    tb.sign_directory()
    with caplog.at_level(logging.ERROR, logger="hedui.node"), pytest.raises(ConfigError) as e:
        Runtime.open(tb.config_path("tax"), clock=tb.clock)
    assert e.value.reason == Reason.DIRECTORY_SPLIT_VIEW and "possible split view" in e.value.message
    assert any("possible split view" in r.getMessage() for r in caplog.records)
    assert _state(url, "directory_split_view") is not None
    # Back on the genuine v1: the node starts, and its audit log says what it refused.
    tb.directory_path.write_bytes(genuine)
    Runtime.open(tb.config_path("tax"), clock=tb.clock).close()
    admin = [a for a in _admin_entries(url) if a["fields"].get("action") == "directory.split_view_refused"]
    assert len(admin) == 1 and admin[0]["fields"]["version"] == 1
    assert admin[0]["fields"]["accepted_digest"] != admin[0]["fields"]["refused_digest"]
    assert _state(url, "directory_split_view") is None
    # A newer version is still accepted as before.
    tb.version = 2
    tb.sign_directory()
    Runtime.open(tb.config_path("tax"), clock=tb.clock).close()


# ---------------------------------------------------------------- replay cache retention


def _rt(engine, clock, hours=24):
    cfg = SimpleNamespace(provider=SimpleNamespace(replay_window_hours=hours))
    return SimpleNamespace(engine=engine, clock=clock, config=cfg)


def _ctx(rid: bytes) -> common_pb2.RequestContext:
    return common_pb2.RequestContext(request_id=rid, purpose=common_pb2.PURPOSE_DIBAO, case_ref="C-1")


def _count(engine) -> int:
    with engine.connect() as c:
        return int(c.execute(text("SELECT COUNT(*) FROM seen_requests")).scalar_one())


def test_replay_cache_entries_expire_after_the_window(engine):
    clock = FixedClock(NOW)
    rt = _rt(engine, clock)
    grant = policy.Grant((directory_pb2.AccessRule(),))
    first, digest = os.urandom(16), b"d" * 32
    policy.commit(rt, "hub", "Lookup", _ctx(first), grant, digest, b"signed answer 1")
    # A retry within the window gets the same signed answer; another request under the id is a replay.
    clock.advance(_dt.timedelta(hours=23))
    assert policy._replay(rt, "hub", "Lookup", _ctx(first), digest) == b"signed answer 1"
    with pytest.raises(PermissionDenied) as e:
        policy._replay(rt, "hub", "Lookup", _ctx(first), b"x" * 32)
    assert e.value.reason == Reason.REPLAYED_REQUEST
    # Past the window the entry, with the answer it cached, is gone: pruned by the next commit...
    clock.advance(_dt.timedelta(hours=2))
    policy.commit(rt, "hub", "Lookup", _ctx(os.urandom(16)), grant, digest, b"signed answer 2")
    assert _count(engine) == 1
    with engine.connect() as c:
        assert c.execute(text("SELECT COUNT(*) FROM seen_requests WHERE answer = :a"), {"a": b"signed answer 1"}).scalar_one() == 0
    # ...or dropped when looked up before any commit prunes it.
    third = os.urandom(16)
    policy.commit(rt, "hub", "Lookup", _ctx(third), grant, digest, b"signed answer 3")
    clock.advance(_dt.timedelta(hours=24, seconds=1))
    assert policy._replay(rt, "hub", "Lookup", _ctx(third), digest) is None
    assert _count(engine) == 1  # only answer 2's entry (pruned at the next commit)


def test_replay_window_is_configured_and_bounded():
    from pydantic import ValidationError

    from hedui.node.config import ProviderSection

    assert ProviderSection().replay_window_hours == 24
    with pytest.raises(ValidationError):
        ProviderSection(replay_window_hours=0)


# ---------------------------------------------------------------- bad OPRF proof


def test_bad_proof_is_a_typed_error_without_a_foreign_trace(capfd):
    key = oprf.ServerKey.derive(b"a" * 32, 1)
    other = oprf.ServerKey.derive(b"b" * 32, 1)
    from hedui.adapters.synthetic import resident

    state = oprf.blind([resident(1, 7).id_number, resident(2, 7).id_number])
    elements, proof = key.evaluate_batch(state.blinded)
    os.write(2, b"before\n")
    for _ in range(3):  # a hostile provider answering every request with a bad proof
        with pytest.raises(oprf.OprfProofError) as e:
            oprf.finalize(state, elements, proof, other.public_key_bytes)
        assert e.value.reason == Reason.BAD_PROOF
    with pytest.raises(oprf.InvalidBlindedElement):
        key.evaluate_batch([b"\xff" * 32])
    os.write(2, b"after\n")
    err = capfd.readouterr().err
    assert "panicked" not in err and "stack backtrace" not in err and "ProofVerification" not in err
    assert err == "before\nafter\n"  # what else went to stderr is kept, in order


def test_the_guard_keeps_one_sink_and_empties_it_after_each_call(capfd):
    """Issue 16: one sink per process for the guard's fd-2 swap; what another writer put on
    fd 2 during a guarded call reaches stderr once, in order, and is not repeated by the next."""
    from hedui.keys.oprf import _no_foreign_panic_report

    for i in range(3):
        with _no_foreign_panic_report():
            os.write(2, b"line %d\n\nthread 'x' panicked at src/a.rs:1:2:\nboom\n" % i)
    err = capfd.readouterr().err
    assert err == "line 0\nline 1\nline 2\n"
    from hedui.keys import oprf as mod

    assert mod._SINK is not None and mod._SINK[0] == os.getpid()


def test_bad_proof_at_the_hub_logs_one_line(tmp_path, monkeypatch, caplog, capfd):
    """A hostile provider answers with evaluations under another key than the directory lists:
    the case records bad_proof (audited), the hub logs one line, and stderr has no trace."""
    from hedui.adapters.synthetic import resident
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case

    plan = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])]
    tb = Testbed(tmp_path / "fed", plan, residents=40, data_seed=7, clock=FixedClock(NOW))
    tb.create()
    monkeypatch.setenv("HEDUI_KEY_PASSPHRASE", tb.passphrase)
    tb.build_indexes()
    tb.start()
    try:
        rogue = oprf.ServerKey.derive(b"r" * 32, 1)
        real = oprf.ServerKey.evaluate_batch
        monkeypatch.setattr(oprf.ServerKey, "evaluate_batch", lambda self, blinded: real(rogue, blinded))
        hub = tb.runtime("hub")
        capfd.readouterr()
        with caplog.at_level(logging.WARNING):
            for i in range(2):  # a new authorisation per case: a one-off one serves one case (issue 18d)
                ref = open_case(hub, [(resident(1, 7).id_number, "m")], purpose="dibao",
                                consent_digest=consent_digest_of(b"auth %d" % i), operator="cw", region="370304")
                res = run_case(hub, ref)
                assert [(o.provider, o.status) for o in res.outcomes] == [("tax", "bad_proof")]
        lines = [r.getMessage() for r in caplog.records if "bad_proof" in r.getMessage()]
        assert len(lines) == 2 and all("BAD_PROOF" in m for m in lines)  # one per failure
        err = capfd.readouterr().err
        assert "panicked" not in err and "stack backtrace" not in err
    finally:
        tb.stop()
