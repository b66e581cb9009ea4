"""The shape of the code (DESIGN.md "Layout and imports", issue 11), read from the source
with ``ast``: the import graph of ``hedui.*`` is a tree, the ground floor imports nothing above
it, one module knows the identity-number shape, crypto goes through ``keys/``, and features
meet only in the platform that wires them."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
assert _spec is not None and _spec.loader is not None
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)

MODULES: dict[str, Path] = import_graph.MODULES
_imports = import_graph._imports
_graph = import_graph._graph
_cycle = import_graph._cycle


def test_the_scan_sees_the_whole_tree():
    assert len(MODULES) > 80
    assert {"hedui.common.errors", "hedui.adapters.idnum", "hedui.node.verification.protocol",
            "hedui.node.discovery.notice", "hedui.node.audit.entry", "hedui.node.loops"} <= set(MODULES)
    g = _graph()
    assert "hedui.node.errors" in g["hedui.node.rpc"] and "hedui.common.errors" in g["hedui.node.errors"]


def test_import_graph_has_no_cycles():
    assert _cycle(_graph()) is None, " -> ".join(_cycle(_graph()) or [])


def test_the_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


# What each ground-floor package may import from hedui, anywhere in its code (functions too).
GROUND = {
    "hedui.common": ("hedui.common",),
    "hedui.adapters": ("hedui.common", "hedui.adapters"),
    # keys/oprf.py normalises the OPRF input through the one identity guard: the same number
    # in any written form must give the same pseudonym (RFC 9497 input is the canonical bytes).
    "hedui.keys": ("hedui.common", "hedui.keys", "hedui.v1", "hedui.adapters.idnum"),
}


@pytest.mark.parametrize("package", sorted(GROUND))
def test_ground_floor_imports_nothing_above_it(package):
    allowed = GROUND[package]
    bad = {
        (m, i)
        for m, p in MODULES.items() if m == package or m.startswith(package + ".")
        for i in _imports(p, top_level_only=False)
        if not any(i == a or i.startswith(a + ".") for a in allowed)
    }
    assert not bad, sorted(bad)


# A digit run of identity length in a regular expression: \d{15}, [0-9]{17}, [...]{14} ...
_DIGIT_RUN = re.compile(r"(\\d|[\])])\{1[4-8][,}]")


def _strings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes)):
            out.append(node.value if isinstance(node.value, str) else node.value.decode("latin-1"))
    return out


def test_one_module_knows_the_identity_shape():
    holders = sorted(m for m, p in MODULES.items() if any(_DIGIT_RUN.search(s) for s in _strings(p)))
    assert holders == ["hedui.adapters.idnum"], holders


def test_the_shape_finder_is_not_blind(tmp_path):
    for text in (r"re.compile(r'\d{15,}')", r"X = '[0-9]{17}[0-9Xx]'", "P = f'[{D}]{{14}}'", "Q = f'(?:{G}[{D}]){{16}}'"):
        p = tmp_path / "x.py"
        p.write_text(text + "\n", encoding="utf-8")
        assert any(_DIGIT_RUN.search(s) for s in _strings(p)), text


# Modules outside keys/ that may touch cryptography primitives, and why.
CRYPTO_ALLOWED = {
    # c2sp.org/signed-note and tlog-cosignature: Ed25519 over the note's own byte layout and key
    # ids, verified against published vectors; kept as it is (issue 11).
    "hedui.node.audit.note",
}


def test_cryptography_only_through_keys():
    bad = []
    for m, p in MODULES.items():
        if m.startswith("hedui.keys") or m in CRYPTO_ALLOWED:
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "cryptography" or n.startswith("cryptography.") for n in names):
                bad.append(m)
    assert not bad, bad


def test_only_the_server_imports_a_servicer():
    """Features never import each other's servicers, and the hub side never imports a
    ``service.py``: the protocol modules are what both ends share."""
    services = {m for m in MODULES if m.endswith(".service") or m == "hedui.node.node_service"}
    assert {"hedui.node.verification.service", "hedui.node.discovery.service", "hedui.node.audit.service"} <= services
    importers = {m for m, p in MODULES.items() for i in _imports(p, top_level_only=False) if i in services and i != m}
    assert importers == {"hedui.node.server"}, importers


def test_no_service_locator():
    """Role state lives in typed runtime slots, never under string keys."""
    hits = [m for m, p in MODULES.items() if re.search(r"\.extras\b", p.read_text(encoding="utf-8"))]
    assert not hits, hits
