"""Everything a running node holds: config, keys, the trusted directory, store and audit log.

Built once at start by :meth:`Runtime.open`; every problem found here is a
:class:`~hedui.node.errors.ConfigError` with a one-line message, so ``hedui node serve``
refuses to start instead of serving with a bad directory or key.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from hedui.keys.ca import cert_fingerprint, check_issued_by, load_cert, member_of_cert
from hedui.keys.directory import TrustedDirectory, load_directory
from hedui.keys.keyfile import passphrase
from hedui.keys.signing import SigningKey, load_public
from hedui.node.config import NodeConfig, load_config
from hedui.node.errors import ConfigError, VerificationError
from hedui.node.store import migrate
from hedui.node.store.db import open_engine
from hedui.node.store.tables import node_state

__all__ = ["Runtime"]

log = logging.getLogger("hedui.node")


@dataclass
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
    audit: Any = None
    metrics: Any = None
    extras: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, config_path: Path, *, run_migrations: bool = True) -> "Runtime":
        cfg = load_config(config_path)
        return cls.from_config(cfg, run_migrations=run_migrations)

    @classmethod
    def from_config(cls, cfg: NodeConfig, *, run_migrations: bool = True) -> "Runtime":
        from cryptography.hazmat.primitives import serialization

        from hedui.keys.keyfile import load_private_key

        pw = passphrase(env=cfg.keys.passphrase_env)
        member = cfg.node.member
        ca = load_cert(cfg.path(cfg.tls.ca))
        cert = load_cert(cfg.path(cfg.tls.cert))
        try:
            check_issued_by(cert, ca)
        except VerificationError as exc:
            raise ConfigError(f"tls.cert: {exc.message}", reason=exc.reason) from None
        if member_of_cert(cert) != member:
            raise ConfigError(f"tls.cert: got CN {member_of_cert(cert)!r}, want node.member {member!r}")
        tls_key = load_private_key(cfg.path(cfg.tls.key), pw)
        if tls_key.public_key() != cert.public_key():
            raise ConfigError("tls.key: does not match tls.cert")
        signer = SigningKey.load(member, cfg.path(cfg.keys.signing), pw)
        authority = load_public("authority", cfg.path(cfg.directory.authority_key))

        engine = open_engine(cfg.store_url())
        try:
            if run_migrations:
                migrate.upgrade(engine)
            min_version = _state_int(engine, "directory_version")
        except ConfigError:
            raise
        except Exception as exc:  # a store that is down or not ours
            engine.dispose()
            raise ConfigError(f"store.url: cannot open the store ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})") from None
        directory = load_directory(cfg.path(cfg.directory.path), authority, min_version=min_version)
        me = directory.by_code.get(member)
        if me is None:
            raise ConfigError(f"node.member: got {member!r}, not in directory v{directory.version}")
        if bytes(me.tls_cert_sha256) != cert_fingerprint(cert):
            raise ConfigError(f"tls.cert: fingerprint differs from directory v{directory.version} entry for {member!r}")
        if bytes(me.signing_key) != signer.public.raw:
            raise ConfigError(f"keys.signing: public key differs from directory v{directory.version} entry for {member!r}")
        if bytes(ca.public_bytes(serialization.Encoding.DER)) and cert_fingerprint(ca) != bytes(directory.msg.ca_fingerprint):
            raise ConfigError("tls.ca: differs from the CA named in the directory")
        _set_state(engine, "directory_version", str(directory.version))
        rt = cls(
            config=cfg,
            member=member,
            signer=signer,
            directory=directory,
            engine=engine,
            tls_cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            tls_key_pem=tls_key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            ca_pem=ca.public_bytes(serialization.Encoding.PEM),
            passphrase=pw,
        )
        from hedui.node.metrics import Metrics

        rt.metrics = Metrics()
        rt.audit = _open_audit(rt)
        return rt

    def close(self) -> None:
        if self.audit is not None and hasattr(self.audit, "close"):
            self.audit.close()
        self.engine.dispose()


def _open_audit(rt: "Runtime"):
    from hedui.node.audit.recorder import open_audit

    return open_audit(rt)


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
