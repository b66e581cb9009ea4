"""Issue 17 item 7: what docs/operations.md, docs/grafana-dashboard.json and the policy
example of docs/federation.md say holds — every metric they name exists on a node, and the
policy example runs a case."""

from __future__ import annotations

import datetime as _dt
import json
import re
import tomllib
from pathlib import Path

import pytest

from hedui.adapters.synthetic import resident
from hedui.common.clock import FixedClock
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.verification.cases import consent_digest_of, open_case, run_case

DOCS = Path(__file__).resolve().parent.parent / "docs"
NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
SEED = 7


@pytest.fixture
def bed(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"])],
                 clock=FixedClock(NOW), residents=40, data_seed=SEED)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    yield tb
    tb.stop()


def _exported(rt) -> set[str]:
    names: set[str] = set()
    for fam in rt.metrics.registry.collect():
        names.add(fam.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"], "info": ["_info"]}.get(fam.type, [])
        names.update(fam.name + s for s in suffixes)
        names.update(s.name for s in fam.samples)
    return names


def _named(text: str) -> set[str]:
    return set(re.findall(r"\bhedui_[a-z_]+\b", text))


def test_dashboard_and_alert_rules_name_only_metrics_a_node_exports(bed):
    bed.build_indexes(["tax"])
    bed.start()
    have = _exported(bed.runtime("tax")) | _exported(bed.runtime("hub"))
    dash = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    assert _named(exprs) and not (_named(exprs) - have), sorted(_named(exprs) - have)
    ops = (DOCS / "operations.md").read_text(encoding="utf-8")
    rules = re.search(r"```yaml\n(.*?)```", ops, re.S)
    assert rules is not None
    assert not (_named(rules.group(1)) - have), sorted(_named(rules.group(1)) - have)
    table = ops[ops.index("## Monitoring"):ops.index("```yaml")]
    assert not (_named(table) - have), sorted(_named(table) - have)


def test_the_federation_policy_example_runs_a_case(bed):
    fed_md = (DOCS / "federation.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```toml\n(.*?)```", fed_md, re.S) if "[[policy]]" in b)
    policy = tomllib.loads(block)["policy"]
    assert {r["method"] for r in policy if r["caller"] == "hub"} >= {
        "/hedui.v1.PseudonymService/Evaluate", "/hedui.v1.LookupService/Lookup"}
    bed.policy = policy
    bed.sign_directory()
    bed.build_indexes(["tax"])
    bed.start()
    hub = bed.runtime("hub")
    ref = open_case(hub, [(resident(1, SEED).id_number, "member")], purpose="dibao",
                    consent_digest=consent_digest_of(b"scan"), operator="cw01", region="370304")
    assert [(o.provider, o.status) for o in run_case(hub, ref).outcomes] == [("tax", "ok")]
    # Without the Evaluate rule (the old example) the same case cannot finish.
    bed.stop()
    bed.version = 2
    bed.policy = [r for r in policy if not r["method"].endswith("/Evaluate")]
    bed.sign_directory()
    bed.start()
    hub = bed.runtime("hub")
    ref = open_case(hub, [(resident(1, SEED).id_number, "member")], purpose="dibao",
                    consent_digest=consent_digest_of(b"scan 2"), operator="cw01", region="370304")
    assert [o.status for o in run_case(hub, ref).outcomes] == ["refused"]


def test_demo_answers_readyz_and_a_scrape_on_every_node(tmp_path, monkeypatch):
    from hedui.node.testbed.demo import run_demo

    summary = run_demo(tmp_path / "demo", say=lambda *a, **k: None, residents=300)
    ops = {s["name"]: s["result"] for s in summary["steps"]}["operations"]
    m = re.match(r"/readyz 200 on (\d+) of (\d+) nodes; Prometheus scrape: (\d+) metric families", ops)
    assert m is not None, ops
    assert m.group(1) == m.group(2) == str(len(summary["members"])) and int(m.group(3)) >= 20
