"""Issue 18c benchmark: what a provider's durable consent state costs per Lookup.

Baseline (the provider before this change): verify the hub's signed consent record and its
pushed revocation list against a revocation state kept in memory, then the exchange's commit
transaction (here: the replay-cache row it always writes). Candidate (now): the same
verification against the revocation state in the node store (``consent_state.RevocationState``:
one serial read; the revoked digests cached per serial), and the use checked and recorded
inside the same commit transaction (one upsert that returns the row locked, one update), as the Lookup does. Each lookup is
the first use of its own authorisation (half one-off, half periodic), so every one inserts a
row — the common case of a provider answering cases. The two paths alternate, one batch each
per round, after a warm-up round; min / median of the per-lookup time over ``--rounds``.

    python bench/bench_consent.py [--url sqlite:///x.db | postgresql://…] [--lookups 300] [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from hedui.common.errors import HeduiError
from hedui.keys import dsse
from hedui.keys.directory import PURPOSES
from hedui.keys.signing import SigningKey
from hedui.node.errors import PermissionDenied, Reason
from hedui.node.store import migrate
from hedui.node.store.db import open_engine
from hedui.node.store.tables import seen_requests
from hedui.node.verification import consent
from hedui.node.verification.consent_state import RevocationState, check_use
from hedui.v1 import common_pb2

T0 = dt.datetime(2026, 7, 1, 9, 0, tzinfo=dt.UTC)
HUB = SigningKey.generate("hub")
KEYS = {HUB.keyid: HUB.public}


class MemoryRevocations:
    """The provider's revocation state before issue 18c (in memory, lost on restart)."""

    def __init__(self) -> None:
        self.serial: dict[str, int] = {}
        self.revoked: dict[str, frozenset[bytes]] = {}

    def apply(self, hub, key, env, now) -> None:
        if not env.payload and not env.signatures:
            return
        payload, _ = dsse.verify(env, key, payload_type=dsse.REVOCATIONS)
        lst = common_pb2.ConsentRevocations.FromString(payload)
        if lst.serial < self.serial.get(hub, 0):
            raise PermissionDenied("older list", reason=Reason.REVOCATIONS_STALE)
        self.serial[hub] = int(lst.serial)
        self.revoked[hub] = frozenset(bytes(d) for d in lst.revoked)

    def is_revoked(self, hub, digest) -> bool:
        return digest in self.revoked.get(hub, frozenset())


def _lookups(n: int, revocations: common_pb2.Envelope) -> list[tuple[common_pb2.RequestContext, list[bytes], dt.datetime]]:
    """``n`` lookups: each one a context with its signed record, two member tokens, a time."""
    out = []
    for i in range(n):
        scan = hashlib.sha256(b"scan %d %s" % (i, os.urandom(8))).digest()
        purpose = ("dibao", "periodic_review")[i % 2]
        ctx = common_pb2.RequestContext(purpose=PURPOSES[purpose], case_ref=f"HUB-2026-{i:06d}", consent_digest=scan,
                                        request_id=os.urandom(16), operator="cw01")
        ctx.consent.CopyFrom(consent.issue_for_context(HUB, "hub", ctx, members=2, issued_at=T0))
        ctx.revocations.CopyFrom(revocations)
        out.append((ctx, [hashlib.sha512(b"m%d-%d" % (i, k)).digest() for k in range(2)], T0 + dt.timedelta(days=1)))
    return out


def _run(engine, lookups, candidate: bool) -> float:
    """Seconds per lookup over ``lookups``."""
    state = RevocationState(engine) if candidate else MemoryRevocations()
    t = time.perf_counter()
    for ctx, tokens, now in lookups:
        acc = consent.check_consent(ctx, caller="hub", directory_keys=KEYS, members=len(tokens), now=now, revocations=state)  # type: ignore[arg-type]
        with engine.begin() as c:
            c.execute(seen_requests.insert().values(request_id=os.urandom(16), caller="hub", method="/bench", seen_at=now,
                                                    request_digest=None, answer=b""))
            if candidate:
                check_use(c, "hub", acc.record, acc.digest, ctx.case_ref, 1, tokens, now, record=True)
    return (time.perf_counter() - t) / len(lookups)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="", help="store URL (default: a fresh SQLite file)")
    ap.add_argument("--lookups", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rounds = max(3, a.rounds)
    with tempfile.TemporaryDirectory() as d:
        engine = open_engine(a.url or f"sqlite:///{Path(d) / 'bench.db'}")
        migrate.upgrade(engine)
        # A hub list with 20 revocations (none of them these lookups'), as pushed with every request.
        revocations = consent.sign_revocations(HUB, "hub", [os.urandom(32) for _ in range(20)], T0)
        times: dict[str, list[float]] = {"baseline": [], "candidate": []}
        try:
            for r in range(rounds + 1):  # round 0 warms up
                for name in ("baseline", "candidate"):
                    try:
                        s = _run(engine, _lookups(a.lookups, revocations), name == "candidate")
                    except HeduiError as exc:
                        raise SystemExit(f"{name}: {exc.reason} {exc.message}") from None
                    if r:
                        times[name].append(s)
            backend = engine.dialect.name
        finally:
            engine.dispose()
    base = statistics.median(times["baseline"])
    rows = [{"path": name, "min µs/lookup": f"{min(xs) * 1e6:,.0f}", "median µs/lookup": f"{statistics.median(xs) * 1e6:,.0f}",
             "× baseline (median)": f"{statistics.median(xs) / base:.2f}"} for name, xs in times.items()]
    report(f"Provider consent checks per Lookup ({backend})", rows, json_out=a.json,
           extra={"rounds": rounds, "lookups per round": a.lookups})


if __name__ == "__main__":
    main()
