"""GB 11643-1999 identity numbers: normalisation, rejection without echo, scanning."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.adapters.errors import InvalidIdentity
from hedui.adapters.idnum import contains, long_digit_run, normalize, scrub, synthetic
from hedui.node.errors import InvalidArgument

# Published example numbers (GB 11643-1999 annex and common references).
KNOWN_VALID = ["11010519491231002X", "440524188001010014"]

FULLWIDTH = {str(d): chr(0xFF10 + d) for d in range(10)} | {"X": "\uff38"}
ALTERNATIVES = "0123456789Xx\uff10\uff11\uff38\uff58 -A"


@st.composite
def valid_numbers(draw) -> str:
    return synthetic(random.Random(draw(st.integers(0, 2**64))))


def _fold(ch: str) -> str:
    return {"\uff38": "X", "\uff58": "X", "x": "X"}.get(ch, ch.translate({0xFF10 + i: 48 + i for i in range(10)}))


def _assert_no_echo(err: InvalidIdentity, raw: str) -> None:
    msg = str(err)
    digits = re.sub(r"\D", "", raw.translate({0xFF10 + i: 48 + i for i in range(10)}))
    for i in range(len(digits) - 5):
        assert digits[i:i + 6] not in msg, "error message echoes a 6-digit run of the input"
    assert not contains(msg)


@pytest.mark.parametrize("raw", KNOWN_VALID)
def test_known_valid(raw):
    assert normalize(raw) == raw


def test_legacy_15_digit_conversion():
    # 15-digit form of 11010519491231002X: drop "19" and the check character.
    assert normalize("110105491231002") == "11010519491231002X"


def test_error_is_typed_and_reasoned():
    with pytest.raises(InvalidIdentity) as ei:
        normalize("11010519491231002")
    assert isinstance(ei.value, InvalidArgument)
    assert ei.value.reason == "INVALID_IDENTITY"
    assert str(ei.value) == "identity: got 17 characters, want 15 or 18"
    with pytest.raises(InvalidIdentity, match="^identity: check digit mismatch$"):
        normalize("110105194912310021")


@pytest.mark.parametrize("raw, why", [
    ("11010519491331002X", "birth"),   # month 13
    ("11010519490230002X", "birth"),   # 30 February
    ("11010529491231002X", "birth"),   # year 2949
    ("1101051949123100X2", "non-digit"),
    ("110105194912310X2X", "non-digit"),
    ("11010519491231002Y", "last character"),
    ("11010549123100A", "non-digit"),
    ("", "0 characters"),
    ("   ", "0 characters"),
    ("11010519491231 02X", "non-digit"),
])
def test_rejections(raw, why):
    with pytest.raises(InvalidIdentity) as ei:
        normalize(raw)
    assert why in str(ei.value)
    _assert_no_echo(ei.value, raw)


def test_non_string_rejected():
    with pytest.raises(InvalidIdentity, match="got int, want str"):
        normalize(110105194912310021)  # type: ignore[arg-type]


@settings(max_examples=300)
@given(valid_numbers())
def test_valid_numbers_round_trip(n):
    assert contains(n) and scrub(n) == "[id]"
    assert normalize(n) == n
    assert normalize(normalize(n)) == n


@settings(max_examples=300)
@given(valid_numbers(), st.integers(0, 17), st.sampled_from(ALTERNATIVES))
def test_single_character_change_is_caught(n, pos, ch):
    mutated = n[:pos] + ch + n[pos + 1:]
    try:
        got = normalize(mutated)
    except InvalidIdentity as err:
        _assert_no_echo(err, mutated)
        return
    # Accepted only if the change was a folding of the same character (x/X, full width).
    assert got == n
    assert _fold(ch) == n[pos]


@settings(max_examples=200)
@given(valid_numbers(), st.text(alphabet=" \t\u3000\u00a0", max_size=3),
       st.text(alphabet=" \t\u3000\n", max_size=3), st.booleans(), st.booleans())
def test_equivalent_forms_normalise(n, left, right, fullwidth, lower):
    form = n
    if fullwidth:
        form = "".join(FULLWIDTH.get(c, c) for c in form)
    if lower:
        form = form.replace("X", "x") if not fullwidth else form.replace("\uff38", "\uff58")
    assert normalize(left + form + right) == n


@settings(max_examples=200)
@given(valid_numbers())
def test_legacy_form_normalises(n):
    if n[6:8] != "19":
        return
    legacy = n[:6] + n[8:17]
    assert normalize(legacy) == n


@settings(max_examples=300)
@given(st.text(max_size=40))
def test_arbitrary_text_never_crashes_or_echoes(s):
    try:
        got = normalize(s)
    except InvalidIdentity as err:
        _assert_no_echo(err, s)
    else:
        assert len(got) == 18 and scrub(got) == "[id]"


def test_pattern_scans_text_and_bytes():
    n = "11010519491231002X"
    assert contains(f"申请人{n}号")
    assert contains(f"x={n.lower()};")
    assert contains(n.encode())
    assert contains(b"\x00\x01" + n.encode() + b"\xff")
    assert not contains(n[:17])          # too short (and not 15)
    assert not contains("9" + n)         # part of a longer number
    assert not contains(n + "0")
    assert not contains("abc" + n)       # glued to letters
    assert not contains(b"token:\x01\x02")


def _wide(n: str) -> str:
    return "".join(FULLWIDTH.get(c, c) for c in n)


# The one wide shape: every form a number takes in the wild, in free text.
WIDE_FORMS = {
    "ascii": lambda n: n,
    "lower-case x": lambda n: n.replace("X", "x"),
    "full-width": _wide,
    "full-width, lower-case x": lambda n: _wide(n).replace("\uff38", "\uff58"),
    "mixed widths": lambda n: n[:9] + _wide(n[9:]),
    "spaced 6-8-4": lambda n: f"{n[:6]} {n[6:14]} {n[14:]}",
    "ideographic spaces": lambda n: f"{n[:6]}\u3000{n[6:14]}\u3000{n[14:]}",
    "no-break space, full-width": lambda n: _wide(f"{n[:6]}\u00a0{n[6:]}"),
    "spaced 4-4-4-4-2": lambda n: " ".join(n[i:i + 4] for i in range(0, 18, 4)),
    "legacy 15 digits": lambda n: n[:6] + n[8:17],
    "legacy 15, full-width, spaced": lambda n: _wide(f"{n[:6]} {n[8:14]} {n[14:17]}"),
}


@pytest.mark.parametrize("form", WIDE_FORMS)
@settings(max_examples=40)
@given(n=valid_numbers())
def test_wide_shape_is_found_and_scrubbed_in_every_form(form, n):
    shown = WIDE_FORMS[form](n)
    for text in (shown, f"case {shown}", f"申请人{shown}号", f'{{"case_ref":"{shown}"}}'):
        assert contains(text), (form, text)
        assert contains(text.encode()), (form, text)
        masked = scrub(text)
        assert "[id]" in masked and not contains(masked)
        assert not any(masked[i:i + 6] in n for i in range(len(masked) - 5) if masked[i:i + 6].isdigit())


@pytest.mark.parametrize("text", [
    "1234567890123456789012345678901234567890123456789012345678901234",  # an all-digit hex digest
    "ab" * 32,
    "HUB-2025-000123",
    "2026-05-01T08:00:00.123456Z",
    "quota: hub made 5999 calls this minute, limit 6000",
    "12345678901234",                  # 14 digits
    "1234567890123456",                # 16 digits
    "12345678901234567",               # 17 digits
    "1234567890123456789",             # 19 digits
    "abc123456789012345def",           # 15 digits glued to letters
    "370304 1980 0101",                # 14 digits in groups
    "1 2  3",                          # double spaces break a group
])
def test_wide_shape_leaves_other_numbers_alone(text):
    assert not contains(text) and scrub(text) == text


def test_long_digit_runs():
    assert long_digit_run("CDPF-2025-" + "1" * 20)
    assert long_digit_run("\uff11" * 15)
    assert not long_digit_run("1" * 14) and not long_digit_run("1234 5678 9012 3456")


def test_synthetic_is_deterministic_and_valid():
    a = [synthetic(random.Random(7)) for _ in range(3)]
    b = [synthetic(random.Random(7)) for _ in range(3)]
    assert a == b
    rng = random.Random(1)
    for _ in range(1000):
        n = synthetic(rng)
        assert normalize(n) == n
