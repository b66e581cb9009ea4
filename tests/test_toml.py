"""The one TOML loader: ``file: key: got X, want Y`` on one line, whatever is wrong."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, ConfigDict, Field, model_validator

from hedui.common.errors import ConfigError
from hedui.common.toml import FieldValueError, load_toml, parse_toml, read_toml


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Daily(_M):
    kind: Literal["daily"]
    hour: Annotated[int, Field(ge=0, le=23)]


class Weekly(_M):
    kind: Literal["weekly"]
    weekday: Literal["monday", "friday"]


class Item(_M):
    id: Annotated[str, Field(pattern=r"^[a-z]+$", description="a lower-case id")]
    size: int = 0
    when: Annotated[Daily | Weekly, Field(discriminator="kind")] | None = None
    lo: int = 0
    hi: int = 0

    @model_validator(mode="after")
    def _order(self) -> Item:
        if self.hi < self.lo:
            raise FieldValueError("hi", str(self.hi), f"at least lo ({self.lo})")
        return self


class Doc(_M):
    name: str
    items: list[Item] = []
    table: dict[str, int] = {}


def _err(text: str) -> str:
    with pytest.raises(ConfigError) as e:
        parse_toml(text, Doc, source="doc.toml", what="a test document")
    msg = e.value.message
    assert "\n" not in msg and msg.startswith("doc.toml: "), msg
    return msg.removeprefix("doc.toml: ")


@pytest.mark.parametrize(("text", "want"), [
    ('name = "x"\ncolour = 1\n', "colour: got an unknown key, want one of name, items, table"),
    ("", "name: got nothing, want a value"),
    ("name = 3\n", "name: got 3, want a valid string"),
    ('name = "x"\n[[items]]\nid = "a"\nsize = "big"\n', "items['a'].size: got 'big', want a valid integer"),
    ('name = "x"\n[[items]]\nid = "Bad"\n', "items['Bad'].id: got 'Bad', want a lower-case id"),
    ('name = "x"\n[[items]]\nsize = 1\n', "items[0].id: got nothing, want a value"),
    ('name = "x"\n[[items]]\nid = "a"\nwhen = { kind = "daily", hour = 24 }\n',
     "items['a'].when.hour: got 24, want less than or equal to 23"),
    ('name = "x"\n[[items]]\nid = "a"\nwhen = { kind = "monthly" }\n', "items['a'].when.kind: got 'monthly', want one of 'daily', 'weekly'"),
    ('name = "x"\n[[items]]\nid = "a"\nwhen = { hour = 1 }\n', "items['a'].when.kind: got nothing, want one of 'daily', 'weekly'"),
    ('name = "x"\n[[items]]\nid = "a"\nwhen = { kind = "weekly", weekday = "sunday" }\n',
     "items['a'].when.weekday: got 'sunday', want one of 'monday' or 'friday'"),
    ('name = "x"\n[[items]]\nid = "a"\nwhen = { kind = "weekly", weekday = "monday", hour = 1 }\n',
     "items['a'].when.hour: got an unknown key, want one of kind, weekday"),
    ('name = "x"\n[[items]]\nid = "a"\nlo = 5\nhi = 2\n', "items['a'].hi: got 2, want at least lo (5)"),
    ('name = "x"\ntable = { a = "one" }\n', "table.a: got 'one', want a valid integer"),
    ('name = "x"\nitems = 3\n', "items: got 3, want a valid list"),
])
def test_one_style_names_the_key(text, want):
    assert _err(text) == want


def test_several_problems_on_one_line_at_most_five():
    msg = _err("name = 'x'\na = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf = 6\ng = 7\n")
    assert msg.count("got an unknown key") == 5 and msg.endswith("(and 2 more)")


def test_file_problems(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.toml: got an unreadable file \(No such file or directory\), want a test document"):
        load_toml(tmp_path / "nope.toml", Doc, what="a test document")
    (tmp_path / "gbk.toml").write_bytes('name = "核对"'.encode("gbk"))
    with pytest.raises(ConfigError, match=r"gbk\.toml: got non-UTF-8 bytes, want a test document in UTF-8 TOML"):
        load_toml(tmp_path / "gbk.toml", Doc, what="a test document")
    (tmp_path / "bad.toml").write_text("name = \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad\.toml: got invalid TOML \(.*\), want a test document"):
        read_toml(tmp_path / "bad.toml", what="a test document")
    (tmp_path / "ok.toml").write_text('name = "x"\n[[items]]\nid = "a"\n', encoding="utf-8")
    assert load_toml(tmp_path / "ok.toml", Doc, what="a test document").items[0].id == "a"


def test_the_error_class_is_the_callers():
    class MyError(ConfigError):
        pass

    with pytest.raises(MyError):
        parse_toml("x = 1\n", Doc, source="s", what="w", error=MyError)


_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10**6), st.text(max_size=8))
_values = st.recursive(_scalars.filter(lambda v: v is not None), lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.sampled_from(["id", "size", "when", "kind", "hour", "weekday", "lo", "hi", "x"]), c, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "items", "table", "other"]), _values, max_size=4))
def test_any_document_is_a_model_or_one_config_error_line(doc):
    from hedui.common.toml import validate

    try:
        validate(doc, Doc, source="doc.toml")
    except ConfigError as exc:
        assert "\n" not in exc.message and exc.message.startswith("doc.toml: ")
