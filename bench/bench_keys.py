"""Issue 18 benchmark: what unlocking one private key costs — the defender's price once per
start, and the attacker's price per passphrase guess. The old format (PKCS#8 PBES2 from
``BestAvailableEncryption``: PBKDF2-HMAC-SHA256 at 2,048 iterations) against the new one
(keys/keyfile.py v1: scrypt N = 2^17, r = 8, p = 1, then AES-256-GCM), same Ed25519 key,
interleaved round by round so both see the same machine load. Also the format's floor
(N = 2^14, what the tests write). Guesses/s per core = 1 / median unlock time (an attacker's
GPU changes PBKDF2's figure far more than scrypt's, which is memory-bound).

    python bench/bench_keys.py [--rounds 5] [--json]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import report
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hedui.keys import keyfile
from hedui.keys.keyfile import KdfParams

PW = b"correct horse battery staple"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    rounds = max(3, a.rounds)
    key = Ed25519PrivateKey.generate()
    with tempfile.TemporaryDirectory() as d:
        old = Path(d) / "old.key"
        old.write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(PW)
        ))
        new = Path(d) / "new.key"
        new.write_bytes(keyfile.encrypt(keyfile.key_der(key), PW, purpose="signing-key", params=keyfile.DEFAULT_PARAMS))
        floor = Path(d) / "floor.key"
        floor.write_bytes(keyfile.encrypt(keyfile.key_der(key), PW, purpose="signing-key", params=KdfParams(14, 8, 1)))
        cases = {
            "old: PKCS#8 PBES2, PBKDF2 2,048 it.": lambda: keyfile.load_private_key(old, PW, purpose="signing-key"),
            "new: v1, scrypt N=2^17 r=8 p=1": lambda: keyfile.load_private_key(new, PW, purpose="signing-key"),
            "floor: v1, scrypt N=2^14 r=8 p=1": lambda: keyfile.load_private_key(floor, PW, purpose="signing-key"),
        }
        import logging

        logging.getLogger("hedui.keys").setLevel(logging.ERROR)  # the old format's warning, once per load
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(rounds):  # interleaved: one of each per round
            for name, fn in cases.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    base = statistics.median(times[next(iter(cases))])
    rows = []
    for name, xs in times.items():
        med = statistics.median(xs)
        rows.append({
            "format": name,
            "min ms": f"{min(xs) * 1e3:.1f}",
            "median ms": f"{med * 1e3:.1f}",
            "guesses/s/core": f"{1 / med:,.0f}",
            "cost × old": f"{med / base:.0f}",
        })
    report("Unlocking one private key file", rows, json_out=a.json, extra={"rounds": rounds})


if __name__ == "__main__":
    main()
