"""What peers hold of a log: the checkpoints they cosigned, as sizes a verifier can trust
(issue 13 item 4; c2sp.org/tlog-cosignature, the witness model of tlog-witness).

A node cosigns every checkpoint a peer attaches to its answers and keeps it
(``audit_cosignatures``: the peer's signed note and its own cosignature line), and those
travel in its exports. A log whose owner deleted its newest entries *and* the checkpoints
covering them still verifies on its own; it cannot hide from a peer that cosigned a larger
size. :func:`peer_cosigned` reads the peers' exports (or stores), keeps the cosigned
checkpoints of the log being verified whose signatures hold — the log's own key on the note,
the peer's key on the cosignature, both from the officer's trusted keys — and
:func:`hedui.node.audit.verify.verify` treats each as a trusted size: larger than the log
-> ``TRUNCATED``, a different root at that size -> ``FORK``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select

from hedui.node.audit.errors import AmbiguousKeyError, CheckpointError, CosignatureError, NoteError, UnknownKeyError
from hedui.node.audit.note import Checkpoint, CosignatureVerifier, Verifiers, open_checkpoint, split_note, verify_cosignature
from hedui.node.audit.sources import Source, cosigners, engine_for, is_url
from hedui.node.audit.tables import audit_cosignatures, audit_head

__all__ = ["Witnessed", "peer_cosigned"]


@dataclass(frozen=True)
class Witnessed:
    """A checkpoint of the verified log that ``witness`` cosigned."""

    witness: str
    checkpoint: Checkpoint


def _records(source: Source) -> tuple[str | None, list[dict]]:
    """(the source's own origin, its cosignature records) from an export file or a store."""
    if isinstance(source, str) and is_url(source) or not isinstance(source, (str, Path)):
        with engine_for(source) as eng, eng.connect() as c:
            head = c.execute(select(audit_head.c.origin).where(audit_head.c.id == 1)).scalar()
            rows = [{"peer": r.peer, "peer_note": r.peer_note, "cosignature": r.cosignature}
                    for r in c.execute(select(audit_cosignatures))]
        return head, rows
    origin, rows = None, []
    with open(source, "rb") as f:
        for line in f:
            if line.startswith(b'{"type":"entry"'):
                continue  # entries are not needed here
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a damaged line: verifying that export is another run's job
            if not isinstance(obj, dict):
                continue
            if obj.get("type") == "header":
                origin = obj.get("origin")
            elif obj.get("type") == "cosignature":
                rows.append(obj)
    return origin, rows


def peer_cosigned(sources: Iterable[Source], origin: str | None, trusted: Verifiers) -> tuple[list[Witnessed], list[str]]:
    """The verified cosigned checkpoints of ``origin`` held by the peers' ``sources``, and one
    note per record that could not be used (unknown key, bad signature: not trusted, so not
    counted for or against the log)."""
    out: list[Witnessed] = []
    notes: list[str] = []
    co = cosigners(trusted)
    for src in sources:
        witness_origin, rows = _records(src)
        witness = (witness_origin or str(src)).rsplit("/", 1)[-1]
        for rec in rows:
            note, line = rec.get("peer_note"), rec.get("cosignature")
            if not isinstance(note, str) or not isinstance(line, str):
                continue
            try:
                text, _ = split_note(note)
                body = Checkpoint.parse(text)
                if origin is not None and body.origin != origin:
                    continue  # another log's checkpoint
                cp, _ = open_checkpoint(note, trusted, origin=origin)
                _, sigs = split_note("x\n\n" + line.rstrip("\n") + "\n")
                v = co.lookup(sigs[0].name, sigs[0].key_id)
                if not isinstance(v, CosignatureVerifier):
                    raise CosignatureError(f"{sigs[0].name}: not a cosignature key")
                verify_cosignature(v, text, sigs[0])
            except (UnknownKeyError, AmbiguousKeyError) as exc:
                notes.append(f"{witness}: a cosigned checkpoint was not used: {exc}")
                continue
            except (NoteError, CheckpointError, CosignatureError, IndexError, ValueError) as exc:
                notes.append(f"{witness}: a cosigned checkpoint does not verify: {exc}")
                continue
            out.append(Witnessed(witness, cp))
    return out, notes
