"""Issue 4 benchmark: the pseudonym rpc over mTLS. Tokens/s for batches of 4, 64 and 4,096
through PseudonymService.Evaluate (policy, quota, audit, batched DLEQ proof) with the hub's
blind + verify + finalise, against the bare OPRF evaluation of the same batch in the same
process (the crypto floor), measured in the same run: one warm-up round, then rounds that
alternate rpc and floor; best and median per side, min and median of the per-round ratio.

    python bench/bench_pseudonym.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report

from hedui.adapters.synthetic import resident
from hedui.keys import oprf
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.client import PeerClient
from hedui.node.testbed import MemberPlan, Testbed
from hedui.v1 import common_pb2, pseudonym_pb2


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5, help="measured rounds per batch size, after one warm-up round")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tb = Testbed(Path(d) / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])], residents=20)
        tb.create()
        os.environ[PASSPHRASE_ENV] = tb.passphrase
        tb.start()
        hub = tb.runtime("hub")
        key = tb.runtime("tax").provider.keys[1]
        pub = bytes(hub.directory.member("tax").oprf_keys[0].public_key)
        rows = []
        try:
            with PeerClient.to_member(hub, "tax") as c:
                for batch in (4, 64, 4096):
                    ids = [resident(i + 1, 3).id_number for i in range(batch)]
                    rpc_t: list[float] = []
                    blind_t: list[float] = []
                    fin_t: list[float] = []
                    floor_t: list[float] = []
                    # Round 0 is a warm-up (the first call on a batch size pays for channel
                    # windows, statement caches and allocations); then rounds alternate the
                    # rpc and the floor, so load drift hits both alike.
                    for r in range(a.rounds + 1):
                        t = time.perf_counter()
                        st = oprf.blind(ids)
                        blind = time.perf_counter() - t
                        req = pseudonym_pb2.EvaluateRequest(
                            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="BENCH", request_id=os.urandom(16)),
                            epoch=1, blinded_elements=st.blinded)
                        t = time.perf_counter()
                        resp = c.pseudonym.Evaluate(req, timeout=120)
                        rpc = time.perf_counter() - t
                        t = time.perf_counter()
                        toks = oprf.finalize(st, list(resp.evaluated_elements), resp.proof, pub)
                        fin = time.perf_counter() - t
                        t = time.perf_counter()
                        key.evaluate_batch(st.blinded)
                        flo = time.perf_counter() - t
                        if r:
                            rpc_t.append(rpc)
                            blind_t.append(blind)
                            fin_t.append(fin)
                            floor_t.append(flo)
                    assert toks[0] == key.token(ids[0])
                    ratios = [f / x for x, f in zip(rpc_t, floor_t)]   # rpc rate / floor rate
                    rows.append({
                        "batch": batch,
                        "rpc tokens/s best": batch / min(rpc_t),
                        "rpc tokens/s median": batch / statistics.median(rpc_t),
                        "floor tokens/s best": batch / min(floor_t),
                        "rpc/floor min": min(ratios),
                        "rpc/floor median": statistics.median(ratios),
                        "end-to-end tokens/s median": batch / statistics.median([x + y + z for x, y, z in zip(blind_t, rpc_t, fin_t)]),
                        "hub blind µs/token": statistics.median(blind_t) / batch * 1e6,
                        "hub verify+finalise µs/token": statistics.median(fin_t) / batch * 1e6,
                    })
        finally:
            tb.stop()
        report("bench_pseudonym (Evaluate over mTLS)", rows, json_out=a.json)


if __name__ == "__main__":
    main()
