"""The hub end to end over the nine department databases (issue 12 "Done when"): a hub and the
department nodes, configured only with the acceptance files of node/testbed/departments/config/
(mappings, catalogues and hub-rules.toml), serving on loopback with real OPRF and signed
answers. For every designed household H1–H7 at R = 2026-08 (a window ending on the 31st),
R = 2026-03 (across the year end) and R = 2026-11 (after the 2026-10-31 extracts), EVERY figure
of the report — counted members and exclusions, income items, totals, per-capita income,
below-standard, asset flags and who triggered them, information fields — equals the
independent oracle (tests/oracle: straight SQL from docs/acceptance-rules.md). Department
databases on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
import tomllib
from decimal import Decimal

import pytest
import tomli_w
from conftest import scratch_database
from oracle import NO_RECORD, NOT_CURRENT, Federation, verify

from hedui.common.clock import FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.errors import FailedPrecondition
from hedui.node.testbed.departments import designed, generate
from hedui.node.testbed.departments.federation import CONFIG_DIR, build_indexes, over_departments
from hedui.node.verification import casework
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.node.verification.report import build_report, render_html
from hedui.node.verification.rules import load_rules

D = designed()
RULES_PATH = CONFIG_DIR / "hub-rules.toml"
# The run happens on 20 November 2026 (China); the extracts are of 2026-10-31.
CLOCK = FixedClock(dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC))
MONTHS = ("2026-08", "2026-03", "2026-11")
# oracle income item → the hub rule's field (hub-rules.toml; DESIGN-12 contract table)
ITEMS = {"wages": "shebao.wages", "pension": "shebao.pension", "unemployment": "shebao.unemployment_benefit",
         "labour": "shuiwu.labour_income", "business": "shuiwu.business_income"}
REASONS = {"dead": "dead", "moved_out": "moved out"}
# report info field → the oracle member's attribute
INFO = {"medical_count": "medical_settlements", "medical_own": "medical_own", "certificate_count": "certificates",
        "disability_grade": "grade"}


@pytest.fixture(scope="module")
def sqlite_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("depts")
    generate(folder, residents=60)
    return folder


@pytest.fixture(scope="module")
def pg_depts(pg_admin):
    with scratch_database(pg_admin) as url:
        generate(None, url, residents=60)
        yield url


def _use_rules(tb) -> None:
    """The hub applies the acceptance rules file (``[hub] rules``), as a deployed hub's config says."""
    path = tb.config_path("hub")
    cfg = tomllib.loads(path.read_text(encoding="utf-8"))
    cfg.setdefault("hub", {})["rules"] = str(RULES_PATH)
    path.write_text(tomli_w.dumps(cfg), encoding="utf-8")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def bed(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("fed")
    if request.param == "sqlite":
        folder = request.getfixturevalue("sqlite_dir")
        tb, fed = over_departments(root, sqlite_dir=folder, clock=CLOCK), Federation.sqlite(folder)
    else:
        url = request.getfixturevalue("pg_depts")
        tb, fed = over_departments(root, pg_url=url, clock=CLOCK), Federation.postgres(url)
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    _use_rules(tb)
    build_indexes(tb)
    tb.start()
    yield tb, fed
    tb.stop()
    fed.close()


_SCANS = iter(range(1, 1_000_000))


def _case(tb, key: str, month: str) -> dict:
    hub = tb.runtime("hub")
    # One 授权书 per application: a one-off authorisation serves one case (issue 18c: a
    # department refuses it for a second case, CONSENT_REUSED), and every call here is a case.
    scan = consent_digest_of(b"auth %s %s %d" % (key.encode(), month.encode(), next(_SCANS)))
    ref = open_case(hub, [(i, "member") for i in D.members(key)], purpose="dibao", consent_digest=scan,
                    operator="cw01", region="370304", reference_month=month)
    run = run_case(hub, ref)
    assert run.complete, run.outcomes  # every department answered (currency is the report's business)
    rep = build_report(hub.engine, ref, hub.hub.rules, tz=hub.clock.zone)
    assert run.status == rep["conclusion"]
    return rep


def _window(w: tuple[int, int]) -> str:
    return f"{w[0] // 100}-{w[0] % 100:02d}..{w[1] // 100}-{w[1] % 100:02d}"


def _same(cell: dict, fig, what: str) -> None:
    """One report cell against the oracle's figure. Not current must be not current, with the
    department's data date. Otherwise the figures must be equal, where no record / no value is
    zero (acceptance-rules.md: a member a department does not hold has zero income, no assets)
    — a department that holds a person without any qualifying row may answer either."""
    if fig.status == NOT_CURRENT:
        assert cell["state"] == "not_current" and cell["data_date"] == fig.data_date.isoformat(), what
        return
    assert cell["state"] in ("value", "no_value", "no_record"), what
    got = cell["value"] if cell["state"] == "value" else None
    want = None if fig.status == NO_RECORD else fig.value
    if isinstance(want, str) or isinstance(got, str) and not _is_number(got):
        assert got == want, what
        return
    assert Decimal(got or 0) == Decimal(want or 0), what


def _is_number(s: str) -> bool:
    try:
        Decimal(s)
    except ArithmeticError:
        return False
    return True


def _compare(rep: dict, r, ids: list[str], what: str) -> None:
    assert rep["complete"] is r.complete, (what, rep["missing"], r.missing)
    assert rep["conclusion"] == ("complete" if r.complete else "incomplete")
    # counted members and exclusions
    assert (None if rep["counted"] is None else [ids[p] for p in rep["counted"]]) == r.counted, what
    for pos, m in enumerate(rep["members"]):
        om = r.member(ids[pos])
        w = f"{what} member {pos + 1}"
        assert m["counted"] is om.counted, w
        if om.counted is False:
            assert f"{REASONS[m['reason']]} {m['day']}" == om.reason, w
        elif om.reason == "no registry record":
            assert m["note"] == "no_registry_record", w
        else:
            assert m["reason"] is None and m["note"] is None, w
        # every income item of every listed member, with its window and evidence
        items = {it["item"]: it for it in m["income"]}
        for name, item in ITEMS.items():
            fig = om.income[name]
            _same(items[item], fig, f"{w} {name}")
            if items[item]["state"] == "value":
                assert items[item]["window"] == _window(fig.window) and len(items[item]["evidence"]) == 16, w
        info = {it["field"]: it for it in m["info"]}
        for field, attr in INFO.items():
            _same(info[field], getattr(om, attr), f"{w} {field}")
    inc = rep["income"]
    if not r.complete:
        assert inc["total"] is None and inc["per_capita_monthly"] is None and inc["below_standard"] is None, what
        assert inc["totals"] is None and all(a["state"] == "unknown" and not a["members"] for a in rep["assets"]), what
        return
    assert {k: Decimal(inc["totals"][v]) for k, v in ITEMS.items()} == r.totals, what
    assert Decimal(inc["total"]) == r.total and Decimal(inc["per_capita_monthly"]) == r.per_capita, what
    assert inc["below_standard"] is r.below_standard and inc["standard"] == "1010.00", what
    flags = {a["flag"]: a for a in rep["assets"]}
    assert (flags["vehicle"]["state"] == "set") is r.vehicle_flag, what
    assert [ids[p] for p in flags["vehicle"]["members"]] == (r.vehicle_by if r.vehicle_flag else []), what
    assert (flags["properties"]["state"] == "set") is r.property_flag, what
    assert int(flags["properties"]["value"]) == r.property_count, what
    assert [ids[p] for p in flags["properties"]["members"]] == (r.property_by if r.property_flag else []), what
    (fund,) = rep["info"]
    assert (None if fund["value"] is None else Decimal(fund["value"])) == r.fund_balance, what


def test_rules_file_loads():
    rules = load_rules(RULES_PATH)
    assert rules.members is not None and [i.field for i in rules.income] == [v.split(".")[1] for v in ITEMS.values()]


def test_hub_rules_fit_the_departments_catalogues(bed):
    """What ``node check`` verifies on the hub: every field the rules name is offered."""
    from hedui.node.cli.node import _hub_rules_problems

    tb, _ = bed
    assert _hub_rules_problems(tb.runtime("hub")) == []


@pytest.mark.parametrize("month", MONTHS)
def test_every_designed_household_equals_the_oracle(bed, month):
    tb, fed = bed
    for key in D.households:
        ids = D.members(key)
        rep = _case(tb, key, month)
        assert rep["reference_month"] == month and rep["time_zone"] == "Asia/Shanghai"
        _compare(rep, verify(fed, ids, month), ids, f"{key} @ {month}")
        html = render_html(rep)
        assert "核对人" in html and "复核人" in html and all(i not in html for i in ids)


def test_designed_figures_by_hand(bed):
    """A few figures of docs/acceptance-rules.md written out, in case the oracle and the hub
    were wrong the same way."""
    tb, _ = bed
    rep = _case(tb, "H1", "2026-08")
    assert rep["income"]["per_capita_monthly"] == "2458.33" and [e["reason"] for e in rep["excluded"]] == ["dead", "moved_out"]
    assert [e["day"] for e in rep["excluded"]] == ["2026-05-12", "2025-12-20"]
    rep = _case(tb, "H5d", "2026-08")
    assert rep["income"]["total"] == "36359.82" and rep["income"]["per_capita_monthly"] == "1010.00"
    assert rep["income"]["below_standard"] is False
    rep = _case(tb, "H3", "2026-03")
    assert rep["income"]["per_capita_monthly"] == "968.89" and rep["income"]["below_standard"] is True
    assert {a["flag"]: a["state"] for a in rep["assets"]} == {"vehicle": "clear", "properties": "set"}
    rep = _case(tb, "H4", "2026-11")
    assert not rep["complete"] and rep["income"]["per_capita_monthly"] is None
    assert {g["provider"] for g in rep["missing"] if g["why"] == "not_current"} == {"huji", "shuiwu", "cheguan", "budongchan"}


def test_case_status_follows_the_report_and_an_incomplete_one_cannot_be_approved(bed):
    tb, _ = bed
    hub = tb.runtime("hub")
    done = {m: _case(tb, "H7", m)["case_ref"] for m in ("2026-08", "2026-11")}
    assert casework.case_state(hub.engine, done["2026-08"])["status"] == "complete"
    assert casework.case_state(hub.engine, done["2026-11"])["status"] == "incomplete"  # every department answered
    with pytest.raises(FailedPrecondition) as exc:
        casework.review_case(hub.engine, hub.audit, done["2026-11"], reviewer="rv01", decision="approved", note="",
                             now=CLOCK.now())
    assert exc.value.reason == "INCOMPLETE"
    casework.review_case(hub.engine, hub.audit, done["2026-08"], reviewer="rv01", decision="approved", note="",
                         now=CLOCK.now())
