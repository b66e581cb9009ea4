"""A provider's durable consent state (issue 18c), on SQLite and PostgreSQL with fixed times.

Revocations learned from a hub's lists survive a restart (a new state over the same store):
an older list is still refused, and a digest once revoked stays revoked even when a later
list omits it. Authorisation use: a periodic one at most once per ``min_interval_days``, a
one-off one for one case and at most ``max_members`` distinct people over all its uses.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from hedui.common.errors import HeduiError
from hedui.keys.signing import SigningKey
from hedui.node.errors import PermissionDenied
from hedui.node.verification import consent
from hedui.node.verification.consent_state import RevocationState, check_use
from hedui.node.verification.consent_tables import consent_uses
from hedui.v1 import common_pb2

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
HUB = SigningKey.generate("hub")
KEYS = {HUB.keyid: HUB.public}
SCAN = hashlib.sha256(b"scan").digest()
TOKENS = [hashlib.sha512(b"member %d" % i).digest() for i in range(6)]


def _record(purpose: str = "dibao", *, case_ref: str = "HUB-2026-000001", members: int = 2) -> tuple[common_pb2.ConsentRecord, bytes]:
    env = consent.issue(HUB, hub="hub", scan_digest=SCAN, purpose=purpose, case_ref=case_ref, max_members=members,
                        issued_at=T0, operator="cw01")
    return common_pb2.ConsentRecord.FromString(env.payload), consent.consent_digest(env)


def _use(engine, rec, digest, tokens, at, *, case_ref=None, epoch=1):
    with engine.begin() as c:
        check_use(c, "hub", rec, digest, case_ref or rec.case_ref, epoch, tokens, at, record=True)


def _row(engine):
    with engine.connect() as c:
        return c.execute(select(consent_uses)).all()


# -- revocations -------------------------------------------------------------------------------


def test_revocations_survive_a_restart_and_an_older_list_is_still_refused(engine):
    a, b = os.urandom(32), os.urandom(32)
    RevocationState(engine).apply("hub", KEYS, consent.sign_revocations(HUB, "hub", [a, b], T0), T0)
    after = RevocationState(engine)  # the provider restarted: a new state over the same store
    assert after.is_revoked("hub", a) and after.is_revoked("hub", b) and after.serial("hub") == 2
    assert not after.is_revoked("other-hub", a)
    for stale in (consent.sign_revocations(HUB, "hub", [a], T0), common_pb2.Envelope()):
        with pytest.raises(PermissionDenied) as e:
            after.apply("hub", KEYS, stale, T0)
        assert e.value.reason == "REVOCATIONS_STALE"


def test_a_later_list_that_omits_a_digest_does_not_unrevoke_it(engine):
    a, b, c, d = (os.urandom(32) for _ in range(4))
    state = RevocationState(engine)
    state.apply("hub", KEYS, consent.sign_revocations(HUB, "hub", [a, b], T0), T0)
    state.apply("hub", KEYS, consent.sign_revocations(HUB, "hub", [b, c, d], T0), T0)
    assert all(state.is_revoked("hub", x) for x in (a, b, c, d)) and state.serial("hub") == 3


def test_a_list_of_the_same_serial_writes_nothing_and_a_bad_one_is_refused(engine):
    a = os.urandom(32)
    state = RevocationState(engine)
    env = consent.sign_revocations(HUB, "hub", [a], T0)
    state.apply("hub", KEYS, env, T0)
    state.apply("hub", KEYS, env, T0 + dt.timedelta(days=1))
    with pytest.raises(HeduiError) as e:  # serial that is not the count of distinct digests
        lst = common_pb2.ConsentRevocations(hub="hub", serial=5, revoked=[a, a])
        from hedui.keys import dsse

        state.apply("hub", KEYS, dsse.sign(dsse.REVOCATIONS, lst.SerializeToString(), [HUB]), T0)
    assert e.value.reason == "CONSENT_INVALID"
    assert state.serial("hub") == 1


# -- use ---------------------------------------------------------------------------------------


def test_a_periodic_authorisation_is_used_at_most_once_per_interval(engine):
    rec, digest = _record("periodic_review")
    assert rec.use == common_pb2.CONSENT_USE_PERIODIC and rec.min_interval_days == consent.PERIODIC_INTERVAL_DAYS
    _use(engine, rec, digest, TOKENS[:2], T0)
    for too_soon in (T0 + dt.timedelta(seconds=1), T0 + dt.timedelta(days=27, hours=23, minutes=59)):
        with pytest.raises(PermissionDenied) as e:
            _use(engine, rec, digest, TOKENS[:2], too_soon)
        assert e.value.reason == "CONSENT_TOO_SOON"
    # A new case (a new record) under the same authorisation is held to the same period.
    rec2, digest2 = _record("periodic_review", case_ref="HUB-2026-000009")
    with pytest.raises(PermissionDenied) as e:
        _use(engine, rec2, digest2, TOKENS[:2], T0 + dt.timedelta(days=10))
    assert e.value.reason == "CONSENT_TOO_SOON"
    [row] = _row(engine)
    assert row.uses == 1  # a refused use left nothing behind
    _use(engine, rec2, digest2, TOKENS[:2], T0 + dt.timedelta(days=28))
    [row] = _row(engine)
    assert (row.uses, row.case_ref) == (2, "HUB-2026-000009")
    with pytest.raises(PermissionDenied) as e:
        _use(engine, rec2, digest2, TOKENS[:2], T0 + dt.timedelta(days=30))
    assert e.value.reason == "CONSENT_TOO_SOON"


def test_a_one_off_authorisation_serves_one_case_and_its_members_only(engine):
    rec, digest = _record("dibao", members=2)
    _use(engine, rec, digest, TOKENS[:1], T0)
    _use(engine, rec, digest, TOKENS[:2], T0 + dt.timedelta(hours=1))  # the same case again: fine
    with pytest.raises(PermissionDenied) as e:  # a third person, over two uses
        _use(engine, rec, digest, TOKENS[2:3], T0 + dt.timedelta(hours=2))
    assert e.value.reason == "CONSENT_REUSED"
    other, other_digest = _record("dibao", case_ref="HUB-2026-000002")
    with pytest.raises(PermissionDenied) as e:  # the same authorisation for another case
        _use(engine, other, other_digest, TOKENS[:2], T0 + dt.timedelta(hours=3))
    assert e.value.reason == "CONSENT_REUSED" and "HUB-2026-000001" in e.value.message
    # Members are counted per key epoch: the same two people under a new epoch's tokens.
    _use(engine, rec, digest, [hashlib.sha512(t).digest() for t in TOKENS[:2]], T0 + dt.timedelta(hours=4), epoch=2)
    [row] = _row(engine)
    assert row.uses == 3 and len(bytes(row.members)) == 4 * 36


def test_the_read_only_check_refuses_without_writing(engine):
    rec, digest = _record("periodic_review")
    with engine.connect() as c:
        check_use(c, "hub", rec, digest, rec.case_ref, 1, TOKENS[:2], T0, record=False)
    assert _row(engine) == []
    _use(engine, rec, digest, TOKENS[:2], T0)
    with engine.connect() as c, pytest.raises(PermissionDenied) as e:
        check_use(c, "hub", rec, digest, rec.case_ref, 1, TOKENS[:2], T0 + dt.timedelta(days=1), record=False)
    assert e.value.reason == "CONSENT_TOO_SOON"


_STEP = st.tuples(st.integers(0, 40), st.sets(st.integers(0, 5), min_size=1, max_size=3), st.sampled_from(["A", "B"]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["dibao", "periodic_review"]), st.lists(_STEP, min_size=1, max_size=8))
def test_whatever_the_requests_the_accepted_uses_keep_the_rules(tmp_path, kind, steps):
    """Any sequence of requests (days apart, member subsets, two cases): each is accepted or
    refused with a ``CONSENT_*`` reason, and the accepted ones never exceed the record's
    members, never span two cases when one-off, never come sooner than the interval."""
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine

    eng = open_engine(f"sqlite:///{tmp_path / (os.urandom(6).hex() + '.db')}")
    migrate.upgrade(eng)
    try:
        at, accepted = T0, []
        for days, who, case in steps:
            at = at + dt.timedelta(days=days)
            rec, digest = _record(kind, case_ref=f"HUB-2026-00000{'1' if case == 'A' else '2'}", members=3)
            try:
                _use(eng, rec, digest, [TOKENS[i] for i in who], at)
                accepted.append((at, who, case))
            except PermissionDenied as exc:
                assert exc.reason in ("CONSENT_REUSED", "CONSENT_TOO_SOON")
        assert len(set().union(*[w for _, w, _ in accepted] or [set()])) <= 3
        if kind == "dibao":
            assert len({c for _, _, c in accepted}) <= 1
        else:
            times = [t for t, _, _ in accepted]
            assert all(b - a >= dt.timedelta(days=consent.PERIODIC_INTERVAL_DAYS) for a, b in zip(times, times[1:], strict=False))
    finally:
        eng.dispose()


def test_two_concurrent_uses_of_a_periodic_authorisation_cannot_both_succeed(engine):
    """The row is taken locked in the answer's transaction: a second request that arrives
    while the first is still committing waits for it, then sees the use and is refused."""
    import threading

    rec, digest = _record("periodic_review")
    _use(engine, rec, digest, TOKENS[:2], T0)  # an existing row: the lock, not the insert, must serialise
    due = T0 + dt.timedelta(days=consent.PERIODIC_INTERVAL_DAYS)
    first_in, release = threading.Event(), threading.Event()
    outcome: dict[str, str] = {}

    def first() -> None:
        with engine.begin() as c:
            check_use(c, "hub", rec, digest, rec.case_ref, 1, TOKENS[:2], due, record=True)
            first_in.set()
            release.wait(10)
        outcome["first"] = "ok"

    def second() -> None:
        first_in.wait(10)
        try:
            _use(engine, rec, digest, TOKENS[:2], due + dt.timedelta(minutes=1))
            outcome["second"] = "ok"
        except PermissionDenied as exc:
            outcome["second"] = exc.reason

    a, b = threading.Thread(target=first), threading.Thread(target=second)
    a.start()
    b.start()
    first_in.wait(10)
    b.join(0.5)  # the second is now waiting for the first's lock (or about to)
    release.set()
    a.join(20)
    b.join(20)
    assert outcome == {"first": "ok", "second": "CONSENT_TOO_SOON"}
    [row] = _row(engine)
    assert row.uses == 2
