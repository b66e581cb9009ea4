"""Issue 16: CPU per case of the hub and of the 8 provider processes of ``bench_case.py``,
optionally with a py-spy profile of one of them.

``bench_case.py`` reports rates; this reports where each side stands: the same set-up (8
``hedui node serve`` provider processes, the hub runtime in this process, as ``hedui case
run`` runs it), hedui cases only, and for each concurrency level and round this process's
user + system CPU per case (the hub: its exchange threads, the group committer, gRPC's
threads and its background loops) beside the 8 providers' (``/proc``). With ``--pyspy OUT``
the first provider (``--pyspy-of provider``, the default) or this process (``--pyspy-of
hub``) is sampled during the first round of the first level (``py-spy record --gil
--nonblocking -f raw``: the thread holding the GIL, i.e. its Python CPU; needs ``py-spy`` on
PATH or given by ``--pyspy-bin``).

With ``--floor`` each round is followed by the same cases through ``bench/floor_case.py``
(its providers as processes, as in ``bench_case.py``) and the floor's CPU per case is printed
beside Hedui's: the difference is the Hedui-only work (issue 16: only that moves the ratio).

    python bench/provider_cpu.py [--residents 3000] [--cases 96] [--concurrency 1,8] [--reps 3]
                                 [--pyspy OUT] [--pyspy-of provider|hub] [--floor]
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_case as bc


def _proc_cpu(pid: int, *, system: bool = False) -> float:
    """User + system CPU seconds of a process (``system``: the system part alone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[12]) + (0 if system else int(fields[11]))) / os.sysconf("SC_CLK_TCK")


def _self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--residents", type=int, default=3000)
    ap.add_argument("--cases", type=int, default=96, help="cases per round")
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--pyspy", default="", help="write a raw py-spy profile here")
    ap.add_argument("--pyspy-of", choices=("provider", "hub"), default="provider",
                    help="profile the first provider or this (the hub's) process")
    ap.add_argument("--pyspy-bin", default=shutil.which("py-spy") or "py-spy")
    ap.add_argument("--pyspy-threads", action="store_true",
                    help="sample every running thread, not only the GIL holder (CPU outside the GIL shows too)")
    ap.add_argument("--floor", action="store_true", help="also run each round through floor_case and report its CPU")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, bc.federation(Path(d), a.residents, floor=a.floor) as fed:
        nodes, hub, floor = fed.nodes, fed.hub, fed.floor
        bc._run_hedui(hub, bc._households(8, a.residents), 1)   # warm-up
        if floor is not None:
            floor.run(bc._households(8, a.residents), 1)
        levels = [int(x) for x in a.concurrency.split(",")]
        for conc in levels:
            for rep in range(a.reps):
                spy = None
                if a.pyspy and rep == 0 and conc == levels[0]:
                    pid = os.getpid() if a.pyspy_of == "hub" else nodes[0].pid
                    spy = subprocess.Popen([a.pyspy_bin, "record", "-p", str(pid), "-r", "250", "-f", "raw",
                                            "-o", a.pyspy, "--nonblocking", *([] if a.pyspy_threads else ["--gil"])],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    time.sleep(1.0)   # attached before the round starts
                households = bc._households(a.cases, a.residents)
                hub0, prov0 = _self_cpu(), sum(n.cpu_seconds() for n in nodes)
                sys0 = sum(_proc_cpu(n.pid, system=True) for n in nodes)
                _, rate, incomplete = bc._run_hedui(hub, households, conc)
                hub_cpu = (_self_cpu() - hub0) / a.cases
                prov_cpu = (sum(n.cpu_seconds() for n in nodes) - prov0) / a.cases
                prov_sys = (sum(_proc_cpu(n.pid, system=True) for n in nodes) - sys0) / a.cases
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
                print(f"concurrency {conc} round {rep}: {rate:.1f} cases/s, 8 providers {prov_cpu * 1e3:.1f} ms CPU "
                      f"per case (system {prov_sys * 1e3:.1f}), hub {hub_cpu * 1e3:.1f} ms, {incomplete} incomplete", flush=True)
                if floor is not None:
                    hub0, prov0 = _self_cpu(), sum(_proc_cpu(p.pid) for p in floor.procs)
                    sys0 = sum(_proc_cpu(p.pid, system=True) for p in floor.procs)
                    _, frate = floor.run(households, conc)
                    fhub = (_self_cpu() - hub0) / a.cases
                    fprov = (sum(_proc_cpu(p.pid) for p in floor.procs) - prov0) / a.cases
                    fsys = (sum(_proc_cpu(p.pid, system=True) for p in floor.procs) - sys0) / a.cases
                    print(f"concurrency {conc} round {rep}: floor {frate:.1f} cases/s, 8 providers {fprov * 1e3:.1f} ms CPU "
                          f"per case (system {fsys * 1e3:.1f}), hub {fhub * 1e3:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
