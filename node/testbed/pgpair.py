"""A throwaway PostgreSQL primary and streaming replica (issue 16 item 6: tests/test_scaleout_pg.py,
bench/bench_replicas.py).

``initdb`` a primary on a free loopback port under a temporary directory, ``pg_basebackup -R``
a hot standby from it on a second port; both stop (``pg_ctl stop -m immediate``) and the
directory is removed on exit. PostgreSQL refuses to run as root: when the tests run as root
the server commands run as the ``postgres`` user (``runuser``), on a directory it owns.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hedui.node.testbed.ports import free_port

__all__ = ["PgPair", "pg_bin", "primary_and_replica"]


def pg_bin() -> Path | None:
    """The newest installed server binaries (Debian layout), if any."""
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return roots[-1].parent if roots else None


@dataclass
class PgPair:
    primary_url: str
    replica_url: str
    root: Path

    def wait_replayed(self, timeout: float = 30.0) -> None:
        """Until the replica has replayed everything the primary had written when called."""
        from sqlalchemy import create_engine, text

        p, r = create_engine(self.primary_url), create_engine(self.replica_url)
        try:
            with p.connect() as c:
                lsn = c.execute(text("SELECT pg_current_wal_lsn()")).scalar()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with r.connect() as c:
                    if c.execute(text("SELECT pg_last_wal_replay_lsn() >= CAST(:l AS pg_lsn)"), {"l": lsn}).scalar():
                        return
                time.sleep(0.05)
            raise TimeoutError("the replica did not catch up")
        finally:
            p.dispose()
            r.dispose()


def _run(cmd: list[str], user: str | None) -> None:
    full = ["runuser", "-u", user, "--", *cmd] if user else cmd
    p = subprocess.run(full, capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise RuntimeError(f"{cmd[0]}: exit {p.returncode}: {(p.stderr or p.stdout)[-400:]}")


@contextlib.contextmanager
def primary_and_replica() -> Iterator[PgPair]:
    bin_ = pg_bin()
    if bin_ is None:
        raise RuntimeError("no PostgreSQL server binaries under /usr/lib/postgresql")
    user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="hedui-pg-"))
    if user:
        shutil.chown(root, user)
    prim, repl = root / "primary", root / "replica"
    p1, p2 = free_port(), free_port()
    started: list[Path] = []
    watchdog: subprocess.Popen | None = None
    try:
        _run([str(bin_ / "initdb"), "-D", str(prim), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"], user)
        opts = f"-c listen_addresses=127.0.0.1 -c unix_socket_directories={root} -c fsync=off -c wal_level=replica"
        _run([str(bin_ / "pg_ctl"), "-D", str(prim), "-l", str(root / "primary.log"), "-w", "-o", f"-p {p1} {opts}", "start"], user)
        started.append(prim)
        # -R writes standby.signal and primary_conninfo: the copy starts as a streaming replica.
        _run([str(bin_ / "pg_basebackup"), "-D", str(repl), "-h", "127.0.0.1", "-p", str(p1), "-U", "postgres", "-R",
              "-X", "stream", "--no-sync"], user)
        _run([str(bin_ / "pg_ctl"), "-D", str(repl), "-l", str(root / "replica.log"), "-w", "-o",
              f"-p {p2} {opts} -c hot_standby=on -c hot_standby_feedback=on", "start"], user)
        started.append(repl)
        # Stops both servers and removes the directory if this process dies without the
        # finally below (kill -9): pg_ctl daemonises the servers, they would outlive it.
        sudo = f"runuser -u {user} -- " if user else ""
        stops = "; ".join(f"{sudo}{shlex.quote(str(bin_ / 'pg_ctl'))} -D {shlex.quote(str(d))} -m immediate stop"
                          for d in reversed(started))
        watchdog = subprocess.Popen(
            ["sh", "-c", f"while kill -0 {os.getpid()} 2>/dev/null; do sleep 1; done; {stops}; rm -rf {shlex.quote(str(root))}"],
            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield PgPair(f"postgresql+psycopg://postgres@127.0.0.1:{p1}/postgres",
                     f"postgresql+psycopg://postgres@127.0.0.1:{p2}/postgres", root)
    finally:
        if watchdog is not None:
            watchdog.kill()
            watchdog.wait()
        for d in reversed(started):
            with contextlib.suppress(Exception):
                _run([str(bin_ / "pg_ctl"), "-D", str(d), "-m", "immediate", "-w", "stop"], user)
        shutil.rmtree(root, ignore_errors=True)
