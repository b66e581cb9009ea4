"""Everything a running node holds: config, keys, the trusted directory, store, audit log,
metrics, its clients to peers, and what each of its roles needs.

Built once at start by :meth:`Runtime.open`, explicitly and typed (no service locator): the
role slots :attr:`Runtime.provider` (OPRF keys and field catalogue, for lookups),
:attr:`Runtime.notices` (detection and the outbox) and :attr:`Runtime.hub` (verification
rules, the discovery workflow and the sealing key) are ``None`` for a role the node does not
play. Every problem found here is a :class:`~hedui.node.errors.ConfigError` with a one-line
message, so ``hedui node serve`` refuses to start instead of serving with a bad directory or key.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from hedui.common.clock import Clock, SystemClock
from hedui.keys import dsse
from hedui.keys.ca import cert_fingerprint, cert_pem, check_issued_by, key_pem, load_cert, load_tls_key, member_of_cert
from hedui.keys.directory import ROLE_ANSWERS, ROLE_CHECKPOINTS, ROLE_COSIGNATURES, TrustedDirectory, directory_digest, load_directory, role_key_of
from hedui.keys.errors import DirectoryError
from hedui.keys.keyfile import PURPOSE_ANSWER_SIGNING, PURPOSE_CHECKPOINT_SIGNING, PURPOSE_COSIGNING, passphrase
from hedui.keys.sealing import SealingKey
from hedui.keys.signing import SigningKey, load_public
from hedui.node.admission import Admission
from hedui.node.audit.entry import Kind
from hedui.node.audit.recorder import NodeAudit, open_audit
from hedui.node.client import Peers, channel_credentials
from hedui.node.config import NodeConfig, load_config
from hedui.node.discovery.hub import Hub, load_hub, load_sealing_key
from hedui.node.discovery.provider import ProviderNotices
from hedui.node.errors import ConfigError, Reason, VerificationError
from hedui.node.guard import ServingGuard
from hedui.node.metrics import Metrics
from hedui.node.refusals import Refusals
from hedui.node.store import migrate
from hedui.node.store.db import open_engine
from hedui.node.store.tables import node_state
from hedui.node.verification.provider import ProviderState, load_provider
from hedui.node.verification.rules import Rules, load_rules
from hedui.v1 import directory_pb2

__all__ = ["Runtime", "HubState"]

log = logging.getLogger("hedui.node")


@dataclass(frozen=True)
class HubState:
    """What a hub node holds for its role: the verification rules its reports apply, and for
    active discovery the workflow over its store and its private sealing key (``None`` when
    ``[hub] routing`` / ``sealing_key`` are not configured: then the node does not serve
    ``NoticeService``)."""

    rules: Rules
    discovery: Hub | None
    sealing_key: SealingKey | None


@dataclass(eq=False)
class Runtime:
    config: NodeConfig
    member: str
    signer: SigningKey
    directory: TrustedDirectory
    engine: Engine
    tls_cert_pem: bytes
    tls_key_pem: bytes
    ca_pem: bytes
    passphrase: bytes
    #: The one source of the time for everything the node does (hedui.common.clock).
    clock: Clock
    metrics: Metrics = field(default_factory=Metrics)
    #: Per-role signing keys (issue 18): role -> key; a role not here is signed by ``signer``.
    role_signers: dict[str, SigningKey] = field(default_factory=dict)
    #: The PostgreSQL streaming replica lookups read the token index from (``[store]
    #: read_database_url``, issue 16); None: they read ``engine``. Everything that writes, or
    #: must see this node's own writes (quota, replay cache, audit log), uses ``engine``.
    read_engine: Engine | None = None
    # Built in from_config, in this order (each needs the ones before it).
    peers: Peers = field(init=False)
    audit: NodeAudit = field(init=False)
    provider: ProviderState | None = field(init=False, default=None)
    notices: ProviderNotices | None = field(init=False, default=None)
    hub: HubState | None = field(init=False, default=None)
    #: Node-wide gates checked on every call (node/rpc.py): directory state, call slots,
    #: and the aggregated refusals they and the transport produce.
    guard: ServingGuard = field(init=False)
    admission: Admission = field(init=False)
    refusals: Refusals = field(init=False)

    def signer_for(self, role: str) -> SigningKey:
        """The key that signs ``role``'s messages (keys.directory ROLE_*)."""
        return self.role_signers.get(role, self.signer)

    @classmethod
    def open(cls, config_path: Path, *, run_migrations: bool = True, clock: Clock | None = None) -> Runtime:
        cfg = load_config(config_path)
        return cls.from_config(cfg, run_migrations=run_migrations, clock=clock)

    @classmethod
    def from_config(cls, cfg: NodeConfig, *, run_migrations: bool = True, clock: Clock | None = None) -> Runtime:
        """``clock``: what the node reads the time from (DESIGN.md "Time"); by default the wall
        clock in the zone the signed directory names. Tests and ``--as-of`` pass a FixedClock."""
        wall = clock if clock is not None else SystemClock()

        pw = passphrase(env=cfg.keys.passphrase_env)
        member = cfg.node.member
        ca = load_cert(cfg.path(cfg.tls.ca))
        cert = load_cert(cfg.path(cfg.tls.cert))
        try:
            check_issued_by(cert, ca, now=wall.now())
        except VerificationError as exc:
            raise ConfigError(f"tls.cert: {exc.message}", reason=exc.reason) from None
        if member_of_cert(cert) != member:
            raise ConfigError(f"tls.cert: got CN {member_of_cert(cert)!r}, want node.member {member!r}")
        legacy_ok = cfg.keys.allow_legacy
        tls_key = load_tls_key(cfg.path(cfg.tls.key), pw, allow_legacy=legacy_ok)
        if tls_key.public_key() != cert.public_key():
            raise ConfigError("tls.key: does not match tls.cert")
        signer = SigningKey.load(member, cfg.path(cfg.keys.signing), pw, allow_legacy=legacy_ok)
        authority = load_public("authority", cfg.path(cfg.directory.authority_key))
        anchor = cfg.directory.trust_anchor
        if anchor is not None and hashlib.sha256(authority.raw).hexdigest() != anchor:
            # The trust anchor is delivered out of band (issue 17): a swapped authority key file
            # must not let another key's directories in.
            raise ConfigError(f"directory.authority_key: fingerprint {hashlib.sha256(authority.raw).hexdigest()[:16]}…, "
                              f"want the trust anchor {anchor[:16]}…", reason=Reason.BAD_DIRECTORY)

        engine = open_engine(cfg.store_url())
        try:
            if run_migrations:
                migrate.upgrade(engine, index_partitions=cfg.store.index_partitions)
            min_version = _state_int(engine, "directory_version")
            accepted = _state(engine, "directory_digest")
        except ConfigError:
            raise
        except Exception as exc:  # a store that is down or not ours
            engine.dispose()
            raise ConfigError(f"store.url: cannot open the store ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        try:
            directory = load_directory(
                cfg.path(cfg.directory.path), authority, min_version=min_version, now=wall.now(),
                accepted_digest=bytes.fromhex(accepted) if accepted else None,
            )
        except ConfigError as exc:
            if exc.reason == Reason.DIRECTORY_SPLIT_VIEW:
                _remember_split_view(engine, cfg.path(cfg.directory.path), min_version, accepted or "", wall)
            engine.dispose()
            raise
        if clock is None:
            try:
                clock = SystemClock(directory.zone)
            except DirectoryError as exc:
                engine.dispose()
                raise ConfigError(exc.message, reason=exc.reason) from None
        me = directory.by_code.get(member)
        if me is None:
            raise ConfigError(f"node.member: got {member!r}, not in directory v{directory.version}")
        if cert_fingerprint(cert) not in directory.cert_fingerprints(member):
            raise ConfigError(f"tls.cert: fingerprint differs from directory v{directory.version} entry for {member!r}")
        if bytes(me.signing_key) != signer.public.raw:
            raise ConfigError(f"keys.signing: public key differs from directory v{directory.version} entry for {member!r}")
        role_signers = _role_signers(cfg, member, me, signer, pw, legacy_ok, directory.version)
        if cert_fingerprint(ca) != bytes(directory.msg.ca_fingerprint):
            raise ConfigError("tls.ca: differs from the CA named in the directory")
        _set_state(engine, "directory_version", str(directory.version))
        _set_state(engine, "directory_digest", directory_digest(directory).hex())
        rt = cls(
            config=cfg,
            member=member,
            signer=signer,
            directory=directory,
            engine=engine,
            tls_cert_pem=cert_pem(cert),
            tls_key_pem=key_pem(tls_key),
            ca_pem=cert_pem(ca),
            passphrase=pw,
            clock=clock,
            role_signers=role_signers,
        )
        read_url = cfg.read_store_url()
        if read_url is not None:
            rt.read_engine = open_engine(read_url)
        rt.peers = Peers(directory, channel_credentials(rt.ca_pem, rt.tls_cert_pem, rt.tls_key_pem), ca_pem=rt.ca_pem,
                         client=(rt.tls_cert_pem, rt.tls_key_pem), metrics=rt.metrics)
        rt.audit = open_audit(rt)
        _audit_split_view(rt)
        rt.guard = ServingGuard(rt)
        n = cfg.node
        rt.admission = Admission.of(n)
        rt.refusals = Refusals(rt)
        from hedui.node.metrics_node import NodeCollector

        rt.metrics.registry.register(NodeCollector(rt))
        try:
            rt._open_roles()
        except BaseException:
            rt.close()
            raise
        return rt

    def _open_roles(self) -> None:
        cfg = self.config
        roles = cfg.node.roles
        p = cfg.provider
        if "provider" in roles and p is not None:
            # Replay-cache entries past their window go at start too, not only with the next answer.
            from hedui.node.policy import prune_replay_cache, replay_window

            with self.engine.begin() as c:
                prune_replay_cache(c, self.clock.now(), replay_window(self))
            # Lookups need an OPRF key and a field catalogue; a department that only pushes
            # notices (fire, traffic police) runs without them.
            if p.oprf_seed is not None:
                self.provider = load_provider(self)
            if p.rules is not None:
                self.notices = ProviderNotices(self)
        h = cfg.hub
        if "hub" in roles and h is not None:
            self.hub = HubState(
                rules=load_rules(cfg.path(h.rules) if h.rules else None),
                discovery=load_hub(cfg, self.engine, self.directory, self.clock, self.passphrase) if h.routing is not None else None,
                sealing_key=load_sealing_key(cfg, self.directory, self.passphrase) if h.sealing_key is not None else None,
            )

    def close(self) -> None:
        if self.notices is not None:
            self.notices.close()
        if getattr(self, "peers", None) is not None:
            self.peers.close()
        if getattr(self, "audit", None) is not None:
            self.audit.close()
        if self.read_engine is not None:
            self.read_engine.dispose()
        self.engine.dispose()


def _remember_split_view(engine: Engine, path: Path, version: int, accepted: str, clock: Clock) -> None:
    """A second directory under an accepted version number: the node refuses to start (the
    caller raises), logs it, and keeps the evidence in ``node_state`` until the audit log is
    open again, where :func:`_audit_split_view` records it."""
    try:
        offered = hashlib.sha256(dsse.from_json(path.read_text(encoding="utf-8")).payload).hexdigest()
    except (OSError, ValueError, VerificationError):
        offered = ""
    log.error(
        "directory v%d at %s differs from the v%d already accepted (%s… vs %s…): possible split view; refused",
        version, path, version, offered[:16], accepted[:16],
    )
    _set_state(engine, "directory_split_view", json.dumps({
        "version": version, "accepted_digest": accepted, "refused_digest": offered, "at": clock.now().isoformat(),
    }))


def _audit_split_view(rt: Runtime) -> None:
    pending = _state(rt.engine, "directory_split_view")
    if not pending:
        return
    seen = json.loads(pending)
    rt.audit.record(Kind.ADMIN, {
        "action": "directory.split_view_refused", "operator": "hedui/node",
        "version": seen["version"], "accepted_digest": seen["accepted_digest"],
        "refused_digest": seen["refused_digest"], "refused_at": seen["at"],
    })
    with rt.engine.begin() as c:
        c.execute(node_state.delete().where(node_state.c.key == "directory_split_view"))


def _state(engine: Engine, key: str) -> str | None:
    with engine.connect() as c:
        v = c.execute(select(node_state.c.value).where(node_state.c.key == key)).scalar()
    return str(v) if v else None


def _state_int(engine: Engine, key: str) -> int:
    with engine.connect() as c:
        v = c.execute(select(node_state.c.value).where(node_state.c.key == key)).scalar()
    return int(v) if v else 0


def _set_state(engine: Engine, key: str, value: str) -> None:
    with engine.begin() as c:
        cur = c.execute(select(node_state.c.value).where(node_state.c.key == key)).scalar()
        if cur is None:
            c.execute(node_state.insert().values(key=key, value=value))
        elif cur != value:
            c.execute(node_state.update().where(node_state.c.key == key).values(value=value))


_ROLE_CONFIG = {ROLE_ANSWERS: ("answer_signing", PURPOSE_ANSWER_SIGNING),
                ROLE_CHECKPOINTS: ("checkpoint_signing", PURPOSE_CHECKPOINT_SIGNING),
                ROLE_COSIGNATURES: ("cosign_signing", PURPOSE_COSIGNING)}


def _role_signers(
    cfg: NodeConfig, member: str, me: directory_pb2.Member, signer: SigningKey, pw: bytes, legacy_ok: bool, version: int,
) -> dict[str, SigningKey]:
    """Loads each configured per-role key (its own key-file purpose) and checks it is the key
    the directory publishes for that role; a role without a key file is signed by ``signer``,
    which the directory must then name for it too (issue 18)."""
    out: dict[str, SigningKey] = {}
    for role, (option, purpose) in _ROLE_CONFIG.items():
        path = getattr(cfg.keys, option)
        key = SigningKey.load(member, cfg.path(path), pw, purpose=purpose, allow_legacy=legacy_ok) if path is not None else signer
        if role_key_of(me, role) != key.public.raw:
            raise ConfigError(f"keys.{option if path is not None else 'signing'}: public key differs from the {role} key "
                              f"directory v{version} publishes for {member!r}")
        if path is not None:
            out[role] = key
    return out
