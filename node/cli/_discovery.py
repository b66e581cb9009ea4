"""What the ``notices`` and ``leads``/``referrals``/``report`` commands share: opening a
migrated store, a node's config of a given role, the hub's discovery workflow from
``--config`` or ``--db`` with ``--hub-config``, and option parsing."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import typer

from hedui.common.clock import Clock
from hedui.node.cli._common import fail, wall_clock

__all__ = ["DB", "HUB_CONFIG", "CONFIG", "JSON", "store", "node_config", "hub_with_config", "open_hub", "parse_date", "secret_file"]

DB = typer.Option(None, "--db", help="Node store URL (sqlite:///node.db, postgresql://…); or use --config")
HUB_CONFIG = typer.Option(None, "--hub-config", help="Hub discovery config (TOML: hub, secrets, routes); with --db")
CONFIG = typer.Option(None, "--config", "-c", help="The hub node's node.toml (instead of --db and --hub-config)")
JSON = typer.Option(False, "--json", help="Machine-readable output")

_DISCOVERY_TABLES = ("notice_outbox", "notice_inbox", "leads", "lead_events", "referrals")


def store(db: str, option: str = "--db"):
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


def node_config(config: Path, role: str):
    from hedui.node.config import load_config

    cfg = load_config(config)
    if role not in cfg.node.roles:
        fail(f"--config {config}: node.roles: got {', '.join(cfg.node.roles)}, want a node with the {role} role")
    return cfg


def hub_with_config(db: str | None, hub_config: Path | None, config: Path | None):
    """``(hub, node config or None)`` from ``--config``, or from ``--db`` with ``--hub-config``."""
    from hedui.node.discovery.hub import Hub

    if config is not None:
        if db is not None or hub_config is not None:
            fail("give --config, or --db with --hub-config, not both")
        from hedui.keys.directory import load_directory
        from hedui.keys.signing import load_public
        from hedui.node.discovery.hub import load_hub

        cfg = node_config(config, "hub")
        directory = load_directory(
            cfg.path(cfg.directory.path), load_public("authority", cfg.path(cfg.directory.authority_key)), now=wall_clock().now()
        )
        # The hub runs on the wall clock in the zone the directory names (DESIGN.md "Time").
        wall = wall_clock(directory.zone.key)
        engine = store(cfg.store_url(), "--config store.url")
        try:
            from hedui.keys.keyfile import passphrase

            return load_hub(cfg, engine, directory, wall, lambda: passphrase(env=cfg.keys.passphrase_env)), cfg
        except BaseException:
            engine.dispose()
            raise
    if db is None or hub_config is None:
        fail("--config: got nothing, want the hub's node.toml (or both --db and --hub-config)")
    from hedui.keys.keyfile import passphrase

    # Without a directory the zone is the default one, Asia/Shanghai (docs/time.md).
    return Hub.from_config(store(db), hub_config, clock=wall_clock(), passphrase=passphrase), None


def open_hub(db: str | None, hub_config: Path | None, config: Path | None = None):
    return hub_with_config(db, hub_config, config)[0]


def parse_date(value: str | None, option: str, clock: Clock | None = None) -> date:
    """A plain local date option (``--event-date``); default: today in the federation zone."""
    if value is None:
        return (clock or wall_clock()).today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        fail(f"{option}: got {value!r}, want a date like 2025-06-03")
    raise AssertionError  # pragma: no cover


def secret_file(path: Path | None, env: str, option: str, minimum: int = 16) -> bytes:
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
