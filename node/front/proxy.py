"""The front of a node of several processes (``[node] worker_processes = N``, N >= 1).

Why: in one process, gRPC Python's single polling thread — which takes every new call, and
so decides every refusal — shares one GIL with the handler threads running admitted Lookups
(~5 ms of Python each), and under a flood calls wait for it in gRPC's core, whoever sent
them (docs/performance.md "Load shedding (issue 13)"). Here the process that takes calls
does no Lookup work: it ends TLS, admits or refuses each call at once (node/admission.py:
the node's cap and per-caller share, ``RESOURCE_EXHAUSTED`` / ``OVERLOADED``) and passes the
admitted ones, as raw bytes (no decoding), to one of N worker processes
(node/front/worker.py), each a full node of the same ``node.toml`` on a unix socket in a
private 0700 folder next to the ``node.toml`` (:func:`socket_folder`). The caller's certificate, as the front's TLS layer verified it, goes
with the call in metadata (node/peer.py ``FORWARDED_CERT``; anything a caller sends under
that key is dropped). Status codes, details, deadlines and metadata pass through unchanged;
streaming methods stream.

The front is gRPC Python's thread-pool server, whose handler threads only admit or refuse
and then wait for a worker's answer (the GIL released); a grpc.aio front (one event loop)
was measured first and spent ~50 % more CPU per call (docs/performance.md, "Load shedding",
third pass), and under a flood the front's CPU per call is what calls wait for.

A worker that dies: calls in flight on it fail ``UNAVAILABLE`` (ended by the watch, :class:`Flight`), calls
routed while none is up are refused ``UNAVAILABLE`` by the front (details ``UNAVAILABLE: node: no worker process is up``),
and the front starts it again. Workers die with the front (node/procs.py).

Refusals the front makes are counted here by (cause, caller) and handed to a worker every
few seconds (and when the front stops), which audits them as the one-process node does
(node/refusals.py, ``refusal.aggregated``): the front itself never opens the store, so one
worker on SQLite is still one process per store.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import grpc

from hedui.common.clock import Clock
from hedui.keys.ca import member_of_pem
from hedui.keys.errors import CertificateError
from hedui.node.admission import Admission
from hedui.node.errors import ConfigError, HeduiError, Reason, to_status
from hedui.node.front.methods import Method, method_table
from hedui.node.front.worker import REFUSALS_METHOD
from hedui.node.metrics import FrontMetrics
from hedui.node.peer import FORWARDED_CERT

__all__ = ["Front", "WorkerSlot", "serve_front", "socket_folder"]

log = logging.getLogger("hedui.node.front")

#: Metadata a caller may not pass to a worker: gRPC's own headers, and the front's identity key.
_HOP = {"user-agent", "te", "content-type", "grpc-timeout", "grpc-encoding", "grpc-accept-encoding", FORWARDED_CERT}

_WORKER_OPTIONS = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
    # A restarted worker is reconnected at once, not after gRPC's back-off.
    ("grpc.initial_reconnect_backoff_ms", 50),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@functools.lru_cache(maxsize=1024)
def _caller_key(pem: bytes) -> str:
    """The member code the certificate names (its CN): the key of the caller's share. The TLS
    layer verified the chain to the federation CA; whether this exact certificate is in the
    directory is the worker's check (node/peer.py), as in the one-process node."""
    try:
        return member_of_pem(pem)
    except CertificateError:
        return "?"


class Flight:
    """One call the front passed to a worker. It ends when the worker's answer is back, or when
    the watch finds the worker dead (:meth:`WorkerSlot.died`): then the caller gets
    ``UNAVAILABLE`` whatever gRPC makes of the dead channel — a closed channel's calls may end
    ``CANCELLED``, and one sent just before the worker died was seen under load to end only
    at its deadline (closing note, 2026-12-02)."""

    __slots__ = ("ended", "worker_died", "call")

    def __init__(self) -> None:
        self.ended = threading.Event()
        self.worker_died = False
        self.call: Any = None

    def attach(self, call: Any) -> None:
        """The forwarded call, once started; cancelled at once if its worker already died."""
        self.call = call
        call.add_done_callback(lambda _done: self.ended.set())
        if self.worker_died:
            call.cancel()

    def abandon(self) -> None:
        """The caller went away: the forwarded call is cancelled and the wait for it ends."""
        if self.call is not None:
            self.call.cancel()
        self.ended.set()

    def answered(self) -> bool:
        """The forwarded call ended with the worker's answer (not an error, not cancelled)."""
        call = self.call
        if call is None or not call.done() or call.cancelled():
            return False
        try:
            return call.exception(timeout=0) is None
        except (grpc.FutureCancelledError, grpc.FutureTimeoutError):
            return False


@dataclass
class WorkerSlot:
    """One worker process and the front's channel to it."""

    index: int
    socket: str
    process: Any = None
    conn: Connection | None = None
    channel: grpc.Channel | None = None
    ready: bool = False
    in_flight: int = 0
    restarts: int = 0
    failures: int = 0       # failed starts in a row
    hold: int = 0           # watch ticks before the next start
    callables: dict[str, Any] = field(default_factory=dict)
    flights: set[Flight] = field(default_factory=set)
    guard: threading.Lock = field(default_factory=threading.Lock)

    def callable(self, m: Method) -> Any:
        """The method on this worker's channel. Raises ValueError (as gRPC does for a call on
        a closed channel) when the watch dropped the channel: the worker died meanwhile."""
        got = self.callables.get(m.path)
        if got is None:
            channel = self.channel
            if channel is None:
                raise ValueError("worker channel closed")
            kind = {(False, False): channel.unary_unary, (False, True): channel.unary_stream,
                    (True, False): channel.stream_unary, (True, True): channel.stream_stream}
            got = self.callables[m.path] = kind[(m.request_streaming, m.response_streaming)](m.path)
        return got

    def board(self, m: Method) -> tuple[Flight, Any]:
        """A call about to be sent: its :class:`Flight` and the method, taken together under
        the slot's guard, so that a call is either ended by :meth:`died` or sent on a channel
        that :meth:`died` has closed (gRPC then raises ValueError). Raises ValueError when the
        channel is already dropped."""
        with self.guard:
            method = self.callable(m)
            flight = Flight()
            self.flights.add(flight)
        return flight, method

    def land(self, flight: Flight) -> None:
        with self.guard:
            self.flights.discard(flight)

    def died(self) -> int:
        """The watch found the worker dead: no call is routed to it, its channel is closed and
        every call in flight on it ends now (``UNAVAILABLE`` for its caller). Returns how many."""
        with self.guard:
            self.ready = False
            flights, self.flights = self.flights, set()
            channel, self.channel = self.channel, None
            self.callables = {}
        for flight in flights:
            flight.worker_died = True
            flight.ended.set()
            if flight.call is not None:
                flight.call.cancel()
        if channel is not None:
            channel.close()
        return len(flights)


class _Tally:
    """Refusals made by the front, by (cause, caller, method), until a worker takes them."""

    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str, str], list] = {}

    def count(self, cause: str, peer: str, method: str = "") -> None:
        now = self._clock.now()
        with self._lock:
            got = self._items.get((cause, peer, method))
            if got is None:
                self._items[(cause, peer, method)] = [1, now, now]
            else:
                got[0] += 1
                got[2] = now

    def take(self) -> list[dict]:
        with self._lock:
            items, self._items = self._items, {}
        return [{"cause": c, "peer": p, "method": m, "count": n, "first": f.isoformat(), "last": la.isoformat()}
                for (c, p, m), (n, f, la) in items.items()]

    def put_back(self, items: list[dict]) -> None:
        with self._lock:
            self._put_back(items)

    def _put_back(self, items: list[dict]) -> None:
        for it in items:
            key = (it["cause"], it["peer"], it["method"])
            first, last = dt.datetime.fromisoformat(it["first"]), dt.datetime.fromisoformat(it["last"])
            got = self._items.get(key)
            if got is None:
                self._items[key] = [it["count"], first, last]
            else:
                got[0] += it["count"]
                got[1] = min(got[1], first)


class Front(grpc.GenericRpcHandler):
    """Admission and pass-through; see the module's docstring."""

    def __init__(self, admission: Admission, workers: list[WorkerSlot], clock: Clock) -> None:
        self.admission = admission
        self.workers = workers
        self.tally = _Tally(clock)
        self.metrics = FrontMetrics()   # its refusals, on the ops port with the workers' figures (node/front/ops.py)
        self._table = method_table()
        self._next = 0
        self._lock = threading.Lock()
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        for m in self._table.values():
            behaviour = self._behaviour(m)
            make = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
                    (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}
            self._handlers[m.path] = make[(m.request_streaming, m.response_streaming)](behaviour)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self._handlers.get(handler_call_details.method)

    # -- routing ---------------------------------------------------------------------------

    def _pick(self) -> WorkerSlot | None:
        """The ready worker with the fewest calls in flight (round robin among equals); its
        count is taken here."""
        best: WorkerSlot | None = None
        with self._lock:
            n = len(self.workers)
            for k in range(n):
                w = self.workers[(self._next + k) % n]
                if w.ready and (best is None or w.in_flight < best.in_flight):
                    best = w
            self._next = (self._next + 1) % max(1, n)
            if best is not None:
                best.in_flight += 1
        return best

    def _done(self, w: WorkerSlot) -> None:
        with self._lock:
            w.in_flight -= 1

    @staticmethod
    def _metadata(context: grpc.ServicerContext, pem: bytes | None) -> tuple[tuple[str, str | bytes], ...]:
        md = tuple((k, v) for k, v in (context.invocation_metadata() or ()) if k not in _HOP and not k.startswith(":"))
        return md + ((FORWARDED_CERT, pem),) if pem is not None else md

    # -- one call --------------------------------------------------------------------------

    def _behaviour(self, m: Method) -> Callable:
        front = self

        def enter(context: grpc.ServicerContext) -> tuple[str | None, WorkerSlot, tuple]:
            """Admit (or refuse) and route; returns the caller key holding a slot, the worker
            and the metadata to send. Aborts the call when refused."""
            pems: Any = context.auth_context().get("x509_pem_cert") or []
            pem = bytes(pems[0]) if pems else None
            caller: str | None = None
            if m.admitted:
                key = _caller_key(pem) if pem is not None else "?"
                try:
                    front.admission.try_acquire(key)
                except HeduiError as err:
                    front.tally.count(err.reason.lower() if err.reason else "overloaded", key, m.path[1:])
                    code, details = to_status(err)
                    front.metrics.refused(m.path, key, code.name, err.reason.value if err.reason else "UNSPECIFIED")
                    context.abort(code, details)
                caller = key
            w = front._pick()
            if w is None:
                if caller is not None:
                    front.admission.release(caller)
                front.metrics.refused(m.path, caller or "?", "UNAVAILABLE", Reason.UNAVAILABLE.value)
                context.abort(grpc.StatusCode.UNAVAILABLE,
                              f"{Reason.UNAVAILABLE.value}: node: no worker process is up; retry with back-off")
            assert w is not None
            return caller, w, front._metadata(context, pem)

        def leave(caller: str | None, w: WorkerSlot) -> None:
            front._done(w)
            if caller is not None:
                front.admission.release(caller)

        def gone(context: grpc.ServicerContext) -> None:
            """The worker picked died after it was picked: the watch closed its channel
            (gRPC raises ValueError for a call on a closed channel) before the call was sent."""
            context.abort(grpc.StatusCode.UNAVAILABLE,
                          f"{Reason.UNAVAILABLE.value}: node: the worker process ended; retry with back-off")

        def relay_error(context: grpc.ServicerContext, err: grpc.RpcError) -> None:
            call: Any = err
            trailing = call.trailing_metadata()
            if trailing:
                context.set_trailing_metadata(tuple(trailing))
            context.abort(call.code(), call.details() or "")

        if not m.response_streaming:
            def unary_response(request: Any, context: grpc.ServicerContext) -> Any:
                caller, w, md = enter(context)
                try:
                    try:
                        flight, method = w.board(m)
                    except ValueError:
                        gone(context)
                    try:
                        remaining = context.time_remaining()
                        try:
                            call = method.future(request, timeout=remaining, metadata=md)
                        except ValueError:
                            gone(context)
                        flight.attach(call)
                        context.add_callback(flight.abandon)   # the caller went away: so does the forwarded call
                        # Bounded by the caller's deadline even if gRPC never ends the call.
                        if not flight.ended.wait(None if remaining is None else remaining + 1.0):
                            call.cancel()
                            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "node: the worker did not answer in time")
                        if flight.worker_died and not flight.answered():
                            gone(context)
                        try:
                            response = call.result(timeout=0)
                        except grpc.RpcError as err:
                            relay_error(context, err)
                        except (grpc.FutureCancelledError, grpc.FutureTimeoutError):   # the caller went away
                            context.abort(grpc.StatusCode.CANCELLED, "node: the call was cancelled")
                    finally:
                        w.land(flight)
                    initial = call.initial_metadata()
                    if initial:
                        context.send_initial_metadata(tuple(initial))
                    trailing = call.trailing_metadata()
                    if trailing:
                        context.set_trailing_metadata(tuple(trailing))
                    return response
                finally:
                    leave(caller, w)

            return unary_response

        def streamed_response(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            caller, w, md = enter(context)
            try:
                try:
                    flight, method = w.board(m)
                except ValueError:
                    gone(context)
                try:
                    try:
                        call = method(request, timeout=context.time_remaining(), metadata=md)
                    except ValueError:
                        gone(context)
                    flight.attach(call)   # died() cancels it: the iteration below ends at once
                    context.add_callback(flight.abandon)
                    try:
                        initial = call.initial_metadata()
                        if initial:
                            context.send_initial_metadata(tuple(initial))
                        yield from call
                    except grpc.RpcError as err:
                        if flight.worker_died:
                            gone(context)
                        relay_error(context, err)
                finally:
                    w.land(flight)
                trailing = call.trailing_metadata()
                if trailing:
                    context.set_trailing_metadata(tuple(trailing))
            finally:
                leave(caller, w)

        return streamed_response


# -- workers ---------------------------------------------------------------------------------

def _log_settings() -> tuple[str, str]:
    """This process's log level and format, for a worker (node/logs.py ``configure``)."""
    from hedui.node.logs import JsonFormatter

    root = logging.getLogger()
    fmt = "json" if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers) or not root.handlers else "text"
    return logging.getLevelName(root.level).lower(), fmt


#: The longest unix socket path the kernel takes is 107 bytes; ours end in ``/w63.sock``
#: (at most 64 workers). Next to the node.toml with a margin; in $TMPDIR up to the limit.
_SOCKET_PATH_MAX = 100
_SOCKET_PATH_LIMIT = 107


def socket_folder(config_path: Path) -> Path:
    """Where the front of ``config_path`` puts its workers' sockets: a fixed place of that
    node, so that a front started again finds — and removes — what one killed with ``kill -9``
    left: ``.hedui-front.<name of the toml>`` next to it, or, when that path is too long for a
    unix socket, ``$TMPDIR/hedui-front-<uid>-<hash of the toml's path>``; when that is too
    long as well, a configuration error (rather than a worker's failure to bind)."""
    config_path = Path(config_path).resolve()
    here = config_path.parent / f".hedui-front.{config_path.stem}"
    if len(os.fsencode(here / "w63.sock")) <= _SOCKET_PATH_MAX:
        return here
    digest = hashlib.sha256(os.fsencode(config_path)).hexdigest()[:16]
    there = Path(tempfile.gettempdir()) / f"hedui-front-{os.getuid()}-{digest}"
    if len(os.fsencode(there / "w63.sock")) > _SOCKET_PATH_LIMIT:
        raise ConfigError(f"node.worker_processes: the workers' unix sockets would be too long a path both next to "
                          f"{config_path.name} and in the temporary folder {there.parent}; set TMPDIR to a shorter folder")
    return there


class _Folder:
    """The socket folder, mode 0700 and this user's, held by a lock on ``front.lock`` for the
    front's life (the kernel lets go of it when the front dies, even by ``kill -9``): a folder
    whose lock is free is stale and emptied; one whose lock is held belongs to a front of the
    same node still running, and this one does not start."""

    LOCK = "front.lock"

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            pass
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid():
            raise ConfigError(f"node.worker_processes: {path} is not a folder of this user; remove it")
        os.chmod(path, 0o700)   # only this user reaches the sockets
        self._fd = os.open(path / self.LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ConfigError(f"node.worker_processes: another front of this node.toml is running (it holds {path / self.LOCK}); "
                              "stop it first") from None
        stale = [e for e in os.listdir(path) if e != self.LOCK]
        for entry in stale:   # sockets of a front that was killed
            target = path / entry
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            else:
                target.unlink(missing_ok=True)
        if stale:
            log.info("front: removed %d stale entries from %s (a front that did not stop)", len(stale), path)
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    def remove(self) -> None:
        """Empties and removes the folder, then lets go of the lock (once)."""
        if self._fd < 0:
            return
        try:
            for entry in os.listdir(self.path):
                if entry != self.LOCK:
                    (self.path / entry).unlink(missing_ok=True)
            (self.path / self.LOCK).unlink(missing_ok=True)
            self.path.rmdir()
        except OSError as exc:
            log.warning("front: could not remove %s (%s)", self.path, exc.strerror)
        finally:
            os.close(self._fd)
            self._fd = -1


class _Workers:
    """Starts, watches and stops the worker processes. PR_SET_PDEATHSIG follows the *thread*
    that spawned a worker (node/procs.py): the first ones are spawned by the main thread,
    restarted ones by the watch thread, which therefore lives until every worker stopped."""

    def __init__(self, config_path: Path, n: int, passphrase_env: str, passphrase: bytes,
                 hook: Callable[[int], Any] | None = None) -> None:
        self._folder = _Folder(socket_folder(config_path))
        self.folder = self._folder.path
        self.slots = [WorkerSlot(i, str(self.folder / f"w{i}.sock")) for i in range(n)]
        self._args = (str(config_path), passphrase_env, passphrase)
        self._hook = hook
        self.stopping = False
        self._tick = threading.Event()   # set only to stop the watch
        self._ended = threading.Event()  # every worker stopped: the watch thread may end

    def spawn(self, w: WorkerSlot) -> None:
        from hedui.node.front.worker import run
        from hedui.node.procs import spawn_context

        ctx = spawn_context()
        mine, theirs = ctx.Pipe(duplex=True)
        if os.path.exists(w.socket):
            os.unlink(w.socket)
        cfg, env, pw = self._args
        w.process = ctx.Process(target=run, name=f"hedui-worker-{w.index}",
                                args=(w.index, cfg, w.socket, env, pw, os.getpid(), theirs, _log_settings(), self._hook),
                                daemon=False)
        w.process.start()
        theirs.close()
        w.conn = mine
        w.ready = False

    def start_all(self, timeout: float = 600.0) -> None:
        """One after the other (the first runs the store's migrations alone); raises the
        first worker's start-up error as the front's own."""
        for w in self.slots:
            self.spawn(w)
            assert w.conn is not None
            if not w.conn.poll(timeout):
                self.stop()
                raise ConfigError(f"node.worker_processes: worker {w.index} did not start within {timeout:.0f} s")
            try:
                kind, detail = w.conn.recv()
            except EOFError:
                kind, detail = "error", f"worker {w.index} exited at start (code {w.process.exitcode})"
            if kind != "ready":
                self.stop()
                raise ConfigError(str(detail))
            self._connect(w)

    def _connect(self, w: WorkerSlot) -> None:
        w.channel = grpc.insecure_channel(f"unix:{w.socket}", options=_WORKER_OPTIONS)
        w.callables = {}
        w.ready = True

    def watch(self, interval: float = 0.1) -> None:
        """Restarts a worker that died (calls routed meanwhile are refused UNAVAILABLE); one
        that fails to start again is retried after 0.2, 0.4, … up to 30 seconds."""
        while not self.stopping:
            for w in self.slots:
                if w.process is None or self.stopping:
                    continue
                if w.ready:
                    if not w.process.is_alive():
                        ended = w.died()
                        log.error("worker %d (pid %s) exited with %s (%d calls in flight on it ended UNAVAILABLE); "
                                  "starting it again", w.index, w.process.pid, w.process.exitcode, ended)
                        w.restarts += 1
                        self.spawn(w)
                    continue
                if w.hold > 0:   # waiting before the next attempt
                    w.hold -= 1
                    if w.hold == 0:
                        self.spawn(w)
                    continue
                failed = False
                if w.conn is not None and w.conn.poll():
                    try:
                        kind, _ = w.conn.recv()
                    except (EOFError, OSError):
                        kind = "error"
                    if kind == "ready":
                        self._connect(w)
                        w.failures = 0
                        log.info("worker %d serving again (pid %s)", w.index, w.process.pid)
                        continue
                    failed = True
                elif not w.process.is_alive():
                    failed = True
                if failed:
                    w.failures += 1
                    w.hold = min(2 ** w.failures, 300)
                    log.error("worker %d did not start (%d in a row; its error is above); next attempt in %.1f s",
                              w.index, w.failures, w.hold * interval)
            self._tick.wait(interval)
        # A worker this thread restarted would get SIGKILL from the kernel the moment this
        # thread ends: stay until stop() has let every worker finish.
        self._ended.wait()

    def stop(self, grace: float = 30.0) -> None:
        """Tells every worker to stop (each stops gracefully: its last flush of refusals, its
        final checkpoint), SIGKILL to those still running after ``grace`` seconds."""
        self.stopping = True
        self._tick.set()
        for w in self.slots:
            if w.process is not None and w.process.is_alive() and w.conn is not None:
                try:
                    w.conn.send(("stop",))
                except OSError:
                    pass
        for w in self.slots:
            if w.process is not None:
                w.process.join(grace)
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(5)
        self._folder.remove()
        self._ended.set()


def _hand_over(front: Front, workers: list[WorkerSlot]) -> None:
    """The front's refusals to a worker, which audits them (node/refusals.py)."""
    items = front.tally.take()
    if not items:
        return
    for w in sorted(workers, key=lambda s: s.index):
        channel = w.channel
        if not w.ready or channel is None:
            continue
        try:
            hand: Any = channel.unary_unary(REFUSALS_METHOD)
            hand(json.dumps(items).encode(), timeout=10)
            log.info("front: %d refusal tallies handed to worker %d", len(items), w.index)
            return
        except grpc.RpcError as err:
            log.warning("front: worker %d did not take the refusal tallies (%s)", w.index, err.code().name)
            continue
        except ValueError:   # its channel was closed meanwhile: the worker died
            log.warning("front: worker %d did not take the refusal tallies (it ended)", w.index)
            continue
    front.tally.put_back(items)
    log.warning("front: %d refusal tallies kept for later: no worker took them", len(items))


def _serve(listen: str, tls: tuple[bytes, bytes, bytes], admission: Admission, clock: Clock,
           workers: _Workers, flush_interval: float, member: str, ops_listen: str | None = None) -> None:
    from hedui.node.server import add_port, core_limit, server_options
    from hedui.node.transport import CoreLogTap

    front = Front(admission, workers.slots, clock)
    # TLS handshake refusals (no client certificate, a foreign CA) are the front's now: gRPC
    # core logs them on the front's stderr, counted here and audited by a worker.
    tap = CoreLogTap(lambda cause, peer: front.tally.count(cause, peer))
    tap.install()
    # As many threads as admitted calls (each waits for its worker) plus as many again that
    # refuse the excess at once; beyond that many calls in the front, gRPC refuses in its
    # polling thread (RESOURCE_EXHAUSTED, decoded as OVERLOADED) before any handler thread,
    # as in one process (node/server.py core_limit): without it, every call of a flood
    # queues for a handler thread, admitted ones behind the refusals ahead of them.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=core_limit(admission.cap), thread_name_prefix="front"),
                         options=server_options(), maximum_concurrent_rpcs=core_limit(admission.cap))
    server.add_generic_rpc_handlers((front,))
    key, cert, ca = tls
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    port = add_port(server, listen, creds)
    if port == 0:
        tap.uninstall()
        raise ConfigError(f"node.listen: cannot bind {listen} (port already in use or address not local)", reason=Reason.BIND_FAILED)
    ops = None
    if ops_listen:
        from hedui.node.front.ops import NodeFigures, front_ops_app
        from hedui.node.metrics import serve_wsgi

        try:
            ops = serve_wsgi(ops_listen, front_ops_app(NodeFigures(front.metrics, workers.slots), workers.slots))
        except OSError as exc:
            tap.uninstall()
            server.stop(0)
            raise ConfigError(f"metrics.listen: cannot bind {ops_listen} ({exc.strerror})", reason=Reason.BIND_FAILED) from None
    server.start()
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    # Restarted workers are spawned by this thread, which lives as long as the front
    # (PR_SET_PDEATHSIG follows the spawning thread, node/procs.py).
    watcher = threading.Thread(target=workers.watch, name="worker-watch", daemon=True)
    watcher.start()
    host = listen.rpartition(":")[0]
    log.info("node %s front serving on %s:%d with %d worker processes", member, host, port, len(workers.slots))
    print(f"hedui node {member} serving on {host}:{port}", flush=True)
    try:
        while not stop.wait(flush_interval):
            _hand_over(front, workers.slots)
        log.info("front: stopping")
        server.stop(5.0).wait(6.0)
    finally:
        if ops is not None:
            ops.shutdown()
            ops.server_close()
        workers.stopping = True
        _hand_over(front, workers.slots)
        for w in workers.slots:
            if w.channel is not None:
                w.channel.close()


def serve_front(config_path: Path, *, clock: Clock, hook: Callable[[int], Any] | None = None,
                flush_interval: float = 5.0) -> None:
    """``hedui node serve`` with ``[node] worker_processes >= 1``: start the workers, then the
    front; on SIGTERM/SIGINT stop the front, then the workers."""
    from hedui.keys.ca import cert_pem, key_pem, load_cert, load_tls_key
    from hedui.keys.keyfile import passphrase
    from hedui.node.config import load_config

    cfg = load_config(config_path)
    n = cfg.node
    pw = passphrase(env=cfg.keys.passphrase_env)
    tls = (key_pem(load_tls_key(cfg.path(cfg.tls.key), pw, allow_legacy=cfg.keys.allow_legacy)),
           cert_pem(load_cert(cfg.path(cfg.tls.cert))), cert_pem(load_cert(cfg.path(cfg.tls.ca))))
    admission = Admission.of(n)
    workers = _Workers(Path(config_path).resolve(), n.worker_processes, cfg.keys.passphrase_env, pw, hook)
    workers.start_all()
    log.info("%d worker processes up", n.worker_processes)
    try:
        _serve(n.listen, tls, admission, clock, workers, flush_interval, n.member, cfg.metrics.listen)
    finally:
        workers.stop()
