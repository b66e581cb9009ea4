"""``hedui keys show FILE``: print any public key or fingerprint again (issue 17 item 5) —
a certificate, a public key, or an encrypted key file (with its passphrase), whatever made it."""

from __future__ import annotations

from pathlib import Path

import typer

from hedui.node.cli._common import cli_errors, console, emit_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("show")(show)


@cli_errors
def show(
    file: Path = typer.Argument(..., help="Certificate, public key, or hedui key file"),
    epoch: int = typer.Option(1, min=1, help="OPRF seed files: the epoch whose public key to print"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Print a key's public part or a certificate's fingerprint again (e.g. a hub's whole
    sealing_key_hex for the directory). Key files ask for the passphrase as every command does."""
    from hedui.keys import keyfile
    from hedui.keys.describe import describe_key_file
    from hedui.keys.keyfile import passphrase

    data = file.read_bytes() if file.is_file() else b""
    pw = passphrase() if keyfile.is_current(data) else None
    out = describe_key_file(file, passphrase=pw, epoch=epoch)
    if json_out:
        emit_json(out)
        return
    for k, v in out.items():
        console.print(f"{k}: {v}", highlight=False, soft_wrap=True)
