"""Case runs started from the console, and their live progress by department.

A run goes on in a worker thread; the page polls :meth:`RunTracker.progress` (HTMX, a quarter
second after each answer). Progress is read from the store, where the hub records each department's
outcome as soon as it has it, so it is the same truth the report is built from: a department
shows as answered only once its signed answer is stored. Starting a run for a case already
running returns the running one (a double click starts nothing twice).
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from hedui.node.console import hub_api
from hedui.node.errors import HeduiError

__all__ = ["RunTracker", "RunState"]

log = logging.getLogger("hedui.console.runs")


@dataclass
class RunState:
    case_ref: str
    operator: str
    departments: list[str]
    baseline: dict[str, str]  # provider -> request id of its stored outcome before this run
    already_ok: set[str]
    started: datetime
    done: threading.Event = field(default_factory=threading.Event)
    error: str = ""
    complete: bool | None = None


class RunTracker:
    def __init__(self, rt, clock, *, timeout: float = 10.0, workers: int = 4) -> None:
        self.rt, self.clock, self.timeout = rt, clock, timeout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="console-run")
        self._runs: dict[str, RunState] = {}
        self._mu = threading.Lock()

    def start(self, case_ref: str, operator: str) -> RunState:
        with self._mu:
            cur = self._runs.get(case_ref)
            if cur is not None and not cur.done.is_set():
                return cur
            before = hub_api.answer_states(self.rt.engine, case_ref)
            st = RunState(
                case_ref, operator, hub_api.departments_to_ask(self.rt),
                {p: a["request_id"] for p, a in before.items()},
                {p for p, a in before.items() if a["status"] == "ok"}, self.clock.now(),
            )
            self._runs[case_ref] = st
        self._pool.submit(self._run, st)
        return st

    def _run(self, st: RunState) -> None:
        try:
            res = hub_api.run_case(self.rt, st.case_ref, operator=st.operator, timeout=self.timeout)
            st.complete = res.complete
        except HeduiError as exc:
            st.error = exc.message
        except Exception as exc:  # a bug: the page says so; the details go to the log
            log.exception("case run failed")
            st.error = type(exc).__name__
        finally:
            st.done.set()

    def state(self, case_ref: str) -> RunState | None:
        with self._mu:
            return self._runs.get(case_ref)

    def progress(self, case_ref: str) -> dict:
        """``{"running", "error", "complete", "rows": [{provider, state, reason, attempts, not_current}]}``."""
        st = self.state(case_ref)
        stored = hub_api.answer_states(self.rt.engine, case_ref)
        departments = st.departments if st is not None else sorted(stored)
        rows = []
        for code in departments:
            a = stored.get(code)
            fresh = a is not None and (st is None or a["request_id"] != st.baseline.get(code))
            if st is not None and code in st.already_ok and not fresh:
                state = "earlier"
            elif not fresh:
                state = "pending"
            else:
                state = a["status"]
            n = hub_api.not_current_count(a["envelope"]) if a is not None and state in ("ok", "earlier") else 0
            if state == "ok" and n:
                state = "not_current"
            rows.append({"provider": code, "state": state, "reason": (a or {}).get("reason", "") if fresh else "",
                         "attempts": (a or {}).get("attempts", 0) if fresh else 0, "not_current": n})
        running = st is not None and not st.done.is_set()
        return {"running": running, "error": st.error if st else "", "complete": st.complete if st else None, "rows": rows,
                "started": st.started if st else None}

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
