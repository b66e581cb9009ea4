"""Discovery in a real browser: leads merged from the departments' signed, sealed notices, their
sealed details opened for a page with a reason, a referral answered, an overdue referral turning
red at a fixed clock, the monthly report with its chart."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from hedui.common.clock import FixedClock, utc
from hedui.node.discovery.tables import referrals

from .conftest import NOW, start_console
from .helpers import audit_entries, shot, sign_in, unlabelled_controls

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def site(full_bed):
    clock = FixedClock(NOW)
    app, server = start_console(full_bed, clock)
    with server:
        yield {"url": server.url, "clock": clock, "tb": full_bed, "app": app}


@pytest.fixture
def page(browser, site):
    site["clock"].set(NOW)
    browser.context.clear_cookies()
    p = browser.page()
    sign_in(p, site["url"], "cw01")
    p.wait_for_url("**/cases")
    yield p
    p.close()


def _referrals(site) -> list:
    with site["tb"].runtime("hub").engine.connect() as c:
        return c.execute(select(referrals).order_by(referrals.c.referral_id)).all()


def test_leads_and_their_sealed_details_for_a_page(page, site, shots):
    page.goto(site["url"] + "/leads")
    assert unlabelled_controls(page) == []
    rows = page.locator("table.leads > tbody > tr[id^=lead-]")
    assert rows.count() >= 3
    merged = [i for i in range(rows.count()) if rows.nth(i).locator("ul.events li").count() > 1]
    assert merged, "a person reported by two departments is one lead"
    assert "区人民医院" not in page.locator("main").inner_text()  # sealed until opened
    shot(page, shots, "leads")
    page.fill("#reason", "月度入户走访前核实")
    page.click("#open-page")
    page.locator("#opened-notice").wait_for()
    text = page.locator("#leads-table").inner_text()
    assert "区人民医院" in text and "医院" in text and "入院日期" in text
    shot(page, shots, "leads-opened")
    (e,) = [e for e in audit_entries(site["tb"].runtime("hub").engine, "lead.details_opened")
            if e["fields"]["reason"] == "月度入户走访前核实"]
    assert e["fields"]["operator"] == "cw01" and e["fields"]["count"] == rows.count()


def test_one_lead_and_the_filters(page, site):
    page.goto(site["url"] + "/leads")
    page.select_option("#f-type", "newly_certified_disabled")
    page.click("form.filters button[type=submit]")
    page.wait_for_url("**/leads?*type=newly_certified_disabled*")
    first = page.locator("table.leads > tbody > tr[id^=lead-] a").first
    first.click()
    page.wait_for_url("**/leads/*")
    assert "新办残疾人证" in page.locator("main").inner_text()
    page.fill("#reason", "核实残疾等级")
    page.click("#open-one")
    sealed = page.locator(".sealed").inner_text()
    assert "证号 CDPF-" in sealed and "类别" in sealed and "数值" in sealed


def test_overdue_referral_turns_red_and_is_answered(page, site, shots):
    refs = [r for r in _referrals(site) if r.status == "open"]
    target = refs[0]
    due = target.due_date
    site["clock"].set(dt.datetime.combine(due, dt.time(10), tzinfo=dt.timezone(dt.timedelta(hours=8))))
    sign_in(page, site["url"], "cw01")  # a week later: the morning's session has long expired
    page.goto(site["url"] + "/referrals")
    row = page.locator(f"#referral-{target.referral_id}")
    assert "overdue" not in (row.get_attribute("class") or "")
    site["clock"].set(dt.datetime.combine(due + dt.timedelta(days=1), dt.time(9), tzinfo=dt.timezone(dt.timedelta(hours=8))))
    sign_in(page, site["url"], "cw01")
    page.goto(site["url"] + "/referrals")
    row = page.locator(f"#referral-{target.referral_id}")
    assert "overdue" in row.get_attribute("class")
    colour = row.locator("td").first.evaluate("e => getComputedStyle(e).color")
    assert colour == "rgb(176, 0, 32)"  # red text on a red-tinted row, and the word 已逾期
    assert "已逾期" in row.inner_text()
    shot(page, shots, "referrals")
    page.click(f"#referral-{target.referral_id} a[href='/referrals/{target.referral_id}']")
    assert unlabelled_controls(page) == []
    page.select_option("#outcome", "assisted")
    page.select_option("#programme", "medical")
    shot(page, shots, "respond")
    page.click("#respond-submit")
    page.wait_for_url("**/referrals?saved=*")
    row = page.locator(f"#referral-{target.referral_id}")
    assert "已纳入救助" in row.inner_text() and "医疗救助" in row.inner_text()
    assert "overdue" not in (row.get_attribute("class") or "")


def test_monthly_report_with_its_chart(page, site, shots):
    created = utc(_referrals(site)[0].created_at).astimezone(site["clock"].zone)  # the month in China
    month = f"{created.year:04d}-{created.month:02d}"
    page.goto(f"{site['url']}/reports/monthly?month={month}")
    assert unlabelled_controls(page) == []
    frame = page.frame_locator("#monthly-frame")
    assert "社会救助主动发现工作月报" in frame.locator("h1").inner_text()
    assert frame.locator("svg[role=img] rect").count() > 3
    page.wait_for_function("() => document.querySelector('#monthly-frame').offsetHeight > 600")
    shot(page, shots, "monthly")
