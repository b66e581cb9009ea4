"""Test wing for the BIP-158 vectors: a Bitcoin block parser (enough to list output scripts,
BIP-144 witness serialisation included) and the basic filter's item set (BIP-158 "Contents").

Only tests import this; the codec under test is ``hedui.node.crosscheck.gcs``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from siphash24 import siphash24

VECTORS = Path(__file__).resolve().parent / "vectors" / "bip158" / "testnet-19.json"
#: BIP-158 "Construction" of the basic filter.
BASIC_P = 19
BASIC_M = 784931
_OP_RETURN = 0x6A


@dataclass(frozen=True)
class Vector:
    height: int
    block_hash: str
    block: bytes
    prev_scripts: tuple[bytes, ...]
    prev_header: bytes
    filter: bytes
    header: bytes
    note: str


def load() -> list[Vector]:
    rows = json.loads(VECTORS.read_text())
    return [
        Vector(r[0], r[1], bytes.fromhex(r[2]), tuple(bytes.fromhex(s) for s in r[3]),
               bytes.fromhex(r[4])[::-1], bytes.fromhex(r[5]), bytes.fromhex(r[6])[::-1], r[7])
        for r in rows[1:]
    ]


def dsha256(b: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(b).digest()).digest()


class _Reader:
    def __init__(self, b: bytes) -> None:
        self.b, self.i = b, 0

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.b):
            raise ValueError("block: unexpected end")
        out = self.b[self.i: self.i + n]
        self.i += n
        return out

    def compact_size(self) -> int:
        first = self.take(1)[0]
        if first < 0xFD:
            return first
        return int.from_bytes(self.take({0xFD: 2, 0xFE: 4, 0xFF: 8}[first]), "little")


def compact_size(data: bytes) -> tuple[int, int]:
    """``(value, bytes used)`` of the CompactSize at the start of ``data``."""
    r = _Reader(data)
    return r.compact_size(), r.i


def block_hash(block: bytes) -> bytes:
    """Internal byte order (the "standard little-endian representation")."""
    return dsha256(block[:80])


def output_scripts(block: bytes) -> list[bytes]:
    """Every output's scriptPubKey, in block order."""
    r = _Reader(block)
    r.take(80)
    scripts = []
    for _ in range(r.compact_size()):
        r.take(4)  # version
        segwit = r.b[r.i] == 0 and r.b[r.i + 1] == 1  # BIP-144 marker and flag
        if segwit:
            r.take(2)
        n_in = r.compact_size()
        for _ in range(n_in):
            r.take(36)
            r.take(r.compact_size())
            r.take(4)
        for _ in range(r.compact_size()):
            r.take(8)
            scripts.append(r.take(r.compact_size()))
        if segwit:
            for _ in range(n_in):
                for _ in range(r.compact_size()):
                    r.take(r.compact_size())
        r.take(4)  # lock time
    if r.i != len(block):
        raise ValueError("block: trailing bytes")
    return scripts


def basic_items(v: Vector) -> set[bytes]:
    """BIP-158 basic filter items: output scripts except OP_RETURN ones, plus the spent
    scripts; "nil" (empty) items dropped; a set, so duplicates count once."""
    outs = [s for s in output_scripts(v.block) if s and s[0] != _OP_RETURN]
    return {s for s in outs + list(v.prev_scripts) if s}


def siphash(key: bytes, item: bytes) -> int:
    """SipHash-2-4 of ``item`` as the little-endian 64-bit integer BIP-158 uses."""
    return int.from_bytes(siphash24(item, key=key).digest(), "little")
