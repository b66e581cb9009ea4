"""Passphrases (issue 18, finding 2): from a file or a descriptor, the environment still
accepted but scrubbed once read (not in ``/proc/<pid>/environ``, not inherited); the CA and
the directory-signing key under separate passphrases; ``hedui keys rekey`` on the CLI; the
hub's person secret encrypted (finding 4)."""

from __future__ import annotations

import datetime as _dt
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hedui.common.clock import FixedClock
from hedui.keys import federation as fed
from hedui.keys import keyfile, passphrase
from hedui.keys.errors import KeyFileError
from hedui.keys.signing import SigningKey
from hedui.node.errors import ConfigError
from hedui.node.testbed import DEFAULT_MEMBERS, MemberPlan, Testbed

NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)
SECRET = "s3cret-passphrase-in-env"


@pytest.fixture(autouse=True)
def _fresh():
    passphrase.forget()
    yield
    passphrase.forget()


def test_env_passphrase_is_removed_from_the_process_environment():
    """In a child process (its own /proc/self/environ): read the variable, then look for it."""
    code = textwrap.dedent("""
        import os, sys
        from hedui.keys.passphrase import passphrase
        before = open("/proc/self/environ", "rb").read()
        assert sys.argv[1].encode() in before  # the attack of finding 2: it was there
        pw = passphrase()
        after = open("/proc/self/environ", "rb").read()
        child = os.popen("env").read()
        print(pw.decode(), "HEDUI_KEY_PASSPHRASE" in os.environ, sys.argv[1].encode() in after, sys.argv[1] in child)
    """)
    env = {**os.environ, "HEDUI_KEY_PASSPHRASE": SECRET}
    out = subprocess.run([sys.executable, "-c", code, SECRET], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [SECRET, "False", "False", "False"]


def test_env_passphrase_read_once_then_kept_in_memory(monkeypatch):
    monkeypatch.setenv("HEDUI_KEY_PASSPHRASE", SECRET)
    assert passphrase.passphrase() == SECRET.encode()
    assert "HEDUI_KEY_PASSPHRASE" not in os.environ
    assert passphrase.passphrase() == SECRET.encode()  # a second key in the same process


def test_passphrase_from_fd_and_file(tmp_path):
    r, w = os.pipe()
    os.write(w, b"from a pipe 123\n")
    os.close(w)
    assert passphrase.read_fd(r) == b"from a pipe 123"
    with pytest.raises(OSError):
        os.fstat(r)  # closed after reading
    f = tmp_path / "pw"
    f.write_bytes(b"from a file 123\r\n")
    assert passphrase.read_file(f) == b"from a file 123"
    with pytest.raises(KeyFileError, match="--passphrase-fd: got -1"):
        passphrase.read_fd(-1)


def test_given_passphrase_wins_and_does_not_stand_in_for_the_ca(monkeypatch):
    monkeypatch.setenv("HEDUI_KEY_PASSPHRASE", SECRET)
    passphrase.provide(b"given on the command line")
    assert passphrase.passphrase() == b"given on the command line"
    monkeypatch.delenv("HEDUI_CA_PASSPHRASE", raising=False)
    monkeypatch.delenv("HEDUI_CA_PASSPHRASE_FILE", raising=False)
    with pytest.raises(KeyFileError, match="HEDUI_CA_PASSPHRASE"):
        passphrase.passphrase(env=passphrase.CA_PASSPHRASE_ENV)
    with pytest.raises(KeyFileError, match="at least 8"):
        passphrase.provide(b"short")


def test_ca_and_directory_keys_have_separate_passphrases(tmp_path):
    with pytest.raises(KeyFileError, match="directory passphrase: got the CA passphrase again"):
        fed.init_authority(tmp_path / "a", "CA", b"same passphrase", b"same passphrase", now=NOW)
    a = fed.init_authority(tmp_path / "b", "CA", b"ca passphrase", b"directory passphrase", now=NOW)
    assert keyfile.parse(a.ca_key.read_bytes()).purpose == "ca-key"
    assert keyfile.parse(a.signing_key.read_bytes()).purpose == "directory-signing-key"
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        SigningKey.load("authority", a.signing_key, b"ca passphrase", purpose="directory-signing-key")
    # The directory key cannot be passed off as a member's signing key, nor the reverse.
    with pytest.raises(KeyFileError, match="purpose: got 'directory-signing-key', want 'signing-key'"):
        SigningKey.load("authority", a.signing_key, b"directory passphrase")


def _cli(args, **kw):
    from hedui.node.cli._app import app

    return CliRunner().invoke(app, args, **kw)


def test_cli_rekey_with_passphrase_files(tmp_path, monkeypatch):
    for v in ("HEDUI_KEY_PASSPHRASE", "HEDUI_NEW_KEY_PASSPHRASE"):
        monkeypatch.delenv(v, raising=False)
    key = tmp_path / "tls.key"
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keyfile.save_private_key(key, Ed25519PrivateKey.generate(), b"old passphrase", purpose="tls-key")
    (tmp_path / "old").write_text("old passphrase\n")
    (tmp_path / "new").write_text("new passphrase\n")
    r = _cli(["--passphrase-file", str(tmp_path / "old"), "keys", "rekey", str(key),
              "--new-passphrase-file", str(tmp_path / "new"), "--json"])
    assert r.exit_code == 0, r.output
    assert '"new_passphrase": true' in r.output and '"purpose": "tls-key"' in r.output
    keyfile.load_private_key(key, b"new passphrase", purpose="tls-key")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keyfile.load_private_key(key, b"old passphrase", purpose="tls-key")


def test_cli_init_authority_refuses_one_passphrase_for_both(tmp_path, monkeypatch):
    monkeypatch.setenv("HEDUI_CA_PASSPHRASE", "one passphrase")
    monkeypatch.setenv("HEDUI_DIRECTORY_PASSPHRASE", "one passphrase")
    r = _cli(["keys", "init-authority", "--dir", str(tmp_path / "a")])
    assert r.exit_code == 1 and "got the CA passphrase again" in r.output
    assert "HEDUI_CA_PASSPHRASE" not in os.environ and "HEDUI_DIRECTORY_PASSPHRASE" not in os.environ


# ---------------------------------------------------------------- the hub's person secret


@pytest.fixture
def hub_bed(tmp_path, monkeypatch):
    members = [MemberPlan(m.code, m.name, list(m.roles)) for m in DEFAULT_MEMBERS if "hub" in m.roles][:1]
    tb = Testbed(tmp_path / "fed", members, clock=FixedClock(NOW))
    tb.create()
    monkeypatch.setenv("HEDUI_KEY_PASSPHRASE", tb.passphrase)
    return tb, members[0].code


def test_person_secret_is_encrypted_at_rest(hub_bed):
    tb, code = hub_bed
    path = tb.member_dir(code) / "person.secret"
    assert keyfile.parse(path.read_bytes()).purpose == "hedui-person-secret"
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        keyfile.load_secret(path, b"a guessed passphrase", label="hedui-person-secret")


def test_plaintext_person_secret_is_migrated_at_start(hub_bed):
    from hedui.node.runtime import Runtime

    tb, code = hub_bed
    path: Path = tb.member_dir(code) / "person.secret"
    path.write_bytes(b"q" * 32)  # as installations before issue 18 kept it
    rt = Runtime.open(tb.config_path(code), clock=FixedClock(NOW))
    try:
        assert rt.hub is not None and rt.hub.discovery is not None
        assert rt.hub.discovery._secret == b"q" * 32  # same secret: existing leads still merge
    finally:
        rt.close()
    assert b"q" * 32 not in path.read_bytes() and path.stat().st_mode & 0o777 == 0o600
    assert keyfile.load_secret(path, tb.passphrase.encode(), label="hedui-person-secret") == b"q" * 32


def test_node_reads_a_legacy_key_with_a_warning_and_refuses_it_when_strict(hub_bed, caplog):
    """Downgrade: an old-format (PBKDF2) key file swapped in for the node's signing key."""
    import logging
    import tomllib

    import tomli_w
    from cryptography.hazmat.primitives import serialization

    from hedui.node.runtime import Runtime

    tb, code = hub_bed
    md = tb.member_dir(code)
    pw = tb.passphrase.encode()
    key = SigningKey.load(code, md / "signing.key", pw)
    (md / "signing.key").write_bytes(key.private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(pw)
    ))
    with caplog.at_level(logging.WARNING, logger="hedui.keys"):
        Runtime.open(tb.config_path(code), clock=FixedClock(NOW)).close()
    assert any("signing.key" in r.getMessage() and "rekey" in r.getMessage() for r in caplog.records)
    # What `hedui node check` lists (it opens the runtime the same way, with the wall clock).
    assert any(f.endswith(str(md / "signing.key")) for f in keyfile.legacy_seen())
    cfg = tomllib.loads(tb.config_path(code).read_text(encoding="utf-8"))
    cfg["keys"]["allow_legacy"] = False
    tb.config_path(code).write_text(tomli_w.dumps(cfg), encoding="utf-8")
    with pytest.raises(ConfigError, match="got an older PKCS#8 PBES2"):
        Runtime.open(tb.config_path(code), clock=FixedClock(NOW))


def test_cli_passphrase_fd(tmp_path, monkeypatch):
    monkeypatch.delenv("HEDUI_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("HEDUI_KEY_PASSPHRASE_FILE", raising=False)
    path = tmp_path / "secret.bin"
    keyfile.save_secret(path, b"x" * 32, b"through a pipe", label="hedui-oprf-seed")
    r, w = os.pipe()
    os.write(w, b"through a pipe\n")
    os.close(w)
    res = _cli(["--passphrase-fd", str(r), "keys", "rekey", str(path), "--json"])
    assert res.exit_code == 0, res.output
    assert '"purpose": "hedui-oprf-seed"' in res.output and '"was": "v1"' in res.output
    assert keyfile.load_secret(path, b"through a pipe", label="hedui-oprf-seed") == b"x" * 32
    with pytest.raises(OSError):
        os.fstat(r)  # read to its end and closed


def test_encrypted_person_secret_needs_the_passphrase_outside_a_node(hub_bed):
    """`hedui leads … --db --hub-config` opens the hub file without a node: the key passphrase
    is asked for only because the person secret is encrypted."""
    from hedui.node.discovery.hub import Hub

    tb, code = hub_bed
    md = tb.member_dir(code)
    public = (md / "sealing.pub").read_bytes()
    asked = []

    def pw() -> bytes:
        asked.append(1)
        return tb.passphrase.encode()

    hub = Hub.from_config(None, md / "hub-discovery.toml", sealing_public=public, clock=FixedClock(NOW), passphrase=pw)  # type: ignore[arg-type]
    assert asked == [1] and len(hub._secret) == 32
    with pytest.raises(ConfigError, match="is encrypted; want the key passphrase"):
        Hub.from_config(None, md / "hub-discovery.toml", sealing_public=public, clock=FixedClock(NOW))  # type: ignore[arg-type]
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        Hub.from_config(None, md / "hub-discovery.toml", sealing_public=public, clock=FixedClock(NOW), passphrase=b"not it at all")  # type: ignore[arg-type]
