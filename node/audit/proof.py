"""``hedui audit proof``: a c2sp.org/tlog-proof that one entry is in a signed checkpoint
(RFC 9162 §2.1.3 inclusion), and its offline check.
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass

from hedui.node.audit import merkle
from hedui.node.audit.errors import InclusionProofError, ProofFormatError
from hedui.node.audit.note import Checkpoint, Note, Verifier, Verifiers, open_checkpoint
from hedui.node.audit.sources import Source, b64, b64d, engine_for
from hedui.node.audit.tree import TreeReader
from hedui.node.errors import InvalidArgument, NotFound

__all__ = ["PROOF_HEADER", "ProofResult", "proof", "verify_proof"]

PROOF_HEADER = "c2sp.org/tlog-proof@v1"


@dataclass(frozen=True)
class ProofResult:
    index: int
    entry: bytes | None
    checkpoint: Checkpoint
    note: Note


def proof(engine: Source, seq: int, *, size: int | None = None) -> str:
    """A c2sp.org/tlog-proof for entry ``seq`` against the latest checkpoint (or the one
    at ``size``); the entry bytes go in the ``extra`` line."""
    with engine_for(engine) as eng:
        tree = TreeReader(eng)
        cp = tree.latest_checkpoint() if size is None else tree.checkpoint_at(size)
        if cp is None:
            raise NotFound("no checkpoint" + ("" if size is None else f" at size {size}"))
        if not 0 <= seq < cp.size:
            raise InvalidArgument(
                f"seq: got {seq}, want 0..{cp.size - 1} (entries after the last checkpoint "
                "need the next checkpoint)"
            )
        hashes = tree.inclusion_proof(seq, cp.size)
        entry = tree.entry(seq)
    lines = [PROOF_HEADER, f"extra {b64(entry)}", f"index {seq}", *(b64(h) for h in hashes)]
    return "\n".join(lines) + "\n\n" + cp.note


_INDEX = re.compile(r"index (0|[1-9][0-9]*)")


def verify_proof(
    text: str | bytes,
    trusted_keys: Verifiers | Iterable[Verifier | str],
    *,
    origin: str | None = None,
    entry: bytes | None = None,
) -> ProofResult:
    """Verifies a c2sp.org/tlog-proof: the checkpoint's signature by a trusted key, then
    the inclusion of the entry (from ``extra``, or ``entry``; both must agree if given).
    Raises :class:`ProofFormatError`, :class:`InclusionProofError` or the note errors."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise ProofFormatError("tlog-proof: not UTF-8") from None
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise ProofFormatError("tlog-proof: no blank line before the checkpoint")
    lines = head.split("\n")
    if lines[0] != PROOF_HEADER:
        raise ProofFormatError(f"tlog-proof: first line must be {PROOF_HEADER}")
    i = 1
    extra: bytes | None = None
    if i < len(lines) and lines[i].startswith("extra "):
        try:
            extra = b64d(lines[i][6:])
        except (ValueError, binascii.Error):
            raise ProofFormatError("tlog-proof: extra is not base64") from None
        i += 1
    m = _INDEX.fullmatch(lines[i]) if i < len(lines) else None
    if not m:
        raise ProofFormatError("tlog-proof: want an 'index N' line")
    index = int(m.group(1))
    hashes = []
    for j, line in enumerate(lines[i + 1 :]):
        try:
            h = b64d(line)
        except (ValueError, binascii.Error):
            raise ProofFormatError(f"tlog-proof: hash line {j + 1} is not base64") from None
        if len(h) != merkle.HASH_SIZE or b64(h) != line:
            raise ProofFormatError(f"tlog-proof: hash line {j + 1} is not a base64 SHA-256 hash")
        hashes.append(h)
    trusted = trusted_keys if isinstance(trusted_keys, Verifiers) else Verifiers(trusted_keys)
    cp, opened = open_checkpoint(note, trusted, origin=origin)
    if extra is not None and entry is not None and extra != entry:
        raise InclusionProofError("tlog-proof: the given entry differs from the proof's extra data")
    data = entry if entry is not None else extra
    if data is None:
        raise ProofFormatError("tlog-proof: no extra data and no entry given")
    merkle.verify_inclusion(merkle.leaf_hash(data), index, cp.size, hashes, cp.root)
    return ProofResult(index, data, cp, opened)
