"""Hub tables for household verification cases.

Raw identity numbers are allowed here and only here on the hub (DESIGN.md "Parties"): the
case's members. Everything the hub sends or logs uses tokens and digests.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from hedui.node.store.schema import metadata

__all__ = ["cases", "case_members", "case_answers", "case_member_overrides", "directory_history", "consent_revocations"]

cases = Table(
    "cases",
    metadata,
    Column("case_ref", String(32), primary_key=True),
    Column("purpose", String(32), nullable=False),
    Column("consent_digest", LargeBinary(32), nullable=False),
    Column("operator", String(64), nullable=False),
    Column("region", String(12), nullable=False),
    Column("expenditure", Numeric(14, 2), nullable=True),
    Column("status", String(16), nullable=False),  # open | complete | incomplete
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("run_at", DateTime(timezone=True), nullable=True),
    # The case's reference month "YYYY-MM" (issue 12): every Lookup carries it and every window
    # is relative to it. Cases opened before it existed have none: the month before the day
    # they were opened (hedui.node.verification.cases.reference_month_of).
    Column("reference_month", String(7), nullable=True),
)

case_members = Table(
    "case_members",
    metadata,
    Column("case_ref", String(32), ForeignKey("cases.case_ref", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("identity", String(18), nullable=False),
    Column("relation", String(32), nullable=False),
    UniqueConstraint("case_ref", "identity", name="uq_case_members_case_identity"),
)

# One row per (case, provider): the outcome of the latest attempt and the signed evidence.
case_answers = Table(
    "case_answers",
    metadata,
    Column("case_ref", String(32), ForeignKey("cases.case_ref", ondelete="CASCADE"), primary_key=True),
    Column("provider", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # ok | unavailable | maintenance | refused | bad_signature | bad_proof
    Column("reason", Text, nullable=False, default=""),
    Column("request_id", LargeBinary(32), nullable=False),
    Column("request_digest", LargeBinary(32), nullable=True),
    Column("epoch", Integer, nullable=True),
    Column("tokens", LargeBinary, nullable=True),  # 64-byte tokens, member order, concatenated
    Column("envelope", LargeBinary, nullable=True),  # serialised DSSE Envelope (answer)
    Column("directory_version", BigInteger, nullable=True),
    Column("attempts", Integer, nullable=False, default=0),
    Column("answered_at", DateTime(timezone=True), nullable=True),
    # Filter-first lookups (issue 14), JSON: the member positions whose tokens were sent (the
    # tokens column holds those only), the fields asked, and the signed filter header (DSSE,
    # base64) that is the evidence of "no record as of its data date" for the other members.
    Column("filter_first", Text, nullable=True),
    # The whole LookupRequest sent (issue 18): evidence carries it so anyone can recompute
    # the request digest and the consent the answer binds.
    Column("request", LargeBinary, nullable=True),
)

# A caseworker's decision to count (or not count) a listed member against what the registry
# answer says (issue 12 item 4), with the reason; the latest row per member is in force.
case_member_overrides = Table(
    "case_member_overrides",
    metadata,
    Column("override_id", Integer, primary_key=True, autoincrement=True),
    Column("case_ref", String(32), ForeignKey("cases.case_ref", ondelete="CASCADE"), nullable=False, index=True),
    Column("position", Integer, nullable=False),
    Column("counted", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("operator", String(64), nullable=False),
    Column("decided_at", DateTime(timezone=True), nullable=False),
)

# Every directory the hub accepted, so evidence verifies offline against the version in force.
directory_history = Table(
    "directory_history",
    metadata,
    Column("version", BigInteger, primary_key=True),
    Column("envelope", LargeBinary, nullable=False),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
)

# The hub's append-only list of revoked consent records (node/verification/consent.py):
# its row count is the serial of the signed list pushed to providers. ``case_ref`` and
# ``reason`` (issue 18c, ``hedui consent revoke``) say which case's record and why; rows
# written before them have NULL.
consent_revocations = Table(
    "consent_revocations",
    metadata,
    Column("consent_digest", LargeBinary(32), primary_key=True),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("operator", String(64), nullable=False),
    Column("case_ref", String(64), nullable=True),
    Column("reason", Text, nullable=True),
)
