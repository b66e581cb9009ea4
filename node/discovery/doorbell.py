"""The outbox doorbell: another process on the node's host that queued notices (``hedui
notices detect``, a detection process beside the node) wakes the serving node's pusher at
once, instead of the pusher finding them at its next poll (issue 16: a pusher woken by the
outbox, so the poll interval can stay long and an idle node spends next to nothing).

The bell is a datagram socket in Linux's abstract namespace (no file to clean up; it goes
away with the process, also after kill -9), named after the store: every process that opens
the same store rings the same bell. A ring carries no data and is only a hint: the pusher
then looks at the outbox as it would at its next poll, so a lost, spurious or unanswered
ring changes nothing but latency, and the poll (``[provider] push_interval``) stays the
fallback. Where the namespace does not exist (not Linux) or the name is taken (a second node
on one PostgreSQL store on this host), the node polls as before.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import sys
import threading

from sqlalchemy.engine import Engine, make_url

__all__ = ["Doorbell", "bell_name", "ring"]

log = logging.getLogger(__name__)


def bell_name(engine: Engine) -> bytes | None:
    """The abstract socket name of the outbox in ``engine``'s store (a digest of the store's
    database, never the URL itself), or ``None`` where there is no abstract namespace."""
    if not sys.platform.startswith("linux"):
        return None
    url = make_url(str(engine.url.render_as_string(hide_password=True)))
    where = url.database or ""
    if url.get_backend_name() == "sqlite" and where and where != ":memory:":
        from pathlib import Path

        where = str(Path(where).resolve())
    key = f"{url.get_backend_name()}|{url.host or ''}|{url.port or ''}|{where}"
    return b"\0hedui-outbox-" + hashlib.sha256(key.encode()).hexdigest()[:32].encode()


def ring(name: bytes | None) -> bool:
    """Rings the bell ``name`` (best effort); True when a listener got it."""
    if name is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            s.sendto(b"!", name)
        return True
    except OSError:   # nobody listening (no node serving), or its queue is full: it is awake anyway
        return False


class Doorbell:
    """Listens on the bell ``name`` and sets ``wake`` on every ring (one daemon thread)."""

    def __init__(self, name: bytes | None, wake: threading.Event) -> None:
        self.name = name
        self.wake = wake
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def start(self) -> bool:
        """Binds the bell; False (and the pusher keeps polling) when it cannot."""
        if self.name is None or self._sock is not None:
            return self._sock is not None
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            s.bind(self.name)
        except OSError as exc:
            s.close()
            log.info("outbox doorbell not bound (%s): the pusher polls", exc.strerror)
            return False
        self._sock = s
        self._stopping = False
        self._thread = threading.Thread(target=self._listen, name="outbox-doorbell", daemon=True)
        self._thread.start()
        return True

    def _listen(self) -> None:
        s = self._sock
        assert s is not None
        while True:
            try:
                s.recv(16)
            except OSError:
                return
            if self._stopping:
                return
            self.wake.set()

    def stop(self) -> None:
        s, self._sock = self._sock, None
        if s is None:
            return
        self._stopping = True
        ring(self.name)   # ends the blocking recv
        if self._thread is not None:
            self._thread.join(timeout=5)
        s.close()
