"""Cases: the list, intake (typed or uploaded), the case page, runs with live progress, the
report (the domain's own document, framed), full identity numbers on request, and review."""

from __future__ import annotations

import os
import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from hedui.node.console import hub_api
from hedui.node.console.app import Ctx, page_ctx, post_ctx, render
from hedui.node.console.forms import RELATIONS, CaseForm, check_consent, id_check, parse_case_form, parse_members_file, previous_month, size_text
from hedui.node.console.security import DOCUMENT_CSP, new_token
from hedui.node.errors import InvalidArgument, PermissionDenied, Reason

router = APIRouter()
_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,31}")
_A4 = '<link rel="stylesheet" href="/static/print-a4.css">'


def _ref(case_ref: str) -> str:
    if not _REF.fullmatch(case_ref):
        raise InvalidArgument(f"case: got {case_ref[:32]!r}, want a case reference like HUB-2026-000001")
    return case_ref


@router.get("/cases")
async def list_cases(request: Request, status: str = "", purpose: str = "", mine: str = ""):
    ctx = await page_ctx(request)
    ctx.require("case.view")
    status = status if status in ("open", "complete", "incomplete") else ""
    purpose = purpose if purpose in hub_api.CASE_PURPOSES else ""
    rows = await run_in_threadpool(hub_api.list_cases, ctx.rt.engine, status=status or None, purpose=purpose or None,
                                   operator=ctx.user.name if mine else None)
    return render(request, ctx, "cases/list.html", rows=rows, status=status, purpose=purpose, mine=bool(mine),
                  purposes=hub_api.CASE_PURPOSES, nav="cases")


def _new_page(request: Request, ctx: Ctx, f: CaseForm | None = None, *, status: int = 200, tab: str = "form"):
    c = ctx.console
    f = f or CaseForm(region=hub_api.hub_region(ctx.rt), members=[{"identity": "", "relation": "applicant", "check": None}])
    return render(request, ctx, "cases/new.html", code=status, f=f, tab=tab, purposes=hub_api.CASE_PURPOSES,
                  relations=RELATIONS, form_token=new_token(), supports_month=hub_api.SUPPORTS_REFERENCE_MONTH,
                  default_month=previous_month(c.clock.today()), consent_limit=c.settings.consent_max_bytes,
                  members_limit=c.settings.members_max_bytes, keep=c.settings.keep_consent_dir is not None, nav="new")


@router.get("/cases/new")
async def new_case(request: Request):
    ctx = await page_ctx(request)
    ctx.require("case.open")
    return _new_page(request, ctx)


@router.get("/cases/new/member-row")
async def member_row(request: Request, n: int = 2):
    ctx = await page_ctx(request)
    ctx.require("case.open")
    n = max(1, min(n, 20))
    return render(request, ctx, "cases/_member_row.html", n=n, m={"identity": "", "relation": "spouse", "check": None},
                  relations=RELATIONS, oob=True)


@router.post("/cases/check-id")
async def check_id(request: Request):
    """As the caseworker types: the CLI's validator, the check digit, 15→18 conversion shown."""
    ctx, form = await post_ctx(request)
    # htmx sends every row's number (hx-params="identity"); HX-Trigger names the row typed in.
    values = [str(v) for v in form.getlist("identity")]
    m = re.fullmatch(r"identity-(\d{1,2})", request.headers.get("hx-trigger", ""))
    k = int(m.group(1)) if m else 1
    raw = values[k - 1][:64] if 0 < k <= len(values) else ""
    return render(request, ctx, "cases/_id_check.html", check=id_check(raw, ctx.t), typed=bool(raw.strip()))


async def _once(request: Request, ctx: Ctx, form, action):
    """Runs ``action`` once per form token; a repeated submission goes where the first led."""
    token = str(form.get("form_token", ""))
    claimed, prior = await run_in_threadpool(ctx.console.tokens.claim, token, ctx.user.name)
    if not claimed:
        if prior:
            return RedirectResponse(prior, status_code=303)
        return render(request, ctx, "error.html", code=409, message=ctx.t("err.pending" if token else "err.duplicate"))
    try:
        result = await action()
    except BaseException:
        await run_in_threadpool(ctx.console.tokens.release, token)
        raise
    if isinstance(result, str):
        await run_in_threadpool(ctx.console.tokens.done, token, result)
        return RedirectResponse(result, status_code=303)
    await run_in_threadpool(ctx.console.tokens.release, token)  # a form to correct and send again
    return result


async def _consent(ctx: Ctx, form) -> tuple[bytes | None, bytes | None, str]:
    up = form.get("consent")
    data = await up.read(ctx.console.settings.consent_max_bytes + 1) if up is not None and hasattr(up, "read") else None
    digest, err = check_consent(data, ctx.t, ctx.console.settings.consent_max_bytes)
    return digest, data, err


async def _open(request: Request, ctx: Ctx, f: CaseForm, digest: bytes, scan: bytes, *, tab: str = "form") -> str | HTMLResponse:
    try:
        ref = await run_in_threadpool(
            hub_api.open_case, ctx.rt, f.normalized, purpose=f.purpose, consent_digest=digest, operator=ctx.user.name,
            region=f.region, expenditure=f.expenditure_value, reference_month=f.reference_month or None)
    except PermissionDenied as exc:
        if exc.reason != Reason.CONSENT_REUSED:
            raise
        # Issue 18d: the authorisation was already used (another household, or a second
        # one-off case). open_case refused and audited it; the form says why, kept for correction.
        f.errors.append(ctx.t("val.consent_reused", what=exc.message))
        if tab == "upload":
            f.members = [{"identity": "", "relation": "applicant", "check": None}]
        return _new_page(request, ctx, f, status=409, tab=tab)
    keep = ctx.console.settings.keep_consent_dir
    if keep is not None:  # kept in the clear only where the hub's configuration says so
        path = keep / f"{digest.hex()}.pdf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(scan)
    return f"/cases/{ref}"


@router.post("/cases")
async def open_case(request: Request):
    ctx, form = await post_ctx(request)
    ctx.require("case.open")

    async def action():
        f = parse_case_form(form, ctx.t, ctx.console.clock.today())
        digest, scan, err = await _consent(ctx, form)
        if err:
            f.errors.append(err)
        if f.all_errors:
            return _new_page(request, ctx, f, status=400)
        return await _open(request, ctx, f, digest, scan)

    return await _once(request, ctx, form, action)


@router.post("/cases/upload")
async def upload_case(request: Request):
    ctx, form = await post_ctx(request)
    ctx.require("case.open")

    async def action():
        up = form.get("members_file")
        limit = ctx.console.settings.members_max_bytes
        data = await up.read(limit + 1) if up is not None and hasattr(up, "read") else b""
        if len(data) > limit:
            members, errs = [], [ctx.t("err.too_large", limit=size_text(limit))]
        else:
            members, errs = parse_members_file(getattr(up, "filename", "") or "", data, ctx.t)
        f = parse_case_form(form, ctx.t, ctx.console.clock.today(), members=members)
        if errs:  # the file's own row numbers say more than member positions
            f.member_errors = errs
        digest, scan, err = await _consent(ctx, form)
        if err:
            f.errors.append(err)
        if f.all_errors:
            f.members = [{"identity": "", "relation": "applicant", "check": None}]
            return _new_page(request, ctx, f, status=400, tab="upload")
        return await _open(request, ctx, f, digest, scan, tab="upload")

    return await _once(request, ctx, form, action)


def _case_page(request: Request, ctx: Ctx, case_ref: str, *, full: list[dict] | None = None, status: int = 200):
    st = hub_api.case_state(ctx.rt.engine, case_ref)
    progress = ctx.console.runs.progress(case_ref)
    return render(request, ctx, "cases/show.html", code=status, case=st, progress=progress, full=full,
                  decisions=hub_api.DECISIONS, form_token=new_token(), nav="cases")


@router.get("/cases/{case_ref}")
async def show_case(request: Request, case_ref: str):
    ctx = await page_ctx(request)
    ctx.require("case.view")
    return await run_in_threadpool(_case_page, request, ctx, _ref(case_ref))


@router.post("/cases/{case_ref}/members")
async def show_members(request: Request, case_ref: str):
    ctx, _ = await post_ctx(request)
    ctx.require("identity.show")
    full = await run_in_threadpool(hub_api.show_members, ctx.rt, _ref(case_ref), operator=ctx.user.name)
    return await run_in_threadpool(_case_page, request, ctx, case_ref, full=full)


@router.post("/cases/{case_ref}/run")
async def run_case(request: Request, case_ref: str):
    ctx, _ = await post_ctx(request)
    ctx.require("case.run")
    await run_in_threadpool(hub_api.case_state, ctx.rt.engine, _ref(case_ref))  # exists, or 404
    ctx.console.runs.start(case_ref, ctx.user.name)
    if request.headers.get("hx-request"):
        return await progress(request, case_ref)
    return RedirectResponse(f"/cases/{case_ref}#progress", status_code=303)


@router.get("/cases/{case_ref}/progress")
async def progress(request: Request, case_ref: str):
    ctx = await page_ctx(request)
    ctx.require("case.view")
    p = await run_in_threadpool(ctx.console.runs.progress, _ref(case_ref))
    return render(request, ctx, "cases/_progress.html", case_ref=case_ref, progress=p)


@router.get("/cases/{case_ref}/report")
async def report(request: Request, case_ref: str):
    ctx = await page_ctx(request)
    ctx.require("case.view")
    st = await run_in_threadpool(hub_api.case_state, ctx.rt.engine, _ref(case_ref))
    return render(request, ctx, "cases/report.html", case=st, nav="cases")


@router.get("/cases/{case_ref}/report/document")
async def report_document(request: Request, case_ref: str, lang: str = ""):
    """The domain's report HTML as is, with the A4 print sheet added; framed by the console."""
    ctx = await page_ctx(request)
    ctx.require("case.view")
    html = await run_in_threadpool(hub_api.report_html, ctx.rt, _ref(case_ref), lang or ctx.t.lang)
    html = html.replace("</head>", _A4 + "</head>", 1) if "</head>" in html else _A4 + html
    return HTMLResponse(html, headers={"content-security-policy": DOCUMENT_CSP, "x-frame-options": "SAMEORIGIN"})


@router.post("/cases/{case_ref}/review")
async def review(request: Request, case_ref: str):
    ctx, form = await post_ctx(request)
    ctx.require("case.review")
    _ref(case_ref)

    async def action():
        await run_in_threadpool(hub_api.review_case, ctx.rt, case_ref, reviewer=ctx.user.name,
                                decision=str(form.get("decision", "")), note=str(form.get("note", ""))[:600],
                                now=ctx.console.clock.now())
        return f"/cases/{case_ref}"

    return await _once(request, ctx, form, action)

