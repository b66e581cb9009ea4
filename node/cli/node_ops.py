"""``hedui node status`` and ``hedui node probe``: the operator's first questions (issue 17)."""

from __future__ import annotations

from pathlib import Path

import typer

from hedui.node.cli._common import cli_errors, console, emit_json, wall_clock

_CONFIG = typer.Option(..., "--config", "-c", help="node.toml")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("probe")(probe)


@cli_errors
def status(config: Path = _CONFIG, json_out: bool = typer.Option(False, "--json")) -> None:
    """Directory freshness, index state per source (with its data date), outbox, peers.
    Read-only and without keys: safe while the node serves."""
    from hedui.node.config import load_config
    from hedui.node.status import node_status

    cfg = load_config(config)
    out = node_status(cfg, wall_clock())
    if json_out:
        emit_json(out)
    else:
        print_status(out)
    if not out["directory"].get("valid") or not out["store"].get("reachable"):
        raise typer.Exit(1)


def print_status(out: dict) -> None:
    d, s = out["directory"], out["store"]
    console.print(f"[bold]{out['member']}[/] ({', '.join(out['roles'])})")
    if d.get("valid"):
        console.print(f"  directory v{d['version']}: valid, expires {d['expires_at']} "
                      f"(in {d['seconds_to_expiry'] // 3600} h)")
    else:
        console.print(f"  directory: [red]NOT VALID[/] {d.get('error')}")
    if not s.get("reachable"):
        console.print(f"  store: [red]unreachable[/] {s.get('error')}")
        return
    for i in s.get("index", []):
        console.print(f"  index {i['source']} epoch {i['epoch']}: {i['status']}, {i['tokens_in_epoch']:,} tokens, "
                      f"data date {i['data_date'] or '-'}, updated {i['age_seconds'] // 60} min ago")
    if not s.get("index"):
        console.print("  index: none built")
    ob = s.get("outbox") or {}
    if ob:
        console.print(f"  outbox: {ob['pending']} pending, {ob['rejected']} rejected"
                      + (f", oldest {ob['oldest_pending_age_seconds'] // 60} min" if ob.get("oldest_pending_age_seconds") else ""))
    for p in out["peers"]:
        console.print(f"  peer {p['code']:<16} {p['endpoint']:<22} {','.join(p['roles'])}"
                      + ("  [yellow]maintenance[/]" if p["maintenance"] else ""))


@cli_errors
def probe(
    peer: str = typer.Argument(..., help="Member code of the peer"),
    config: Path = _CONFIG,
    endpoint: str | None = typer.Option(None, help="host:port to probe instead of the directory's"),
    timeout: float = typer.Option(5.0, help="Seconds per step"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """DNS, TCP, TLS, mutual TLS, directory membership and policy towards PEER, telling a closed
    firewall from a rejected certificate from a call that is not allowed. Exit 1 on any failure."""
    from hedui.keys.ca import cert_pem, key_pem, load_cert, load_tls_key
    from hedui.keys.directory import load_directory
    from hedui.keys.keyfile import passphrase
    from hedui.keys.signing import load_public
    from hedui.node.config import load_config
    from hedui.node.probe import probe as do_probe

    cfg = load_config(config)
    td = load_directory(cfg.path(cfg.directory.path), load_public("authority", cfg.path(cfg.directory.authority_key)),
                        now=wall_clock().now())
    key = load_tls_key(cfg.path(cfg.tls.key), passphrase(env=cfg.keys.passphrase_env), allow_legacy=cfg.keys.allow_legacy)
    r = do_probe(td, cfg.node.member, peer, ca_pem=cert_pem(load_cert(cfg.path(cfg.tls.ca))),
                 cert_pem=cert_pem(load_cert(cfg.path(cfg.tls.cert))), key_pem=key_pem(key), timeout=timeout,
                 endpoint=endpoint)
    if json_out:
        emit_json(r.as_dict())
    else:
        for s in r.steps:
            console.print(f"  {'[green]ok[/]  ' if s['ok'] else '[red]FAIL[/]'} {s['step']:<9} {s['detail']}", highlight=False)
        console.print(f"{peer}: {r.verdict}")
    if not r.ok:
        raise typer.Exit(1)
