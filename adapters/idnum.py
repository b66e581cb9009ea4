"""Resident identity numbers (GB 11643-1999): normalisation, validation, scanning.

An identity number is 6 digits of region, 8 digits of birth date (YYYYMMDD), a 3-digit
sequence and a check character computed with ISO 7064 MOD 11-2 (``0``–``9`` or ``X``).
Legacy 15-digit numbers (GB 11643-1989) have a 2-digit year and no check character; they
are converted by inserting ``19`` after the region and computing the check character.

:func:`normalize` is the one place where a number enters Hedui. Its errors
(:class:`~hedui.adapters.errors.InvalidIdentity`) describe the problem without ever echoing
the number or any run of its digits, so they are safe to log, count and return to callers.

This module is also the one guard that knows the *shape* of a number in free text: no other
module compiles an identity pattern (``tests/test_architecture.py`` checks). :func:`contains`
answers "is there one in here?" (the policy refuses such requests, the audit log such
entries, adapters such cells), :func:`scrub` masks them (log lines, error messages, stored
problem texts), :func:`long_digit_run` flags a longer number that may embed one. All three
use the one wide shape: ASCII or full-width digits, 18 characters (the last may be ``X``) or
15 (GB 11643-1989), with or without a single space between digit groups.
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Iterable, Mapping
from datetime import date
from operator import mul as _mul

from hedui.adapters.errors import InvalidIdentity
from hedui.common.errors import InvalidArgument
from hedui.common.errors import set_message_scrubber as _set_error_scrubber

__all__ = ["normalize", "contains", "contains_in_value", "scrub", "guard", "LogGuard", "install_log_guard", "long_digit_run", "mask_embedded", "synthetic"]

# Weights 2^(17-i) mod 11 for positions 1..17 (ISO 7064 MOD 11-2, as tabulated in GB 11643).
_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"  # index: weighted sum mod 11

# Full-width digits and X/x (what Chinese input methods produce) fold to ASCII; the
# ideographic space is stripped with the other whitespace.
_FOLD = {0xFF10 + i: ord("0") + i for i in range(10)} | {0xFF38: ord("X"), 0xFF58: ord("X"), ord("x"): ord("X")}
_WHITESPACE = " \t\r\n\v\f\u00a0\u3000\ufeff"
_EARLIEST_BIRTH = date(1850, 1, 1)
_LATEST_BIRTH = date(2199, 12, 31)  # hedui.common.periods refuses years after 2199 too


_ZERO_BIAS = 48 * sum(_WEIGHTS)  # the weights applied to ord("0") in every position


def _check_char(first17: str) -> str:
    # first17 is 17 ASCII digits; map/mul over the bytes keeps the loop in C.
    return _CHECK_CHARS[(sum(map(_mul, first17.encode("ascii"), _WEIGHTS)) - _ZERO_BIAS) % 11]


def _birth_ok(digits8: str, today: date | None) -> bool:
    try:
        born = date(int(digits8[0:4]), int(digits8[4:6]), int(digits8[6:8]))
    except ValueError:
        return False
    # The upper bound is the caller's clock's today (DESIGN.md "Time": nothing here reads the
    # wall clock); without one, the last date any Hedui period can name.
    return _EARLIEST_BIRTH <= born <= (today if today is not None else _LATEST_BIRTH)


def normalize(s: str, *, today: date | None = None) -> str:
    """Returns the canonical 18-character form of a resident identity number.

    Trims whitespace, folds full-width digits and X, upper-cases ``x``, converts 15-digit
    legacy numbers, checks the birth date (1850-01-01 to ``today``, or 2199-12-31 when no day is given, both included) and the
    MOD 11-2 check character. Raises :class:`InvalidIdentity` (reason ``INVALID_IDENTITY``)
    otherwise.
    """
    if not isinstance(s, str):
        raise InvalidIdentity(f"identity: got {type(s).__name__}, want str")
    t = s.strip(_WHITESPACE).translate(_FOLD)
    n = len(t)
    if n == 15:
        if not (t.isascii() and t.isdigit()):
            raise InvalidIdentity("identity: got a non-digit in a 15-character number, want 15 digits")
        body = t[:6] + "19" + t[6:]
        if not _birth_ok(body[6:14], today):
            raise InvalidIdentity("identity: got an impossible birth date, want a real date")
        return body + _check_char(body)
    if n != 18:
        raise InvalidIdentity(f"identity: got {n} characters, want 15 or 18")
    body, check = t[:17], t[17]
    if not (body.isascii() and body.isdigit()):
        raise InvalidIdentity("identity: got a non-digit in the first 17 characters, want digits")
    if not (check == "X" or "0" <= check <= "9"):
        raise InvalidIdentity("identity: got an invalid last character, want a digit or X")
    if not _birth_ok(body[6:14], today):
        raise InvalidIdentity("identity: got an impossible birth date, want a real date")
    if _check_char(body) != check:
        raise InvalidIdentity("identity: check digit mismatch")
    return t


# -- the shape in free text ---------------------------------------------------------------
# Shape only, no check-digit test: a scanner must also catch numbers that are wrong by a
# digit. Not glued to further letters or digits on either side, so hex digests and longer
# numbers do not trip it (a longer run is :func:`long_digit_run`'s business).
_D = "0-9\uff10-\uff19"                      # ASCII and full-width digits
_X = "Xx\uff38\uff58"                        # the check character X, ASCII or full-width
_GAP = "[ \u00a0\u3000]?"                    # at most one space between digit groups
_EDGE_BEFORE = f"(?<![{_D}A-Za-z{_X}])"
_EDGE_AFTER = f"(?![{_D}A-Za-z{_X}])"
# 15 digits (GB 11643-1989), or those and 2 more digits and the check character (18).
_SHAPE = re.compile(
    f"{_EDGE_BEFORE}[{_D}](?:{_GAP}[{_D}]){{14}}(?:{_GAP}[{_D}]{_GAP}[{_D}]{_GAP}[{_D}{_X}])?{_EDGE_AFTER}"
)
_LONG_RUN = re.compile(f"[{_D}]{{15,}}")


# How repr() and JSON write the gaps and digits a number may hold (``'4\u300041302…'`` from
# ``f"{value!r}"``): decoded before scanning, so an escaped form is caught like the real one.
_ESCAPED = re.compile(r"\\(?:u3000|u00a0|xa0|uff1[0-9]|uff38|uff58)")


def _unescape(m: re.Match[str]) -> str:
    code = m.group()[2:]
    return chr(int(code, 16))


def _text(value: str | bytes | bytearray | memoryview) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8", "replace")
    if "\\" in value:
        value = _ESCAPED.sub(_unescape, value)
    return value


def contains(text: str | bytes | bytearray | memoryview) -> bool:
    """True if ``text`` (or UTF-8 bytes) holds anything shaped like an identity number."""
    return _SHAPE.search(_text(text)) is not None


_MIN_SHAPE = 15  # the shortest shape: 15 digits (escapes in :func:`_text` only shorten a text)


def contains_in_value(value: object) -> bool:
    """:func:`contains` for a JSON-able value (str, int, bool, None, lists and mappings of
    those, keys included), checked per string instead of over its serialisation: a string
    shorter than the shortest shape cannot hold one, and an ASCII letters-and-digits string
    (a hex digest, an id, a code) can only be one as a whole, since the shape must not be
    glued to letters or digits. Same answer as ``contains(json.dumps(value))`` for such a
    value: JSON's quotes, commas and colons end a shape as any other separator does."""
    t = type(value)
    if t is str:
        return _str_holds(value)   # type: ignore[arg-type]
    if value is None or t is bool:
        return False
    if t is int:
        return abs(value) >= _MIN_INT and contains(str(value))   # type: ignore[arg-type]
    if isinstance(value, Mapping):
        for k, v in value.items():
            if (type(k) is not str or len(k) >= _MIN_SHAPE) and contains_in_value(k):
                return True
            tv = type(v)
            if tv is str:
                if len(v) >= _MIN_SHAPE and _str_holds(v):
                    return True
            elif tv is int:
                if (v >= _MIN_INT or v <= -_MIN_INT) and contains(str(v)):
                    return True
            elif v is not None and tv is not bool and contains_in_value(v):
                return True
        return False
    if isinstance(value, (list, tuple)):
        return any(contains_in_value(v) for v in value)
    return contains(str(value))


def _str_holds(v: str) -> bool:
    n = len(v)
    if n < _MIN_SHAPE:
        return False
    if v.isascii() and v.isalnum():   # only as a whole: the shape is never glued to [A-Za-z0-9]
        return n in (15, 18) and _SHAPE.fullmatch(v) is not None
    return _SHAPE.search(_text(v)) is not None


_MIN_INT = 10 ** (_MIN_SHAPE - 1)


def scrub(text: str, mask: str = "[id]") -> str:
    """``text`` with everything shaped like an identity number replaced by ``mask``."""
    return _SHAPE.sub(mask, _text(text))


_FRAGMENT = 4  # digits: a shorter run of an identity number names nobody


def guard(text: str, inputs: Iterable[str] = (), mask: str = "[id]") -> str:
    """The one scrubbing guard for every message a person or a log sees (issue 13): what
    :func:`scrub` masks, and also every run of 4 or more digits that is part of an identity
    number in ``inputs`` (the command's arguments, the request's text), so a message that
    quotes a cut or re-spaced piece of one (``got '370304…'``) does not leak it either."""
    out = scrub(text, mask)
    runs: set[str] = set()
    for value in inputs:
        for m in _SHAPE.finditer(_text(value)):
            digits = "".join(ch for ch in m.group().translate(_FOLD) if ch.isdigit() or ch == "X")
            runs.update(digits[i:j] for i in range(len(digits)) for j in range(i + _FRAGMENT, len(digits) + 1))
    if runs:
        folded = out.translate(_FOLD)
        spans = []
        for m in re.finditer("[0-9X](?:[ \u00a0\u3000]?[0-9X])*", folded):
            compact = m.group().replace(" ", "").replace("\u00a0", "").replace("\u3000", "")
            if any(compact[i:j] in runs for i in range(len(compact)) for j in range(i + _FRAGMENT, len(compact) + 1)):
                spans.append(m.span())
        for a, b in reversed(spans):
            out = out[:a] + mask + out[b:]
    return out


class LogGuard(logging.Filter):
    """A logging filter (on a handler) that passes every record's text through :func:`scrub`:
    what a node or a command logs never holds an identity number, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a malformed record: let logging report it as usual
            return True
        clean = scrub(text)
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if clean != text:
            record.msg, record.args = clean, None
        return True


def install_log_guard(logger: logging.Logger | None = None) -> None:
    """Adds :class:`LogGuard` to every handler of ``logger`` (default: the root logger)."""
    for h in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, LogGuard) for f in h.filters):
            h.addFilter(LogGuard())


def long_digit_run(text: str) -> bool:
    """True if ``text`` holds a run of 15 or more digits (ASCII or full-width): a number that
    is not itself shaped like an identity may still embed one (a 20-digit certificate number)."""
    return _LONG_RUN.search(text) is not None


_ID_RUN = re.compile(r"[0-9]{15,}X?")


def _valid(s: str) -> bool:
    try:
        normalize(s)
    except InvalidIdentity:
        return False
    return True


def mask_embedded(text: str, mask: str = "[id]") -> str:
    """``text`` with every VALID identity number inside a run of 15+ digits, and everything
    shaped like one (:func:`scrub`: a mistyped number is still a person's), replaced by ``mask``.

    Issue 12 "Bad input": a long number outside the identity column (a 24-digit settlement
    id, an organisation code) is data, not a problem, and is kept; but a disability
    certificate number is the holder's identity number followed by two digits, and no
    identity number may be kept outside the identity column. Only windows that pass
    GB 11643 (birth date and check character) are masked, so other long numbers stay intact
    and distinct (but for a rare one that happens to contain a valid-looking window).
    Full-width digits are folded first."""
    if len(text) < 15:      # too short to hold 15 digits: nothing to mask
        return text
    if not _LONG_RUN.search(text):
        return scrub(text, mask)
    folded = text.translate(_FOLD)
    out, last = [], 0
    for m in _ID_RUN.finditer(folded):
        run, start = m.group(), m.start()
        hits: list[tuple[int, int]] = []
        if len(run) == 15 or (len(run) == 16 and run.endswith("X")):
            hits = [(0, 15)] if _valid(run[:15]) else []
        i = 0
        while i + 18 <= len(run):
            if _valid(run[i:i + 18]):
                hits.append((i, i + 18))
                i += 18
            else:
                i += 1
        for a, b in sorted(hits):
            if start + a < last:
                continue
            out.append(text[last:start + a])   # _FOLD maps one character to one: positions agree
            out.append(mask)
            last = start + b
    out.append(text[last:])
    return scrub("".join(out), mask)


# A few real county-level region codes (GB/T 2260) so synthetic numbers look plausible.
_REGIONS = (
    "110101", "110105", "310104", "310115", "320106", "320113", "330106", "370304",
    "420111", "421202", "440106", "440305", "441302", "500103", "510107", "610113",
    "360702", "360721",
)


def synthetic(rng: random.Random, *, region: str | None = None,
              born_from: date = date(1930, 1, 1), born_to: date = date(2020, 12, 31)) -> str:
    """A valid, random identity number drawn from ``rng`` (for tests and demos only)."""
    reg = region or rng.choice(_REGIONS)
    if len(reg) != 6 or not (reg.isascii() and reg.isdigit()):
        raise InvalidArgument(f"region: got {len(reg)} characters, want 6 digits")
    born = date.fromordinal(rng.randint(born_from.toordinal(), born_to.toordinal()))
    body = f"{reg}{born:%Y%m%d}{rng.randint(0, 999):03d}"
    return body + _check_char(body)


# Every typed error's message passes the guard too (hedui.common.errors cannot import this
# module: it is the floor below it), so an exception that quotes its input never carries one.
_set_error_scrubber(scrub)
