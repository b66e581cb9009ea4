"""``python -m hedui.node.testbed.departments --sqlite DIR [--pg URL] --residents N …``

Writes the nine department databases; prints rows per table (``--json`` for scripts). Bad
arguments and unusable targets give one line on stderr and exit status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from . import EXTRACT_DATE, SEED, GenerateError, generate


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m hedui.node.testbed.departments",
                                description="Write nine realistic department databases (SQLite and/or PostgreSQL).")
    p.add_argument("--sqlite", metavar="DIR", help="folder for <department>.sqlite files")
    p.add_argument("--pg", metavar="URL", help="PostgreSQL database URL (one schema per department)")
    p.add_argument("--residents", type=int, default=300, help="background residents (default 300; 10^6 for benchmarks)")
    p.add_argument("--seed", type=int, default=SEED)
    p.add_argument("--extract-date", default=EXTRACT_DATE.isoformat(), help="date of the extracts, YYYY-MM-DD")
    p.add_argument("--recipient-share", type=float, default=0.08, help="share of residents receiving assistance")
    p.add_argument("--replace", action="store_true", help="overwrite existing files or schemas")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    try:
        try:
            extract = date.fromisoformat(a.extract_date)
        except ValueError:
            raise GenerateError(f"--extract-date: got {a.extract_date!r}, want YYYY-MM-DD") from None
        s = generate(a.sqlite, a.pg, residents=a.residents, seed=a.seed, extract_date=extract,
                     recipient_share=a.recipient_share, replace=a.replace,
                     progress=not (a.no_progress or a.json) and sys.stderr.isatty())
    except GenerateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        print(json.dumps({"extract_date": s.extract_date.isoformat(), "residents": s.residents,
                          "households": s.households, "rows": s.rows,
                          "data_dates": {k: v.isoformat() for k, v in s.data_dates.items()}}, ensure_ascii=False))
    else:
        print(f"{s.residents} background residents, {s.households} households, extract {s.extract_date}")
        for dept, tables in s.rows.items():
            print(f"  {dept:<11} data to {s.data_dates[dept]}  " + "  ".join(f"{t}={n}" for t, n in tables.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
