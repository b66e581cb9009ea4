"""Bulk cross-check end to end (issue 14) over the testbed departments at D = 2026-10-31
(reference month 2026-10): exactly the designed hits (docs/acceptance-rules.md "Designed
cross-check recipients"), compared with the oracle's straight SQL (tests/oracle
crosscheck()); hits routed as stop-warning leads; bad input refused with nothing written."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from oracle import Federation, crosscheck
from sqlalchemy import func, select, text

from hedui.common.clock import FixedClock
from hedui.common.errors import Reason
from hedui.node.crosscheck.check import load_check
from hedui.node.crosscheck.run import run_check
from hedui.node.crosscheck.tables import token_filters
from hedui.node.discovery.tables import leads, referrals
from hedui.node.errors import HeduiError
from hedui.node.testbed.departments import designed, generate
from hedui.node.testbed.departments.federation import build_indexes, over_departments

D = designed()
NAME = {p.id18: k for k, p in D.people.items()}
CLOCK = FixedClock(dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC))
DAY = dt.date(2026, 10, 31)
DEPTS = ["huji", "cheguan", "budongchan", "minzheng"]

CHECK = """
name = "2026-10 在保对象大数据比对"
reference_month = "2026-10"
operator = "S01"

[population]
{population}

[[criteria]]
name = "dead"
department = "huji"
field = "registry_status"
op = "=="
value = "死亡"

[[criteria]]
name = "vehicle"
department = "cheguan"
field = "vehicle_max_price"
op = ">="
value = "100000"

[[criteria]]
name = "property"
department = "budongchan"
field = "residential_count"
op = ">="
value = "2"
"""


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def fed(request, tmp_path_factory):
    """The departments and the node stores (token filter cache, leads, audit) on SQLite, or
    all on PostgreSQL."""
    root = tmp_path_factory.mktemp("fed")
    made: list[str] = []
    if request.param == "sqlite":
        folder = tmp_path_factory.mktemp("depts")
        generate(folder, residents=60)
        tb = over_departments(root, sqlite_dir=folder, clock=CLOCK, depts=DEPTS)
        oracle = Federation.sqlite(folder)
    else:
        admin = request.getfixturevalue("pg_admin")

        def fresh() -> str:
            name = f"hedui_t_{uuid.uuid4().hex[:12]}"
            with admin.connect() as c:
                c.execute(text(f'CREATE DATABASE "{name}"'))
            made.append(name)
            return admin.url.set(database=name).render_as_string(hide_password=False)

        url = fresh()
        generate(None, url, residents=60)
        tb = over_departments(root, pg_url=url, clock=CLOCK, depts=DEPTS, store=lambda code: fresh())
        oracle = Federation.postgres(url)
    build_indexes(tb)
    tb.start()
    yield tb, oracle, root
    tb.stop()
    oracle.close()
    if made:
        with admin.connect() as c:
            for name in made:
                c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


def _check(root, text: str, name: str = "check.toml"):
    p = root / name
    p.write_text(text, encoding="utf-8")
    return load_check(p)


def _named(ids) -> set[str]:
    return {NAME.get(i, "background") for i in ids}


def test_crosscheck_finds_exactly_the_designed_hits(fed):
    tb, oracle, root = fed
    rt = tb.runtime("hub")
    want = crosscheck(oracle, DAY)
    res = run_check(rt, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"')))
    got = {h.identity: set(h.reasons) for h in res.hits}
    assert got == want.hits
    # The designed expectations, by name (docs/acceptance-rules.md).
    assert {NAME[i]: r for i, r in got.items()} == {k: set(v) for k, v in D.hits.items()}
    assert res.counts == want.counts() == {"dead": 2, "vehicle": 4, "property": 3}
    assert len(res.invalid_lines) == len(want.invalid) >= 1
    assert res.population == len(want.population)
    # Every hit is a lead routed to the person's town.
    for h in res.hits:
        assert h.lead_id is not None and h.town == want.towns[h.identity]
    with rt.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(leads)).scalar_one() == len(want.hits)
        # Each lead's referral goes to the person's town, due 5 working days after the check.
        got_refs = {(r.lead_id, r.assignee, r.assignee_kind, r.event_type)
                    for r in c.execute(select(referrals.c.lead_id, referrals.c.assignee, referrals.c.assignee_kind, referrals.c.event_type))}
    assert got_refs == {(h.lead_id, want.towns[h.identity], "town", f"stop.{sorted(h.reasons)[0]}") for h in res.hits}
    with rt.engine.connect() as c:
        assert {r.provider for r in c.execute(select(token_filters.c.provider))} == {"huji", "cheguan", "budongchan"}
    # The evidence of a hit is the signed answer's value.
    x2 = next(h for h in res.hits if NAME[h.identity] == "X2")
    assert x2.reasons["vehicle"]["value"] == "100000.00"
    out = res.as_dict()
    assert all(i not in str(out) for i in want.population)


def test_runs_and_hits_are_kept_masked_and_reading_them_is_audited(fed):
    """Issue 15 item 4 (the console's cross-check page): each run is stored with its counts by
    reason; its hits with masked identities, reasons, evidence and the lead each became;
    reading them is audited by the domain; a count-only run keeps counts and nobody."""
    from hedui.node.crosscheck.history import crosscheck_hits, list_runs, run_hits, run_summary
    from hedui.node.errors import InvalidArgument, NotFound

    tb, oracle, root = fed
    rt = tb.runtime("hub")
    want = crosscheck(oracle, DAY)
    res = run_check(rt, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "h.toml"))
    assert res.run_id is not None and res.as_dict()["run_id"] == res.run_id
    s = run_summary(rt.engine, res.run_id)
    assert (s.name, s.reference_month, s.as_of, s.operator, s.count_only) == ("2026-10 在保对象大数据比对", "2026-10", DAY, "S01", False)
    assert s.counts == {"dead": 2, "vehicle": 4, "property": 3} and s.hits == len(want.hits)
    assert s.criteria["vehicle"] == {"department": "cheguan", "field": "vehicle_max_price", "op": ">=", "value": "100000"}
    assert list_runs(rt.engine)[0].run_id == res.run_id
    hits = run_hits(rt, res.run_id, operator="sup01")
    assert sorted((h["identity"], tuple(h["reasons"]), h["lead_id"]) for h in hits) == sorted(
        (i[:6] + "*" * 8 + i[-4:], tuple(sorted(r)), next(x.lead_id for x in res.hits if x.identity == i)) for i, r in want.hits.items())
    assert all(h["lead_status"] == "open" for h in hits)
    only = run_hits(rt, res.run_id, operator="sup01", reason="vehicle")
    assert len(only) == 4 and all("vehicle" in h["reasons"] for h in only)
    assert only[0]["evidence"]["vehicle"]["department"] == "cheguan"
    viewed = [e for e in _entries(rt, "crosscheck.viewed") if e["run_id"] == res.run_id]
    assert [(e["operator"], e["reason"], e["count"]) for e in viewed] == [("sup01", "", len(hits)), ("sup01", "vehicle", 4)]
    # Pages of a run's hits: disjoint, in order, together all of them.
    pages = [run_hits(rt, res.run_id, operator="sup01", limit=4, offset=o) for o in range(0, len(hits), 4)]
    assert [h["hit_id"] for p in pages for h in p] == [h["hit_id"] for h in hits]
    with pytest.raises(InvalidArgument):
        run_hits(rt, res.run_id, operator="sup01", limit=0)
    # No full identity is stored with the hits.
    with rt.engine.connect() as c:
        stored = str(c.execute(select(crosscheck_hits)).all())
    assert not any(i in stored for i in want.population)
    with pytest.raises(NotFound):
        run_hits(rt, 10**6, operator="sup01")
    with pytest.raises(InvalidArgument):
        run_hits(rt, res.run_id, operator="sup01", reason="nope")
    # A count-only run: its counts, no hit.
    co = run_check(rt, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "h2.toml"), count_only=True)
    s2 = run_summary(rt.engine, co.run_id)
    assert s2.count_only and s2.counts == s.counts and s2.hits == 0 and run_hits(rt, co.run_id, operator="sup01") == []


def test_count_only_returns_counts_and_keeps_nobody(fed):
    tb, oracle, root = fed
    rt = tb.runtime("hub")
    with rt.engine.connect() as c:
        before = c.execute(select(func.count()).select_from(leads)).scalar_one()
    res = run_check(rt, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"')), count_only=True)
    assert res.counts == crosscheck(oracle, DAY).counts()
    assert res.hits == [] and res.as_dict()["hits"] == []
    with rt.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(leads)).scalar_one() == before


def test_population_file_invalid_lines_by_number(fed):
    tb, oracle, root = fed
    rt = tb.runtime("hub")
    x1 = D.people["X1"].id18
    bad = x1[:17] + ("0" if x1[17] != "0" else "1")
    (root / "pop.csv").write_text(f"identity,town\n{x1},370304001\n{bad},370304001\n\nnot-a-number\n", encoding="utf-8")
    res = run_check(rt, _check(root, CHECK.format(population='file = "pop.csv"\nregion = "370304001"'), "c2.toml"), count_only=True)
    assert res.invalid_lines == [3, 5] and res.population == 1 and res.counts["dead"] == 1


def _refused(rt, check) -> HeduiError:
    with pytest.raises(HeduiError) as ei:
        run_check(rt, check)
    assert not any(p.id18 in ei.value.message for p in D.people.values())
    return ei.value


def test_bad_input_is_refused_with_nothing_written(fed):
    tb, oracle, root = fed
    rt = tb.runtime("hub")
    with rt.engine.connect() as c:
        before = c.execute(select(func.count()).select_from(leads)).scalar_one()
    (root / "empty.csv").write_text("identity\n\n", encoding="utf-8")
    e = _refused(rt, _check(root, CHECK.format(population='file = "empty.csv"\nregion = "370304001"'), "c3.toml"))
    assert e.reason == Reason.BAD_POPULATION
    e = _refused(rt, _check(root, CHECK.format(population='file = "empty.csv"').replace("vehicle_max_price", "vehicle_price"), "c4.toml"))
    assert e.reason == Reason.UNKNOWN_FIELD and "vehicle_price" in e.message
    with pytest.raises(HeduiError) as ei:
        _check(root, CHECK.format(population='file = "x"').replace('op = ">="', 'op = "<"', 1), "c5.toml")
    assert ei.value.reason == Reason.BAD_CRITERION and "criteria[1].op" in ei.value.message
    with rt.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(leads)).scalar_one() == before


# -- signed filters: refusals ------------------------------------------------------------------

def _entries(rt, kind: str) -> list[dict]:
    import json

    from hedui.node.audit.tables import audit_entries

    rt.audit.log.flush()
    with rt.engine.connect() as c:
        rows = c.execute(select(audit_entries.c.entry).where(audit_entries.c.kind == kind).order_by(audit_entries.c.seq)).scalars()
        return [json.loads(bytes(e))["fields"] for e in rows]


def _forged(monkeypatch, how: str) -> None:
    """The provider's published filter, with its header broken in one way."""
    from hedui.node.crosscheck import publish
    from hedui.node.crosscheck.filterfmt import header_for
    from hedui.node.crosscheck.wire import sign_header
    from hedui.node.verification import service

    real = publish.published_filter

    def forged(rt, epoch):
        pub = real(rt, epoch)
        if how == "signature":
            env = type(pub.envelope)()
            env.CopyFrom(pub.envelope)
            env.signatures[0].sig = bytes(64)
            return publish.Published(pub.header, env, pub.content)
        header = header_for(pub.content, provider=rt.member, epoch=epoch + 1, data_date=pub.header.data_date)
        return publish.Published(header, sign_header(header, rt.signer), pub.content)

    monkeypatch.setattr(service, "published_filter", forged)


@pytest.mark.parametrize("how, reason", [("signature", Reason.BAD_SIGNATURE), ("epoch", Reason.FILTER_EPOCH)])
def test_forged_filter_is_refused_and_audited(fed, monkeypatch, how, reason):
    tb, oracle, root = fed
    rt = tb.runtime("hub")
    refused = len(_entries(rt, "filter.refused"))
    with rt.engine.connect() as c:
        before = c.execute(select(func.count()).select_from(leads)).scalar_one()
    _forged(monkeypatch, how)
    e = _refused(rt, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), f"f-{how}.toml"))
    assert e.reason == reason
    got = _entries(rt, "filter.refused")
    assert len(got) == refused + 1 and got[-1]["reason"] == reason and got[-1]["peer"] == "huji"
    with rt.engine.connect() as c:
        assert c.execute(select(func.count()).select_from(leads)).scalar_one() == before


def test_department_without_a_filter_is_a_clear_error(fed, monkeypatch):
    from hedui.node.errors import FailedPrecondition
    from hedui.node.verification import service

    def none_yet(rt, epoch):
        raise FailedPrecondition(f"filter: got no indexed token in epoch {epoch}, want an index built first", reason=Reason.NO_FILTER)

    tb, oracle, root = fed
    rt = tb.runtime("hub")
    monkeypatch.setattr(service, "published_filter", none_yet)
    e = _refused(rt, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "nf.toml"))
    assert e.reason == Reason.NO_FILTER and "huji" in e.message


# -- filter-first: a department sees only tokens it holds ----------------------------------------

def test_provider_sees_no_token_of_a_member_it_does_not_hold(fed, monkeypatch):
    """During a cross-check every Lookup a department receives names only tokens in its own
    index (straight SQL over its token table); the population's other tokens never leave the
    hub, though the population is much larger than what cheguan or budongchan hold."""
    from hedui.node.verification import service
    from hedui.node.verification.index_tables import token_index

    tb, oracle, root = fed
    seen: dict[str, list[bytes]] = {d: [] for d in ("huji", "cheguan", "budongchan")}
    real = service.read_index
    by_url = {str(tb.runtime(d).engine.url): d for d in seen}

    def spy(rt, epoch, tokens, sources=(), **kw):
        tokens = list(tokens)
        seen[by_url[str(rt.engine.url)]] += [bytes(t) for t in tokens]
        return real(rt, epoch, tokens, sources, **kw)

    monkeypatch.setattr(service, "read_index", spy)
    res = run_check(tb.runtime("hub"), _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "p.toml"),
                    count_only=True)
    for d, toks in seen.items():
        with tb.runtime(d).engine.connect() as c:
            held = {bytes(t) for t in c.execute(select(token_index.c.token).where(token_index.c.epoch == 1)).scalars()}
        assert toks and set(toks) <= held, d
        assert len(toks) == res.matched[d]
    assert res.matched["cheguan"] < res.population and res.matched["budongchan"] < res.population


# -- the command --------------------------------------------------------------------------------

def test_cli_count_only_json_and_bad_population_exit(fed):
    """``hedui crosscheck run`` as a caseworker runs it: --json --count-only gives the counts;
    a population file with only invalid lines is a one-line error, non-zero exit, by line
    number, the number itself never echoed."""
    import json

    from typer.testing import CliRunner

    from hedui.node.cli._app import app

    tb, oracle, root = fed
    if tb.store is not None:
        pytest.skip("the CLI opens the hub's store beside the running node: SQLite variant only")
    cfg = str(tb.config_path("hub"))
    (root / "cli.toml").write_text(CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), encoding="utf-8")
    r = CliRunner().invoke(app, ["crosscheck", "run", str(root / "cli.toml"), "--config", cfg, "--as-of", "2026-11-20",
                                 "--count-only", "--json", "--workers", "2"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["counts"] == crosscheck(oracle, DAY).counts() and out["hits"] == []
    x7 = D.people["X7"].id18
    (root / "bad.csv").write_text(f"{x7[:17]}{'0' if x7[17] != '0' else '1'}\n", encoding="utf-8")
    (root / "bad.toml").write_text(CHECK.format(population='file = "bad.csv"\nregion = "370304001"'), encoding="utf-8")
    r = CliRunner().invoke(app, ["crosscheck", "run", str(root / "bad.toml"), "--config", cfg, "--as-of", "2026-11-20"])
    assert r.exit_code != 0 and "empty population (1 invalid lines)" in r.output and x7[:17] not in r.output


def test_filter_cached_and_refreshed_only_when_the_header_changes(fed, monkeypatch):
    """A second check with the same provider header reuses the cache (no ``filter.received``);
    a new data date with the same tokens is re-verified and cached with no shard re-sent; new
    tokens re-send only the shards whose digest changed."""
    import dataclasses

    from hedui.node.crosscheck import publish, shards
    from hedui.node.crosscheck.filterfmt import header_for
    from hedui.node.crosscheck.wire import sign_header
    from hedui.node.verification import service

    tb, oracle, root = fed
    rt = tb.runtime("hub")
    check = _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "r.toml")
    run_check(rt, check, count_only=True)
    n = len(_entries(rt, "filter.received"))
    run_check(rt, check, count_only=True)
    assert len(_entries(rt, "filter.received")) == n
    real = publish.published_filter

    def later(rt_, epoch):
        pub = real(rt_, epoch)
        if rt_.member != "cheguan":
            return pub
        h = dataclasses.replace(pub.header, data_date=dt.date(2026, 11, 30))
        return publish.Published(h, sign_header(h, rt_.signer), pub.content)

    monkeypatch.setattr(service, "published_filter", later)
    run_check(rt, check, count_only=True)
    got = _entries(rt, "filter.received")[n:]
    assert [(e["peer"], e["data_date"], e["shards_fetched"]) for e in got] == [("cheguan", "2026-11-30", 0)]
    with rt.engine.connect() as c:
        assert c.execute(select(token_filters.c.data_date).where(token_filters.c.provider == "cheguan")).scalar_one() == dt.date(2026, 11, 30)

    def more(rt_, epoch):
        pub = real(rt_, epoch)
        if rt_.member != "cheguan":
            return pub
        from hedui.node.verification.index import all_tokens

        extra = bytes([0]) * 64   # falls in shard 0 only
        content = shards.build(b"".join(all_tokens(rt_.engine, epoch)) + extra, shard_bits=pub.content.shard_bits)
        h = header_for(content, provider="cheguan", epoch=epoch, data_date=dt.date(2026, 12, 1))
        return publish.Published(h, sign_header(h, rt_.signer), content)

    monkeypatch.setattr(service, "published_filter", more)
    run_check(rt, check, count_only=True)
    last = _entries(rt, "filter.received")[-1]
    assert (last["peer"], last["count"], last["shards_fetched"]) == ("cheguan", got[0]["count"] + 1, 1)


# -- filter-first cases ------------------------------------------------------------------------

def test_case_lookups_are_filter_first(fed, monkeypatch):
    """With a current signed filter cached, a case sends a department only the tokens it holds:
    the department never sees the token of a member it has no record of, and the report has
    "no record as of the filter's data date" for that member, citing the signed filter; the
    exported evidence verifies offline."""
    from hedui.node.verification import service
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case
    from hedui.node.verification.evidence import export_case
    from hedui.node.verification.index_tables import token_index
    from hedui.node.verification.report import load_case, sources_of, verified_answers

    tb, oracle, root = fed
    hub = tb.runtime("hub")
    run_check(hub, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "ff.toml"), count_only=True)
    cheguan = tb.runtime("cheguan")
    with cheguan.engine.connect() as c:
        held = {bytes(t) for t in c.execute(select(token_index.c.token).where(token_index.c.epoch == 1)).scalars()}
    key = cheguan.provider.keys[1]
    people = [D.people["X2"].id18, D.people["X12"].id18, D.people["X13"].id18]
    tok = [key.token(i) for i in people]
    assert tok[0] in held and not (tok[1] in held and tok[2] in held), "the household mixes held and not held"
    seen: list[bytes] = []
    real = service.read_index
    cheguan_url = str(cheguan.engine.url)

    def spy(rt, epoch, tokens, sources=(), **kw):
        tokens = list(tokens)
        if str(rt.engine.url) == cheguan_url:
            seen.extend(bytes(t) for t in tokens)
        return real(rt, epoch, tokens, sources, **kw)

    monkeypatch.setattr(service, "read_index", spy)
    ref = open_case(hub, [(i, "member") for i in people], purpose="dibao", consent_digest=consent_digest_of(b"auth"),
                    operator="cw01", region="370304")
    run_case(hub, ref)
    assert seen and set(seen) <= held and set(seen) == {t for t in tok if t in held}
    data = load_case(hub.engine, ref)
    cells = sources_of(verified_answers(data))["cheguan"].cells
    for pos, t in enumerate(tok):
        got = [v for (p, _f), v in cells.items() if p == pos]
        assert got, pos
        if t not in held:
            assert all(v.state == "no_record" and v.evidence.startswith("filter:") and v.data_date == "2026-10-31" for v in got)
        else:
            assert all(not v.evidence.startswith("filter:") for v in got)
    # The evidence, exported and verified offline against the federation authority's key.
    import json

    from hedui.keys.signing import load_public
    from hedui.node.verification.evidence import verify_export

    path = root / f"{ref}.json"
    path.write_text(json.dumps(export_case(hub.engine, ref)), encoding="utf-8")
    verdicts = verify_export(path, load_public("authority", hub.config.path(hub.config.directory.authority_key)))
    assert {v["provider"]: v["status"] for v in verdicts}["cheguan"] == "ok"


def test_case_with_nobody_held_sends_no_lookup(fed, monkeypatch):
    """A household the department holds nobody of: no Lookup at all reaches it; its part of
    the case is the signed filter, and the report says no record as of the filter's data date."""
    from hedui.node.verification import service
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case
    from hedui.node.verification.index_tables import token_index
    from hedui.node.verification.report import load_case, sources_of, verified_answers

    tb, oracle, root = fed
    hub = tb.runtime("hub")
    run_check(hub, _check(root, CHECK.format(population='recipients = "env:HEDUI_DEPT_MINZHENG_URL"'), "nh.toml"), count_only=True)
    cheguan = tb.runtime("cheguan")
    with cheguan.engine.connect() as c:
        held = {bytes(t) for t in c.execute(select(token_index.c.token).where(token_index.c.epoch == 1)).scalars()}
    key = cheguan.provider.keys[1]
    people = [p.id18 for k, p in sorted(D.people.items()) if key.token(p.id18) not in held][:2]
    assert len(people) == 2
    calls: list[str] = []
    real = service.read_index
    cheguan_url = str(cheguan.engine.url)

    def spy(rt, epoch, tokens, sources=(), **kw):
        if str(rt.engine.url) == cheguan_url:
            calls.append("cheguan")
        return real(rt, epoch, tokens, sources, **kw)

    monkeypatch.setattr(service, "read_index", spy)
    ref = open_case(hub, [(i, "member") for i in people], purpose="dibao", consent_digest=consent_digest_of(b"auth: nobody held"),
                    operator="cw01", region="370304")
    run = run_case(hub, ref)
    assert calls == [] and {o.provider: o.status for o in run.outcomes}["cheguan"] == "ok"
    src = sources_of(verified_answers(load_case(hub.engine, ref)))["cheguan"]
    assert src.status == "ok" and src.cells
    assert {p for p, _f in src.cells} == {0, 1}
    assert all(v.state == "no_record" and v.evidence.startswith("filter:") for v in src.cells.values())
