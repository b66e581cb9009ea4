"""Household verification under faults: quota exhausted mid-case, a hanging department,
a department whose answer signature fails."""

from __future__ import annotations

import threading
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.server import server_options
from hedui.node.testbed import MemberPlan, Testbed, default_policy
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from hedui.v1 import lookup_pb2_grpc, pseudonym_pb2_grpc

SEED = 7


@pytest.fixture
def bed(tmp_path, monkeypatch):
    members = [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]), MemberPlan("hrss", "hrss", ["provider"])]
    # A fixed instant 30 s into a minute (2026-11-30 03:00:30 UTC), shared by every node of the
    # federation, so the quota cases below cannot straddle a minute as the wall clock could.
    tb = Testbed(tmp_path / "fed", members, residents=60, data_seed=SEED,
                 clock=FixedClock(datetime(2026, 11, 30, 3, 0, 30, tzinfo=UTC)))
    tb.create()
    # Tight quota on hrss lookups: two per minute.
    pol = default_policy(tb.members)
    for r in pol:
        if r["provider"] == "hrss" and r["method"].endswith("/Lookup"):
            r["per_minute"] = 2
    tb.policy = pol
    tb.sign_directory()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    tb.build_indexes()
    tb.start()
    yield tb
    tb.stop()


_SCANS = iter(range(1, 10_000))


def _case(tb):
    """A case under an authorisation of its own (one-off authorisations serve one case, issue 18c)."""
    ids = [(resident(n, SEED).id_number, "m") for n in (1, 2)]
    return open_case(tb.runtime("hub"), ids, purpose="dibao", consent_digest=consent_digest_of(b"auth %d" % next(_SCANS)),
                     operator="cw", region="370304")


def test_quota_exceeded_mid_case_then_completes_later(bed):
    hub = bed.runtime("hub")
    for _ in range(2):
        assert run_case(hub, _case(bed)).complete
    ref = _case(bed)
    res = run_case(hub, ref)
    st = {o.provider: o for o in res.outcomes}
    assert st["tax"].status == "ok"
    assert st["hrss"].status == "refused" and "QUOTA_EXCEEDED" in st["hrss"].reason
    # A minute later the same case completes, asking only the refused department.
    bed.clock.advance(timedelta(seconds=61))
    res2 = run_case(hub, ref)
    assert [o.provider for o in res2.outcomes] == ["hrss"] and res2.complete


class _Hang(pseudonym_pb2_grpc.PseudonymServiceServicer, lookup_pb2_grpc.LookupServiceServicer):
    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def Evaluate(self, request, context):
        self.release.wait(30)
        context.abort(grpc.StatusCode.UNAVAILABLE, "went away")


def test_hanging_department_is_unavailable_after_its_deadline(bed):
    hub = bed.runtime("hub")
    port = bed.servers["tax"].port
    rt = bed.runtime("tax")
    bed.stop(["tax"])
    release = threading.Event()
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=server_options())
    pseudonym_pb2_grpc.add_PseudonymServiceServicer_to_server(_Hang(release), s)
    creds = grpc.ssl_server_credentials([(rt.tls_key_pem, rt.tls_cert_pem)], root_certificates=rt.ca_pem, require_client_auth=True)
    assert s.add_secure_port(f"127.0.0.1:{port}", creds) == port
    s.start()
    try:
        # Drop the cached channel to the stopped node so the new server is dialled.
        hub.peers.reset("tax")
        res = run_case(hub, _case(bed), timeout=1.0, retries=1)
        st = {o.provider: o for o in res.outcomes}
        assert st["tax"].status == "unavailable" and "DEADLINE_EXCEEDED" in st["tax"].reason
        assert st["tax"].attempts == 2 and st["hrss"].status == "ok"
    finally:
        release.set()
        s.stop(0)


def test_answer_with_bad_signature_is_rejected_and_shown(bed, monkeypatch):
    hub = bed.runtime("hub")
    from hedui.keys import dsse
    from hedui.keys.signing import SigningKey

    rogue = SigningKey.generate("tax")
    real_sign = dsse.sign

    def forged(payload_type, payload, signers):
        return real_sign(payload_type, payload, [rogue] if payload_type == dsse.ANSWER else signers)

    monkeypatch.setattr("hedui.node.verification.service.dsse.sign", forged)
    res = run_case(hub, _case(bed))
    st = {o.provider: o for o in res.outcomes}
    assert st["tax"].status == "bad_signature" and "UNKNOWN_SIGNER" in st["tax"].reason
    assert not res.complete
