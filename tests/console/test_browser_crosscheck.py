"""Cross-check results in a real browser (issue 15 item 4): a supervisor runs a configured
check with the keyboard only, reads the hits by reason (masked) and follows a hit to the
stop-warning lead it became; every control labelled; the English switch; a screenshot at
1280×800 for docs/caseworker.md."""

from __future__ import annotations

import re

import pytest

from hedui.adapters.idnum import contains
from hedui.common.clock import FixedClock

from .conftest import NOW, start_console
from .helpers import audit_entries, shot, sign_in, unlabelled_controls
from .test_console_crosscheck import PEOPLE, write_checks

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(small_bed, tmp_path_factory):
    checks = tmp_path_factory.mktemp("checks")
    write_checks(checks)
    clock = FixedClock(NOW)
    app, server = start_console(small_bed, clock, checks_dir=checks)
    with server:
        yield {"url": server.url, "clock": clock, "tb": small_bed, "checks": checks}


@pytest.fixture
def page(browser, site):
    browser.context.clear_cookies()
    p = browser.page()
    yield p
    p.close()


def _tab_to(page, selector: str, limit: int = 40) -> None:
    for _ in range(limit):
        if page.evaluate("(s) => document.activeElement === document.querySelector(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {selector}")


def test_supervisor_runs_a_check_and_follows_a_hit_to_its_lead(page, site, shots):
    sign_in(page, site["url"], "sv01")
    page.wait_for_url("**/cases")
    page.goto(site["url"] + "/crosscheck")
    assert page.locator("h1").inner_text() == "大数据比对结果"
    assert unlabelled_controls(page) == []
    # Keyboard only: to the check file, tick nothing, run.
    _tab_to(page, "#check")
    _tab_to(page, "#run-check")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/crosscheck/\d+$"))
    run_id = int(page.url.rsplit("/", 1)[1])
    main = page.locator("main").inner_text()
    assert "2026-11 收入比对（测试）" in main and "高收入" in main and "上年度应纳税所得额 ≥ 100000" in main
    hits = page.locator("table.hits > tbody > tr")
    n = hits.count()
    assert n > 0
    assert re.search(r"\d{6}\*{8}\d{3}[\dX]", hits.first.inner_text())
    html = page.content()
    assert not contains(html) and not any(p in html for p in PEOPLE), "identities only masked"
    assert not contains(page.title()) and not contains(page.url)
    assert unlabelled_controls(page) == []
    shot(page, shots, "crosscheck")
    # Hits by reason: the reason's link keeps only its hits (a code in the URL, no person).
    page.click("#reason-high_income a")
    page.wait_for_url("**/crosscheck/*?reason=high_income")
    assert page.locator("table.hits > tbody > tr").count() == n
    # A hit's lead: the stop warning, routed to the person's town.
    page.locator("table.hits > tbody > tr a[href^='/leads/']").first.click()
    page.wait_for_url(re.compile(r".*/leads/\d+$"))
    assert "拒止预警：高收入" in page.locator("main").inner_text()
    viewed = [e["fields"] for e in audit_entries(site["tb"].runtime("hub").engine, "crosscheck.viewed")
              if e["fields"]["run_id"] == run_id]
    assert [(e["operator"], e["reason"]) for e in viewed] == [("sv01", ""), ("sv01", "high_income")]


def test_caseworker_sees_results_in_english_without_the_run_form(page, site):
    from hedui.node.crosscheck.history import list_runs, run_named_check

    rt = site["tb"].runtime("hub")
    if not list_runs(rt.engine):  # run alone: a run to read (the domain's own call, as the CLI's)
        run_named_check(rt, site["checks"], "income.toml", operator="sv01")
    sign_in(page, site["url"], "cw01")
    page.wait_for_url("**/cases")
    page.goto(site["url"] + "/crosscheck")
    assert page.locator("#check").count() == 0 and page.locator("#run-check").count() == 0
    page.click("a.lang")
    page.wait_for_url("**/crosscheck")
    assert page.locator("h1").inner_text() == "Cross-check results"
    assert unlabelled_controls(page) == []
    page.locator("table.runs > tbody > tr a").first.click()
    page.wait_for_url(re.compile(r".*/crosscheck/\d+$"))
    main = page.locator("main").inner_text()
    assert "Stop-warning lead" in main and "high income" in main


def test_keyboard_only_from_the_skip_link_to_a_hit_lead_and_its_sealed_details(page, site):
    """Issue 15 "keyboard-only use works": the skip link, the cross-check pages and a lead's
    sealed details, without a click."""
    from hedui.node.crosscheck.history import list_runs, run_named_check

    rt = site["tb"].runtime("hub")
    if not list_runs(rt.engine):
        run_named_check(rt, site["checks"], "income.toml", operator="sv01")
    run_id = list_runs(rt.engine)[0].run_id
    sign_in(page, site["url"], "cw01")
    page.wait_for_url("**/cases")
    page.goto(site["url"] + f"/crosscheck/{run_id}")
    # The first Tab reaches the skip link; Enter moves the focus into the page's main part.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # On to the first hit's lead, by Tab and Enter only.
    _tab_to(page, "table.hits > tbody > tr a[href^='/leads/']", limit=60)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/leads/\d+$"))
    _tab_to(page, "#reason")
    page.keyboard.type("比对命中核实")
    _tab_to(page, "#open-one")
    page.keyboard.press("Enter")
    page.locator(".sealed").wait_for()
    assert page.locator(".sealed").inner_text().strip()
    assert not contains(page.url) and not contains(page.title())
