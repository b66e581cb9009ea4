"""``node.toml``: the one configuration file of a node, validated by pydantic.

Relative paths are relative to the config file's folder. Unknown keys and wrong types are
refused with one line naming the key (``node.toml: tls.cert: got nothing, want a value``,
:func:`hedui.common.toml.load_toml`), never a traceback.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from hedui.common.toml import load_toml
from hedui.node.errors import ConfigError

__all__ = ["NodeConfig", "load_config"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NodeSection(_Section):
    member: str = Field(description="This node's member code in the directory")
    listen: str = Field(default="127.0.0.1:0", description="host:port to bind; port 0 picks a free port")
    roles: list[Literal["provider", "hub"]] = Field(min_length=1)
    workers: int = Field(default=16, ge=1, le=256, description="gRPC handler threads")
    # Load shedding (node/admission.py): 0 means "as many as workers".
    max_concurrent_rpcs: int = Field(default=0, ge=0, le=4096, description="calls handled at once; beyond: RESOURCE_EXHAUSTED")
    max_concurrent_per_caller: int = Field(default=0, ge=0, le=4096, description="one caller's share; 0: the cap less a quarter, at least one slot")
    # Python's GIL switch interval in `hedui node serve` (sys.setswitchinterval): how long a
    # CPU-bound handler thread may keep the GIL while gRPC's one polling thread, which admits
    # and refuses every call, waits for it. Python's default is 5 ms (docs/performance.md
    # "Load shedding" for the measurements behind the default).
    switch_interval_ms: float = Field(default=5.0, gt=0, le=100, description="GIL switch interval of the serving process, ms")
    # A node of several processes (node/front/): with N >= 1, `hedui node serve` is a light
    # front that takes every call, admits or refuses it (the cap above, per caller) and passes
    # the admitted ones, undecoded, to one of N worker processes (each a full node on a private
    # unix socket). The front does no Lookup work, so its one polling thread never waits for
    # the GIL behind admitted Lookups (docs/performance.md "Load shedding"). 0: one process.
    worker_processes: int = Field(default=0, ge=0, le=64, description="worker processes behind a front; 0: one process")

    @field_validator("listen")
    @classmethod
    def _hostport(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(f"got {v!r}, want host:port")
        return v


class TlsSection(_Section):
    cert: Path
    key: Path
    ca: Path


class KeysSection(_Section):
    signing: Path = Field(description="Ed25519 key file (keys/keyfile.py) that signs answers, notices, checkpoints")
    # Per-role keys (issue 18); each unset role is signed with `signing`. The directory must
    # publish the matching public key (members.answer_key / checkpoint_key / cosign_key).
    answer_signing: Path | None = Field(default=None, description="Ed25519 key file for answers, notices, receipts, consent records")
    checkpoint_signing: Path | None = Field(default=None, description="Ed25519 key file for audit checkpoints")
    cosign_signing: Path | None = Field(default=None, description="Ed25519 key file for cosignatures of other logs")
    passphrase_env: str = Field(default="HEDUI_KEY_PASSPHRASE")
    allow_legacy: bool = Field(
        default=True,
        description="Read key files in the older PKCS#8/PBKDF2 format (with a warning); false refuses them",
    )


class DirectorySection(_Section):
    path: Path = Field(description="DSSE JSON envelope of the signed directory")
    authority_key: Path = Field(description="PEM Ed25519 public key of the federation authority")
    # The live directory (issue 17, after X-Road's global configuration): where newer signed
    # directories are pulled from, how often, and the authority key's fingerprint delivered
    # out of band (the trust anchor): authority_key must match it.
    sources: list[str] = Field(default_factory=list, description="http(s):// URLs, file paths or peer:CODE "
                               "(a member node serving its current one) of the signed directory, tried in order; "
                               "empty: the directory changes only with a restart")
    refresh_seconds: int = Field(default=60, ge=1, le=86400, description="Pull interval (X-Road: 60 s)")
    max_backoff_seconds: int = Field(default=600, ge=1, le=86400, description="Longest wait after failed pulls")
    trust_anchor: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$",
                                     description="SHA-256 (hex) of the authority's raw Ed25519 public key")


class StoreSection(_Section):
    url: str = Field(default="sqlite:///node.db")
    # Issue 16 item 6 (scale-out on PostgreSQL, docs/department-it.md).
    read_database_url: str | None = Field(
        default=None,
        description="PostgreSQL streaming replica (hot standby) that lookups read the token index from; writes, "
        "and reads that must see this node's own writes (quota, replay cache, audit log), go to `url`",
    )
    index_partitions: int = Field(
        default=16, ge=1, le=256,
        description="Partitions of the token index on PostgreSQL (by token prefix), fixed when the migration "
        "creates the table; SQLite keeps one table",
    )


class ProviderSection(_Section):
    mapping: Path | None = None
    mappings: list[Path] = Field(default_factory=list, description="The node's sources, one mapping TOML each "
                                 "(several tables of one department); `mapping` is the one-source form")
    data_date: date | None = Field(default=None, description="The day the department's data covers, for sources "
                                   "whose mapping does not say (default: the day `node index` reads them)")
    oprf_seed: Path | None = Field(default=None, description="Encrypted OPRF seed file of the current epoch")
    epoch: int = Field(default=1, ge=1)
    previous_epoch: int | None = Field(default=None, ge=1)
    previous_oprf_seed: Path | None = None
    fields: Path | None = Field(default=None, description="Field catalogue TOML")
    rules: Path | None = Field(default=None, description="Detection rules TOML")
    hub: str | None = Field(default=None, description="Member code of the hub notices go to")
    dedup_secret: Path | None = Field(
        default=None,
        description="Encrypted node-local secret keying notice dedup keys; created on first use "
        "(default: dedup.secret next to a SQLite store, else next to node.toml)",
    )
    calendar_overrides: Path | None = Field(default=None, description="Working-day override file for due dates")
    replay_window_hours: int = Field(
        default=24, ge=1, le=24 * 400,
        description="How long a request id and its cached signed answer are kept (retries within it get the "
        "same answer); must outlast any retry",
    )
    max_unusable_share: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Largest share of department rows a detection run or an index build may fail to use; beyond "
        "it the run is reported as failed (CLI exit 3): a detection run's period is not marked done, an index "
        "build is not made live (the previous build keeps answering; `node index --max-unusable-share` overrides)",
    )
    push_interval: float = Field(
        default=1.0, ge=0.01, le=3600.0,
        description="Seconds between the pusher's looks at the notice outbox (a detection run in the node, "
        "or `hedui notices detect` on the node's host, wakes it at once: the outbox doorbell)",
    )
    push_batch: int = Field(
        default=100, ge=1, le=500,
        description="Notices per PushBatch call to the hub (1: one Push per notice, as before batches)",
    )
    push_in_flight: int = Field(
        default=1, ge=1, le=8,
        description="PushBatch calls the pusher keeps in flight at once when more than one batch is due (the hub "
        "works on one while the node records the receipts of another); 1: one after the other (the default: "
        "2 gained nothing measurable in docs/performance.md and lost when every department's batches reached "
        "the hub at once)",
    )
    detect_at: str = Field(
        default="01:30",
        description="Local (China) time of the daily detection run, HH:MM; \"manual\" runs detection only "
        "through `hedui notices detect`",
    )

    def mapping_paths(self) -> list[Path]:
        """Every source mapping: ``mappings``, after ``mapping`` when both are given."""
        return list(dict.fromkeys(([self.mapping] if self.mapping is not None else []) + list(self.mappings)))

    @field_validator("detect_at")
    @classmethod
    def _detect_at(cls, v: str) -> str:
        if v == "manual":
            return v
        hh, sep, mm = v.partition(":")
        if not sep or not (hh.isdigit() and mm.isdigit() and len(mm) == 2) or not (0 <= int(hh) <= 23 and 0 <= int(mm) <= 59):
            raise ValueError(f"got {v!r}, want HH:MM (local time) or \"manual\"")
        return v


class HubSection(_Section):
    sealing_key: Path | None = None
    rules: Path | None = Field(default=None, description="Verification rules TOML (standards, thresholds)")
    calendar_overrides: Path | None = None
    routing: Path | None = None


class MetricsSection(_Section):
    listen: str | None = Field(default=None, description="host:port of the Prometheus endpoint; off when unset")


class NodeConfig(_Section):
    node: NodeSection
    tls: TlsSection
    keys: KeysSection
    directory: DirectorySection
    store: StoreSection = StoreSection()
    provider: ProviderSection | None = None
    hub: HubSection | None = None
    metrics: MetricsSection = MetricsSection()

    # The folder of the file it was read from: relative paths are relative to it. Not a key
    # of the file (a private attribute, so ``base = ...`` in node.toml is an unknown key).
    _base: Path = PrivateAttr(default=Path("."))

    @property
    def base(self) -> Path:
        return self._base

    @base.setter
    def base(self, value: Path) -> None:
        self._base = value

    def path(self, p: Path) -> Path:
        return p if p.is_absolute() else (self.base / p)

    def read_store_url(self) -> str | None:
        """The replica lookups read from, if one is configured (PostgreSQL only)."""
        url = self.store.read_database_url
        if url is None:
            return None
        if not url.startswith("postgresql") or not self.store.url.startswith("postgresql"):
            raise ConfigError("store.read_database_url: got a non-PostgreSQL URL or store, want a PostgreSQL "
                              "streaming replica of a PostgreSQL store.url")
        return url

    def store_url(self) -> str:
        url = self.store.url
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
            return prefix + str((self.base / url[len(prefix):]).resolve())
        return url


def load_config(path: Path) -> NodeConfig:
    path = Path(path)
    cfg = load_toml(path, NodeConfig, what="a node.toml")
    cfg.base = path.resolve().parent
    if "provider" in cfg.node.roles and cfg.provider is None:
        raise ConfigError(f"{path}: provider: got nothing, want a [provider] section for role provider")
    if "hub" in cfg.node.roles and cfg.hub is None:
        raise ConfigError(f"{path}: hub: got nothing, want a [hub] section for role hub")
    if cfg.node.worker_processes > 1 and not cfg.store.url.startswith("postgresql"):
        # Several workers are several writers of one store (audit log, quota, replay cache),
        # as node replicas are: SQLite is one process per store (docs/department-it.md).
        raise ConfigError(f"{path}: node.worker_processes: got {cfg.node.worker_processes} with a SQLite store, want 0 or 1 "
                          "(several worker processes share one store: they need a PostgreSQL store.url)")
    return cfg
