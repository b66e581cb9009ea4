"""The hub's monthly discovery report (主动发现工作月报): notices and reports received,
referrals made and how they were completed, by department and town; as data (JSON) and as a
printable page rendered from ``templates/monthly-report.html``.
"""

from __future__ import annotations

from calendar import monthrange
from collections import Counter
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from hedui.node.discovery.calendar import BASES, local_date
from hedui.node.discovery.tables import lead_events, leads, referrals, utc
from hedui.node.errors import InvalidArgument
from hedui.node.html import render

if TYPE_CHECKING:
    from hedui.node.discovery.hub import Hub

__all__ = ["monthly_report", "render_html"]

LABELS = {
    "referred": "转办",
    "completed_on_time": "按时办结",
    "completed_late": "逾期办结",
    "overdue": "逾期未办结",
    "pending": "办理中",
    "escalated": "督办",
}
_COLOURS = {"referred": "#4e79a7", "completed_on_time": "#59a14f", "overdue": "#e15759"}


def monthly_report(hub: Hub, year: int, month: int, *, as_of: date | None = None) -> dict[str, Any]:
    """Counts for one calendar month in the federation zone (the hub's clock), as at the end
    of that month — or as at the end of ``as_of`` (default: today) while the month is still
    running: ``referred == completed_on_time + completed_late + overdue + pending``.

    Referrals are made in the month by local date. A referral not answered is overdue when
    its due date has passed: by the end of the "as at" day when that day is over, or before
    today while it runs (a referral due today can still be answered today; docs/time.md)."""
    if not (2000 <= year <= 2100) or not (1 <= month <= 12):
        raise InvalidArgument(f"month: got {year}-{month}, want a year 2000..2100 and a month 1..12")
    tz = hub.clock.zone
    today = as_of if as_of is not None else hub.clock.today()
    first = date(year, month, 1)
    if first > today:
        raise InvalidArgument(f"month: got {year:04d}-{month:02d}, want a month that has begun by {today.isoformat()}")
    last = date(year, month, monthrange(year, month)[1])
    as_at = min(last, today)
    start = datetime.combine(first, time(), tz).astimezone(UTC)
    cutoff = datetime.combine(as_at + timedelta(days=1), time(), tz).astimezone(UTC)
    with hub.engine.connect() as conn:
        events = conn.execute(
            select(lead_events.c.source, lead_events.c.provider).where(
                lead_events.c.created_at >= start, lead_events.c.created_at < cutoff
            )
        ).all()
        new_leads = conn.execute(
            select(func.count()).select_from(leads).where(leads.c.created_at >= start, leads.c.created_at < cutoff)
        ).scalar_one()
        refs = conn.execute(
            select(
                referrals.c.assignee,
                referrals.c.assignee_kind,
                referrals.c.due_date,
                referrals.c.created_at,
                referrals.c.responded_at,
                referrals.c.escalated_at,
            ).where(referrals.c.created_at >= start, referrals.c.created_at < cutoff)
        ).all()
    by_provider = Counter(e.provider for e in events if e.source == "notice")
    by_reporter = Counter(e.provider for e in events if e.source == "manual")
    zero = {"referred": 0, "completed_on_time": 0, "completed_late": 0, "overdue": 0, "pending": 0, "escalated": 0}
    totals = dict(zero)
    groups: dict[str, dict[str, dict[str, Any]]] = {"department": {}, "town": {}}
    bases: Counter[str] = Counter()
    for r in refs:
        bases[hub.calendar.basis_between(local_date(r.created_at, tz), r.due_date)] += 1
        responded = utc(r.responded_at)
        escalated = utc(r.escalated_at)
        if responded is not None and responded < cutoff:
            state = "completed_on_time" if local_date(responded, tz) <= r.due_date else "completed_late"
        elif r.due_date < as_at or (r.due_date == as_at and as_at < hub.clock.today()):
            state = "overdue"
        else:
            state = "pending"
        g = groups[r.assignee_kind].setdefault(
            r.assignee, {"name": hub.routing.names.get(r.assignee, r.assignee), **zero}
        )
        for bucket in (totals, g):
            bucket["referred"] += 1
            bucket[state] += 1
            if escalated is not None and escalated < cutoff:
                bucket["escalated"] += 1
    return {
        "year": year,
        "month": month,
        "period": f"{year:04d}-{month:02d}",
        "time_zone": getattr(tz, "key", str(tz)),
        "as_at": as_at.isoformat(),
        "complete": as_at == last,
        # What the referrals' deadlines rest on (official calendar, override file, or
        # Monday–Friday only for a year with no data): a non-official count is shown.
        "due_basis": {b: bases[b] for b in BASES if bases[b]},
        "received": {
            "total": len(events),
            "notices": sum(by_provider.values()),
            "manual": sum(by_reporter.values()),
            "new_leads": new_leads,
            "by_provider": dict(sorted(by_provider.items())),
            "by_reporter": dict(sorted(by_reporter.items())),
        },
        **totals,
        "by_department": dict(sorted(groups["department"].items())),
        "by_town": dict(sorted(groups["town"].items())),
    }


def render_html(report: dict[str, Any]) -> str:
    """A printable, self-contained page (Chinese labels, an inline SVG bar chart)."""
    return render("monthly-report.html", r=report, labels=LABELS, chart=_chart({**report["by_department"], **report["by_town"]})) + "\n"


def _chart(groups: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Geometry of the bar chart: per assignee one bar per key of :data:`_COLOURS`."""
    keys = list(_COLOURS)
    bar_h, gap, label_w, plot_w = 14, 10, 160, 420
    group_h = bar_h * len(keys) + gap
    height = group_h * len(groups) + 40
    peak = max((max(int(g[k]) for k in keys) for g in groups.values()), default=0) or 1
    out: list[dict[str, Any]] = []
    for i, (code, g) in enumerate(groups.items()):
        y0 = i * group_h
        bars = []
        for j, k in enumerate(keys):
            v = int(g[k])
            w = round(plot_w * v / peak, 1)
            y = y0 + j * bar_h
            bars.append({"y": y, "width": w, "colour": _COLOURS[k], "value": v, "text_x": label_w + w + 4, "text_y": y + bar_h - 4})
        out.append({"name": str(g.get("name") or code), "label_y": y0 + bar_h * len(keys) / 2 + 4, "bars": bars})
    return {
        "groups": out, "width": label_w + plot_w + 60, "height": height, "label_x": label_w - 8, "plot_x": label_w,
        "bar_height": bar_h - 2, "legend_y": height - 20,
        "legend": [{"x": label_w + j * 120, "colour": _COLOURS[k], "label": LABELS[k]} for j, k in enumerate(keys)],
    }
