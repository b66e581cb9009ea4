"""Cross-check results (issue 15 item 4; the checks themselves: issue 14, docs/crosscheck.md):
the runs with their hits by reason, each hit shown masked with the stop-warning lead it
became, and (supervisors) running one of the hub's configured check files.

URLs carry run ids and criterion codes only, never an identity. Reading a run's hits and
running a check are audited by the domain (node/crosscheck/history.py, run.py), with the
signed-in operator; this module only checks the role and forwards.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from hedui.node.console import hub_api
from hedui.node.console.app import Ctx, page_ctx, post_ctx, render
from hedui.node.console.routes.cases import _once
from hedui.node.console.security import new_token

router = APIRouter()
PAGE = 20
#: Hits shown per page of a run (a population-wide check can hit thousands).
HITS_PAGE = 100
_CRITERION = re.compile(r"[a-z][a-z0-9_]{0,31}")


def _runs_page(request: Request, ctx: Ctx, page: int, *, error: str = "") -> HTMLResponse:
    runs = hub_api.crosscheck_runs(ctx.rt, limit=PAGE, offset=(page - 1) * PAGE)
    checks = hub_api.crosscheck_files(ctx.console.settings.checks_dir) if ctx.can("crosscheck.run") else []
    return render(request, ctx, "crosscheck/list.html", runs=runs, checks=checks, page=page, page_size=PAGE,
                  form_token=new_token(), error=error, nav="crosscheck")


@router.get("/crosscheck")
async def runs(request: Request, page: int = 1) -> HTMLResponse:
    ctx = await page_ctx(request)
    ctx.require("crosscheck.view")
    return await run_in_threadpool(_runs_page, request, ctx, max(1, min(page, 10_000)))


def _run_page(request: Request, ctx: Ctx, run_id: int, reason: str, page: int) -> HTMLResponse:
    summary = hub_api.crosscheck_run(ctx.rt, run_id)
    hits = hub_api.crosscheck_hits(ctx.rt, run_id, operator=ctx.user.name, reason=reason or None, limit=HITS_PAGE,
                                   offset=(page - 1) * HITS_PAGE)
    return render(request, ctx, "crosscheck/run.html", s=summary, hits=hits, reason=reason, page=page,
                  page_size=HITS_PAGE, rules=hub_api.crosscheck_rules(ctx.rt, summary),
                  town_names=ctx.console.hub.routing.names, nav="crosscheck")


@router.get("/crosscheck/{run_id}")
async def run(request: Request, run_id: int, reason: str = "", page: int = 1) -> HTMLResponse:
    ctx = await page_ctx(request)
    ctx.require("crosscheck.view")
    # A criterion code or nothing; anything else is the whole list (never echoed).
    reason = reason if _CRITERION.fullmatch(reason or "") else ""
    return await run_in_threadpool(_run_page, request, ctx, run_id, reason, max(1, min(page, 100_000)))


@router.post("/crosscheck/run")
async def start(request: Request) -> Response:
    """Runs a configured check file as the signed-in supervisor; one run per form token (a
    second click or a resubmission goes to the first run's page)."""
    ctx, form = await post_ctx(request)
    ctx.require("crosscheck.run")

    async def action() -> str:
        name = str(form.get("check", ""))[:128]
        run_id = await run_in_threadpool(
            hub_api.run_crosscheck, ctx.rt, ctx.console.settings.checks_dir, name, operator=ctx.user.name,
            count_only=form.get("count_only") == "1", timeout=ctx.console.settings.crosscheck_timeout)
        return f"/crosscheck/{run_id}"

    return await _once(request, ctx, form, action)
