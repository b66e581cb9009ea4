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
from pathlib import Path

import typer
from rich.table import Table

from hedui.node.cli._common import cli_errors, console, emit_json, fail
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
    json_out: bool = JSON,
) -> None:
    """Leads, newest first."""
    hub = open_hub(db, hub_config, config)
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
        events.add_row(e["source"], e["provider"], e["event_type"], e["event_date"], e["received_at"][:19])
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
                                  event_date=parse_date(event_date, "--event-date"), reporter=reporter, note=note)
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
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    status: str | None = typer.Option(None, help="open | responded | escalated"),
    assignee: str | None = typer.Option(None, help="Town or department code"),
    json_out: bool = JSON,
) -> None:
    """Referral slips (线索转办单)."""
    hub = open_hub(db, hub_config, config)
    try:
        _emit_referrals(hub.list_referrals(status=status, assignee=assignee), json_out)
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
    as_of: str | None = typer.Option(None, "--as-of", help="Date (default: today)"),
    json_out: bool = JSON,
) -> None:
    """Referrals not answered within their working-day deadline."""
    hub = open_hub(db, hub_config, config)
    try:
        _emit_referrals(hub.overdue(parse_date(as_of, "--as-of")), json_out)
    finally:
        hub.engine.dispose()


@referrals_app.command("escalate")
@cli_errors
def referrals_escalate(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
    as_of: str | None = typer.Option(None, "--as-of", help="Date (default: today)"),
    json_out: bool = JSON,
) -> None:
    """Mark overdue open referrals escalated (通报督办); lists the ones escalated now."""
    hub = open_hub(db, hub_config, config)
    try:
        _emit_referrals(hub.escalate(parse_date(as_of, "--as-of")), json_out)
    finally:
        hub.engine.dispose()


# ---------------------------------------------------------------- report (hub)


@report_app.command("monthly")
@cli_errors
def report_monthly(
    db: str | None = DB,
    hub_config: Path | None = HUB_CONFIG,
    config: Path | None = CONFIG,
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
    hub = open_hub(db, hub_config, config)
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
