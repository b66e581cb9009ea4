"""Issue 4 benchmark: the pseudonym rpc over mTLS. Tokens/s for batches of 4, 64 and 4,096
through PseudonymService.Evaluate (policy, quota, audit, batched DLEQ proof) with the hub's
blind + verify + finalise, against the bare OPRF evaluation of the same batch in the same
process (the crypto floor), measured in the same run.

    python bench/bench_pseudonym.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import os
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
    ap.add_argument("--rounds", type=int, default=5)
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
                    rpc_s = blind_s = fin_s = floor_s = 0.0
                    for _ in range(a.rounds):
                        t = time.perf_counter()
                        st = oprf.blind(ids)
                        blind_s += time.perf_counter() - t
                        req = pseudonym_pb2.EvaluateRequest(
                            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_DIBAO, case_ref="BENCH", request_id=os.urandom(16)),
                            epoch=1, blinded_elements=st.blinded)
                        t = time.perf_counter()
                        r = c.pseudonym.Evaluate(req, timeout=120)
                        rpc_s += time.perf_counter() - t
                        t = time.perf_counter()
                        toks = oprf.finalize(st, list(r.evaluated_elements), r.proof, pub)
                        fin_s += time.perf_counter() - t
                        t = time.perf_counter()
                        key.evaluate_batch(st.blinded)
                        floor_s += time.perf_counter() - t
                    assert toks[0] == key.token(ids[0])
                    n = batch * a.rounds
                    rows.append({
                        "batch": batch,
                        "rpc tokens/s": n / rpc_s,
                        "floor evaluate_batch tokens/s": n / floor_s,
                        "rpc / floor": (n / rpc_s) / (n / floor_s),
                        "end-to-end tokens/s (blind+rpc+finalise)": n / (blind_s + rpc_s + fin_s),
                        "hub blind µs/token": blind_s / n * 1e6,
                        "hub verify+finalise µs/token": fin_s / n * 1e6,
                    })
        finally:
            tb.stop()
        report("bench_pseudonym (Evaluate over mTLS)", rows, json_out=a.json)


if __name__ == "__main__":
    main()
