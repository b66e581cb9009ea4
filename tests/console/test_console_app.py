"""The console over HTTP (FastAPI's TestClient) against a running hub and departments: sign-in,
sessions, CSRF, roles, headers, intake validation, uploads, double submission, runs, the report,
review, leads' sealed details, referrals and the monthly report — on a SQLite and a PostgreSQL
hub store, at a fixed clock."""

from __future__ import annotations

import datetime as dt
import io
import itertools
import logging
import re

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hedui.adapters.idnum import contains
from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.node.console.app import ConsoleSettings, create_app
from hedui.node.discovery.tables import referrals as referrals_table
from hedui.node.verification.hub_tables import cases

from .conftest import NOW
from .helpers import PASSWORD, audit_entries, hidden

PDF = "%PDF-1.4\n% signed 授权书 scan\n".encode()
IDS = [resident(n, 7).id_number for n in (1, 2, 3, 4)]


@pytest.fixture(scope="module")
def env(small_bed, tmp_path_factory):
    clock = FixedClock(NOW)
    keep = tmp_path_factory.mktemp("consent")
    settings_ = ConsoleSettings(users_path=small_bed.root / "console-users.toml", signin_per_minute=1000,
                                consent_max_bytes=64 * 1024, members_max_bytes=16 * 1024, keep_consent_dir=keep)
    app = create_app(small_bed.runtime("hub"), clock, settings_)
    with TestClient(app, base_url="https://testserver") as client:
        yield {"app": app, "clock": clock, "client": client, "rt": small_bed.runtime("hub"), "keep": keep}


@pytest.fixture(autouse=True)
def _reset(env):
    env["clock"].set(NOW)
    env["client"].cookies.clear()


def signin(env, name: str, password: str = PASSWORD):
    c = env["client"]
    pre = hidden(c.get("/signin").text, "pre_token")
    return c.post("/signin", data={"name": name, "password": password, "pre_token": pre}, follow_redirects=False)


def csrf_of(env, path: str = "/cases") -> str:
    return hidden(env["client"].get(path).text, "csrf_token")


def n_cases(env) -> int:
    with env["rt"].engine.connect() as c:
        return c.execute(select(func.count()).select_from(cases)).scalar_one()


_SCANS = itertools.count()
_FRESH = object()


def intake(env, ids=IDS, *, consent=_FRESH, token=None, **fields):
    """Posts the intake form; by default with a scan of its own (a one-off authorisation
    serves one case, issue 18d)."""
    if consent is _FRESH:
        consent = PDF + b"%% intake %d\n" % next(_SCANS)
    c = env["client"]
    page = c.get("/cases/new").text
    data = {"csrf_token": hidden(page, "csrf_token"), "form_token": token or hidden(page, "form_token"),
            "purpose": "dibao", "region": "370304", "identity": list(ids),
            "relation": ["applicant", "spouse", "child", "child"][: len(ids)], **fields}
    files = {"consent": ("授权书.pdf", consent, "application/pdf")} if consent is not None else {"consent": ("", b"", "")}
    return c.post("/cases", data=data, files=files, follow_redirects=False)


def test_headers_cookies_and_no_inline_script(env):
    c = env["client"]
    r = c.get("/signin")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-store" and r.headers["x-content-type-options"] == "nosniff"
    assert all(' src="' in tag for tag in re.findall(r"<script[^>]*>", r.text))  # files only, no inline script
    assert "max-age" in c.get("/static/htmx.min.js").headers["cache-control"]
    r = signin(env, "cw01")
    assert r.status_code == 303 and r.headers["location"] == "/cases"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-hedui_session=") and "HttpOnly" in cookie and "Secure" in cookie
    assert "samesite=strict" in cookie.lower() and "Path=/" in cookie
    page = c.get("/cases")
    assert page.status_code == 200 and "张敏" in page.text and "核对案件" in page.text


def test_pages_need_signin_and_wrong_password_is_refused(env):
    c = env["client"]
    r = c.get("/cases", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin"
    assert c.get("/cases/new", headers={"HX-Request": "true"}, follow_redirects=False).headers["hx-redirect"] == "/signin"
    r = signin(env, "cw01", "not-the-password")
    assert r.status_code == 401 and "工号或密码不正确" in r.text
    r = c.post("/signin", data={"name": "cw01", "password": PASSWORD, "pre_token": "forged"}, follow_redirects=False)
    assert r.status_code == 400 and "登录表单已过期" in r.text
    assert any(e["fields"]["outcome"] == "BAD_CREDENTIALS" and e["fields"]["operator"] == "cw01"
               for e in audit_entries(env["rt"].engine, "console.signin_failed"))


def test_idle_session_expires(env):
    assert signin(env, "cw01").status_code == 303
    env["clock"].advance(dt.timedelta(minutes=10))
    assert env["client"].get("/cases").status_code == 200
    env["clock"].advance(dt.timedelta(minutes=15, seconds=1))
    r = env["client"].get("/cases", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/signin?expired=1"
    assert "会话已超时" in env["client"].get("/signin?expired=1").text


def test_forged_csrf_token_is_refused_audited_and_writes_nothing(env):
    signin(env, "cw01")
    before = n_cases(env)
    r = intake(env, token=None, csrf_token="forged-token")
    assert r.status_code == 403 and "安全校验失败" in r.text
    r = env["client"].post("/cases/HUB-2026-000001/run", data={}, follow_redirects=False)
    assert r.status_code == 403
    assert n_cases(env) == before
    denied = [e["fields"] for e in audit_entries(env["rt"].engine, "console.access_denied")]
    assert {"operator": "cw01", "action": "/cases", "outcome": "CSRF"} in denied


def test_role_without_permission_is_denied_and_audited(env):
    signin(env, "rv01")
    r = env["client"].get("/cases/new")
    assert r.status_code == 403 and "无权" in r.text and "复核" in r.text
    denied = [e["fields"] for e in audit_entries(env["rt"].engine, "console.access_denied")]
    assert {"operator": "rv01", "action": "case.open", "outcome": "ROLE"} in denied


def test_identity_numbers_never_travel_in_urls_or_logs(env, caplog):
    caplog.set_level(logging.DEBUG)
    signin(env, "cw01")
    c = env["client"]
    for url in (f"/cases/{IDS[0]}", f"/leads?town={IDS[1]}", f"/cases?purpose={IDS[2][:6]}%20{IDS[2][6:]}",
                "/referrals?town=" + "".join(chr(0xFF10 + int(d)) if d.isdigit() else d for d in IDS[3])):
        r = c.get(url)
        assert r.status_code == 400 and "网址中不得含有身份证号" in r.text, url
    r = intake(env)
    assert r.status_code == 303
    c.get(r.headers["location"])
    for rec in caplog.records:
        if rec.name != "httpx":  # the test's own HTTP client logs the URLs it was given
            assert not contains(rec.getMessage()), rec.getMessage()
    assert any(rec.name == "hedui.console.access" for rec in caplog.records)


@pytest.mark.parametrize("bad, message", [
    (IDS[0][:17] + ("0" if IDS[0][17] != "0" else "1"), "校验位不符"),
    (IDS[0][:16], "位数不对"),
    (IDS[0][:6] + "19991399" + IDS[0][14:], "出生日期无效"),
    ("3703AB" + IDS[0][6:], "含有非数字字符"),
])
def test_malformed_identity_numbers_get_chinese_messages_and_nothing_is_written(env, bad, message):
    signin(env, "cw01")
    before = n_cases(env)
    r = intake(env, ids=[IDS[0], bad] if bad[:6] != IDS[0][:6] or bad != IDS[0] else [bad])
    assert r.status_code == 400 and message in r.text and "第 2 位成员" in r.text
    assert n_cases(env) == before


def test_identity_check_as_typed_shows_conversion(env):
    signin(env, "cw01")
    csrf = csrf_of(env)
    legacy = "370304850312123"

    def check(values, row):
        return env["client"].post("/cases/check-id", data={"identity": values},
                                  headers={"X-CSRF-Token": csrf, "HX-Request": "true", "HX-Trigger": f"identity-{row}"}).text

    assert "已转换为 18 位：370304198503121237" in check([IDS[0], legacy], 2)
    assert "校验通过" in check([IDS[0], legacy], 1)
    wide = "".join(chr(0xFF10 + int(d)) if d.isdigit() else d for d in IDS[1])
    assert f"已规范为：{IDS[1]}" in check([wide], 1)
    assert env["client"].post("/cases/check-id", data={"identity": IDS[0]}).status_code == 403  # no CSRF header


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_identity_check_never_fails_on_hostile_text(env, text):
    if not env["client"].cookies:
        signin(env, "cw01")
    csrf = csrf_of(env)
    r = env["client"].post("/cases/check-id", data={"identity": text}, headers={"X-CSRF-Token": csrf, "HX-Trigger": "identity-1"})
    assert r.status_code == 200 and ("✓" in r.text or "✗" in r.text or not text.strip())


def test_consent_must_be_a_pdf_within_the_limit(env):
    signin(env, "cw01")
    before, kept = n_cases(env), sorted(env["keep"].iterdir())
    r = intake(env, consent=b"GIF89a not a pdf")
    assert r.status_code == 400 and "授权书必须是 PDF" in r.text
    r = intake(env, consent=None)
    assert r.status_code == 400 and "请上传授权书" in r.text
    r = intake(env, consent=b"%PDF-" + b"x" * (80 * 1024))  # over the scan limit (64 KB)
    assert r.status_code == 400 and "授权书文件过大（上限 64 KB）" in r.text
    r = intake(env, consent=b"%PDF-" + b"x" * (400 * 1024))  # over the whole-request limit: refused unread
    assert r.status_code == 413 and "上传的文件过大" in r.text
    assert n_cases(env) == before and sorted(env["keep"].iterdir()) == kept


def test_double_submission_opens_one_case_and_keeps_the_scan_only_where_configured(env):
    signin(env, "cw01")
    before = n_cases(env)
    page = env["client"].get("/cases/new").text
    token = hidden(page, "form_token")
    scan = PDF + b"% double submission\n"
    first = intake(env, token=token, consent=scan)
    second = intake(env, token=token, consent=scan)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    assert n_cases(env) == before + 1
    import hashlib

    assert (env["keep"] / f"{hashlib.sha256(scan).hexdigest()}.pdf").read_bytes() == scan
    opened = [e["fields"] for e in audit_entries(env["rt"].engine, "case.opened")]
    assert opened[-1]["operator"] == "cw01" and opened[-1]["consent_digest"] == hashlib.sha256(scan).hexdigest()


def test_an_authorisation_used_for_a_case_is_refused_in_the_form_for_another(env):
    """Issue 18d: the same scan for a second one-off case, or for another household, is refused
    at open — the form comes back (409) saying why, no case is opened, and open_case audited
    the refusal (consent.refused)."""
    import hashlib

    signin(env, "cw01")
    scan = PDF + b"% used once\n"
    assert intake(env, consent=scan).status_code == 303
    before = n_cases(env)
    for ids, purpose, why in ((IDS, "tekun", "one-off"), (IDS[:2], "periodic_review", "another member set")):
        r = intake(env, ids=ids, consent=scan, purpose=purpose)
        assert r.status_code == 409 and "此授权书不能用于本案件" in r.text and why in r.text, r.text[-2000:]
        # The reason names the earlier case, never a member (the typed form is kept for correction).
        [msg] = [line for line in r.text.splitlines() if "此授权书不能用于本案件" in line]
        assert "HUB-" in msg and not contains(msg)
    assert n_cases(env) == before
    refused = [e["fields"] for e in audit_entries(env["rt"].engine, "consent.refused")]
    assert [(e["operator"], e["purpose"], e["outcome"]) for e in refused[-2:]] == [
        ("cw01", "tekun", "CONSENT_REUSED"), ("cw01", "periodic_review", "CONSENT_REUSED")]
    assert all(e["consent_digest"] == hashlib.sha256(scan).hexdigest() for e in refused[-2:])


def _upload(env, name: str, data: bytes):
    c = env["client"]
    page = c.get("/cases/new").text
    return c.post("/cases/upload", data={"csrf_token": hidden(page, "csrf_token"), "form_token": hidden(page, "form_token"),
                                         "purpose": "tekun", "region": "370304001"},
                  # A scan of its own: one authorisation names one household (issue 18, CONSENT_REUSED).
                  files={"members_file": (name, data, "text/csv"), "consent": ("a.pdf", PDF + b"% " + name.encode() + b"\n", "application/pdf")},
                  follow_redirects=False)


def test_members_from_csv_gbk_and_excel(env):
    from openpyxl import Workbook

    signin(env, "cw01")
    csv_text = f"身份证号,关系\n{IDS[0]},申请人\n{IDS[1]},配偶\n"
    r = _upload(env, "成员.csv", csv_text.encode("gbk"))
    assert r.status_code == 303, r.text
    page = env["client"].get(r.headers["location"]).text
    assert "配偶" in page and IDS[1][:6] + "********" + IDS[1][-4:] in page and IDS[1] not in page
    wb = Workbook()
    ws = wb.active
    for row in (("identity", "relation"), (IDS[2], "applicant"), (IDS[3], "child")):
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    r = _upload(env, "members.xlsx", buf.getvalue())
    assert r.status_code == 303, r.text
    before = n_cases(env)
    bad = f"{IDS[0]},申请人\n{IDS[1]},配偶\n{IDS[2][:17]}{'0' if IDS[2][17] != '0' else '1'},子女\n"
    r = _upload(env, "m.csv", bad.encode())
    assert r.status_code == 400 and "第 3 行：校验位不符" in r.text
    r = _upload(env, "m.txt", b"x")
    assert r.status_code == 400 and ".csv 或 .xlsx" in r.text
    assert n_cases(env) == before


def test_run_progress_report_and_review(env):
    signin(env, "cw01")
    ref = intake(env).headers["location"].rsplit("/", 1)[1]
    c = env["client"]
    csrf = csrf_of(env, f"/cases/{ref}")
    r = c.post(f"/cases/{ref}/run", headers={"X-CSRF-Token": csrf, "HX-Request": "true"})
    assert r.status_code == 200 and 'id="progress-table"' in r.text
    run = env["app"].state.console.runs.state(ref)
    assert run.done.wait(60)
    frag = c.get(f"/cases/{ref}/progress").text
    assert "核对完成" in frag and "hx-trigger" not in frag  # polling stops when done
    assert frag.count('class="dep st-ok"') == 2 and "博山区税务局（tax）" in frag
    assert [e["fields"]["operator"] for e in audit_entries(env["rt"].engine, "case.run") if e["fields"]["case_ref"] == ref] == ["cw01"]
    page = c.get(f"/cases/{ref}/report").text
    assert f'src="/cases/{ref}/report/document?lang=zh"' in page
    doc = c.get(f"/cases/{ref}/report/document")
    assert doc.status_code == 200 and "居民家庭经济状况核对报告" in doc.text and "/static/print-a4.css" in doc.text
    assert "frame-ancestors 'self'" in doc.headers["content-security-policy"] and doc.headers["x-frame-options"] == "SAMEORIGIN"
    assert "Household economic status" in c.get(f"/cases/{ref}/report/document?lang=en").text
    assert not any(i in doc.text for i in IDS)
    # the operator who opened the case cannot review it; a reviewer can
    assert c.post(f"/cases/{ref}/review", data={"csrf_token": csrf, "form_token": "t1", "decision": "approved"}).status_code == 403
    c.cookies.clear()
    signin(env, "rv01")
    page = c.get(f"/cases/{ref}").text
    assert "核对基准月" in page  # the case's reference month is shown (issue 12)
    r = c.post(f"/cases/{ref}/review", data={"csrf_token": hidden(page, "csrf_token"), "form_token": hidden(page, "form_token"),
                                             "decision": "approved", "note": "同意"}, follow_redirects=False)
    assert r.status_code == 303
    assert "同意" in c.get(f"/cases/{ref}").text
    (e,) = [e for e in audit_entries(env["rt"].engine, "case.reviewed") if e["fields"]["case_ref"] == ref]
    assert e["fields"]["operator"] == "rv01" and e["fields"]["decision"] == "approved"
    assert c.post(f"/cases/{ref}/members", data={"csrf_token": hidden(page, "csrf_token")}).status_code == 403


def test_full_identity_numbers_on_request_are_audited(env):
    signin(env, "cw01")
    ref = intake(env).headers["location"].rsplit("/", 1)[1]
    page = env["client"].get(f"/cases/{ref}").text
    assert IDS[0] not in page
    r = env["client"].post(f"/cases/{ref}/members", data={"csrf_token": hidden(page, "csrf_token")})
    assert IDS[0] in r.text and "本次查看已记录" in r.text and IDS[0] not in r.text.split("<title>")[1].split("</title>")[0]
    assert any(e["fields"] == {"case_ref": ref, "operator": "cw01", "count": 4}
               for e in audit_entries(env["rt"].engine, "case.members_shown"))


def _manual_leads(env) -> list[int]:
    hub = env["app"].state.console.hub
    at = NOW - dt.timedelta(days=14)
    out = []
    for n, (region, typ, note) in enumerate([("370304001", "illness", "独居老人，行动不便"),
                                              ("370304002", "fire_loss", "房屋部分烧毁")], start=21):
        acc = hub.add_manual_lead(identity=resident(n, 7).id_number, region=region, event_type=typ,
                                  event_date=(at - dt.timedelta(days=1)).date(), reporter="grid07", note=note, now=at)
        out.append(acc.lead_id)
    return out


def test_leads_sealed_details_need_a_reason_and_are_audited(env):
    ids = _manual_leads(env)
    signin(env, "cw01")
    c = env["client"]
    page = c.get("/leads?town=370304001").text
    assert f'id="lead-{ids[0]}"' in page and f'id="lead-{ids[1]}"' not in page and "独居老人" not in page
    csrf = hidden(page, "csrf_token")
    r = c.post("/leads/details", data={"csrf_token": csrf, "lead_id": [str(i) for i in ids], "reason": ""})
    assert r.status_code == 400 and "请填写查看事由" in r.text
    r = c.post("/leads/details", data={"csrf_token": csrf, "lead_id": [str(i) for i in ids], "reason": "入户核查前了解情况"},
               headers={"HX-Request": "true"})
    assert r.status_code == 200 and "独居老人，行动不便" in r.text and "房屋部分烧毁" in r.text
    assert resident(21, 7).id_number in r.text and "<html" not in r.text  # a fragment for htmx
    e = audit_entries(env["rt"].engine, "lead.details_opened")[-1]["fields"]
    assert e == {"operator": "cw01", "reason": "入户核查前了解情况", "leads": sorted(ids), "count": 2}
    c.cookies.clear()
    signin(env, "rv01")
    assert c.post("/leads/details", data={"csrf_token": csrf_of(env, "/leads"), "lead_id": str(ids[0]),
                                          "reason": "想看看"}).status_code == 403


def test_referrals_turn_overdue_and_answers_are_audited_once(env):
    lead_ids = _manual_leads(env)
    with env["rt"].engine.connect() as c:
        rows = c.execute(select(referrals_table.c.referral_id, referrals_table.c.due_date)
                         .where(referrals_table.c.lead_id.in_(lead_ids))).all()
    rid, due = rows[0]
    signin(env, "cw01")
    c = env["client"]
    env["clock"].set(dt.datetime.combine(due, dt.time(12), tzinfo=dt.UTC))  # the due day itself
    assert f'<tr id="referral-{rid}" class="">' in c.get("/referrals").text
    env["clock"].set(dt.datetime.combine(due + dt.timedelta(days=1), dt.time(4), tzinfo=dt.UTC))
    page = c.get("/referrals").text
    assert f'<tr id="referral-{rid}" class="overdue">' in page and "已逾期" in page
    assert f'id="referral-{rid}"' in c.get("/referrals?overdue=1").text
    form = c.get(f"/referrals/{rid}").text
    data = {"csrf_token": hidden(form, "csrf_token"), "form_token": hidden(form, "form_token"), "outcome": "assisted",
            "programme": "dibao"}
    r1 = c.post(f"/referrals/{rid}/respond", data=data, follow_redirects=False)
    r2 = c.post(f"/referrals/{rid}/respond", data=data, follow_redirects=False)  # double click
    assert r1.status_code == r2.status_code == 303 and r1.headers["location"] == r2.headers["location"]
    answered = [e["fields"] for e in audit_entries(env["rt"].engine, "referral.responded") if e["fields"]["referral_id"] == rid]
    assert answered == [{"referral_id": rid, "operator": "cw01", "outcome": "assisted", "programme": "dibao"}]
    r = c.post(f"/referrals/{rows[1][0]}/respond", data={**data, "form_token": "fresh", "outcome": "bogus"})
    assert r.status_code == 400
    assert c.post("/referrals/escalate", data={"csrf_token": data["csrf_token"], "form_token": "e1"}).status_code == 403
    c.cookies.clear()
    signin(env, "sv01")
    page = c.get("/referrals").text
    r = c.post("/referrals/escalate", data={"csrf_token": hidden(page, "csrf_token"), "form_token": hidden(page, "form_token")},
               follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/referrals?escalated=")
    e = audit_entries(env["rt"].engine, "referral.escalated")[-1]["fields"]
    assert e["operator"] == "sv01" and rows[1][0] in e["referrals"]
    assert "已督办" in c.get("/referrals").text


def test_monthly_report_page_and_document(env):
    _manual_leads(env)
    signin(env, "rv01")
    page = env["client"].get("/reports/monthly?month=2026-11").text
    assert 'src="/reports/monthly/document?month=2026-11"' in page
    doc = env["client"].get("/reports/monthly/document?month=2026-11")
    assert "社会救助主动发现工作月报 2026年11月" in doc.text and "<svg" in doc.text
    assert "frame-ancestors 'self'" in doc.headers["content-security-policy"]
