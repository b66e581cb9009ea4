"""Issue 15 benchmark: how the web console feels — the first page after sign-in, the report
page, and a case run of 4 members × the testbed's departments started from the console —
against the same case run from the command line (`hedui case run`, the baseline a caseworker
has today) and the domain call alone (the floor).

Everything runs on this machine: the testbed federation (a hub and six departments on
loopback, mutual TLS), the console served by uvicorn, and the browser (Debian's chromium via
Playwright) for the page loads. Paths are interleaved round by round after a warm-up round;
each figure is min/median over the rounds.

    python bench/bench_console.py [--rounds 5] [--residents 400] [--json]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import report

from hedui.adapters.synthetic import resident
from hedui.common.clock import SystemClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.console.app import ConsoleSettings, create_app
from hedui.node.testbed import DEFAULT_MEMBERS, MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case
from tests.console.helpers import PASSWORD, Browser, ConsoleServer, add_operators

HOUSEHOLDS = [(1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20), (21, 22, 23, 24)]


def _open(rt, n: int) -> str:
    ids = [resident(k, 7).id_number for k in HOUSEHOLDS[n % len(HOUSEHOLDS)]]
    return open_case(rt, list(zip(ids, ["applicant", "spouse", "child", "child"], strict=True)), purpose="dibao",
                     consent_digest=consent_digest_of(f"scan {n}".encode()), operator="cw01", region="370304")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--residents", type=int, default=400)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="hedui-bench-console-"))
    tb = Testbed(root / "fed", [MemberPlan(m.code, m.name, m.roles) for m in DEFAULT_MEMBERS], residents=args.residents)
    tb.create()
    os.environ[PASSPHRASE_ENV] = tb.passphrase
    tb.build_indexes()
    tb.start()
    rt = tb.runtime("hub")
    add_operators(tb.root / "console-users.toml")
    app = create_app(rt, SystemClock(), ConsoleSettings(users_path=tb.root / "console-users.toml", signin_per_minute=10_000))
    cli = [sys.executable, "-m", "hedui.node.cli", "case", "run", "--config", str(tb.config_path("hub")), "--json"]
    times: dict[str, list[float]] = {k: [] for k in ("sign-in → first page", "first page", "report page", "run: console", "run: CLI", "run: domain call")}
    departments = 0
    browser = Browser()
    try:
        with ConsoleServer(app) as srv:
            page = browser.page()
            n = 0
            for rnd in range(args.rounds + 1):  # round 0 warms every path up and is not counted
                keep = rnd > 0
                browser.context.clear_cookies()
                page.goto(srv.url + "/signin")
                page.fill("#name", "cw01")
                page.fill("#password", PASSWORD)
                t = time.perf_counter()
                page.click("button[type=submit]")  # sign in (argon2id) → the case list, fully loaded
                page.wait_for_url("**/cases")
                page.wait_for_load_state("load")
                signin = time.perf_counter() - t
                t = time.perf_counter()
                page.goto(srv.url + "/cases")  # the first page, signed in
                page.wait_for_load_state("load")
                first = time.perf_counter() - t

                # a run from the console: the button, then the page's own polling until done
                ref = _open(rt, n)
                n += 1
                page.goto(f"{srv.url}/cases/{ref}")
                t = time.perf_counter()
                page.click("#run-button")
                page.wait_for_selector("#run-done", timeout=120_000)
                console_run = time.perf_counter() - t
                departments = page.locator("tr.dep").count()
                assert departments >= 6 and page.locator("tr.dep.st-ok").count() == departments, "all answered"

                t = time.perf_counter()
                page.goto(f"{srv.url}/cases/{ref}/report")
                page.frame_locator("#report-frame").locator("h1").wait_for()
                page.wait_for_load_state("load")
                report_page = time.perf_counter() - t

                ref = _open(rt, n)
                n += 1
                t = time.perf_counter()
                out = subprocess.run([*cli[:5], ref, *cli[5:]], env={**os.environ, **tb.env()}, capture_output=True,
                                     text=True, timeout=300)
                cli_run = time.perf_counter() - t
                assert out.returncode == 0 and '"complete": true' in out.stdout, out.stderr[-500:]

                ref = _open(rt, n)
                n += 1
                t = time.perf_counter()
                res = run_case(rt, ref)
                domain = time.perf_counter() - t
                assert res.complete
                if keep:
                    for k, v in zip(times, (signin, first, report_page, console_run, cli_run, domain), strict=True):
                        times[k].append(v)
            page.close()
    finally:
        browser.close()
        tb.stop()
    base = statistics.median(times["run: CLI"])
    rows = [{"path": k, "min_ms": min(v) * 1000, "median_ms": statistics.median(v) * 1000,
             "vs CLI run (median)": statistics.median(v) / base if k.startswith("run") else float("nan")}
            for k, v in times.items()]
    report("console: page loads and a case run", rows, json_out=args.json,
           extra={"rounds": args.rounds, "case": f"4 members × {departments} departments",
                  "note": "page loads in Debian chromium (load event); console run = click to 'done' shown, "
                          "incl. the page's polling (250 ms after each answer)"})


if __name__ == "__main__":
    main()
