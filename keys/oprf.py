"""Pseudonyms: RFC 9497 VOPRF, suite ristretto255-SHA512, behind one small module.

A provider holds one OPRF key per key epoch (:class:`ServerKey`). Its pseudonym for an
identity number ``id`` is ``F(k, id)`` (RFC 9497 §3.3.2 ``Finalize`` / §3.3.1 ``Evaluate``
over the normalised 18-character number as ASCII). The hub never sends an identity: it
blinds (:func:`blind`, §3.3.2 ``Blind``), the provider evaluates a batch and proves it with
one batched DLEQ proof (:meth:`ServerKey.evaluate_batch`, §3.3.2 ``BlindEvaluate`` and
§2.2.1 ``GenerateProof``), and the hub verifies and unblinds (:func:`finalize`, §2.2.2
``VerifyProof`` and §3.3.2 ``Finalize``).

Only bytes cross this module's boundary (elements, proofs, keys, tokens), so the
implementation underneath (today the ``voprf`` package, a binding of the Rust ``voprf``
crate) can be swapped without touching callers. The ``voprf`` package implements mode
VOPRF (``modeVOPRF = 0x01``, §3.1) only, which is the mode Hedui uses.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from typing import BinaryIO

from voprf import ristretto as _r

from hedui.adapters.idnum import normalize
from hedui.common.errors import InvalidArgument
from hedui.keys.errors import InvalidBlindedElement, OprfProofError

__all__ = [
    "SUITE",
    "ELEMENT_SIZE",
    "PROOF_SIZE",
    "TOKEN_SIZE",
    "MAX_BATCH",
    "ServerKey",
    "BlindState",
    "blind",
    "finalize",
    "InvalidBlindedElement",
    "OprfProofError",
]

SUITE = "ristretto255-SHA512"
#: Ne, Ns for ristretto255 (§4.1): serialized group elements and scalars are 32 bytes.
ELEMENT_SIZE = 32
#: A DLEQ proof is ``c || s``, two serialized scalars (§2.2.1).
PROOF_SIZE = 64
#: Nh for SHA-512: the length of an OPRF output, i.e. of a token (§4.1).
TOKEN_SIZE = 64
#: The library caps a batch (and an input) at 2^16 - 1 items.
MAX_BATCH = 65535

_INFO_PREFIX = b"hedui-oprf-epoch-"
_SEED_SIZE = 32



_STDERR_LOCK = threading.Lock()
# The Rust panic hook's report: a newline, "thread '<name>' (<id>) panicked at <file>:<line>:<col>:",
# the message line, then (with RUST_BACKTRACE) "stack backtrace:", numbered frames and their
# "at" lines, and "note: ..." lines (the first panic of a process only).
_PANIC_REPORT = re.compile(
    rb"\n?thread '[^'\n]*'(?: \(\d+\))? panicked at [^\n]*\n[^\n]*\n"
    rb"(?:(?:stack backtrace:|note: [^\n]*|[ \t]+\d+: [^\n]*|[ \t]+at [^\n]*)\n)*"
)


#: The process's sink for fd 2 during a guarded call: (pid, file). One per process, kept
#: (issue 16: making a temporary file per call cost ~135 µs of the ~8 a swap costs without
#: it, three times per finalize); a forked child makes its own, as its parent's is shared.
_SINK: tuple[int, BinaryIO] | None = None


def _sink_fd() -> int:
    global _SINK
    pid = os.getpid()
    if _SINK is None or _SINK[0] != pid:
        sink = tempfile.TemporaryFile(buffering=0)
        atexit.register(sink.close)   # closed at exit, not left to the collector's warning
        _SINK = (pid, sink)
    return _SINK[1].fileno()


@contextlib.contextmanager
def _no_foreign_panic_report() -> Iterator[None]:
    """Keeps the binding's panic report off stderr (issue 18: a hostile provider's bad proof
    printed a Rust backtrace to the hub's stderr on every request).

    The ``voprf`` binding signals a failed check by panicking; Rust's panic hook writes its
    report straight to file descriptor 2, below Python, so the only way to keep it out is to
    point fd 2 elsewhere for the duration of the call. Whatever else reached fd 2 meanwhile
    (another thread's log line) is written back afterwards, minus the panic report. A lock
    serialises the swap (the calls hold the GIL anyway); the sink is emptied after each."""
    with _STDERR_LOCK:
        try:
            sys.stderr.flush()
        except (AttributeError, ValueError, OSError):
            pass
        sink = _sink_fd()
        saved = os.dup(2)
        os.dup2(sink, 2)   # fd 2 shares the sink's offset: it says how much was written
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            written = os.lseek(sink, 0, os.SEEK_CUR)
            if written:
                os.lseek(sink, 0, os.SEEK_SET)
                got = b""
                while len(got) < written:
                    part = os.read(sink, written - len(got))
                    if not part:
                        break
                    got += part
                os.ftruncate(sink, 0)
                os.lseek(sink, 0, os.SEEK_SET)
                rest = _PANIC_REPORT.sub(b"", got)
                if rest:
                    os.write(2, rest)


def _is_library_error(exc: BaseException) -> bool:
    # The binding reports a failed proof as pyo3's PanicException, which derives from
    # BaseException rather than Exception; nothing else it raises is a BaseException only.
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def _ascii(identity: str) -> bytes:
    return normalize(identity).encode("ascii")


class ServerKey:
    """A provider's OPRF key for one epoch. Holds the secret; never log or print it."""

    __slots__ = ("_seed", "_info", "_epoch", "_evaluator", "_public")

    def __init__(self, seed: bytes, info: bytes, epoch: int) -> None:
        # Private: use derive(). ``info`` is the §3.2.1 KeyInfo (tests pass the vectors').
        self._seed, self._info, self._epoch = bytes(seed), bytes(info), epoch
        self._evaluator = _r.Evaluator.from_seed(self._seed, self._info)
        self._public = self._evaluator.public_key.serialize()

    @classmethod
    def derive(cls, seed: bytes, epoch: int) -> ServerKey:
        """Derives the epoch's key pair from a 32-byte secret seed: RFC 9497 §3.2.1
        DeriveKeyPair(seed, info) with info = ``b"hedui-oprf-epoch-" || epoch``."""
        if not isinstance(seed, (bytes, bytearray)) or len(seed) != _SEED_SIZE:
            n = len(seed) if isinstance(seed, (bytes, bytearray)) else type(seed).__name__
            raise InvalidArgument(f"oprf seed: got {n} bytes, want {_SEED_SIZE}")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise InvalidArgument(f"epoch: got {epoch!r}, want an integer >= 0")
        return cls(seed, _INFO_PREFIX + str(epoch).encode("ascii"), epoch)

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def public_key_bytes(self) -> bytes:
        """``pkS`` serialized (§4.1 SerializeElement), published in the directory."""
        return self._public

    def evaluate_batch(self, blinded: Sequence[bytes]) -> tuple[list[bytes], bytes]:
        """Evaluates blinded elements and proves all of them with one DLEQ proof.

        Returns ``(evaluated elements in request order, proof)`` (§3.3.2 BlindEvaluate with
        the batched §2.2.1 GenerateProof). Raises :class:`InvalidBlindedElement` naming the
        first bad index, or :class:`InvalidArgument` for an empty or oversized batch.
        """
        n = len(blinded)
        if not 1 <= n <= MAX_BATCH:
            raise InvalidArgument(f"blinded: got {n} elements, want 1 to {MAX_BATCH}")
        inputs = []
        for i, b in enumerate(blinded):
            if not isinstance(b, (bytes, bytearray)) or len(b) != ELEMENT_SIZE:
                got = f"{len(b)} bytes" if isinstance(b, (bytes, bytearray)) else type(b).__name__
                raise InvalidBlindedElement(f"blinded[{i}]: got {got}, want {ELEMENT_SIZE} bytes")
        bad = -1
        with _no_foreign_panic_report():  # once per batch: the swap costs a temp file
            for i, b in enumerate(blinded):
                try:
                    # §4.1 DeserializeElement rejects non-canonical encodings and the identity.
                    inputs.append(_r.BlindedInput.deserialize(bytes(b)))
                except BaseException as exc:
                    if not _is_library_error(exc):
                        raise
                    bad = i
                    break
        if bad >= 0:
            raise InvalidBlindedElement(
                f"blinded[{bad}]: got an invalid encoding, want a ristretto255 element other than the identity"
            )
        out = self._evaluator.evaluate_batch(inputs).serialize()
        # The library's wire form is proof (c || s) followed by the evaluated elements.
        proof = out[:PROOF_SIZE]
        elements = [out[PROOF_SIZE + i * ELEMENT_SIZE: PROOF_SIZE + (i + 1) * ELEMENT_SIZE] for i in range(n)]
        return elements, proof

    def token(self, identity: str) -> bytes:
        """``F(k, id)`` for a (normalised here) identity number: RFC 9497 §3.3.1 Evaluate.

        Equal to what a hub obtains through :func:`blind`, :meth:`evaluate_batch` and
        :func:`finalize`. Raises :class:`~hedui.adapters.idnum.InvalidIdentity`.
        """
        return self._evaluate(_ascii(identity))

    def token_of_normalized(self, identity: str) -> bytes:
        """:meth:`token` for an identity that has just come out of
        :func:`~hedui.adapters.idnum.normalize` (the index build's row converter): the same
        ``F(k, id)`` without checking and folding the number a second time (issue 16 item 4).
        Anything else must go through :meth:`token`."""
        return self._evaluator.evaluate_known_input(identity.encode("ascii"))

    def _evaluate(self, x: bytes) -> bytes:
        # §3.3.1 Evaluate on raw input bytes (conformance tests feed the vectors' inputs).
        return self._evaluator.evaluate_known_input(x)

    def __reduce__(self):  # lets a process pool ship the key to its workers
        return (ServerKey, (self._seed, self._info, self._epoch))

    def __repr__(self) -> str:
        return f"ServerKey(epoch={self._epoch}, public_key={self._public.hex()[:16]}…)"


class BlindState:
    """The hub's private half of a blinding: the blinds for one batch, in order.

    ``blinded`` is what to send to the provider. Keep the state in memory only; it is not
    serialisable (the blinds must never leave the process).
    """

    __slots__ = ("_clients", "blinded")

    def __init__(self, clients: list, blinded: list[bytes]) -> None:
        self._clients = clients
        self.blinded = blinded

    def __len__(self) -> int:
        return len(self._clients)

    def __reduce__(self):
        raise TypeError("BlindState holds blinding scalars and cannot be pickled")


def blind(identities: Sequence[str]) -> BlindState:
    """Normalises and blinds identity numbers (RFC 9497 §3.3.2 Blind, fresh random blinds).

    Raises :class:`~hedui.adapters.idnum.InvalidIdentity` for an invalid number (the
    message does not contain it), :class:`InvalidArgument` for an empty or oversized batch.
    """
    n = len(identities)
    if not 1 <= n <= MAX_BATCH:
        raise InvalidArgument(f"identities: got {n}, want 1 to {MAX_BATCH}")
    inputs = [_ascii(i) for i in identities]
    clients, blinded = [], []
    for x in inputs:
        client, b = _r.Client.blind(x)
        clients.append(client)
        blinded.append(b.serialize())
    return BlindState(clients, blinded)


def finalize(state: BlindState, elements: Sequence[bytes], proof: bytes, public_key: bytes) -> list[bytes]:
    """Verifies the batched proof against ``public_key`` and unblinds (RFC 9497 §3.3.2 Finalize).

    Returns the tokens in the order of :func:`blind`'s input. Raises :class:`~hedui.keys.errors.OprfProofError`
    when the proof does not verify, the element count differs from the blinded count, or an
    element, the proof or the public key is malformed.
    """
    n = len(state)
    if len(elements) != n:
        raise OprfProofError(f"elements: got {len(elements)}, want {n} (one per blinded element)")
    if not isinstance(proof, (bytes, bytearray)) or len(proof) != PROOF_SIZE:
        raise OprfProofError(f"proof: got {len(proof) if isinstance(proof, (bytes, bytearray)) else type(proof).__name__} bytes, want {PROOF_SIZE}")
    for i, e in enumerate(elements):
        if not isinstance(e, (bytes, bytearray)) or len(e) != ELEMENT_SIZE:
            raise OprfProofError(f"elements[{i}]: got {len(e) if isinstance(e, (bytes, bytearray)) else type(e).__name__} bytes, want {ELEMENT_SIZE}")
    # One guarded swap for the three library calls (issue 16); ``stage`` names what failed.
    stage = "public_key"
    try:
        with _no_foreign_panic_report():
            pk = _r.PublicKey.deserialize(bytes(public_key))
            stage = "elements"
            output = _r.VerifiableBatchOutput.deserialize(bytes(proof) + b"".join(bytes(e) for e in elements))
            stage = "proof"
            return list(_r.Client.finalize_batch(state._clients, output, pk))
    except BaseException as exc:
        if not _is_library_error(exc):
            raise
        raise OprfProofError(_FINALIZE_FAILED[stage]) from None


_FINALIZE_FAILED = {
    "public_key": "public_key: got an invalid encoding, want a ristretto255 element",
    "elements": "elements: got an invalid encoding, want ristretto255 elements and a proof c || s",
    "proof": "proof: got a DLEQ proof that does not verify against the public key, want a valid one",
}
