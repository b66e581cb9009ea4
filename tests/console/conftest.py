"""Fixtures for the console tests: a hub federation on loopback (SQLite, or PostgreSQL for the
hub's store), operators, the console app with a fixed clock."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from sqlalchemy import text

from hedui.common.clock import FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.testbed import MemberPlan, Testbed

from .helpers import add_operators

PG_ADMIN_URL = os.environ.get("HEDUI_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")

#: The console's "now" in these tests: Tuesday 1 December 2026, 10:40 in China (02:40 UTC).
NOW = dt.datetime(2026, 12, 1, 2, 40, tzinfo=dt.UTC)
SMALL = [("hub", "博山区社会救助服务中心", ["hub"]), ("tax", "博山区税务局", ["provider"]),
         ("hrss", "博山区人力资源和社会保障局", ["provider"])]


def make_bed(root, members, *, store=None, residents: int = 120) -> Testbed:
    tb = Testbed(root, [MemberPlan(c, n, r) for c, n, r in members], store=store, residents=residents).create()
    _hub_rules_for(tb, {c for c, _, _ in members})
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    return tb.start()


def _hub_rules_for(tb: Testbed, codes: set[str]) -> None:
    """The packaged rules without the items of departments this federation does not have (a
    rule naming a department nobody runs makes every report incomplete, issue 12)."""
    import tomllib
    from importlib import resources

    import tomli_w

    rules = tomllib.loads((resources.files("hedui.node") / "data" / "verification-rules.toml").read_text(encoding="utf-8"))
    for key in ("income", "deductions", "assets"):
        rules[key] = [it for it in rules.get(key, []) if it["provider"] in codes]
    if not rules["income"]:
        return  # no income department at all (a hub alone): the packaged rules, reports incomplete
    if rules.get("temporary_assistance", {}).get("provider") not in codes:
        rules.pop("temporary_assistance", None)
    (tb.member_dir("hub") / "verification-rules.toml").write_text(tomli_w.dumps(rules), encoding="utf-8")
    cfg_path = tb.config_path("hub")
    cfg = tomllib.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.setdefault("hub", {})["rules"] = "verification-rules.toml"
    cfg_path.write_text(tomli_w.dumps(cfg), encoding="utf-8")


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def hub_store(request, tmp_path_factory):
    """The hub's store URL: a SQLite file (the testbed default), or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    admin = request.getfixturevalue("pg_admin")
    name = f"hedui_c_{uuid.uuid4().hex[:12]}"
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"), {"n": name})
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture(scope="module")
def small_bed(tmp_path_factory, hub_store):
    root = tmp_path_factory.mktemp("console") / "fed"
    tb = make_bed(root, SMALL, store=(lambda code: hub_store if code == "hub" else f"sqlite:///{root}/members/{code}/node.db")
                  if hub_store else None)
    add_operators(root / "console-users.toml")
    yield tb
    tb.stop()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


def start_console(tb, clock, **kw):
    """The console app over the testbed hub's runtime, served on a loopback port."""
    from hedui.node.console.app import ConsoleSettings, create_app

    from .helpers import ConsoleServer

    settings = ConsoleSettings(users_path=tb.root / "console-users.toml", **kw)
    app = create_app(tb.runtime("hub"), clock, settings)
    return app, ConsoleServer(app)


@pytest.fixture(scope="module")
def full_bed(tmp_path_factory):
    """The hub and the testbed's six departments; the discovery departments (medical
    insurance, disability federation) have run detection for the scenario date and their
    notices are delivered."""
    import time

    from hedui.node.testbed import DEFAULT_MEMBERS
    from hedui.node.testbed.discovery import SCENARIO_AS_OF

    root = tmp_path_factory.mktemp("console-full") / "fed"
    tb = make_bed(root, [(m.code, m.name, m.roles) for m in DEFAULT_MEMBERS], residents=200)
    add_operators(root / "console-users.toml")
    notices = {c: ns.rt.notices for c, ns in tb.servers.items() if ns.rt.notices is not None}
    for n in notices.values():
        n.run_now(SCENARIO_AS_OF)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(n.pending() for n in notices.values()):
        time.sleep(0.1)
    assert notices and not any(n.pending() for n in notices.values())
    yield tb
    tb.stop()


@pytest.fixture(scope="module")
def browser():
    from .helpers import Browser

    b = Browser()
    yield b
    b.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    return tmp_path_factory.mktemp("console-shots")
