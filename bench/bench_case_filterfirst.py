"""Issue 14 benchmark: a case with filter-first lookups vs today's case path, same run.

    python bench/bench_case_filterfirst.py [--residents 2000] [--cases 14] [--rounds 3] [--json]

The nine testbed department nodes over generated databases (node/testbed/departments), all
serving on loopback in this process. The hub runs the designed households' cases (H1…H7,
each twice per round) sequentially: **today's path** with the hub's filter cache empty (every
member's token goes to every department), and **filter-first** with every department's signed
filter cached (one count-only cross-check fetched them): only held tokens are sent, and a
department holding nobody of the household gets no Lookup at all. Rounds interleave the two;
figures are min and median over rounds of the per-case latency (p50 within a round) and of
the throughput (cases/s), plus the Lookups and tokens the departments received.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import percentile, report

from hedui.common.clock import FixedClock
from hedui.node.crosscheck.check import load_check
from hedui.node.crosscheck.run import run_check
from hedui.node.crosscheck.tables import token_filters
from hedui.node.testbed.departments import designed, generate
from hedui.node.testbed.departments.federation import build_indexes, over_departments
from hedui.node.verification import service
from hedui.node.verification.cases import consent_digest_of, open_case, run_case

CLOCK = FixedClock(dt.datetime(2026, 11, 20, 2, 0, tzinfo=dt.UTC))
CHECK = """name = "bench"
reference_month = "2026-10"
[population]
recipients = "env:HEDUI_DEPT_MINZHENG_URL"
""" + "".join(f"""
[[criteria]]
name = "c{i}"
department = "{d}"
field = "{f}"
op = ">="
value = "0"
""" for i, (d, f) in enumerate([("huji", "registry_status"), ("shebao", "wages"), ("shuiwu", "labour_income"),
                                 ("cheguan", "vehicle_max_price"), ("budongchan", "residential_count"),
                                 ("gongjijin", "fund_balance"), ("yibao", "medical_count"),
                                 ("canlian", "certificate_count"), ("minzheng", "assistance_recipient")]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--residents", type=int, default=2000)
    ap.add_argument("--cases", type=int, default=14)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    D = designed()
    households = [D.members(k) for k in sorted(D.households)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ff-"))
    generate(tmp / "depts", residents=a.residents)
    tb = over_departments(tmp / "fed", sqlite_dir=tmp / "depts", clock=CLOCK)
    build_indexes(tb)
    tb.start()
    try:
        hub = tb.runtime("hub")
        (tmp / "check.toml").write_text(CHECK, encoding="utf-8")
        run_check(hub, load_check(tmp / "check.toml"), count_only=True)
        with hub.engine.connect() as c:
            saved = [dict(r._mapping) for r in c.execute(token_filters.select())]
        counted = {"lookups": 0, "tokens": 0}
        real = service.read_index

        def spy(rt, epoch, tokens, sources=(), **kw):
            tokens = list(tokens)
            counted["lookups"] += 1
            counted["tokens"] += len(tokens)
            return real(rt, epoch, tokens, sources, **kw)

        service.read_index = spy

        def one_round(first: bool) -> dict:
            with hub.engine.begin() as c:
                c.execute(token_filters.delete())
                if first:
                    c.execute(token_filters.insert(), saved)
            counted.update(lookups=0, tokens=0)
            lat = []
            t0 = time.perf_counter()
            for i in range(a.cases):
                members = households[i % len(households)]
                ref = open_case(hub, [(m, "member") for m in members], purpose="dibao",
                                consent_digest=consent_digest_of(os.urandom(8)), operator="cw01", region="370304")
                t = time.perf_counter()
                run = run_case(hub, ref)
                lat.append(time.perf_counter() - t)
                assert run.complete, run.outcomes
            wall = time.perf_counter() - t0
            return {"p50": percentile(lat, 50), "rate": a.cases / wall, **counted}

        one_round(True), one_round(False)  # warm-up
        R = {True: [], False: []}
        for _ in range(a.rounds):
            for first in (False, True):
                R[first].append(one_round(first))
        rows = []
        for first, name in ((False, "today's path (every token to every department)"), (True, "filter-first")):
            xs = R[first]
            rows.append({"path": name, "case p50 ms min": min(x["p50"] for x in xs) * 1e3,
                         "case p50 ms median": statistics.median(x["p50"] for x in xs) * 1e3,
                         "cases/s min": min(x["rate"] for x in xs), "cases/s median": statistics.median(x["rate"] for x in xs),
                         "lookups/case": xs[0]["lookups"] / a.cases, "tokens sent/case": xs[0]["tokens"] / a.cases})
        extra = {"ratio latency filter-first / today (median)": rows[1]["case p50 ms median"] / rows[0]["case p50 ms median"],
                 "ratio throughput filter-first / today (median)": rows[1]["cases/s median"] / rows[0]["cases/s median"],
                 "residents": a.residents}
        report("bench_case_filterfirst", rows, json_out=a.json, extra=extra)
    finally:
        tb.stop()


if __name__ == "__main__":
    main()
