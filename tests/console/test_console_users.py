"""Operators file and the ``hedui console`` command line: argon2 hashes, passwords never on
the command line, roles, the loopback/TLS rule for the listen address."""

from __future__ import annotations

import json
import os

import pytest
from typer.testing import CliRunner

from hedui.node.cli._app import app
from hedui.node.console.auth import UserStore, may
from hedui.node.errors import ConfigError, InvalidArgument

runner = CliRunner()
GOOD = "Zhang-min-2026"


def _cli(*args, input=None):
    return runner.invoke(app, ["console", *args], input=input)


def test_users_add_list_passwd_disable(tmp_path):
    users = tmp_path / "console-users.toml"
    pw = tmp_path / "pw"
    pw.write_text(GOOD + "\n")
    r = _cli("users", "add", "cw01", "--role", "caseworker", "--display-name", "张敏", "--password-file", str(pw),
             "--users", str(users))
    assert r.exit_code == 0, r.output
    text = users.read_text()
    assert GOOD not in text and "$argon2id$" in text
    assert oct(users.stat().st_mode & 0o777) == "0o600"
    # from a descriptor, as a provisioning script would pass it
    rfd, wfd = os.pipe()
    os.write(wfd, b"Reviewer-pass-99\n")
    os.close(wfd)
    try:
        r = _cli("users", "add", "rv01", "--role", "reviewer", "--password-fd", str(rfd), "--users", str(users))
    finally:
        os.close(rfd)
    assert r.exit_code == 0, r.output
    r = _cli("users", "list", "--json", "--users", str(users))
    rows = json.loads(r.stdout)
    assert [(u["name"], u["role"], u["disabled"]) for u in rows] == [("cw01", "caseworker", False), ("rv01", "reviewer", False)]
    assert "argon2" not in r.stdout
    store = UserStore(users)
    from argon2 import PasswordHasher

    assert PasswordHasher().verify(store.get("rv01").password_hash, "Reviewer-pass-99")
    pw.write_text("Another-pass-11")
    assert _cli("users", "passwd", "cw01", "--password-file", str(pw), "--users", str(users)).exit_code == 0
    assert PasswordHasher().verify(store.get("cw01").password_hash, "Another-pass-11")
    assert _cli("users", "disable", "cw01", "--users", str(users)).exit_code == 0
    assert store.get("cw01").disabled
    assert _cli("users", "enable", "cw01", "--users", str(users)).exit_code == 0
    assert not store.get("cw01").disabled


@pytest.mark.parametrize("args, message", [
    (["--role", "admin"], "role: got 'admin'"),
    (["--role", "caseworker", "--password-file", "WEAK"], "password: got"),
])
def test_users_add_refusals(tmp_path, args, message):
    weak = tmp_path / "weak"
    weak.write_text("short")
    args = [str(weak) if a == "WEAK" else a for a in args]
    if "--password-file" not in args:
        good = tmp_path / "good"
        good.write_text(GOOD)
        args += ["--password-file", str(good)]
    r = _cli("users", "add", "cw09", *args, "--users", str(tmp_path / "u.toml"))
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "u.toml").exists()


def test_password_is_never_an_argument_and_prompt_needs_a_terminal(tmp_path):
    r = _cli("users", "add", "cw01", "--role", "caseworker", "--password", GOOD, "--users", str(tmp_path / "u.toml"))
    assert r.exit_code != 0  # no such option
    r = _cli("users", "add", "cw01", "--role", "caseworker", "--users", str(tmp_path / "u.toml"))
    assert r.exit_code != 0 and "no terminal" in r.output


def test_users_file_errors_are_one_line(tmp_path):
    f = tmp_path / "u.toml"
    f.write_text('[[users]]\nname = "cw01"\nrole = "boss"\npassword_hash = "$argon2id$x"\n')
    with pytest.raises(ConfigError, match=r"users\[0\]\.role: got 'boss'"):
        UserStore(f).users()
    f.write_text('[[users]]\nname = "cw01"\nrole = "caseworker"\npassword_hash = "plain"\n')
    with pytest.raises(ConfigError, match="password_hash"):
        UserStore(f).users()
    j = tmp_path / "u.json"
    store = UserStore(j)
    store.set_user("sv01", role="supervisor", password=GOOD, create=True)
    assert json.loads(j.read_text())["users"][0]["role"] == "supervisor"
    with pytest.raises(InvalidArgument, match="exists"):
        store.set_user("sv01", role="supervisor", password=GOOD, create=True)


def test_permission_table():
    assert may("caseworker", "case.open") and not may("reviewer", "case.open")
    assert may("reviewer", "case.review") and not may("caseworker", "case.review")
    assert may("supervisor", "referral.escalate") and not may("caseworker", "referral.escalate")
    assert not may("reviewer", "lead.details") and not may("reviewer", "identity.show")
    assert not may("nobody", "case.view") and not may("supervisor", "no.such.permission")


@pytest.mark.parametrize("listen, ok", [
    ("127.0.0.1:8443", True), ("0.0.0.0:8443", False), ("192.0.2.10:8443", False), ("localhost:8443", True),
    ("[::1]:8443", True), ("127.0.0.1:99999", False), ("nohost", False),
])
def test_listen_address_rule(listen, ok):
    from typer import Exit

    from hedui.node.cli.console import check_listen

    if ok:
        assert check_listen(listen, tls=False, insecure_http=False)[2] is True
    else:
        with pytest.raises(Exit):
            check_listen(listen, tls=False, insecure_http=False)


def test_network_address_needs_tls_or_explicit_insecure_http(tmp_path):
    from hedui.node.cli.console import check_listen

    assert check_listen("192.0.2.10:8443", tls=True, insecure_http=False) == ("192.0.2.10", 8443, True)
    # plain HTTP on the network: allowed only when asked, and then without Secure cookies
    assert check_listen("192.0.2.10:8443", tls=False, insecure_http=True) == ("192.0.2.10", 8443, False)
    cfg = tmp_path / "node.toml"  # never read: the address is refused first
    r = _cli("--config", str(cfg), "--listen", "0.0.0.0:8443")
    assert r.exit_code != 0 and "without TLS" in r.output and "Traceback" not in r.output
