"""Nodes as processes, as deployed (issue 16, "deployment shape = benchmark shape"): each
:class:`NodeProcess` runs ``hedui node serve --config node.toml`` in its own process group,
on the loopback port its config names (the testbed picks free ports), and stops it again
with every child it started.

Used by the benchmarks (``bench/bench_notices.py``, ``bench/bench_case.py``) and by the
kill -9 tests: :meth:`NodeProcess.kill` is a real SIGKILL of the serving process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

__all__ = ["NodeProcess", "serve_command"]


def serve_command(config: Path) -> list[str]:
    """``hedui node serve --config config`` with this interpreter's ``hedui`` (or the module)."""
    exe = Path(sys.executable).with_name("hedui")
    head = [str(exe)] if exe.exists() else [sys.executable, "-c", "from hedui.node.cli import main; main()"]
    return head + ["node", "serve", "--config", str(config)]


class NodeProcess:
    """One ``hedui node serve`` process. ``env`` is added to this process's environment (the
    key passphrase, e.g. ``Testbed.env()``)."""

    def __init__(self, config: Path, env: dict[str, str] | None = None, *, log: Path | None = None) -> None:
        self.config = Path(config)
        self.env = {**os.environ, **(env or {})}
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def start(self, timeout: float = 120.0) -> NodeProcess:
        """Starts the node and returns once it says it is serving (its first stdout line)."""
        err = open(self.log, "ab") if self.log is not None else subprocess.DEVNULL
        try:
            # Its own session: stop() and kill() reach every child it starts (process group).
            self.proc = subprocess.Popen(serve_command(self.config), stdout=subprocess.PIPE, stderr=err,
                                         env=self.env, start_new_session=True)
        finally:
            if self.log is not None:
                err.close()  # type: ignore[union-attr]
        line: list[bytes] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(timeout)   # a safety net for a node that hangs at start, not a timing assertion
        if not line or b"serving on" not in line[0]:
            self.kill()
            raise RuntimeError(f"node {self.config} did not start: {(line[0] if line else b'(no output)')!r}")
        self.address = line[0].decode().rsplit(" ", 1)[-1].strip()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the node process so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to the node and its children: a crash, nothing runs after it."""
        if self.proc is None:
            return
        self._signal_group(signal.SIGKILL)
        self.proc.wait()
        self._close()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM (the node stops gracefully: drains calls, closes its store), SIGKILL to the
        group if it has not ended within ``timeout``. Returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                self.proc.wait()
        self._signal_group(signal.SIGKILL)   # any child left behind
        self._close()
        return self.proc.returncode

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> NodeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
