"""``hedui notices``: a department's side of active discovery.

``notices detect --config node.toml`` runs the node's own rules over its own data and queues
signed, sealed notices in the node's outbox; without ``--config`` it runs given rules over a
facts CSV (``--records-csv``) and lists what they find, and with ``--enqueue`` queues the
notices in a store, signed with ``--signing-key`` and sealed to ``--hub-sealing-key``.
``notices push`` delivers them now, ``notices status`` shows the outbox, ``notices retry``
queues again what the hub rejected. Identity numbers are never shown.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from hedui.adapters.facts_csv import read_facts_csv
from hedui.adapters.records import Record
from hedui.common.clock import Clock, fmt_instant
from hedui.node.cli._common import AS_OF_HELP, as_of_clock, cli_errors, console, emit_json, err_console, fail, wall_clock
from hedui.node.cli._discovery import DB, JSON, node_config, secret_file, store
from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.discovery.detect import Detection

if TYPE_CHECKING:
    from hedui.node.discovery.provider import ProviderNotices
    from hedui.node.runtime import Runtime

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


@app.command("detect")
@cli_errors
def detect_cmd(
    config: Path | None = typer.Option(
        None, "--config", "-c", help="node.toml: run this node's rules over its own data and queue the notices"
    ),
    provider: str | None = typer.Option(None, help="This department's member code (without --config)"),
    department: str | None = typer.Option(None, help="Use the shipped rules of this department (e.g. medins)"),
    rules: Path | None = typer.Option(None, "--rules", help="A rule file, instead of --department"),
    records_csv: str | None = typer.Option(None, "--records-csv", help="Department export CSV ('-' for stdin)"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP + "; the run date, not in the future"),
    dedup_secret_file: Path | None = typer.Option(
        None, "--dedup-secret-file", help="Node-local secret for dedup keys (or HEDUI_DEDUP_SECRET_FILE)"
    ),
    calendar_overrides: Path | None = typer.Option(None, "--calendar-overrides", help="Working-day override file"),
    enqueue_to: str | None = typer.Option(None, "--enqueue", help="Queue notices for this hub member code"),
    db: str | None = typer.Option(None, "--db", help="Node store URL (with --enqueue)"),
    signing_key: Path | None = typer.Option(
        None, "--signing-key", help="This department's encrypted signing key (with --enqueue; passphrase as for the node)"
    ),
    hub_sealing_key: Path | None = typer.Option(
        None, "--hub-sealing-key", help="The hub's public sealing key file, 1,216 bytes (with --enqueue)"
    ),
    json_out: bool = JSON,
) -> None:
    """Run detection rules now and list what they find (public fields only)."""
    from hedui.node.discovery.detect import detect
    from hedui.node.discovery.doorbell import bell_name, ring
    from hedui.node.discovery.outbox import enqueue_many
    from hedui.node.discovery.rules import default_rules, load_rules

    if config is not None:
        given = [name for name, v in (("--provider", provider), ("--department", department), ("--rules", rules),
                                      ("--records-csv", records_csv), ("--dedup-secret-file", dedup_secret_file),
                                      ("--calendar-overrides", calendar_overrides), ("--enqueue", enqueue_to),
                                      ("--db", db), ("--signing-key", signing_key),
                                      ("--hub-sealing-key", hub_sealing_key)) if v is not None]
        if given:
            fail(f"{given[0]}: not with --config (the node's config names its rules, data, secret and hub)")
        _detect_on_node(config, as_of, json_out)
        return
    if provider is None:
        fail("--provider: got nothing, want this department's member code (or --config node.toml)")
    if (department is None) == (rules is None):
        fail("give exactly one of --department or --rules")
    ruleset = default_rules(department) if department is not None else load_rules(rules)  # type: ignore[arg-type]
    # Without a node config there is no directory: the zone is the default (docs/time.md).
    wall = wall_clock()
    run_date = as_of_clock(as_of, wall=wall, future=False).today()
    secret = secret_file(dedup_secret_file, "HEDUI_DEDUP_SECRET_FILE", "--dedup-secret-file")
    if records_csv is None:
        fail("--records-csv: got nothing, want a department export (or --config node.toml to read the node's data)")
    records = _read_records(records_csv)
    sign_and_seal = None
    if enqueue_to is not None:
        if db is None:
            fail("--db: got nothing, want the node store URL to queue notices in")
        if signing_key is None or hub_sealing_key is None:
            fail("--enqueue: want --signing-key (this department's key) and --hub-sealing-key (the hub's public key)")
        sign_and_seal = _signer(provider, enqueue_to, signing_key, hub_sealing_key, wall)
    cal = WorkCalendar(calendar_overrides)
    found = detect(records, ruleset, run_date, cal, provider=provider, dedup_secret=secret)
    queued = 0
    if enqueue_to is not None and sign_and_seal is not None and db is not None:
        engine = store(db)
        try:
            with engine.begin() as conn:
                queued = sum(c for _, c in enqueue_many(conn, found, sign_and_seal, hub=enqueue_to, now=wall.now()))
            if queued:
                ring(bell_name(engine))   # a node serving this store pushes them now
        finally:
            engine.dispose()
    rows = [_with_basis(d.public(), d, cal) for d in found]
    if json_out:
        emit_json({"as_of": run_date.isoformat(), "detections": rows, "queued": queued})
        return
    _print_detections(rows, run_date, f"; {queued} newly queued" if enqueue_to else "")


def _notices(rt: Runtime, config: Path) -> ProviderNotices:
    if rt.notices is None:
        rt.close()
        fail(f"--config {config}: provider.rules: got none, want a detection rule file (docs/discovery.md)")
    return rt.notices


def _read_records(path: str) -> list[Record]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"--records-csv {path}: got an unreadable file ({exc.strerror}), want a CSV file")
    except UnicodeDecodeError:
        fail(f"--records-csv {path}: got non-UTF-8 bytes, want UTF-8 CSV")
    return read_facts_csv(text, name=f"--records-csv {Path(path).name if path != '-' else 'stdin'}")


def _signer(provider: str, hub: str, signing_key: Path, hub_sealing_key: Path,
            clock: Clock) -> Callable[[Detection, bytes], bytes]:
    """Seals to the hub's public key and signs with this department's key, as the node does
    (:mod:`hedui.node.discovery.notice`), for a department that runs detection off the node."""
    from hedui.keys import sealing
    from hedui.keys.keyfile import passphrase
    from hedui.keys.signing import SigningKey
    from hedui.node.discovery.notice import seal_notice, sign_notice

    try:
        public = hub_sealing_key.read_bytes()
    except OSError as exc:
        fail(f"--hub-sealing-key {hub_sealing_key}: got an unreadable file ({exc.strerror}), want the hub's public key")
    if len(public) != sealing.PUBLIC_KEY_SIZE:
        fail(f"--hub-sealing-key {hub_sealing_key}: got {len(public)} bytes, want {sealing.PUBLIC_KEY_SIZE}")
    key = SigningKey.load(provider, signing_key, passphrase())

    def sign_and_seal(detection: Detection, notice_id: bytes) -> bytes:
        notice = seal_notice(detection, notice_id=notice_id, provider=provider, hub=hub, hub_sealing_key=public,
                             created_at=clock.now())
        return sign_notice(notice, key)

    return sign_and_seal


def _with_basis(row: dict, d: Detection, cal: WorkCalendar) -> dict:
    """The public row and what its due date rests on (official / override / weekdays-only)."""
    return {**row, "due_basis": cal.basis_between(d.event_date, d.due_date)}


def _print_detections(rows: list[dict], run_date: date, tail: str) -> None:
    table = Table("rule", "event type", "region", "event date", "due", "period", "key")
    for r in rows:
        basis = r.get("due_basis", "official")
        due = r["due_date"] + ("" if basis == "official" else f" ({basis})")
        table.add_row(r["rule"], r["event_type"], r["region"], r["event_date"], due, r["period"], r["dedup_key"][:12])
    console.print(table)
    console.print(f"{len(rows)} detection(s) for {run_date}{tail}")


#: ``notices detect`` could not use more rows than ``provider.max_unusable_share`` allows,
#: or the export is truncated (docs/discovery.md).
EXIT_UNUSABLE = 3


def _detect_on_node(config: Path, as_of: str | None, json_out: bool) -> None:
    from hedui.node.runtime import Runtime

    node_config(config, "provider")
    rt = Runtime.open(config)
    try:
        # The run date is a local date in the zone the directory names; the notices are
        # stamped by the node's own clock.
        run_date = as_of_clock(as_of, wall=rt.clock, future=False).today()
        notices = _notices(rt, config)
        run = notices.run_now(run_date)
    finally:
        rt.close()
    out = run.as_dict()
    out["detections"] = [_with_basis(row, d, notices.calendar)
                         for row, d in zip(out["detections"], run.detections, strict=True)]
    if json_out:
        emit_json(out)
    else:
        _print_detections(out["detections"], run_date,
                          f"; {run.queued} newly queued; {run.records} record(s) read, {run.problems} row(s) unusable, "
                          f"{run.skipped} skipped by the mapping's filters")
        # Problem rows and skipped rows apart (issue 13): a row with a bad identity is
        # "unusable", a row the mapping filters out (an organisation, another region) "skipped".
        for p in run.problem_rows:
            err_console.print(f"unusable row {p.locator}: {p.reason}", markup=False, highlight=False, soft_wrap=True)
        if run.problems > len(run.problem_rows):
            err_console.print(f"... and {run.problems - len(run.problem_rows)} more unusable row(s)", markup=False)
        for loc, why in run.skipped_rows:
            err_console.print(f"skipped row {loc}: {why}", markup=False, highlight=False, soft_wrap=True)
        if run.skipped > len(run.skipped_rows):
            err_console.print(f"... and {run.skipped - len(run.skipped_rows)} more skipped row(s)", markup=False)
    if run.truncated is not None:
        fail(f"detection: the export ends inside the row at {run.truncated} (a truncated export, or a quote never "
             f"closed): the rows after it are missing; {run.problems} of {run.records + run.problems} row(s) could "
             "not be used; fetch the complete export and run again", EXIT_UNUSABLE)
    if run.too_many_unusable:
        # An undecodable export must not pass for a run that found nothing (issue 13): what
        # was found is queued, but the period is not marked done.
        fail(f"detection: {run.problems} of {run.records + run.problems} row(s) could not be used "
             f"({100 * run.unusable_share:.1f}%, provider.max_unusable_share allows {100 * run.max_unusable_share:.1f}%); "
             "fix the export or the mapping and run again", EXIT_UNUSABLE)


@app.command("push")
@cli_errors
def push_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The provider node's node.toml"),
    retry_now: bool = typer.Option(False, "--retry-now", help="Push every pending notice now, ignoring the backoff"),
    json_out: bool = JSON,
) -> None:
    """Push queued notices to the hub now and store the signed receipts (the node does this
    in the background too). Exits 1 if a notice could not be delivered; it stays queued."""
    from hedui.node.runtime import Runtime

    node_config(config, "provider")
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


@app.command("retry")
@cli_errors
def retry_cmd(
    config: Path = typer.Option(..., "--config", "-c", help="The provider node's node.toml"),
    json_out: bool = JSON,
) -> None:
    """Queue again every notice the hub rejected (after the cause — e.g. a wrong hub sealing
    key or an identity fixed at the source — has been dealt with)."""
    from hedui.node.discovery.outbox import retry_rejected

    engine = store(node_config(config, "provider").store_url(), "--config store.url")
    try:
        n = retry_rejected(engine, now=wall_clock().now())
    finally:
        engine.dispose()
    if json_out:
        emit_json({"requeued": n})
    else:
        console.print(f"{n} rejected notice(s) queued again")


@app.command("status")
@cli_errors
def status_cmd(
    db: str | None = DB,
    config: Path | None = typer.Option(None, "--config", "-c", help="The provider node's node.toml (instead of --db)"),
    json_out: bool = JSON,
) -> None:
    """The outbox: pending and delivered notices, retries, late deliveries."""
    from hedui.node.discovery.outbox import outbox_status

    if (db is None) == (config is None):
        fail("give exactly one of --db or --config")
    engine = store(db) if db is not None else store(node_config(config, "provider").store_url(), "--config store.url")
    tz = wall_clock().zone  # the default zone: a --db store names none (docs/time.md)
    try:
        out = outbox_status(engine, tz=tz)
    finally:
        engine.dispose()
    if json_out:
        emit_json(out)
        return
    console.print(f"pending {out['pending']}, delivered {out['delivered']} "
                  f"({out['delivered_after_due_date']} after their due date), rejected {out['rejected']}"
                  + (" — see `hedui notices retry` once the cause is fixed" if out["rejected"] else ""))
    if out["oldest_pending"]:
        table = Table("notice", "rule", "hub", "due", "attempts", "next try", "last error")
        for r in out["oldest_pending"]:
            table.add_row(r["notice_id"][:12], r["rule"], r["hub"], r["due_date"], str(r["attempts"]),
                          fmt_instant(datetime.fromisoformat(r["next_attempt_at"]), tz), (r["last_error"] or "")[:60])
        console.print(table)
