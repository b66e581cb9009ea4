"""``hedui notices | leads | referrals | report``: active discovery on the command line.

Department side: ``notices detect`` runs a department's rules over its records (a CSV export
for now, or the adapter the node wires in through :data:`wiring`) and, with ``--enqueue``,
queues signed, sealed notices in the outbox; ``notices status`` shows the outbox.
On a configured node, ``notices detect --config node.toml`` runs the node's own rules over its
own data and queues the notices, and ``notices push --config node.toml`` delivers them now.
Hub side: ``leads``, ``referrals`` and ``report`` work the hub's leads and referral slips; they
take the hub's ``--config node.toml``, or ``--db`` with ``--hub-config`` (hub code, person-key
secret, the hub's public sealing key, routing table; see
:meth:`hedui.node.discovery.hub.Hub.from_config`).

Identity numbers are never taken as command-line arguments (shell history, ``ps``): a manual
lead reads the identity from a file or standard input. Output never shows one unless
``leads show --reveal`` is given the hub's private sealing key.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Callable, Iterable

import typer
from rich.table import Table

from hedui.adapters.records import Fact, Record
from hedui.node.cli._common import cli_errors, console, emit_json, fail

__all__ = ["notices_app", "leads_app", "referrals_app", "report_app", "wiring", "Wiring", "read_records_csv"]

notices_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
leads_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
referrals_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
report_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

_DB = typer.Option(None, "--db", help="Node store URL (sqlite:///node.db, postgresql://…); or use --config")
_HUB_CONFIG = typer.Option(None, "--hub-config", help="Hub discovery config (TOML: hub, secrets, routes); with --db")
_CONFIG = typer.Option(None, "--config", "-c", help="The hub node's node.toml (instead of --db and --hub-config)")
_JSON = typer.Option(False, "--json", help="Machine-readable output")

_DISCOVERY_TABLES = ("notice_outbox", "notice_inbox", "leads", "lead_events", "referrals")


@dataclass
class Wiring:
    """What the node plugs in (set by the node's CLI at start):

    - ``records(department)`` yields the department's canonical records (its adapter);
    - ``sign_and_seal(provider, hub)`` returns the ``(detection, notice_id) -> envelope bytes``
      callable that seals to the hub's directory key and DSSE-signs with the node key.
    """

    records: Callable[[str], Iterable[Record]] | None = None
    sign_and_seal: Callable[[str, str], Callable] | None = None


wiring = Wiring()


# ---------------------------------------------------------------- helpers


def _store(db: str, option: str = "--db"):
    from sqlalchemy import inspect

    from hedui.node.discovery import tables  # noqa: F401 - registers the tables
    from hedui.node.store.db import open_engine

    engine = open_engine(db)
    try:
        present = set(inspect(engine).get_table_names())
    except Exception as exc:
        engine.dispose()
        fail(f"{option}: got a store that cannot be opened ({type(exc).__name__}), want a reachable node store")
    missing = [t for t in _DISCOVERY_TABLES if t not in present]
    if missing:
        engine.dispose()
        fail(f"{option}: table {missing[0]} is missing, want a migrated store (run `hedui node migrate`)")
    return engine


def _node_config(config: Path, role: str):
    from hedui.node.config import load_config

    cfg = load_config(config)
    if role not in cfg.node.roles:
        fail(f"--config {config}: node.roles: got {', '.join(cfg.node.roles)}, want a node with the {role} role")
    return cfg


def _hub_with_config(db: str | None, hub_config: Path | None, config: Path | None):
    """``(hub, node config or None)`` from ``--config``, or from ``--db`` with ``--hub-config``."""
    from hedui.node.discovery.hub import Hub

    if config is not None:
        if db is not None or hub_config is not None:
            fail("give --config, or --db with --hub-config, not both")
        from hedui.keys.directory import load_directory
        from hedui.keys.signing import load_public
        from hedui.node.discovery.hub import load_hub

        cfg = _node_config(config, "hub")
        directory = load_directory(
            cfg.path(cfg.directory.path), load_public("authority", cfg.path(cfg.directory.authority_key))
        )
        engine = _store(cfg.store_url(), "--config store.url")
        try:
            return load_hub(cfg, engine, directory), cfg
        except BaseException:
            engine.dispose()
            raise
    if db is None or hub_config is None:
        fail("--config: got nothing, want the hub's node.toml (or both --db and --hub-config)")
    return Hub.from_config(_store(db), hub_config), None


def _hub(db: str | None, hub_config: Path | None, config: Path | None = None):
    return _hub_with_config(db, hub_config, config)[0]


def _notices(rt, config: Path):
    if rt.notices is None:
        rt.close()
        fail(f"--config {config}: provider.rules: got none, want a detection rule file (docs/discovery.md)")
    return rt.notices


def _parse_date(value: str | None, option: str) -> date:
    if value is None:
        from hedui.node.discovery.calendar import local_date

        return local_date(datetime.now(timezone.utc))
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: got {value!r}, want a date like 2025-06-03")
    raise AssertionError  # pragma: no cover


def _secret_file(path: Path | None, env: str, option: str, minimum: int = 16) -> bytes:
    if path is None:
        env_value = os.environ.get(env)
        if not env_value:
            fail(f"{option}: got nothing, want a secret file (or set {env})")
        path = Path(env_value)
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"{option} {path}: got an unreadable file ({exc.strerror}), want a secret file")
    if len(data) < minimum:
        fail(f"{option} {path}: got {len(data)} bytes, want at least {minimum} random bytes")
    return data


def read_records_csv(path: str) -> list[Record]:
    """A department export as canonical records: UTF-8 (BOM allowed) CSV with the columns
    ``identity, fact, value, unit, on`` and any further columns as fact attributes (empty
    cells are left out). One fact per row. Errors name the line and column, never the
    identity."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"--records-csv {path}: got an unreadable file ({exc.strerror}), want a CSV file")
    except UnicodeDecodeError:
        fail(f"--records-csv {path}: got non-UTF-8 bytes, want UTF-8 CSV")
    reader = csv.DictReader(io.StringIO(text))
    need = ("identity", "fact", "value", "unit", "on")
    header = reader.fieldnames or []
    for col in need:
        if col not in header:
            fail(f"--records-csv {path}: header: got {', '.join(header) or 'nothing'}, want columns {', '.join(need)}")
    extra = [c for c in header if c not in need]
    out: list[Record] = []
    for row in reader:
        line = reader.line_num
        where = f"--records-csv {path} line {line}"
        if None in row:
            fail(f"{where}: got more cells than header columns, want {len(header)}")
        try:
            value = Decimal((row["value"] or "").strip())
        except InvalidOperation:
            fail(f"{where}: value: got {row['value'][:20]!r}, want a decimal")
        on_text = (row["on"] or "").strip()
        try:
            on = date.fromisoformat(on_text) if on_text else None
        except ValueError:
            fail(f"{where}: on: got {on_text[:20]!r}, want a date like 2025-05-31")
        identity = (row["identity"] or "").strip()
        if not identity:
            fail(f"{where}: identity: got nothing, want an identity number")
        attrs = {c: row[c].strip() for c in extra if row.get(c) and row[c].strip()}
        fact = Fact((row["fact"] or "").strip(), value, (row["unit"] or "").strip(), on, attrs)
        out.append(Record(identity=identity, locator=f"{Path(path).name}:line {line}", facts=(fact,)))
    return out


# ---------------------------------------------------------------- notices (department)


@notices_app.command("detect")
@cli_errors
def detect_cmd(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="node.toml: run this node's rules over its own data and queue the notices"
    ),
    provider: str | None = typer.Option(None, help="This department's member code (without --config)"),
    department: str | None = typer.Option(None, help="Use the shipped rules of this department (e.g. medins)"),
    rules: Path | None = typer.Option(None, "--rules", help="A rule file, instead of --department"),
    records_csv: str | None = typer.Option(None, "--records-csv", help="Department export CSV ('-' for stdin)"),
    as_of: str | None = typer.Option(None, "--as-of", help="Run date (default: today in China)"),
    dedup_secret_file: Path | None = typer.Option(
        None, "--dedup-secret-file", help="Node-local secret for dedup keys (or HEDUI_DEDUP_SECRET_FILE)"
    ),
    calendar_overrides: Path | None = typer.Option(None, "--calendar-overrides", help="Working-day override file"),
    enqueue_to: str | None = typer.Option(None, "--enqueue", help="Queue notices for this hub member code"),
    db: str | None = typer.Option(None, "--db", help="Node store URL (needed with --enqueue)"),
    json_out: bool = _JSON,
) -> None:
    """Run detection rules now and list what they find (public fields only)."""
    from hedui.node.discovery.calendar import WorkCalendar
    from hedui.node.discovery.detect import detect
    from hedui.node.discovery.outbox import enqueue
    from hedui.node.discovery.rules import default_rules, load_rules

    if config is not None:
        given = [name for name, v in (("--provider", provider), ("--department", department), ("--rules", rules),
                                      ("--records-csv", records_csv), ("--dedup-secret-file", dedup_secret_file),
                                      ("--calendar-overrides", calendar_overrides), ("--enqueue", enqueue_to),
                                      ("--db", db)) if v is not None]
        if given:
            fail(f"{given[0]}: not with --config (the node's config names its rules, data, secret and hub)")
        _detect_on_node(config, _parse_date(as_of, "--as-of"), json_out)
        return
    if provider is None:
        fail("--provider: got nothing, want this department's member code (or --config node.toml)")
    if (department is None) == (rules is None):
        fail("give exactly one of --department or --rules")
    ruleset = default_rules(department) if department is not None else load_rules(rules)  # type: ignore[arg-type]
    run_date = _parse_date(as_of, "--as-of")
    secret = _secret_file(dedup_secret_file, "HEDUI_DEDUP_SECRET_FILE", "--dedup-secret-file")
    if records_csv is not None:
        records: Iterable[Record] = read_records_csv(records_csv)
    elif wiring.records is not None:
        records = wiring.records(ruleset.department)
    else:
        fail("--records-csv: got nothing, want a department export (no adapter is wired in)")
    if enqueue_to is not None and db is None:
        fail("--db: got nothing, want the node store URL to queue notices in")
    if enqueue_to is not None and wiring.sign_and_seal is None:
        fail("--enqueue: got no notice signer wired in, want this run from a configured node")
    found = detect(records, ruleset, run_date, WorkCalendar(calendar_overrides), provider=provider, dedup_secret=secret)
    queued = 0
    if enqueue_to is not None:
        signer = wiring.sign_and_seal(provider, enqueue_to)  # type: ignore[misc]
        engine = _store(db)  # type: ignore[arg-type]
        try:
            with engine.begin() as conn:
                for d in found:
                    queued += enqueue(conn, d, signer, hub=enqueue_to)[1]
        finally:
            engine.dispose()
    rows = [
        {
            "rule": d.rule,
            "event_type": d.event_type,
            "region": d.region,
            "event_date": d.event_date.isoformat(),
            "due_date": d.due_date.isoformat(),
            "period": d.period,
            "dedup_key": d.dedup_key,
        }
        for d in found
    ]
    if json_out:
        emit_json({"as_of": run_date.isoformat(), "detections": rows, "queued": queued})
        return
    _print_detections(rows, run_date, f"; {queued} newly queued" if enqueue_to else "")


def _print_detections(rows: list[dict], run_date: date, tail: str) -> None:
    table = Table("rule", "event type", "region", "event date", "due", "period", "key")
    for r in rows:
        table.add_row(r["rule"], r["event_type"], r["region"], r["event_date"], r["due_date"], r["period"],
                      r["dedup_key"][:12])
    console.print(table)
    console.print(f"{len(rows)} detection(s) for {run_date}{tail}")


def _detect_on_node(config: Path, run_date: date, json_out: bool) -> None:
    from hedui.node.runtime import Runtime

    _node_config(config, "provider")
    rt = Runtime.open(config)
    try:
        run = _notices(rt, config).run_now(run_date)
    finally:
        rt.close()
    out = run.as_dict()
    if json_out:
        emit_json(out)
        return
    _print_detections(out["detections"], run_date,
                      f"; {run.queued} newly queued; {run.records} record(s) read, {run.problems} row(s) skipped")


@notices_app.command("push")
@cli_errors
def push_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The provider node's node.toml"),
    retry_now: bool = typer.Option(False, "--retry-now", help="Push every pending notice now, ignoring the backoff"),
    json_out: bool = _JSON,
) -> None:
    """Push queued notices to the hub now and store the signed receipts (the node does this
    in the background too). Exits 1 if a notice could not be delivered; it stays queued."""
    from hedui.node.runtime import Runtime

    _node_config(config, "provider")
    rt = Runtime.open(config)
    try:
        notices = _notices(rt, config)
        try:
            stats = notices.push(retry_now=retry_now)
            pending = notices.pending()
        finally:
            notices.close()
    finally:
        rt.close()
    out = {"attempted": stats.attempted, "delivered": stats.delivered, "duplicates": stats.duplicates,
           "failed": stats.failed, "pending": pending}
    if json_out:
        emit_json(out)
    else:
        console.print(f"delivered {stats.delivered} of {stats.attempted} attempted "
                      f"({stats.duplicates} already at the hub); {pending} pending")
    if stats.failed:
        if json_out:
            raise typer.Exit(1)
        fail(f"push: {stats.failed} notice(s) not delivered; they stay queued and are retried "
             "(see `hedui notices status` for the last error)")


@notices_app.command("retry")
@cli_errors
def retry_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The provider node's node.toml"),
    json_out: bool = _JSON,
) -> None:
    """Queue again every notice the hub rejected (after the cause — e.g. a wrong hub sealing
    key or an identity fixed at the source — has been dealt with)."""
    from hedui.node.discovery.outbox import retry_rejected

    engine = _store(_node_config(config, "provider").store_url(), "--config store.url")
    try:
        n = retry_rejected(engine)
    finally:
        engine.dispose()
    if json_out:
        emit_json({"requeued": n})
    else:
        console.print(f"{n} rejected notice(s) queued again")


@notices_app.command("status")
@cli_errors
def status_cmd(
    db: str | None = _DB,
    config: Path | None = typer.Option(None, "--config", "-c", help="The provider node's node.toml (instead of --db)"),
    json_out: bool = _JSON,
) -> None:
    """The outbox: pending and delivered notices, retries, late deliveries."""
    from sqlalchemy import func, select

    from hedui.node.discovery.calendar import local_date
    from hedui.node.discovery.tables import notice_outbox as o
    from hedui.node.discovery.tables import utc

    if (db is None) == (config is None):
        fail("give exactly one of --db or --config")
    engine = _store(db) if db is not None else _store(_node_config(config, "provider").store_url(), "--config store.url")
    try:
        with engine.connect() as conn:
            counts = dict(conn.execute(select(o.c.status, func.count()).group_by(o.c.status)).all())
            pending = conn.execute(
                select(o.c.notice_id, o.c.rule, o.c.hub, o.c.due_date, o.c.attempts, o.c.next_attempt_at, o.c.last_error)
                .where(o.c.status == "pending")
                .order_by(o.c.created_at)
                .limit(50)
            ).all()
            late = sum(
                1
                for due, at in conn.execute(
                    select(o.c.due_date, o.c.delivered_at).where(o.c.status == "delivered")
                )
                if local_date(utc(at)) > due  # type: ignore[arg-type]
            )
    finally:
        engine.dispose()
    out = {
        "pending": counts.get("pending", 0),
        "delivered": counts.get("delivered", 0),
        "rejected": counts.get("rejected", 0),
        "delivered_after_due_date": late,
        "oldest_pending": [
            {
                "notice_id": bytes(r.notice_id).hex(),
                "rule": r.rule,
                "hub": r.hub,
                "due_date": r.due_date.isoformat(),
                "attempts": r.attempts,
                "next_attempt_at": utc(r.next_attempt_at).isoformat(),  # type: ignore[union-attr]
                "last_error": r.last_error,
            }
            for r in pending
        ],
    }
    if json_out:
        emit_json(out)
        return
    console.print(f"pending {out['pending']}, delivered {out['delivered']} "
                  f"({out['delivered_after_due_date']} after their due date), rejected {out['rejected']}"
                  + (" — see `hedui notices retry` once the cause is fixed" if out["rejected"] else ""))
    if pending:
        table = Table("notice", "rule", "hub", "due", "attempts", "next try", "last error")
        for r in out["oldest_pending"]:
            table.add_row(r["notice_id"][:12], r["rule"], r["hub"], r["due_date"], str(r["attempts"]),
                          r["next_attempt_at"][:19], (r["last_error"] or "")[:60])
        console.print(table)


# ---------------------------------------------------------------- leads (hub)


@leads_app.command("list")
@cli_errors
def leads_list(
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    status: str | None = typer.Option(None, help="open | closed"),
    region: str | None = typer.Option(None, help="Region code prefix"),
    json_out: bool = _JSON,
) -> None:
    """Leads, newest first."""
    hub = _hub(db, hub_config, config)
    try:
        rows = hub.list_leads(status=status, region=region)
    finally:
        hub.engine.dispose()
    if json_out:
        emit_json(rows)
        return
    table = Table("lead", "region", "status", "events", "sources", "created", "updated")
    for r in rows:
        table.add_row(str(r["lead_id"]), r["region"], r["status"], str(r["events"]), str(r["sources"]),
                      r["created_at"][:19], r["updated_at"][:19])
    console.print(table)


@leads_app.command("show")
@cli_errors
def leads_show(
    lead_id: int = typer.Argument(..., help="Lead id"),
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    reveal: bool = typer.Option(
        False, "--reveal", help="Open the sealed identity (needs --sealing-key, or --config with [hub] sealing_key)"
    ),
    sealing_key: Path | None = typer.Option(None, "--sealing-key", help="Hub private sealing key (PEM)"),
    passphrase_env: str = typer.Option(
        "HEDUI_SEALING_PASSPHRASE", help="Environment variable with its passphrase (with --sealing-key)"
    ),
    json_out: bool = _JSON,
) -> None:
    """One lead: which notices and reports merged into it, and its referrals."""
    from hedui.keys.sealing import SealingKey

    if reveal and sealing_key is None and config is None:
        fail("--sealing-key: got nothing, want the hub's private sealing key to --reveal")
    hub, cfg = _hub_with_config(db, hub_config, config)
    try:
        info = hub.lead(lead_id)
        if reveal:
            if sealing_key is not None:
                pw = os.environ.get(passphrase_env, "").encode()
                if not pw:
                    fail(f"{passphrase_env}: got nothing, want the sealing key passphrase in the environment")
                key = SealingKey.load(sealing_key, pw)
            else:
                from hedui.keys.keyfile import passphrase

                if cfg.hub.sealing_key is None:
                    fail(f"--config {config}: hub.sealing_key: got none, want the hub's sealing key to --reveal")
                key = SealingKey.load(cfg.path(cfg.hub.sealing_key), passphrase(env=cfg.keys.passphrase_env))
            info["identity"] = hub.reveal_identity(lead_id, key)
    finally:
        hub.engine.dispose()
    if json_out:
        emit_json(info)
        return
    console.print(f"lead {info['lead_id']}  region {info['region']}  status {info['status']}  "
                  f"sources {', '.join(info['providers'])}")
    if "identity" in info:
        console.print(f"identity {info['identity']}")
    events = Table("source", "provider", "event type", "event date", "received")
    for e in info["events"]:
        events.add_row(e["source"], e["provider"], e["event_type"], e["event_date"], e["received_at"][:19])
    console.print(events)
    _print_referrals(info["referrals"])


@leads_app.command("add")
@cli_errors
def leads_add(
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    identity_file: str = typer.Option(..., "--identity-file", help="File holding the identity number ('-' for stdin)"),
    region: str = typer.Option(..., help="Region code where the person lives"),
    event_type: str = typer.Option(..., help="What happened, e.g. illness, fire_loss, disability"),
    event_date: str | None = typer.Option(None, help="When it was found (default: today)"),
    reporter: str = typer.Option(..., help="Grid worker's or aide's code"),
    note: str = typer.Option("", help="Short note (sealed with the identity)"),
    json_out: bool = _JSON,
) -> None:
    """A grid worker's same-day report: merged into the person's lead and referred."""
    try:
        raw = sys.stdin.read() if identity_file == "-" else Path(identity_file).read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"--identity-file {identity_file}: got an unreadable file ({exc.strerror}), want a file with one identity")
    except UnicodeDecodeError:
        fail(f"--identity-file {identity_file}: got non-UTF-8 bytes, want UTF-8 text")
    lines = [ln for ln in raw.splitlines() if ln.strip()]
    if len(lines) != 1:
        fail(f"--identity-file {identity_file}: got {len(lines)} non-empty lines, want exactly one identity")
    hub = _hub(db, hub_config, config)
    try:
        acc = hub.add_manual_lead(identity=lines[0], region=region, event_type=event_type,
                                  event_date=_parse_date(event_date, "--event-date"), reporter=reporter, note=note)
    finally:
        hub.engine.dispose()
    out = {"lead_id": acc.lead_id, "new_lead": acc.new_lead, "referral_id": acc.referral_id}
    if json_out:
        emit_json(out)
    elif acc.referral_id is None:
        console.print(f"merged into lead {acc.lead_id} (its referral is still open)")
    else:
        console.print(f"{'new' if acc.new_lead else 'existing'} lead {acc.lead_id}; referral {acc.referral_id}")


@leads_app.command("merged")
@cli_errors
def leads_merged(
    db: str | None = _DB, hub_config: Path | None = _HUB_CONFIG, config: Path | None = _CONFIG, json_out: bool = _JSON
) -> None:
    """Leads into which several notices or reports were merged (merge information)."""
    hub = _hub(db, hub_config, config)
    try:
        rows = [hub.lead(r["lead_id"]) for r in hub.merged_leads()]
    finally:
        hub.engine.dispose()
    out = [
        {"lead_id": r["lead_id"], "region": r["region"], "status": r["status"], "events": len(r["events"]),
         "providers": r["providers"], "event_types": sorted({e["event_type"] for e in r["events"]})}
        for r in rows
    ]
    if json_out:
        emit_json(out)
        return
    table = Table("lead", "region", "status", "events", "sources", "event types")
    for r in out:
        table.add_row(str(r["lead_id"]), r["region"], r["status"], str(r["events"]), ", ".join(r["providers"]),
                      ", ".join(r["event_types"]))
    console.print(table)


# ---------------------------------------------------------------- referrals (hub)


def _print_referrals(rows) -> None:
    table = Table("referral", "lead", "assignee", "type", "event", "created", "due", "status", "outcome")
    for r in rows:
        outcome = (r["outcome"] or "") + (f" ({r['programme']})" if r.get("programme") else "")
        table.add_row(str(r["referral_id"]), str(r["lead_id"]), r["assignee"], r["assignee_kind"], r["event_type"],
                      r["created_at"][:10], r["due_date"], r["status"], outcome)
    console.print(table)


def _emit_referrals(views, json_out: bool) -> None:
    rows = [v.as_dict() for v in views]
    if json_out:
        emit_json(rows)
    else:
        _print_referrals(rows)
        console.print(f"{len(rows)} referral(s)")


@referrals_app.command("list")
@cli_errors
def referrals_list(
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    status: str | None = typer.Option(None, help="open | responded | escalated"),
    assignee: str | None = typer.Option(None, help="Town or department code"),
    json_out: bool = _JSON,
) -> None:
    """Referral slips (线索转办单)."""
    hub = _hub(db, hub_config, config)
    try:
        _emit_referrals(hub.list_referrals(status=status, assignee=assignee), json_out)
    finally:
        hub.engine.dispose()


@referrals_app.command("respond")
@cli_errors
def referrals_respond(
    referral_id: int = typer.Argument(..., help="Referral id"),
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    outcome: str = typer.Option(..., help="found | assisted | not_eligible | unreachable"),
    programme: str | None = typer.Option(None, help="With assisted: dibao, tekun, temporary_assistance, medical, …"),
    json_out: bool = _JSON,
) -> None:
    """Record the town's or department's answer."""
    hub = _hub(db, hub_config, config)
    try:
        view = hub.record_response(referral_id, outcome=outcome, programme=programme)
    finally:
        hub.engine.dispose()
    if json_out:
        emit_json(view.as_dict())
    else:
        console.print(f"referral {view.referral_id}: {view.outcome}" + (f" ({view.programme})" if view.programme else ""))


@referrals_app.command("overdue")
@cli_errors
def referrals_overdue(
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    as_of: str | None = typer.Option(None, "--as-of", help="Date (default: today)"),
    json_out: bool = _JSON,
) -> None:
    """Referrals not answered within their working-day deadline."""
    hub = _hub(db, hub_config, config)
    try:
        _emit_referrals(hub.overdue(_parse_date(as_of, "--as-of")), json_out)
    finally:
        hub.engine.dispose()


@referrals_app.command("escalate")
@cli_errors
def referrals_escalate(
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    as_of: str | None = typer.Option(None, "--as-of", help="Date (default: today)"),
    json_out: bool = _JSON,
) -> None:
    """Mark overdue open referrals escalated (通报督办); lists the ones escalated now."""
    hub = _hub(db, hub_config, config)
    try:
        _emit_referrals(hub.escalate(_parse_date(as_of, "--as-of")), json_out)
    finally:
        hub.engine.dispose()


# ---------------------------------------------------------------- report (hub)


@report_app.command("monthly")
@cli_errors
def report_monthly(
    db: str | None = _DB,
    hub_config: Path | None = _HUB_CONFIG,
    config: Path | None = _CONFIG,
    year: int = typer.Option(..., help="Year"),
    month: int = typer.Option(..., help="Month 1-12"),
    fmt: str = typer.Option("json", "--format", help="json | html"),
    out: Path | None = typer.Option(None, "--out", help="Write to this file instead of standard output"),
) -> None:
    """The month's received leads, referrals and their completion, by department and town."""
    import json

    from hedui.node.discovery import report

    if fmt not in ("json", "html"):
        fail(f"--format: got {fmt!r}, want json or html")
    hub = _hub(db, hub_config, config)
    try:
        rep = report.monthly_report(hub, year, month)
    finally:
        hub.engine.dispose()
    text = json.dumps(rep, ensure_ascii=False, indent=1) + "\n" if fmt == "json" else report.render_html(rep)
    if out is None:
        sys.stdout.write(text)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"--out {out}: got an unwritable path ({exc.strerror}), want a writable file")
    console.print(f"wrote {out}")
