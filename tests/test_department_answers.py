"""Provider-level acceptance (issue 12): the nine department nodes, configured only with the
mapping and catalogue files of node/testbed/departments/config/ over the generated department
databases, answer every field of every designed person as the independent oracle (tests/oracle,
straight SQL from docs/acceptance-rules.md) computes it, at R = 2026-08 (a window ending on the
31st), R = 2026-03 (a window across the year end) and R = 2026-11 (after the 2026-10-31 extracts:
not current where the oracle says so). Department databases on SQLite and PostgreSQL.

The answers go through the provider's own path: the node's runtime loads and validates its
catalogue against its mappings, a LookupRequest is parsed as the servicer parses it, and the
facts come from the token index the build wrote.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from conftest import scratch_database
from oracle import NO_RECORD, NOT_CURRENT, Federation, crosscheck, verify
from sqlalchemy import text

from hedui.common.clock import FixedClock
from hedui.common.periods import Month
from hedui.node.runtime import Runtime
from hedui.node.testbed.departments import designed, generate
from hedui.node.testbed.departments.federation import build_indexes, over_departments
from hedui.node.verification.answer import answer_lookup
from hedui.node.verification.consent import issue_for_context
from hedui.node.verification.index import data_dates, facts_for_tokens
from hedui.node.verification.protocol import parse_lookup
from hedui.v1 import lookup_pb2

D = designed()
PEOPLE = sorted({p.id18 for p in D.people.values()})
NAME = {p.id18: k for k, p in D.people.items()}     # assertion messages name "H1.A", never the number
CLOCK = FixedClock(dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC))
V, NV, NR, NC = (lookup_pb2.ANSWER_STATE_VALUE, lookup_pb2.ANSWER_STATE_NO_VALUE, lookup_pb2.ANSWER_STATE_NO_RECORD,
                 lookup_pb2.ANSWER_STATE_NOT_CURRENT)
FIELDS = {
    "huji": ["registry_status"],
    "shebao": ["wages", "pension", "unemployment_benefit"],
    "shuiwu": ["labour_income", "business_income"],
    "cheguan": ["vehicle_max_price"],
    "budongchan": ["residential_count"],
    "gongjijin": ["fund_balance"],
    "yibao": ["medical_count", "medical_own"],
    "canlian": ["certificate_count", "disability_grade"],
    "minzheng": ["assistance_recipient"],
}


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


class Nodes:
    """The department nodes' runtimes (not serving) and the oracle over the same databases."""

    def __init__(self, tb, fed: Federation) -> None:
        self.tb, self.fed = tb, fed
        self.rts = {d: Runtime.open(tb.config_path(d), clock=CLOCK) for d in FIELDS}

    def ask(self, dept: str, ref: str, ids: list[str]) -> dict[str, dict[str, lookup_pb2.FieldAnswer]]:
        rt = self.rts[dept]
        st = rt.provider
        assert st is not None
        key = st.keys[1]
        tokens = [key.token(i) for i in ids]
        req = lookup_pb2.LookupRequest(epoch=1, tokens=tokens, reference_month=ref,
                                       queries=[lookup_pb2.FieldQuery(field=f) for f in FIELDS[dept]])
        queries = parse_lookup(req, st.catalogue)
        ans = answer_lookup(facts_for_tokens(rt.engine, 1, tokens), tokens, queries, provider=dept, digest=b"",
                            directory_version=1, reference_month=Month(int(ref[:4]), int(ref[5:])),
                            now=CLOCK.now(), data_dates=data_dates(rt.engine, 1), sources_of=st.sources_of)
        return {i: {f.field: f for f in m.fields} for i, m in zip(ids, ans.members)}

    def close(self) -> None:
        for rt in self.rts.values():
            rt.close()
        self.fed.close()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def nodes(request, tmp_path_factory):
    root = tmp_path_factory.mktemp("fed")
    if request.param == "sqlite":
        folder = request.getfixturevalue("sqlite_dir")
        tb = over_departments(root, sqlite_dir=folder, clock=CLOCK, depts=list(FIELDS))
        fed = Federation.sqlite(folder)
    else:
        url = request.getfixturevalue("pg_depts")
        tb = over_departments(root, pg_url=url, clock=CLOCK, depts=list(FIELDS))
        fed = Federation.postgres(url)
    build_indexes(tb)
    n = Nodes(tb, fed)
    yield n
    n.close()


def _money(fa: lookup_pb2.FieldAnswer) -> Decimal:
    """A sum as the oracle states it: no record is 0.00 income (acceptance-rules.md)."""
    assert fa.state in (V, NR), fa
    return Decimal(fa.value) if fa.state == V else Decimal("0.00")


def _count(fa: lookup_pb2.FieldAnswer) -> int:
    assert fa.state in (V, NR), fa
    return int(fa.value) if fa.state == V else 0


def _same_currency(fa: lookup_pb2.FieldAnswer, fig, what) -> bool:
    """True when the figure is current (and the answer is too); a not-current figure must be
    answered NOT_CURRENT with the same data date and nothing else."""
    if fig.status == NOT_CURRENT:
        assert fa.state == NC and fa.value == "" and fa.data_date == fig.data_date.isoformat(), what
        return False
    assert fa.state != NC, what
    if fa.state != NR:
        assert fa.data_date == fig.data_date.isoformat(), what
    return True


@pytest.mark.parametrize("ref", ["2026-08", "2026-03", "2026-11"])
def test_every_field_of_every_designed_person_equals_the_oracle(nodes, ref):
    report = verify(nodes.fed, PEOPLE, ref)
    got = {d: nodes.ask(d, ref, PEOPLE) for d in FIELDS}
    incomes = {("shebao", "wages"): "wages", ("shebao", "pension"): "pension",
               ("shebao", "unemployment_benefit"): "unemployment", ("shuiwu", "labour_income"): "labour",
               ("shuiwu", "business_income"): "business"}
    checked = 0
    for i in PEOPLE:
        m, who = report.member(i), NAME[i]
        a = {d: got[d][i] for d in FIELDS}
        reg = a["huji"]["registry_status"]
        if _same_currency(reg, m.registry, (who, "registry")):
            if m.registry.status == NO_RECORD or m.registry.value is None:
                assert reg.state in (NR, NV), who
            else:
                status, day = m.registry.value
                assert (reg.state, reg.value, reg.as_of) == (V, status, f"{day[:4]}-{day[4:6]}-{day[6:]}"), who
        for (dept, field), item in incomes.items():
            fig = m.income[item]
            if _same_currency(a[dept][field], fig, (who, field)):
                assert _money(a[dept][field]) == fig.value, (who, field)
                checked += 1
        veh = a["cheguan"]["vehicle_max_price"]
        if _same_currency(veh, m.vehicles, (who, "vehicles")):
            assert (veh.state == V and Decimal(veh.value) >= Decimal("100000.00")) == (m.vehicles.value > 0), who
        props = a["budongchan"]["residential_count"]
        if _same_currency(props, m.properties, (who, "properties")):
            assert _count(props) == m.properties.value, who
        fund = a["gongjijin"]["fund_balance"]
        if _same_currency(fund, m.fund_balance, (who, "fund")):
            assert (Decimal(fund.value) if fund.state == V else Decimal("0.00")) == m.fund_balance.value, who
        if _same_currency(a["yibao"]["medical_count"], m.medical_settlements, (who, "medical")):
            assert _count(a["yibao"]["medical_count"]) == m.medical_settlements.value, who
            assert _money(a["yibao"]["medical_own"]) == m.medical_own.value, who
        if _same_currency(a["canlian"]["certificate_count"], m.certificates, (who, "certificates")):
            assert _count(a["canlian"]["certificate_count"]) == m.certificates.value, who
            grade = a["canlian"]["disability_grade"]
            assert (grade.value if grade.state == V else None) == m.grade.value, who
    if ref != "2026-11":
        assert checked == 5 * len(PEOPLE)     # every income figure was current and compared


def test_assistance_recipients_equal_the_cross_check_population(nodes):
    """Civil affairs: a recipient (是) of a 低保/特困 family in force in D's month, D = 2026-10-31."""
    population = crosscheck(nodes.fed, dt.date(2026, 10, 31)).population
    got = nodes.ask("minzheng", "2026-10", PEOPLE)
    assert any(i in population for i in PEOPLE)
    for i in PEOPLE:
        fa = got[i]["assistance_recipient"]
        assert (fa.state == V and fa.value == "true") == (i in population), NAME[i]
        assert fa.state in (V, NR), NAME[i]


def test_designed_figures_are_not_all_zero(nodes):
    """The comparison above would pass on a federation that answers nothing: the designed
    figures of acceptance-rules.md must be there."""
    p = D.people
    aug = {d: nodes.ask(d, "2026-08", [p["H1.A"].id18, p["H3.A"].id18, p["H6.A"].id18, p["H1.B"].id18])
           for d in ("shebao", "huji", "cheguan", "gongjijin")}
    assert aug["shebao"][p["H1.A"].id18]["wages"].value == "57600.00"
    assert aug["shebao"][p["H3.A"].id18]["unemployment_benefit"].value == "9480.00"
    assert aug["shebao"][p["H3.A"].id18]["unemployment_benefit"].window == "2025-08..2026-07"
    dead = aug["huji"][p["H1.B"].id18]["registry_status"]
    assert (dead.value, dead.as_of, dead.window) == ("死亡", "2026-05-12", "@2026-08-31")
    assert aug["cheguan"][p["H6.A"].id18]["vehicle_max_price"].value == "100000.00"
    assert aug["gongjijin"][p["H1.A"].id18]["fund_balance"].data_date == "2026-10-31"
    mar = nodes.ask("shebao", "2026-03", [p["H3.A"].id18])[p["H3.A"].id18]
    assert (mar["unemployment_benefit"].value, mar["unemployment_benefit"].window) == ("12640.00", "2025-03..2026-02")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def node_stores(request):
    """Node stores on each backend: a member code -> store URL (None: SQLite files), and the
    PostgreSQL databases made for it, dropped afterwards."""
    if request.param == "sqlite":
        yield None
        return
    admin = request.getfixturevalue("pg_admin")
    made: dict[str, str] = {}

    def store(code: str) -> str:
        name = f"hedui_t_{uuid.uuid4().hex[:12]}"
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        made[code] = name
        return admin.url.set(database=name).render_as_string(hide_password=False)

    yield store
    with admin.connect() as c:
        for name in made.values():
            c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


def test_signed_lookups_over_the_running_department_nodes(sqlite_dir, tmp_path, node_stores):
    """The same configuration served: the hub blinds, the department evaluates, answers a
    signed Lookup for a reference month; the registry is not current for 2026-11. The node
    stores (token index with its data dates, audit, cases) on SQLite and PostgreSQL."""
    import os

    from hedui.keys import oprf
    from hedui.node.client import PeerClient
    from hedui.node.verification.protocol import request_digest, verify_answer
    from hedui.v1 import common_pb2, pseudonym_pb2

    tb = over_departments(tmp_path / "fed", sqlite_dir=sqlite_dir, clock=CLOCK, depts=["huji", "shebao"],
                          store=node_stores)
    build_indexes(tb)
    tb.start()
    try:
        hub = tb.runtime("hub")
        ids = [D.people[f"H1.{r}"].id18 for r in "AB"]

        def ask(code: str, fields: list[str], month: str):
            key = bytes(hub.directory.member(code).oprf_keys[0].public_key)
            state = oprf.blind(ids)
            with PeerClient.to_member(hub, code) as c:
                ev = c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
                    context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="T-12",
                                                      request_id=os.urandom(16)),
                    epoch=1, blinded_elements=state.blinded), timeout=10)
                tokens = oprf.finalize(state, list(ev.evaluated_elements), ev.proof, key)
                ctx = common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="T-12",
                                                consent_digest=b"c" * 32, request_id=os.urandom(16))
                ctx.consent.CopyFrom(issue_for_context(hub.signer, "hub", ctx, members=len(tokens), issued_at=hub.clock.now()))
                req = lookup_pb2.LookupRequest(
                    context=ctx,
                    epoch=1, tokens=tokens, queries=[lookup_pb2.FieldQuery(field=f) for f in fields],
                    reference_month=month)
                resp = c.lookup.Lookup(req, timeout=10)
            ans = verify_answer(hub.directory.signing_keys(), code, resp.answer, request_digest(req), tokens)
            return [{f.field: f for f in m.fields} for m in ans.members]

        a, b = ask("shebao", ["wages", "pension"], "2026-08")
        assert (a["wages"].state, a["wages"].value, a["wages"].window) == (V, "57600.00", "2025-08..2026-07")
        assert a["wages"].data_date == "2026-10-31"
        a, b = ask("huji", ["registry_status"], "2026-08")
        assert (b["registry_status"].value, b["registry_status"].as_of) == ("死亡", "2026-05-12")
        a, b = ask("huji", ["registry_status"], "2026-11")
        assert (a["registry_status"].state, a["registry_status"].data_date) == (NC, "2026-10-31")
        a, _ = ask("shebao", ["wages"], "2026-11")       # the window 2025-11..2026-10 is covered
        assert a["wages"].state == V
    finally:
        tb.stop()


def test_node_check_refuses_a_missing_column_and_a_field_without_its_fact(sqlite_dir, tmp_path):
    """`hedui node check` reads each mapping against its database and the catalogue against
    the mappings: one line naming the file and key, exit 1, nothing indexed."""
    import json
    import os
    import subprocess
    import sys

    tb = over_departments(tmp_path / "fed", sqlite_dir=sqlite_dir, clock=CLOCK, depts=["shuiwu"])
    env = {**os.environ, **tb.env()}
    cmd = [sys.executable, "-m", "hedui.node.cli", "node", "check", "--config", str(tb.config_path("shuiwu"))]
    ok = subprocess.run([*cmd, "--json"], env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["sources"] == ["shuiwu_returns"], ok.stderr
    mapping = tb.member_dir("shuiwu") / "mapping-returns.toml"
    good = mapping.read_text(encoding="utf-8")
    mapping.write_text(good.replace('where = { sbzt = "1" }', 'where = { sbztx = "1" }'), encoding="utf-8")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "mapping-returns.toml: " in bad.stderr and "sbztx" in bad.stderr, bad.stderr
    assert "Traceback" not in bad.stderr
    mapping.write_text(good.replace('name = "taxable_income"', 'name = "income"'), encoding="utf-8")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "fields.toml: fields['labour_income'].facts: got 'taxable_income'" in bad.stderr, \
        bad.stderr


def test_node_index_builds_every_source_of_a_node(sqlite_dir, tmp_path):
    """`hedui node index` on a node with three mappings: one index, three sources, each with
    the data date read from the department's extract table."""
    import json
    import os
    import subprocess
    import sys

    tb = over_departments(tmp_path / "fed", sqlite_dir=sqlite_dir, clock=CLOCK, depts=["shebao"])
    env = {**os.environ, **tb.env()}
    cmd = [sys.executable, "-m", "hedui.node.cli", "node", "index", "--config", str(tb.config_path("shebao")),
           "--workers", "0", "--json"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert [s["source"] for s in out["sources"]] == ["shebao_pensions", "shebao_unemployment", "shebao_wages"]
    assert all(s["records"] > 0 and s["problems"] == 0 for s in out["sources"])
    rt = Runtime.open(tb.config_path("shebao"), clock=CLOCK)
    try:
        assert data_dates(rt.engine, 1) == dict.fromkeys(["shebao_pensions", "shebao_unemployment", "shebao_wages"],
                                                         dt.date(2026, 10, 31))
    finally:
        rt.close()
