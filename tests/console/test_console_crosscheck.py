"""Cross-check results in the console (issue 15 item 4) over HTTP against a running hub and
departments (SQLite and PostgreSQL hub store): a supervisor runs a configured check file, the
run is listed with its hits by reason, each hit masked with the lead it became; roles, CSRF,
bad input and double submission refused with nothing written; reading and running audited
by the domain with the operator."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from hedui.adapters.idnum import contains
from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.node.console.app import ConsoleSettings, create_app
from hedui.node.crosscheck.history import crosscheck_hits, crosscheck_runs, run_hits

from .conftest import NOW
from .helpers import PASSWORD, audit_entries, hidden

TOWNS = ["370304001", "370304002", "370304003"]
PEOPLE = [resident(n, 7).id_number for n in range(1, 41)]
CHECK = """
name = "2026-11 收入比对（测试）"
reference_month = "2026-11"
operator = "S01"

[population]
file = "pop.csv"
region = "370304001"

[[criteria]]
name = "high_income"
department = "tax"
field = "income_last_year"
op = ">="
value = "100000"
"""


def write_checks(folder) -> None:
    """One check file and its population (40 testbed residents over three towns, one bad line)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["identity,town"] + [f"{p},{TOWNS[i % 3]}" for i, p in enumerate(PEOPLE)] + ["123456789012345678,370304001"]
    (folder / "pop.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "income.toml").write_text(CHECK, encoding="utf-8")


@pytest.fixture(scope="module")
def env(small_bed, tmp_path_factory):
    clock = FixedClock(NOW)
    checks = tmp_path_factory.mktemp("checks")
    write_checks(checks)
    s = ConsoleSettings(users_path=small_bed.root / "console-users.toml", signin_per_minute=1000, checks_dir=checks)
    app = create_app(small_bed.runtime("hub"), clock, s)
    with TestClient(app, base_url="https://testserver") as client:
        yield {"client": client, "rt": small_bed.runtime("hub"), "clock": clock}


@pytest.fixture(autouse=True)
def _reset(env):
    env["clock"].set(NOW)
    env["client"].cookies.clear()


def signin(env, name: str) -> None:
    c = env["client"]
    pre = hidden(c.get("/signin").text, "pre_token")
    assert c.post("/signin", data={"name": name, "password": PASSWORD, "pre_token": pre}, follow_redirects=False).status_code == 303


def n_runs(env) -> int:
    with env["rt"].engine.connect() as c:
        return c.execute(select(func.count()).select_from(crosscheck_runs)).scalar_one()


def start(env, **data):
    c = env["client"]
    page = c.get("/crosscheck").text
    form = {"csrf_token": hidden(page, "csrf_token"), "form_token": hidden(page, "form_token"), "check": "income.toml", **data}
    return c.post("/crosscheck/run", data=form, follow_redirects=False), form


def test_supervisor_runs_a_check_and_reads_its_hits_masked(env):
    signin(env, "sv01")
    before = n_runs(env)
    r, form = start(env)
    assert r.status_code == 303, r.text
    run_id = int(re.fullmatch(r"/crosscheck/(\d+)", r.headers["location"]).group(1))
    assert n_runs(env) == before + 1
    # The same form again (a double click): no second run, the first run's page.
    again = env["client"].post("/crosscheck/run", data=form, follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == f"/crosscheck/{run_id}" and n_runs(env) == before + 1
    # What the domain kept (its own tests check it against the departments' data).
    want = run_hits(env["rt"], run_id, operator="test")
    assert want, "some of the 40 residents had a taxable income of 100,000 or more"
    page = env["client"].get(f"/crosscheck/{run_id}").text
    assert "2026-11 收入比对（测试）" in page and "高收入" in page and "上年度应纳税所得额 ≥ 100000" in page
    rows = re.findall(r'<tr id="hit-(\d+)">', page)
    assert len(rows) == len(want)
    for h in want:
        assert h["identity"] in page and f'href="/leads/{h["lead_id"]}"' in page
    assert not contains(page), "no full identity number on the page"
    assert "赵主任" in page or "sv01" in page
    # The list shows the run with its count by reason.
    listing = env["client"].get("/crosscheck").text
    assert f'id="run-{run_id}"' in listing and f"高收入：{len(want)}" in listing
    # Audited by the domain, with the operator: the run, and each reading of its hits.
    runs = [e["fields"] for e in audit_entries(env["rt"].engine, "crosscheck.run") if e["fields"].get("run_id") == run_id]
    assert [(e["operator"], e["population"]) for e in runs] == [("sv01", 40)]
    viewed = [e["fields"] for e in audit_entries(env["rt"].engine, "crosscheck.viewed") if e["fields"]["run_id"] == run_id]
    assert ("sv01", len(want)) in [(e["operator"], e["count"]) for e in viewed]
    # The lead a hit became reads as a stop warning.
    lead = env["client"].get(f"/leads/{want[0]['lead_id']}").text
    assert "拒止预警：高收入" in lead


def test_count_only_run_keeps_counts_and_nobody(env):
    signin(env, "sv01")
    r, _ = start(env, count_only="1")
    run_id = int(r.headers["location"].rsplit("/", 1)[1])
    page = env["client"].get(f"/crosscheck/{run_id}").text
    assert "仅统计" in page and 'id="hit-' not in page
    with env["rt"].engine.connect() as c:
        assert c.execute(select(func.count()).select_from(crosscheck_hits).where(crosscheck_hits.c.run_id == run_id)).scalar_one() == 0


def test_caseworker_reads_but_may_not_run_and_the_refusal_is_audited(env):
    signin(env, "sv01")
    start(env)
    env["client"].cookies.clear()
    signin(env, "cw01")
    page = env["client"].get("/crosscheck").text
    assert 'action="/crosscheck/run"' not in page and 'id="run-' in page
    before = n_runs(env)
    csrf = hidden(page, "csrf_token")
    r = env["client"].post("/crosscheck/run", data={"csrf_token": csrf, "form_token": "x", "check": "income.toml"},
                           follow_redirects=False)
    assert r.status_code == 403 and "无权" in r.text and n_runs(env) == before
    denied = [e["fields"] for e in audit_entries(env["rt"].engine, "console.access_denied")]
    assert {"operator": "cw01", "action": "crosscheck.run", "outcome": "ROLE"} in denied


def test_bad_input_is_a_clear_message_and_writes_nothing(env):
    signin(env, "sv01")
    before = n_runs(env)
    for name in ("../etc/passwd", "pop.csv", "missing.toml", ""):
        r, _ = start(env, check=name)
        assert r.status_code == 400 and "输入有误" in r.text and "Traceback" not in r.text, name
    # A forged CSRF token: refused, audited, nothing run.
    page = env["client"].get("/crosscheck").text
    r = env["client"].post("/crosscheck/run", data={"csrf_token": "forged", "form_token": hidden(page, "form_token"),
                                                    "check": "income.toml"}, follow_redirects=False)
    assert r.status_code == 403 and "安全校验失败" in r.text
    assert n_runs(env) == before
    assert env["client"].get("/crosscheck/999999").status_code == 404
    assert env["client"].get("/crosscheck/abc").status_code in (404, 422)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(reason=st.text(max_size=40), page=st.integers(-5, 10**6))
def test_any_reason_or_page_in_the_url_is_harmless(env, reason, page):
    env["client"].cookies.clear()
    signin(env, "rv01")
    r = env["client"].get("/crosscheck", params={"page": page})
    assert r.status_code == 200
    ids = [int(x) for x in re.findall(r'id="run-(\d+)"', env["client"].get("/crosscheck").text)]
    if ids:
        r = env["client"].get(f"/crosscheck/{ids[0]}", params={"reason": reason})
        assert r.status_code in (200, 400) and "Traceback" not in r.text


class _Controls(HTMLParser):
    """Form controls, labels and tab order of one page, as a screen reader and a keyboard see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.controls: list[dict] = []
        self.label_for: set[str] = set()
        self.open_labels = 0
        self.tabindex: list[int] = []
        self.buttons: list[list] = []   # [attrs, text]
        self.in_button: list | None = None
        self.lang = ""
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.lang = a.get("lang") or ""
        if tag == "title":
            self._in_title = True
        if tag == "label":
            self.open_labels += 1
            if a.get("for"):
                self.label_for.add(a["for"])
        if "tabindex" in a:
            self.tabindex.append(int(a["tabindex"]))
        if tag in ("input", "select", "textarea") and a.get("type") != "hidden":
            self.controls.append({"tag": tag, "id": a.get("id"), "aria": a.get("aria-label") or a.get("aria-labelledby"),
                                  "wrapped": self.open_labels > 0, "name": a.get("name")})
        if tag == "button":
            self.in_button = [a, ""]
            self.buttons.append(self.in_button)

    def handle_endtag(self, tag):
        if tag == "label":
            self.open_labels = max(0, self.open_labels - 1)
        if tag == "button":
            self.in_button = None
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self.in_button is not None:
            self.in_button[1] += data.strip()
        if self._in_title:
            self.title += data


def _problems(html: str) -> list[str]:
    p = _Controls()
    p.feed(html)
    out = [f"unlabelled {c['tag']} {c['name']}" for c in p.controls
           if not (c["aria"] or c["wrapped"] or (c["id"] and c["id"] in p.label_for))]
    out += [f"button without a name {a}" for a, text in p.buttons if not text and not a.get("aria-label")]
    out += [f"tabindex {i} changes the tab order" for i in p.tabindex if i > 0]
    out += [] if p.lang in ("zh-CN", "en") else [f"html lang {p.lang!r}"]
    out += [] if p.title.strip() and not contains(p.title) else [f"title {p.title!r}"]
    return out


def test_every_page_labels_every_control_for_every_role(env):
    """Issue 15: every form control labelled, no tab-order traps, a language and a title on
    every page the console serves, in Chinese and in English, for each role."""
    from decimal import Decimal

    from hedui.node.console import hub_api
    from hedui.node.verification.cases import consent_digest_of

    rt = env["rt"]
    ref = hub_api.open_case(rt, [(PEOPLE[0], "applicant"), (PEOPLE[1], "spouse")], purpose="temporary_assistance",
                            consent_digest=consent_digest_of(b"a11y scan"), operator="cw01", region="370304",
                            expenditure=Decimal("1200"))
    signin(env, "sv01")
    start(env)
    for role in ("sv01", "cw01", "rv01"):
        env["client"].cookies.clear()
        for lang in ("zh", "en"):
            signin(env, role)
            env["client"].get(f"/lang/{lang}?next=/cases")
            listing = env["client"].get("/crosscheck").text
            runs = [int(x) for x in re.findall(r'id="run-(\d+)"', listing)]
            leads = re.findall(r'href="/leads/(\d+)"', env["client"].get(f"/crosscheck/{runs[0]}").text)
            referrals_page = env["client"].get("/referrals").text
            referral = re.search(r'href="/referrals/(\d+)"', referrals_page)
            pages = ["/cases", "/cases/new", f"/cases/{ref}", "/leads", f"/leads/{leads[0]}", "/referrals",
                     "/reports/monthly", "/crosscheck", f"/crosscheck/{runs[0]}"]
            if referral:
                pages.append(f"/referrals/{referral.group(1)}")
            for path in pages:
                r = env["client"].get(path)
                if r.status_code == 403:   # the role may not: the error page is a page too
                    assert role == "rv01" and path in ("/cases/new", f"/referrals/{referral.group(1) if referral else ''}"), path
                else:
                    assert r.status_code == 200, (role, path, r.status_code)
                assert _problems(r.text) == [], (role, lang, path)
            env["client"].cookies.clear()
    assert _problems(env["client"].get("/signin").text) == []
