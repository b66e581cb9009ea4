"""Fault suite, processes (issue 13 item 11): the index build's pool workers die with their
parent, even when it is killed with SIGKILL — no orphan keeps department data in memory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

_PARENT = textwrap.dedent("""
    import os, sys, time
    from hedui.keys.oprf import ServerKey
    from hedui.adapters.records import Record
    from hedui.node.verification.index_work import Workers

    def main():
        tok = Workers(ServerKey.derive(b"s" * 32, 1), 2, None)
        # Real work through the index build's own pool, so both workers are up.
        items = [Record("11010519491231002X", f"t:id={i}", ()) for i in range(8)]
        assert len(tok.result(tok.submit(items))) == 8
        print(" ".join(str(p) for p in tok._pool._processes), flush=True)
        time.sleep(600)

    if __name__ == "__main__":
        main()
""")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and prctl are Linux")
def test_index_pool_workers_die_when_the_build_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(_PARENT)
    p = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        line = p.stdout.readline()
        workers = [int(x) for x in line.split()]
        assert len(workers) == 2 and all(_alive(w) for w in workers)
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)
        # The kernel delivers SIGKILL to each worker when the parent dies; give it a moment,
        # bounded (this waits for an event, it asserts no time).
        for _ in range(100):
            if not any(_alive(w) for w in workers):
                break
            time.sleep(0.1)
        assert [w for w in workers if _alive(w)] == []
    finally:
        if p.poll() is None:
            p.kill()


def test_watchdog_alone_ends_a_reparented_worker(tmp_path):
    """Without prctl (or once the spawning thread ended), the watchdog thread notices the
    re-parenting: a child given a parent pid that is not its parent exits on its own."""
    code = ("import os, time; from hedui.node.procs import die_with_parent; "
            "die_with_parent(os.getppid() + 1000000); time.sleep(30)")
    r = subprocess.run([sys.executable, "-c", code], timeout=20)
    assert r.returncode == 1



def test_pool_workers_do_not_rerun_the_parents_main(tmp_path):
    """A worker starts without re-running the parent's ``__main__`` (node/procs.py): the
    ``hedui`` command's imports would double each worker's start-up (issue 16 item 4)."""
    marker = tmp_path / "imported"
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(f"""
        import os
        with open({str(marker)!r}, "a") as f:   # runs once per process that imports this file
            f.write(f"{{os.getpid()}}\\n")

        if __name__ == "__main__":
            from hedui.node.procs import worker_pool
            with worker_pool(2) as pool:
                workers = {{pool.submit(os.getpid).result() for _ in range(4)}}
            print(os.getpid(), *sorted(workers), flush=True)
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    parent, *workers = out.stdout.split()
    assert workers and parent not in workers
    assert marker.read_text().split() == [parent]
