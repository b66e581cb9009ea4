"""The console's shell: security headers, request size limits, no identity numbers in URLs
or logs, CSRF tokens and once-only form tokens.

Pure ASGI middleware (not ``BaseHTTPMiddleware``) so a refusal happens before any body is
read: an oversized upload is refused from its ``Content-Length`` before a byte is parsed or
spooled, and a URL holding something shaped like an identity number is refused before
routing, logging or rendering it.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from urllib.parse import unquote

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from hedui.adapters.idnum import contains, scrub
from hedui.node.console.tables import console_form_tokens

__all__ = ["SecurityMiddleware", "page_csp", "DOCUMENT_CSP", "csrf_ok", "FormTokens", "new_token"]

access_log = logging.getLogger("hedui.console.access")

# No inline script anywhere: htmx and console.js are files; htmx's eval and inline indicator
# styles are switched off in base.html's htmx-config.
page_csp = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
            "form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'")
# Report documents (the domain's own HTML, shown in an <iframe> of the console page): their
# inline <style> is allowed, script is not, and only the console itself may frame them.
DOCUMENT_CSP = ("default-src 'none'; style-src 'self' 'unsafe-inline'; img-src data:; frame-ancestors 'self'; "
                "base-uri 'none'; form-action 'none'")

Refuse = Callable[[dict, int, str, dict], Awaitable[bytes]]


def new_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), str(given).encode())


class SecurityMiddleware:
    """Headers on every response; refuses identity-shaped URLs and oversized bodies; logs one
    scrubbed line per request (method, path without query, status, operator, milliseconds)."""

    def __init__(self, app, *, max_body: int, refuse: Refuse, hsts: bool = False) -> None:
        self.app, self.max_body, self.refuse, self.hsts = app, max_body, refuse, hsts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status_box = {"status": 0}
        path = scope.get("path", "")
        query = scope.get("query_string", b"").decode("latin-1")

        async def send_wrapped(message):
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", [])]
                present = {k.lower() for k, _ in headers}
                is_static = path.startswith("/static/")
                add = {
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"x-frame-options": b"DENY",
                    b"content-security-policy": page_csp.encode(),
                    b"cross-origin-opener-policy": b"same-origin",
                    b"cross-origin-resource-policy": b"same-origin",
                    b"permissions-policy": b"camera=(), microphone=(), geolocation=(), payment=()",
                    # Every page may show personal data: never stored by the browser or a proxy.
                    b"cache-control": b"private, max-age=3600" if is_static else b"no-store",
                }
                if not is_static:
                    add[b"pragma"] = b"no-cache"
                if self.hsts:
                    add[b"strict-transport-security"] = b"max-age=31536000"
                for k, v in add.items():
                    if k not in present:
                        headers.append((k, v))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if _id_shaped(path) or _id_shaped(query):
                return await self._refuse(scope, receive, send_wrapped, 400, "err.id_in_url", {})
            if scope["method"] == "POST":
                length = dict(scope["headers"]).get(b"content-length")
                if length is None or not length.isdigit() or int(length) > self.max_body:
                    return await self._refuse(scope, receive, send_wrapped, 413, "err.too_large",
                                              {"limit": _size(self.max_body)})
            await self.app(scope, receive, send_wrapped)
        finally:
            operator = scope.get("state", {}).get("operator", "-")
            access_log.info("%s %s %s %s %.0fms", scope.get("method"), scrub(path), status_box["status"], operator,
                            (time.monotonic() - started) * 1000)

    async def _refuse(self, scope, receive, send, status: int, key: str, kw: dict) -> None:
        # Drain (and drop) what the client is still sending, up to a bound: a browser that is
        # cut off mid-upload shows a connection error instead of the message.
        drained, more = 0, scope["method"] == "POST"
        while more and drained <= 8 * self.max_body:
            msg = await receive()
            drained += len(msg.get("body", b""))
            more = msg.get("more_body", False) and msg["type"] == "http.request"
        body = await self.refuse(scope, status, key, kw)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/html; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


def _id_shaped(part: str) -> bool:
    """Anything shaped like an identity number, also written with spaces (``+``/``%20``)."""
    text = unquote(part.replace("+", " "))
    return contains(text) or contains(re.sub(r"[\s\u3000]+", "", text))


def _size(n: int) -> str:
    from hedui.node.console.forms import size_text

    return size_text(n)


class FormTokens:
    """Once-only form tokens: ``claim`` is true the first time a token is submitted; later
    submissions get the page the first one led to (``result``), or ``None`` while it runs."""

    def __init__(self, engine, clock) -> None:
        self.engine, self.clock = engine, clock

    def claim(self, token: str, operator: str) -> tuple[bool, str | None]:
        if not token or len(token) > 64:
            return False, None
        try:
            with self.engine.begin() as c:
                c.execute(insert(console_form_tokens).values(token=token, operator=operator, created_at=self.clock.now()))
            return True, None
        except IntegrityError:
            with self.engine.connect() as c:
                row = c.execute(select(console_form_tokens).where(console_form_tokens.c.token == token)).first()
            return False, (row.result if row is not None and row.operator == operator else None)

    def done(self, token: str, result: str) -> None:
        with self.engine.begin() as c:
            c.execute(update(console_form_tokens).where(console_form_tokens.c.token == token).values(result=result[:200]))

    def release(self, token: str) -> None:
        """The action failed validation: the same form may be corrected and sent again."""
        with self.engine.begin() as c:
            c.execute(delete(console_form_tokens).where(console_form_tokens.c.token == token,
                                                        console_form_tokens.c.result.is_(None)))
