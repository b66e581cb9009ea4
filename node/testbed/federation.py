"""A throwaway federation on loopback: the authority, a hub and department nodes.

Used by ``hedui demo``, the end-to-end tests and the benchmarks, so that all three exercise
the same real set-up: a federation CA, member certificates issued from CSRs, signing keys,
a signed directory, ``node.toml`` files, and nodes bound to free loopback ports.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import tomli_w

from hedui.common.clock import Clock, SystemClock
from hedui.keys import federation as fed
from hedui.keys.keyfile import PASSPHRASE_ENV, KdfParams, set_default_params, write_private
from hedui.node.testbed import discovery, provider
from hedui.node.testbed.ports import free_port

__all__ = ["MemberPlan", "Testbed", "free_port", "DEFAULT_MEMBERS"]


@dataclass
class MemberPlan:
    code: str
    name: str
    roles: list[str]
    region: str = "370304"
    port: int = 0
    fields: list[dict] = field(default_factory=list)
    extra_config: dict = field(default_factory=dict)
    #: Added to (and overriding) the member's directory entry, e.g. a second OPRF epoch.
    extra_spec: dict = field(default_factory=dict)
    #: Set ``False`` to leave a provider out of active discovery.
    discovery: bool = True
    # Filled in by the set-up steps:
    oprf_public: bytes | None = None       # epoch 1 OPRF public key (testbed.provider)
    discovery_mapping: str | None = None   # the mapping detection reads (testbed.discovery)


DEFAULT_MEMBERS = [
    MemberPlan("hub", "博山区社会救助服务中心", ["hub"]),
    MemberPlan("tax", "博山区税务局", ["provider"]),
    MemberPlan("hrss", "博山区人力资源和社会保障局", ["provider"]),
    MemberPlan("realestate", "博山区不动产登记中心", ["provider"]),
    MemberPlan("vehicles", "博山交警大队车管所", ["provider"]),
    MemberPlan("medins", "博山区医疗保障分局", ["provider"]),
    MemberPlan("disability", "博山区残疾人联合会", ["provider"]),
    # A department that reports within 3 working days and answers no lookups.
    MemberPlan("fire", "博山区消防救援大队", ["provider"]),
]


@dataclass
class Testbed:
    """Files of a federation in ``root``; :meth:`create` makes them, :meth:`start` runs nodes."""

    __test__ = False  # not a pytest class

    root: Path
    members: list[MemberPlan]
    store: Callable[[str], str] | None = None  # member code -> store URL (default SQLite file)
    version: int = 1
    valid_days: int = 30
    policy: list[dict] = field(default_factory=list)
    passphrase: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    residents: int | None = None  # synthetic population size (default HEDUI_TESTBED_RESIDENTS or 400)
    data_seed: int = 7
    servers: dict = field(default_factory=dict)
    #: The federation's clock (tests pass a FixedClock); None = the wall clock in the
    #: directory's zone, as a deployed node has.
    clock: Clock | None = None
    #: scrypt cost of the key files it writes. The floor the reader accepts (N = 2^14), not the
    #: product's 2^17: a testbed's keys are throwaway and its passphrase sits beside them in
    #: ``passphrase``, so the work factor would buy nothing and cost the demo ~50 s of start-up.
    kdf: KdfParams = field(default_factory=lambda: KdfParams(log2_n=14, r=8, p=1))
    #: Further set-up steps, run after the provider step and before the directory is signed
    #: (e.g. the nine department nodes of :mod:`hedui.node.testbed.departments.federation`).
    setup: list[Callable[[Testbed], None]] = field(default_factory=list)

    @classmethod
    def over_departments(cls, root: Path, **kw) -> Testbed:
        """The nine department nodes and a hub over generated department databases
        (:func:`hedui.node.testbed.departments.federation.over_departments`)."""
        from hedui.node.testbed.departments.federation import over_departments

        return over_departments(root, **kw)

    def now(self) -> datetime:
        return (self.clock or SystemClock()).now()

    @property
    def ca_passphrase(self) -> str:
        """The CA key's own passphrase (issue 18: not the directory key's, not a member's)."""
        return self.passphrase + "-ca"

    @property
    def directory_passphrase(self) -> str:
        return self.passphrase + "-directory"

    @property
    def authority(self) -> fed.AuthorityDir:
        return fed.AuthorityDir(self.root / "authority")

    def member_dir(self, code: str) -> Path:
        return self.root / "members" / code

    def config_path(self, code: str) -> Path:
        return self.member_dir(code) / "node.toml"

    @property
    def directory_path(self) -> Path:
        return self.root / "directory.dsse.json"

    @property
    def spec_path(self) -> Path:
        return self.root / "directory.toml"

    def env(self) -> dict[str, str]:
        return {PASSPHRASE_ENV: self.passphrase}

    def create(self) -> Testbed:
        old = set_default_params(self.kdf)
        try:
            return self._create()
        finally:
            set_default_params(old)

    def _create(self) -> Testbed:
        os.environ[PASSPHRASE_ENV] = self.passphrase
        pw = self.passphrase.encode()
        self.root.mkdir(parents=True, exist_ok=True)
        write_private(self.root / "passphrase", pw + b"\n")
        fed.init_authority(
            self.authority.root, "Hedui demo federation CA", self.ca_passphrase.encode(),
            self.directory_passphrase.encode(), now=self.now(),
        )
        for m in self.members:
            m.port = m.port or free_port()
            md = fed.init_member(self.member_dir(m.code), m.code, "127.0.0.1", pw)
            fed.issue_cert(self.authority, md.tls_csr, md.tls_cert, self.ca_passphrase.encode(), now=self.now(),
                           approved=["127.0.0.1"])
        # The set-up steps, in order: department data and OPRF seeds, then discovery (which
        # adds events to the department data where there is some).
        provider.create(self)
        for step in self.setup:
            step(self)
        discovery.create(self)
        self.sign_directory()
        for m in self.members:
            self._write_config(m)
        return self

    def sign_directory(self) -> int:
        spec = {
            "federation": "demo",
            "version": self.version,
            "valid_days": self.valid_days,
            "ca_cert": "authority/ca.crt",
            "members": [self._member_spec(m) for m in self.members],
            "policy": self.policy or default_policy(self.members),
        }
        self.spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
        return fed.sign_directory_file(
            self.authority, self.spec_path, self.directory_path, self.directory_passphrase.encode(), now=self.now()
        )

    def _member_spec(self, m: MemberPlan) -> dict:
        rel = f"members/{m.code}"
        d = {
            "code": m.code, "name": m.name, "endpoint": f"127.0.0.1:{m.port}",
            "cert": f"{rel}/tls.crt", "signing_key": f"{rel}/signing.pub",
            "roles": m.roles, "region": m.region,
        }
        d.update(provider.spec(self, m))
        d.update(discovery.spec(self, m))
        if m.fields:
            d["fields"] = m.fields
        d.update(m.extra_spec)
        return d

    def _write_config(self, m: MemberPlan) -> None:
        cfg: dict = {
            "node": {"member": m.code, "listen": f"127.0.0.1:{m.port}", "roles": m.roles, "workers": 8},
            "tls": {"cert": "tls.crt", "key": "tls.key", "ca": "../../authority/ca.crt"},
            "keys": {"signing": "signing.key"},
            "directory": {"path": "../../directory.dsse.json", "authority_key": "../../authority/signing.pub"},
            "store": {"url": self.store(m.code) if self.store else "sqlite:///node.db"},
        }
        for part in (provider.config(self, m), discovery.config(self, m)):
            for section, values in part.items():
                cfg.setdefault(section, {}).update(values)
        for section, values in m.extra_config.items():
            cfg.setdefault(section, {}).update(values)
        self.config_path(m.code).write_text(tomli_w.dumps(cfg), encoding="utf-8")

    # -- running -------------------------------------------------------------------------

    def start(self, codes: list[str] | None = None) -> Testbed:
        from hedui.node.runtime import Runtime
        from hedui.node.server import build_server

        os.environ[PASSPHRASE_ENV] = self.passphrase
        for m in self.members:
            if codes is not None and m.code not in codes:
                continue
            ns = build_server(Runtime.open(self.config_path(m.code), clock=self.clock))
            ns.start()
            self.servers[m.code] = ns
        return self

    def stop(self, codes: list[str] | None = None) -> None:
        for code in list(self.servers):
            if codes is None or code in codes:
                self.servers.pop(code).stop(grace=1.0)

    def build_indexes(self, codes: list[str] | None = None, *, workers: int = 0) -> dict[str, int]:
        return provider.build_indexes(self, codes, workers=workers)

    def runtime(self, code: str):
        return self.servers[code].rt

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def default_policy(members: list[MemberPlan]) -> list[dict]:
    """Hub may evaluate, look up and download filters at every provider; providers may push
    notices to every hub. NodeService and AuditService need membership only."""
    hubs = [m.code for m in members if "hub" in m.roles]
    providers = [m for m in members if "provider" in m.roles]
    rules: list[dict] = []
    purposes = ["dibao", "tekun", "temporary_assistance", "periodic_review", "bulk_cross_check", "active_discovery"]
    for h in hubs:
        for p in providers:
            fields = [f["name"] for f in p.fields]
            rules.append({"caller": h, "provider": p.code, "method": "/hedui.v1.PseudonymService/Evaluate",
                          "purposes": purposes, "per_minute": 6000, "per_day": 1_000_000, "max_batch": 4096})
            rules.append({"caller": h, "provider": p.code, "method": "/hedui.v1.PseudonymService/GetTokenFilter",
                          "purposes": ["bulk_cross_check"], "per_minute": 10, "per_day": 100})
            rules.append({"caller": h, "provider": p.code, "method": "/hedui.v1.LookupService/Lookup",
                          "purposes": purposes, "fields": fields, "per_minute": 6000, "per_day": 1_000_000, "max_batch": 4096})
    for p in providers:
        for h in hubs:
            rules.append({"caller": p.code, "provider": h, "method": "/hedui.v1.NoticeService/Push",
                          "purposes": ["active_discovery"], "per_minute": 0, "per_day": 0})
    return rules

