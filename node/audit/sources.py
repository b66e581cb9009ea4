"""Where the security officer's offline tools read a log from, and the trusted keys they check it with.

A *source* is a node store (an SQLAlchemy ``Engine`` or a database URL such as
``sqlite:///node.db``) or an export file (a path). Nothing here needs the node's private
key; verification needs the trusted verifier keys (``name+hexid+base64``).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from hedui.node.audit.entry import format_time, utc
from hedui.node.audit.note import CosignatureVerifier, Verifiers
from hedui.node.errors import InvalidArgument
from hedui.node.store.db import open_engine

__all__ = ["Source", "Progress", "PROGRESS_EVERY", "engine_for", "is_url", "load_trusted_keys", "cosigners",
           "b64", "b64d", "iso", "parse_iso"]

Source = str | os.PathLike[str] | Engine
Progress = Callable[[int, int], None]
PROGRESS_EVERY = 20_000


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def b64d(s: Any) -> bytes:
    if not isinstance(s, str):
        raise ValueError("not base64")
    return base64.b64decode(s, validate=True)


def iso(t: datetime | None) -> str | None:
    return None if t is None else format_time(t)


def parse_iso(s: Any) -> datetime | None:
    if not isinstance(s, str):
        return None
    try:
        return utc(datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        return None


def is_url(source: Source) -> bool:
    return isinstance(source, str) and "://" in source


@contextmanager
def engine_for(source: Source) -> Iterator[Engine]:
    if isinstance(source, Engine):
        yield source
        return
    if not is_url(source):
        raise InvalidArgument(f"source: got {source!r}, want a database URL or an Engine")
    eng = open_engine(str(source))
    try:
        yield eng
    finally:
        eng.dispose()


def load_trusted_keys(values: Iterable[str]) -> Verifiers:
    """Verifier keys from strings or files (one key per line, ``#`` comments). Raises
    :class:`~hedui.node.audit.errors.KeyFormatError` for a malformed key."""
    keys: list[str] = []
    for v in values:
        p = Path(v)
        if p.is_file():
            for line in p.read_text(encoding="utf-8").splitlines():
                line = line.split("#", 1)[0].strip()
                if line:
                    keys.append(line)
        else:
            keys.append(v.strip())
    return Verifiers(keys)


def cosigners(trusted: Verifiers) -> Verifiers:
    out = Verifiers()
    for v in trusted:
        out.add(v if isinstance(v, CosignatureVerifier) else CosignatureVerifier(v.name, v.public_key))
    return out
