"""What a provider node loads at start: OPRF keys per live epoch and its field catalogue."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hedui.keys.keyfile import load_secret
from hedui.keys.oprf import ServerKey
from hedui.node.errors import ConfigError, NotFound, Reason
from hedui.node.verification.catalogue import Catalogue, check_catalogue, facts_of_mappings, load_catalogue
from hedui.node.verification.consent_state import RevocationState

if TYPE_CHECKING:
    from hedui.node.runtime import Runtime

__all__ = ["ProviderState", "load_provider", "OPRF_SEED_LABEL"]

OPRF_SEED_LABEL = "hedui-oprf-seed"


@dataclass
class ProviderState:
    """A provider's OPRF keys by live epoch (RFC 9497 §3.2, one per epoch during a
    rotation overlap), the epoch it answers by default, and its field catalogue."""

    keys: dict[int, ServerKey]
    current_epoch: int
    catalogue: Catalogue
    #: Each hub's consent revocation list as learned, in the node store
    #: (node/verification/consent_state.py): survives restarts.
    revocations: RevocationState
    #: Fact name -> the sources (mapping names) producing it, for each field's data date;
    #: empty when the node names no mapping (every source then counts for every field).
    sources_of: dict[str, list[str]] = field(default_factory=dict)

    def epoch(self, asked: int) -> int:
        """The epoch a request names (0: the current one), if this provider holds its key."""
        epoch = asked or self.current_epoch
        if epoch not in self.keys:
            raise NotFound(f"epoch: got {asked}, want one of {sorted(self.keys)}", reason=Reason.UNKNOWN_EPOCH)
        return epoch


def load_provider(rt: Runtime) -> ProviderState:
    p = rt.config.provider
    if p is None or p.oprf_seed is None:
        raise ConfigError("provider.oprf_seed: got none, want the encrypted OPRF seed file (hedui keys oprf-init)")
    legacy_ok = rt.config.keys.allow_legacy
    keys = {p.epoch: ServerKey.derive(load_secret(rt.config.path(p.oprf_seed), rt.passphrase, label=OPRF_SEED_LABEL, allow_legacy=legacy_ok), p.epoch)}
    if p.previous_epoch is not None:
        if p.previous_oprf_seed is None:
            raise ConfigError("provider.previous_oprf_seed: got none, want it with provider.previous_epoch")
        keys[p.previous_epoch] = ServerKey.derive(
            load_secret(rt.config.path(p.previous_oprf_seed), rt.passphrase, label=OPRF_SEED_LABEL, allow_legacy=legacy_ok), p.previous_epoch
        )
    me = rt.directory.member(rt.member)
    published = {k.epoch: bytes(k.public_key) for k in me.oprf_keys}
    for epoch, key in keys.items():
        if published.get(epoch) != key.public_key_bytes:
            raise ConfigError(
                f"provider.epoch {epoch}: OPRF public key differs from directory v{rt.directory.version} (re-sign the directory after rotating)"
            )
    if p.fields is None:
        raise ConfigError("provider.fields: got none, want the field catalogue TOML")
    cat = load_catalogue(rt.config.path(p.fields))
    listed = {f.name for f in me.fields}
    missing = [f.name for f in cat.fields if f.name not in listed]
    if missing:
        raise ConfigError(f"provider.fields: {', '.join(missing)} not published in directory v{rt.directory.version}")
    sources_of: dict[str, list[str]] = {}
    paths = p.mapping_paths()
    if paths:
        from hedui.adapters.mapping import load_mapping

        mappings = [load_mapping(rt.config.path(m)) for m in paths]
        names = [m.name for m in mappings]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ConfigError(f"provider.mappings: got two sources named {dup[0]!r}, want one name per source "
                              "(the index files rows under it)")
        facts = facts_of_mappings(mappings)
        check_catalogue(cat, facts, rt.config.path(p.fields))
        sources_of = {name: info.sources for name, info in facts.items()}
    return ProviderState(keys=keys, current_epoch=p.epoch, catalogue=cat, revocations=RevocationState(rt.engine), sources_of=sources_of)
