"""Test wing for the console: a console served by uvicorn on a loopback port, operators,
Debian's chromium driven by Playwright (never a downloaded browser), and form helpers."""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from hedui.common.clock import FixedClock as _FixedClock
from hedui.node.console.auth import UserStore
from hedui.node.testbed import free_port

# Entries and checkpoints are stamped with a fixed instant, never the wall clock.
AUDIT_CLOCK = _FixedClock(_dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--lang=zh-CN"]
PASSWORD = "Hedui-test-2026"
OPERATORS = {"cw01": ("caseworker", "张敏"), "cw02": ("caseworker", "王强"), "rv01": ("reviewer", "李审"),
             "sv01": ("supervisor", "赵主任")}


def add_operators(path: Path) -> UserStore:
    store = UserStore(path)
    for name, (role, display) in OPERATORS.items():
        store.set_user(name, role=role, password=PASSWORD, display_name=display, create=True)
    return store


class ConsoleServer:
    """uvicorn serving an app on 127.0.0.1 in a thread; stops itself."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False, lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, name="console-uvicorn", daemon=True)

    def __enter__(self) -> ConsoleServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the console did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


def need_chromium() -> None:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium fonts-noto-cjk)")


class Browser:
    """Playwright's sync API over Debian's chromium with a fresh profile per browser."""

    def __init__(self) -> None:
        need_chromium()
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        self._profile = tempfile.mkdtemp(prefix="hedui-chromium-")
        self.context = self._pw.chromium.launch_persistent_context(
            self._profile, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
            viewport={"width": 1280, "height": 800}, locale="zh-CN", accept_downloads=False)
        self.context.set_default_timeout(20_000)

    def page(self):
        return self.context.new_page()

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()
            shutil.rmtree(self._profile, ignore_errors=True)


def sign_in(page, url: str, name: str, password: str = PASSWORD) -> None:
    page.goto(url + "/signin")
    page.fill("#name", name)
    page.fill("#password", password)
    page.click("button[type=submit]")


def unlabelled_controls(page) -> list[str]:
    """Every visible input, select and textarea that has neither a <label> nor aria-label."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('input, select, textarea'))
        .filter(e => e.type !== 'hidden')
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.getAttribute('aria-labelledby'))
        .map(e => e.outerHTML.slice(0, 120))""")


def shot(page, folder: Path, name: str) -> Path:
    """A 1280×800 screenshot of the whole page, kept for the docs when HEDUI_CONSOLE_SHOTS names a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"console-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("HEDUI_CONSOLE_SHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    return path


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert m, f"no hidden field {name}"
    return m.group(1)


class LogRecorder:
    """The node's ``audit.record`` over a real :class:`~hedui.node.audit.log.AuditLog` on a
    store, for domain functions tested without a whole node."""

    def __init__(self, engine) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from hedui.node.audit.log import AuditLog
        from hedui.node.audit.note import Signer

        origin = "hedui.test/hub"
        self.log = AuditLog(engine, origin=origin, signer=Signer(origin, Ed25519PrivateKey.generate()), clock=AUDIT_CLOCK.now)

    def record(self, kind: str, fields: dict, *, wait: bool = True):
        return self.log.append(kind, fields)

    # The rest of NodeAudit's writing interface (entries written inside the caller's own
    # transaction, issue 16), over the same log.
    def prepare(self, items: list[tuple[str, dict]]) -> list:
        return self.log.prepare_many(items)

    def write_in(self, conn, prepared: list) -> list[int]:
        return self.log.write_in(conn, prepared)

    def committed(self, seqs: list[int]) -> None:
        pass

    def transact(self, work):
        return self.log.group.run(work)

    def close(self) -> None:
        self.log.close()


def audit_entries(engine, kind: str | None = None) -> list[dict]:
    """Every audit entry on a store (decoded), optionally of one kind."""
    from sqlalchemy import select

    from hedui.node.audit.entry import decode_entry
    from hedui.node.audit.tables import audit_entries as table

    with engine.connect() as c:
        rows = [decode_entry(bytes(e)) for e in c.execute(select(table.c.entry).order_by(table.c.seq)).scalars()]
    return [r for r in rows if kind is None or r["kind"] == kind]
