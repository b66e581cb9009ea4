"""Fault suite, what a person or a log sees (issue 13 item 7): one guard, no identity number
in any form — ASCII, full-width, 15-digit, spaced — in CLI errors, exceptions or logs."""

from __future__ import annotations

import io
import logging
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from hedui.adapters import idnum
from hedui.common.errors import NotFound

_FW = {ord(str(i)): 0xFF10 + i for i in range(10)} | {ord("X"): 0xFF38}
_SEPARATORS = st.sampled_from([" ", "'", '"', ": ", "(", ")", "…", "，", "=", "\n", "\t", "[", "]", "/"])
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Nd", "Lu", "Ll", "Lo", "Cs")), max_size=20)


@st.composite
def identities(draw) -> tuple[str, str]:
    """(the number as written somewhere, its 18-character ASCII form)."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    n18 = idnum.synthetic(rng)
    form = draw(st.sampled_from(["ascii", "lower_x", "fullwidth", "legacy15", "spaced", "spaced_ideographic", "grouped"]))
    if form == "legacy15":
        n = n18[:6] + n18[8:17]  # GB 11643-1989: 2-digit year, no check character
        return n, n18
    if form == "lower_x":
        return n18.replace("X", "x"), n18
    if form == "fullwidth":
        return n18.translate(_FW), n18
    if form == "grouped":
        return f"{n18[:6]} {n18[6:14]} {n18[14:]}", n18
    gap = " " if form == "spaced" else "\u3000"
    cut = sorted(draw(st.sets(st.integers(1, 17), min_size=1, max_size=6)))
    parts, last = [], 0
    for c in cut:
        parts.append(n18[last:c])
        last = c
    parts.append(n18[last:])
    return gap.join(parts), n18


def _core(n18: str) -> str:
    """Birth date and sequence: the part that names a person."""
    return n18[6:17]


def _digits(text: str) -> str:
    return "".join(ch for ch in text.translate({0xFF10 + i: ord(str(i)) for i in range(10)}) if ch.isdigit())


@settings(max_examples=300, deadline=None)
@given(identities(), _TEXT, _SEPARATORS, _SEPARATORS, _TEXT)
def test_guard_leaves_no_identity_in_any_form(ident, before, sep1, sep2, after):
    written, n18 = ident
    text = f"{before}{sep1}{written}{sep2}{after}"
    assert idnum.contains(text)  # the oracle: the text really holds one
    out = idnum.guard(text)
    assert not idnum.contains(out)
    assert _core(n18)[:8] not in _digits(out)


@settings(max_examples=200, deadline=None)
@given(identities(), st.integers(4, 18))
def test_guard_masks_pieces_of_an_input_number(ident, k):
    """A message that quotes a cut piece of what the person typed (``got '370304…'``)."""
    written, n18 = ident
    piece = written[:k]
    msg = f"case: got {piece!r}…, want an existing case reference"
    out = idnum.guard(msg, [written])
    piece_digits = _digits(piece)
    if len(piece_digits) >= 4:
        assert piece_digits not in _digits(out)
    assert "want an existing case reference" in out


def test_guard_keeps_unrelated_numbers():
    out = idnum.guard("case HD-2026-000123 has 4096 tokens, digest 3fa9c0", ["370304199001011234"])
    assert out == "case HD-2026-000123 has 4096 tokens, digest 3fa9c0"


@settings(max_examples=100, deadline=None)
@given(identities())
def test_every_typed_error_message_is_scrubbed(ident):
    written, n18 = ident
    err = NotFound(f"case: got {written!r}, want an existing case reference")
    assert not idnum.contains(str(err)) and not idnum.contains(err.message)
    assert _core(n18)[:8] not in _digits(str(err))


def test_log_guard_scrubs_messages_args_and_tracebacks():
    n = idnum.synthetic(random.Random(3))
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logger = logging.getLogger("hedui.test.scrub")
    logger.addHandler(handler)
    logger.propagate = False
    idnum.install_log_guard(logger)
    try:
        logger.warning("lookup for %s failed", n)
        logger.warning("full-width %s", n.translate(_FW))
        try:
            raise ValueError(f"bad row {n}")
        except ValueError:
            logger.exception("while reading")
    finally:
        logger.removeHandler(handler)
    text = buf.getvalue()
    assert "lookup for [id] failed" in text and "ValueError" in text
    assert not idnum.contains(text) and _core(n)[:8] not in _digits(text)


@pytest.mark.parametrize("form", ["ascii", "fullwidth", "legacy15", "spaced", "grouped"])
def test_case_report_never_echoes_an_identity_number(form, tmp_path):
    from hedui.node.cli._app import app

    n18 = idnum.synthetic(random.Random(42))
    written = {"ascii": n18, "fullwidth": n18.translate(_FW), "legacy15": n18[:6] + n18[8:17],
               "spaced": " ".join(n18[i:i + 3] for i in range(0, 18, 3)), "grouped": f"{n18[:6]} {n18[6:14]} {n18[14:]}"}[form]
    r = CliRunner().invoke(app, ["case", "report", written, "--config", str(tmp_path / "hub.toml")])
    out = r.output
    assert r.exit_code == 2, out
    assert "identity number" in out
    for i in range(0, 18 - 5):
        assert n18[i:i + 6] not in _digits(out)
