"""GB 11643-1999 identity numbers: normalisation, rejection without echo, scanning."""

from __future__ import annotations

import logging
import random
import re
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.adapters.errors import InvalidIdentity
from hedui.adapters.idnum import (
    LogGuard,
    contains,
    contains_in_value,
    guard,
    install_log_guard,
    long_digit_run,
    mask_embedded,
    normalize,
    scrub,
    synthetic,
)
from hedui.node.errors import InvalidArgument
from hedui.node.verification.report import mask_identity

# Published example numbers (GB 11643-1999 annex and common references).
KNOWN_VALID = ["11010519491231002X", "440524188001010014"]

FULLWIDTH = {str(d): chr(0xFF10 + d) for d in range(10)} | {"X": "\uff38"}
ALTERNATIVES = "0123456789Xx\uff10\uff11\uff38\uff58 -A"


# The GB 11643-1999 table, written out here so that generated numbers do not depend on the
# module under test (its _check_char or synthetic()).
GB_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
GB_CHECK = {0: "1", 1: "0", 2: "X", 3: "9", 4: "8", 5: "7", 6: "6", 7: "5", 8: "4", 9: "3", 10: "2"}
FIXED_TODAY = date(2025, 6, 30)


def gb_check(body17: str) -> str:
    return GB_CHECK[sum(int(c) * w for c, w in zip(body17, GB_WEIGHTS, strict=True)) % 11]


@st.composite
def valid_numbers(draw) -> str:
    region = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    born = draw(st.dates(min_value=date(1850, 1, 1), max_value=FIXED_TODAY))
    seq = draw(st.integers(0, 999))
    body = f"{region}{born:%Y%m%d}{seq:03d}"
    return body + gb_check(body)


def test_gb_table_reproduces_the_published_numbers():
    for n in KNOWN_VALID + HAND_COMPUTED:
        assert gb_check(n[:17]) == n[17]


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


# Independent oracle: check characters worked out by hand from the GB 11643-1999 table
# (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2 for positions 1-17; check character by
# sum mod 11: 0->1 1->0 2->X 3->9 4->8 5->7 6->6 7->5 8->4 9->3 10->2), never with the
# module's own _check_char. Every digit of these bodies is non-zero, so changing any one
# weight changes the sum mod 11 (11 is prime) and the number is refused: the two published
# numbers above have 0 at positions 3, 15 and 16 and cannot catch that.
HAND_COMPUTED = [
    # 3*7+4*9+1*10+1*5+2*8+2*4 +1*2+9*1+8*6+8*3+1*7+1*9+2*10+9*5 +3*8+5*4+7*2
    # = 21+36+10+5+16+8+2+9+48+24+7+9+20+45+24+20+14 = 318; 318 mod 11 = 10 -> "2"
    "341122198811293572",
    # 6*7+2*9+2*10+9*5+2*8+3*4 +1*2+9*1+7*6+6*3+1*7+2*9+1*10+3*5 +4*8+6*4+5*2
    # = 42+18+20+45+16+12+2+9+42+18+7+18+10+15+32+24+10 = 340; 340 mod 11 = 10 -> "2"
    "622923197612134652",
    # 4*7+5*9+2*10+1*5+2*8+4*4 +1*2+9*1+9*6+5*3+1*7+1*9+1*10+8*5 +1*8+2*4+9*2
    # = 28+45+20+5+16+16+2+9+54+15+7+9+10+40+8+8+18 = 310; 310 mod 11 = 2 -> "X"
    "45212419951118129X",
    # 4*7+3*9+2*10+5*5+2*8+4*4 +1*2+9*1+6*6+8*3+1*7+1*9+2*10+7*5 +5*8+7*4+3*2
    # = 28+27+20+25+16+16+2+9+36+24+7+9+20+35+40+28+6 = 348; 348 mod 11 = 7 -> "5"
    "432524196811275735",
]


@pytest.mark.parametrize("raw", HAND_COMPUTED)
def test_hand_computed_numbers_with_no_zero_digit(raw):
    assert "0" not in raw[:17]
    assert normalize(raw) == raw
    assert normalize(raw.lower()) == raw
    # Every other check character is refused.
    for other in "0123456789X":
        if other != raw[17]:
            with pytest.raises(InvalidIdentity, match="check digit mismatch"):
                normalize(raw[:17] + other)


def test_full_width_x_in_either_case_folds():
    fw = "".join(FULLWIDTH.get(c, c) for c in "45212419951118129X")
    assert fw.endswith("\uff38")
    assert normalize(fw) == "45212419951118129X"
    assert normalize(fw[:-1] + "\uff58") == "45212419951118129X"  # full-width small x
    # Its neighbours in the full-width block are not X.
    for near in ("\uff37", "\uff39", "\uff57", "\uff59"):
        with pytest.raises(InvalidIdentity, match="invalid last character"):
            normalize(fw[:-1] + near)


def test_today_is_keyword_only():
    # The keyword calls run the module's code too, so coverage-based test selection (the
    # mutation tool) knows this test concerns these signatures.
    assert normalize(EARLIEST, today=date(2025, 6, 30)) == EARLIEST
    with pytest.raises(TypeError):
        normalize(EARLIEST, date(2025, 6, 30))  # type: ignore[misc]
    assert synthetic(random.Random(0), region="370304").startswith("370304")
    with pytest.raises(TypeError):
        synthetic(random.Random(0), "370304")  # type: ignore[misc]


def test_hand_computed_legacy_number():
    # 15-digit 432524 681127 573 -> body 432524 19 681127 573, check "5" (worked out above).
    assert normalize("432524681127573") == "432524196811275735"


# Birth-date bounds, at a fixed date (never the wall clock). Check characters by hand:
# 110105 18500101 001: 7+9+0+5+0+20 +2+8+30+0+0+9+0+5 +0+0+2 = 97; 97 mod 11 = 9 -> "3"
EARLIEST = "110105185001010013"
# 110105 18491231 001: 7+9+0+5+0+20 +2+8+24+27+7+18+30+5 +0+0+2 = 164; mod 11 = 10 -> "2"
TOO_EARLY = "110105184912310012"
# 110105 20250630 001: 7+9+0+5+0+20 +4+0+12+15+0+54+30+0 +0+0+2 = 158; mod 11 = 4 -> "8"
BORN_2025_06_30 = "110105202506300018"
# 110105 20250701 001: 7+9+0+5+0+20 +4+0+12+15+0+63+0+5 +0+0+2 = 142; mod 11 = 10 -> "2"
BORN_2025_07_01 = "110105202507010012"


def test_birth_date_bounds_at_a_fixed_date():
    today = date(2025, 6, 30)
    assert normalize(EARLIEST, today=today) == EARLIEST  # 1850-01-01 is allowed
    with pytest.raises(InvalidIdentity, match="impossible birth date"):
        normalize(TOO_EARLY, today=today)  # 1849-12-31 is not
    assert normalize(BORN_2025_06_30, today=today) == BORN_2025_06_30  # born today
    with pytest.raises(InvalidIdentity, match="impossible birth date"):
        normalize(BORN_2025_07_01, today=today)  # born tomorrow
    assert normalize(BORN_2025_07_01, today=date(2025, 7, 1)) == BORN_2025_07_01


def test_legacy_number_with_impossible_date():
    # 15-digit numbers carry a 2-digit year (19xx): month 13 and 30 February do not exist.
    for raw in ("110105491331002", "110105490230002", "110105490001002"):
        with pytest.raises(InvalidIdentity, match="impossible birth date") as ei:
            normalize(raw)
        _assert_no_echo(ei.value, raw)


@pytest.mark.parametrize("raw", [
    # Arabic-Indic, Devanagari and superscript digits satisfy str.isdigit() but are not
    # GB 11643 digits: the ASCII guard must refuse them as a typed error (no UnicodeEncodeError).
    "".join(chr(0x0660 + int(c)) for c in "11010519491231002") + "X",
    "".join(chr(0x0966 + int(c)) for c in "110105491231002"),
    "11010519491231002¹",
    "¹" + "1010519491231002X",
    "1101051949123100٢X",
])
def test_non_ascii_digits_are_refused(raw):
    with pytest.raises(InvalidIdentity, match="non-digit|invalid last character") as ei:
        normalize(raw)
    _assert_no_echo(ei.value, raw)


def test_identity_mask_width():
    # Six digits of region, eight masked (the birth date), last four kept: 6 + 8 + 4 = 18.
    assert mask_identity("341122198811293572") == "341122********3572"
    assert mask_identity("45212419951118129X") == "452124********129X"


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
    assert normalize(n, today=FIXED_TODAY) == n
    assert normalize(normalize(n, today=FIXED_TODAY), today=FIXED_TODAY) == n


@settings(max_examples=300)
@given(valid_numbers(), st.integers(0, 17), st.sampled_from(ALTERNATIVES))
def test_single_character_change_is_caught(n, pos, ch):
    mutated = n[:pos] + ch + n[pos + 1:]
    try:
        got = normalize(mutated, today=FIXED_TODAY)
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
    assert normalize(left + form + right, today=FIXED_TODAY) == n


@settings(max_examples=200)
@given(valid_numbers())
def test_legacy_form_normalises(n):
    if n[6:8] != "19":
        return
    legacy = n[:6] + n[8:17]
    assert normalize(legacy, today=FIXED_TODAY) == n


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
        assert gb_check(n[:17]) == n[17]  # the table, not the module's own arithmetic
        assert normalize(n, today=FIXED_TODAY) == n


class _Edge(random.Random):
    """A Random whose randint always returns its lower (or upper) bound and whose choice
    takes the first (or last) item: synthetic() then draws its extreme values."""

    def __init__(self, upper: bool) -> None:
        super().__init__(0)
        self.upper = upper

    def randint(self, a: int, b: int) -> int:
        return b if self.upper else a

    def choice(self, seq):
        return seq[-1] if self.upper else seq[0]


def test_synthetic_ranges_are_the_documented_defaults():
    low, high = synthetic(_Edge(False)), synthetic(_Edge(True))
    # Region from the table, born 1930-01-01 .. 2020-12-31, sequence 000 .. 999.
    assert low[:17] == "110101" + "19300101" + "000"
    assert high[:17] == "360721" + "20201231" + "999"
    assert low[17] == gb_check(low[:17]) and high[17] == gb_check(high[:17])
    assert synthetic(_Edge(False), region="370304", born_from=date(1999, 9, 9))[:14] == "37030419990909"


@pytest.mark.parametrize("region", ["12345", "1234567", "12345a", "１２３４５６"])
def test_synthetic_refuses_a_bad_region(region):
    with pytest.raises(InvalidArgument, match="region: got"):
        synthetic(random.Random(0), region=region)


# --- contains_in_value: the per-field guard of audit entries (issue 16) ----------------------

_VALUE_CHARS = "0123456789Xxab \u3000\uff10\uff15\uff38-:,\"\\\n"
_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**20, max_value=10**20),
                     st.text(alphabet=_VALUE_CHARS, max_size=40))
_values = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(alphabet=_VALUE_CHARS, max_size=20), inner, max_size=4)),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.text(alphabet=_VALUE_CHARS, max_size=20), _values, max_size=5))
def test_contains_in_value_catches_what_a_scan_of_the_serialised_value_catches(fields) -> None:
    import json

    from hedui.adapters.idnum import contains_in_value

    whole = contains(json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
    if whole:
        assert contains_in_value(fields)


@pytest.mark.parametrize("value, want", [
    ({"note": "11010519491231002X"}, True),
    ({"11010519491231002X": 1}, True),                   # a key
    ({"n": [1, {"deep": "id 110105194912310021 end"}]}, True),
    ({"n": 110105194912310021}, True),
    ({"n": "\uff11" + "1010519491231002X"}, True),      # a full-width first digit
    ({"n": "ab" * 32}, False),                           # a hex digest
    ({"n": "1" * 64}, False),                            # an all-digit hex digest
    ({"n": "a110105194912310021"}, False),               # glued to a letter
    ({"n": "HUB-2026-000123", "count": 7}, False),
])
def test_contains_in_value_examples(value, want) -> None:
    from hedui.adapters.idnum import contains_in_value

    assert contains_in_value(value) is want


def test_a_shape_after_chinese_text_is_found_in_a_value():
    # "身份证" is alphanumeric to Python but not ASCII: the string is searched, not taken as
    # a whole, and the CJK character does not glue to the digits (only [0-9A-Za-zX] do).
    assert contains_in_value("身份证11010519491231002X")
    assert contains_in_value("11010519491231002X")
    assert not contains_in_value("A11010519491231002X")  # ASCII letters glue: not a shape


def test_guard_masks_every_quoted_piece_of_an_input_number():
    # Pieces of 4 or more digits of 11010519491231002X are masked, spaced or not; a 3-digit
    # piece and digits that are not part of it stay.
    text = "got '1101051949', then '1101 0519', 110 and 5678"
    assert guard(text, inputs=["id 11010519491231002X"]) == "got '[id]', then '[id]', 110 and 5678"
    assert guard(text, inputs=["no number here"]) == text
    assert guard("whole 11010519491231002X", inputs=[], mask="#") == "whole #"


def test_log_guard_passes_a_malformed_record_through_unchanged():
    rec = logging.LogRecord("t", logging.INFO, __file__, 1, "%d people", ("many",), None)
    assert LogGuard().filter(rec) is True  # logging reports the bad format itself, as usual
    assert (rec.msg, rec.args) == ("%d people", ("many",))
    ok = logging.LogRecord("t", logging.INFO, __file__, 1, "asked for %s", ("11010519491231002X",), None)
    assert LogGuard().filter(ok) is True and ok.getMessage() == "asked for [id]"


def test_contains_in_value_walks_lists_and_checks_ints_in_mappings():
    assert contains_in_value(["x", "11010519491231002X"]) and not contains_in_value(("a", "b"))
    # 10^15 is long enough to be checked but is not shaped like a number (16 digits).
    assert not contains_in_value({"n": 10**15}) and not contains_in_value({"n": -(10**15)})
    assert contains_in_value({"n": 440524188001010014})  # 18 digits, a published number
    assert not contains_in_value({"n": 110105})


# mask_embedded: worked by hand. 440524188001010014 (published) followed by "01" is a
# disability certificate number; 9 + that + 01 puts it one digit in; 110105491231002 is a
# valid 15-digit number (born 1949-12-31), glued to letters, which scrub alone keeps.
@pytest.mark.parametrize("text,want", [
    ("cert 44052418800101001401", "cert [id]01"),
    ("no. 944052418800101001401", "no. 9[id]01"),
    ("ref A110105491231002B", "ref A[id]B"),
    ("ref A11010549123100XB", "ref A11010549123100XB"),  # 14 digits and X: no number
    ("settlement 123456789012345678901234", "settlement 123456789012345678901234"),  # no valid window
    ("short 1234", "short 1234"),
])
def test_mask_embedded_by_hand(text, want):
    assert mask_embedded(text) == want


def test_install_log_guard_adds_one_filter_per_handler_however_often_called():
    logger = logging.getLogger("hedui.test.idnum.guard")
    handler = logging.StreamHandler()
    logger.addHandler(handler)
    try:
        install_log_guard(logger)
        install_log_guard(logger)
        assert sum(isinstance(f, LogGuard) for f in handler.filters) == 1
    finally:
        logger.removeHandler(handler)
