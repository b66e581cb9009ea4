"""One exchange across logs: every entry that names a request id (``hedui audit find``).

``audit reconcile`` lists exchanges whose two sides disagree, by request id; the officer's next
question is what each log says about that one exchange. A request id is the lower-case hex of
the 16 random bytes every signed request carries (node/audit/entry.py); a discovery notice's
id is used the same way by ``notice.sent`` / ``notice.received`` / ``receipt``.

From a node store the look-up uses the ``request_id`` column's index (node/audit/tables.py:
a copy of the field kept for exactly this). The column is not trusted: an entry is listed
only if its own bytes name the request id. From an export file every entry is decoded (the
entries are base64, so no text search can skip one). This is a look-up, not a verification:
``hedui audit verify`` says whether the log holding these entries is intact.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, select

from hedui.node.audit.entry import decode_entry
from hedui.node.audit.sources import Source, engine_for, is_url
from hedui.node.audit.tables import audit_entries
from hedui.node.errors import InvalidArgument, NotFound

__all__ = ["Found", "find_request", "request_id_of"]

_REQUEST_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Found:
    """One entry of a log: its leaf index (``seq``, what ``audit proof --seq`` takes), its own
    time, kind and fields, as the entry's bytes say."""

    seq: int
    time: str
    kind: str
    fields: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "time": self.time, "kind": self.kind, "fields": self.fields}


def request_id_of(text: str) -> str:
    """``text`` as a request id (32 hex digits; upper case accepted, returned lower case), or
    :class:`InvalidArgument`. The value is never echoed: whatever was typed (an identity
    number by mistake, say) stays out of the message."""
    rid = text.strip().lower()
    if not _REQUEST_ID.fullmatch(rid):
        raise InvalidArgument(f"request id: got {len(text)} characters, want 32 hex digits (as `audit reconcile` lists them)")
    return rid


def _named(data: bytes, rid: str) -> tuple[str, str, dict[str, Any]] | None:
    try:
        obj = decode_entry(data)
    except (ValueError, UnicodeDecodeError):
        return None
    fields = obj["fields"]
    if fields.get("request_id") != rid:
        return None
    return str(obj.get("time", "")), str(obj["kind"]), fields


def find_request(source: Source, request_id: str, *, progress: Callable[[int, int], None] | None = None) -> list[Found]:
    """Every entry of ``source`` (a store URL or Engine, or an export file) whose fields name
    ``request_id``, in log order. ``progress(done, total)`` in bytes, for an export file."""
    rid = request_id_of(request_id)
    if isinstance(source, Engine) or is_url(source):
        return _from_store(source, rid)
    return _from_export(Path(source), rid, progress)


def _from_store(source: Source, rid: str) -> list[Found]:
    t = audit_entries
    with engine_for(source) as eng, eng.connect() as conn:
        rows = conn.execute(select(t.c.seq, t.c.entry).where(t.c.request_id == rid).order_by(t.c.seq)).all()
    out = []
    for seq, data in rows:
        named = _named(bytes(data), rid)
        if named is not None:
            out.append(Found(int(seq), *named))
    return out


def _from_export(path: Path, rid: str, progress: Callable[[int, int], None] | None) -> list[Found]:
    if not path.is_file():
        raise NotFound(f"export file: got {str(path)[:200]!r}, want an existing file (hedui audit export)")
    total = path.stat().st_size
    done = 0
    out = []
    with open(path, "rb") as f:
        for n, line in enumerate(f):
            done += len(line)
            if progress is not None and n % 20_000 == 0:
                progress(done, total)
            if not line.startswith(b'{"type":"entry"'):
                continue
            try:
                rec = json.loads(line)
                seq, data = int(rec["seq"]), base64.b64decode(rec["entry"], validate=True)
            except (ValueError, KeyError, TypeError, binascii.Error):
                continue   # a damaged line: `audit verify` reports it; a look-up skips it
            named = _named(data, rid)
            if named is not None:
                out.append(Found(seq, *named))
    if progress is not None:
        progress(total, total)
    return out
