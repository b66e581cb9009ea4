"""Sign-in, sign-out and the language switch."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from hedui.node.console.app import NeedSignIn, console_of, page_ctx, post_ctx, render
from hedui.node.console.i18n import LANGS
from hedui.node.console.security import csrf_ok, new_token

router = APIRouter()
_SAFE_NEXT = re.compile(r"/(?!/)[A-Za-z0-9/_.?=&%-]{0,200}")


def _signin_page(request: Request, *, status: int = 200, message: str = "", notice: str = ""):
    c = console_of(request)
    pre = new_token()
    resp = render(request, None, "signin.html", code=status, pre_token=pre, message=message, notice=notice)
    c.set_cookie(resp, c.cookie_pre, pre, max_age=1800)
    return resp


@router.get("/signin")
async def signin_form(request: Request, expired: str | None = None, out: str | None = None):
    try:
        await page_ctx(request)
        return RedirectResponse("/cases", status_code=303)
    except NeedSignIn:
        pass
    t = console_of(request).translator(request)
    notice = t("signin.expired") if expired else (t("signin.signed_out") if out else "")
    return _signin_page(request, notice=notice)


@router.post("/signin")
async def signin(request: Request):
    c = console_of(request)
    t = c.translator(request)
    form = await request.form(max_files=0, max_fields=10)
    name, password = str(form.get("name", ""))[:64].strip(), str(form.get("password", ""))[:256]
    if not csrf_ok(request.cookies.get(c.cookie_pre, ""), form.get("pre_token") if isinstance(form.get("pre_token"), str) else None):
        return _signin_page(request, status=400, message=t("signin.form_expired"))
    client = request.client.host if request.client else "-"
    res = await run_in_threadpool(c.signin.attempt, name, password, client)
    if not res.ok:
        until = c.templates.env.globals["fmt"](res.locked_until) if res.locked_until else ""
        status = 429 if res.outcome == "RATE_LIMITED" else 401
        return _signin_page(request, status=status, message=t(f"signin.{res.outcome}", until=until))
    resp = RedirectResponse("/cases", status_code=303)
    c.set_cookie(resp, c.cookie_session, res.cookie)
    resp.delete_cookie(c.cookie_pre, path="/", secure=c.settings.secure_cookies, httponly=True, samesite="strict")
    return resp


@router.post("/signout")
async def signout(request: Request):
    ctx, _ = await post_ctx(request)
    await run_in_threadpool(ctx.console.sessions.delete, ctx.cookie)
    resp = RedirectResponse("/signin?out=1", status_code=303)
    resp.delete_cookie(ctx.console.cookie_session, path="/", secure=ctx.console.settings.secure_cookies,
                       httponly=True, samesite="strict")
    return resp


@router.get("/lang/{lang}")
async def set_lang(request: Request, lang: str, next: str = "/cases"):
    target = next if _SAFE_NEXT.fullmatch(next) else "/cases"
    resp = RedirectResponse(target, status_code=303)
    if lang in LANGS:
        c = console_of(request)
        resp.set_cookie("hedui_lang", lang, max_age=365 * 86400, path="/", secure=c.settings.secure_cookies,
                        httponly=True, samesite="strict")
    return resp
