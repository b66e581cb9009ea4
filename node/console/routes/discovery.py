"""Discovery worklist: leads (sealed details opened with a reason, a page at a time),
referrals with working-day deadlines and their answers, escalation, the monthly report."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.concurrency import run_in_threadpool

from hedui.node.console import hub_api
from hedui.node.console.app import Ctx, page_ctx, post_ctx, render
from hedui.node.console.routes.cases import _once
from hedui.node.console.security import DOCUMENT_CSP, new_token
from hedui.node.errors import InvalidArgument

router = APIRouter()
PAGE = 20
_CODE = re.compile(r"[0-9A-Za-z_.-]{0,64}")
_MONTH = re.compile(r"(\d{4})-(\d{2})")


def _code(v: str) -> str:
    return v if _CODE.fullmatch(v or "") else ""


def _filters(ctx: Ctx, town: str, type_: str, status: str, page: int) -> dict:
    return {"town": _code(town), "type": _code(type_), "status": status if status in ("open", "closed") else "",
            "page": max(1, min(page, 10_000))}


def _leads(ctx: Ctx, flt: dict) -> list[dict]:
    return hub_api.leads_page(ctx.console.hub, town=flt["town"] or None, event_type=flt["type"] or None,
                              status=flt["status"] or None, limit=PAGE, offset=(flt["page"] - 1) * PAGE)


def _leads_page(request: Request, ctx: Ctx, flt: dict, *, opened: dict | None = None, fragment: bool = False):
    rows = _leads(ctx, flt)
    hub = ctx.console.hub
    ctxt = dict(rows=rows, flt=flt, opened=opened or {}, towns=hub_api.towns(hub), types=hub_api.event_types(hub),
                page_size=PAGE, town_names=hub.routing.names, nav="leads")
    return render(request, ctx, "discovery/_leads_table.html" if fragment else "discovery/leads.html", **ctxt)


@router.get("/leads")
async def leads(request: Request, town: str = "", type: str = "", status: str = "", page: int = 1):
    ctx = await page_ctx(request)
    ctx.require("lead.view")
    return await run_in_threadpool(_leads_page, request, ctx, _filters(ctx, town, type, status, page))


@router.post("/leads/details")
async def lead_details(request: Request):
    """Opens the sealed details of the leads on the page (one KDF-free key, one audit entry)."""
    ctx, form = await post_ctx(request)
    ctx.require("lead.details")
    flt = _filters(ctx, str(form.get("town", "")), str(form.get("type", "")), str(form.get("status", "")),
                   int(form.get("page", "1")) if str(form.get("page", "1")).isdigit() else 1)
    try:
        ids = [int(x) for x in form.getlist("lead_id")]
    except ValueError:
        raise InvalidArgument("lead_id: got a non-number, want lead ids") from None
    opened = await run_in_threadpool(hub_api.open_details, ctx.rt, ctx.console.hub, ids, operator=ctx.user.name,
                                     reason=str(form.get("reason", ""))[:300])
    if form.get("single"):
        return await run_in_threadpool(_lead_page, request, ctx, ids[0], opened)
    return await run_in_threadpool(_leads_page, request, ctx, flt, opened=opened,
                                   fragment=bool(request.headers.get("hx-request")))


def _lead_page(request: Request, ctx: Ctx, lead_id: int, opened: dict | None = None):
    row = hub_api.lead_row(ctx.console.hub, lead_id)
    return render(request, ctx, "discovery/lead.html", r=row, opened=(opened or {}).get(lead_id),
                  town_names=ctx.console.hub.routing.names, nav="leads")


@router.get("/leads/{lead_id}")
async def lead(request: Request, lead_id: int):
    ctx = await page_ctx(request)
    ctx.require("lead.view")
    return await run_in_threadpool(_lead_page, request, ctx, lead_id)


def _referral_rows(ctx: Ctx, status: str, town: str, overdue: bool) -> list[dict]:
    today = ctx.console.clock.today()
    cal = ctx.console.hub.calendar
    views = hub_api.referrals_page(ctx.console.hub, status=status or None, assignee=town or None,
                                   overdue_as_of=today if overdue else None)
    out = []
    for v in views:
        late = v.status in ("open", "escalated") and v.due_date < today
        out.append({"v": v, "overdue": late, "late_days": cal.workdays_between(v.due_date, today) if late else 0})
    return out


@router.get("/referrals")
async def referrals(request: Request, status: str = "", town: str = "", overdue: str = "", saved: str = "",
                    escalated: str = ""):
    ctx = await page_ctx(request)
    ctx.require("lead.view")
    status = status if status in ("open", "responded", "escalated") else ""
    rows = await run_in_threadpool(_referral_rows, ctx, status, _code(town), bool(overdue))
    hub = ctx.console.hub
    return render(request, ctx, "discovery/referrals.html", rows=rows, status=status, town=_code(town), overdue=bool(overdue),
                  towns=sorted(hub.routing.names.items()), names=hub.routing.names, workdays=hub.referral_workdays,
                  form_token=new_token(), saved=saved if saved.isdigit() else "",
                  escalated=int(escalated) if escalated.isdigit() else None, nav="referrals")


@router.get("/referrals/{referral_id}")
async def referral(request: Request, referral_id: int):
    ctx = await page_ctx(request)
    ctx.require("referral.respond")
    v = await run_in_threadpool(ctx.console.hub.referral, referral_id)
    return render(request, ctx, "discovery/respond.html", v=v, names=ctx.console.hub.routing.names,
                  outcomes=hub_api.OUTCOMES, programmes=hub_api.PROGRAMMES, form_token=new_token(), nav="referrals")


@router.post("/referrals/{referral_id}/respond")
async def respond(request: Request, referral_id: int):
    ctx, form = await post_ctx(request)
    ctx.require("referral.respond")

    async def action():
        outcome = str(form.get("outcome", ""))
        programme = str(form.get("programme", "")) or None
        await run_in_threadpool(hub_api.respond, ctx.rt, ctx.console.hub, referral_id, outcome=outcome,
                                programme=programme if outcome == "assisted" else None, operator=ctx.user.name,
                                now=ctx.console.clock.now())
        return f"/referrals?saved={referral_id}"

    return await _once(request, ctx, form, action)


@router.post("/referrals/escalate")
async def escalate(request: Request):
    ctx, form = await post_ctx(request)
    ctx.require("referral.escalate")

    async def action():
        views = await run_in_threadpool(hub_api.escalate, ctx.rt, ctx.console.hub, ctx.console.clock.today(),
                                        operator=ctx.user.name, now=ctx.console.clock.now())
        return f"/referrals?escalated={len(views)}"

    return await _once(request, ctx, form, action)


def _month(ctx: Ctx, month: str) -> tuple[int, int]:
    m = _MONTH.fullmatch(month or "")
    if m and 1 <= int(m.group(2)) <= 12:
        return int(m.group(1)), int(m.group(2))
    today = ctx.console.clock.today()
    return today.year, today.month


@router.get("/reports/monthly")
async def monthly(request: Request, month: str = ""):
    ctx = await page_ctx(request)
    ctx.require("report.monthly")
    y, m = _month(ctx, month)
    return render(request, ctx, "discovery/monthly.html", month=f"{y:04d}-{m:02d}", nav="monthly")


@router.get("/reports/monthly/document")
async def monthly_document(request: Request, month: str = ""):
    ctx = await page_ctx(request)
    ctx.require("report.monthly")
    y, m = _month(ctx, month)
    _, html = await run_in_threadpool(hub_api.monthly, ctx.console.hub, y, m)
    html = html.replace("</head>", '<link rel="stylesheet" href="/static/print-a4.css"></head>', 1)
    return HTMLResponse(html, headers={"content-security-policy": DOCUMENT_CSP, "x-frame-options": "SAMEORIGIN"})

