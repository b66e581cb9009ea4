"""A hub's signed revocation list, sent with every request (issue 18), verified once per
provider (issue 16): the hub sends the same signed list while its content is unchanged (up
to ``LIST_REUSE`` of its clock) and signs anew at once when a consent is revoked; a provider
verifies a given list under given keys once — a forged copy, the same bytes under other
keys, a list of another hub, an older list are all refused as before. On SQLite and
PostgreSQL (the stored serial is read on every request)."""

from __future__ import annotations

import datetime as dt
import os

import pytest

from hedui.keys import dsse
from hedui.keys.signing import SigningKey
from hedui.node.errors import PermissionDenied
from hedui.node.verification import consent, consent_state
from hedui.node.verification.consent_state import RevocationState
from hedui.v1 import common_pb2

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
HUB = SigningKey.generate("hub")
KEYS = {HUB.keyid: HUB.public}


def test_the_hub_sends_one_signed_list_until_it_changes_or_ages():
    a, b = os.urandom(32), os.urandom(32)
    first = consent.current_revocations(HUB, "hub", [a], T0)
    assert consent.current_revocations(HUB, "hub", [a], T0 + dt.timedelta(seconds=59)) is first
    # A revocation: a new list at once, with the new serial.
    changed = consent.current_revocations(HUB, "hub", [a, b], T0 + dt.timedelta(seconds=1))
    assert common_pb2.ConsentRevocations.FromString(changed.payload).serial == 2
    # Signed anew once it is LIST_REUSE old, or when the clock went back.
    later = consent.current_revocations(HUB, "hub", [a], T0 + consent.LIST_REUSE)
    assert later is not first and later.payload != first.payload
    assert consent.current_revocations(HUB, "hub", [a], T0 - dt.timedelta(seconds=1)) is not later
    other = SigningKey.generate("hub")   # another key (rotated): its own list
    assert consent.current_revocations(other, "hub", [a], T0 + consent.LIST_REUSE) is not later


def test_a_provider_verifies_a_list_once_and_refuses_what_it_refused_before(engine, monkeypatch):
    a = os.urandom(32)
    state = RevocationState(engine)
    env = consent.sign_revocations(HUB, "hub", [a], T0)
    calls = []
    real = consent_state.verified_payload

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)

    monkeypatch.setattr(consent_state, "verified_payload", counted)
    for _ in range(3):
        state.apply("hub", KEYS, env, T0)
    assert len(calls) == 1 and state.serial("hub") == 1 and state.is_revoked("hub", a)
    # The same payload with a signature that does not verify: other bytes, verified, refused.
    forged = common_pb2.Envelope()
    forged.CopyFrom(env)
    forged.signatures[0].sig = bytes(64)
    with pytest.raises(PermissionDenied) as e:
        state.apply("hub", KEYS, forged, T0)
    assert e.value.reason == "CONSENT_FORGED"
    # The very bytes verified before, under keys that do not include the signer: refused.
    stranger = SigningKey.generate("hub")
    with pytest.raises(PermissionDenied) as e:
        state.apply("hub", {stranger.keyid: stranger.public}, env, T0)
    assert e.value.reason == "CONSENT_FORGED"
    # Verified for one hub, sent as another's list: refused.
    with pytest.raises(PermissionDenied) as e:
        state.apply("other", KEYS, env, T0)
    assert e.value.reason == "CONSENT_FORGED"
    # A newer list, then the cached older one again: stale, whatever the cache holds.
    state.apply("hub", KEYS, consent.sign_revocations(HUB, "hub", [a, os.urandom(32)], T0), T0)
    with pytest.raises(PermissionDenied) as e:
        state.apply("hub", KEYS, env, T0)
    assert e.value.reason == "REVOCATIONS_STALE"
    # A list that does not verify is never kept: the same bytes are checked again each time.
    before = len(calls)
    for _ in range(2):
        with pytest.raises(PermissionDenied):
            state.apply("hub", KEYS, forged, T0)
    assert len(calls) == before + 2
    assert dsse.REVOCATIONS == env.payload_type


def test_a_first_use_is_one_statement_and_stores_what_the_row_path_stores(engine):
    """The first use of an authorisation writes its row whole in one statement; a second use
    (a re-run of the same one-off case) finds the row and goes through it as before."""
    import hashlib

    from sqlalchemy import event, select

    from hedui.node.verification.consent_state import check_use, member_entries
    from hedui.node.verification.consent_tables import consent_uses

    env = consent.issue(HUB, hub="hub", scan_digest=hashlib.sha256(b"scan").digest(), purpose="dibao",
                        case_ref="HUB-2026-000001", max_members=2, issued_at=T0, operator="cw01")
    rec, digest = common_pb2.ConsentRecord.FromString(env.payload), consent.consent_digest(env)
    tokens = [hashlib.sha512(b"member %d" % i).digest() for i in range(2)]
    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cur, sql, *a: statements.append(sql.split()[0]))

    def use(at, month):
        with engine.begin() as c:
            check_use(c, "hub", rec, digest, rec.case_ref, 1, tokens, at, reference_month=month, record=True)

    use(T0, "2026-06")
    assert statements == ["INSERT"]
    with engine.connect() as c:
        row = c.execute(select(consent_uses)).one()
    assert (row.uses, row.case_ref, bytes(row.record_digest), row.reference_month) == (1, rec.case_ref, digest, "2026-06")
    assert consent_state._utc(row.first_used_at) == T0 == consent_state._utc(row.last_used_at)
    assert bytes(row.members) == b"".join(sorted(member_entries(1, tokens)))
    statements.clear()
    use(T0 + dt.timedelta(hours=1), "2026-07")   # the same case again, another month: a second use
    assert statements == ["INSERT", "INSERT", "UPDATE"]
    with engine.connect() as c:
        row = c.execute(select(consent_uses)).one()
    assert (row.uses, row.reference_month) == (2, "2026-07") and consent_state._utc(row.first_used_at) == T0
