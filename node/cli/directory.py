"""``hedui directory``: the authority publishes the signed directory for nodes to pull
(issue 17 item 1; any static HTTPS or file location works as well)."""

from __future__ import annotations

import datetime as dt
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import typer
from rich.markup import escape

from hedui.node.cli._common import cli_errors, console, err_console

app = typer.Typer(no_args_is_help=True)

#: Paths the signed directory is served at; anything else is 404.
PATHS = ("/directory", "/directory.dsse.json")


def make_server(file: Path, listen: str) -> ThreadingHTTPServer:
    """An HTTP server answering GET /directory with ``file`` as it is now (re-read per request,
    so publishing is replacing the file). Nodes verify the signature: the transport need not
    be trusted, only available."""
    host, _, port = listen.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in PATHS:
                self.send_error(404)
                return
            try:
                data = file.read_bytes()
            except OSError:
                self.send_error(503, "directory file unreadable")
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:  # type: ignore[no-untyped-def]
            pass

    return ThreadingHTTPServer((host, int(port)), Handler)


def check_validity(file: Path, refresh_seconds: int) -> str | None:
    """The warning for a directory file whose validity (expires_at - issued_at) is not
    MIN_VALIDITY_FACTOR times the nodes' refresh interval (issue 17 item 1), or None. The
    signature is not checked here (the server holds no trust anchor; nodes check it)."""
    from hedui.keys.directory import unverified_validity, validity_warning

    try:
        validity = unverified_validity(file.read_bytes())
    except OSError:
        return None  # make_server answers 503 for an unreadable file; nothing to judge here
    return validity_warning(validity, refresh_seconds) if validity is not None else None


def publish_once(authority: Path, spec: Path, out: Path, pw: bytes, *, now: dt.datetime, every: int,
                 signing_key: Path | None = None) -> int:
    """One generation step: sign ``spec`` at a version above the one in ``out`` (and at least
    the spec's), write it atomically, warn when the validity is too short; the new version."""
    from hedui.keys import federation as fed
    from hedui.keys.directory import DirectorySpec, unverified_version

    floor = DirectorySpec.load(spec).version
    try:
        published = unverified_version(out.read_bytes())
    except OSError:
        published = None
    version = max(floor, (published or 0) + 1)
    return fed.sign_directory_file(fed.AuthorityDir(authority, signing_key), spec, out, pw, now=now, version=version,
                                   interval=every, warn=lambda m: err_console.print(f"[bold yellow]warning[/]: {escape(m)}"))


@app.command("publish")
@cli_errors
def publish(
    authority: Path = typer.Option(..., help="Authority folder"),
    spec: Path = typer.Option(..., help="Directory spec (TOML); its version is the lowest one signed"),
    out: Path = typer.Option(..., help="Signed directory (DSSE JSON) to (re)write, e.g. the file `directory serve` serves"),
    every: int = typer.Option(60, "--every", min=1, max=86400, help="Re-sign every this many seconds (X-Road: 60)"),
    once: bool = typer.Option(False, "--once", help="Sign one new version and exit (for a systemd timer)"),
    signing_key: Path | None = typer.Option(None, "--signing-key", help="Directory-signing key file, if not AUTHORITY/signing.key"),
    directory_passphrase_file: Path | None = typer.Option(
        None, "--directory-passphrase-file", help="Directory-signing key passphrase file (else $HEDUI_DIRECTORY_PASSPHRASE[_FILE])"),
    directory_passphrase_fd: int | None = typer.Option(None, "--directory-passphrase-fd", help="Directory-signing key passphrase descriptor"),
) -> None:
    """The authority's directory generator (issue 17, after X-Road's global configuration,
    generated every 60 s and valid 600 s): re-signs the spec every --every seconds at the next
    version, so a short validity (valid_seconds) never lapses while the authority runs. Edits
    to the spec (a member, a policy, a key) go out at the next step. Stop with Ctrl-C."""
    import time

    from hedui.keys.keyfile import passphrase
    from hedui.keys.passphrase import DIRECTORY_PASSPHRASE_ENV
    from hedui.node.cli._common import wall_clock
    from hedui.node.cli.keys import take_passphrase

    take_passphrase(directory_passphrase_file, directory_passphrase_fd, env=DIRECTORY_PASSPHRASE_ENV, option="--directory-passphrase")
    pw = passphrase(env=DIRECTORY_PASSPHRASE_ENV)
    while True:
        v = publish_once(authority, spec, out, pw, now=wall_clock().now(), every=every, signing_key=signing_key)
        console.print(f"signed directory v{v} → {out}")
        if once:
            return
        try:
            time.sleep(every)
        except KeyboardInterrupt:
            return


@app.command("serve")
@cli_errors
def serve(
    file: Path = typer.Option(..., "--file", help="Signed directory (DSSE JSON) written by `hedui keys sign-directory`"),
    listen: str = typer.Option("127.0.0.1:8470", help="host:port"),
    refresh_seconds: int = typer.Option(60, "--refresh-seconds", min=1, max=86400,
                                        help="The nodes' [directory] refresh_seconds, to check the validity against"),
) -> None:
    """Serve the signed directory at /directory for nodes' [directory] sources (put TLS in front
    for the open internet; the nodes check the authority's signature either way)."""
    warning = check_validity(file, refresh_seconds)
    if warning is not None:
        err_console.print(f"[bold yellow]warning[/]: {escape(warning)}")
    srv = make_server(file, listen)
    console.print(f"serving {file} at http://{listen.rpartition(':')[0]}:{srv.server_address[1]}/directory")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        t.join()
    except KeyboardInterrupt:
        srv.shutdown()
