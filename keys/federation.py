"""Federation files on disk and the operations the authority and members perform on them.

Layout (the authority's folder and each member's folder may live on different machines)::

    authority/ca.crt  ca.key (encrypted)  signing.key (encrypted)  signing.pub
    members/<code>/tls.key (encrypted)  tls.csr  tls.crt  signing.key (encrypted)  signing.pub

The authority's two private keys are separate files under separate passphrases (issue 18):
``ca.key`` (purpose ``ca-key``; issues member certificates) and ``signing.key`` (purpose
``directory-signing-key``; signs the directory). Either may be moved elsewhere
(:class:`AuthorityDir` takes its path), e.g. the CA key offline and the directory key on the
publishing host.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from hedui.common.errors import ConfigError, VerificationError
from hedui.keys import ca as _ca
from hedui.keys import dsse
from hedui.keys.directory import (
    ROLE_ANSWERS,
    ROLE_CHECKPOINTS,
    ROLE_COSIGNATURES,
    ROLE_FIELDS,
    DirectorySpec,
    build,
    sign_directory,
    validity_warning,
)
from hedui.keys.errors import DirectorySpecError, KeyFileError
from hedui.keys.keyfile import (
    PURPOSE_ANSWER_SIGNING,
    PURPOSE_CHECKPOINT_SIGNING,
    PURPOSE_COSIGNING,
    PURPOSE_DIRECTORY,
    PURPOSE_TLS,
    load_private_key,
    save_private_key,
    write_private,
)
from hedui.keys.signing import SigningKey

__all__ = ["AuthorityDir", "MemberDir", "RoleKeys", "ROLE_FILES", "init_authority", "init_member", "init_role_keys", "issue_cert", "sign_directory_file"]


@dataclass(frozen=True)
class AuthorityDir:
    root: Path
    #: Where the directory-signing key lives if not ``root/signing.key``.
    signing_key_path: Path | None = None

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def signing_key(self) -> Path:
        return self.signing_key_path or self.root / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.root / "signing.pub"


@dataclass(frozen=True)
class MemberDir:
    root: Path

    tls_key = property(lambda self: self.root / "tls.key")
    tls_csr = property(lambda self: self.root / "tls.csr")
    tls_cert = property(lambda self: self.root / "tls.crt")
    signing_key = property(lambda self: self.root / "signing.key")
    signing_pub = property(lambda self: self.root / "signing.pub")


def _refuse_overwrite(*paths: Path) -> None:
    for p in paths:
        if p.exists():
            raise KeyFileError(f"{p}: already exists; refusing to overwrite a key (move it away first)")


def init_authority(
    root: Path, name: str, ca_pw: bytes, directory_pw: bytes, *, now: dt.datetime, signing_key: Path | None = None
) -> AuthorityDir:
    """Creates the CA (``ca_pw``) and the directory-signing key (``directory_pw``): two keys,
    two passphrases, so whoever publishes directories cannot issue certificates and back."""
    if ca_pw == directory_pw:
        raise KeyFileError("directory passphrase: got the CA passphrase again, want a different one")
    a = AuthorityDir(Path(root), Path(signing_key) if signing_key else None)
    _refuse_overwrite(a.ca_cert, a.ca_key, a.signing_key)
    a.root.mkdir(parents=True, exist_ok=True)
    _ca.create_authority(name, a.ca_cert, a.ca_key, ca_pw, now=now)
    sk = SigningKey.generate("authority")
    sk.save(a.signing_key, directory_pw, purpose=PURPOSE_DIRECTORY)
    sk.save_public(a.signing_pub)
    return a


def init_member(root: Path, member: str, host: str, pw: bytes) -> MemberDir:
    """Member side: TLS key + CSR and the Ed25519 signing key. Private keys never leave."""
    m = MemberDir(Path(root))
    _refuse_overwrite(m.tls_key, m.signing_key)
    m.root.mkdir(parents=True, exist_ok=True)
    key = _ca.new_tls_key()
    save_private_key(m.tls_key, key, pw, purpose=PURPOSE_TLS)
    csr = _ca.make_csr(member, host, key)
    m.tls_csr.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
    sk = SigningKey.generate(member)
    sk.save(m.signing_key, pw)
    sk.save_public(m.signing_pub)
    return m


#: Per-role key files (issue 18): role -> (file stem, key-file purpose, directory spec
#: field, node.toml ``[keys]`` option). The same names as docs/federation.md's table.
ROLE_FILES = {
    ROLE_ANSWERS: ("answer-signing", PURPOSE_ANSWER_SIGNING, ROLE_FIELDS[ROLE_ANSWERS], "answer_signing"),
    ROLE_CHECKPOINTS: ("checkpoint-signing", PURPOSE_CHECKPOINT_SIGNING, ROLE_FIELDS[ROLE_CHECKPOINTS], "checkpoint_signing"),
    ROLE_COSIGNATURES: ("cosign-signing", PURPOSE_COSIGNING, ROLE_FIELDS[ROLE_COSIGNATURES], "cosign_signing"),
}


@dataclass(frozen=True)
class RoleKeys:
    """What :func:`init_role_keys` wrote: per role, the private and public key files; and the
    request file for the authority (the member entry's ``*_key`` lines)."""

    keys: dict[str, tuple[Path, Path]]
    request: Path

    def spec_lines(self, member: str) -> list[str]:
        return [f'{ROLE_FILES[r][2]} = "members/{member}/{pub.name}"' for r, (_, pub) in self.keys.items()]

    def config_lines(self) -> list[str]:
        return [f'{ROLE_FILES[r][3]} = "{key}"' for r, (key, _) in self.keys.items()]


def init_role_keys(root: Path, member: str, pw: bytes, roles: Collection[str], *, tag: str = "") -> RoleKeys:
    """Member side: one Ed25519 key per signing role in ``roles`` (issue 18: answers and
    receipts, checkpoints, cosignatures), each encrypted under the role's key-file purpose so
    a file of one role does not open as another's. ``tag`` goes into the file names
    (``answer-signing-<tag>.key``) so a rotation writes new keys beside the ones in use. Writes
    ``role-keys-request.toml``: the lines the authority puts in the member's directory entry
    (it copies the ``.pub`` files to ``members/<member>/``). Refuses to overwrite any file."""
    bad = sorted(set(roles) - set(ROLE_FILES))
    if bad or not roles:
        raise KeyFileError(f"role: got {bad[0] if bad else 'none'!r}, want one or more of {', '.join(ROLE_FILES)}")
    if tag and not all(ch.isalnum() or ch in "-_." for ch in tag):
        raise KeyFileError(f"tag: got {tag[:32]!r}, want letters, digits, '-', '_' or '.' (it becomes part of a file name)")
    root = Path(root)
    suffix = f"-{tag}" if tag else ""
    files = {r: (root / f"{ROLE_FILES[r][0]}{suffix}.key", root / f"{ROLE_FILES[r][0]}{suffix}.pub") for r in ROLE_FILES if r in roles}
    request = root / f"role-keys-request{suffix}.toml"
    _refuse_overwrite(request, *[p for pair in files.values() for p in pair])
    root.mkdir(parents=True, exist_ok=True)
    for role, (key, pub) in files.items():
        sk = SigningKey.generate(member)
        sk.save(key, pw, purpose=ROLE_FILES[role][1])
        sk.save_public(pub)
    out = RoleKeys(files, request)
    request.write_text(
        f"# Per-role signing keys of {member} (issue 18): send this file and the .pub files to the\n"
        f"# authority, which copies them to members/{member}/ and adds these lines to the member's\n"
        "# [[members]] entry of the directory spec, then signs a new directory version.\n"
        + "".join(line + "\n" for line in out.spec_lines(member)),
        encoding="utf-8",
    )
    return out


def renew_cert(authority: AuthorityDir, csr_path: Path, current: Path, out: Path, pw: bytes, *,
               now: dt.datetime, approved: Collection[str] | None = None) -> x509.Certificate:
    """Authority side of a renewal (issue 17): a new certificate for the member whose current
    certificate is ``current``, from its CSR (a new key, or the same one), issued while the
    current one is still valid so the directory can list both during the overlap."""
    cur = _ca.load_cert(current)
    if cur.not_valid_after_utc <= now:
        raise ConfigError(f"current {current}: expired at {cur.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}, want a certificate "
                          "still valid (after expiry: `hedui keys issue` and re-sign the directory)")
    try:
        csr = x509.load_pem_x509_csr(Path(csr_path).read_bytes())
    except (OSError, ValueError):
        raise ConfigError(f"csr {csr_path}: got an unreadable file, want a certificate signing request") from None
    cn = [a.value for a in csr.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    if cn != [_ca.member_of_cert(cur)]:
        raise ConfigError(f"csr {csr_path}: CN: got {cn[0] if cn else None!r}, want {_ca.member_of_cert(cur)!r} "
                          f"(the member of {current})")
    return issue_cert(authority, csr_path, out, pw, now=now, approved=approved)


def issue_cert(authority: AuthorityDir, csr_path: Path, out: Path, pw: bytes, *, now: dt.datetime,
               approved: Collection[str] | None = None) -> x509.Certificate:
    """Authority side: checks the CSR and issues the member certificate; ``approved``: the
    only subjectAltNames the authority allows (:func:`hedui.keys.ca.issue`)."""
    auth = _ca.Authority.load(authority.ca_cert, authority.ca_key, pw)
    try:
        csr = x509.load_pem_x509_csr(Path(csr_path).read_bytes())
    except OSError as exc:
        raise ConfigError(f"csr {csr_path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"csr {csr_path}: got unreadable PEM, want a certificate signing request") from None
    try:
        cert = _ca.issue(auth, csr, now=now, approved=approved)
    except VerificationError as exc:
        raise ConfigError(f"csr {csr_path}: {exc.message}", reason=exc.reason) from None
    Path(out).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert


def sign_directory_file(authority: AuthorityDir, spec_path: Path, out: Path, pw: bytes, *, now: dt.datetime,
                        time_zone: str | None = None, warn: Callable[[str], None] | None = None,
                        version: int | None = None, interval: int = 0) -> int:
    """Builds, signs and writes the directory; returns its version. ``time_zone`` (an IANA
    zone) replaces the spec's ``time_zone`` (default Asia/Shanghai). ``warn`` receives a
    warning when the validity is too short for the nodes' refresh interval, or for the
    re-signing ``interval`` of a generator (issue 17). ``version`` replaces the spec's."""
    spec = DirectorySpec.load(spec_path)
    if version is not None:
        spec = spec.model_copy(update={"version": version})
    if time_zone is not None:
        from hedui.common.clock import DEFAULT_ZONE, ClockError, zone

        try:
            zone(time_zone)
        except ClockError:
            raise DirectorySpecError(f"time_zone: got {time_zone[:64]!r}, want an IANA zone such as {DEFAULT_ZONE}") from None
        spec = spec.model_copy(update={"time_zone": time_zone})
    try:
        d = build(spec, now=now)
    except VerificationError as exc:
        raise ConfigError(f"directory spec {spec_path}: {exc.message}", reason=exc.reason) from None
    sk = SigningKey.load("authority", authority.signing_key, pw, purpose=PURPOSE_DIRECTORY)
    env = sign_directory(d, sk)
    write_private(Path(out), dsse.to_json(env).encode())
    Path(out).chmod(0o644)
    problem = validity_warning(spec.validity, max(spec.refresh_seconds, interval))
    if problem is not None and warn is not None:
        warn(problem)
    return d.version


def load_tls_key_pem(path: Path, pw: bytes) -> bytes:
    key = load_private_key(path, pw, purpose=PURPOSE_TLS)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
