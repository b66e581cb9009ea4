"""Signed notes (c2sp.org/signed-note, Ed25519), checkpoints (c2sp.org/tlog-checkpoint) and
Ed25519 cosignatures (c2sp.org/tlog-cosignature, ``cosignature/v1``).

Keys travel as strings in the golang.org/x/mod/sumdb/note formats:

- verifier key ``<name>+<hex key id>+base64(<type byte> || <32-byte public key>)``;
- signer key ``PRIVATE+KEY+<name>+<hex key id>+base64(0x01 || <32-byte seed>)``;
- key id = SHA-256(name || 0x0A || type || public key)[:4], type 0x01 for note
  signatures and 0x04 for cosignature/v1 (the same Ed25519 key may serve both).

:func:`open_note` verifies a note against a set of known keys (:class:`Verifiers`) and
raises: :class:`MalformedNoteError` (layout), :class:`NoteSignatureError` (a known key's
signature fails: the whole note is rejected), :class:`UnknownKeyError` (no signature by a
known key), :class:`AmbiguousKeyError` (a known (name, id) listed twice and used).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from hedui.node.audit.errors import (
    AmbiguousKeyError,
    CheckpointError,
    CosignatureError,
    KeyFormatError,
    MalformedNoteError,
    NoteSignatureError,
    UnknownKeyError,
)

__all__ = [
    "ALG_ED25519",
    "ALG_COSIGNATURE_V1",
    "MAX_SIGNATURES",
    "key_id",
    "Signature",
    "Verifier",
    "CosignatureVerifier",
    "Signer",
    "Verifiers",
    "Note",
    "parse_verifier_key",
    "generate_key",
    "sign_note",
    "split_note",
    "open_note",
    "add_signatures",
    "Checkpoint",
    "open_checkpoint",
    "cosignature_message",
    "cosignature_timestamp",
    "verify_cosignature",
]

# c2sp.org/signed-note "Signature types".
ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
# c2sp.org/signed-note "Format": verifiers MUST accept at least 16 signatures; Go allows 100.
MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "  # em dash, space
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")
_COSIG_HEADER = b"cosignature/v1\n"


def _b64decode(s: str) -> bytes | None:
    """Standard base64 (RFC 4648 §4), padded and canonical; None if not."""
    if not _B64.fullmatch(s):
        return None
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return None
    return raw if base64.b64encode(raw).decode("ascii") == s else None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _valid_name(name: str) -> bool:
    # c2sp.org/signed-note: key names are non-empty, no Unicode spaces, no "+".
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """c2sp.org/signed-note: SHA-256(key name || 0x0A || type || public key)[:4], big-endian."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: ``— <name> base64(key id || signature)``."""

    name: str
    key_id: int
    base64: str

    @property
    def key_id_hex(self) -> str:
        return f"{self.key_id:08x}"

    @property
    def raw(self) -> bytes:
        """The signature bytes after the 4-byte key id."""
        return base64.b64decode(self.base64)[4:]

    @property
    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {self.base64}\n"

    @classmethod
    def make(cls, name: str, kid: int, sig: bytes) -> Signature:
        return cls(name, kid, _b64(kid.to_bytes(4, "big") + sig))


def _split_vkey(vkey: str) -> tuple[str, int, int, bytes]:
    """``name+hex+base64`` -> (name, key id, type byte, key bytes); checks the id."""
    if not isinstance(vkey, str):
        raise KeyFormatError("verifier key: got a non-string")
    name, sep1, rest = vkey.partition("+")
    hex8, sep2, key64 = rest.partition("+")
    raw = _b64decode(key64) if sep1 and sep2 else None
    if not sep1 or not sep2 or not _HEX8.fullmatch(hex8) or not _valid_name(name) or not raw:
        raise KeyFormatError("verifier key: want <name>+<8 hex digits>+<base64 key>")
    kid = int(hex8, 16)
    if kid != key_id(name, raw[0], raw[1:]):
        raise KeyFormatError(f"verifier key {name}+{hex8}: key id does not match the key")
    return name, kid, raw[0], raw[1:]


def _ed25519_public(key: bytes, what: str) -> Ed25519PublicKey:
    if len(key) != 32:
        raise KeyFormatError(f"{what}: Ed25519 public key must be 32 bytes, got {len(key)}")
    try:
        return Ed25519PublicKey.from_public_bytes(key)
    except ValueError as exc:
        raise KeyFormatError(f"{what}: invalid Ed25519 public key ({exc})") from None


class Verifier:
    """An Ed25519 note verifier (signature type 0x01)."""

    alg = ALG_ED25519

    def __init__(self, name: str, public_key: bytes) -> None:
        if not _valid_name(name):
            raise KeyFormatError(f"key name {name!r}: want non-empty, no spaces, no '+'")
        self.name = name
        self.public_key = bytes(public_key)
        self._pub = _ed25519_public(self.public_key, f"key {name}")
        self.key_id = key_id(name, self.alg, self.public_key)

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        name, _kid, alg, key = _split_vkey(vkey)
        if alg != ALG_ED25519:
            raise KeyFormatError(f"verifier key {name}: signature type 0x{alg:02x}, want 0x01 (Ed25519)")
        return cls(name, key)

    @property
    def vkey(self) -> str:
        return f"{self.name}+{self.key_id:08x}+{_b64(bytes([self.alg]) + self.public_key)}"

    @property
    def label(self) -> str:
        """``name+hexid``, as in error messages and vectors."""
        return f"{self.name}+{self.key_id:08x}"

    def _verify(self, text: bytes, sig: bytes) -> bool:
        # c2sp.org/signed-note "Ed25519 signatures": RFC 8032 over the note text.
        if len(sig) != 64:
            return False
        try:
            self._pub.verify(sig, text)
        except InvalidSignature:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Verifier)
            and type(other) is type(self)
            and (other.name, other.public_key) == (self.name, self.public_key)
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.name, self.public_key))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.vkey!r})"


class CosignatureVerifier(Verifier):
    """An Ed25519 ``cosignature/v1`` verifier (signature type 0x04, c2sp.org/tlog-cosignature).
    Its signatures are ``timestamp (u64 BE) || Ed25519 signature`` over
    :func:`cosignature_message`."""

    alg = ALG_COSIGNATURE_V1

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        """Accepts a 0x04 vkey, or an Ed25519 0x01 note vkey converted (the key id is
        recomputed with type 0x04), as transparency-dev/formats does."""
        name, _kid, alg, key = _split_vkey(vkey)
        if alg not in (ALG_ED25519, ALG_COSIGNATURE_V1):
            raise KeyFormatError(f"verifier key {name}: signature type 0x{alg:02x}, want 0x01 or 0x04")
        return cls(name, key)

    def _verify(self, text: bytes, sig: bytes) -> bool:
        # c2sp.org/tlog-cosignature: timestamped_signature = u64 timestamp || ed25519[64].
        if len(sig) != 8 + 64:
            return False
        ts = int.from_bytes(sig[:8], "big")
        if ts >= 1 << 63:  # "It MUST NOT exceed 2^63 - 1"
            return False
        try:
            self._pub.verify(sig[8:], cosignature_message(text, ts))
        except InvalidSignature:
            return False
        return True


def parse_verifier_key(vkey: str) -> Verifier:
    """A :class:`Verifier` (type 0x01) or :class:`CosignatureVerifier` (type 0x04)."""
    _name, _kid, alg, _key = _split_vkey(vkey)
    if alg == ALG_COSIGNATURE_V1:
        return CosignatureVerifier.from_vkey(vkey)
    return Verifier.from_vkey(vkey)


class Signer:
    """An Ed25519 signing key with a name. Signs notes (type 0x01) and cosignatures
    (type 0x04) with the same key."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not _valid_name(name):
            raise KeyFormatError(f"key name {name!r}: want non-empty, no spaces, no '+'")
        if not isinstance(private_key, Ed25519PrivateKey):
            raise KeyFormatError("signer: want an Ed25519 private key")
        self.name = name
        self._key = private_key
        self.public_key = private_key.public_key().public_bytes_raw()
        self.key_id = key_id(name, ALG_ED25519, self.public_key)
        self.cosignature_key_id = key_id(name, ALG_COSIGNATURE_V1, self.public_key)

    @classmethod
    def generate(cls, name: str) -> Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_skey(cls, skey: str) -> Signer:
        """Parses ``PRIVATE+KEY+<name>+<hex id>+base64(0x01 || seed)``."""
        if not isinstance(skey, str):
            raise KeyFormatError("signer key: got a non-string")
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[0] != "PRIVATE" or parts[1] != "KEY":
            raise KeyFormatError("signer key: want PRIVATE+KEY+<name>+<hex id>+<base64 key>")
        _, _, name, hex8, key64 = parts
        raw = _b64decode(key64)
        if not _HEX8.fullmatch(hex8) or not _valid_name(name) or not raw:
            raise KeyFormatError("signer key: want PRIVATE+KEY+<name>+<hex id>+<base64 key>")
        if raw[0] != ALG_ED25519 or len(raw) != 33:
            raise KeyFormatError("signer key: want an Ed25519 (0x01) 32-byte seed")
        signer = cls(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id != int(hex8, 16):
            raise KeyFormatError(f"signer key {name}+{hex8}: key id does not match the key")
        return signer

    @property
    def skey(self) -> str:
        seed = self._key.private_bytes_raw()
        return f"PRIVATE+KEY+{self.name}+{self.key_id:08x}+{_b64(bytes([ALG_ED25519]) + seed)}"

    @property
    def vkey(self) -> str:
        return self.verifier().vkey

    @property
    def cosignature_vkey(self) -> str:
        return self.cosignature_verifier().vkey

    def verifier(self) -> Verifier:
        return Verifier(self.name, self.public_key)

    def cosignature_verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier(self.name, self.public_key)

    def sign(self, text: str | bytes) -> Signature:
        """The note signature over ``text`` (c2sp.org/signed-note, Ed25519)."""
        data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        return Signature.make(self.name, self.key_id, self._key.sign(data))

    def cosign(self, body: str | bytes, timestamp: int) -> Signature:
        """A ``cosignature/v1`` over a checkpoint body (c2sp.org/tlog-cosignature)."""
        if not 0 <= timestamp < 1 << 63:
            raise CosignatureError(f"timestamp: got {timestamp}, want 0 <= t < 2^63")
        sig = self._key.sign(cosignature_message(body, timestamp))
        return Signature.make(self.name, self.cosignature_key_id, timestamp.to_bytes(8, "big") + sig)

    def __repr__(self) -> str:  # never the private key
        return f"Signer({self.name}+{self.key_id:08x})"


def generate_key(name: str) -> tuple[str, str]:
    """A fresh (signer key, verifier key) pair of strings."""
    s = Signer.generate(name)
    return s.skey, s.vkey


VerifierLike = Verifier | str


class Verifiers:
    """A set of known keys, looked up by (name, key id) like Go's ``note.VerifierList``.
    Strings are parsed with :func:`parse_verifier_key`."""

    def __init__(self, verifiers: Iterable[VerifierLike] = ()) -> None:
        self._all: list[Verifier] = []
        self._map: dict[tuple[str, int], list[Verifier]] = {}
        for v in verifiers:
            self.add(v)

    def add(self, v: VerifierLike) -> None:
        if isinstance(v, str):
            v = parse_verifier_key(v)
        if not isinstance(v, Verifier):
            raise KeyFormatError(f"verifier: got {type(v).__name__}, want a Verifier or key string")
        self._all.append(v)
        self._map.setdefault((v.name, v.key_id), []).append(v)

    def lookup(self, name: str, kid: int) -> Verifier:
        found = self._map.get((name, kid), [])
        if not found:
            raise UnknownKeyError(f"unknown key {name}+{kid:08x}")
        if len(found) > 1:
            raise AmbiguousKeyError(f"ambiguous key {name}+{kid:08x}")
        return found[0]

    def __iter__(self) -> Iterator[Verifier]:
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)


def _as_verifiers(known: Verifiers | Iterable[VerifierLike] | VerifierLike) -> Verifiers:
    if isinstance(known, Verifiers):
        return known
    if isinstance(known, (Verifier, str)):
        return Verifiers([known])
    return Verifiers(known)


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: its text and which signatures verified."""

    text: str
    signatures: tuple[Signature, ...]
    unverified: tuple[Signature, ...] = ()


def _check_text(text: str) -> None:
    # c2sp.org/signed-note: valid UTF-8, no ASCII control characters but newline.
    if any(c < " " and c != "\n" for c in text):
        raise MalformedNoteError("malformed note: control character")


def _decode(msg: str | bytes) -> str:
    if isinstance(msg, str):
        return msg
    try:
        return bytes(msg).decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedNoteError("malformed note: not valid UTF-8") from None


def split_note(msg: str | bytes) -> tuple[str, list[Signature]]:
    """Splits a signed note into its text and signature lines without verifying any.
    The text is everything up to the *last* blank line (c2sp.org/signed-note "Format")."""
    s = _decode(msg)
    _check_text(s)
    split = s.rfind("\n\n")
    if split < 0:
        raise MalformedNoteError("malformed note: no blank line before the signatures")
    text, block = s[: split + 1], s[split + 2 :]
    if not block or not block.endswith("\n"):
        raise MalformedNoteError("malformed note: no signature lines, or no final newline")
    sigs: list[Signature] = []
    for line in block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise MalformedNoteError("malformed note: a line after the blank line is not a signature")
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        raw = _b64decode(b64)
        if raw is None or not _valid_name(name) or len(raw) < 5:
            raise MalformedNoteError("malformed note: bad signature line")
        sigs.append(Signature(name, int.from_bytes(raw[:4], "big"), b64))
        if len(sigs) > MAX_SIGNATURES:
            raise MalformedNoteError(f"malformed note: more than {MAX_SIGNATURES} signatures")
    return text, sigs


def open_note(msg: str | bytes, known: Verifiers | Iterable[VerifierLike] | VerifierLike) -> Note:
    """Verifies a signed note against known keys (c2sp.org/signed-note "Signatures").

    Signatures by unknown keys are ignored (kept in ``unverified``, exact duplicates
    collapsed); a known key's signature MUST verify, else :class:`NoteSignatureError`;
    at least one must verify, else :class:`UnknownKeyError`."""
    verifiers = _as_verifiers(known)
    text, sigs = split_note(msg)
    data = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    seen_unverified: set[str] = set()
    for sig in sigs:
        try:
            v = verifiers.lookup(sig.name, sig.key_id)
        except UnknownKeyError:
            if sig.line not in seen_unverified:
                seen_unverified.add(sig.line)
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:  # repeated signature by one key
            continue
        seen.add((sig.name, sig.key_id))
        if not v._verify(data, sig.raw):
            raise NoteSignatureError(f"invalid signature for key {sig.name}+{sig.key_id:08x}")
        verified.append(sig)
    if not verified:
        names = ", ".join(sorted({f"{s.name}+{s.key_id:08x}" for s in sigs}))
        raise UnknownKeyError(f"note has no verifiable signatures (signed by: {names})")
    return Note(text, tuple(verified), tuple(unverified))


def sign_note(text: str, *signers: Signer) -> str:
    """``text`` + blank line + one signature line per signer (Go ``note.Sign``)."""
    if not isinstance(text, str) or not text.endswith("\n"):
        raise MalformedNoteError("malformed note: text must end in a newline")
    _check_text(text)
    if not signers:
        raise MalformedNoteError("sign_note: want at least one signer")
    return text + "\n" + "".join(s.sign(text).line for s in signers)


def add_signatures(signed: str, *sigs: Signature) -> str:
    """Appends signature lines (e.g. cosignatures) to a signed note, replacing existing
    lines of the same (name, key id)."""
    text, old = split_note(signed)
    new = {(s.name, s.key_id) for s in sigs}
    kept = [s for s in old if (s.name, s.key_id) not in new]
    return text + "\n" + "".join(s.line for s in [*kept, *sigs])


# -- c2sp.org/tlog-checkpoint ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A checkpoint body: origin, tree size, root hash, extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointError("checkpoint origin: want a non-empty single line")
        if not isinstance(self.size, int) or not 0 <= self.size < 1 << 64:
            raise CheckpointError(f"checkpoint size: got {self.size!r}, want 0 <= size < 2^64")
        if len(self.root) != 32:
            raise CheckpointError(f"checkpoint root: got {len(self.root)} bytes, want 32")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError("checkpoint extension lines: want non-empty single lines")

    @property
    def body(self) -> str:
        """The note text (c2sp.org/tlog-checkpoint "Note text"), final newline included."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str | bytes) -> Checkpoint:
        """Parses a checkpoint note *text* (no signatures)."""
        try:
            s = _decode(text)
        except MalformedNoteError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from None
        if not s.endswith("\n"):
            raise CheckpointError("checkpoint: text must end in a newline")
        lines = s[:-1].split("\n")
        # c2sp.org/tlog-checkpoint: at least three non-empty lines.
        if len(lines) < 3 or any(not line for line in lines):
            raise CheckpointError("checkpoint: want origin, size and root hash lines, none empty")
        origin, size_s, root_s, *ext = lines
        if not _DECIMAL.fullmatch(size_s) or int(size_s) >= 1 << 64:
            raise CheckpointError("checkpoint: tree size must be decimal with no leading zeroes")
        root = _b64decode(root_s)
        if root is None or len(root) != 32:
            raise CheckpointError("checkpoint: root hash must be base64 of 32 bytes")
        return cls(origin, int(size_s), root, tuple(ext))

    def sign(self, *signers: Signer) -> str:
        return sign_note(self.body, *signers)


def _is_cosignature(sig: Signature) -> bool:
    # A note signature is 64 bytes of Ed25519; a cosignature/v1 adds an 8-byte timestamp.
    return len(sig.raw) != 64


def open_checkpoint(
    msg: str | bytes,
    known: Verifiers | Iterable[VerifierLike] | VerifierLike,
    *,
    origin: str | None = None,
) -> tuple[Checkpoint, Note]:
    """Verifies a signed checkpoint and parses its body; ``origin``, if given, must match.

    The log's own signature binds the signer to the log (issue 18): at least one verified
    signature must be by a known key *named* as the checkpoint's origin (c2sp.org/tlog-checkpoint
    "the origin line ... SHOULD be the key name"; Hedui makes it a MUST). A member's key is
    known under its own log's origin only (``origin_of(federation, code)`` → that member's
    directory key), so a checkpoint for one member's log signed by another member — however
    valid that member's signature — is refused; a witness's cosignature never counts as the
    log's signature."""
    note = open_note(msg, known)
    cp = Checkpoint.parse(note.text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(f"checkpoint origin: got {cp.origin!r}, want {origin!r}")
    if not any(s.name == cp.origin and not _is_cosignature(s) for s in note.signatures):
        signers = ", ".join(sorted({s.name for s in note.signatures}))
        raise CheckpointError(f"checkpoint of {cp.origin!r}: signed by {signers}, want the key the directory assigns to that log")
    return cp, note


# -- c2sp.org/tlog-cosignature (Ed25519, cosignature/v1) -------------------------------


def cosignature_message(body: str | bytes, timestamp: int) -> bytes:
    """c2sp.org/tlog-cosignature "Ed25519 signed message":
    ``cosignature/v1\\n`` || ``time <t>\\n`` || checkpoint body (final newline included)."""
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    return _COSIG_HEADER + b"time %d\n" % timestamp + data


def cosignature_timestamp(sig: Signature | str) -> int:
    """The timestamp of a cosignature/v1 signature (``Signature`` or its base64)."""
    b64 = sig.base64 if isinstance(sig, Signature) else sig
    raw = _b64decode(b64) if isinstance(b64, str) else None
    if raw is None or len(raw) != 4 + 8 + 64:
        raise CosignatureError("cosignature: want base64 of key id (4) || timestamp (8) || Ed25519 (64)")
    ts = int.from_bytes(raw[4:12], "big")
    if ts >= 1 << 63:
        raise CosignatureError("cosignature: timestamp exceeds 2^63 - 1")
    return ts


def verify_cosignature(
    verifier: CosignatureVerifier | str, body: str | bytes, sig: Signature | str
) -> int:
    """Verifies one cosignature/v1 over a checkpoint body; returns its timestamp.
    ``sig`` is a :class:`Signature` or a whole signature line."""
    v = CosignatureVerifier.from_vkey(verifier) if isinstance(verifier, str) else verifier
    if not isinstance(v, CosignatureVerifier):
        v = CosignatureVerifier(v.name, v.public_key)
    if isinstance(sig, str):
        line = sig if sig.endswith("\n") else sig + "\n"
        try:
            _, sigs = split_note("x\n\n" + line)
        except MalformedNoteError as exc:
            raise CosignatureError(f"cosignature line: {exc}") from None
        if len(sigs) != 1:
            raise CosignatureError("cosignature: want exactly one signature line")
        sig = sigs[0]
    if (sig.name, sig.key_id) != (v.name, v.key_id):
        raise UnknownKeyError(f"unknown key {sig.name}+{sig.key_id:08x} (want {v.label})")
    ts = cosignature_timestamp(sig)
    data = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if not v._verify(data, sig.raw):
        raise CosignatureError(f"invalid cosignature for key {v.label}")
    return ts
