"""Sign-in in a real browser (Debian's chromium via Playwright): keyboard only, wrong
password, lock-out, an expired session, a forged CSRF token; every control labelled."""

from __future__ import annotations

import datetime as dt

import pytest

from hedui.common.clock import FixedClock

from .conftest import NOW, SMALL, make_bed, start_console
from .helpers import PASSWORD, add_operators, audit_entries, shot, sign_in, unlabelled_controls

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-signin") / "fed"
    tb = make_bed(root, SMALL[:2], residents=60)
    add_operators(root / "console-users.toml")
    clock = FixedClock(NOW)
    app, server = start_console(tb, clock, max_failures=3)
    with server:
        yield {"url": server.url, "clock": clock, "tb": tb, "app": app}
    tb.stop()


@pytest.fixture
def page(browser, site):
    site["clock"].set(NOW)
    browser.context.clear_cookies()
    p = browser.page()
    yield p
    p.close()


def test_keyboard_only_sign_in(page, site, shots):
    page.goto(site["url"] + "/cases")
    assert page.url.endswith("/signin")
    assert unlabelled_controls(page) == []
    shot(page, shots, "signin")
    # the name field has focus; type, Tab, type, Enter
    page.keyboard.type("cw01")
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url("**/cases")
    assert page.locator("header .who").inner_text().startswith("张敏（经办）")
    assert "核对工作台" in page.title()
    # the skip link is the first stop for a keyboard user
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"


def test_wrong_password_then_lockout(page, site):
    sign_in(page, site["url"], "cw02", "wrong-password-1")
    assert "工号或密码不正确" in page.locator("[role=alert]").inner_text()
    sign_in(page, site["url"], "cw02", "wrong-password-2")
    sign_in(page, site["url"], "cw02", "wrong-password-3")
    assert "账号已锁定至 2026-12-01 10:55 (UTC+8)" in page.locator("[role=alert]").inner_text()
    sign_in(page, site["url"], "cw02", PASSWORD)
    assert "多次登录失败已被锁定" in page.locator("[role=alert]").inner_text() and page.url.endswith("/signin")
    site["clock"].advance(dt.timedelta(minutes=16))
    sign_in(page, site["url"], "cw02", PASSWORD)
    page.wait_for_url("**/cases")
    outcomes = [e["fields"]["outcome"] for e in audit_entries(site["tb"].runtime("hub").engine, "console.signin_failed")
                if e["fields"]["operator"] == "cw02"]
    assert outcomes == ["BAD_CREDENTIALS", "BAD_CREDENTIALS", "LOCKED_OUT", "LOCKED"]


def test_expired_session_returns_to_sign_in(page, site):
    sign_in(page, site["url"], "cw01")
    page.wait_for_url("**/cases")
    site["clock"].advance(dt.timedelta(minutes=16))
    page.click("nav a[href='/leads']")
    page.wait_for_url("**/signin?expired=1")
    assert "会话已超时" in page.locator("[role=status]").inner_text()


def test_forged_csrf_token_is_refused(page, site):
    sign_in(page, site["url"], "cw01")
    page.wait_for_url("**/cases")
    page.evaluate("document.querySelector('form[action=\"/signout\"] input[name=csrf_token]').value = 'forged'")
    page.click("form[action='/signout'] button")
    assert "安全校验失败" in page.locator("[role=alert]").inner_text()
    page.goto(site["url"] + "/cases")  # still signed in: the forged request did nothing
    assert page.url.endswith("/cases")


def test_english_switch(page, site):
    sign_in(page, site["url"], "rv01")
    page.wait_for_url("**/cases")
    page.click("a.lang")
    page.wait_for_url("**/cases")
    assert page.locator("h1").inner_text() == "Cases" and page.get_attribute("html", "lang") == "en"
    page.click("a.lang")
    assert page.locator("h1").inner_text() == "核对案件"
