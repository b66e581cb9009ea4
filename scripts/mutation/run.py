"""Mutation testing of Hedui modules: ``bash scripts/mutation.sh MODULE…`` (docs/testing.md).

How a run goes:

1. The worktree is copied to a temporary folder; the worktree itself is never written to. A
   ``sitecustomize`` on PYTHONPATH (scripts/mutation/site/) makes every Python process of the
   run, child processes included, import ``hedui`` from the copy instead of from the folders
   the editable install points at; the pytest plugin there refuses to run otherwise.
2. Mapping: the test suite runs once under coverage with one context per test id (and one per
   test module while it is imported), so each line of the target modules maps to the tests
   that execute it. The map is cached in ``.mutation-cache/`` keyed by the content of the copy.
3. Each module's covering tests run once unmutated: they must pass in isolation, and their
   wall time sets the per-mutant timeout.
4. Mutants come from cosmic-ray's operators (scripts/mutation/operators.py), skipping type
   annotations; ``--sample N --seed S`` draws N per module. For each mutant the module file in
   the copy is rewritten, only the tests covering the mutated lines run (``pytest -x``, fastest
   first), and the file is restored. A failing run or a timeout detects the mutant.
5. Survivors listed in tests/mutation-equivalents.md are reported as equivalent.

Exit status is 0 unless ``--min-score`` is given and a module's score (equivalents excluded)
is below it, or the run could not be done (2).
"""

from __future__ import annotations

import argparse
import difflib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import operators as mutation_operators  # noqa: E402
import parso.python.tree as pt  # noqa: E402
from cosmic_ray.ast import ast_nodes, get_ast  # noqa: E402
from cosmic_ray.mutating import MutationVisitor  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

_SKIP_DIRS = {".git", ".venv", "__pycache__", ".hypothesis", ".pytest_cache", "build", "dist", ".mutation-cache",
              "node_modules", ".tools"}
_SKIP_PATHS = {"bench/results"}
_EQUIV = re.compile(r"^- `(?P<file>[^`]+)`: `(?P<orig>.+?)` → `(?P<mut>.*?)` — (?P<reason>.+)$")
_PYTEST = ["-m", "pytest", "-p", "hedui_mutation_plugin", "-p", "no:cacheprovider", "-o", "addopts=", "-q",
           "--no-header"]

err = Console(stderr=True)


class RunError(Exception):
    """The run cannot go on (one line for the user, exit 2)."""


@dataclass
class Mutant:
    module: str
    operator: str
    occurrence: int
    line: int
    end_line: int
    before: str = ""
    after: str = ""
    import_time: bool = False  # outside any function body: runs when the module is imported
    status: str = "pending"  # killed | timeout | survived | no-tests | equivalent | error
    tests: int = 0
    seconds: float = 0.0
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.module}:{self.line}"


@dataclass
class ModuleResult:
    module: str
    total: int
    mutants: list[Mutant] = field(default_factory=list)
    tests_used: int = 0
    tests_left_out: int = 0

    def count(self, *statuses: str) -> int:
        return sum(m.status in statuses for m in self.mutants)

    @property
    def run(self) -> int:
        return self.count("killed", "timeout", "survived", "no-tests", "equivalent")

    @property
    def detected(self) -> int:
        return self.count("killed", "timeout")

    @property
    def score(self) -> float:
        return 100.0 * self.detected / self.run if self.run else 0.0

    @property
    def score_excl_equivalents(self) -> float:
        n = self.run - self.count("equivalent")
        return 100.0 * self.detected / n if n else 100.0


# ------------------------------------------------------------------ the copy


def _ignore(src: str, names: list[str]) -> set[str]:
    rel = Path(src).resolve().relative_to(ROOT)
    out = {n for n in names if n in _SKIP_DIRS or n.endswith(".egg-info") or n.endswith((".pyc", ".db", ".db-wal", ".db-shm"))}
    out |= {n for n in names if (rel / n).as_posix() in _SKIP_PATHS}
    return out


def make_copy() -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="hedui-mutation-"))
    shutil.copytree(ROOT, tmp / "wt", ignore=_ignore, symlinks=True)
    return tmp


# Files that cannot change which test executes which line: the tool itself, its list of
# equivalents, the docs.
_HASH_SKIP = ("scripts/mutation/", "tests/mutation-equivalents.md", "docs/")


def content_hash(root: Path, extra: list[str]) -> str:
    h = hashlib.sha256("\0".join(extra).encode())
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and not any(part in _SKIP_DIRS for part in p.parts) and not rel.startswith(_HASH_SKIP):
            h.update(rel.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:24]


def base_env(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    site = copy / "scripts" / "mutation" / "site"
    env["PYTHONPATH"] = os.pathsep.join([str(site), env["PYTHONPATH"]]) if env.get("PYTHONPATH") else str(site)
    env["HEDUI_MUTATION_ROOT"] = str(copy)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutant of the same size and mtime must not reuse a stale .pyc
    for k in ("HEDUI_MUTATION_COVERAGE", "HEDUI_MUTATION_REPORT", "HEDUI_MUTATION_CONTEXT"):
        env.pop(k, None)
    return env


# ------------------------------------------------------------------ running pytest


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def run_pytest(copy: Path, env: dict[str, str], args: list[str], log: Path, timeout: float | None) -> tuple[int | None, float]:
    """(exit status or None on timeout, seconds). The tests run in their own session so a
    timeout (or Ctrl-C here) kills every process they started."""
    t0 = time.monotonic()
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, *_PYTEST, *args], cwd=copy, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            rc: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
        except BaseException:
            _kill_group(proc)
            raise
        # Whatever the tests left behind (servers, workers) goes with them.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return rc, time.monotonic() - t0


# ------------------------------------------------------------------ mapping lines to tests


@dataclass
class TestMap:
    lines: dict[str, dict[int, list[str]]]  # module -> line -> contexts
    outcomes: dict[str, dict]  # test id -> {outcome, duration}

    def passed(self) -> set[str]:
        return {t for t, o in self.outcomes.items() if o["outcome"] == "passed"}

    def in_file(self, path: str) -> set[str]:
        return {t for t in self.outcomes if t.split("::", 1)[0] == path}

    def _expand(self, ctxs: set[str]) -> set[str]:
        out = set()
        for c in ctxs:
            if c.startswith("collect:"):
                out |= self.in_file(c[len("collect:"):])
            elif c:
                out.add(c)
        return out

    def lines_per_test(self, module: str) -> dict[str, set[int]]:
        """The module's lines each test executes (import-time contexts spread to their file's
        tests)."""
        out: dict[str, set[int]] = defaultdict(set)
        for line, cs in self.lines.get(module, {}).items():
            for t in self._expand(set(cs)):
                out[t].add(line)
        return out

    def module_tests(self, module: str) -> set[str]:
        ctxs = {c for cs in self.lines.get(module, {}).values() for c in cs}
        return self._expand(ctxs) & self.passed()

    def covering(self, module: str, first: int, last: int) -> set[str]:
        by_line = self.lines.get(module, {})
        ctxs = {c for ln in range(first, last + 1) for c in by_line.get(ln, ())}
        if ctxs and not any(c and not c.startswith("collect:") for c in ctxs):
            # Executed only while modules were imported (constants, defaults, decorators):
            # every test that runs any of the module's code may depend on it.
            return self.module_tests(module)
        return self._expand(ctxs) & self.passed()


def _package_dirs(root: Path) -> list[Path]:
    doc = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    pkg_dir = doc.get("tool", {}).get("setuptools", {}).get("package-dir", {})
    return [(root / rel).resolve() for rel in pkg_dir.values()]


def build_map(copy: Path, tmp: Path, modules: list[str], test_args: list[str], cache: Path | None) -> TestMap:
    """Runs the tests once under coverage over every product module (so one map serves any
    later choice of modules) and reads the contexts of the ``modules`` asked for."""
    import coverage

    key = content_hash(copy, test_args)
    meta = cache / f"map-{key}.json" if cache else None
    if meta and meta.is_file() and (cache / f"map-{key}.coverage").is_file():
        doc = json.loads(meta.read_text())
        data_file, old_root, outcomes = cache / f"map-{key}.coverage", Path(doc["root"]), doc["outcomes"]
        err.print(f"mapping: reused {meta.relative_to(ROOT)} (same code and tests)")
    else:
        covdir = tmp / "cov"
        covdir.mkdir()
        env = base_env(copy)
        env["HEDUI_MUTATION_COVERAGE"] = str(covdir / "data")
        env["HEDUI_MUTATION_INCLUDE"] = os.pathsep.join(str(d / "*") for d in _package_dirs(copy))
        env["HEDUI_MUTATION_REPORT"] = str(tmp / "outcomes.json")
        log = tmp / "mapping.log"
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as bar:
            bar.add_task(f"mapping: the tests ({' '.join(test_args)}) under coverage, one context per test")
            rc, secs = run_pytest(copy, env, test_args, log, timeout=None)
        if not (tmp / "outcomes.json").is_file():
            tail = log.read_text(errors="replace")[-2000:]
            raise RunError(f"mapping run failed (exit {rc}); last output:\n{tail}")
        outcomes = json.loads((tmp / "outcomes.json").read_text())
        failed = sorted(t for t, o in outcomes.items() if o["outcome"] == "failed")
        err.print(f"mapping: {len(outcomes)} tests in {secs:.0f} s (exit {rc})")
        if failed:
            err.print(f"[yellow]mapping: {len(failed)} test(s) fail without any mutant and are left out: "
                      f"{', '.join(failed[:5])}{' …' if len(failed) > 5 else ''}[/]")
        combined = coverage.Coverage(data_file=str(covdir / "data"), config_file=False)
        combined.combine(data_paths=[str(covdir)], keep=False)
        combined.get_data()
        data_file, old_root = covdir / "data", copy
        if meta:
            cache.mkdir(exist_ok=True)
            for old in cache.glob("map-*"):
                old.unlink()
            shutil.copyfile(data_file, cache / f"map-{key}.coverage")
            meta.write_text(json.dumps({"root": str(old_root), "outcomes": outcomes}))
    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    measured = set(data.measured_files())
    lines: dict[str, dict[int, list[str]]] = {}
    for m in modules:
        f = str((old_root / m).resolve())
        by_line = data.contexts_by_lineno(f) if f in measured else {}
        lines[m] = {int(k): sorted(v) for k, v in by_line.items()}
    return TestMap(lines, outcomes)


# ------------------------------------------------------------------ mutants


def _annotation_ranges(tree) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    out = []
    for node in ast_nodes(tree):
        ann = None
        if isinstance(node, (pt.Param, pt.Function)):
            ann = node.annotation
        elif node.type == "annassign":
            ann = node.children[1]
        if ann is not None:
            out.append((ann.start_pos, ann.end_pos))
    return out


def _function_bodies(tree) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    return [(n.children[-1].start_pos, n.children[-1].end_pos) for n in ast_nodes(tree) if n.type == "funcdef"]


def enumerate_mutants(module: str, code: str, ops) -> list[Mutant]:
    tree = get_ast(code)
    ann = _annotation_ranges(tree)
    bodies = _function_bodies(tree)
    out = []
    for name, op in ops:
        occurrence = 0
        for node in ast_nodes(tree):
            for start, end in op.mutation_positions(node):
                if not any(a <= start < b for a, b in ann):  # annotations are never evaluated here
                    # Constants, defaults, decorators, class bodies run at import, under whatever
                    # test first imported the module: their coverage context says nothing.
                    at_import = not any(a <= start < b for a, b in bodies)
                    out.append(Mutant(module, name, occurrence, start[0], end[0], import_time=at_import))
                occurrence += 1
    out.sort(key=lambda m: (m.line, m.operator, m.occurrence))
    return out


def describe(original: str, mutated: str) -> tuple[str, str]:
    a, b = original.splitlines(), mutated.splitlines()
    before, after = [], []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag != "equal":
            before += [s.strip() for s in a[i1:i2]]
            after += [s.strip() for s in b[j1:j2]]
    return " / ".join(before), " / ".join(after)


def _norm(s: str) -> str:
    return re.sub(r"\s+", " ", s.strip())


def load_equivalents(path: Path) -> dict[tuple[str, str, str], str]:
    out = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _EQUIV.match(line.strip())
        if m:
            out[(m["file"], _norm(m["orig"]), _norm(m["mut"]))] = m["reason"]
    return out


# ------------------------------------------------------------------ the run


def run(args: argparse.Namespace) -> list[ModuleResult]:
    modules = []
    for m in args.modules:
        p = (ROOT / m).resolve()
        if not p.is_file() or p.suffix != ".py" or not p.is_relative_to(ROOT):
            raise RunError(f"module: got {m!r}, want a .py file of this repository (e.g. adapters/idnum.py)")
        modules.append(p.relative_to(ROOT).as_posix())
    ops = mutation_operators.operators(all_operators=args.all_operators)
    equivalents = load_equivalents(ROOT / args.equivalents)
    tmp = make_copy()
    copy = tmp / "wt"
    try:
        test_args = [*args.tests, *(["-m", args.markers] if args.markers else [])]
        tmap = build_map(copy, tmp, modules, test_args, None if args.no_cache else ROOT / ".mutation-cache")
        env = base_env(copy)
        results = []
        for module in modules:
            results.append(run_module(module, copy, tmp, env, tmap, ops, equivalents, args))
        return results
    finally:
        if args.keep:
            err.print(f"kept the copy at {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run_module(module, copy, tmp, env, tmap: TestMap, ops, equivalents, args) -> ModuleResult:
    path = copy / module
    original = path.read_text(encoding="utf-8")
    mutants = enumerate_mutants(module, original, ops)
    res = ModuleResult(module, len(mutants))
    chosen = mutants
    if args.sample and args.sample < len(mutants):
        chosen = sorted(random.Random(f"{args.seed}:{module}").sample(mutants, args.sample),
                        key=lambda m: (m.line, m.operator, m.occurrence))
    res.mutants = chosen
    op_by_name = dict(ops)
    durations = {t: o["duration"] for t, o in tmap.outcomes.items()}
    slow = {t for t in tmap.module_tests(module) if durations.get(t, 0.0) > args.max_test_seconds}
    dropped: set[str] = set(slow)
    per_test = tmap.lines_per_test(module)
    file_lines: dict[str, set[int]] = defaultdict(set)
    file_secs: dict[str, float] = defaultdict(float)
    for t_id, lines_hit in per_test.items():
        if t_id not in dropped:
            file_lines[t_id.split("::", 1)[0]] |= lines_hit
            file_secs[t_id.split("::", 1)[0]] += durations.get(t_id, 0.0)

    def order(tests) -> list[str]:
        # The test file that executes the most of the module's lines first (its unit tests),
        # then within a file the tests that execute the most lines, quickest first.
        def key(t_id: str):
            f = t_id.split("::", 1)[0]
            return (-len(file_lines[f]), file_secs[f], f, -len(per_test.get(t_id, ())), durations.get(t_id, 0.0), t_id)
        return sorted(set(tests) - dropped, key=key)

    # The module's tests must pass unmutated when run on their own; a test that fails there
    # (flaky, or dependent on order) is left out with a warning and the clean run repeated once.
    sel = tmp / "select.txt"
    report = tmp / "clean-outcomes.json"
    for attempt in (1, 2):
        everything = order(tmap.module_tests(module))
        if not everything:
            break
        sel.write_text("\n".join(everything), encoding="utf-8")
        files = sorted({t.split("::", 1)[0] for t in everything})
        report.unlink(missing_ok=True)
        clean_env = dict(env, HEDUI_MUTATION_REPORT=str(report))
        rc, clean_secs = run_pytest(copy, clean_env, ["--mutation-select", str(sel), *files], tmp / "clean.log", timeout=None)
        if rc == 0:
            break
        failed = {k for k, v in json.loads(report.read_text()).items() if v["outcome"] == "failed"} if report.is_file() else set()
        if attempt == 2 or not failed:
            tail = (tmp / "clean.log").read_text(errors="replace")[-3000:]
            raise RunError(f"{module}: its {len(everything)} covering tests fail without any mutant (exit {rc}):\n{tail}")
        err.print(f"[yellow]{module}: {len(failed)} covering test(s) fail unmutated when run on their own and are "
                  f"left out: {', '.join(sorted(failed)[:5])}[/]")
        dropped |= failed
    if not everything:
        err.print(f"[yellow]{module}: no test executes this module[/]")
        for m in chosen:
            m.before, m.after = describe(original, MutationVisitor.mutate_code(original, op_by_name[m.operator], m.occurrence) or original)
            m.status = "no-tests"
        return res
    res.tests_used, res.tests_left_out = len(everything), len(dropped)
    if slow:
        err.print(f"{module}: {len(slow)} covering test(s) slower than {args.max_test_seconds:g} s are not used "
                  f"(--max-test-seconds)")

    # Per mutant: factor x (start-up + what its own tests took in the mapping run), at least
    # --timeout-min. Start-up is what the clean run took beyond its tests.
    startup = max(1.0, clean_secs - sum(durations.get(t, 0.0) for t in everything))

    def timeout_for(tests: list[str]) -> float:
        return max(args.timeout_min, args.timeout_factor * (startup + sum(durations.get(t, 0.0) for t in tests)))

    err.print(f"{module}: {len(mutants)} mutants, running {len(chosen)}; {len(everything)} covering tests "
              f"take {clean_secs:.1f} s unmutated (start-up {startup:.1f} s); timeout up to "
              f"{timeout_for(everything):.0f} s per mutant")

    started = time.monotonic()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=err, transient=False, disable=not err.is_terminal) as bar:
        task = bar.add_task(module, total=len(chosen))
        for m in chosen:
            mutated = MutationVisitor.mutate_code(original, op_by_name[m.operator], m.occurrence)
            if mutated is None or mutated == original:
                m.status, m.reason = "error", "the operator made no change"
                bar.advance(task)
                continue
            m.before, m.after = describe(original, mutated)
            tests = order(tmap.module_tests(module) if m.import_time else tmap.covering(module, m.line, m.end_line))
            m.tests = len(tests)
            if not tests:
                m.status = "no-tests"
            else:
                # Two stages: the test file with the best-ranked test first (a focused unit test
                # file usually detects the mutant without collecting the end-to-end files),
                # then the rest.
                first_file = tests[0].split("::", 1)[0]
                stages = [[t for t in tests if t.startswith(first_file + "::")],
                          [t for t in tests if not t.startswith(first_file + "::")]]
                rc, m.seconds = 0, 0.0
                try:
                    path.write_text(mutated, encoding="utf-8")
                    for stage in stages:
                        if not stage or rc != 0:
                            continue
                        sel.write_text("\n".join(stage), encoding="utf-8")
                        files = list(dict.fromkeys(t.split("::", 1)[0] for t in stage))
                        rc, secs = run_pytest(copy, env, ["-x", "--mutation-select", str(sel), *files],
                                              tmp / "mutant.log", timeout=timeout_for(stage))
                        m.seconds += secs
                finally:
                    path.write_text(original, encoding="utf-8")
                if rc is None:
                    m.status = "timeout"
                elif rc == 0:
                    m.status = "survived"
                elif rc in (1, 2):  # tests failed, or collection/import broke
                    m.status = "killed"
                else:  # 3 internal error, 4 usage error, 5 no tests: the run, not the mutant
                    m.status, m.reason = "error", f"pytest exit {rc}"
            if m.status in ("survived", "no-tests"):
                why = equivalents.get((module, _norm(m.before), _norm(m.after)))
                if why:
                    m.status, m.reason = "equivalent", why
            done = sum(x.status != "pending" for x in chosen)
            detected = sum(x.status in ("killed", "timeout") for x in chosen)
            bar.update(task, advance=1, description=f"{module} ({detected} detected)")
            if not err.is_terminal and (done % 10 == 0 or done == len(chosen)):  # a log gets a line now and then
                err.print(f"{module}: {done}/{len(chosen)} mutants run, {detected} detected, "
                          f"{time.monotonic() - started:.0f} s", highlight=False)
    return res


# ------------------------------------------------------------------ output


def report(results: list[ModuleResult], out: Console) -> None:
    t = Table(title="mutation score")
    for col in ("module", "mutants run", "detected", "survived", "no tests", "equivalent", "score", "score excl. equivalents"):
        t.add_column(col, justify="left" if col == "module" else "right")
    for r in results:
        run_s = f"{r.run}" + (f" (sample of {r.total})" if r.run < r.total else "")
        t.add_row(r.module, run_s, str(r.detected), str(r.count("survived")), str(r.count("no-tests")),
                  str(r.count("equivalent")), f"{r.score:.0f} %", f"{r.score_excl_equivalents:.0f} %")
    out.print(t)
    for r in results:
        surv = [m for m in r.mutants if m.status in ("survived", "no-tests")]
        if surv:
            out.print(f"[bold]survivors in {r.module}[/] ({len(surv)}):")
            for m in surv:
                tag = " [no test runs this line]" if m.status == "no-tests" else ""
                out.print(f"  {m.where}  {m.operator}{tag}\n      - {m.before}\n      + {m.after}", markup=False, highlight=False)
        errors = [m for m in r.mutants if m.status == "error"]
        if errors:
            out.print(f"[yellow]{len(errors)} mutant(s) of {r.module} could not be judged: "
                      f"{'; '.join(f'{m.where} {m.reason}' for m in errors[:5])}[/]")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/mutation.sh", description="Mutation testing of Hedui modules (docs/testing.md).")
    ap.add_argument("modules", nargs="+", metavar="MODULE", help="a module file, e.g. adapters/idnum.py")
    ap.add_argument("--sample", type=int, default=0, metavar="N", help="run N mutants per module drawn at random")
    ap.add_argument("--seed", type=int, default=0, metavar="S", help="seed of --sample (default 0)")
    ap.add_argument("--min-score", type=float, default=None, metavar="PCT",
                    help="exit 1 if a module's score excluding listed equivalents is below PCT")
    ap.add_argument("--timeout-factor", type=float, default=3.0,
                    help="per-mutant timeout = factor x (pytest start-up + the mutant's tests' time in the mapping run)")
    ap.add_argument("--timeout-min", type=float, default=10.0, help="lower bound of the per-mutant timeout, seconds")
    ap.add_argument("--max-test-seconds", type=float, default=1.0, metavar="S",
                    help="leave out covering tests that took longer than S in the mapping run (default 1)")
    ap.add_argument("--tests", nargs="+", default=["tests"], metavar="PATH",
                    help="test files or folders the mapping run executes (default: tests/)")
    ap.add_argument("--markers", default="not postgres and not slow", metavar="EXPR",
                    help="pytest -m expression for the mapping run, hence for every mutant (default: "
                         "'not postgres and not slow'; '' runs everything)")
    ap.add_argument("--equivalents", default="tests/mutation-equivalents.md", help="the list of equivalent mutants")
    ap.add_argument("--all-operators", action="store_true", help="every cosmic-ray core operator, not the curated set")
    ap.add_argument("--no-cache", action="store_true", help="redo the mapping run even if .mutation-cache has it")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy (to inspect logs)")
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = ap.parse_args(argv)
    if args.sample < 0:
        ap.error(f"--sample: got {args.sample}, want N >= 0")

    def _term(signum, frame):  # SIGTERM ends the run like Ctrl-C: tests killed, copy removed
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    t0 = time.monotonic()
    try:
        results = run(args)
    except RunError as exc:
        err.print(f"[red]mutation: {exc}[/]")
        return 2
    except KeyboardInterrupt:
        err.print("[red]mutation: interrupted; the worktree was never modified and the copy is removed[/]")
        return 130
    elapsed = time.monotonic() - t0
    if args.json:
        print(json.dumps({
            "seconds": round(elapsed, 1),
            "modules": [{
                "module": r.module, "mutants": r.total, "run": r.run, "detected": r.detected,
                "survived": r.count("survived"), "no_tests": r.count("no-tests"), "equivalent": r.count("equivalent"),
                "errors": r.count("error"), "tests_used": r.tests_used, "tests_left_out": r.tests_left_out,
                "score": round(r.score, 1), "score_excl_equivalents": round(r.score_excl_equivalents, 1),
                "mutants_detail": [asdict(m) for m in r.mutants],
            } for r in results],
        }, ensure_ascii=False, indent=1))
    else:
        out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)
        report(results, out)
        out.print(f"{sum(r.run for r in results)} mutants in {elapsed:.0f} s")
    if args.min_score is not None:
        low = [r for r in results if r.score_excl_equivalents < args.min_score]
        if low:
            err.print(f"[red]below --min-score {args.min_score:g}: "
                      f"{', '.join(f'{r.module} {r.score_excl_equivalents:.0f} %' for r in low)}[/]")
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
