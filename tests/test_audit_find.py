"""``hedui audit find``: both sides of one exchange, by request id, from node stores (SQLite and
PostgreSQL) and export files; the indexed copy column is not trusted; bad input exits with one
line and never echoes what was typed."""

from __future__ import annotations

import datetime as _dt
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import update
from typer.testing import CliRunner

import hedui.node.audit.tables  # noqa: F401 - registers the tables before `engine` creates them
from hedui.adapters.synthetic import resident
from hedui.node.audit import export as audit_export
from hedui.node.audit import find as audit_find
from hedui.node.audit.entry import Kind
from hedui.node.audit.log import AuditLog
from hedui.node.audit.note import Signer
from hedui.node.audit.tables import audit_entries
from hedui.node.cli.audit import FIND_NONE_EXIT, app
from hedui.node.errors import InvalidArgument, NotFound

ORIGIN = "test.hedui/find"
T0 = _dt.datetime(2026, 11, 3, 2, 15, 2, tzinfo=_dt.UTC)   # 10:15:02 in China
A, B = "0a" * 16, "b1" * 16


def _q(kind: str, rid: str, peer: str) -> tuple[str, dict]:
    return kind, {"request_id": rid, "peer": peer, "purpose": "PURPOSE_DIBAO", "case_ref": "HUB-2026-000007",
                  "request_digest": "ab" * 32}


def _a(kind: str, rid: str, peer: str) -> tuple[str, dict]:
    return kind, {"request_id": rid, "peer": peer, "answer_digest": "cd" * 32, "outcome": "ok"}


@pytest.fixture
def log(engine):
    with AuditLog(engine, ORIGIN, Signer.generate(ORIGIN), tile_height=2, clock=lambda: T0) as lg:
        lg.append(Kind.ADMIN, {"action": "start", "operator": "op-1"})
        lg.append(*_q(Kind.QUERY_SENT, A, "tax"))           # seq 1
        lg.append(*_q(Kind.QUERY_SENT, B, "hrss"))          # seq 2
        lg.append(*_a(Kind.ANSWER_RECEIVED, A, "tax"))      # seq 3
        lg.append(*_a(Kind.ANSWER_RECEIVED, B, "hrss"))     # seq 4
        lg.checkpoint()
        yield lg


def _export(engine, tmp_path):
    out = tmp_path / "hub.ndjson"
    audit_export.export(engine, 0, None, out, now=T0)
    return out


def test_a_store_and_its_export_list_the_same_entries_of_one_exchange(log, engine, tmp_path) -> None:
    found = audit_find.find_request(engine, A)
    assert [(f.seq, f.kind) for f in found] == [(1, Kind.QUERY_SENT), (3, Kind.ANSWER_RECEIVED)]
    assert found[0].fields["peer"] == "tax" and found[0].time == "2026-11-03T02:15:02.000000Z"
    assert [f.seq for f in audit_find.find_request(engine, B.upper())] == [2, 4]   # as typed from a listing
    assert audit_find.find_request(engine, "ee" * 16) == []
    export = _export(engine, tmp_path)
    assert audit_find.find_request(export, A) == found
    seen: list[tuple[int, int]] = []
    audit_find.find_request(export, A, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] == export.stat().st_size


def test_the_indexed_copy_column_is_not_trusted(log, engine) -> None:
    # Someone rewrites the look-up column of B's answer to name A: the entry's own bytes
    # still say B, so it is not listed for A (and `audit verify` is what says a log is intact).
    with engine.begin() as c:
        c.execute(update(audit_entries).where(audit_entries.c.seq == 4).values(request_id=A))
    assert [f.seq for f in audit_find.find_request(engine, A)] == [1, 3]


def test_a_damaged_export_line_is_skipped_not_fatal(log, engine, tmp_path) -> None:
    export = _export(engine, tmp_path)
    lines = export.read_bytes().splitlines(keepends=True)
    i = next(n for n, ln in enumerate(lines) if ln.startswith(b'{"type":"entry","seq":3,'))
    lines[i] = b'{"type":"entry","seq":3,"entry":"%%%not base64"}\n'
    export.write_bytes(b"".join(lines))
    assert [f.seq for f in audit_find.find_request(export, A)] == [1]


def test_bad_sources_and_ids_are_refused_clearly(tmp_path) -> None:
    with pytest.raises(NotFound):
        audit_find.find_request(tmp_path / "missing.ndjson", A)
    for bad in ("", "0a" * 15, "0a" * 17, "zz" * 16, resident(3, 7).id_number):
        with pytest.raises(InvalidArgument) as e:
            audit_find.request_id_of(bad)
        assert bad == "" or bad not in e.value.message


def test_cli_finds_both_sides_across_logs(log, engine, store_url, tmp_path) -> None:
    run = CliRunner().invoke
    export = _export(engine, tmp_path)
    r = run(app, ["find", A, f"hub={store_url}", str(export)])
    assert r.exit_code == 0, r.output
    assert "hub: 2 entries" in r.output and f"{export}: 2 entries" in r.output
    # Times in the federation zone, as every officer's tool shows them (docs/time.md).
    assert re.search(r"seq 1  2026-11-03 10:15:02 \(UTC\+8\)  query.sent  case_ref=HUB-2026-000007 peer=tax", r.output), r.output
    r = run(app, ["find", B, f"hub={store_url}", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["request_id"] == B and out["entries"] == 2
    assert [e["seq"] for e in out["logs"][0]["entries"]] == [2, 4]
    r = run(app, ["find", "ee" * 16, f"hub={store_url}", "--json"])
    assert r.exit_code == FIND_NONE_EXIT and json.loads(r.output)["entries"] == 0, r.output


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path) -> None:
    run = CliRunner().invoke
    ident = resident(5, 7).id_number
    r = run(app, ["find", ident, str(tmp_path / "x.ndjson")])
    assert r.exit_code == 2 and ident not in r.output and "want 32 hex digits" in r.output, r.output
    r = run(app, ["find", A, str(tmp_path / "missing.ndjson")])
    assert r.exit_code == 2 and "want a store URL" in r.output and "Traceback" not in r.output, r.output
    r = run(app, ["find", A, str(tmp_path / "x.ndjson"), "--time-zone", "Mars/Olympus"])
    assert r.exit_code == 2 and "--time-zone" in r.output, r.output


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=80))
def test_any_request_id_text_is_accepted_only_as_32_hex_and_never_echoed(text: str) -> None:
    try:
        rid = audit_find.request_id_of(text)
    except InvalidArgument as e:
        assert not re.fullmatch(r"[0-9a-fA-F]{32}", text.strip())
        # One fixed message whatever was typed: nothing of the input but its length.
        assert e.message == f"request id: got {len(text)} characters, want 32 hex digits (as `audit reconcile` lists them)"
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", rid) and rid == text.strip().lower()
