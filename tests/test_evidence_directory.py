"""Evidence checks use the directory in force at the answer's signed time (issue 18 part B,
item 5), reproduced as attacks: an answer signed with a provider key the authority had
already replaced, checked under the older directory the hub names; an answer signed after
the directory in force expired."""

from __future__ import annotations

import datetime as dt
import hashlib
from types import SimpleNamespace

from hedui.keys import dsse
from hedui.keys.directory import sign_directory
from hedui.keys.signing import SigningKey
from hedui.node.verification.evidence import directory_in_force_error
from hedui.v1 import directory_pb2, lookup_pb2

T0 = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
AUTH = SigningKey.generate("authority")
OLD, NEW = SigningKey.generate("tax"), SigningKey.generate("tax")
TOKENS = [bytes([i]) * 64 for i in range(2)]
DIGEST = hashlib.sha256(b"request").digest()


def _dir(version: int, issued: dt.datetime, key: SigningKey, days: int = 30) -> bytes:
    d = directory_pb2.Directory(version=version, federation="fed")
    d.issued_at.FromDatetime(issued)
    d.expires_at.FromDatetime(issued + dt.timedelta(days=days))
    d.members.add(code="tax", signing_key=key.public.raw)
    return sign_directory(d, AUTH).SerializeToString(deterministic=True)


def _row(signer: SigningKey, at: dt.datetime, version: int):
    a = lookup_pb2.LookupAnswer(provider="tax", request_digest=DIGEST, directory_version=version)
    a.issued_at.FromDatetime(at)
    for t in TOKENS:
        a.members.add(token=t)
    env = dsse.sign(dsse.ANSWER, a.SerializeToString(deterministic=True), [signer])
    row = SimpleNamespace(provider="tax", directory_version=version, tokens=b"".join(TOKENS), request_digest=DIGEST,
                          envelope=env.SerializeToString(deterministic=True))
    return row, a


DIRS = {1: _dir(1, T0, OLD), 2: _dir(2, T0 + dt.timedelta(days=10), NEW)}


def test_answer_under_the_directory_in_force_is_accepted():
    row, ans = _row(OLD, T0 + dt.timedelta(days=5), 1)
    assert directory_in_force_error(DIRS, row, ans, AUTH.public) == ""
    row, ans = _row(NEW, T0 + dt.timedelta(days=12), 2)
    assert directory_in_force_error(DIRS, row, ans, AUTH.public) == ""


def test_a_replaced_key_checked_under_the_old_directory_is_refused():
    # Signed on day 15 with the key v2 (day 10) replaced; the hub's evidence names v1,
    # under which the signature does verify.
    row, ans = _row(OLD, T0 + dt.timedelta(days=15), 1)
    assert directory_in_force_error(DIRS, row, ans, AUTH.public).startswith("DIRECTORY_NOT_IN_FORCE")


def test_an_answer_signed_after_the_directory_expired_is_refused():
    row, ans = _row(OLD, T0 + dt.timedelta(days=31), 1)
    assert directory_in_force_error({1: DIRS[1]}, row, ans, AUTH.public).startswith("DIRECTORY_EXPIRED")


def test_a_directory_not_signed_by_the_authority_is_never_in_force():
    forged = SigningKey.generate("authority")
    d = directory_pb2.Directory(version=3, federation="fed")
    d.issued_at.FromDatetime(T0 + dt.timedelta(days=11))
    d.expires_at.FromDatetime(T0 + dt.timedelta(days=60))
    d.members.add(code="tax", signing_key=OLD.public.raw)
    dirs = DIRS | {3: sign_directory(d, forged).SerializeToString(deterministic=True)}
    row, ans = _row(OLD, T0 + dt.timedelta(days=15), 3)
    assert directory_in_force_error(dirs, row, ans, AUTH.public).startswith("DIRECTORY_NOT_IN_FORCE")


def test_an_answer_before_any_directory_is_refused():
    row, ans = _row(OLD, T0 - dt.timedelta(days=1), 1)
    assert directory_in_force_error(DIRS, row, ans, AUTH.public).startswith("DIRECTORY_NOT_IN_FORCE")
