"""``hedui audit …``: the security officer's offline tools (export, verify, proof, reconcile).

Exit codes: 0 OK; 1 error (one message on stderr, never a traceback); 2 usage error;
``verify`` and ``proof --check`` exit with the verdict code (3 TAMPERED, 4 TRUNCATED,
5 FORK, 6 UNKNOWN_KEY, 7 STALE, 8 EMPTY, 10 UNSIGNED_TAIL); ``reconcile`` exits 9 when it
found discrepancies; ``find`` exits 11 when no log names the request id.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hedui.adapters import idnum
from hedui.common.clock import DEFAULT_ZONE, ClockError, fmt_instant, zone
from hedui.node.audit import export as audit_export
from hedui.node.audit import find as audit_find
from hedui.node.audit import proof as audit_proof
from hedui.node.audit import reconcile as audit_reconcile
from hedui.node.audit import sources as audit_sources
from hedui.node.audit import verdict as audit_verdict
from hedui.node.audit import verify as audit_verify
from hedui.node.audit.errors import NoteError, ProofError, UnknownKeyError
from hedui.node.cli._common import wall_clock
from hedui.node.errors import HeduiError

__all__ = ["app", "RECONCILE_MISMATCH_EXIT", "FIND_NONE_EXIT"]

RECONCILE_MISMATCH_EXIT = 9
#: ``audit find``: none of the logs holds an entry naming the request id (like grep's 1, but 1
#: is this tool's "error").
FIND_NONE_EXIT = 11

app = typer.Typer(
    help="Audit log tools for security officers: export, verify, prove and reconcile logs offline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_err = Console(stderr=True, highlight=False)
_out = Console(highlight=False)


def _fail(message: str, code: int = 1) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {escape(idnum.guard(message, sys.argv[1:]))}", soft_wrap=True)
    return typer.Exit(code)


def _guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """One clear message and a non-zero exit for every expected failure."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except HeduiError as exc:
            raise _fail(exc.message) from None
        except OSError as exc:
            raise _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None
        except KeyboardInterrupt:
            raise _fail("interrupted", 130) from None
        except Exception as exc:
            raise _fail(f"{type(exc).__name__}: {exc}") from None

    return wrapper


class _Bar:
    """A rich progress bar on stderr (silent when stderr is not a terminal)."""

    def __init__(self, label: str) -> None:
        self._p = Progress(
            TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=_err, transient=True, disable=not _err.is_terminal,
        )
        self._task = None

    def __enter__(self) -> Callable[[int, int], None]:
        self._p.__enter__()
        self._task = self._p.add_task("", total=None)

        def update(done: int, total: int) -> None:
            self._p.update(self._task, completed=done, total=total or None)

        return update

    def __exit__(self, *exc: object) -> None:
        self._p.__exit__(*exc)


def _source(db: str | None, file: Path | None) -> audit_sources.Source:
    if bool(db) == bool(file):
        raise _fail("give exactly one of --db URL or --file EXPORT.ndjson", 2)
    if db and "://" not in db:
        raise _fail(f"--db: got {db!r}, want a URL such as sqlite:///path/node.db", 2)
    return db if db else file  # type: ignore[return-value]


_DURATION = re.compile(r"(\d+)\s*([smhd]?)")


def _duration(text: str | None) -> timedelta | None:
    if text is None:
        return None
    m = _DURATION.fullmatch(text.strip())
    if not m:
        raise _fail(f"--max-age: got {text!r}, want e.g. 3600, 90m, 2h or 1d", 2)
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return timedelta(seconds=int(m.group(1)) * unit)


def _when(text: str | None, *, end: bool, tz: ZoneInfo, option: str) -> datetime | None:
    """ISO date or date-time. A bare date is midnight at the start of that day in the
    federation zone ``tz`` (the day after, for --to: the date is included); a date-time
    needs its UTC offset (docs/time.md), never the machine's own zone."""
    if text is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            d = datetime.fromisoformat(text).date() + timedelta(days=1 if end else 0)
            return datetime.combine(d, time(), tz)
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise _fail(f"{option}: got {text[:32]!r}, want a date (2026-05-01) or a date-time with its offset "
                    "(2026-05-01T08:00+08:00)", 2) from None
    if t.tzinfo is None:
        raise _fail(f"{option}: got a date-time without a UTC offset, want one such as 2026-05-01T08:00+08:00", 2)
    return t


def _period(period: str | None, date_from: str | None, date_to: str | None, as_of: str | None,
            tz: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """The reconcile window ``[lo, hi)``: a reference period (local days in ``tz``), or
    --from/--to, capped at --as-of."""
    from hedui.common.clock import ClockError, parse_as_of
    from hedui.common.periods import PeriodError, as_range, parse_period

    if period is not None:
        if date_from is not None or date_to is not None:
            raise _fail("give --period or --from/--to, not both", 2)
        try:
            r = as_range(parse_period(period, field="--period"))
        except PeriodError as exc:
            raise _fail(exc.message, 2) from None
        lo: datetime | None = datetime.combine(r.start, time(), tz)
        hi: datetime | None = datetime.combine(r.end + timedelta(days=1), time(), tz)
    else:
        lo, hi = _when(date_from, end=False, tz=tz, option="--from"), _when(date_to, end=True, tz=tz, option="--to")
    if as_of is not None:
        try:
            cap = parse_as_of(as_of, tz)
        except ClockError as exc:
            raise _fail(exc.message, 2) from None
        # A date means its end (23:59:59 local): entries of that whole day are in.
        cap = cap + timedelta(seconds=1) if re.fullmatch(r"\d{4}-\d{2}-\d{2}", as_of.strip()) else cap
        hi = cap if hi is None else min(hi, cap)
    if lo is not None and hi is not None and hi <= lo:
        raise _fail(f"period: got {fmt_instant(lo, tz)} to {fmt_instant(hi, tz)}, want a start before the end", 2)
    return lo, hi


DbOpt = Annotated[str | None, typer.Option("--db", help="Node store URL, e.g. sqlite:///node.db.")]
FileOpt = Annotated[Path | None, typer.Option("--file", help="An export file (NDJSON).")]
KeyOpt = Annotated[
    list[str] | None,
    typer.Option("--key", "-k", help="Trusted verifier key (name+hexid+base64) or a file of keys; repeatable."),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


def _keys(key: list[str] | None):
    if not key:
        raise _fail("give at least one trusted verifier key with --key", 2)
    return audit_sources.load_trusted_keys(key)


@app.command("export")
@_guard
def export_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file (.ndjson).")],
    db: DbOpt = None,
    start: Annotated[int, typer.Option(help="First entry (sequence number).")] = 0,
    end: Annotated[int | None, typer.Option(help="End (exclusive); default: the latest checkpoint.")] = None,
    time_zone: Annotated[
        str, typer.Option("--time-zone", help="The federation zone times are shown in (the directory's).")
    ] = DEFAULT_ZONE,
    as_json: JsonOpt = False,
) -> None:
    """Export entries, checkpoints, cosignatures and fork evidence to an NDJSON file."""
    if not db:
        raise _fail("--db URL is required", 2)
    try:
        wall = wall_clock(time_zone)
    except ClockError as exc:
        raise _fail("--time-zone: " + exc.message.partition(": ")[2], 2) from None
    with _Bar("exporting") as progress:
        s = audit_export.export(db, start, end, out, now=wall.now(), tz=wall.zone, progress=progress)
    summary = {"path": str(s.path), "origin": s.origin, "start": s.start, "end": s.end, "entries": s.entries,
               "checkpoints": s.checkpoints, "cosignatures": s.cosignatures, "forks": s.forks, "sha256": s.sha256}
    if as_json:
        _out.print_json(json.dumps(summary))
    else:
        _out.print(f"exported {s.entries} entries [{s.start}, {s.end}) of {s.origin} "
                   f"with {s.checkpoints} checkpoints, {s.cosignatures} cosignatures to {s.path} "
                   f"at {fmt_instant(wall.now(), wall.zone)}")


@app.command("verify")
@_guard
def verify_cmd(
    key: KeyOpt = None,
    db: DbOpt = None,
    file: FileOpt = None,
    trusted_checkpoint: Annotated[
        Path | None, typer.Option("--trusted-checkpoint", help="A signed checkpoint you verified before.")
    ] = None,
    max_age: Annotated[
        str | None, typer.Option("--max-age", help="Fail as STALE if the latest checkpoint is older (2h, 90m).")
    ] = None,
    peer: Annotated[
        list[str] | None,
        typer.Option("--peer", help="A peer's export file or store URL: its cosignatures of this log are trusted "
                     "sizes (TRUNCATED if the log is shorter); repeatable."),
    ] = None,
    save_checkpoint: Annotated[
        Path | None,
        typer.Option("--save-checkpoint", help="Write the newest checkpoint here (a signed note) when it verified: "
                     "keep it and pass it as --trusted-checkpoint next time."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Re-derive the Merkle tree and check every checkpoint, cosignature and proof."""
    src = _source(db, file)
    keys = _keys(key)
    last = trusted_checkpoint.read_text(encoding="utf-8") if trusted_checkpoint else None
    with _Bar("verifying") as progress:
        peers = [p if "://" in p else Path(p) for p in (peer or [])]
        for p in peers:
            if isinstance(p, Path) and not p.is_file():
                raise _fail(f"--peer: got {str(p)!r}, want a peer's export file or store URL", 2)
        r = audit_verify.verify(src, keys, last, max_age=_duration(max_age), now=wall_clock().now(), progress=progress,
                                peers=peers)
    if as_json:
        _out.print_json(json.dumps(r.to_dict()))
    else:
        colour = "green" if r.ok else "bold red"
        _out.print(f"[{colour}]{r.verdict.name}[/] {escape(r.origin or '')}: {r.entries} entries "
                   f"[{r.start}, {r.tree_size}), {r.checkpoints_verified}/{r.checkpoints} checkpoints verified, "
                   f"{r.cosignatures} cosignatures, latest checkpoint size {r.latest_checkpoint_size}, "
                   f"{r.unsigned_tail} entries not yet checkpointed, {r.witnessed} checkpoints cosigned by peers")
        for p in r.problems:
            _out.print(f"  [red]{p.verdict.name}[/]: {escape(p.message)}", soft_wrap=True)
        for n in r.notes:
            _out.print(f"  note: {escape(n)}", soft_wrap=True)
    if save_checkpoint is not None:
        _save_checkpoint(r, save_checkpoint, as_json)
    raise typer.Exit(int(r.verdict))


#: Verdicts under which the newest checkpoint is still one to trust: it verified and the
#: entries re-derive its root (an unsigned tail or a stale log do not make it false).
_SAVABLE = (audit_verdict.Verdict.OK, audit_verdict.Verdict.UNSIGNED_TAIL, audit_verdict.Verdict.STALE)


def _save_checkpoint(r, path: Path, as_json: bool) -> None:
    """Writes the newest verified checkpoint note whole or not at all (temporary file, then
    rename): a half-written trusted checkpoint would fail the next verification."""
    if r.verdict not in _SAVABLE or not r.latest_checkpoint_note:
        _err.print(f"--save-checkpoint: not written: verdict {r.verdict.name} (only a checkpoint that verified is "
                   "kept)", markup=False, highlight=False)
        return
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(r.latest_checkpoint_note, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _fail(f"--save-checkpoint {path}: cannot write ({exc.strerror})", 2) from None
    if not as_json:
        _out.print(f"saved checkpoint of size {r.latest_checkpoint_size} to {escape(str(path))}")


@app.command("proof")
@_guard
def proof_cmd(
    db: DbOpt = None,
    seq: Annotated[int | None, typer.Option(help="Entry to prove (with --db).")] = None,
    size: Annotated[int | None, typer.Option(help="Checkpoint size to prove against (default latest).")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the proof here (.tlog-proof).")] = None,
    check: Annotated[Path | None, typer.Option("--check", help="Verify this .tlog-proof file instead.")] = None,
    key: KeyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Produce a c2sp.org/tlog-proof for one entry, or verify one (--check)."""
    if check is not None:
        keys = _keys(key)
        try:
            res = audit_proof.verify_proof(check.read_bytes(), keys)
        except UnknownKeyError as exc:
            raise _fail(exc.message, int(audit_verdict.Verdict.UNKNOWN_KEY)) from None
        except (ProofError, NoteError) as exc:
            raise _fail(exc.message, int(audit_verdict.Verdict.TAMPERED)) from None
        info = {"verdict": "OK", "index": res.index, "origin": res.checkpoint.origin,
                "tree_size": res.checkpoint.size, "entry": (res.entry or b"").decode("utf-8", "replace")}
        if as_json:
            _out.print_json(json.dumps(info))
        else:
            _out.print(f"[green]OK[/] entry {res.index} is in {escape(res.checkpoint.origin)} at tree size "
                       f"{res.checkpoint.size}")
            _out.print(info["entry"], markup=False, soft_wrap=True)
        return
    if not db or seq is None:
        raise _fail("give --db URL and --seq N (or --check FILE --key K)", 2)
    text = audit_proof.proof(db, seq, size=size)
    if out is not None:
        out.write_text(text, encoding="utf-8")
        if as_json:
            _out.print_json(json.dumps({"path": str(out), "seq": seq}))
        else:
            _out.print(f"wrote the proof of entry {seq} to {out}")
    elif as_json:
        _out.print_json(json.dumps({"seq": seq, "proof": text}))
    else:
        sys.stdout.write(text)


@app.command("find")
@_guard
def find_cmd(
    request_id: Annotated[str, typer.Argument(help="The request (or notice) id: 32 hex digits, as `audit reconcile` lists it.")],
    logs: Annotated[
        list[str], typer.Argument(help="Logs to search: NAME=URL-or-file (e.g. tax=sqlite:///tax/node.db, hub=hub.ndjson), "
                                       "or a URL or file alone; several allowed.")
    ],
    time_zone: Annotated[
        str, typer.Option("--time-zone", help="The federation zone times are shown in (the directory's).")
    ] = DEFAULT_ZONE,
    as_json: JsonOpt = False,
) -> None:
    """Every entry that names one request id, in each log given: both sides of one exchange."""
    try:
        tz = zone(time_zone)
    except ClockError as exc:
        raise _fail("--time-zone: " + exc.message.partition(": ")[2], 2) from None
    try:
        rid = audit_find.request_id_of(request_id)
    except HeduiError as exc:
        raise _fail(exc.message, 2) from None
    named: list[tuple[str, str]] = []
    for arg in logs:
        name, sep, src = arg.partition("=")
        # A URL's own "=" (a query string) comes after its "://"; NAME= never contains one.
        if not sep or "://" in name or not name or not src:
            name, src = arg, arg
        named.append((name, src))
    found: list[tuple[str, list[audit_find.Found]]] = []
    for name, src in named:
        if not audit_sources.is_url(src) and not Path(src).is_file():
            raise _fail(f"{name}: got {src[:200]!r}, want a store URL (sqlite:///node.db) or an export file", 2)
        with _Bar(f"searching {name}") as progress:
            found.append((name, audit_find.find_request(src, rid, progress=progress)))
    total = sum(len(f) for _, f in found)
    if as_json:
        _out.print_json(json.dumps({"request_id": rid, "entries": total,
                                    "logs": [{"name": n, "entries": [e.to_dict() for e in f]} for n, f in found]},
                                   ensure_ascii=False))
    else:
        for name, entries in found:
            _out.print(f"[bold]{escape(name)}[/]: {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}", soft_wrap=True)
            for e in entries:
                when = audit_sources.parse_iso(e.time)
                detail = " ".join(f"{k}={v}" for k, v in sorted(e.fields.items()) if k != "request_id")
                _out.print(f"  seq {e.seq}  {fmt_instant(when, tz, seconds=True) if when else e.time}  {e.kind}  {detail}",
                           markup=False, soft_wrap=True)
    if total == 0:
        raise typer.Exit(FIND_NONE_EXIT)


@app.command("reconcile")
@_guard
def reconcile_cmd(
    hub: Annotated[str, typer.Option("--hub", help="The hub's store URL or export file.")],
    provider: Annotated[
        list[str], typer.Option("--provider", "-p", help="CODE=URL-or-file for each provider; repeatable.")
    ],
    period: Annotated[
        str | None, typer.Option("--period", help="A reference period: 2026-11, 2026, 2026-W48 or 2026-11-01..2026-11-15 (local days).")
    ] = None,
    date_from: Annotated[str | None, typer.Option("--from", help="Period start (local date, or ISO time with offset).")] = None,
    date_to: Annotated[str | None, typer.Option("--to", help="Period end (local date inclusive, or ISO time with offset).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Only entries logged by then (date: its end; or instant).")] = None,
    time_zone: Annotated[
        str, typer.Option("--time-zone", help="The federation zone the dates are local to (the directory's).")
    ] = DEFAULT_ZONE,
    hub_code: Annotated[str | None, typer.Option("--hub-code", help="The hub's member code.")] = None,
    cases: Annotated[
        Path | None, typer.Option("--cases", help="File of case references that exist on the hub.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Match the hub's sent queries to each provider's received queries."""
    providers: dict[str, str] = {}
    for p in provider:
        code, sep, src = p.partition("=")
        if not sep or not code or not src:
            raise _fail(f"--provider: got {p!r}, want CODE=URL-or-file", 2)
        providers[code] = src
    try:
        tz = zone(time_zone)
    except ClockError as exc:
        raise _fail("--time-zone: " + exc.message.partition(": ")[2], 2) from None
    window = _period(period, date_from, date_to, as_of, tz)
    case_set = None
    if cases is not None:
        case_set = {ln.strip() for ln in cases.read_text(encoding="utf-8").splitlines() if ln.strip()}
    r = audit_reconcile.reconcile(hub, providers, window, hub_code=hub_code, hub_cases=case_set)
    if as_json:
        out = r.to_dict()
        out["time_zone"] = tz.key
        out["period_local"] = [fmt_instant(t, tz) if t is not None else None for t in window]
        _out.print_json(json.dumps(out, ensure_ascii=False))
    else:
        lo, hi = window
        _out.print(f"period: {fmt_instant(lo, tz) if lo else 'the beginning'} to "
                   f"{fmt_instant(hi, tz) if hi else 'the end'}" + (" (end excluded)" if hi else ""), markup=False)
        c = r.counts
        _out.print(f"{'[green]CLEAN[/]' if r.clean else '[bold red]DISCREPANCIES[/]'}: "
                   f"{c.get('hub_sent', 0)} queries sent, {c.get('provider_received', 0)} received; "
                   f"{c.get('notices_sent', 0)} notices sent, {c.get('notices_received', 0)} received")
        for title, items in (
            ("sent, not received", r.sent_not_received),
            ("received, not sent", r.received_not_sent),
            ("request mismatches", r.request_mismatches),
            ("answer mismatches", r.answer_mismatches),
            ("queries with no case", r.no_case),
            ("notices sent, not received", r.notices_sent_not_received),
            ("notices received, not sent", r.notices_received_not_sent),
            ("notice mismatches", r.notice_mismatches),
        ):
            if items:
                _out.print(f"[bold]{title}[/] ({len(items)})")
                for it in items[:200]:
                    when = audit_sources.parse_iso(it["time"])
                    _out.print(f"  {fmt_instant(when, tz, seconds=True) if when else it['time']} {it['provider']} {it['request_id']} {it['purpose']} "
                               f"{it['case_ref']!r}: {it['detail']}", markup=False, soft_wrap=True)
        if r.consent_reused:  # issue 18: listed for review (a periodic review reuses its own)
            _out.print(f"[bold]authorisations used for more than one case[/] ({len(r.consent_reused)})")
            for it in r.consent_reused[:200]:
                _out.print(f"  {it['consent_digest'][:16]}: {', '.join(it['cases'])}", markup=False, soft_wrap=True)
    if not r.clean:
        raise typer.Exit(RECONCILE_MISMATCH_EXIT)
