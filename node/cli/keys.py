"""``hedui keys``: what the federation authority and each member do with keys."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from hedui.common.clock import fmt_instant
from hedui.keys import federation as fed
from hedui.keys.ca import cert_fingerprint, load_cert
from hedui.keys.directory import PURPOSE_NAMES, load_directory
from hedui.keys.errors import KeyFileError
from hedui.keys.keyfile import passphrase
from hedui.keys.passphrase import CA_PASSPHRASE_ENV, DIRECTORY_PASSPHRASE_ENV, provide, read_fd, read_file
from hedui.keys.signing import load_public
from hedui.node.cli._common import cli_errors, console, emit_json, err_console, fail, wall_clock

app = typer.Typer(no_args_is_help=True)

_PW_HELP = (
    "Passphrase: `hedui --passphrase-file F` / `--passphrase-fd N`, or $HEDUI_KEY_PASSPHRASE (removed from the "
    "environment once read), or the file named by $HEDUI_KEY_PASSPHRASE_FILE."
)


def take_passphrase(path: Path | None, fd: int | None, *, env: str | None, option: str) -> None:
    """Reads a passphrase given as ``{option}-file`` or ``{option}-fd`` (never both) and
    provides it for the passphrase called ``env`` (None: the generic key passphrase)."""
    if path is not None and fd is not None:
        fail(f"{option}-file and {option}-fd: got both, want one")
    try:
        if path is not None:
            provide(read_file(path, what=f"{option}-file"), env=env)
        elif fd is not None:
            provide(read_fd(fd, what=f"{option}-fd"), env=env)
    except KeyFileError as exc:
        fail(exc.message)


_CA_FILE = typer.Option(None, "--ca-passphrase-file", help="CA key passphrase file (else $HEDUI_CA_PASSPHRASE[_FILE])")
_CA_FD = typer.Option(None, "--ca-passphrase-fd", help="CA key passphrase descriptor")
_DIR_FILE = typer.Option(
    None, "--directory-passphrase-file", help="Directory-signing key passphrase file (else $HEDUI_DIRECTORY_PASSPHRASE[_FILE])"
)
_DIR_FD = typer.Option(None, "--directory-passphrase-fd", help="Directory-signing key passphrase descriptor")
_SIGNING_KEY = typer.Option(None, "--signing-key", help="Directory-signing key file, if not AUTHORITY/signing.key")


@app.command("init-authority")
@cli_errors
def init_authority(
    dir: Path = typer.Option(..., "--dir", help="Authority folder to create"),
    name: str = typer.Option("Hedui federation CA", help="CA common name"),
    signing_key: Path | None = _SIGNING_KEY,
    ca_passphrase_file: Path | None = _CA_FILE,
    ca_passphrase_fd: int | None = _CA_FD,
    directory_passphrase_file: Path | None = _DIR_FILE,
    directory_passphrase_fd: int | None = _DIR_FD,
) -> None:
    """Create the federation CA and the directory-signing key: two key files under two
    different passphrases (the CA's, the directory key's)."""
    take_passphrase(ca_passphrase_file, ca_passphrase_fd, env=CA_PASSPHRASE_ENV, option="--ca-passphrase")
    take_passphrase(directory_passphrase_file, directory_passphrase_fd, env=DIRECTORY_PASSPHRASE_ENV, option="--directory-passphrase")
    a = fed.init_authority(
        dir, name, passphrase(env=CA_PASSPHRASE_ENV), passphrase(env=DIRECTORY_PASSPHRASE_ENV),
        now=wall_clock().now(), signing_key=signing_key,
    )
    console.print(f"created CA {a.ca_cert} and directory-signing key {a.signing_key} ({a.signing_pub})")


@app.command("init-member")
@cli_errors
def init_member(
    dir: Path = typer.Option(..., "--dir", help="Member folder to create"),
    member: str = typer.Option(..., help="Member code, e.g. tax"),
    host: str = typer.Option(..., help="Endpoint host name or IP (becomes the certificate SAN)"),
    role_keys: bool = typer.Option(False, "--role-keys", help="Also create a signing key per role (answers, checkpoints, cosignatures)"),
) -> None:
    """Member side: TLS key + CSR and the Ed25519 signing key. Send tls.csr and signing.pub to the authority."""
    pw = passphrase()
    m = fed.init_member(dir, member, host, pw)
    console.print(f"created {m.tls_csr} and {m.signing_pub}; private keys stay in {m.root}")
    if role_keys:
        _report_role_keys(fed.init_role_keys(dir, member, pw, list(fed.ROLE_FILES)), member)


@app.command("role-keys")
@cli_errors
def role_keys_cmd(
    dir: Path = typer.Option(..., "--dir", help="Member folder (where the node's key files live)"),
    member: str = typer.Option(..., help="Member code, e.g. tax"),
    role: list[str] = typer.Option(
        ["answers", "checkpoints", "cosignatures"], "--role", help="answers (and receipts, notices, consent) | checkpoints | cosignatures"
    ),
    tag: str = typer.Option("", "--tag", help="Put in the file names, e.g. 2027, to rotate beside the keys in use"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Member side: a signing key per role (issue 18), and role-keys-request.toml for the
    authority (the directory entry's answer_key / checkpoint_key / cosign_key lines). The
    passphrase as for every member key (``hedui --passphrase-file F keys role-keys …``)."""
    r = fed.init_role_keys(dir, member, passphrase(), role, tag=tag)
    if json_out:
        emit_json({"keys": {k: {"key": str(a), "pub": str(b)} for k, (a, b) in r.keys.items()}, "request": str(r.request),
                   "spec": r.spec_lines(member), "config": r.config_lines()})
    else:
        _report_role_keys(r, member)


def _report_role_keys(r: fed.RoleKeys, member: str) -> None:
    for role, (key, pub) in r.keys.items():
        console.print(f"{role}: {key} (public {pub.name})")
    console.print(f"send {r.request.name} and the .pub files to the authority; its directory entry for {member} gets:")
    for line in r.spec_lines(member):
        console.print(f"  {line}", markup=False)
    console.print("once a directory listing them is in force, add to node.toml [keys] (paths relative to node.toml) and restart:")
    for line in r.config_lines():
        console.print(f"  {line}", markup=False)


@app.command("issue")
@cli_errors
def issue(
    authority: Path = typer.Option(..., help="Authority folder"),
    csr: Path = typer.Option(..., help="Member CSR (PEM)"),
    out: Path = typer.Option(..., help="Where to write the certificate"),
    san: list[str] = typer.Option(..., "--san", help="A host name or address the authority approves for this member "
                                  "(its directory endpoint's host); repeatable. The CSR may ask for no other."),
    ca_passphrase_file: Path | None = _CA_FILE,
    ca_passphrase_fd: int | None = _CA_FD,
) -> None:
    """Authority side: issue a member TLS certificate (serverAuth+clientAuth) from a CSR (CA passphrase)."""
    take_passphrase(ca_passphrase_file, ca_passphrase_fd, env=CA_PASSPHRASE_ENV, option="--ca-passphrase")
    cert = fed.issue_cert(fed.AuthorityDir(authority), csr, out, passphrase(env=CA_PASSPHRASE_ENV), now=wall_clock().now(),
                          approved=san)
    console.print(f"issued {out} (sha256 {cert_fingerprint(cert).hex()[:16]}…, valid to {cert.not_valid_after_utc:%Y-%m-%d})")


@app.command("sign-directory")
@cli_errors
def sign_directory(
    authority: Path = typer.Option(..., help="Authority folder"),
    spec: Path = typer.Option(..., help="Directory spec (TOML)"),
    out: Path = typer.Option(..., help="Signed directory (DSSE JSON) to write"),
    time_zone: str | None = typer.Option(
        None, "--time-zone", help="The federation's IANA time zone (default: the spec's time_zone, else Asia/Shanghai)"
    ),
    signing_key: Path | None = _SIGNING_KEY,
    directory_passphrase_file: Path | None = _DIR_FILE,
    directory_passphrase_fd: int | None = _DIR_FD,
) -> None:
    """Build and sign the directory (members, keys, fields, access policy, version, expiry, and the
    federation time zone every local date is computed in) with the directory-signing key (its own
    passphrase)."""
    take_passphrase(directory_passphrase_file, directory_passphrase_fd, env=DIRECTORY_PASSPHRASE_ENV, option="--directory-passphrase")
    a = fed.AuthorityDir(authority, signing_key)
    v = fed.sign_directory_file(a, spec, out, passphrase(env=DIRECTORY_PASSPHRASE_ENV), now=wall_clock().now(),
                                time_zone=time_zone, warn=lambda m: err_console.print(f"[bold yellow]warning[/]: {escape(m)}"))
    console.print(f"signed directory v{v} → {out}")


@app.command("show-directory")
@cli_errors
def show_directory(
    path: Path = typer.Argument(..., help="Signed directory (DSSE JSON)"),
    authority_key: Path = typer.Option(..., help="Authority public key (PEM)"),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output"),
) -> None:
    """Verify a signed directory and print what it says."""
    td = load_directory(path, load_public("authority", authority_key), now=wall_clock().now())
    d = td.msg
    summary = {
        "federation": d.federation,
        "version": d.version,
        "expires_at": td.expires_at.isoformat(),
        "time_zone": td.zone.key,
        "members": [
            {
                "code": m.code, "name": m.name, "endpoint": m.endpoint, "region": m.region,
                "roles": [r for r in ("provider", "hub") if (1 if r == "provider" else 2) in m.roles],
                "tls_cert_sha256": bytes(m.tls_cert_sha256).hex(),
                "oprf_epochs": [k.epoch for k in m.oprf_keys],
                "fields": [f.name for f in m.fields],
            }
            for m in d.members
        ],
        "policy": [
            {"caller": r.caller, "provider": r.provider, "method": r.method,
             "purposes": [PURPOSE_NAMES.get(p, str(p)) for p in r.purposes], "fields": list(r.fields),
             "per_minute": r.per_minute, "per_day": r.per_day, "max_batch": r.max_batch}
            for r in d.policy
        ],
    }
    if json_out:
        emit_json(summary)
        return
    console.print(f"[bold]{d.federation}[/] directory v{d.version}, time zone {td.zone.key}, "
                  f"expires {fmt_instant(td.expires_at, td.zone)}")
    for m in summary["members"]:
        console.print(f"  {m['code']:<20} {m['endpoint']:<22} {','.join(m['roles']):<14} {m['name']}")
    console.print(f"  {len(summary['policy'])} access rules")


@app.command("fingerprint")
@cli_errors
def fingerprint(cert: Path = typer.Argument(..., help="Certificate (PEM)")) -> None:
    """Print a certificate's SHA-256 fingerprint (as listed in the directory)."""
    console.print(cert_fingerprint(load_cert(cert)).hex())


@app.command("oprf-init")
@cli_errors
def oprf_init(
    out: Path = typer.Option(..., help="Encrypted OPRF seed file to create (node.toml provider.oprf_seed)"),
    epoch: int = typer.Option(1, min=1, help="Key epoch"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Provider: create an OPRF key (RFC 9497 VOPRF, ristretto255-SHA512) for one epoch."""
    import os

    from hedui.keys.keyfile import save_secret
    from hedui.keys.oprf import ServerKey
    from hedui.node.errors import ConfigError
    from hedui.node.verification.provider import OPRF_SEED_LABEL

    if out.exists():
        raise ConfigError(f"{out}: already exists; refusing to overwrite a key")
    seed = os.urandom(32)
    save_secret(out, seed, passphrase(), label=OPRF_SEED_LABEL)
    pub = ServerKey.derive(seed, epoch).public_key_bytes.hex()
    if json_out:
        emit_json({"epoch": epoch, "public_key_hex": pub})
    else:
        console.print(f"created {out}; directory entry: oprf_keys = [{{ epoch = {epoch}, public_key_hex = \"{pub}\" }}]")


@app.command("sealing-init")
@cli_errors
def sealing_init(
    out: Path = typer.Option(..., help="Encrypted HPKE private key to create (node.toml hub.sealing_key)"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Hub: create the HPKE key (ML-KEM-768 + X25519) that discovery notices are sealed to."""
    from hedui.keys.sealing import SealingKey
    from hedui.node.errors import ConfigError

    if out.exists():
        raise ConfigError(f"{out}: already exists; refusing to overwrite a key")
    k = SealingKey.generate()
    k.save(out, passphrase())
    pub = k.public_bytes().hex()
    if json_out:
        emit_json({"sealing_key_hex": pub})
    else:
        # The whole key (issue 17: a truncated one could not be pasted into the directory);
        # `hedui keys show FILE` prints it again.
        console.print(f"created {out}; directory entry:", highlight=False)
        console.print(f"sealing_key_hex = \"{pub}\"", highlight=False, soft_wrap=True)


@app.command("log-keys")
@cli_errors
def log_keys(
    directory: Path = typer.Argument(..., help="Signed directory (DSSE JSON)"),
    authority_key: Path = typer.Option(..., help="Authority public key (PEM)"),
    out: Path | None = typer.Option(None, help="Write the keys to this file (for `hedui audit verify --key FILE`)"),
) -> None:
    """Security officer: the audit-log checkpoint keys (C2SP signed-note verifier keys) of every
    member, taken from a directory whose signature verifies."""
    from hedui.node.audit.note import Verifier
    from hedui.node.audit.recorder import origin_of

    td = load_directory(directory, load_public("authority", authority_key), now=wall_clock().now())
    from hedui.keys.directory import ROLE_CHECKPOINTS, ROLE_COSIGNATURES, role_key_of
    from hedui.node.audit.note import CosignatureVerifier

    lines = []
    for m in td.msg.members:
        origin = origin_of(td.msg.federation, m.code)
        cp, co = role_key_of(m, ROLE_CHECKPOINTS), role_key_of(m, ROLE_COSIGNATURES)
        line = f"# {m.code} {m.name}\n{Verifier(origin, cp).vkey}"
        if co != cp:  # issue 18: a cosignature key of its own, trusted for cosignatures only
            line += f"\n{CosignatureVerifier(origin, co).vkey}"
        lines.append(line)
    text = f"# checkpoint keys from directory v{td.version} ({td.msg.federation})\n" + "\n".join(lines) + "\n"
    if out:
        out.write_text(text, encoding="utf-8")
        console.print(f"wrote {len(lines)} keys to {out}")
    else:
        console.print(text, end="", highlight=False, soft_wrap=True)


@app.command("rekey")
@cli_errors
def rekey(
    file: Path = typer.Argument(..., help="Key or secret file to re-encrypt in place"),
    purpose: str | None = typer.Option(
        None, help="What the file is (tls-key, signing-key, ca-key, directory-signing-key, sealing-key, "
        "hedui-person-secret, hedui-oprf-seed, hedui-dedup-secret); read from the file or its name when left out"
    ),
    new_passphrase_file: Path | None = typer.Option(None, "--new-passphrase-file", help="The new passphrase, from a file"),
    new_passphrase_fd: int | None = typer.Option(None, "--new-passphrase-fd", help="The new passphrase, from a descriptor"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Re-encrypt a key file: the current format (scrypt + AES-256-GCM) and, if given, a new
    passphrase. The old passphrase as for every key (`hedui --passphrase-file …`; for the CA or
    directory key, that key's passphrase); the new one from --new-passphrase-file/-fd or
    $HEDUI_NEW_KEY_PASSPHRASE[_FILE], else unchanged. Atomic: the file is replaced only once the
    new one is written and opens."""
    from hedui.keys.passphrase import NEW_PASSPHRASE_ENV
    from hedui.keys.rekey import rekey as do_rekey

    take_passphrase(new_passphrase_file, new_passphrase_fd, env=NEW_PASSPHRASE_ENV, option="--new-passphrase")
    old = passphrase()
    try:
        new = passphrase(env=NEW_PASSPHRASE_ENV)
    except KeyFileError as exc:
        if "got none" not in exc.message:  # given but unusable (too short): say so
            raise
        new = old
    r = do_rekey(file, old, new, purpose=purpose)
    if json_out:
        emit_json({"file": str(r.path), "purpose": r.purpose, "was": r.was, "new_passphrase": new != old})
    else:
        console.print(f"re-encrypted {r.path} ({r.purpose}; was {r.was}){' under a new passphrase' if new != old else ''}")
