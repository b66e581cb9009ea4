"""``hedui keys show FILE``: print any public key or fingerprint again (issue 17 item 5) —
a certificate, a public key, or an encrypted key file (with its passphrase), whatever made it."""

from __future__ import annotations

from pathlib import Path

import typer

from hedui.node.cli._common import cli_errors, console, emit_json

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("show")(show)
    app.command("renew")(renew)


@cli_errors
def renew(
    authority: Path = typer.Option(..., help="Authority folder"),
    csr: Path = typer.Option(..., help="The member's new CSR (PEM), e.g. from `hedui keys init-member` into a new folder"),
    current: Path = typer.Option(..., help="The member's current certificate (must still be valid)"),
    out: Path = typer.Option(..., help="Where to write the renewed certificate"),
    ca_passphrase_file: Path | None = typer.Option(None, "--ca-passphrase-file", help="CA key passphrase file"),
    ca_passphrase_fd: int | None = typer.Option(None, "--ca-passphrase-fd", help="CA key passphrase descriptor"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Authority: issue a member's next certificate before the current one expires. The
    directory then lists both (renewed_certs) until the member has installed the new one
    (hedui_certificate_expiring warns 30 days ahead)."""
    from hedui.keys import federation as fed
    from hedui.keys.ca import cert_fingerprint, member_of_cert
    from hedui.keys.keyfile import passphrase
    from hedui.keys.passphrase import CA_PASSPHRASE_ENV
    from hedui.node.cli._common import wall_clock
    from hedui.node.cli.keys import take_passphrase

    take_passphrase(ca_passphrase_file, ca_passphrase_fd, env=CA_PASSPHRASE_ENV, option="--ca-passphrase")
    cert = fed.renew_cert(fed.AuthorityDir(authority), csr, current, out, passphrase(env=CA_PASSPHRASE_ENV),
                          now=wall_clock().now())
    code = member_of_cert(cert)
    doc = {"member": code, "certificate": str(out), "sha256": cert_fingerprint(cert).hex(),
           "not_after": cert.not_valid_after_utc.isoformat(), "next_steps": [
               f"directory spec, member {code}: renewed_certs = [\"{out}\"]; re-sign and publish the directory",
               f"once every node has pulled it: {code} installs the new tls.crt (and its tls.key) and restarts",
               f"then: cert = \"{out}\", drop renewed_certs, re-sign and publish"]}
    if json_out:
        emit_json(doc)
        return
    console.print(f"renewed {code}: {out} (sha256 {doc['sha256'][:16]}…, valid to {doc['not_after'][:10]})")
    for step in doc["next_steps"]:
        console.print(f"  next: {step}", highlight=False)


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
