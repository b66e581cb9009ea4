"""Issue 17 item 5: ``--version``, ``node status``, ``keys show``, ``node check`` finding
what ``serve`` would refuse, and ``node probe`` telling a closed firewall from a rejected
certificate from a call that is not allowed."""

from __future__ import annotations

import datetime as _dt
import json
import re
from importlib import metadata

import pytest
import tomli_w
from typer.testing import CliRunner

from hedui.common.clock import FixedClock
from hedui.keys import federation as fed
from hedui.keys.ca import cert_fingerprint, load_cert
from hedui.keys.keyfile import PASSPHRASE_ENV
from hedui.keys.sealing import SealingKey
from hedui.node.cli._app import app
from hedui.node.config import load_config
from hedui.node.probe import probe
from hedui.node.status import node_status
from hedui.node.testbed import MemberPlan, Testbed
from hedui.node.testbed.federation import free_port

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
runner = CliRunner()


@pytest.fixture
def bed(tmp_path, monkeypatch):
    tb = Testbed(tmp_path / "fed", [MemberPlan("hub", "hub", ["hub"]), MemberPlan("tax", "tax", ["provider"]),
                                    MemberPlan("hrss", "hrss", ["provider"])], clock=FixedClock(NOW), residents=40)
    tb.create()
    monkeypatch.setenv(PASSPHRASE_ENV, tb.passphrase)
    yield tb
    tb.stop()


def test_version_prints_the_installed_version():
    r = runner.invoke(app, ["--version"])
    assert r.exit_code == 0
    assert r.stdout.startswith(f"hedui {metadata.version('hedui')} ")


def test_sealing_init_prints_the_whole_key_and_keys_show_prints_it_again(tmp_path, monkeypatch):
    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase long enough")
    out = tmp_path / "sealing.key"
    r = runner.invoke(app, ["keys", "sealing-init", "--out", str(out)])
    assert r.exit_code == 0, r.output
    printed = re.search(r'sealing_key_hex = "([0-9a-f]+)"', r.stdout.replace("\n", ""))
    assert printed is not None
    want = SealingKey.load(out, b"a passphrase long enough").public_bytes().hex()
    assert printed.group(1) == want and len(want) == 2 * (1184 + 32)   # ML-KEM-768 + X25519 public keys
    monkeypatch.setenv(PASSPHRASE_ENV, "a passphrase long enough")
    r = runner.invoke(app, ["keys", "show", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["sealing_key_hex"] == want


def test_keys_show_certificate_and_public_key(bed):
    crt = bed.member_dir("tax") / "tls.crt"
    r = runner.invoke(app, ["keys", "show", str(crt), "--json"])
    doc = json.loads(r.stdout)
    assert (doc["kind"], doc["subject"], doc["sha256"]) == ("certificate", "tax", cert_fingerprint(load_cert(crt)).hex())
    r = runner.invoke(app, ["keys", "show", str(bed.member_dir("tax") / "signing.pub"), "--json"])
    from hedui.keys.signing import load_public

    assert json.loads(r.stdout)["public_key_hex"] == load_public("tax", bed.member_dir("tax") / "signing.pub").raw.hex()


def test_keys_show_refuses_other_files(tmp_path):
    f = tmp_path / "x.txt"
    f.write_text("hello")
    r = runner.invoke(app, ["keys", "show", str(f)])
    assert r.exit_code != 0 and "want a certificate, a public key or a hedui key file" in r.output


def test_node_status_reports_directory_index_outbox_peers(bed):
    bed.build_indexes(["tax"])
    later = FixedClock(NOW + _dt.timedelta(hours=2))
    st = node_status(load_config(bed.config_path("tax")), later)
    d = st["directory"]
    assert d["valid"] and d["version"] == 1
    assert d["seconds_to_expiry"] == 30 * 86400 - 2 * 3600   # signed at NOW for valid_days=30
    idx = st["store"]["index"]
    assert [i["source"] for i in idx] and all(i["status"] == "done" and i["epoch"] == 1 for i in idx)
    assert all(i["age_seconds"] == 7200 for i in idx)
    assert st["store"]["outbox"]["pending"] == 0
    assert {p["code"] for p in st["peers"]} == {"hub", "hrss"}
    # Past expiry the directory is reported invalid, with the reason.
    st = node_status(load_config(bed.config_path("tax")), FixedClock(NOW + _dt.timedelta(days=31)))
    assert st["directory"]["valid"] is False and st["directory"]["reason"] == "DIRECTORY_EXPIRED"


def test_node_check_refuses_a_hub_without_routing_that_peers_push_to(bed):
    p = bed.config_path("hub")
    doc = __import__("tomllib").loads(p.read_text())
    doc["hub"].pop("routing", None)
    p.write_text(tomli_w.dumps(doc))
    r = runner.invoke(app, ["node", "check", "-c", str(p), "--json"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert any(x.startswith("hub.routing: got none") for x in out["problems"])


def test_node_check_reports_an_unreachable_store_and_exits_1(bed):
    p = bed.config_path("tax")
    doc = __import__("tomllib").loads(p.read_text())
    doc["store"]["url"] = f"postgresql+psycopg://nobody@127.0.0.1:{free_port()}/none"
    p.write_text(tomli_w.dumps(doc))
    r = runner.invoke(app, ["node", "check", "-c", str(p), "--json"])
    assert r.exit_code == 1
    assert any("store.url" in x for x in json.loads(r.stdout)["problems"])


def _ident(bed, code):
    rt = bed.runtime(code)
    return dict(ca_pem=rt.ca_pem, cert_pem=rt.tls_cert_pem, key_pem=rt.tls_key_pem)


def test_probe_ok_and_the_three_failure_kinds(bed, tmp_path):
    bed.start(["hub", "tax"])
    hub = bed.runtime("hub")
    r = probe(hub.directory, "hub", "tax", **_ident(bed, "hub"))
    assert r.verdict == "ok", r.steps
    assert [s["step"] for s in r.steps] == ["directory", "dns", "tcp", "tls", "mtls", "policy"]
    # Firewall closed: hrss is in the directory but nothing answers on its port.
    r = probe(hub.directory, "hub", "hrss", **_ident(bed, "hub"))
    assert r.verdict == "firewall_closed" and r.steps[-1]["step"] == "tcp"
    # Not allowed: tax reaches hrss... no: tax reaches hub over mTLS, but the directory gives
    # providers no rule at one another; probe tax -> tax's peer "tax" is the server we run.
    tax = bed.runtime("tax")
    r = probe(tax.directory, "hrss", "tax", **_ident(bed, "tax"))
    assert r.verdict == "not_allowed", r.steps
    assert [s["ok"] for s in r.steps] == [True, True, True, True, True, False]
    # Certificate rejected: a client certificate from another CA; the server's TLS is fine.
    pw = b"another passphrase"
    other = fed.init_authority(tmp_path / "otherca", "Other", pw, pw + b" dir", now=NOW)
    m = fed.init_member(tmp_path / "mallory", "hub", "127.0.0.1", pw)
    fed.issue_cert(other, m.tls_csr, m.tls_cert, pw, now=NOW)
    r = probe(hub.directory, "hub", "tax", ca_pem=hub.ca_pem, cert_pem=m.tls_cert.read_bytes(),
              key_pem=fed.load_tls_key_pem(m.tls_key, pw))
    assert r.verdict == "certificate_rejected", r.steps
    assert [s["step"] for s in r.steps if s["ok"]] == ["directory", "dns", "tcp", "tls"]


def test_probe_unknown_member_stops_at_the_directory(bed):
    bed.start(["hub"])
    hub = bed.runtime("hub")
    r = probe(hub.directory, "hub", "nobody", **_ident(bed, "hub"))
    assert r.verdict == "not_in_directory" and len(r.steps) == 1
