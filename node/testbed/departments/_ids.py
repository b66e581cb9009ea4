"""Identity numbers and organisation codes as department databases really hold them.

Valid resident numbers are made with the published GB 11643-1999 check (ISO 7064 MOD 11-2);
organisation codes with the GB 32100-2015 check (统一社会信用代码). The *forms* below are the
ways a department stores a valid number (padded, lower-case ``x``, full-width digits, the
15-digit legacy number) and the ways it stores a wrong one (bad check character, blank).
Nothing here validates department data: that is the product's job and the oracle's.
"""

from __future__ import annotations

import random
from datetime import date

__all__ = ["check_char", "resident_id", "legacy15", "fullwidth", "padded", "bad_check", "uscc",
           "uscc_digits", "Background"]

# GB 11643-1999 §5: weights 2^(17-i) mod 11, check characters indexed by the weighted sum mod 11.
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK = "10X98765432"


def check_char(first17: str) -> str:
    return _CHECK[sum(int(c) * w for c, w in zip(first17, _WEIGHTS)) % 11]


def resident_id(region: str, born: date, seq: int) -> str:
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + check_char(body)


def legacy15(id18: str) -> str:
    """The GB 11643-1989 number of someone born in the 1900s: no century, no check character."""
    if id18[6:8] != "19":
        raise ValueError("legacy numbers exist only for births in 1900-1999")
    return id18[:6] + id18[8:17]


def fullwidth(s: str) -> str:
    """As typed with a Chinese input method in full-width mode: ０-９ and Ｘ."""
    return s.translate({ord(str(d)): 0xFF10 + d for d in range(10)} | {ord("X"): 0xFF38})


def padded(s: str, width: int = 20, lead: int = 0) -> str:
    """A CHAR(n) export: trailing (and sometimes leading) ASCII spaces."""
    return (" " * lead + s).ljust(width)


def bad_check(id18: str) -> str:
    """A typing error in the check character: same first 17 digits, wrong last character."""
    right = id18[17]
    return id18[:17] + ("0" if right != "0" else "1")


# GB 32100-2015 §4: 31 characters (no I, O, Z, S, V), weights 3^(i) mod 31.
_USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def _uscc_check(first17: str) -> str:
    total = sum(_USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS))
    return _USCC_CHARS[(31 - total % 31) % 31]


def uscc(rng: random.Random, region: str = "370303", kind: str = "91") -> str:
    """A unified social credit code; ``kind`` "91" is a company, "92" an individual business."""
    org = "".join(rng.choice(_USCC_CHARS[:10] + "ABCDEFGHJKLMNPQRTUWXY") for _ in range(8))
    body = f"{kind}{region}{org}{rng.choice(_USCC_CHARS[:10])}"
    return body + _uscc_check(body)


def uscc_digits(rng: random.Random, region: str = "370303") -> str:
    """An all-digit code (a public institution, 12…): 18 digits, shaped like a resident number.

    Read as a resident number its "birth date" is 03xx-xx-xx (the region's last two digits and
    the organisation code), which no resident has, so it must never be taken for a person.
    """
    while True:
        body = f"12{region}" + "".join(rng.choice("0123456789") for _ in range(9))
        c = _uscc_check(body)
        if c.isdigit():
            return body + c


class Background:
    """Identity numbers for background residents: a bijection of the resident number, so a
    million residents need no set to stay unique. Region codes exclude the designed region."""

    REGIONS = ("370302", "370304", "370305", "370306", "370321", "370322", "370323")
    _FIRST = date(1930, 1, 1).toordinal()
    _DAYS = date(2024, 12, 31).toordinal() - _FIRST + 1

    def __init__(self, seed: int) -> None:
        self._space = len(self.REGIONS) * self._DAYS * 1000
        self._mult = 2_654_435_761  # gcd with the space (7 * 34,699 * 1000) is 1: a bijection
        self._offset = (seed * 7919) % self._space

    def number(self, n: int) -> tuple[str, date]:
        key = (n * self._mult + self._offset) % self._space
        key, seq = divmod(key, 1000)
        region, day = divmod(key, self._DAYS)
        born = date.fromordinal(self._FIRST + day)
        return resident_id(self.REGIONS[region], born, seq), born
