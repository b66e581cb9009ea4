"""The demo's active-discovery step (one of :data:`hedui.node.testbed.demo.DEMO_STEPS`).

Departments run one detection cycle for the scenario date, their nodes push the sealed,
signed notices to the hub in the background, and the hub shows the leads (merged per person
across departments), the referral slips with their working-day deadlines, the towns' and
departments' answers, and one overdue referral escalated (as of a date after its deadline).
"""

from __future__ import annotations

import time as _time
from collections.abc import Callable
from datetime import timedelta

from hedui.node.testbed.discovery import SCENARIO_AS_OF

__all__ = ["discovery_step"]


def discovery_step(tb, step: Callable[[str, str], None], *, wait: float = 60.0) -> dict:
    from hedui.node.discovery.report import monthly_report

    hubs = [c for c, ns in tb.servers.items() if ns.rt.hub is not None and ns.rt.hub.discovery is not None]
    providers = [c for c, ns in tb.servers.items() if ns.rt.notices is not None]
    if not hubs or not providers:
        step("discovery", "skipped (no hub with a sealing key, or no department with detection rules)")
        return {}
    hub_rt = tb.runtime(hubs[0])
    runs = {}
    for code in providers:
        run = tb.runtime(code).notices.run_now(SCENARIO_AS_OF)
        runs[code] = run
        due = sorted({d.due_date.isoformat() for d in run.detections})
        step(
            f"detect @{code}",
            f"{len(run.rules)} rule(s) over {run.records} record(s) for {SCENARIO_AS_OF}"
            + (f" ({run.problems} bad row(s) skipped)" if run.problems else "")
            + f": {len(run.detections)} detection(s), due {', '.join(due) or '-'}; queued sealed + signed",
        )
    # The nodes' pushers deliver in the background; wait until every outbox is empty.
    deadline = _time.monotonic() + wait
    while _time.monotonic() < deadline and any(tb.runtime(c).notices.pending() for c in providers):
        _time.sleep(0.1)
    left = sum(tb.runtime(c).notices.pending() for c in providers)
    queued = sum(r.queued for r in runs.values())
    step("push", f"{queued - left} of {queued} notice(s) delivered over mTLS with signed receipts"
         + (f"; {left} still queued (retrying)" if left else ""))

    hub = hub_rt.hub.discovery
    leads = hub.list_leads()
    merged = [hub.lead(r["lead_id"]) for r in leads if r["sources"] > 1]
    step("leads", f"{len(leads)} lead(s) from {sum(r['events'] for r in leads)} notice(s); merged across departments: "
         + ("; ".join(f"lead {m['lead_id']} ← {' + '.join(m['providers'])}" for m in merged) or "none"))
    refs = hub.list_referrals()
    towns = sorted({f"{r.assignee}" for r in refs})
    dues = sorted({r.due_date.isoformat() + ("" if r.due_basis == "official" else f" ({r.due_basis})") for r in refs})
    step("referrals", f"{len(refs)} referral slip(s) to {', '.join(towns)} made on "
         f"{', '.join(sorted({r.created_on.isoformat() for r in refs}))} ({hub.clock.zone.key}), each due in "
         f"{hub.referral_workdays} working days: {', '.join(dues)}")
    # Every assignee answers but one; that one is escalated once its deadline has passed.
    outcomes = [("assisted", "dibao"), ("found", None), ("not_eligible", None), ("assisted", "medical")]
    for i, r in enumerate(refs[:-1]):
        outcome, programme = outcomes[i % len(outcomes)]
        hub.record_response(r.referral_id, outcome=outcome, programme=programme)
    late = refs[-1]
    as_of = late.due_date + timedelta(days=1)
    escalated = hub.escalate(as_of)
    step("responses", f"{len(refs) - 1} answered (assisted, found, not eligible); "
         f"as of {as_of} referral {late.referral_id} to {late.assignee} is overdue (due {late.due_date}) "
         f"→ escalated: {', '.join(str(v.referral_id) for v in escalated)}")
    # The month the referrals were made in, in the federation zone (not the UTC month: at
    # 23:30 UTC on the last day of a month it is already the next month in China).
    made = refs[-1].created_on
    rep = monthly_report(hub, made.year, made.month, as_of=max(made, hub.clock.today()))
    step("monthly report", f"{rep['period']}: {rep['received']['notices']} notice(s) by department "
         f"{rep['received']['by_provider']}, {rep['referred']} referred, {rep['completed_on_time']} completed on time")
    return {"runs": {c: r.queued for c, r in runs.items()}, "leads": len(leads), "merged": len(merged),
            "referrals": len(refs), "escalated": [v.referral_id for v in escalated]}

