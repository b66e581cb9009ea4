"""The federation directory: built from a TOML spec, signed by the authority, verified by nodes.

The directory is a DSSE envelope over a serialised :class:`hedui.v1.directory_pb2.Directory`.
Nodes verify the authority's signature over the exact bytes, then parse, then refuse an
expired directory or one older than the newest version they have accepted.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from hedui.common import clock
from hedui.common.clock import DEFAULT_ZONE
from hedui.common.errors import ConfigError, Reason, VerificationError
from hedui.common.toml import load_toml
from hedui.keys import dsse
from hedui.keys.ca import cert_fingerprint, load_cert
from hedui.keys.errors import DirectoryError, DirectorySpecError
from hedui.keys.signing import SigningKey, VerifyingKey, load_public
from hedui.v1 import common_pb2, directory_pb2

__all__ = ["DirectorySpec", "build", "sign_directory", "TrustedDirectory",
    "directory_digest", "load_directory", "PURPOSES", "ROLES", "MAX_BATCH",
    "ROLE_ANSWERS", "ROLE_CHECKPOINTS", "ROLE_COSIGNATURES", "ROLE_FIELDS", "role_key_of",
    "MIN_VALIDITY_FACTOR", "validity_warning", "unverified_validity", "unverified_version"]

#: A directory should stay valid at least this many refresh intervals (issue 17 item 1), so a
#: node that misses a pull or two, or a source that is down for a while, does not stop the
#: federation: X-Road's global configuration is pulled every 60 s and valid 600 s (10x).
MIN_VALIDITY_FACTOR = 3


def validity_warning(validity: dt.timedelta, refresh_seconds: int) -> str | None:
    """A one-line warning when ``validity`` (expires_at - issued_at) is not at least
    :data:`MIN_VALIDITY_FACTOR` times the nodes' refresh interval; None when it is."""
    if refresh_seconds <= 0 or validity.total_seconds() >= MIN_VALIDITY_FACTOR * refresh_seconds:
        return None
    return (f"directory validity {validity.total_seconds():g} s is less than {MIN_VALIDITY_FACTOR}x the refresh "
            f"interval {refresh_seconds} s: a node missing one or two pulls would find it expired and refuse "
            f"every call (X-Road: valid 600 s, refreshed every 60 s); raise valid_days/valid_seconds or refresh more often")


def unverified_version(envelope_json: bytes) -> int | None:
    """The version of a signed directory file, read WITHOUT checking its signature: only for
    the authority's generator to sign the next one above it (``hedui directory publish``)."""
    try:
        return int(directory_pb2.Directory.FromString(dsse.from_json(envelope_json).payload).version)
    except Exception:  # not a readable directory: start from the spec's version
        return None


def unverified_validity(envelope_json: bytes) -> dt.timedelta | None:
    """expires_at - issued_at of a signed directory file, read WITHOUT checking its signature:
    for the publishing tool's warning only (``hedui directory serve``), never for trust. None
    when the file is not a readable directory."""
    try:
        env = dsse.from_json(envelope_json)
        msg = directory_pb2.Directory.FromString(env.payload)
    except Exception:  # any malformation: no warning to give; nodes refuse it on their side
        return None
    if not msg.HasField("issued_at") or not msg.HasField("expires_at"):
        return None
    return msg.expires_at.ToDatetime() - msg.issued_at.ToDatetime()

PURPOSES = {
    "dibao": common_pb2.PURPOSE_DIBAO,
    "tekun": common_pb2.PURPOSE_TEKUN,
    "temporary_assistance": common_pb2.PURPOSE_TEMPORARY_ASSISTANCE,
    "periodic_review": common_pb2.PURPOSE_PERIODIC_REVIEW,
    "bulk_cross_check": common_pb2.PURPOSE_BULK_CROSS_CHECK,
    "active_discovery": common_pb2.PURPOSE_ACTIVE_DISCOVERY,
}
PURPOSE_NAMES = {v: k for k, v in PURPOSES.items()}
ROLES = {"provider": directory_pb2.ROLE_PROVIDER, "hub": directory_pb2.ROLE_HUB}
FIELD_TYPES = {
    "money": directory_pb2.FIELD_TYPE_MONEY,
    "integer": directory_pb2.FIELD_TYPE_INTEGER,
    "decimal": directory_pb2.FIELD_TYPE_DECIMAL,
    "boolean": directory_pb2.FIELD_TYPE_BOOLEAN,
    "code": directory_pb2.FIELD_TYPE_CODE,
}


#: The largest batch (tokens per Lookup, elements per Evaluate) any rule may allow.
MAX_BATCH = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OprfKeySpec(_Strict):
    epoch: int = Field(ge=1)
    public_key_hex: str


class FieldSpecModel(_Strict):
    name: str
    type: str
    unit: str = ""
    description: str = ""


class MemberSpec(_Strict):
    code: str = Field(pattern=r"^[a-z][a-z0-9-]{1,62}$")
    name: str
    endpoint: str
    cert: Path
    signing_key: Path
    roles: list[str]
    region: str = ""
    #: Per-role public keys (PEM; issue 18). Unset: ``signing_key`` serves the role.
    answer_key: Path | None = None
    checkpoint_key: Path | None = None
    cosign_key: Path | None = None
    sealing_key_hex: str = ""
    oprf_keys: list[OprfKeySpec] = []
    fields: list[FieldSpecModel] = []
    #: Down for maintenance: peers skip it until a directory without the flag (issue 17).
    maintenance: bool = False
    #: Renewed certificates accepted alongside ``cert`` during the overlap (`hedui keys renew`).
    renewed_certs: list[Path] = []
    #: Further host:port endpoints of replicas of the member's node sharing its store (issue
    #: 16); callers balance over ``endpoint`` and these. Each presents ``cert``.
    replica_endpoints: list[str] = Field(default=[], max_length=64)

    @field_validator("replica_endpoints")
    @classmethod
    def _replicas(cls, v: list[str]) -> list[str]:
        for e in v:
            host, sep, port = e.rpartition(":")
            if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"got {e[:80]!r}, want host:port")
        if len(set(v)) != len(v):
            raise ValueError("got an endpoint twice, want each replica once")
        return v


class RuleSpec(_Strict):
    caller: str
    provider: str = "*"
    method: str
    purposes: list[str]
    fields: list[str] = []
    per_minute: int = Field(default=0, ge=0)
    per_day: int = Field(default=0, ge=0)
    # The one batch limit (hedui.node.policy.MAX_BATCH; issue 13): a directory cannot allow a
    # batch that the providers' audit logs and tests are not sized for.
    max_batch: int = Field(default=0, ge=0, le=MAX_BATCH)


class DirectorySpec(_Strict):
    federation: str
    version: int = Field(ge=1)
    valid_days: int = Field(default=30, ge=1, le=3660)
    #: X-Road-style short validity (issue 17): when set, the directory is valid this many
    #: seconds instead of valid_days, and the authority re-signs it well before (e.g. 600 s,
    #: re-signed every 60 s by a timer).
    valid_seconds: int | None = Field(default=None, ge=60, le=3660 * 86400)
    #: The pull interval the federation's nodes use ([directory] refresh_seconds): signing
    #: warns when the validity is not MIN_VALIDITY_FACTOR times this.
    refresh_seconds: int = Field(default=60, ge=1, le=86400)
    ca_cert: Path
    #: The federation's IANA time zone: every local date (income windows, report months,
    #: deadlines, what a person reads) is a date there (DESIGN.md "Time", docs/time.md).
    time_zone: str = DEFAULT_ZONE
    members: list[MemberSpec]
    policy: list[RuleSpec] = []

    @field_validator("time_zone")
    @classmethod
    def _an_iana_zone(cls, v: str) -> str:
        try:
            clock.zone(v or DEFAULT_ZONE)
        except clock.ClockError:
            raise ValueError(f"got {v[:64]!r}, want an IANA zone such as {DEFAULT_ZONE}") from None
        return v or DEFAULT_ZONE

    @property
    def validity(self) -> dt.timedelta:
        """How long a directory signed from this spec stays valid."""
        return dt.timedelta(seconds=self.valid_seconds) if self.valid_seconds else dt.timedelta(days=self.valid_days)

    @classmethod
    def load(cls, path: Path) -> DirectorySpec:
        spec = load_toml(path, cls, what="a directory spec", error=DirectorySpecError)
        return spec._resolved(Path(path).parent)

    def _resolved(self, base: Path) -> DirectorySpec:
        def r(p: Path) -> Path:
            return p if p.is_absolute() else base / p

        members = [m.model_copy(update={"cert": r(m.cert), "signing_key": r(m.signing_key),
                                         "renewed_certs": [r(c) for c in m.renewed_certs],
                                         **{k: r(getattr(m, k)) for k in ROLE_FIELDS.values() if getattr(m, k) is not None}})
                   for m in self.members]
        return self.model_copy(update={"ca_cert": r(self.ca_cert), "members": members})


#: Signing roles (issue 18) and the Member field publishing each role's key.
ROLE_ANSWERS, ROLE_CHECKPOINTS, ROLE_COSIGNATURES = "answers", "checkpoints", "cosignatures"
ROLE_FIELDS = {ROLE_ANSWERS: "answer_key", ROLE_CHECKPOINTS: "checkpoint_key", ROLE_COSIGNATURES: "cosign_key"}


def role_key_of(m: directory_pb2.Member, role: str) -> bytes:
    """The raw public key ``m`` signs ``role``'s messages with: the role's own key when the
    directory publishes one, else ``signing_key`` (single-key members)."""
    own = bytes(getattr(m, ROLE_FIELDS[role]))
    return own or bytes(m.signing_key)


def _ts(t: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(t.astimezone(dt.UTC))
    return ts


def build(spec: DirectorySpec, *, now: dt.datetime) -> directory_pb2.Directory:
    """Turns a spec into a Directory message, checking every reference on the way; ``now`` is
    when the authority signs it (its issued_at; certificates must be valid then)."""
    ca = load_cert(spec.ca_cert)
    from hedui.keys.ca import check_issued_by

    d = directory_pb2.Directory(
        federation=spec.federation,
        version=spec.version,
        issued_at=_ts(now),
        expires_at=_ts(now + spec.validity),
        ca_fingerprint=cert_fingerprint(ca),
        time_zone=spec.time_zone,
    )
    codes: set[str] = set()
    for m in spec.members:
        if m.code in codes:
            raise DirectorySpecError(f"members.code: got {m.code!r} twice, want unique codes")
        codes.add(m.code)
        cert = load_cert(m.cert)
        check_issued_by(cert, ca, now=now)
        from hedui.keys.ca import member_of_cert

        if member_of_cert(cert) != m.code:
            raise DirectorySpecError(f"members[{m.code}].cert: got CN {member_of_cert(cert)!r}, want {m.code!r}")
        pm = d.members.add(
            code=m.code, name=m.name, endpoint=m.endpoint, tls_cert_sha256=cert_fingerprint(cert),
            signing_key=load_public(m.code, m.signing_key).raw, region=m.region, maintenance=m.maintenance,
        )
        if m.endpoint in m.replica_endpoints:
            raise DirectorySpecError(f"members[{m.code}].replica_endpoints: got its endpoint {m.endpoint!r}, want further ones")
        pm.replica_endpoints.extend(m.replica_endpoints)
        for field_name in ROLE_FIELDS.values():
            if getattr(m, field_name) is not None:
                setattr(pm, field_name, load_public(m.code, getattr(m, field_name)).raw)
        for i, renewed in enumerate(m.renewed_certs):
            rc = load_cert(renewed)
            check_issued_by(rc, ca, now=now)
            if member_of_cert(rc) != m.code:
                raise DirectorySpecError(f"members[{m.code}].renewed_certs[{i}]: got CN {member_of_cert(rc)!r}, want {m.code!r}")
            pm.renewed_tls_cert_sha256.append(cert_fingerprint(rc))
        for role in m.roles:
            if role not in ROLES:
                raise DirectorySpecError(f"members[{m.code}].roles: got {role!r}, want one of {sorted(ROLES)}")
            pm.roles.append(ROLES[role])
        if m.sealing_key_hex:
            pm.sealing_key = bytes.fromhex(m.sealing_key_hex)
        for k in m.oprf_keys:
            pm.oprf_keys.add(epoch=k.epoch, public_key=bytes.fromhex(k.public_key_hex))
        for f in m.fields:
            if f.type not in FIELD_TYPES:
                raise DirectorySpecError(f"members[{m.code}].fields[{f.name}].type: got {f.type!r}, want one of {sorted(FIELD_TYPES)}")
            pm.fields.add(name=f.name, type=FIELD_TYPES[f.type], unit=f.unit, description=f.description)
    for i, rule in enumerate(spec.policy):
        if rule.caller not in codes:
            raise DirectorySpecError(f"policy[{i}].caller: got {rule.caller!r}, want a member code")
        if rule.provider != "*" and rule.provider not in codes:
            raise DirectorySpecError(f"policy[{i}].provider: got {rule.provider!r}, want a member code or '*'")
        pr = d.policy.add(
            caller=rule.caller, provider=rule.provider, method=rule.method, fields=rule.fields,
            per_minute=rule.per_minute, per_day=rule.per_day, max_batch=rule.max_batch,
        )
        for p in rule.purposes:
            if p not in PURPOSES:
                raise DirectorySpecError(f"policy[{i}].purposes: got {p!r}, want one of {sorted(PURPOSES)}")
            pr.purposes.append(PURPOSES[p])
    return d


def sign_directory(d: directory_pb2.Directory, authority: SigningKey) -> common_pb2.Envelope:
    # Serialise once; these exact bytes are what is signed and what nodes verify.
    return dsse.sign(dsse.DIRECTORY, d.SerializeToString(deterministic=True), [authority])


@dataclass
class TrustedDirectory:
    """A verified directory with the look-ups nodes need."""

    envelope: common_pb2.Envelope
    msg: directory_pb2.Directory
    by_code: dict[str, directory_pb2.Member] = field(default_factory=dict)
    by_cert: dict[bytes, directory_pb2.Member] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for m in self.msg.members:
            self.by_code[m.code] = m
            self.by_cert[bytes(m.tls_cert_sha256)] = m
            for fp in m.renewed_tls_cert_sha256:
                self.by_cert[bytes(fp)] = m
        # Parsed once per directory (it never changes; a new version is a new object): the
        # hot path verifies every answer and notice with these (issue 16).
        # Cached per role (issue 18): each role's key, or signing_key where none is published.
        self._keys = {role: {m.code: VerifyingKey(m.code, role_key_of(m, role)) for m in self.msg.members}
                      for role in ROLE_FIELDS}
        self._by_keyid = {role: {vk.keyid: vk for vk in keys.values()} for role, keys in self._keys.items()}
        # The policy indexed once per directory version (issue 16 item 3): every call asked
        # for its rules by scanning the whole list; (caller, method) -> rules in list order.
        self._rules: dict[tuple[str, str], list[directory_pb2.AccessRule]] = {}
        for r in self.msg.policy:
            self._rules.setdefault((r.caller, r.method), []).append(r)
        self._expires_at = self.msg.expires_at.ToDatetime(tzinfo=dt.UTC)
        self._keys_of: dict[tuple[str, str], dict[str, VerifyingKey]] = {}

    def cert_fingerprints(self, code: str) -> set[bytes]:
        """Every certificate fingerprint member ``code`` may present (current and renewed)."""
        m = self.member(code)
        return {bytes(m.tls_cert_sha256), *(bytes(f) for f in m.renewed_tls_cert_sha256)}

    @property
    def version(self) -> int:
        return self.msg.version

    @property
    def zone(self) -> ZoneInfo:
        """The federation zone the directory names (empty: Asia/Shanghai)."""
        try:
            return clock.zone(self.msg.time_zone)
        except clock.ClockError as exc:
            raise DirectoryError(f"directory v{self.version}: {exc.message}", reason=Reason.BAD_DIRECTORY) from None

    @property
    def expires_at(self) -> dt.datetime:
        return self._expires_at   # read by the serving guard on every call (node/guard.py)

    def member(self, code: str) -> directory_pb2.Member:
        try:
            return self.by_code[code]
        except KeyError:
            raise ConfigError(f"member: got {code!r}, want a member of directory v{self.version}") from None

    def signing_keys(self, role: str = ROLE_ANSWERS) -> dict[str, VerifyingKey]:
        """Every member's key for ``role`` (answers, notices, receipts and consent records by
        default), by key id: a key published for another role is not in it (issue 18)."""
        return dict(self._by_keyid[role])

    def verifying_key(self, code: str, role: str = ROLE_ANSWERS) -> VerifyingKey:
        self.member(code)   # the error for a code that is not a member
        return self._keys[role][code]

    def members_with(self, role: int) -> list[directory_pb2.Member]:
        return [m for m in self.msg.members if role in m.roles]

    def signing_keys_of(self, owner: str, role: str = ROLE_ANSWERS) -> dict[str, VerifyingKey]:
        """:meth:`signing_keys` of one member only (what a check of that member's signature
        takes), built once per directory: every Lookup verifies its caller's consent record."""
        got = self._keys_of.get((owner, role))
        if got is None:
            got = {k: v for k, v in self._by_keyid[role].items() if v.owner == owner}
            self._keys_of[(owner, role)] = got
        return dict(got)

    def rules(self, caller: str, provider: str, method: str) -> list[directory_pb2.AccessRule]:
        return [r for r in self._rules.get((caller, method), ()) if r.provider in ("*", provider)]


def directory_digest(td: TrustedDirectory) -> bytes:
    """SHA-256 of the signed payload: what "the content of directory vN" means."""
    return hashlib.sha256(td.envelope.payload).digest()


def verify_directory(
    env: common_pb2.Envelope,
    authority: VerifyingKey,
    *,
    min_version: int = 0,
    accepted_digest: bytes | None = None,
    now: dt.datetime,
) -> TrustedDirectory:
    """Verifies, parses and checks a signed directory. ``min_version`` and ``accepted_digest``
    describe the newest one already accepted: an older version is a rollback, and the same
    version with other content is refused too — two directories under one version number
    mean the authority's key signed two views of the federation (a split view, as
    Certificate Transparency's gossip and TUF's snapshot rules guard against; issue 18)."""
    payload, _ = dsse.verify(env, {authority.keyid: authority}, payload_type=dsse.DIRECTORY)
    try:
        msg = directory_pb2.Directory.FromString(payload)
    except DecodeError:
        raise DirectoryError("directory: signed payload is not a Directory", reason=Reason.BAD_DIRECTORY) from None
    td = TrustedDirectory(env, msg)
    if td.expires_at <= now:
        raise DirectoryError(
            f"directory v{msg.version}: expired at {td.expires_at:%Y-%m-%dT%H:%M:%SZ}, want a current one",
            reason=Reason.DIRECTORY_EXPIRED,
        )
    if msg.version < min_version:
        raise DirectoryError(
            f"directory version: got {msg.version}, want >= {min_version} (already accepted)",
            reason=Reason.DIRECTORY_ROLLBACK,
        )
    if msg.version == min_version and accepted_digest and directory_digest(td) != accepted_digest:
        raise DirectoryError(
            f"directory v{msg.version}: got content with digest {directory_digest(td).hex()[:16]}…, want the "
            f"v{msg.version} already accepted ({accepted_digest.hex()[:16]}…): possible split view",
            reason=Reason.DIRECTORY_SPLIT_VIEW,
        )
    return td


def load_directory(
    path: Path, authority: VerifyingKey, *, now: dt.datetime, min_version: int = 0, accepted_digest: bytes | None = None
) -> TrustedDirectory:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"directory {path}: {exc.strerror}") from None
    try:
        return verify_directory(dsse.from_json(text), authority, min_version=min_version, accepted_digest=accepted_digest, now=now)
    except VerificationError as exc:
        raise ConfigError(f"directory {path}: {exc.message}", reason=exc.reason) from None


