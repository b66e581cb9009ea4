"""Issue 17 item 1: the live directory. The authority adds a member, changes the policy,
rotates an OPRF epoch and flags a member for maintenance while nodes run; each node takes the
change at its next pull (one refresh interval) without a restart. Directories signed by
another key, older, expired, malformed or unreachable are refused, logged, counted, and the
node keeps its current one."""

from __future__ import annotations

import datetime as _dt
import hashlib
import os
import threading
import tomllib

import grpc
import pytest
import tomli_w
from grpc_health.v1 import health_pb2

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys import dsse
from hedui.keys import federation as fed
from hedui.keys.directory import DirectorySpec, build, sign_directory
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.keys.oprf import ServerKey, blind
from hedui.keys.signing import SigningKey, load_public
from hedui.node.cli.directory import make_server
from hedui.node.client import PeerClient
from hedui.node.config import load_config
from hedui.node.errors import ConfigError
from hedui.node.runtime import Runtime
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed.federation import default_policy
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.v1 import common_pb2, pseudonym_pb2

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
SEED = 7
EVALUATE = "/hedui.v1.PseudonymService/Evaluate"


@pytest.fixture
def bed(tmp_path, monkeypatch):
    published = tmp_path / "published.dsse.json"
    srv = make_server(published, "127.0.0.1:0")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    live = {"directory": {"sources": [f"http://127.0.0.1:{srv.server_address[1]}/directory"], "refresh_seconds": 60}}
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"], extra_config=live),
                                    MemberPlan("tax", "tax", ["provider"], extra_config=live)],
                 clock=FixedClock(NOW), residents=40, data_seed=SEED)
    tb.create()
    tb.published = published
    published.write_bytes(tb.directory_path.read_bytes())
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()
    srv.shutdown()
    srv.server_close()


def _publish(tb, *, version: int, policy=None, members_extra=None, new_members=(), valid_days=30) -> None:
    """The authority's side: re-sign the spec at ``version`` and publish it."""
    tb.version = version
    tb.valid_days = valid_days
    tb.policy = policy or default_policy(tb.members)
    tb.sign_directory()
    if new_members or members_extra:
        spec = tomllib.loads(tb.spec_path.read_text(encoding="utf-8"))
        for m in spec["members"]:
            m.update((members_extra or {}).get(m["code"], {}))
        spec["members"] += list(new_members)
        tb.spec_path.write_text(tomli_w.dumps(spec), encoding="utf-8")
        fed.sign_directory_file(tb.authority, tb.spec_path, tb.directory_path, tb.directory_passphrase.encode(), now=tb.now())
    tb.published.write_bytes(tb.directory_path.read_bytes())


def _pull_all(tb) -> list[float]:
    """One refresh interval: every node's puller runs once (what its thread does every 60 s)."""
    return [tb.servers[c].puller.tick() for c in tb.servers]


def _evaluate(tb) -> None:
    state = blind([resident(1, SEED).id_number])
    with PeerClient.to_member(tb.runtime("hub"), "tax") as c:
        c.pseudonym.Evaluate(pseudonym_pb2.EvaluateRequest(
            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="T-1", request_id=os.urandom(16)),
            epoch=1, blinded_elements=state.blinded), timeout=10)


def _refused(rt, reason: str) -> float:
    return rt.metrics.registry.get_sample_value("hedui_directory_refused_total", {"reason": reason}) or 0.0


def test_member_policy_and_oprf_epoch_change_everywhere_without_restart(bed):
    tax, hub = bed.runtime("tax"), bed.runtime("hub")
    _evaluate(bed)   # allowed under v1
    # The authority: a new member, no Evaluate for the hub at tax, and tax's epoch 2 key.
    md = fed.init_member(bed.member_dir("newdept"), "newdept", "127.0.0.1", bed.passphrase.encode())
    fed.issue_cert(bed.authority, md.tls_csr, md.tls_cert, bed.ca_passphrase.encode(), now=NOW)
    epoch2 = ServerKey.derive(os.urandom(32), 2).public_key_bytes.hex()
    plan = {m.code: m for m in bed.members}
    oprf = [{"epoch": 1, "public_key_hex": plan["tax"].oprf_public.hex()}, {"epoch": 2, "public_key_hex": epoch2}]
    policy = [r for r in default_policy(bed.members) if not (r["caller"] == "hub" and r["method"] == EVALUATE)]
    new = {"code": "newdept", "name": "新部门", "endpoint": "127.0.0.1:1", "cert": "members/newdept/tls.crt",
           "signing_key": "members/newdept/signing.pub", "roles": ["provider"]}
    _publish(bed, version=2, policy=policy, members_extra={"tax": {"oprf_keys": oprf}}, new_members=[new])
    assert (tax.directory.version, hub.directory.version) == (1, 1)   # nothing until the pull
    assert _pull_all(bed) == [60.0, 60.0]                            # next pull: one interval later
    for rt in (tax, hub):
        assert rt.directory.version == 2 and "newdept" in rt.directory.by_code
    assert [k.epoch for k in hub.directory.member("tax").oprf_keys] == [1, 2]
    with pytest.raises(grpc.RpcError) as e:
        _evaluate(bed)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Persisted: the local file and the store carry v2, so a restart (and the CLI) use it.
    assert load_config(bed.config_path("tax")).directory.path
    from hedui.node.runtime import _state_int

    assert _state_int(tax.engine, "directory_version") == 2
    # The same directory again changes nothing.
    assert _pull_all(bed) == [60.0, 60.0] and tax.directory.version == 2


def test_refused_directories_are_counted_and_the_current_one_kept(bed):
    tax = bed.runtime("tax")
    puller = bed.servers["tax"].puller
    v1 = bed.published.read_bytes()
    _publish(bed, version=2)
    puller.tick()
    assert tax.directory.version == 2
    # Older than the current one: a rollback.
    bed.published.write_bytes(v1)
    assert puller.tick() == 120.0 and tax.directory.version == 2 and _refused(tax, "DIRECTORY_ROLLBACK") == 1
    # Signed by another key.
    spec = DirectorySpec.load(bed.spec_path).model_copy(update={"version": 3})
    other = SigningKey.generate("authority")
    bed.published.write_text(dsse.to_json(sign_directory(build(spec._resolved(bed.root), now=NOW), other)))
    assert puller.tick() == 240.0 and tax.directory.version == 2
    assert _refused(tax, "UNKNOWN_SIGNER") + _refused(tax, "BAD_SIGNATURE") == 1
    # Malformed.
    bed.published.write_text("{not json")
    puller.tick()
    assert _refused(tax, "BAD_DIRECTORY") == 1 and tax.directory.version == 2
    # Expired by the time it arrives: v3 valid one day, the node's clock two days on.
    _publish(bed, version=3, valid_days=1)
    bed.clock.advance(_dt.timedelta(days=2))
    puller.tick()
    assert _refused(tax, "DIRECTORY_EXPIRED") == 1 and tax.directory.version == 2
    assert tax.metrics.registry.get_sample_value("hedui_directory_fetch_failures") == 4
    # Back-off is capped.
    for _ in range(6):
        delay = puller.tick()
    assert delay == 600.0
    # A good one again resets the back-off.
    bed.clock.set(NOW)
    _publish(bed, version=4)
    assert puller.tick() == 60.0 and tax.directory.version == 4
    assert tax.metrics.registry.get_sample_value("hedui_directory_fetch_failures") == 0


def test_unreachable_source_backs_off_and_is_reported(bed, tmp_path):
    tax = bed.runtime("tax")
    tax.config.directory.sources = [str(tmp_path / "missing.json")]
    puller = bed.servers["tax"].puller
    # Its thread's first pull (at start, from the good source) must not land between the
    # ticks below: they stand for the thread's pulls, one at a time.
    puller.stop()
    assert puller.tick() == 120.0
    assert tax.metrics.registry.get_sample_value("hedui_directory_fetch_failures") == 1
    assert _refused(tax, "FETCH_FAILED") == 0   # not a refused directory: none arrived
    assert tax.directory.version == 1
    # Reported in health as well: /readyz's info, without making the node unready (its
    # directory is still valid, and it keeps serving until that one expires).
    readiness = bed.servers["tax"].readiness
    assert readiness.ready()[0] is True
    pull = readiness.info()["directory_pull"]
    assert (pull["failures"], pull["last_refusal"]) == (1, "FETCH_FAILED")
    from hedui.node.ops_http import ops_app

    body = _wsgi_json(ops_app(tax.metrics, readiness), "/readyz")
    assert body["status"] == "ready" and body["info"]["directory_pull"]["failures"] == 1
    # The source back: the next pull clears it.
    tax.config.directory.sources = [str(bed.published)]
    assert puller.tick() == 60.0
    assert readiness.info()["directory_pull"]["failures"] == 0 and readiness.info()["directory_pull"]["last_refusal"] is None


def _wsgi_json(app, path: str) -> dict:
    import json

    got: list = []
    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET"}, lambda status, headers: got.append(status)))
    assert got and got[0].startswith(("200", "503"))
    return json.loads(body)


def test_maintenance_flag_makes_cases_show_maintenance(bed):
    hub = bed.runtime("hub")
    _publish(bed, version=2, members_extra={"tax": {"maintenance": True}})
    bed.servers["hub"].puller.tick()
    assert hub.directory.member("tax").maintenance
    ref = open_case(hub, [(resident(1, SEED).id_number, "member")], purpose="dibao",
                    consent_digest=consent_digest_of(b"scan"), operator="cw01", region="370304")
    res = run_case(hub, ref)
    assert [(o.provider, o.status) for o in res.outcomes] == [("tax", "maintenance")]
    assert bed.runtime("tax").metrics.registry.get_sample_value(
        "hedui_rpc_total", {"method": "/hedui.v1.LookupService/Lookup", "code": "OK"}) is None   # never called
    # Its own health says so once it has pulled the directory: /readyz's check and gRPC health.
    tax = bed.servers["tax"]
    assert _own_health(tax) == (True, health_pb2.HealthCheckResponse.SERVING)
    tax.puller.tick()
    ready, checks = tax.readiness.ready()
    assert not ready and checks["maintenance"] == (False, "in maintenance by directory v2")
    assert _own_health(tax) == (False, health_pb2.HealthCheckResponse.NOT_SERVING)
    # The flag lifted: the next run asks tax again, and tax is ready again.
    _publish(bed, version=3)
    _pull_all(bed)
    assert [o.status for o in run_case(hub, ref).outcomes] == ["ok"]
    assert _own_health(tax) == (True, health_pb2.HealthCheckResponse.SERVING)


def _own_health(ns) -> tuple[bool, int]:
    """The node's readiness and its gRPC health for the node as a whole ("")."""
    st = ns.health.Check(health_pb2.HealthCheckRequest(service=""), None).status
    return ns.readiness.ready()[0], st


def test_trust_anchor_must_match_the_authority_key(bed):
    cfg = load_config(bed.config_path("tax"))
    raw = load_public("authority", cfg.path(cfg.directory.authority_key)).raw
    cfg.directory.trust_anchor = "0" * 64
    with pytest.raises(ConfigError) as e:
        Runtime.from_config(cfg, clock=FixedClock(NOW))
    assert "trust anchor" in e.value.message
    cfg.directory.trust_anchor = hashlib.sha256(raw).hexdigest()
    Runtime.from_config(cfg, clock=FixedClock(NOW)).close()


def test_certificate_renewal_overlap_without_downtime(bed):
    """`hedui keys renew`: the renewed certificate is listed beside the current one; peers
    accept either, so the member switches with its own restart only."""
    from hedui.keys.ca import cert_fingerprint, load_cert
    from hedui.node.errors import ConfigError as _CE
    from hedui.v1 import node_pb2

    nxt = fed.init_member(bed.member_dir("tax-next"), "tax", "127.0.0.1", bed.passphrase.encode())
    cur = bed.member_dir("tax") / "tls.crt"
    new_crt = bed.member_dir("tax-next") / "tls.crt"
    cert = fed.renew_cert(bed.authority, nxt.tls_csr, cur, new_crt, bed.ca_passphrase.encode(), now=NOW)
    assert cert_fingerprint(cert) != cert_fingerprint(load_cert(cur))
    # A CSR for another member, or a current certificate already expired, is refused.
    other = fed.init_member(bed.member_dir("x"), "hub", "127.0.0.1", bed.passphrase.encode())
    with pytest.raises(_CE, match="CN: got 'hub', want 'tax'"):
        fed.renew_cert(bed.authority, other.tls_csr, cur, bed.root / "x.crt", bed.ca_passphrase.encode(), now=NOW)
    with pytest.raises(_CE, match="expired"):
        fed.renew_cert(bed.authority, nxt.tls_csr, cur, bed.root / "x.crt", bed.ca_passphrase.encode(),
                       now=load_cert(cur).not_valid_after_utc)
    _publish(bed, version=2, members_extra={"tax": {"renewed_certs": ["members/tax-next/tls.crt"]}})
    _pull_all(bed)
    assert bed.runtime("hub").directory.cert_fingerprints("tax") == {cert_fingerprint(load_cert(cur)), cert_fingerprint(cert)}
    # The member installs the renewed certificate and key, and restarts.
    bed.stop(["tax"])
    (bed.member_dir("tax") / "tls.crt").write_bytes(new_crt.read_bytes())
    (bed.member_dir("tax") / "tls.key").write_bytes((bed.member_dir("tax-next") / "tls.key").read_bytes())
    bed.start(["tax"])
    tax = bed.runtime("tax")
    assert tax.directory.version == 2
    with PeerClient.to_member(tax, "hub") as c:   # the hub knows tax by its renewed certificate
        assert c.node.Ping(node_pb2.PingRequest(nonce=b"r"), timeout=5).caller == "tax"
    with PeerClient.to_member(bed.runtime("hub"), "tax") as c:
        assert c.node.Ping(node_pb2.PingRequest(nonce=b"s"), timeout=5).member == "tax"


def test_a_peer_serves_its_current_directory_when_the_source_is_down(bed, tmp_path):
    """The authority's source gone: a node still gets v2 from a peer that has it
    (NodeService/GetDirectory), verified as from any source."""
    tax, hub = bed.runtime("tax"), bed.runtime("hub")
    _publish(bed, version=2)
    bed.servers["hub"].puller.tick()
    assert hub.directory.version == 2
    tax.config.directory.sources = [str(tmp_path / "gone.json"), "peer:hub"]
    assert bed.servers["tax"].puller.tick() == 60.0
    assert tax.directory.version == 2 and bed.servers["tax"].puller.last_source == "peer:hub"
