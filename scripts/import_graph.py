#!/usr/bin/env python3
"""The import graph of the product packages, read from the source with ``ast`` (nothing is
imported or run), and its picture for docs/architecture.md.

    python3 scripts/import_graph.py            # a mermaid diagram of the rooms and their imports
    python3 scripts/import_graph.py --modules  # every module and what it imports, one per line

``tests/test_architecture.py`` checks the same graph (no cycles, the ground floor imports
nothing above it, ...); this file is the one reader of it.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Folder -> import name (pyproject's package-dir); the generated proto code is left out.
PACKAGES = {"common": "hedui.common", "keys": "hedui.keys", "adapters": "hedui.adapters", "node": "hedui.node"}


def _modules() -> dict[str, Path]:
    out = {}
    for folder, name in PACKAGES.items():
        for p in sorted((ROOT / folder).rglob("*.py")):
            rel = p.relative_to(ROOT / folder).with_suffix("")
            if "migrations" in rel.parts:
                continue
            parts = [name, *rel.parts]
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = p
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The ``hedui.*`` modules ``path`` imports: at module level only (what runs on import;
    ``if TYPE_CHECKING:`` blocks do not), or everywhere (functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("hedui"))
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hedui"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    found.add(sub if sub in MODULES else node.module)
            elif isinstance(node, ast.If):
                if not _is_type_checking(node):
                    visit(node.body)
                    visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for h in node.handlers:
                    visit(h.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif not top_level_only:
                for child in ast.iter_child_nodes(node):
                    if isinstance(child, ast.stmt):
                        visit([child])
                    else:
                        for sub in ast.walk(child):
                            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                                visit([sub])
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.With, ast.For, ast.While)):
                    visit(node.body)

    visit(tree.body)
    return found


def _graph(top_level_only: bool = True) -> dict[str, set[str]]:
    return {m: {i for i in _imports(p, top_level_only=top_level_only) if i in MODULES and i != m} for m, p in MODULES.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state:
                found = dfs(n)
                if found:
                    return found
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = dfs(m)
            if found:
                return found
    return None



# The rooms of the picture: a module belongs to the longest prefix listed.
ROOMS = [
    "hedui.common", "hedui.keys", "hedui.adapters",
    "hedui.node.verification", "hedui.node.discovery", "hedui.node.audit", "hedui.node.cli",
    "hedui.node.testbed", "hedui.node",
]


# The composition root: builds the runtime with every role's state and the server with every
# servicer. It is the one place the platform imports the features.
WIRING = {"hedui.node.runtime", "hedui.node.server"}


def room(module: str) -> str:
    if module in WIRING:
        return "hedui.node.wiring"
    return max((r for r in ROOMS if module == r or module.startswith(r + ".")), key=len)


def mermaid() -> str:
    edges = sorted({(room(a), room(b)) for a, deps in _graph().items() for b in deps if room(a) != room(b)})
    rooms = ["hedui.node.wiring", *ROOMS]
    label = {r: r.removeprefix("hedui.").replace("node.", "node/") + "/" for r in rooms}
    label["hedui.node"] = "node/ platform: errors, config, rpc, policy, peer, client, loops, html, metrics, store/"
    label["hedui.node.wiring"] = "node/ wiring: runtime, server"
    ident = {r: r.replace(".", "_") for r in rooms}
    lines = ["graph TD"]
    lines += [f'    {ident[r]}["{label[r]}"]' for r in rooms]
    lines += [f"    {ident[a]} --> {ident[b]}" for a, b in edges]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modules", action="store_true", help="every module and its imports")
    args = ap.parse_args()
    if args.modules:
        for m, deps in sorted(_graph().items()):
            print(m, "->", ", ".join(sorted(deps)) or "-")
    else:
        print(mermaid())


if __name__ == "__main__":
    main()
