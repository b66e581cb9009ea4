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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

__all__ = ["worker_pool", "die_with_parent", "exec_dies_with_parent"]

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


def worker_pool(workers: int, initializer: Callable[..., Any] | None = None, initargs: tuple = ()) -> ProcessPoolExecutor:
    """A process pool of ``workers`` whose workers die with this process."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init, initargs=(os.getpid(), initializer, initargs))
