"""``hedui leads | referrals | report``: the hub's side of active discovery.

They take the hub's ``--config node.toml``, or ``--db`` with ``--hub-config`` (hub code,
person-key secret, the hub's public sealing key, routing table; see
:meth:`hedui.node.discovery.hub.Hub.from_config`). Identity numbers are never taken as
command-line arguments (shell history, ``ps``): a manual lead reads the identity from a file
or standard input. Output never shows one unless ``leads show --reveal`` is given the hub's
private sealing key.
"""

from __future__ import annotations

import os
import sys
from datetime import date, datetime
from pathlib import Path

import typer
from rich.table import Table

from hedui.common.clock import fmt_instant
from hedui.node.cli._common import AS_OF_HELP, as_of_clock, cli_errors, console, emit_json, fail
from hedui.node.cli._discovery import CONFIG, DB, HUB_CONFIG, JSON, hub_with_config, open_hub, parse_date

__all__ = ["leads_app", "referrals_app", "report_app"]

leads_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
referrals_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
report_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)


@leads_app.command("list")
@cli_errors
def leads_list(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    status: str | None = typer.Option(None, help="open | closed"),
    region: str | None = typer.Option(None, help="Region code prefix"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP + " (leads created by then)"),
    json_out: bool = JSON,
) -> None:
    """Leads, newest first."""
    hub = open_hub(db, hub_config, config)
    try:
        clock = as_of_clock(as_of, wall=hub.clock)
        rows = hub.list_leads(status=status, region=region)
    finally:
        hub.engine.dispose()
    if as_of is not None:
        cut = clock.now()
        rows = [r for r in rows if datetime.fromisoformat(r["created_at"]) <= cut]
    if json_out:
        emit_json(rows)
        return
    tz = clock.zone
    table = Table("lead", "region", "status", "events", "sources", "created", "updated")
    for r in rows:
        table.add_row(str(r["lead_id"]), r["region"], r["status"], str(r["events"]), str(r["sources"]),
                      fmt_instant(datetime.fromisoformat(r["created_at"]), tz),
                      fmt_instant(datetime.fromisoformat(r["updated_at"]), tz))
    console.print(table)


@leads_app.command("show")
@cli_errors
def leads_show(
    lead_id: int = typer.Argument(..., help="Lead id"),
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    reveal: bool = typer.Option(
        False, "--reveal", help="Open the sealed identity (needs --sealing-key, or --config with [hub] sealing_key)"
    ),
    sealing_key: Path | None = typer.Option(None, "--sealing-key", help="Hub private sealing key (PEM)"),
    passphrase_env: str = typer.Option(
        "HEDUI_SEALING_PASSPHRASE", help="Environment variable with its passphrase (with --sealing-key)"
    ),
    json_out: bool = JSON,
) -> None:
    """One lead: which notices and reports merged into it, and its referrals."""
    from hedui.keys.sealing import SealingKey

    if reveal and sealing_key is None and config is None:
        fail("--sealing-key: got nothing, want the hub's private sealing key to --reveal")
    hub, cfg = hub_with_config(db, hub_config, config)
    tz = hub.clock.zone
    try:
        info = hub.lead(lead_id)
        if reveal:
            if sealing_key is not None:
                from hedui.keys.passphrase import scrub_env

                pw = os.environ.get(passphrase_env, "").encode()
                scrub_env(passphrase_env)  # issue 18: not left in the environment
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
        events.add_row(e["source"], e["provider"], e["event_type"], e["event_date"],
                       fmt_instant(datetime.fromisoformat(e["received_at"]), tz))
    console.print(events)
    _print_referrals(info["referrals"])


@leads_app.command("add")
@cli_errors
def leads_add(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    identity_file: str = typer.Option(..., "--identity-file", help="File holding the identity number ('-' for stdin)"),
    region: str = typer.Option(..., help="Region code where the person lives"),
    event_type: str = typer.Option(..., help="What happened, e.g. illness, fire_loss, disability"),
    event_date: str | None = typer.Option(None, help="When it was found (default: today)"),
    reporter: str = typer.Option(..., help="Grid worker's or aide's code"),
    note: str = typer.Option("", help="Short note (sealed with the identity)"),
    json_out: bool = JSON,
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
    hub = open_hub(db, hub_config, config)
    try:
        acc = hub.add_manual_lead(identity=lines[0], region=region, event_type=event_type,
                                  event_date=parse_date(event_date, "--event-date", hub.clock), reporter=reporter,
                                  note=note)
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
    db: str | None = DB, hub_config: Path | None = HUB_CONFIG, config: Path | None = CONFIG, json_out: bool = JSON
) -> None:
    """Leads into which several notices or reports were merged (merge information)."""
    hub = open_hub(db, hub_config, config)
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


def _due(r: dict) -> str:
    """The due date as a person reads it: marked when no official calendar was behind it."""
    basis = r.get("due_basis", "official")
    return r["due_date"] + ("" if basis == "official" else f" ({basis})")


def _print_referrals(rows, as_of: date | None = None) -> None:
    """``created`` and ``due`` are both local dates in the federation zone, so the working
    days between them read true (docs/time.md)."""
    table = Table("referral", "lead", "assignee", "type", "event", "created", "due", "status", "outcome")
    for r in rows:
        outcome = (r["outcome"] or "") + (f" ({r['programme']})" if r.get("programme") else "")
        status = r["status"] + (" (overdue)" if r.get("overdue") else "")
        table.add_row(str(r["referral_id"]), str(r["lead_id"]), r["assignee"], r["assignee_kind"], r["event_type"],
                      r["created_on"], _due(r), status, outcome)
    console.print(table)
    if any(r.get("due_basis", "official") != "official" for r in rows):
        console.print("due dates marked weekdays-only were counted Monday–Friday: the year has no official "
                      "holiday data (`hedui calendar check`)")


def _emit_referrals(views, json_out: bool, as_of: date | None = None, label: str = "") -> None:
    rows = [v.as_dict() for v in views]
    if as_of is not None:
        for r, v in zip(rows, views, strict=True):
            r["overdue"] = v.status in ("open", "escalated") and v.due_date < as_of
    if json_out:
        emit_json(rows)
    else:
        _print_referrals(rows, as_of)
        console.print(f"{len(rows)} referral(s){label}")


@referrals_app.command("list")
@cli_errors
def referrals_list(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    status: str | None = typer.Option(None, help="open | responded | escalated"),
    assignee: str | None = typer.Option(None, help="Town or department code"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP + " (referrals made by then, overdue then)"),
    json_out: bool = JSON,
) -> None:
    """Referral slips (线索转办单), each marked overdue if it was not answered by its due date."""
    hub = open_hub(db, hub_config, config)
    try:
        clock = as_of_clock(as_of, wall=hub.clock)
        views = hub.list_referrals(status=status, assignee=assignee, made_by=clock.now() if as_of else None)
        _emit_referrals(views, json_out, clock.today(), f" as of {fmt_instant(clock.now(), clock.zone)}")
    finally:
        hub.engine.dispose()


@referrals_app.command("respond")
@cli_errors
def referrals_respond(
    referral_id: int = typer.Argument(..., help="Referral id"),
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    outcome: str = typer.Option(..., help="found | assisted | not_eligible | unreachable"),
    programme: str | None = typer.Option(None, help="With assisted: dibao, tekun, temporary_assistance, medical, …"),
    json_out: bool = JSON,
) -> None:
    """Record the town's or department's answer."""
    hub = open_hub(db, hub_config, config)
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
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP),
    json_out: bool = JSON,
) -> None:
    """Referrals not answered within their working-day deadline."""
    hub = open_hub(db, hub_config, config)
    try:
        clock = as_of_clock(as_of, wall=hub.clock)
        _emit_referrals(hub.overdue(clock.today()), json_out, clock.today(), f" overdue as of {clock.today()}")
    finally:
        hub.engine.dispose()


@referrals_app.command("escalate")
@cli_errors
def referrals_escalate(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP + "; not in the future"),
    json_out: bool = JSON,
) -> None:
    """Mark overdue open referrals escalated (通报督办); lists the ones escalated now. An
    ``--as-of`` in the future is refused: a referral cannot be chased before it is late."""
    hub = open_hub(db, hub_config, config)
    try:
        clock = as_of_clock(as_of, wall=hub.clock, future=False)
        # Which referrals are late depends on --as-of; the escalation itself happens now.
        views = hub.escalate(clock.today(), now=hub.clock.now())
        _emit_referrals(views, json_out, clock.today(), f" escalated as of {clock.today()}")
    finally:
        hub.engine.dispose()


# ---------------------------------------------------------------- report (hub)


@report_app.command("monthly")
@cli_errors
def report_monthly(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    year: int | None = typer.Option(None, help="Year (with --month 1-12)"),
    month: str | None = typer.Option(None, help="Month: 2026-11, or 1-12 with --year (default: the month of --as-of)"),
    as_of: str | None = typer.Option(None, "--as-of", help=AS_OF_HELP + " (counts as at then while the month runs)"),
    fmt: str = typer.Option("json", "--format", help="json | html"),
    out: Path | None = typer.Option(None, "--out", help="Write to this file instead of standard output"),
) -> None:
    """The month's received leads, referrals and their completion, by department and town
    (months and dates in the federation zone, docs/time.md)."""
    import json

    from hedui.common.periods import Month, PeriodError, parse_month
    from hedui.node.discovery import report

    if fmt not in ("json", "html"):
        fail(f"--format: got {fmt!r}, want json or html")
    hub = open_hub(db, hub_config, config)
    try:
        # A report as of a day that has not come would count what is not known yet.
        clock = as_of_clock(as_of, wall=hub.clock, future=False)
        try:
            if month is None:
                if year is not None:
                    fail("--month: got nothing with --year, want a month 1-12 (or --month 2026-11 alone)")
                m = Month.of(clock.today())
            elif month.strip().isdigit() and len(month.strip()) <= 2:
                if year is None:
                    fail(f"--year: got nothing with --month {month}, want a year (or --month {clock.today().year}-{int(month):02d})")
                m = Month(year, int(month))
            else:
                if year is not None:
                    fail(f"--year: got {year} with --month {month}, want one or the other")
                m = parse_month(month, field="--month")
        except PeriodError as exc:
            fail(exc.message)
        rep = report.monthly_report(hub, m.year, m.month, as_of=clock.today())
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
