"""``hedui console``: serve the caseworkers' web console, and manage its operators.

``hedui console --config node.toml`` serves on 127.0.0.1:8443. Any other address needs TLS
(``--tls-cert``/``--tls-key``) or an explicit ``--insecure-http``. Operators live in a users
file next to the config (``console-users.toml``, or ``--users FILE``, TOML or JSON), managed
with ``hedui console users add/passwd/disable/enable/list/unlock``. Passwords are read from a
prompt, a file or a file descriptor — never from the command line.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from pathlib import Path

import typer

from hedui.node.cli._common import cli_errors, console, emit_json, fail

__all__ = ["app", "check_listen"]

app = typer.Typer(no_args_is_help=False, pretty_exceptions_enable=False)
users_app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(users_app, name="users", help="Console operators: add, passwd, disable, enable, list, unlock.")

_USERS = typer.Option(None, "--users", help="Users file (TOML or JSON); default console-users.toml next to --config")
_CONFIG = typer.Option(None, "--config", "-c", help="The hub's node.toml")
USERS_FILE = "console-users.toml"


def check_listen(listen: str, *, tls: bool, insecure_http: bool) -> tuple[str, int, bool]:
    """``(host, port, secure_cookies)``; refuses a network address without TLS unless told."""
    host, sep, port = listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        fail(f"--listen: got {listen!r}, want host:port such as 127.0.0.1:8443")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        fail(f"--listen: got host {host!r}, want an IP address (or localhost)")
    if not loopback and not tls and not insecure_http:
        fail(f"--listen {listen}: got a network address without TLS, want --tls-cert and --tls-key "
             "(or --insecure-http to serve plain HTTP on the network: passwords and personal data in the clear)")
    return host, int(port), bool(loopback or tls)


def _users_path(users: Path | None, config: Path | None) -> Path:
    if users is not None:
        return users
    if config is not None:
        return config.resolve().parent / USERS_FILE
    fail("--users: got nothing, want the users file (or --config to use console-users.toml next to it)")
    raise AssertionError  # pragma: no cover


def _read_password(password_file: Path | None, password_fd: int | None, *, confirm: bool = True) -> str:
    if password_file is not None and password_fd is not None:
        fail("give one of --password-file or --password-fd")
    if password_file is not None:
        try:
            text = sys.stdin.read() if str(password_file) == "-" else password_file.read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"--password-file {password_file}: got an unreadable file ({exc.strerror})")
        return text.rstrip("\r\n")
    if password_fd is not None:
        try:
            with os.fdopen(password_fd, "r", encoding="utf-8", closefd=False) as f:
                return f.read().rstrip("\r\n")
        except OSError as exc:
            fail(f"--password-fd {password_fd}: got an unreadable descriptor ({exc.strerror})")
    if not sys.stdin.isatty():
        fail("password: no terminal to prompt on; give --password-file or --password-fd")
    return typer.prompt("password", hide_input=True, confirmation_prompt=confirm)


@app.callback(invoke_without_command=True)
@cli_errors
def serve(
    ctx: typer.Context,
    config: Path | None = _CONFIG,
    listen: str = typer.Option("127.0.0.1:8443", help="host:port to serve on (loopback by default)"),
    users: Path | None = _USERS,
    tls_cert: Path | None = typer.Option(None, help="PEM certificate chain for HTTPS"),
    tls_key: Path | None = typer.Option(None, help="PEM private key for HTTPS"),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Allow plain HTTP on a network address (not advised)"),
    idle_minutes: int = typer.Option(15, min=1, max=240, help="Sign out after this many idle minutes"),
    max_upload_mb: int = typer.Option(10, min=1, max=100, help="Largest 授权书 scan accepted, MB"),
    keep_consent_scans: Path | None = typer.Option(None, help="Keep the 授权书 scans in this folder (default: keep only the digest)"),
    checks_dir: Path | None = typer.Option(None, "--checks-dir",
                                           help="Folder of cross-check files (*.toml) supervisors may run from the console"),
) -> None:
    """Serve the caseworkers' web console (核对工作台) for this hub."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        fail("--config: got nothing, want the hub's node.toml")
    if (tls_cert is None) != (tls_key is None):
        fail("give both --tls-cert and --tls-key, or neither")
    host, port, secure = check_listen(listen, tls=tls_cert is not None, insecure_http=insecure_http)
    if keep_consent_scans is not None and not keep_consent_scans.is_dir():
        fail(f"--keep-consent-scans {keep_consent_scans}: got no such folder, want an existing folder")
    if checks_dir is not None and not checks_dir.is_dir():
        fail(f"--checks-dir {checks_dir}: got no such folder, want an existing folder")
    import uvicorn

    from hedui.common.clock import DEFAULT_ZONE, SystemClock
    from hedui.node.console.app import ConsoleSettings, create_app
    from hedui.node.runtime import Runtime

    users_path = _users_path(users, config)
    rt = Runtime.open(config)
    try:
        if "hub" not in rt.config.node.roles:
            fail(f"{config}: node.roles has no 'hub'; the console runs on the hub")
        clock = SystemClock(getattr(rt.directory.msg, "time_zone", "") or DEFAULT_ZONE)
        settings = ConsoleSettings(users_path=users_path, idle_minutes=idle_minutes,
                                   consent_max_bytes=max_upload_mb * 1024 * 1024, keep_consent_dir=keep_consent_scans,
                                   checks_dir=checks_dir,
                                   secure_cookies=secure, hsts=tls_cert is not None)
        web = create_app(rt, clock, settings)
        if not users_path.exists():
            console.print(f"[yellow]no operators yet[/]: add one with `hedui console users add NAME --role caseworker --users {users_path}`")
        logging.getLogger("hedui.console.access").setLevel(logging.INFO)
        scheme = "https" if tls_cert else "http"
        console.print(f"核对工作台 serving on {scheme}://{host}:{port}/ (Ctrl-C to stop)")
        if not secure:
            console.print("[bold red]warning[/]: plain HTTP on a network address — passwords and personal data travel in the clear")
        uvicorn.run(web, host=host, port=port, ssl_certfile=str(tls_cert) if tls_cert else None,
                    ssl_keyfile=str(tls_key) if tls_key else None, access_log=False, log_level="warning",
                    server_header=False, proxy_headers=False)
    finally:
        rt.close()


def _store(users: Path | None, config: Path | None):
    from hedui.node.console.auth import UserStore

    return UserStore(_users_path(users, config))


@users_app.command("add")
@cli_errors
def users_add(
    name: str = typer.Argument(..., help="Staff code, e.g. cw01"),
    role: str = typer.Option(..., help="caseworker (经办) | reviewer (复核) | supervisor (科长/主任)"),
    display_name: str = typer.Option("", help="Name shown in the console, e.g. 张敏"),
    password_file: Path | None = typer.Option(None, help="Read the password from this file ('-' for stdin)"),
    password_fd: int | None = typer.Option(None, help="Read the password from this open file descriptor"),
    users: Path | None = _USERS,
    config: Path | None = _CONFIG,
) -> None:
    """Add an operator (the password is hashed with argon2id)."""
    store = _store(users, config)
    u = store.set_user(name, role=role, password=_read_password(password_file, password_fd), display_name=display_name,
                       disabled=False, create=True)
    console.print(f"added {u.name} ({u.role}) to {store.path}")


@users_app.command("passwd")
@cli_errors
def users_passwd(
    name: str = typer.Argument(...),
    password_file: Path | None = typer.Option(None, help="Read the password from this file ('-' for stdin)"),
    password_fd: int | None = typer.Option(None, help="Read the password from this open file descriptor"),
    users: Path | None = _USERS,
    config: Path | None = _CONFIG,
) -> None:
    """Set an operator's password."""
    store = _store(users, config)
    store.set_user(name, password=_read_password(password_file, password_fd))
    console.print(f"password of {name} changed")


@users_app.command("disable")
@cli_errors
def users_disable(name: str = typer.Argument(...), users: Path | None = _USERS, config: Path | None = _CONFIG) -> None:
    """Disable an operator: signed out at the next request, cannot sign in."""
    _store(users, config).set_user(name, disabled=True)
    console.print(f"{name} disabled")


@users_app.command("enable")
@cli_errors
def users_enable(name: str = typer.Argument(...), users: Path | None = _USERS, config: Path | None = _CONFIG) -> None:
    """Enable a disabled operator again."""
    _store(users, config).set_user(name, disabled=False)
    console.print(f"{name} enabled")


@users_app.command("list")
@cli_errors
def users_list(users: Path | None = _USERS, config: Path | None = _CONFIG, json_out: bool = typer.Option(False, "--json")) -> None:
    """Operators, their roles and whether they are disabled (never the hashes)."""
    rows = [{"name": u.name, "display_name": u.display_name, "role": u.role, "disabled": u.disabled}
            for u in sorted(_store(users, config).users().values(), key=lambda u: u.name)]
    if json_out:
        emit_json(rows)
        return
    for r in rows:
        console.print(f"{r['name']:<16} {r['role']:<11} {'disabled' if r['disabled'] else 'active':<9} {r['display_name']}")


@users_app.command("unlock")
@cli_errors
def users_unlock(name: str = typer.Argument(...), config: Path = typer.Option(..., "--config", "-c")) -> None:
    """Lift a sign-in lock-out now (after repeated wrong passwords)."""
    from sqlalchemy import delete

    from hedui.node.config import load_config
    from hedui.node.console.tables import console_signin_state
    from hedui.node.store.db import open_engine

    eng = open_engine(load_config(config).store_url())
    try:
        with eng.begin() as c:
            n = c.execute(delete(console_signin_state).where(console_signin_state.c.operator == name)).rowcount
    finally:
        eng.dispose()
    console.print(f"{name} unlocked" if n else f"{name} was not locked")
