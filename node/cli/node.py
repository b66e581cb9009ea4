"""``hedui node``: serve, migrate, check — and the provider's index commands."""

from __future__ import annotations

from pathlib import Path

import typer

from hedui.common.clock import fmt_instant
from hedui.node.cli._common import cli_errors, console, emit_json, err_console, fail, wall_clock

app = typer.Typer(no_args_is_help=True)

_CONFIG = typer.Option(..., "--config", "-c", help="node.toml")


@app.command("serve")
@cli_errors
def serve(
    config: Path = _CONFIG,
    passphrase_file: Path | None = typer.Option(None, "--passphrase-file", help="Key passphrase from this file"),
    passphrase_fd: int | None = typer.Option(
        None, "--passphrase-fd", help="Key passphrase from this descriptor (read to its end, then closed)"
    ),
) -> None:
    """Start the node (mTLS gRPC, health, reflection). Stops gracefully on SIGTERM/SIGINT.
    With node.worker_processes = N, a front that admits and forwards calls to N worker
    processes (docs/department-it.md "Worker processes"). The key passphrase: --passphrase-file / --passphrase-fd, else $HEDUI_KEY_PASSPHRASE (removed
    from the environment once read) or the file named by $HEDUI_KEY_PASSPHRASE_FILE."""
    from hedui.node.cli.keys import take_passphrase
    from hedui.node.server import serve as _serve

    take_passphrase(passphrase_file, passphrase_fd, env=None, option="--passphrase")
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
        before, after = migrate.upgrade(eng, index_partitions=cfg.store.index_partitions)
    finally:
        eng.dispose()
    if json_out:
        emit_json({"before": before, "after": after})
    else:
        console.print(f"store schema: {before or 'empty'} → {after}")


def check_read_replica(rt) -> list[str]:  # type: ignore[no-untyped-def]
    """``[store] read_database_url`` (issue 16): reachable, and a streaming replica (hot
    standby) — lookups would otherwise read a server that the primary's writes never reach."""
    if rt.read_engine is None:
        return []
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with rt.read_engine.connect() as c:
            standby = c.execute(text("SELECT pg_is_in_recovery()")).scalar()
    except DBAPIError as exc:
        return [f"store.read_database_url: cannot connect ({type(exc.orig).__name__})"]
    if not standby:
        return ["store.read_database_url: the server is not in recovery, want a streaming replica (hot standby) "
                "of store.url"]
    return []


@app.command("check")
@cli_errors
def check(config: Path = _CONFIG, json_out: bool = typer.Option(False, "--json")) -> None:
    """Every check `serve` and `index` perform, without serving: config, keys decrypt (TLS,
    signing, OPRF seeds, sealing key), certificate and the signed directory, the store
    reachable and migrated, every mapping's tables and columns, and a hub's routing when
    peers may push to it. Prints every problem found; exits 1 on any."""
    from hedui.keys.keyfile import legacy_seen
    from hedui.node.config import load_config
    from hedui.node.errors import HeduiError
    from hedui.node.runtime import Runtime

    cfg = load_config(config)   # a config that does not parse stops here (one line)
    problems: list[str] = []
    out: dict = {"member": cfg.node.member, "roles": cfg.node.roles}
    try:
        rt = Runtime.from_config(cfg)   # keys, certificate, directory, store, provider catalogue
    except HeduiError as exc:
        problems.append(exc.message)
        rt = None
    if rt is not None:
        try:
            out.update({
                "directory_version": rt.directory.version,
                "directory_expires_at": rt.directory.expires_at.isoformat(),
                "time_zone": rt.clock.zone.key,
                "store": rt.engine.dialect.name,
            })
            until = fmt_instant(rt.directory.expires_at, rt.clock.zone)
            problems += _check_hub_routing(rt)
            problems += _hub_rules_problems(rt)
            problems += check_read_replica(rt)
        finally:
            rt.close()
    if cfg.provider is not None and cfg.provider.mapping_paths():
        try:
            out["sources"] = _check_sources(cfg)
        except HeduiError as exc:
            problems.append(exc.message)
    # Key files still in the pre-issue-18 format (PBKDF2): `hedui keys rekey` each.
    out["legacy_key_files"] = legacy_seen()
    out["problems"] = problems
    out["ok"] = not problems
    if json_out:
        emit_json(out)
    else:
        if rt is not None and not problems:
            console.print(f"ok: {out['member']} ({', '.join(out['roles'])}), directory v{out['directory_version']} "
                          f"until {until}, time zone {out['time_zone']}, store {out['store']}")
        for p in problems:
            err_console.print(f"error: {p}", highlight=False, soft_wrap=True, markup=False)
        for f in out["legacy_key_files"]:
            console.print(f"warning: {f} is in the older PBKDF2 format; run `hedui keys rekey` on it")
    if problems:
        raise typer.Exit(1)


def _check_hub_routing(rt) -> list[str]:
    """A hub that the directory lets providers push notices to must have its routing file, or
    every notice would be refused at the door (NoticeService is not served without it)."""
    if rt.hub is None or rt.hub.discovery is not None:
        return []
    pushers = sorted({r.caller for r in rt.directory.msg.policy
                      if r.provider in (rt.member, "*") and r.method.endswith(".NoticeService/Push")})
    if not pushers:
        return []
    return [f"hub.routing: got none, want the hub discovery file: the directory lets {', '.join(pushers)} push "
            "notices to this hub"]


def _hub_rules_problems(rt) -> list[str]:
    """A hub's verification rules against the directory: every department and field a rule
    names must be offered (issue 12: such a rule would make every report incomplete)."""
    from hedui.v1 import directory_pb2

    if rt.hub is None:
        return []
    offered = {m.code: [f.name for f in m.fields] for m in rt.directory.members_with(directory_pb2.ROLE_PROVIDER)}
    source = str(rt.config.path(rt.config.hub.rules)) if rt.config.hub and rt.config.hub.rules else "verification-rules.toml (packaged default)"
    problems = rt.hub.rules.unknown_fields(offered)
    return [f"{source}: {'; '.join(problems)}"] if problems else []


def _check_sources(cfg) -> list[str]:
    """Every mapping against its database (tables and columns exist; no row is read), so a
    typo fails `node check` rather than a build (issue 12, "Validation at load")."""
    from hedui.adapters import open_adapter
    from hedui.node.errors import ConfigError

    names = []
    for path in cfg.provider.mapping_paths():
        adapter = open_adapter(cfg.path(path))
        try:
            adapter.check()
        except ConfigError as exc:   # name the file, as every configuration refusal does
            raise type(exc)(f"{cfg.path(path)}: {exc.message}", reason=exc.reason) from None
        finally:
            adapter.close()
        names.append(adapter.source)
    return names


def _provider_cfg(config: Path):
    from hedui.node.config import load_config
    from hedui.node.errors import ConfigError

    cfg = load_config(config)
    if cfg.provider is None or not cfg.provider.mapping_paths() or cfg.provider.oprf_seed is None:
        raise ConfigError(f"config {config}: provider.mapping (or provider.mappings) and provider.oprf_seed are "
                          "required to build a token index")
    return cfg


#: ``node index``: a source's run could not use more rows than ``provider.max_unusable_share``
#: allows, or its export ends inside a row (truncated); that run is not made live (the
#: previous build keeps answering). The same code as ``notices detect`` for the same cause.
EXIT_UNUSABLE = 3


def _build(cfg, seed_path: Path, epoch: int, *, full: bool, workers: int | None, json_out: bool,
           max_unusable_share: float | None = None) -> dict:
    from hedui.adapters import open_adapter
    from hedui.keys.keyfile import load_secret, passphrase
    from hedui.keys.oprf import ServerKey
    from hedui.node.store import migrate
    from hedui.node.store.db import open_engine
    from hedui.node.verification.index import build_index, list_problems
    from hedui.node.verification.provider import OPRF_SEED_LABEL

    key = ServerKey.derive(load_secret(seed_path, passphrase(env=cfg.keys.passphrase_env), label=OPRF_SEED_LABEL), epoch)
    limit = cfg.provider.max_unusable_share if max_unusable_share is None else max_unusable_share
    eng = open_engine(cfg.store_url())
    outs: list[dict] = []
    try:
        migrate.upgrade(eng, index_partitions=cfg.store.index_partitions)
        from hedui.node.cli._common import progress_bar

        # Every source of the node into one index (DESIGN-12: several mappings per node).
        for path in cfg.provider.mapping_paths():
            adapter = open_adapter(cfg.path(path))
            try:
                progress = progress_bar(disable=json_out)
                with progress:
                    rep = build_index(eng, adapter, key, epoch, clock=wall_clock(), workers=workers, progress=progress,
                                      full=full, data_date=cfg.provider.data_date, max_unusable_share=limit)
                problems = list_problems(eng, epoch, rep.source)
            finally:
                adapter.close()
            outs.append({
                "epoch": epoch, "source": rep.source, "mode": rep.mode, "resumed": rep.resumed, "rows": rep.rows,
                "records": rep.records, "problems": rep.problems, "removed": rep.removed, "tokens": rep.tokens,
                "seconds": round(rep.seconds, 2), "rows_per_second": round(rep.rate, 1),
                "public_key_hex": key.public_key_bytes.hex(), "skipped": rep.skipped,
                "unusable_share": round(rep.unusable_share, 6), "max_unusable_share": limit,
                "truncated": rep.truncated, "live": rep.live,
                # Every problem row of the source by locator (issue 13), never by identity.
                "problem_rows": [{"locator": p.locator, "reason": p.reason} for p in problems],
            })
    finally:
        eng.dispose()
    # The first source's figures at the top (the one-source output as before), every source under "sources".
    return {**outs[0], "sources": outs}


def _print_build(doc: dict) -> None:
    for out in doc.get("sources", [doc]):
        _print_source(out)


def _print_source(out: dict) -> None:
    console.print(
        f"epoch {out['epoch']} {out['source']} ({out['mode']}{', resumed' if out['resumed'] else ''}): "
        f"{out['rows']:,} rows → {out['records']:,} records, {out['problems']:,} problems, "
        f"{out.get('skipped', 0):,} skipped by the mapping's filters, {out['tokens']:,} tokens "
        f"in {out['seconds']} s ({out['rows_per_second']:,.0f} rows/s)"
    )
    for p in out["problem_rows"]:
        console.print(f"  problem {p['locator']}: {p['reason']}", markup=False, highlight=False, soft_wrap=True)
    if "live" in out:
        console.print(f"  unusable: {100 * out['unusable_share']:.2f}% of the rows read "
                      f"(provider.max_unusable_share {100 * out['max_unusable_share']:.2f}%)"
                      + ("; the export ends inside a row (truncated?)" if out["truncated"] else "")
                      + ("" if out["live"] else " — NOT made live: the previous build keeps answering"),
                      markup=False, highlight=False)


def _unusable(doc: dict) -> None:
    held = [o for o in doc.get("sources", [doc]) if not o.get("live", True)]
    if held:
        fail("; ".join(f"{o['source']}: {o['problems']} problem row(s), {100 * o['unusable_share']:.1f}% unusable"
                       + (", export truncated" if o["truncated"] else "") for o in held)
             + f" (provider.max_unusable_share allows {100 * held[0]['max_unusable_share']:.1f}%); not made live — "
             "fix the export or the mapping and run `hedui node index` again", EXIT_UNUSABLE)


@app.command("index")
@cli_errors
def index(
    config: Path = _CONFIG,
    full: bool = typer.Option(False, help="Re-read everything (default: only what changed; resumes an interrupted run)"),
    workers: int | None = typer.Option(None, help="Processes computing tokens (default: all cores)"),
    json_out: bool = typer.Option(False, "--json"),
    max_unusable_share: float | None = typer.Option(
        None, min=0.0, max=1.0,
        help="Largest share of rows a run may fail to use and still go live (default: provider.max_unusable_share)"),
) -> None:
    """Build or update the token index of the current OPRF epoch from the department's data.

    Every problem row is named by locator. Exits 3 when a source's run could not use more than
    the allowed share of its rows, or its export ends inside a row; that run is not made live."""
    cfg = _provider_cfg(config)
    out = _build(cfg, cfg.path(cfg.provider.oprf_seed), cfg.provider.epoch, full=full, workers=workers, json_out=json_out,
                 max_unusable_share=max_unusable_share)
    emit_json(out) if json_out else _print_build(out)
    _unusable(out)


@app.command("rotate-oprf-key")
@cli_errors
def rotate_oprf_key(
    config: Path = _CONFIG,
    workers: int | None = typer.Option(None, help="Processes computing tokens (default: all cores)"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Create the next epoch's OPRF key and build its index while the current epoch keeps answering."""
    import os

    from hedui.keys.keyfile import passphrase, save_secret
    from hedui.node.errors import ConfigError
    from hedui.node.verification.provider import OPRF_SEED_LABEL

    cfg = _provider_cfg(config)
    nxt = cfg.provider.epoch + 1
    seed_path = cfg.path(Path(f"oprf-epoch{nxt}.seed"))
    if not seed_path.exists():
        save_secret(seed_path, os.urandom(32), passphrase(env=cfg.keys.passphrase_env), label=OPRF_SEED_LABEL)
    elif not seed_path.is_file():
        raise ConfigError(f"{seed_path}: exists and is not a file")
    out = _build(cfg, seed_path, nxt, full=True, workers=workers, json_out=json_out)
    out["seed_file"] = str(seed_path)
    out["next_steps"] = [
        f"authority: add oprf_keys {{ epoch = {nxt}, public_key_hex = \"{out['public_key_hex']}\" }} to this member "
        f"(keep epoch {cfg.provider.epoch}) and re-sign the directory",
        f"node.toml [provider]: epoch = {nxt}, oprf_seed = \"{seed_path.name}\", previous_epoch = {cfg.provider.epoch}, "
        f"previous_oprf_seed = \"{cfg.provider.oprf_seed}\"; restart",
        "after the overlap: drop the previous epoch from node.toml and the directory",
    ]
    if json_out:
        emit_json(out)
    else:
        _print_build(out)
        for s in out["next_steps"]:
            console.print(f"  next: {s}")
    _unusable(out)
