"""Issue 16: CPU per case of the 8 provider processes of ``bench_case.py``, optionally with a
py-spy profile of one of them.

``bench_case.py`` reports rates; this reports where the providers' side stands: the same
set-up (8 ``hedui node serve`` processes, one hub runtime here), hedui cases only, and for
each concurrency level and round the providers' user + system CPU (``/proc``) per case.
With ``--pyspy OUT`` the first provider is sampled during the first round of the first level
(``py-spy record --gil --nonblocking -f raw``: the thread holding the GIL, i.e. its Python
CPU; needs ``py-spy`` on PATH or given by ``--pyspy-bin``).

    python bench/provider_cpu.py [--residents 3000] [--cases 96] [--concurrency 1,8] [--reps 3] [--pyspy OUT]
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_case as bc

from hedui.node.runtime import Runtime
from hedui.node.testbed.procs import NodeProcess


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=3000)
    ap.add_argument("--cases", type=int, default=96, help="cases per round")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pyspy", default="", help="write a raw py-spy profile of provider p1 here")
    ap.add_argument("--pyspy-bin", default=shutil.which("py-spy") or "py-spy")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tb, _, _, _ = bc._setup(Path(d), a.residents)
        env = tb.env()
        nodes = [NodeProcess(tb.config_path(c), env, log=Path(d) / f"{c}.log") for c in bc.PROVIDERS]
        for n in nodes:
            n.start()
        hub = Runtime.open(tb.config_path("hub"))
        try:
            bc._run_hedui(hub, bc._households(8, a.residents), 1)   # warm-up
            for conc in [int(x) for x in a.concurrency.split(",")]:
                for rep in range(a.reps):
                    spy = None
                    if a.pyspy and rep == 0 and conc == int(a.concurrency.split(",")[0]):
                        spy = subprocess.Popen([a.pyspy_bin, "record", "-p", str(nodes[0].pid), "-r", "250", "-f", "raw",
                                                "-o", a.pyspy, "--gil", "--nonblocking"],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    before = sum(n.cpu_seconds() for n in nodes)
                    _, rate, incomplete = bc._run_hedui(hub, bc._households(a.cases, a.residents), conc)
                    cpu = (sum(n.cpu_seconds() for n in nodes) - before) / a.cases
                    if spy is not None:
                        spy.send_signal(signal.SIGINT)
                        spy.wait(60)
                    print(f"concurrency {conc} round {rep}: {rate:.1f} cases/s, 8 providers {cpu * 1e3:.1f} ms CPU per case, "
                          f"{incomplete} incomplete", flush=True)
        finally:
            hub.close()
            for n in nodes:
                n.stop()


if __name__ == "__main__":
    main()
