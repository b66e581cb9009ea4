"""Issue 14 benchmark: the bulk cross-check's intersection as ``hedui crosscheck run`` does it,
against OpenMined PSI 2.0.4 on the same sets in the same run.

    python bench/bench_crosscheck.py [--rounds 3] [--population 100000] [--resident 1000000]
                                     [--overlap 10000] [--build-sizes 1000000,10000000] [--json]

Sets: a population of 10^5 synthetic GB 11643 identity numbers against a department of 10^6
(10^4 in common); tokens are real RFC 9497 outputs (``ServerKey.token``, cached on disk by
bench_filter's cache). Per round, interleaved:

* **Hedui** — what the hub does (node/crosscheck/fetch.py, run.py): parse the streamed
  ``GetTokenFilterResponse`` messages as they come off the wire, verify the DSSE-signed header
  (Ed25519, the real provider signature, ``wire.verify_header``), assemble and check every
  shard against its signed SHA-256 and decode check (``filterfmt.Assembler``), intersect the
  population's tokens locally (``shards.intersect``). Bytes: the serialised stream messages.
  The OPRF round trip for the population (blind, evaluate_batch, finalize) is timed on a
  4,096-id batch and scaled; the Lookups for the matches are the request bytes of
  ``LookupRequest`` batches of 4,096 matched tokens with one field (answers not counted).
* **OpenMined** — client request, server setup (GCS, fpr 10^-9), server response, client
  intersection, on the same identity numbers (``bench_filter.psi_round``).

Filter build (provider side: tokens given, shards built, header signed) at each build size,
on uniformly random 64-byte tokens (statistically what OPRF outputs are).

Every figure is min and median over ``--rounds`` interleaved rounds after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report
from bench_filter import DATA_DATE, ID_SEED, KEY_SEED, SAMPLE, oprf_round, psi_round, tokens_for

from hedui.adapters.synthetic import resident
from hedui.keys import oprf
from hedui.keys.signing import SigningKey
from hedui.node.crosscheck import filterfmt, shards
from hedui.node.crosscheck.wire import sign_header, verify_header
from hedui.v1 import common_pb2, lookup_pb2, pseudonym_pb2


def stream_messages(header, envelope, content) -> list[bytes]:
    """The provider's GetTokenFilter stream, serialised as it goes on the wire."""
    out = [pseudonym_pb2.GetTokenFilterResponse(epoch=1, total=header.total, header=envelope).SerializeToString()]
    out += [pseudonym_pb2.GetTokenFilterResponse(epoch=1, total=header.total, data=c.data, shard=c.shard, offset=c.offset).SerializeToString()
            for c in filterfmt.chunks(content)]
    return out


def hedui_round(wire: list[bytes], keys, pop_tokens: np.ndarray, overlap: int) -> dict:
    t = time.perf_counter()
    first = pseudonym_pb2.GetTokenFilterResponse.FromString(wire[0])
    header = verify_header(first.header, keys, "cheguan", epoch=1)
    asm = filterfmt.Assembler(header, filterfmt.refresh_plan(None, header))
    for raw in wire[1:]:
        m = pseudonym_pb2.GetTokenFilterResponse.FromString(raw)
        asm.add(filterfmt.FilterChunk(m.shard, m.offset, m.data))
    filt = asm.result()
    t_recv = time.perf_counter() - t
    t = time.perf_counter()
    hit = shards.intersect(pop_tokens, filt)
    t_int = time.perf_counter() - t
    assert hit[:overlap].all(), "a false negative"
    return {"receive": t_recv, "intersect": t_int, "found": int(hit.sum()), "matches": np.flatnonzero(hit)}


def lookup_bytes(tokens: np.ndarray) -> int:
    total = 0
    for i in range(0, len(tokens), 4096):
        req = lookup_pb2.LookupRequest(
            context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_BULK_CROSS_CHECK, case_ref="CC-2026-10-0123456789ab",
                                              request_id=os.urandom(16), consent_digest=os.urandom(32), operator="S01"),
            epoch=1, tokens=[bytes(t) for t in tokens[i: i + 4096]], queries=[lookup_pb2.FieldQuery(field="vehicle_max_price")],
            reference_month="2026-10")
        total += req.ByteSize()
    return total


def bench_build(sizes: list[int], rounds: int, signer: SigningKey) -> list[dict]:
    rows = []
    for n in sizes:
        toks = np.frombuffer(os.urandom(64 * n), dtype=np.uint8).reshape(-1, 64)
        ts, size = [], 0
        for _ in range(rounds):
            t = time.perf_counter()
            content = shards.build(toks)
            header = filterfmt.header_for(content, provider="cheguan", epoch=1, data_date=DATA_DATE)
            env = sign_header(header, signer)
            ts.append(time.perf_counter() - t)
            size = sum(len(m) for m in stream_messages(header, env, content))
        rows.append({"part": f"filter build + sign, {n:,} tokens (one process)", "s min": min(ts), "s median": statistics.median(ts),
                     "bytes": size, "bits/token": size * 8 / n})
        del toks
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--population", type=int, default=100_000)
    ap.add_argument("--resident", type=int, default=1_000_000)
    ap.add_argument("--overlap", type=int, default=10_000)
    ap.add_argument("--build-sizes", default="1000000")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--build-only", action="store_true", help="only the filter build figures")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.build_only:
        report("bench_crosscheck (build)", bench_build([int(s) for s in a.build_sizes.split(",") if s], a.rounds,
                                                       SigningKey.generate("cheguan")), json_out=a.json)
        return
    import private_set_intersection.python as psi

    key = oprf.ServerKey.derive(KEY_SEED, 1)
    signer = SigningKey.generate("cheguan")
    keys = {signer.public.keyid: signer.public}
    dept_ids = [resident(i, ID_SEED).id_number for i in range(1, a.resident + 1)]
    pop_ids = dept_ids[a.resident - a.overlap:] + [resident(a.resident + i, ID_SEED).id_number for i in range(1, a.population - a.overlap + 1)]
    dept_tokens = tokens_for(dept_ids, key, a.workers, f"{a.resident:,} residents")
    pop_tokens = tokens_for(pop_ids, key, a.workers, f"{a.population:,} population")
    content = shards.build(dept_tokens)
    header = filterfmt.header_for(content, provider="cheguan", epoch=1, data_date=DATA_DATE)
    wire = stream_messages(header, sign_header(header, signer), content)
    filter_bytes = sum(len(m) for m in wire)

    hedui_round(wire, keys, pop_tokens[: a.population // 10], a.overlap // 10)
    psi_round(psi, pop_ids[: a.population // 10], dept_ids[: a.resident // 10])
    H, S, OP = [], [], []
    for r in range(a.rounds):
        H.append(hedui_round(wire, keys, pop_tokens, a.overlap))
        S.append(psi_round(psi, pop_ids, dept_ids))
        start = (r * SAMPLE) % max(1, a.population - SAMPLE)
        OP.append(oprf_round(key, pop_ids[start: start + SAMPLE]))

    def mm(xs):
        return min(xs), statistics.median(xs)

    step = mm([h["receive"] + h["intersect"] for h in H])
    psi_t = mm([s["request"] + s["setup"] + s["response"] + s["intersect"] for s in S])
    psi_bytes = S[0]["setup_bytes"] + S[0]["request_bytes"] + S[0]["response_bytes"]
    oprf_t = mm([(o["blind"] + o["evaluate"] + o["finalize"]) * a.population for o in OP])
    oprf_bytes = int(OP[0]["bytes_per_batch"] / OP[0]["batch"] * a.population)
    lk_bytes = lookup_bytes(pop_tokens[H[0]["matches"]])
    rows = [
        {"part": "Hedui: signed filter receipt (parse, DSSE verify, SHA-256, decode check)", "s min": min(h["receive"] for h in H),
         "s median": statistics.median(h["receive"] for h in H), "bytes": filter_bytes},
        {"part": "Hedui: local intersection", "s min": min(h["intersect"] for h in H), "s median": statistics.median(h["intersect"] for h in H), "bytes": 0},
        {"part": "Hedui: intersection (receipt + intersection)", "s min": step[0], "s median": step[1], "bytes": filter_bytes},
        {"part": f"Hedui: OPRF of the population (from {SAMPLE:,}-id batches)", "s min": oprf_t[0], "s median": oprf_t[1], "bytes": oprf_bytes},
        {"part": f"Hedui: Lookup requests for the {H[0]['found']:,} matches", "s min": 0.0, "s median": 0.0, "bytes": lk_bytes},
        {"part": "OpenMined PSI 2.0.4: whole protocol (GCS, fpr 1e-9)", "s min": psi_t[0], "s median": psi_t[1], "bytes": psi_bytes},
    ]
    extra = {
        "hedui found": H[0]["found"], "openmined found": S[0]["found"], "overlap": a.overlap,
        "ratio time, intersection / OpenMined (min)": step[0] / psi_t[0],
        "ratio time, intersection / OpenMined (median)": step[1] / psi_t[1],
        "ratio bytes, filter stream / OpenMined": filter_bytes / psi_bytes,
        "ratio time, + OPRF (median)": (step[1] + oprf_t[1]) / psi_t[1],
        "ratio bytes, + OPRF + Lookup requests": (filter_bytes + oprf_bytes + lk_bytes) / psi_bytes,
    }
    rows += bench_build([int(s) for s in a.build_sizes.split(",") if s], a.rounds, signer)
    report("bench_crosscheck", rows, json_out=a.json, extra=extra)


if __name__ == "__main__":
    main()
