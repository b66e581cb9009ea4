"""``hedui node``: serve, migrate, check — and the provider's index commands."""

from __future__ import annotations

from pathlib import Path

import typer

from hedui.node.cli._common import cli_errors, console, emit_json

app = typer.Typer(no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", "-c", help="node.toml")


@app.command("serve")
@cli_errors
def serve(config: Path = _CONFIG) -> None:
    """Start the node (mTLS gRPC, health, reflection). Stops gracefully on SIGTERM/SIGINT."""
    from hedui.node.server import serve as _serve

    _serve(config)


@app.command("migrate")
@cli_errors
def migrate_cmd(config: Path = _CONFIG, json_out: bool = typer.Option(False, "--json")) -> None:
    """Bring the node's store to the newest schema (also done on every start)."""
    from hedui.node.config import load_config
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine

    cfg = load_config(config)
    eng = open_engine(cfg.store_url())
    try:
        before, after = migrate.upgrade(eng)
    finally:
        eng.dispose()
    if json_out:
        emit_json({"before": before, "after": after})
    else:
        console.print(f"store schema: {before or 'empty'} → {after}")


@app.command("check")
@cli_errors
def check(config: Path = _CONFIG, json_out: bool = typer.Option(False, "--json")) -> None:
    """Validate config, keys, certificate and the signed directory without serving."""
    from hedui.node.runtime import Runtime

    rt = Runtime.open(config)
    try:
        out = {
            "member": rt.member,
            "roles": rt.config.node.roles,
            "directory_version": rt.directory.version,
            "directory_expires_at": rt.directory.expires_at.isoformat(),
            "store": rt.engine.dialect.name,
        }
    finally:
        rt.close()
    if json_out:
        emit_json(out)
    else:
        console.print(f"ok: {out['member']} ({', '.join(out['roles'])}), directory v{out['directory_version']} until {out['directory_expires_at']}, store {out['store']}")
