"""The independent oracle for household verification and bulk cross-check (test wing).

Figures are computed by straight SQL over the nine department databases written by
``hedui.node.testbed.departments`` (SQLite files or PostgreSQL schemas), following the local
rules in docs/acceptance-rules.md. Nothing here imports Hedui: identity numbers are normalised
by :mod:`.ids`, written from GB 11643 itself, so a product bug cannot hide in the expectations.

    fed = Federation.sqlite(folder)            # or Federation.postgres(url)
    report = verify(fed, member_ids, "2026-08")
    report.per_capita, report.below_standard, report.member(id18).income["wages"].value
    cc = crosscheck(fed, date(2026, 10, 31))   # cc.hits: id18 → {"dead", "vehicle", "property"}
"""

from .crosscheck import DEAD, PROPERTY, VEHICLE, CrossCheck, crosscheck
from .db import DEPARTMENTS, IDENTITY_COLUMNS, Federation
from .household import INCOME, NO_RECORD, NOT_CURRENT, OK, STANDARD, Figure, Member, Report, half_up_per_capita, verify
from .ids import canonical

__all__ = ["DEAD", "PROPERTY", "VEHICLE", "CrossCheck", "crosscheck", "DEPARTMENTS", "IDENTITY_COLUMNS",
           "Federation", "INCOME", "NO_RECORD", "NOT_CURRENT", "OK", "STANDARD", "Figure", "Member", "Report",
           "half_up_per_capita", "verify", "canonical"]
