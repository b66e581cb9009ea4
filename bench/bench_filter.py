"""Issue 14 benchmark: signed token filters (node/crosscheck), against baselines in the same run.

    python bench/bench_filter.py [--rounds 3] [--sizes 1000000,10000000] [--population 100000]
                                 [--resident 1000000] [--overlap 10000] [--skip build,psi,codec] [--json]

(a) build: filter size and build time of Hedui's sharded Golomb-coded set (one process, and a
    2-process pool) against today's GetTokenFilter blob (zlib level 6 over the sorted 16-byte
    token prefixes) on the same uniformly random 64-byte tokens (statistically what OPRF outputs
    are), rounds interleaved; plus the hub's per-core decode rate.
(b) cross-check: a population of 10^5 identity numbers against a department of 10^6 (10^4 in
    common), both as synthetic GB 11643 numbers. Hedui: real RFC 9497 tokens (``ServerKey.token``,
    cached in bench/results/), the provider's filter; timed: the hub's receipt of the filter (chunk
    assembly, SHA-256 per shard, decode check) and the local intersection; the OPRF round trip
    (blind, evaluate_batch, finalize) timed on a 4,096-id sample per round and scaled to the
    population. OpenMined PSI 2.0.4 (``pip install -e .[bench]``; GCS, fpr 10^-9, reveal
    intersection): the whole protocol — client request, server setup, server response, client
    intersection — on the same identity numbers. Bytes: serialised message sizes.
(c) codec options at 10^6 items, 10^5 queries, one shard: split layout + NumPy (used) vs the
    split layout walked in pure Python vs the BIP-158 layout walked in pure Python.

Every figure is min and median over ``--rounds`` interleaved rounds after a warm-up. Results
are figures, not assertions; the machine's other load shows in them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from multiprocessing import get_context
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, report

from hedui.adapters.synthetic import resident
from hedui.keys import oprf
from hedui.node.crosscheck import filterfmt, gcs, shards
from hedui.v1 import common_pb2, pseudonym_pb2

KEY_SEED = bytes(range(32))
ID_SEED = 3
DATA_DATE = date(2026, 10, 31)
CACHE = Path(__file__).resolve().parent / "results" / "filter-cache"
SAMPLE = 4096
PSI_FPR = 1e-9
#: Upper bound of a header entry in protobuf: tags, varints for index/count/size, 32-byte digest.
HEADER_ENTRY_BYTES = 52
#: Fixed header fields plus one DSSE signature (key id, 64-byte Ed25519 signature), upper bound.
HEADER_FIXED_BYTES = 320


def stats(xs: list[float]) -> tuple[float, float]:
    return min(xs), statistics.median(xs)


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=None, transient=True, disable=not sys.stderr.isatty())


# --- (a) build ---------------------------------------------------------------------------------


def today_blob(tokens: np.ndarray) -> bytes:
    """svc_provider.GetTokenFilter's current format: zlib-6 of the sorted distinct 16-byte prefixes
    (computed with NumPy here, not with its Python set, so only the format's cost is compared)."""
    pre = np.ascontiguousarray(tokens[:, :16]).view("S16").ravel()
    return zlib.compress(np.unique(pre).tobytes(), 6)


def bench_build(sizes: list[int], rounds: int, pool: ProcessPoolExecutor) -> list[dict]:
    rows = []
    for n in sizes:
        tokens = np.random.default_rng(n).integers(0, 256, size=(n, shards.TOKEN_SIZE), dtype=np.uint8)
        shards.build(tokens[: min(n, 100_000)])  # warm-up
        shards.build(tokens[: min(n, 100_000)], executor=pool)
        t_ser, t_pool, t_zlib, t_dec = [], [], [], []
        for _ in range(rounds):
            t = time.perf_counter(); filt = shards.build(tokens); t_ser.append(time.perf_counter() - t)
            t = time.perf_counter(); pooled = shards.build(tokens, executor=pool); t_pool.append(time.perf_counter() - t)
            t = time.perf_counter(); blob = today_blob(tokens); t_zlib.append(time.perf_counter() - t)
            t = time.perf_counter()
            for c, b in zip(filt.counts, filt.bodies):
                gcs.decode(b, c, filt.p, filt.m)
            t_dec.append(time.perf_counter() - t)
            assert pooled == filt
        header = (1 << filt.shard_bits) * HEADER_ENTRY_BYTES + HEADER_FIXED_BYTES
        (smin, smed), (pmin, pmed), (zmin, zmed), (dmin, dmed) = map(stats, (t_ser, t_pool, t_zlib, t_dec))
        rows.append({
            "tokens": n, "shards": 1 << filt.shard_bits,
            "filter bytes": filt.size, "header bytes ≤": header,
            "bits/token": filt.size * 8 / n, "today bytes": len(blob), "today bits/token": len(blob) * 8 / n,
            "size / today": filt.size / len(blob),
            "build 1 proc s min/med": f"{smin:.2f} / {smed:.2f}", "build 2 procs s min/med": f"{pmin:.2f} / {pmed:.2f}",
            "today s min/med": f"{zmin:.2f} / {zmed:.2f}", "build/today (med)": smed / zmed,
            "build tokens/s/core": n / smin, "decode items/s/core": n / dmin,
        })
        del tokens, filt, pooled, blob
    return rows


# --- (b) cross-check ---------------------------------------------------------------------------

_KEY: oprf.ServerKey | None = None


def _init(key: oprf.ServerKey) -> None:
    global _KEY
    _KEY = key


def _tokens_of(ids: list[str]) -> bytes:
    assert _KEY is not None
    return b"".join(_KEY.token(i) for i in ids)


def tokens_for(ids: list[str], key: oprf.ServerKey, pool_size: int, label: str) -> np.ndarray:
    """``F(k, id)`` for every id (RFC 9497 Evaluate), cached on disk by the ids' digest."""
    digest = hashlib.sha256("\n".join(ids).encode() + key.public_key_bytes).hexdigest()[:16]
    path = CACHE / f"tokens-{len(ids)}-{digest}.npy"
    if path.exists():
        return np.load(path)
    step = 5_000
    parts = []
    with ProcessPoolExecutor(pool_size, mp_context=get_context("forkserver"), initializer=_init, initargs=(key,)) as ex, progress() as bar:
        task = bar.add_task(f"OPRF tokens for {label}", total=len(ids))
        for chunk in ex.map(_tokens_of, [ids[i: i + step] for i in range(0, len(ids), step)]):
            parts.append(chunk)
            bar.advance(task, len(chunk) // 64)
    arr = np.frombuffer(b"".join(parts), dtype=np.uint8).reshape(-1, 64)
    CACHE.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def hedui_round(header, content, pop_tokens, overlap: int) -> dict:
    t = time.perf_counter()
    asm = filterfmt.Assembler(header, filterfmt.refresh_plan(None, header))
    for c in filterfmt.chunks(content):
        asm.add(c)
    got = asm.result()
    t_recv = time.perf_counter() - t
    t = time.perf_counter()
    hit = shards.intersect(pop_tokens, got)
    t_int = time.perf_counter() - t
    assert hit[:overlap].all(), "a false negative"
    return {"receive": t_recv, "intersect": t_int, "found": int(hit.sum())}


def oprf_round(key: oprf.ServerKey, ids: list[str]) -> dict:
    """One batch through the hub's and the provider's halves of the RFC 9497 VOPRF."""
    t = time.perf_counter(); st = oprf.blind(ids); t_blind = time.perf_counter() - t
    t = time.perf_counter(); elements, proof = key.evaluate_batch(st.blinded); t_eval = time.perf_counter() - t
    t = time.perf_counter(); toks = oprf.finalize(st, elements, proof, key.public_key_bytes); t_fin = time.perf_counter() - t
    t = time.perf_counter(); key.token(ids[0]); [key.token(i) for i in ids[1:257]]; t_tok = (time.perf_counter() - t) / 257
    assert toks[0] == key.token(ids[0])
    req = pseudonym_pb2.EvaluateRequest(
        context=common_pb2.RequestContext(purpose=common_pb2.PURPOSE_BULK_CROSS_CHECK, case_ref="BENCH", request_id=os.urandom(16)),
        epoch=1, blinded_elements=st.blinded)
    resp = pseudonym_pb2.EvaluateResponse(epoch=1, evaluated_elements=elements, proof=proof)
    n = len(ids)
    return {"blind": t_blind / n, "evaluate": t_eval / n, "finalize": t_fin / n, "token": t_tok,
            "bytes_per_batch": req.ByteSize() + resp.ByteSize(), "batch": n}


def psi_round(psi, pop_ids: list[str], dept_ids: list[str]) -> dict:
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    t = time.perf_counter(); req = client.CreateRequest(pop_ids); t_req = time.perf_counter() - t
    t = time.perf_counter(); setup = server.CreateSetupMessage(PSI_FPR, len(pop_ids), dept_ids, psi.DataStructure.GCS); t_setup = time.perf_counter() - t
    t = time.perf_counter(); resp = server.ProcessRequest(req); t_resp = time.perf_counter() - t
    t = time.perf_counter(); inter = client.GetIntersection(setup, resp); t_int = time.perf_counter() - t
    return {"request": t_req, "setup": t_setup, "response": t_resp, "intersect": t_int, "found": len(inter),
            "setup_bytes": setup.ByteSize(), "request_bytes": req.ByteSize(), "response_bytes": resp.ByteSize()}


def bench_crosscheck(population: int, resident_n: int, overlap: int, rounds: int, pool_size: int,
                     with_psi: bool) -> tuple[list[dict], dict]:
    psi = None
    if with_psi:
        try:
            import private_set_intersection.python as psi
        except ImportError:
            raise SystemExit("bench_filter: OpenMined PSI is not installed; run `.venv/bin/pip install -e .[bench]` or pass --skip psi") from None
    key = oprf.ServerKey.derive(KEY_SEED, 1)
    dept_ids = [resident(i, ID_SEED).id_number for i in range(1, resident_n + 1)]
    pop_ids = dept_ids[resident_n - overlap:] + [resident(resident_n + i, ID_SEED).id_number for i in range(1, population - overlap + 1)]
    dept_tokens = tokens_for(dept_ids, key, pool_size, f"{resident_n:,} residents")
    pop_tokens = tokens_for(pop_ids, key, pool_size, f"{population:,} population")
    t = time.perf_counter()
    content = shards.build(dept_tokens)
    t_build = time.perf_counter() - t
    header = filterfmt.header_for(content, provider="vehicles", epoch=1, data_date=DATA_DATE)
    header_bytes = (1 << header.shard_bits) * HEADER_ENTRY_BYTES + HEADER_FIXED_BYTES
    # OpenMined's fpr bounds the whole intersection (it divides by the client's set size);
    # Hedui's 2^-30 is per query. The same whole-set bound for Hedui: 2^-30 / population.
    strict_bits = (population * gcs.M - 1).bit_length()
    strict = shards.build(dept_tokens, p=strict_bits, m=1 << strict_bits, shard_bits=content.shard_bits)
    strict_header = filterfmt.header_for(strict, provider="vehicles", epoch=1, data_date=DATA_DATE)

    # Warm-up at a tenth of the size, both sides.
    hedui_round(header, content, pop_tokens[: population // 10], overlap // 10)
    oprf_round(key, pop_ids[:256])
    if psi:
        psi_round(psi, pop_ids[: population // 10], dept_ids[: resident_n // 10])

    H, OM, S = [], [], []
    with progress() as bar:
        task = bar.add_task("cross-check rounds", total=rounds)
        for r in range(rounds):
            H.append(hedui_round(header, content, pop_tokens, overlap))
            H[-1]["strict"] = hedui_round(strict_header, strict, pop_tokens, overlap)
            start = (r * SAMPLE) % max(1, population - SAMPLE)
            OM.append(oprf_round(key, pop_ids[start: start + SAMPLE]))
            if psi:
                S.append(psi_round(psi, pop_ids, dept_ids))
            bar.advance(task)

    def col(xs, k):
        return stats([x[k] for x in xs])

    recv, inter = col(H, "receive"), col(H, "intersect")
    step = (min(h["receive"] + h["intersect"] for h in H), statistics.median(h["receive"] + h["intersect"] for h in H))
    per = {k: col(OM, k) for k in ("blind", "evaluate", "finalize", "token")}
    oprf_el = (sum(per[k][0] for k in ("blind", "evaluate", "finalize")), sum(per[k][1] for k in ("blind", "evaluate", "finalize")))
    oprf_bytes = OM[0]["bytes_per_batch"] / OM[0]["batch"] * population
    filter_bytes = content.size + header_bytes
    e2e = (oprf_el[0] * population + step[0], oprf_el[1] * population + step[1])
    provider_tokens = (per["token"][0] * resident_n, per["token"][1] * resident_n)
    e2e_cold = (e2e[0] + provider_tokens[0] + t_build, e2e[1] + provider_tokens[1] + t_build)
    rows = [
        {"side": "Hedui", "part": "filter receipt (chunks, SHA-256, decode check)", "s min": recv[0], "s median": recv[1], "bytes": filter_bytes},
        {"side": "Hedui", "part": "local intersection", "s min": inter[0], "s median": inter[1], "bytes": 0},
        {"side": "Hedui", "part": "intersection step (receipt + intersection)", "s min": step[0], "s median": step[1], "bytes": filter_bytes},
        {"side": "Hedui", "part": f"OPRF blind+evaluate+finalize × {population:,} (from {SAMPLE:,}-id sample)", "s min": oprf_el[0] * population, "s median": oprf_el[1] * population, "bytes": int(oprf_bytes)},
        {"side": "Hedui", "part": "end-to-end estimate (OPRF + filter + intersection)", "s min": e2e[0], "s median": e2e[1], "bytes": int(oprf_bytes + filter_bytes)},
        {"side": "Hedui", "part": f"+ provider's tokens for {resident_n:,} (index) and filter build", "s min": e2e_cold[0], "s median": e2e_cold[1], "bytes": int(oprf_bytes + filter_bytes)},
        {"side": "Hedui", "part": f"intersection step at OpenMined's whole-set rate (P = log2 M = {strict_bits})",
         "s min": min(h["strict"]["receive"] + h["strict"]["intersect"] for h in H),
         "s median": statistics.median(h["strict"]["receive"] + h["strict"]["intersect"] for h in H),
         "bytes": strict.size + header_bytes},
    ]
    extra = {
        "hedui found": H[0]["found"], "overlap": overlap,
        "hedui per-id µs blind/evaluate/finalize (min)": [round(per[k][0] * 1e6, 1) for k in ("blind", "evaluate", "finalize")],
        "provider F(k,id) µs (min)": round(per["token"][0] * 1e6, 1),
        "filter build s (one process, tokens given)": round(t_build, 3),
        "filter shards": 1 << header.shard_bits,
    }
    if psi:
        p = {k: col(S, k) for k in ("request", "setup", "response", "intersect")}
        tot = (min(sum(s[k] for k in p) for s in S), statistics.median(sum(s[k] for k in p) for s in S))
        b = S[0]
        psi_bytes = b["setup_bytes"] + b["request_bytes"] + b["response_bytes"]
        rows += [
            {"side": "OpenMined", "part": "client request (encrypt population)", "s min": p["request"][0], "s median": p["request"][1], "bytes": b["request_bytes"]},
            {"side": "OpenMined", "part": "server setup (encrypt + GCS of department)", "s min": p["setup"][0], "s median": p["setup"][1], "bytes": b["setup_bytes"]},
            {"side": "OpenMined", "part": "server response (re-encrypt request)", "s min": p["response"][0], "s median": p["response"][1], "bytes": b["response_bytes"]},
            {"side": "OpenMined", "part": "client intersection", "s min": p["intersect"][0], "s median": p["intersect"][1], "bytes": 0},
            {"side": "OpenMined", "part": "whole protocol", "s min": tot[0], "s median": tot[1], "bytes": psi_bytes},
        ]
        extra.update({
            "openmined found": S[0]["found"],
            "ratio time, intersection step: Hedui receipt+intersection / OpenMined whole protocol (median)": step[1] / tot[1],
            "ratio time, local step only: Hedui intersection / OpenMined client intersection (median)": inter[1] / p["intersect"][1],
            "ratio time, end-to-end: Hedui OPRF+filter+intersection / OpenMined whole protocol (median)": e2e[1] / tot[1],
            "ratio time, end-to-end incl. provider tokens and build (median)": e2e_cold[1] / tot[1],
            "ratio bytes, intersection step: filter+header / OpenMined setup+request+response": filter_bytes / psi_bytes,
            "ratio bytes, end-to-end: OPRF+filter+header / OpenMined setup+request+response": (oprf_bytes + filter_bytes) / psi_bytes,
            "ratio bytes, filter+header / OpenMined setup alone": filter_bytes / b["setup_bytes"],
            f"ratio bytes, whole-set-rate filter (P={strict_bits}) + header / OpenMined setup+request+response": (strict.size + header_bytes) / psi_bytes,
            "openmined setup bits per department item": b["setup_bytes"] * 8 / resident_n,
        })
    return rows, extra


# --- (c) codec options ---------------------------------------------------------------------------


def _walk(values_iter, queries: list[int]) -> int:
    hits, cur = 0, next(values_iter, None)
    for q in queries:
        while cur is not None and cur < q:
            cur = next(values_iter, None)
        if cur is None:
            break
        hits += cur == q
    return hits


def bench_codec(n: int, nq: int, rounds: int) -> list[dict]:
    rng = np.random.default_rng(7)
    f = n * gcs.M
    values = np.unique(rng.integers(0, f, size=n, dtype=np.uint64))
    n = len(values)
    queries = np.concatenate([values[:: n // (nq // 10)][: nq // 10], rng.integers(0, f, size=nq - nq // 10, dtype=np.uint64)])
    qs = sorted(queries.tolist())
    enc_t = {"split": [], "bip158": []}
    dec_t = {"split + NumPy (used)": [], "split, Python walk": [], "BIP-158 layout, Python walk": []}
    for _ in range(rounds):
        t = time.perf_counter(); split = gcs.encode(values); enc_t["split"].append(time.perf_counter() - t)
        t = time.perf_counter(); bip = gcs.encode_bip158(values, gcs.P, gcs.M); enc_t["bip158"].append(time.perf_counter() - t)
        t = time.perf_counter(); a = int(gcs.intersect(split, n, queries).sum()); dec_t["split + NumPy (used)"].append(time.perf_counter() - t)
        t = time.perf_counter(); b = _walk(gcs.iter_values(split, n), qs); dec_t["split, Python walk"].append(time.perf_counter() - t)
        t = time.perf_counter(); c = _walk(gcs.iter_bip158(bip, n, gcs.P, gcs.M), qs); dec_t["BIP-158 layout, Python walk"].append(time.perf_counter() - t)
        assert a == b == c
    base = statistics.median(dec_t["split + NumPy (used)"])
    rows = []
    for k, xs in dec_t.items():
        lo, med = stats(xs)
        layout = "split" if k.startswith("split") else "bip158"
        rows.append({"intersection of 10^5 queries, 10^6 items": k, "s min": lo, "s median": med, "× used (median)": med / base,
                     "ns/item (min)": lo / n * 1e9, "bytes": len(split) if layout == "split" else len(bip),
                     "encode s (median)": statistics.median(enc_t[layout])})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--population", type=int, default=100_000)
    ap.add_argument("--resident", type=int, default=1_000_000)
    ap.add_argument("--overlap", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: build, crosscheck, psi, codec")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.rounds < 3:
        raise SystemExit("bench_filter: --rounds: got fewer than 3, want at least 3 (min and median of >= 3)")
    skip = set(filter(None, a.skip.split(",")))
    out: dict = {}
    with ProcessPoolExecutor(a.workers, mp_context=get_context("forkserver")) as pool:
        if "build" not in skip:
            out["build"] = bench_build([int(x) for x in a.sizes.split(",")], a.rounds, pool)
    if "crosscheck" not in skip:
        out["crosscheck"], out["crosscheck_extra"] = bench_crosscheck(
            a.population, a.resident, a.overlap, a.rounds, a.workers, "psi" not in skip)
    if "codec" not in skip:
        out["codec"] = bench_codec(1_000_000, 100_000, a.rounds)
    if a.json:
        print(json.dumps({"benchmark": "bench_filter", "machine": machine(), "rounds": a.rounds, **out}, indent=1, ensure_ascii=False, default=str))
        return
    if "build" in out:
        report("bench_filter (a): filter size and build time, Hedui GCS vs today's zlib blob", out["build"], json_out=False)
    if "crosscheck" in out:
        report(f"bench_filter (b): {a.population:,} population vs {a.resident:,} department, Hedui vs OpenMined PSI",
               out["crosscheck"], json_out=False, extra=out["crosscheck_extra"])
    if "codec" in out:
        report("bench_filter (c): codec options", out["codec"], json_out=False)


if __name__ == "__main__":
    main()
