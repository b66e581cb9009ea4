"""Identity numbers for the oracle, written from GB 11643-1999 itself (not from Hedui's code):
the canonical 18-character form of whatever a department stored, or ``None`` if it is not a
valid resident number (blank, organisation code, wrong check character, impossible birth date)."""

from __future__ import annotations

from datetime import date

# GB 11643-1999 §5: W_i = 2^(18-i) mod 11 for i = 1..17; check character by the sum mod 11.
_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_C = "10X98765432"
_FOLD = {0xFF10 + i: 0x30 + i for i in range(10)} | {0xFF38: ord("X"), 0xFF58: ord("X"), ord("x"): ord("X")}


def _check(body: str) -> str:
    return _C[sum(int(c) * w for c, w in zip(body, _W)) % 11]


def canonical(raw: str | None, latest_birth: date = date(2026, 12, 31)) -> str | None:
    if raw is None:
        return None
    t = raw.strip(" \t\u3000").translate(_FOLD)
    if len(t) == 15 and t.isascii() and t.isdigit():
        body = t[:6] + "19" + t[6:]
        t = body + _check(body)
    elif not (len(t) == 18 and t[:17].isascii() and t[:17].isdigit() and (t[17] == "X" or "0" <= t[17] <= "9")):
        return None
    if _check(t[:17]) != t[17]:
        return None
    try:
        born = date(int(t[6:10]), int(t[10:12]), int(t[12:14]))
    except ValueError:
        return None
    return t if date(1900, 1, 1) <= born <= latest_birth else None
