"""``hedui case``: the caseworker's household verification commands (run on the hub)."""

from __future__ import annotations

import csv
import io
import json
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path

import typer
from rich.table import Table

from hedui.node.cli._common import as_of_clock, cli_errors, console, emit_json, err_console, fail

app = typer.Typer(no_args_is_help=True)
_CONFIG = typer.Option(..., "--config", "-c", help="The hub's node.toml")


def _runtime(config: Path):
    from hedui.node.runtime import Runtime

    rt = Runtime.open(config)
    if "hub" not in rt.config.node.roles:
        rt.close()
        fail(f"{config}: node.roles has no 'hub'; cases run on the hub")
    return rt


def _read_members(path: str) -> list[tuple[str, str]]:
    """CSV ``identity,relation`` (header optional); ``-`` reads standard input. Identity
    numbers are read from a file, never from the command line (shell history, ps)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8-sig")
    except OSError as exc:
        fail(f"--members-file {path}: {exc.strerror}")
    except UnicodeDecodeError:
        fail(f"--members-file {path}: not UTF-8 text")
    rows = []
    for row in csv.reader(io.StringIO(text)):
        if not row or not row[0].strip() or row[0].strip().lower() in ("identity", "身份证号"):
            continue
        rows.append((row[0], row[1].strip() if len(row) > 1 else "member"))
    return rows


@app.command("open")
@cli_errors
def open_(
    config: Path = _CONFIG,
    members_file: str = typer.Option(..., "--members-file", help="CSV identity,relation per member ('-' for stdin)"),
    purpose: str = typer.Option(..., help="dibao | tekun | temporary_assistance | periodic_review"),
    consent_file: Path | None = typer.Option(None, help="The signed authorisation (授权书) scan; its SHA-256 is recorded"),
    consent_digest: str | None = typer.Option(None, help="SHA-256 hex of the authorisation, instead of --consent-file"),
    operator: str = typer.Option(..., help="Caseworker's staff code"),
    region: str = typer.Option(..., help="Region code (行政区划代码) of the household"),
    expenditure: str | None = typer.Option(None, help="One-off necessary expenditure in CNY (temporary assistance)"),
    reference_month: str | None = typer.Option(
        None, "--reference-month", help="YYYY-MM the verification is made for (default: the month before the application date)"),
    as_of: str | None = typer.Option(
        None, "--as-of", help="The application date (YYYY-MM-DD, federation zone; default today): the default reference "
        "month is the month before it. Not after today."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Open a verification case for an applicant household."""
    from hedui.common.periods import PeriodError, parse_month
    from hedui.node.verification.cases import consent_digest_of, default_reference_month, open_case

    month = None
    if reference_month is not None:
        try:
            month = parse_month(reference_month, field="--reference-month")
        except PeriodError as exc:
            fail(exc.message)

    if (consent_file is None) == (consent_digest is None):
        fail("give exactly one of --consent-file or --consent-digest: no check runs without the signed authorisation")
    if consent_file is not None:
        try:
            digest = consent_digest_of(consent_file.read_bytes())
        except OSError as exc:
            fail(f"--consent-file {consent_file}: {exc.strerror}")
    else:
        try:
            digest = bytes.fromhex(consent_digest or "")
        except ValueError:
            fail("--consent-digest: got non-hex text, want 64 hex characters")
    exp = None
    if expenditure is not None:
        try:
            exp = Decimal(expenditure)
        except InvalidOperation:
            fail(f"--expenditure: got {expenditure[:20]!r}, want an amount in CNY")
    rt = _runtime(config)
    try:
        if month is None and as_of is not None:
            # An application received earlier (docs/time.md "--as-of"): its reference month is
            # the month before the day it was received, in the federation zone.
            applied = as_of_clock(as_of, wall=rt.clock, future=False).today()
            month = default_reference_month(applied)
        ref = open_case(rt, _read_members(members_file), purpose=purpose, consent_digest=digest,
                        operator=operator, region=region, expenditure=exp, reference_month=month)
        stored = _reference_month(rt, ref)
    finally:
        rt.close()
    if json_out:
        emit_json({"case_ref": ref, "reference_month": stored})
    else:
        console.print(f"opened case [bold]{ref}[/] for reference month {stored}")


def _reference_month(rt, ref: str) -> str:
    from hedui.node.verification.cases import reference_month_of
    from hedui.node.verification.report import load_case

    return str(reference_month_of(load_case(rt.engine, ref)["case"], rt.clock.zone))


@app.command("count")
@cli_errors
def count(
    case_ref: str = typer.Argument(...),
    config: Path = _CONFIG,
    member: int = typer.Option(..., "--member", help="The member's number in the report (1, 2, …)"),
    counted: bool = typer.Option(..., "--counted/--not-counted", help="Count the member in the household, or not"),
    reason: str = typer.Option(..., help="Why (recorded and shown in the report; no identity numbers)"),
    operator: str = typer.Option(..., help="Caseworker's staff code"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Override whether a listed member counts, against the registry answer (recorded, audited)."""
    from hedui.node.verification.casework import override_member

    rt = _runtime(config)
    try:
        out = override_member(rt.engine, rt.audit, case_ref, position=member - 1, counted=counted, reason=reason,
                              operator=operator, now=rt.clock.now())
    finally:
        rt.close()
    if json_out:
        emit_json(out)
    else:
        console.print(f"{case_ref}: member {member} {'counted' if counted else 'not counted'} ({reason})")


@app.command("run")
@cli_errors
def run(
    case_ref: str = typer.Argument(...),
    config: Path = _CONFIG,
    timeout: float = typer.Option(10.0, help="Deadline per provider call, seconds"),
    retries: int = typer.Option(2, help="Retries (same request id) for an unavailable provider"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Ask every provider for the household's figures (tokens via OPRF, then one lookup each)."""
    from hedui.node.verification.cases import run_case

    rt = _runtime(config)
    try:
        with console.status(f"verifying {case_ref} with every department…", spinner="dots") if not json_out else _Null():
            res = run_case(rt, case_ref, timeout=timeout, retries=retries)
    finally:
        rt.close()
    from hedui.node.verification.advice import for_gap, for_outcome

    providers = []
    for o in res.outcomes:
        a = for_outcome(o.status, o.reason)
        providers.append({**o.__dict__, "advice": None if a is None else {"kind": a.kind, "text": a.text}})
    gaps = []
    for g in res.missing:
        a = for_gap(g["why"])
        gaps.append({**g, "advice": {"kind": a.kind, "text": a.text}})
    incomplete = res.status != "complete"
    out = {"case_ref": res.case_ref, "complete": res.complete, "status": res.status, "seconds": round(res.seconds, 3),
           "providers": providers, "missing": gaps, "exit_code": EXIT_INCOMPLETE if incomplete else 0}
    if json_out:
        emit_json(out)
    else:
        t = Table(title=f"case {case_ref}")
        for col in ("department", "status", "attempts", "reason"):
            t.add_column(col)
        for o in res.outcomes:
            t.add_row(o.provider, o.status, str(o.attempts), o.reason)
        console.print(t)
        if incomplete:
            _print_why(providers, gaps)
    if incomplete:
        # Issue 13: an incomplete case never exits 0, and shows no income total (the report
        # withholds it too, docs/caseworker.md); the reason per department went above.
        raise typer.Exit(EXIT_INCOMPLETE)


#: ``case run``: the case is incomplete (a department did not answer usably, or the report
#: cannot conclude); each cause and what to do was printed (docs/caseworker.md).
EXIT_INCOMPLETE = 4


def _print_why(providers: list[dict], gaps: list[dict]) -> None:
    for p in providers:
        if p["advice"] is not None:
            err_console.print(f"incomplete: {p['provider']}: {p['advice']['text']}", markup=False, highlight=False,
                              soft_wrap=True)
    seen = set()
    for g in gaps:
        where = f"{g['provider']}.{g['field']}" if g["provider"] else g["field"] or "household"
        key = (where, g["why"])
        if key in seen:
            continue  # one line per department field and cause, not one per member
        seen.add(key)
        dd = f", data date {g['data_date']}" if g.get("data_date") else ""
        err_console.print(f"incomplete: {where}: {g['why']}{dd}: {g['advice']['text']}", markup=False,
                          highlight=False, soft_wrap=True)
    err_console.print("incomplete case: no income total (the report names what is missing); exit 4",
                      markup=False, highlight=False)


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@app.command("report")
@cli_errors
def report(
    case_ref: str = typer.Argument(...),
    config: Path = _CONFIG,
    format: str = typer.Option("json", "--format", help="json | html"),
    lang: str = typer.Option("zh", help="zh | en (HTML labels)"),
    out: Path | None = typer.Option(None, help="Write to this file instead of standard output"),
) -> None:
    """The verification report (核对报告): per member × department × field, income, assets, tier."""
    from hedui.node.verification.report import build_report, render_html

    if format not in ("json", "html"):
        fail(f"--format: got {format!r}, want json or html")
    rt = _runtime(config)
    try:
        r = build_report(rt.engine, case_ref, rt.hub.rules, tz=rt.clock.zone)
    finally:
        rt.close()
    text = json.dumps(r, ensure_ascii=False, indent=1) if format == "json" else render_html(r, lang)
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {out}")
    else:
        sys.stdout.write(text + "\n")


@app.command("export")
@cli_errors
def export(case_ref: str = typer.Argument(...), config: Path = _CONFIG, out: Path = typer.Option(..., help="Evidence file (JSON)")) -> None:
    """Export a case's signed evidence with the directories in force (identities masked)."""
    from hedui.node.verification.evidence import export_case

    rt = _runtime(config)
    try:
        doc = export_case(rt.engine, case_ref)
    finally:
        rt.close()
    out.write_text(json.dumps(doc, indent=1), encoding="utf-8")
    console.print(f"wrote {out}")


@app.command("verify")
@cli_errors
def verify(
    case_ref: str | None = typer.Argument(None, help="Case on the hub (with --config)"),
    config: Path | None = typer.Option(None, "--config", "-c"),
    file: Path | None = typer.Option(None, help="An exported evidence file instead of the hub store"),
    authority_key: Path | None = typer.Option(None, help="Authority public key (PEM); default: the hub's"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Re-check every signature offline against the directory version in force at the time."""
    from hedui.keys.signing import load_public
    from hedui.node.verification.evidence import verify_case_data, verify_export
    from hedui.node.verification.report import load_case

    if file is not None:
        if authority_key is None:
            fail("--file needs --authority-key")
        verdicts = verify_export(file, load_public("authority", authority_key))
    else:
        if config is None or case_ref is None:
            fail("give CASE and --config, or --file and --authority-key")
        from hedui.node.config import load_config
        from hedui.node.store.db import open_engine

        cfg = load_config(config)
        key = load_public("authority", authority_key or cfg.path(cfg.directory.authority_key))
        eng = open_engine(cfg.store_url())
        try:
            verdicts = verify_case_data(load_case(eng, case_ref), key)
        finally:
            eng.dispose()
    ok = all(v["status"] in ("ok", "unavailable", "refused", "maintenance") for v in verdicts)
    if json_out:
        emit_json({"ok": ok, "providers": verdicts})
    else:
        for v in verdicts:
            mark = "[green]✓[/]" if v["status"] == "ok" else ("[red]✗[/]" if v["status"] in ("bad_signature", "bad_proof") else "[yellow]–[/]")
            console.print(f"{mark} {v['provider']:<14} {v['status']:<14} {v['evidence'] or v['reason']}")
    if not ok:
        raise typer.Exit(3)


@app.command("list")
@cli_errors
def list_(config: Path = _CONFIG, json_out: bool = typer.Option(False, "--json")) -> None:
    """List cases with their status."""
    from hedui.node.config import load_config
    from hedui.node.store.db import open_engine
    from hedui.node.verification.cases import list_cases

    cfg = load_config(config)
    eng = open_engine(cfg.store_url())
    try:
        data = list_cases(eng)
    finally:
        eng.dispose()
    if json_out:
        emit_json(data)
    else:
        from datetime import datetime

        from hedui.common.clock import fmt_instant
        from hedui.node.cli._common import wall_clock

        tz = wall_clock().zone  # shown in the federation zone (docs/time.md)
        for d in data:
            made = d["created_at"]
            shown = fmt_instant(made if isinstance(made, datetime) else datetime.fromisoformat(str(made)), tz)
            console.print(f"{d['case_ref']}  {d['purpose']:<22} {d['status']:<11} {shown}")
