"""Detection over a month of medical-insurance data for a district's insured population.

Generates synthetic canonical records in memory (no database, no adapter): every insured
person gets one record with an enrolment fact and 0-3 inpatient stays in the year to date
(about 30% of people have a stay; amounts spread so that a few percent cross 20,000 CNY), then
runs the shipped medical-insurance rules (single stay >= 20,000 last month, yearly total >=
40,000) once, as the department's node would on the 3rd of the month.

    python bench/bench_discovery.py                 # 10^6 insured (about 20 s, 1.1 GB RSS)
    python bench/bench_discovery.py --insured 100000

Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from datetime import date, timedelta
from decimal import Decimal

from hedui.adapters.records import Fact, Record
from hedui.node.discovery.calendar import WorkCalendar
from hedui.node.discovery.detect import detect
from hedui.node.discovery.rules import default_rules

_W = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)


def _identity(i: int) -> str:
    """A distinct valid number for each i < 3*10^7 (birth date spread, sequence number)."""
    birth = date(1940, 1, 1) + timedelta(days=(i % 30000) * 7919 % 30000)
    body = f"370304{birth:%Y%m%d}{i // 30000:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, _W)) % 11]


def generate(n: int, as_of: date, seed: int) -> tuple[list[Record], int]:
    rng = random.Random(seed)
    year_start = date(as_of.year, 1, 1)
    span = (as_of - year_start).days
    hospitals = ("区人民医院", "区中医院", "市第一医院", "镇卫生院")
    towns = [f"370304{k:03d}" for k in range(1, 10)]
    records: list[Record] = []
    n_facts = 0
    for i in range(n):
        region = towns[i % len(towns)]
        facts = [Fact("enrolment", Decimal(1), "bool", year_start, {"region": region})]
        r = rng.random()
        stays = 0 if r < 0.70 else 1 if r < 0.90 else 2 if r < 0.97 else 3
        for s in range(stays):
            # Out-of-pocket compliant cost: mostly small, a long tail past 20,000.
            amount = Decimal(int(rng.paretovariate(1.6) * 2500 * 100)) / 100
            on = year_start + timedelta(days=rng.randrange(span))
            facts.append(Fact("inpatient_stay", amount, "CNY", on,
                              {"hospital": hospitals[(i + s) % 4], "stay_id": f"{i}-{s}", "region": region}))
        n_facts += len(facts)
        records.append(Record(_identity(i), f"bench:{i}", tuple(facts)))
    return records, n_facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--insured", type=int, default=1_000_000, help="number of insured people (default 10^6, max 3*10^7)")
    ap.add_argument("--as-of", default="2025-06-03", help="run date (default 2025-06-03)")
    ap.add_argument("--seed", type=int, default=20210520)
    args = ap.parse_args(argv)
    if not 1 <= args.insured <= 30_000_000:
        ap.error(f"--insured: got {args.insured}, want 1..30000000")
    as_of = date.fromisoformat(args.as_of)
    rules = default_rules("medins")
    cal = WorkCalendar()

    t0 = time.perf_counter()
    records, n_facts = generate(args.insured, as_of, args.seed)
    t_gen = time.perf_counter() - t0

    t0 = time.perf_counter()
    found = detect(records, rules, as_of, cal, provider="370304-medins", dedup_secret=b"bench-secret-32-bytes-long......")
    t_detect = time.perf_counter() - t0

    by_rule: dict[str, int] = {}
    for d in found:
        by_rule[d.rule] = by_rule.get(d.rule, 0) + 1
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"bench_discovery: {args.insured:,} insured, {n_facts:,} facts, as of {as_of}")
    print(f"  generate   {t_gen:8.2f} s")
    print(f"  detect     {t_detect:8.2f} s   {args.insured / t_detect:,.0f} records/s   "
          f"{n_facts / t_detect:,.0f} facts/s")
    for rule, k in sorted(by_rule.items()):
        print(f"  {rule:34s} {k:,} detections")
    print(f"  peak RSS   {rss_mb:8.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
