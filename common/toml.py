"""The one way Hedui reads a TOML file into a pydantic model, and the one way it words what
is wrong with one: ``file: key: got X, want Y``, all on one line.

Every configuration file goes through here: ``node.toml``, the field catalogue, the adapter
mapping, the hub's verification rules, a department's detection rules, the hub's discovery
file (routes), the calendar overrides and the authority's directory spec. Keys are written
as the operator sees them: ``node.listen``, ``facts[0].unit``; an item of a list of tables
that has an ``id``, ``code`` or ``name`` is named by it (``rules['medins.a'].threshold``);
the branch labels pydantic adds for tagged unions are left out (``schedule.day``).
"""

from __future__ import annotations

import tomllib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from hedui.common.errors import ConfigError
from hedui.common.values import FieldValueError, show

__all__ = ["FieldValueError", "load_toml", "parse_toml", "read_toml", "validate", "format_validation_error", "show"]

M = TypeVar("M", bound=BaseModel)

_MAX_PROBLEMS = 5
_ITEM_KEYS = ("id", "code", "name")


def read_toml(path: str | Path, *, what: str, error: type[ConfigError] = ConfigError) -> dict[str, Any]:
    """The parsed TOML document at ``path``; ``error`` for an unreadable file, bytes that
    are not UTF-8, or text that is not TOML. ``what`` names the file kind (``a mapping``)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise error(f"{p}: got an unreadable file ({exc.strerror}), want {what}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{p}: got non-UTF-8 bytes, want {what} in UTF-8 TOML") from None
    return _loads(text, source=str(p), what=what, error=error)


def _loads(text: str, *, source: str, what: str, error: type[ConfigError]) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: got invalid TOML ({exc}), want {what}") from None


def validate(
    data: Any,
    model: type[M],
    *,
    source: str,
    error: type[ConfigError] = ConfigError,
    context: dict[str, Any] | None = None,
) -> M:
    """``model`` validated from ``data``; ``error`` naming ``source`` and every bad key."""
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise error(f"{source}: {format_validation_error(exc, model, data)}") from None


def parse_toml(
    text: str,
    model: type[M],
    *,
    source: str,
    what: str,
    error: type[ConfigError] = ConfigError,
    context: dict[str, Any] | None = None,
) -> M:
    """``model`` from TOML ``text`` (a packaged default, a test's string); ``source`` names it."""
    if not isinstance(text, str):
        raise error(f"{source}: got {type(text).__name__}, want {what} as TOML text")
    return validate(_loads(text, source=source, what=what, error=error), model, source=source, error=error, context=context)


def load_toml(
    path: str | Path,
    model: type[M],
    *,
    what: str,
    error: type[ConfigError] = ConfigError,
    context: dict[str, Any] | None = None,
) -> M:
    """``model`` from the TOML file at ``path``: one ``error`` (default :class:`ConfigError`)
    in the style ``file: key: got X, want Y`` for anything wrong with it."""
    return validate(read_toml(path, what=what, error=error), model, source=str(path), error=error, context=context)


# -- wording -------------------------------------------------------------------------------


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None = None, data: Any = None) -> str:
    """One line for every problem pydantic found: ``key: got X, want Y; key2: ...``."""
    lines: list[str] = []
    for e in exc.errors(include_url=False):
        line = _problem(e, model, data)
        if line not in lines:  # a union reports one key once per branch
            lines.append(line)
    more = f" (and {len(lines) - _MAX_PROBLEMS} more)" if len(lines) > _MAX_PROBLEMS else ""
    return "; ".join(lines[:_MAX_PROBLEMS]) + more


def _problem(e: Any, model: type[BaseModel] | None, data: Any) -> str:
    loc, fields = _locate(tuple(e["loc"]), model, data)
    kind = e["type"]
    ctx = e.get("ctx") or {}
    got = show(e.get("input"))

    def at(key: str = "") -> str:
        path = ".".join(p for p in (loc, key) if p)
        return f"{path}: " if path else ""

    if kind == "extra_forbidden":
        known = _fields_at(model, e["loc"][:-1])
        return f"{at()}got an unknown key, want " + (f"one of {', '.join(known)}" if known else "none of that name")
    if kind == "missing":
        return f"{at()}got nothing, want a value"
    if kind in ("value_error", "assertion_error"):
        err = ctx.get("error")
        if isinstance(err, FieldValueError):
            return f"{at(err.key)}got {err.got}, want {err.want}"
        # A validator's own words (they follow the house style: "got X, want Y").
        return f"{at()}{err if err is not None else e['msg']}"
    if kind == "literal_error":
        return f"{at()}got {got}, want one of {ctx.get('expected')}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = f"{ctx.get('discriminator', 'kind')}".strip("'")
        shown = show(ctx.get("tag")) if kind == "union_tag_invalid" else "nothing"
        tags = ", ".join(repr(t) for t in (_tag_of(b) for b in _branches(_type_at(model, tuple(e["loc"])))) if t)
        return f"{at(tag)}got {shown}, want one of {tags or ctx.get('expected_tags')}"
    if kind == "string_pattern_mismatch":
        want = fields or f"a string matching {ctx.get('pattern')}"
        return f"{at()}got {got}, want {want}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        # pydantic names the class ("instance of _Day"); a person wrote a TOML table.
        keys = _fields_at(model, e["loc"])
        return f"{at()}got {got}, want a table" + (f" with {', '.join(keys)}" if keys else "")
    msg = e["msg"]
    for prefix in ("Input should be ", "Value should be ", "Input should have ", "Value error, "):
        msg = msg.removeprefix(prefix)
    return f"{at()}got {got}, want {_lower(msg)}"


def _lower(msg: str) -> str:
    return msg[:1].lower() + msg[1:]


# -- where: the key path as the operator wrote it --------------------------------------------


def _locate(loc: tuple[Any, ...], model: type[BaseModel] | None, data: Any) -> tuple[str, str]:
    """``(rendered key path, the field's description)`` for a pydantic error location."""
    out = ""
    tp: Any = model
    description = ""
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            label = str(part)
            item = data[part] if isinstance(data, list) and 0 <= part < len(data) else None
            if isinstance(item, dict):
                key = next((item[k] for k in _ITEM_KEYS if isinstance(item.get(k), str) and item.get(k)), None)
                label = repr(key) if key is not None else label
            out += f"[{label}]"
            data = item
            args = typing.get_args(tp)
            tp = args[0] if args else None
            continue
        part = str(part)
        branches = _branches(tp)
        if branches:
            owner = next((b for b in branches if part in b.model_fields), None)
            if owner is None:  # a tag pydantic put into the path: choose the branch, show nothing
                tp = next((b for b in branches if _tag_of(b) == part), None)
                continue
            tp = owner
        if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            info = tp.model_fields[part]
            description = info.description or ""
            tp = info.annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else None
            description = ""
        else:
            tp, description = None, ""
        out += ("." if out else "") + part
        data = data.get(part) if isinstance(data, dict) else None
    return out, description


def _type_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> Any:
    """The declared type at ``loc`` (``None`` where the model does not say)."""
    tp: Any = model
    for part in loc:
        tp = _unwrap(tp)
        if isinstance(part, int):
            args = typing.get_args(tp)
            tp = args[0] if args else None
            continue
        branches = _branches(tp)
        if branches:
            owner = next((b for b in branches if str(part) in b.model_fields), None)
            if owner is None:  # a tag: the branch it selects
                tp = next((b for b in branches if _tag_of(b) == part), None)
                continue
            tp = owner
        if isinstance(tp, type) and issubclass(tp, BaseModel) and part in tp.model_fields:
            tp = tp.model_fields[part].annotation
        elif typing.get_origin(tp) is dict:
            tp = typing.get_args(tp)[1] if typing.get_args(tp) else None
        else:
            return None
    return _unwrap(tp)


def _fields_at(model: type[BaseModel] | None, loc: tuple[Any, ...]) -> list[str]:
    """The keys a table at ``loc`` may have (for "want one of ..."), if the model says."""
    tp = _type_at(model, loc)
    branches = _branches(tp)
    if branches:
        return sorted({f for b in branches for f in b.model_fields})
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return list(tp.model_fields)
    return []


def _unwrap(tp: Any) -> Any:
    """Strips ``Annotated`` and ``None`` from a type, leaving a list, a dict, a model or a union of models."""
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) == 1:
                tp = args[0]
                continue
        return tp


def _branches(tp: Any) -> list[type[BaseModel]]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        out = []
        for a in typing.get_args(tp):
            a = _unwrap(a)
            if isinstance(a, type) and issubclass(a, BaseModel):
                out.append(a)
        return out
    return []


def _tag_of(branch: type[BaseModel]) -> str | None:
    """The literal value a tagged union selects ``branch`` by (its ``kind``-like field)."""
    for info in branch.model_fields.values():
        ann = _unwrap(info.annotation)
        if typing.get_origin(ann) is typing.Literal and len(typing.get_args(ann)) == 1:
            return str(typing.get_args(ann)[0])
    return None
