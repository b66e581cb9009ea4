"""Child processes that die with their parent (issue 13 item 11: a killed ``hedui node
index`` left its pool workers running, holding the department's data in memory).

:func:`worker_pool` is the one way Hedui starts worker processes: a spawn-context
``ProcessPoolExecutor`` whose workers, before anything else, arrange to die with the
process that created them —

* ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (Linux, prctl(2)): the kernel kills the worker when its
  parent dies, even by ``kill -9``; the parent's pid is checked right after, in case it died
  before the call;
* a watchdog thread that exits the worker once it has been re-parented (``getppid()``
  changes): the same guarantee where prctl is not available.

PDEATHSIG fires when the *thread* that spawned the worker ends (prctl(2)); the pool spawns
workers from the thread that submits work, and an index build submits and shuts its pool
down in one thread, so a pool must not outlive the thread that first used it.

A worker does not re-run the parent's ``__main__`` (what the spawn start method does by
default, so that functions defined there can be unpickled): every task and initializer of
a pool lives in a ``hedui`` module, and ``__main__`` is the ``hedui`` command or a benchmark
script, whose imports (gRPC, the whole node) doubled each worker's start-up (issue 16 item
4: at 20,000 residents, a second of a five-second index build).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import popen_spawn_posix, reduction, spawn, util
from multiprocessing.context import SpawnContext, SpawnProcess, set_spawning_popen
from typing import Any

__all__ = ["worker_pool", "spawn_context", "die_with_parent", "exec_dies_with_parent"]

_PR_SET_PDEATHSIG = 1
_WATCH_SECONDS = 0.5


def _prctl_pdeathsig() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return int(libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent(parent: int) -> None:
    """Called first thing in a worker: die when ``parent`` does."""
    _prctl_pdeathsig()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            threading.Event().wait(_WATCH_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def exec_dies_with_parent() -> None:
    """``preexec_fn`` of a child process (a node serve process a test or benchmark starts):
    the kernel kills it with SIGKILL when the spawning thread ends (PDEATHSIG survives exec)."""
    _prctl_pdeathsig()


def _init(parent: int, initializer: Callable[..., Any] | None, initargs: tuple) -> None:
    die_with_parent(parent)
    if initializer is not None:
        initializer(*initargs)


class _Popen(popen_spawn_posix.Popen):
    """``popen_spawn_posix.Popen`` with CPython 3.11's ``_launch``, less the preparation
    entries that make the child import the parent's ``__main__``
    (tests/test_failsafe_procs.py checks that it does not)."""

    def _launch(self, process_obj: Any) -> None:
        from multiprocessing import resource_tracker

        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)  # type: ignore[attr-defined]
        prep_data = spawn.get_preparation_data(process_obj._name)
        prep_data.pop("init_main_from_path", None)
        prep_data.pop("init_main_from_name", None)
        fp = io.BytesIO()
        set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            set_spawning_popen(None)
        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)
            self._fds.extend([child_r, child_w])  # type: ignore[attr-defined]
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, self._fds)  # type: ignore[attr-defined,arg-type]
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            self.finalizer = util.Finalize(self, util.close_fds, [fd for fd in (parent_r, parent_w) if fd is not None])  # type: ignore[attr-defined]
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class _Process(SpawnProcess):
    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


class _Context(SpawnContext):
    Process = _Process


def spawn_context() -> Any:
    """The spawn context of :func:`worker_pool`, for a single long-lived child process (a
    front's worker, node/front/): its ``Process`` does not re-run ``__main__`` either; the
    child must call :func:`die_with_parent` first."""
    return _Context() if sys.platform != "win32" else multiprocessing.get_context("spawn")


def worker_pool(workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose workers die with this process (and start without
    re-running ``__main__``: a task must live in an importable module)."""
    ctx = _Context() if sys.platform != "win32" else multiprocessing.get_context("spawn")
    return ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init, initargs=(os.getpid(), initializer, initargs))
