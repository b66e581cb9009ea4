"""The demo's steps, as a library (the CLI prints them; tests assert on the summary)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from hedui.node.client import PeerClient
from hedui.node.errors import Reason, VerificationError
from hedui.node.testbed.demo_discovery import discovery_step
from hedui.node.testbed.federation import DEFAULT_MEMBERS, MemberPlan, Testbed
from hedui.v1 import node_pb2

__all__ = ["run_demo"]


def run_demo(root: Path, say: Callable = print, *, residents: int = 2000) -> dict:
    steps: list[dict] = []

    def step(name: str, result: str) -> None:
        steps.append({"name": name, "result": result})
        say(f"[bold cyan]•[/] {name}: {result}")

    # Every node with an ops port (issue 17): /healthz, /readyz and /metrics on a free port.
    ops = {"metrics": {"listen": "127.0.0.1:0"}}
    members = [MemberPlan(m.code, m.name, list(m.roles), m.region, extra_config=dict(ops)) for m in DEFAULT_MEMBERS]
    tb = Testbed(root, members, residents=residents)
    tb.create()
    step("federation", f"CA, {len(members)} members (certificates from CSRs), directory v{tb.version} signed")
    built = tb.build_indexes()
    step("token index", ", ".join(f"{c} {n:,} records" for c, n in built.items()) + " (RFC 9497 VOPRF tokens; no identity stored)")
    with tb:
        tb.start()
        step("nodes", ", ".join(f"{c}@127.0.0.1:{tb.servers[c].port}" for c in tb.servers))
        pings = _mtls_matrix(tb)
        step("mTLS", f"{pings} authenticated pings (hub↔departments), each side identified by certificate + directory")
        for extend in DEMO_STEPS:
            extend(tb, step)
        audit_step(tb, step)
        ops_step(tb, step)
    step("stop", "all nodes stopped")
    return {"steps": steps, "members": [m.code for m in members]}


def _mtls_matrix(tb: Testbed) -> int:
    hub = tb.runtime("hub")
    n = 0
    for code in tb.servers:
        if code == "hub":
            continue
        with PeerClient.to_member(hub, code) as c:
            r = c.node.Ping(node_pb2.PingRequest(nonce=os.urandom(8)), timeout=10)
            _expect(r, code, "hub")
            n += 1
        with PeerClient.to_member(tb.runtime(code), "hub") as c:
            r = c.node.Ping(node_pb2.PingRequest(nonce=os.urandom(8)), timeout=10)
            _expect(r, "hub", code)
            n += 1
    return n


def _expect(r, member: str, caller: str) -> None:
    if (r.member, r.caller) != (member, caller):
        raise VerificationError(f"ping: got {r.member}/{r.caller}, want {member}/{caller}", reason=Reason.DEMO_MISMATCH)


def _case_step(tb: Testbed, step: Callable) -> None:
    """A household of four applies for dibao: tokens from every department, one lookup each,
    the report, and an offline re-check of every signature."""
    from decimal import Decimal

    from hedui.adapters.synthetic import resident
    from hedui.keys.signing import load_public
    from hedui.node.verification.cases import consent_digest_of, open_case, run_case
    from hedui.node.verification.evidence import verify_case_data
    from hedui.node.verification.report import build_report, load_case

    hub = tb.runtime("hub")
    members = [(resident(n, tb.data_seed).id_number, rel) for n, rel in ((1, "applicant"), (2, "spouse"), (3, "child"), (4, "parent"))]
    ref = open_case(hub, members, purpose="temporary_assistance", consent_digest=consent_digest_of(b"demo authorisation"),
                    operator="demo-caseworker", region="370304", expenditure=Decimal("45000"))
    res = run_case(hub, ref)
    step("case run", f"{ref}: " + ", ".join(f"{o.provider} {o.status}" for o in res.outcomes) + f" in {res.seconds:.2f} s")
    rep = build_report(hub.engine, ref, hub.hub.rules)
    held: dict[str, set[int]] = {}
    for f in rep["fields"]:
        if f["found"]:
            held.setdefault(f["provider"], set()).add(f["member"] + 1)
    step("records held", "; ".join(f"{p}: members {sorted(v)}" for p, v in sorted(held.items())) or "none")
    inc = rep["income"]
    step("report", f"per-capita monthly income {inc['per_capita_monthly']} CNY vs standard {inc['standard']} → "
         f"{'below' if inc['below_standard'] else 'not below'}; assets: "
         + ", ".join(f"{a['flag']}={a['state']}" for a in rep["assets"])
         + (f"; temporary assistance: {rep['temporary_assistance']['aid']}" if rep["temporary_assistance"] else "")
         + f"; conclusion {rep['conclusion']}")
    verdicts = verify_case_data(load_case(hub.engine, ref), load_public("authority", tb.authority.signing_pub))
    bad = [v for v in verdicts if v["status"] != "ok"]
    if bad:
        raise VerificationError(f"evidence: {bad}", reason=Reason.DEMO_EVIDENCE)
    step("evidence", f"{len(verdicts)} signed answers re-verified offline against directory v{tb.version}")
    tb.demo_case = ref  # type: ignore[attr-defined]


def audit_step(tb: Testbed, step: Callable) -> None:
    """The security officer's view: every node's log verifies offline (signatures, tree,
    cosignatures), and the hub's queries reconcile with every department's log."""
    from hedui.node.audit import reconcile as audit_reconcile
    from hedui.node.audit import verify as audit_verify
    from hedui.node.audit.note import Verifier, Verifiers
    from hedui.node.audit.recorder import origin_of

    for ns in tb.servers.values():
        ns.rt.audit.process_peer_checkpoints()
    for ns in tb.servers.values():
        ns.rt.audit.request_cosignatures()
    for ns in tb.servers.values():
        ns.rt.audit.log.flush()
        ns.rt.audit.log.checkpoint()
    fedname = tb.runtime("hub").directory.msg.federation
    from hedui.keys.directory import ROLE_CHECKPOINTS, role_key_of

    keys = Verifiers([Verifier(origin_of(fedname, m.code), role_key_of(m, ROLE_CHECKPOINTS)) for m in tb.runtime("hub").directory.msg.members])
    verdicts = {}
    for code, ns in tb.servers.items():
        rep = audit_verify.verify(ns.rt.config.store_url(), keys)
        verdicts[code] = (rep.verdict.name, rep.entries, rep.cosignatures)
    bad = {c: v for c, v in verdicts.items() if v[0] != "OK"}
    if bad:
        raise VerificationError(f"audit verify: {bad}", reason=Reason.DEMO_AUDIT)
    step("audit verify", ", ".join(f"{c} {v[0]} ({v[1]} entries, {v[2]} cosig.)" for c, v in verdicts.items()))
    providers = {c: ns.rt.config.store_url() for c, ns in tb.servers.items() if c != "hub" and "provider" in ns.rt.config.node.roles}
    from sqlalchemy import select

    from hedui.node.verification.hub_tables import cases

    with tb.runtime("hub").engine.connect() as c:
        refs = [r for (r,) in c.execute(select(cases.c.case_ref))]
    rec = audit_reconcile.reconcile(tb.servers["hub"].rt.config.store_url(), providers, hub_code="hub", hub_cases=refs)
    if not rec.clean:
        raise VerificationError(f"reconcile: {rec.to_dict()}", reason=Reason.DEMO_RECONCILE)
    step("reconcile", f"hub ↔ {len(providers)} departments: " + ", ".join(f"{k} {v}" for k, v in rec.counts.items()) + "; nothing unmatched")


# The flows the demo runs, in order; the audit check runs last (run_demo). Active discovery:
# detection at several departments, push, leads, referrals, escalation.
DEMO_STEPS: tuple[Callable[[Testbed, Callable[[str, str], None]], object], ...] = (_case_step, discovery_step)


def ops_step(tb: Testbed, step: Callable) -> None:
    """What a monitoring system sees: /readyz and a Prometheus scrape of every node (docs/operations.md)."""
    import urllib.error
    import urllib.request

    ready, families = 0, set()
    for ns in tb.servers.values():
        base = f"http://127.0.0.1:{ns.rt.metrics.port}"
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=5) as r:
                ready += r.status == 200
        except urllib.error.HTTPError:
            pass
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            families |= {ln.split()[2] for ln in r.read().decode().splitlines() if ln.startswith("# TYPE ")}
    step("operations", f"/readyz 200 on {ready} of {len(tb.servers)} nodes; Prometheus scrape: {len(families)} metric "
         f"families (curl http://127.0.0.1:<ops port>/readyz)")
