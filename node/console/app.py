"""The console application: :func:`create_app` builds it from a hub runtime, a clock and
settings; nothing in it reads the wall clock or global state (tests pass a FixedClock)."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from hedui.common.clock import Clock, fmt_instant
from hedui.common.errors import Reason
from hedui.node.console import hub_api
from hedui.node.console.auth import Session as OperatorSession
from hedui.node.console.auth import SessionStore, SignIn, User, UserStore, may
from hedui.node.console.forms import size_text
from hedui.node.console.i18n import LANGS, Translator
from hedui.node.console.runs import RunTracker
from hedui.node.console.security import FormTokens, SecurityMiddleware, csrf_ok
from hedui.node.errors import FailedPrecondition, HeduiError, InvalidArgument, NotFound, PermissionDenied

__all__ = ["ConsoleSettings", "Console", "create_app", "Ctx", "render", "AccessDenied", "NeedSignIn"]

log = logging.getLogger("hedui.console")


@dataclass
class ConsoleSettings:
    users_path: Path
    idle_minutes: int = 15
    lifetime_hours: int = 12
    max_failures: int = 5
    lock_minutes: int = 15
    signin_per_minute: int = 10
    consent_max_bytes: int = 10 * 1024 * 1024
    members_max_bytes: int = 1024 * 1024
    keep_consent_dir: Path | None = None  # the 授权书 scans are kept in the clear only when this is set
    secure_cookies: bool = True  # off only for --insecure-http on a non-loopback address
    hsts: bool = False
    run_timeout: float = 10.0
    #: Check files (``*.toml``, docs/crosscheck.md) supervisors may run from the console; None: none.
    checks_dir: Path | None = None
    #: Deadline per provider call of a cross-check run from the console, seconds.
    crosscheck_timeout: float = 60.0

    @property
    def max_body(self) -> int:
        return self.consent_max_bytes + self.members_max_bytes + 256 * 1024


class NeedSignIn(Exception):
    def __init__(self, expired: bool = False) -> None:
        self.expired = expired


class AccessDenied(Exception):
    def __init__(self, ctx: Ctx, action: str, outcome: str = Reason.ROLE) -> None:
        self.ctx, self.action, self.outcome = ctx, action, outcome


class Console:
    """Everything the routes use, built once."""

    def __init__(self, rt, clock: Clock, settings: ConsoleSettings) -> None:
        self.rt, self.clock, self.settings = rt, clock, settings
        self.users = UserStore(settings.users_path)
        self.sessions = SessionStore(rt.engine, clock, idle=dt.timedelta(minutes=settings.idle_minutes),
                                     lifetime=dt.timedelta(hours=settings.lifetime_hours))
        self.signin = SignIn(self.users, self.sessions, rt.audit, clock, max_failures=settings.max_failures,
                             lock_minutes=settings.lock_minutes, per_minute=settings.signin_per_minute)
        self.tokens = FormTokens(rt.engine, clock)
        self.runs = RunTracker(rt, clock, timeout=settings.run_timeout)
        self.hub = hub_api.discovery_hub(rt)
        self.departments = hub_api.department_names(rt)
        prefix = "__Host-" if settings.secure_cookies else ""
        self.cookie_session, self.cookie_pre = prefix + "hedui_session", prefix + "hedui_pre"
        env = Environment(loader=PackageLoader("hedui.node.console", "templates"), autoescape=select_autoescape(default=True))
        env.globals["fmt"] = lambda t, seconds=False: fmt_instant(t, clock.zone, seconds=seconds)
        env.globals["mask"] = hub_api.mask_identity
        env.globals["size"] = size_text
        self.templates = Jinja2Templates(env=env)

    def translator(self, request_or_lang) -> Translator:
        lang = request_or_lang if isinstance(request_or_lang, str) else request_or_lang.cookies.get("hedui_lang", "zh")
        return Translator(lang if lang in LANGS else "zh", self.departments)

    def set_cookie(self, resp: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        resp.set_cookie(name, value, max_age=max_age, path="/", secure=self.settings.secure_cookies, httponly=True,
                        samesite="strict")


@dataclass
class Ctx:
    console: Console
    user: User
    session: OperatorSession
    cookie: str
    t: Translator

    @property
    def rt(self):
        return self.console.rt

    def can(self, permission: str) -> bool:
        return may(self.user.role, permission)

    def require(self, permission: str) -> None:
        if not self.can(permission):
            raise AccessDenied(self, permission)


def console_of(request: Request) -> Console:
    return request.app.state.console


async def page_ctx(request: Request) -> Ctx:
    """The signed-in operator, or a redirect to the sign-in page."""
    c = console_of(request)
    cookie = request.cookies.get(c.cookie_session, "")
    session, why = await run_in_threadpool(c.sessions.get, cookie)
    if session is None:
        raise NeedSignIn(expired=why == "expired")
    user = c.users.get(session.operator)
    if user is None or user.disabled:
        await run_in_threadpool(c.sessions.delete, cookie)
        raise NeedSignIn()
    request.state.operator = user.name
    return Ctx(c, user, session, cookie, c.translator(request))


async def post_ctx(request: Request) -> tuple[Ctx, FormData]:
    """A POST from a signed-in operator whose CSRF token matches the session's."""
    ctx = await page_ctx(request)
    form = await request.form(max_files=4, max_fields=400)
    given = form.get("csrf_token") or request.headers.get("x-csrf-token")
    if not csrf_ok(ctx.session.csrf, given if isinstance(given, str) else None):
        raise AccessDenied(ctx, request.url.path, Reason.CSRF)
    return ctx, form


def render(request: Request, ctx: Ctx | None, template: str, *, code: int = 200, **kw) -> HTMLResponse:
    c = console_of(request)
    t = ctx.t if ctx is not None else c.translator(request)
    context = {"request": request, "t": t, "ctx": ctx, "user": ctx.user if ctx else None,
               "csrf": ctx.session.csrf if ctx else "", "lang": t.lang, "today": c.clock.today(), **kw}
    return c.templates.TemplateResponse(request, template, context, status_code=code)


_REASON_KEYS = {Reason.SAME_OPERATOR, Reason.NOT_RUN, Reason.INCOMPLETE, Reason.ALREADY_RESPONDED, Reason.REASON_REQUIRED, Reason.IDENTITY_IN_TEXT}


def _error_page(request: Request, status: int, message: str) -> HTMLResponse:
    return render(request, getattr(request.state, "ctx", None), "error.html", code=status, message=message)


def create_app(rt, clock: Clock, settings: ConsoleSettings) -> FastAPI:
    from hedui.node.console.routes import auth as auth_routes
    from hedui.node.console.routes import cases as case_routes
    from hedui.node.console.routes import crosscheck as crosscheck_routes
    from hedui.node.console.routes import discovery as discovery_routes

    console = Console(rt, clock, settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        console.runs.close()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.console = console
    app.mount("/static", StaticFiles(packages=[("hedui.node.console", "static")]), name="static")
    app.include_router(auth_routes.router)
    app.include_router(case_routes.router)
    app.include_router(discovery_routes.router)
    app.include_router(crosscheck_routes.router)

    @app.get("/")
    async def home() -> RedirectResponse:
        return RedirectResponse("/cases", status_code=303)

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.exception_handler(NeedSignIn)
    async def _need_signin(request: Request, exc: NeedSignIn):
        target = "/signin?expired=1" if exc.expired else "/signin"
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": target})
        resp = RedirectResponse(target, status_code=303)
        if exc.expired:
            resp.delete_cookie(console.cookie_session, path="/", secure=settings.secure_cookies, httponly=True,
                               samesite="strict")
        return resp

    @app.exception_handler(AccessDenied)
    async def _denied(request: Request, exc: AccessDenied):
        ctx = exc.ctx
        await run_in_threadpool(rt.audit.record, "console.access_denied",
                                {"operator": ctx.user.name, "action": exc.action[:100], "outcome": exc.outcome})
        msg = ctx.t("err.csrf") if exc.outcome == Reason.CSRF else ctx.t("err.denied", role=ctx.t.code("role", ctx.user.role))
        request.state.ctx = ctx
        return _error_page(request, 403, msg)

    @app.exception_handler(HeduiError)
    async def _domain(request: Request, exc: HeduiError):
        t = console.translator(request)
        what = t(f"reason.{exc.reason}") if exc.reason in _REASON_KEYS else exc.message
        if isinstance(exc, NotFound):
            return _error_page(request, 404, t("err.not_found", what=what))
        if isinstance(exc, InvalidArgument):
            return _error_page(request, 400, t("err.invalid", what=what))
        if isinstance(exc, (FailedPrecondition, PermissionDenied)):
            return _error_page(request, 409, t("err.precondition", what=what))
        log.warning("console: %s: %s", type(exc).__name__, exc.reason)
        return _error_page(request, 500, t("err.internal"))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception):
        log.error("console: unexpected %s on %s", type(exc).__name__, request.url.path)
        return _error_page(request, 500, console.translator(request)("err.internal"))

    async def refuse(scope, status: int, key: str, kw: dict) -> bytes:
        cookies = dict(p.strip().split("=", 1) for h, v in scope.get("headers", []) if h == b"cookie"
                       for p in v.decode("latin-1").split(";") if "=" in p)
        t = console.translator(cookies.get("hedui_lang", "zh"))
        tpl = console.templates.env.get_template("error.html")
        return tpl.render(t=t, ctx=None, user=None, csrf="", lang=t.lang, message=t(key, **kw), request=None).encode()

    app.add_middleware(SecurityMiddleware, max_body=settings.max_body, refuse=refuse, hsts=settings.hsts)
    return app

