"""Shared benchmark helpers: timing, percentiles, machine facts, result tables and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

__all__ = ["machine", "percentile", "report", "timed"]


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(), "platform": platform.platform()}


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = min(len(s) - 1, max(0, int(round(p / 100 * (len(s) - 1)))))
    return s[k]


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def report(title: str, rows: list[dict], *, json_out: bool, extra: dict | None = None) -> None:
    doc = {"benchmark": title, "machine": machine(), "rows": rows, **(extra or {})}
    if json_out:
        print(json.dumps(doc, indent=1, ensure_ascii=False))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{title} — {doc['machine']['cpu']} ({doc['machine']['cores']} cores)")
    cols = list(rows[0]) if rows else []
    for c in cols:
        t.add_column(c)
    for r in rows:
        t.add_row(*[f"{v:,.3f}" if isinstance(v, float) else str(v) for v in r.values()])
    Console(file=sys.stdout, width=160).print(t)
    for k, v in (extra or {}).items():
        print(f"{k}: {v}")


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")
