"""``hedui consent``: the hub's consent records — list them, revoke one (issue 18c).

A revocation is recorded in the hub's store and audit log (``consent.revoked``) by the domain
function (:func:`hedui.node.verification.consent.revoke_case`) and reaches providers with the
hub's next request: every request carries the signed revocation list (docs/federation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from hedui.node.cli._common import cli_errors, console, emit_json, fail

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
_CONFIG = typer.Option(..., "--config", "-c", help="The hub's node.toml")


def _runtime(config: Path) -> Runtime:
    from hedui.node.runtime import Runtime

    rt = Runtime.open(config)
    if "hub" not in rt.config.node.roles:
        rt.close()
        fail(f"{config}: node.roles has no 'hub'; consent records are the hub's")
    return rt


@app.command("revoke")
@cli_errors
def revoke_cmd(
    case_ref: str = typer.Argument(..., help="The case whose consent record to revoke"),
    config: Path = _CONFIG,
    reason: str = typer.Option(..., "--reason", help="Why (kept in the hub's store; no identity numbers)"),
    operator: str = typer.Option(..., "--operator", help="Staff code of who revokes it"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Revoke a case's consent record: providers refuse it from the hub's next request on."""
    from hedui.node.verification.consent import revoke_case

    rt = _runtime(config)
    try:
        out = revoke_case(rt, case_ref, reason=reason, operator=operator)
    finally:
        rt.close()
    if json_out:
        emit_json(out)
    else:
        console.print(f"{case_ref}: consent {out['consent_digest'][:16]}… revoked (revocation list serial {out['serial']})")


@app.command("list")
@cli_errors
def list_cmd(
    config: Path = _CONFIG,
    revoked_only: bool = typer.Option(False, "--revoked", help="Only revoked records"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """List each case's consent record: digest, one-off or periodic, validity, revocation."""
    from hedui.node.verification.consent import list_consents

    rt = _runtime(config)
    try:
        rows = list_consents(rt)
    finally:
        rt.close()
    if revoked_only:
        rows = [r for r in rows if r["revoked"]]
    if json_out:
        emit_json(rows)
        return
    t = Table(title="consent records")
    for col in ("case", "purpose", "use", "digest", "valid until", "revoked"):
        t.add_column(col, no_wrap=col in ("case", "digest", "valid until"))
    for r in rows:
        use = r["use"] + (f" (every {r['min_interval_days']} d)" if r["use"] == "periodic" else "")
        rev = f"{r['revoked_at'][:10]} by {r['revoked_by']}: {r['reason'] or ''}" if r["revoked"] else ""
        t.add_row(r["case_ref"], r["purpose"], use, r["consent_digest"][:16], r["not_after"][:10], rev)
    console.print(t)
