"""Signers bound to logs (issue 18 part B, item 3), reproduced as attacks.

A checkpoint verifies only under the key the directory assigns to its log's origin: a member
signing a checkpoint *for another member's log* — with its own, perfectly valid key — is
refused, offline (``open_checkpoint`` with every member's key known) and by a witness, which
checks the origin before its first cosignature of that peer.
"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.node.audit import merkle
from hedui.node.audit.errors import CheckpointError, UnknownKeyError
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Checkpoint, Signer, Verifier, Verifiers, open_checkpoint
from hedui.node.audit.recorder import origin_of
from hedui.node.audit.tables import audit_cosignatures

T0 = dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
TAX, HRSS = origin_of("fed", "tax"), origin_of("fed", "hrss")


def _tree(n: int = 4) -> merkle.MemoryTree:
    t = merkle.MemoryTree()
    for i in range(n):
        t.append(b"entry %d" % i)
    return t


@pytest.fixture
def keys():
    return Signer.generate(TAX), Signer.generate(HRSS)


def test_the_logs_own_key_verifies(keys):
    tax, hrss = keys
    t = _tree()
    note = Checkpoint(TAX, t.size, t.root()).sign(tax)
    cp, _ = open_checkpoint(note, Verifiers([tax.verifier(), hrss.verifier()]), origin=TAX)
    assert cp.size == 4


def test_checkpoint_of_one_log_signed_by_another_member_is_refused(keys):
    tax, hrss = keys
    t = _tree()
    forged = Checkpoint(TAX, t.size, t.root()).sign(hrss)  # hrss's valid key, tax's log
    known = Verifiers([tax.verifier(), hrss.verifier()])
    with pytest.raises(CheckpointError, match="want the key the directory assigns"):
        open_checkpoint(forged, known)
    with pytest.raises(CheckpointError):
        open_checkpoint(forged, known, origin=TAX)
    # hrss's key presented under tax's name is an unknown key (the key id binds the name).
    renamed = Checkpoint(TAX, t.size, t.root()).sign(Signer(TAX, hrss._key))
    with pytest.raises(UnknownKeyError):
        open_checkpoint(renamed, known)


def test_witness_checks_origin_before_its_first_cosignature(engine, keys):
    tax, hrss = keys
    witness = AuditLog(engine, origin_of("fed", "hub"), Signer.generate(origin_of("fed", "hub")), tile_height=2, clock=lambda: T0)
    try:
        t = _tree(6)
        # hrss attaches a checkpoint that claims to be tax's log, signed with its own key
        # under its own (directory-assigned) name: the origin is not hrss's.
        claim = Checkpoint(TAX, t.size, t.root()).sign(hrss)
        with pytest.raises(CheckpointError):
            witness.observe_peer_checkpoint("hrss", claim, Verifier(HRSS, hrss.public_key), lambda a, b: t.consistency_proof(a, b))
        with engine.connect() as c:
            assert c.execute(select(func.count()).select_from(audit_cosignatures)).scalar() == 0
        # Its own log is cosigned.
        own = Checkpoint(HRSS, t.size, t.root()).sign(hrss)
        witness.observe_peer_checkpoint("hrss", own, Verifier(HRSS, hrss.public_key), lambda a, b: t.consistency_proof(a, b))
        with engine.connect() as c:
            assert c.execute(select(func.count()).select_from(audit_cosignatures)).scalar() == 1
    finally:
        witness.close()
