"""Issue 13 item 1: serving is all-or-nothing per index build.

``hedui node index`` runs as a real process (tests/index_kill.py) that SIGKILLs itself at a
named phase: before any token row, after some batches, inside a batch's transaction, after the
last batch before the swap, and inside the swap's transaction. After each kill every lookup
is compared with a complete index built separately: on a first build the node refuses
(UNAVAILABLE / INDEX_NOT_READY, readiness and gRPC health NOT_SERVING), on a rebuild
(incremental or full) it answers exactly what the previous complete build answered; running
the build again completes it and the answers are those of the new data. SQLite and PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from hedui.adapters import open_adapter
from hedui.common.clock import FixedClock
from hedui.common.errors import Reason, Unavailable
from hedui.keys.keyfile import load_secret
from hedui.keys.oprf import ServerKey
from hedui.node.readiness import Readiness
from hedui.node.runtime import Runtime
from hedui.node.store import migrate
from hedui.node.store.db import open_engine, sqlite_url
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.index import all_tokens, build_index, read_live
from hedui.node.verification.index_tables import index_progress
from hedui.node.verification.provider import OPRF_SEED_LABEL

CLOCK = FixedClock(datetime(2026, 11, 30, 3, 0, tzinfo=UTC))
HELPER = Path(__file__).with_name("index_kill.py")
PHASES = ["start", "tokens:2", "batch:3", "preswap", "swap"]

pytestmark = pytest.mark.slow


@pytest.fixture
def bed(tmp_path, store_url, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=300, clock=CLOCK, store=lambda code: store_url)
    tb.create()
    for k, v in tb.env().items():
        monkeypatch.setenv(k, v)
    tb.key = ServerKey.derive(load_secret(tb.member_dir("tax") / "oprf-epoch1.seed", tb.passphrase.encode(),
                                          label=OPRF_SEED_LABEL), 1)
    eng = open_engine(store_url)
    tb.eng = eng
    yield tb
    eng.dispose()


def _index(tb: Testbed, phase: str, *extra: str) -> int:
    env = {**os.environ, **tb.env()}
    p = subprocess.run([sys.executable, str(HELPER), phase, "node", "index", "--config", str(tb.config_path("tax")),
                        "--workers", "0", "--json", *extra], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode in (0, -signal.SIGKILL), p.stderr[-2000:]
    return p.returncode


def _reference(tb: Testbed, path: Path) -> dict[bytes, list]:
    """Every token's facts in a complete index of the department's data as it is now."""
    eng = open_engine(sqlite_url(path))
    migrate.upgrade(eng)
    build_index(eng, open_adapter(tb.member_dir("tax") / "mapping.toml"), tb.key, 1, workers=0, clock=CLOCK)
    toks = list(all_tokens(eng, 1))
    out = read_live(eng, 1, toks).facts
    eng.dispose()
    return out


def _served(tb: Testbed, tokens) -> dict[bytes, list]:
    return read_live(tb.eng, 1, tokens, ["tax"]).facts


def _ready(tb: Testbed) -> bool:
    rt = Runtime.open(tb.config_path("tax"), clock=CLOCK)
    try:
        return Readiness(rt).by_service(["hedui.v1.LookupService"])["hedui.v1.LookupService"]
    finally:
        rt.close()


def _change_data(tb: Testbed) -> None:
    """New amounts for half of the rows (seen by an incremental run: newer watermark), and
    the income of a few taxpayers moved to another person's identity."""
    con = sqlite3.connect(tb.member_dir("tax") / "dept.db")
    with con:
        con.execute("UPDATE tax_annual SET taxable_income = taxable_income + 1234, updated_at = '2026-12-01 00:00:00.000000' "
                    "WHERE id % 2 = 0")
        ids = [r[0] for r in con.execute("SELECT taxpayer_idno FROM tax_annual ORDER BY id LIMIT 2")]
        con.execute("UPDATE tax_annual SET taxpayer_idno = ?, updated_at = '2026-12-01 00:00:00.000000' "
                    "WHERE id IN (SELECT id FROM tax_annual WHERE id % 7 = 1 LIMIT 5)", (ids[1],))
    con.close()


@pytest.mark.parametrize("phase", PHASES)
def test_killed_first_build_serves_nothing(bed, tmp_path, phase):
    want = _reference(bed, tmp_path / "ref.db")
    probe = [*want, b"\x01" * 64]
    assert _index(bed, phase) == -signal.SIGKILL
    with bed.eng.connect() as c:
        assert c.execute(select(index_progress.c.status, index_progress.c.live_gen)).one() == ("running", None)
    with pytest.raises(Unavailable) as e:
        _served(bed, probe)
    assert e.value.reason == Reason.INDEX_NOT_READY
    assert not _ready(bed)
    assert list(all_tokens(bed.eng, 1)) == []
    # Running it again resumes and completes; then every answer is the complete index's.
    assert _index(bed, "none") == 0
    assert _served(bed, probe) == want
    assert _ready(bed)


@pytest.mark.parametrize("full", [False, True], ids=["incremental", "full"])
@pytest.mark.parametrize("phase", PHASES)
def test_killed_rebuild_serves_the_previous_build(bed, tmp_path, phase, full):
    assert _index(bed, "none") == 0
    old = _reference(bed, tmp_path / "old.db")
    _change_data(bed)
    new = _reference(bed, tmp_path / "new.db")
    assert old != new
    probe = [*dict.fromkeys([*old, *new]), b"\x01" * 64]
    assert _index(bed, phase, *(["--full"] if full else [])) == -signal.SIGKILL
    assert _served(bed, probe) == old          # not one answer from the partial rebuild
    assert _ready(bed)
    assert list(all_tokens(bed.eng, 1)) == sorted(old)
    assert _index(bed, "none", *(["--full"] if full else [])) == 0
    assert _served(bed, probe) == new
    assert list(all_tokens(bed.eng, 1)) == sorted(new)


def test_lookup_over_the_wire_refuses_until_a_build_is_live(tmp_path, monkeypatch):
    """A provider whose first build has not completed answers the hub's lookup with
    UNAVAILABLE / INDEX_NOT_READY (so the case is incomplete, never "no record"); once the
    build is live the same case completes."""
    from hedui.adapters.synthetic import resident
    from hedui.keys.keyfile import PASSPHRASE_ENV
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case

    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 residents=40, data_seed=7, clock=CLOCK)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.start()
    try:
        hub = tb.runtime("hub")
        ids = [(resident(n, 7).id_number, "m") for n in (1, 2)]
        ref = open_case(hub, ids, purpose="dibao", consent_digest=consent_digest_of(b"auth"), operator="cw",
                        region="370304")
        res = run_case(hub, ref)
        (tax,) = [o for o in res.outcomes if o.provider == "tax"]
        assert not res.complete and tax.status != "ok" and "INDEX_NOT_READY" in tax.reason
        tb.build_indexes(["tax"])
        res = run_case(hub, ref)
        assert res.complete and [o.status for o in res.outcomes if o.provider == "tax"] == ["ok"]
    finally:
        tb.stop()
