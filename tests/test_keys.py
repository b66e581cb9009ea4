"""Federation keys: CA, CSR → certificate, encrypted keys, DSSE, signed directory."""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import datetime as dt
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedui.common.clock import FixedClock
from hedui.keys import dsse
from hedui.keys import federation as fed
from hedui.keys.ca import check_issued_by, load_cert, member_of_cert
from hedui.keys.directory import DirectorySpec, build, load_directory, verify_directory
from hedui.keys.keyfile import PASSPHRASE_ENV, PASSPHRASE_FILE_ENV, load_secret, passphrase, save_secret
from hedui.keys.passphrase import forget
from hedui.keys.signing import SigningKey, load_public
from hedui.node.errors import ConfigError, VerificationError
from hedui.node.testbed import DEFAULT_MEMBERS, MemberPlan, Testbed

# Certificates and directories are issued and checked at a fixed instant, never the wall clock.
NOW = _dt.datetime(2026, 11, 30, 3, 0, tzinfo=_dt.UTC)

PW = b"correct horse battery"


@pytest.fixture
def tb(tmp_path, monkeypatch):
    members = [MemberPlan(m.code, m.name, list(m.roles)) for m in DEFAULT_MEMBERS[:2]]
    t = Testbed(tmp_path / "fed", members, clock=FixedClock(NOW))
    t.create()
    monkeypatch.setenv(PASSPHRASE_ENV, t.passphrase)
    return t


def test_member_cert_has_both_ekus_and_san(tb):
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    cert = load_cert(tb.member_dir("tax") / "tls.crt")
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert member_of_cert(cert) == "tax"
    check_issued_by(cert, load_cert(tb.authority.ca_cert), now=NOW)


def test_private_keys_are_encrypted_on_disk(tb):
    for p in [tb.authority.ca_key, tb.authority.signing_key, tb.member_dir("tax") / "tls.key", tb.member_dir("tax") / "signing.key"]:
        text = p.read_text()
        # keys/keyfile.py format v1 (scrypt + AES-256-GCM), not the PBKDF2 PKCS#8 of before (issue 18).
        assert text.startswith("-----BEGIN HEDUI ENCRYPTED KEY-----") and "PRIVATE KEY" not in text, p
        assert oct(p.stat().st_mode & 0o777) == "0o600"


def test_wrong_passphrase_is_a_clear_error(tb):
    with pytest.raises(ConfigError, match="wrong passphrase"):
        SigningKey.load("tax", tb.member_dir("tax") / "signing.key", b"not the passphrase")


def test_missing_passphrase_names_both_sources(monkeypatch):
    forget()  # a passphrase read earlier in this process is kept in memory
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)
    with pytest.raises(ConfigError) as e:
        passphrase()
    assert PASSPHRASE_ENV in e.value.message and PASSPHRASE_FILE_ENV in e.value.message


def test_passphrase_from_file(tmp_path, monkeypatch):
    forget()
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    f = tmp_path / "pw"
    f.write_text("from-a-file-123\n")
    monkeypatch.setenv(PASSPHRASE_FILE_ENV, str(f))
    assert passphrase() == b"from-a-file-123"


def test_secret_roundtrip_and_wrong_passphrase(tmp_path):
    save_secret(tmp_path / "s", b"\x01" * 32, PW, label="oprf-seed")
    assert load_secret(tmp_path / "s", PW, label="oprf-seed") == b"\x01" * 32
    with pytest.raises(ConfigError, match="wrong passphrase"):
        load_secret(tmp_path / "s", b"other passphrase", label="oprf-seed")
    with pytest.raises(ConfigError, match="purpose: got 'oprf-seed', want 'something-else'"):
        load_secret(tmp_path / "s", PW, label="something-else")
    (tmp_path / "bad").write_text("{not json")
    with pytest.raises(ConfigError, match="unreadable"):
        load_secret(tmp_path / "bad", PW, label="oprf-seed")


def test_csr_from_another_federation_is_rejected_by_directory(tb, tmp_path):
    other = fed.init_authority(tmp_path / "other", "Other CA", PW, PW + b" dir", now=NOW)
    m = fed.init_member(tmp_path / "mallory", "tax", "127.0.0.1", PW)
    fed.issue_cert(other, m.tls_csr, m.tls_cert, PW, now=NOW)
    with pytest.raises(VerificationError, match="not issued by federation CA"):
        check_issued_by(load_cert(m.tls_cert), load_cert(tb.authority.ca_cert), now=NOW)
    # Swap the foreign cert into the spec: signing the directory must refuse it.
    (tb.member_dir("tax") / "tls.crt").write_bytes(m.tls_cert.read_bytes())
    with pytest.raises(VerificationError, match="not issued by federation CA"):
        build(DirectorySpec.load(tb.spec_path), now=NOW)


def test_tampered_csr_is_refused(tb, tmp_path):
    m = fed.init_member(tmp_path / "m2", "vehicles", "127.0.0.1", tb.passphrase.encode())
    pem = m.tls_csr.read_bytes()
    body = bytearray(pem)
    # Flip a character in the base64 body (not in the header line).
    i = pem.index(b"\n") + 40
    body[i] = ord("A") if body[i] != ord("A") else ord("B")
    m.tls_csr.write_bytes(bytes(body))
    with pytest.raises(ConfigError):
        fed.issue_cert(tb.authority, m.tls_csr, tmp_path / "x.crt", tb.ca_passphrase.encode(), now=NOW)


def test_refuses_to_overwrite_keys(tb):
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        fed.init_authority(tb.authority.root, "again", tb.ca_passphrase.encode(), tb.directory_passphrase.encode(), now=NOW)


def _authority(tb):
    return load_public("authority", tb.authority.signing_pub)


def test_directory_verifies_and_lists_members(tb):
    td = load_directory(tb.directory_path, _authority(tb), now=NOW)
    assert td.version == 1 and set(td.by_code) == {"hub", "tax"}


def test_directory_bad_signature(tb):
    env = dsse.from_json(tb.directory_path.read_text())
    env.signatures[0].sig = bytes([env.signatures[0].sig[0] ^ 1]) + env.signatures[0].sig[1:]
    with pytest.raises(VerificationError) as e:
        verify_directory(env, _authority(tb), now=NOW)
    assert e.value.reason == "BAD_SIGNATURE"


def test_directory_payload_flip(tb):
    env = dsse.from_json(tb.directory_path.read_text())
    env.payload = env.payload[:-1] + bytes([env.payload[-1] ^ 1])
    with pytest.raises(VerificationError):
        verify_directory(env, _authority(tb), now=NOW)


def test_directory_signed_by_someone_else(tb):
    env = dsse.from_json(tb.directory_path.read_text())
    rogue = SigningKey.generate("authority")
    forged = dsse.sign(dsse.DIRECTORY, env.payload, [rogue])
    with pytest.raises(VerificationError) as e:
        verify_directory(forged, _authority(tb), now=NOW)
    assert e.value.reason == "UNKNOWN_SIGNER"


def test_directory_expired_and_rollback(tb):
    env = dsse.from_json(tb.directory_path.read_text())
    later = NOW + dt.timedelta(days=31)
    with pytest.raises(VerificationError) as e:
        verify_directory(env, _authority(tb), now=later)
    assert e.value.reason == "DIRECTORY_EXPIRED"
    with pytest.raises(VerificationError) as e:
        verify_directory(env, _authority(tb), min_version=2, now=NOW)
    assert e.value.reason == "DIRECTORY_ROLLBACK"


def test_directory_spec_unknown_key(tb):
    text = tb.spec_path.read_text() + '\nsurprise = "x"\n'
    tb.spec_path.write_text(text)
    with pytest.raises(ConfigError, match="surprise: got an unknown key"):
        DirectorySpec.load(tb.spec_path)


def _b64_oracle(v: object) -> bytes | None:
    # envelope.md: standard or URL-safe base64 (RFC 4648 §4/§5), decoded strictly.
    if not isinstance(v, str):
        return None
    try:
        return binascii.a2b_base64(v.replace("-", "+").replace("_", "/"), strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _envelope_oracle(blob: bytes) -> tuple[str, bytes, list[tuple[str, bytes]]] | None:
    """What a DSSE JSON envelope decodes to under envelope.md "Parsing rules", or None."""
    try:
        doc = json.loads(blob)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("payloadType"), str):
        return None
    payload, sigs = _b64_oracle(doc.get("payload")), doc.get("signatures")
    if payload is None or not isinstance(sigs, list):
        return None
    out = []
    for s in sigs:
        if not isinstance(s, dict):
            return None
        kid = "" if s.get("keyid") is None else s["keyid"]
        sig = _b64_oracle(s.get("sig"))
        if not isinstance(kid, str) or sig is None:
            return None
        out.append((kid, sig))
    return doc["payloadType"], payload, out


_b64s = st.binary(max_size=24).flatmap(
    lambda b: st.sampled_from([base64.b64encode(b).decode(), base64.urlsafe_b64encode(b).decode(),
                               base64.b64encode(b).decode().rstrip("=")]))
_leaf = st.one_of(_b64s, st.text(max_size=8), st.integers(), st.none(), st.booleans())
_sig_docs = st.dictionaries(st.sampled_from(["keyid", "sig", "x"]), _leaf, max_size=3)
_env_docs = st.dictionaries(
    st.sampled_from(["payload", "payloadType", "signatures", "x"]),
    st.one_of(_leaf, st.lists(st.one_of(_sig_docs, _leaf), max_size=3)),
    max_size=4,
)
_blobs = st.one_of(
    st.binary(max_size=300),
    _env_docs.map(lambda d: json.dumps(d).encode()),
    st.fixed_dictionaries({"payload": _b64s, "payloadType": st.text(max_size=20),
                           "signatures": st.lists(st.fixed_dictionaries({"sig": _b64s}, optional={"keyid": st.text(max_size=8)}), max_size=3)})
    .map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=300, deadline=None)
@given(_blobs)
def test_dsse_from_json_parses_exactly_what_the_spec_allows(blob):
    want = _envelope_oracle(blob)
    try:
        env = dsse.from_json(blob)
    except VerificationError as err:
        assert err.reason == "BAD_ENVELOPE"
        assert want is None, "a well-formed envelope was refused"
    else:
        assert want is not None, "a malformed envelope was accepted"
        assert (env.payload_type, env.payload, [(s.keyid, s.sig) for s in env.signatures]) == want


@settings(max_examples=60, deadline=None)
@given(payload=st.binary(max_size=200), ptype=st.text(max_size=40))
def test_dsse_roundtrip_and_type_binding(payload, ptype):
    k = SigningKey.generate("m")
    env = dsse.sign(ptype or "t", payload, [k])
    got, signers = dsse.verify(dsse.from_json(dsse.to_json(env)), {k.keyid: k.public}, payload_type=ptype or "t")
    assert got == payload and signers[0].keyid == k.keyid
    with pytest.raises(VerificationError):
        dsse.verify(env, {k.keyid: k.public}, payload_type=(ptype or "t") + "x")


def test_pae_matches_dsse_spec_example():
    # DSSE protocol.md test vector: PAE("http://example.com/HelloWorld", "hello world")
    assert dsse.pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_directory_names_the_federation_time_zone(tb, tmp_path):
    """The signed directory names the zone every local date is computed in (issue 10):
    default Asia/Shanghai, any IANA zone if the spec says so, anything else refused."""
    base = tb.spec_path.read_text()
    assert build(DirectorySpec.load(tb.spec_path), now=NOW).time_zone == "Asia/Shanghai"
    tb.spec_path.write_text('time_zone = "Asia/Urumqi"\n' + base)
    d = build(DirectorySpec.load(tb.spec_path), now=NOW)
    assert d.time_zone == "Asia/Urumqi"
    for bad in ("Mars/Olympus", "../etc/passwd", "", "UTC+8"):
        tb.spec_path.write_text(f'time_zone = "{bad}"\n' + base)
        if bad == "":  # empty: the default zone
            assert DirectorySpec.load(tb.spec_path).time_zone == "Asia/Shanghai"
            continue
        with pytest.raises(ConfigError, match=r"time_zone: got .*, want an IANA zone such as Asia/Shanghai"):
            DirectorySpec.load(tb.spec_path)
    tb.spec_path.write_text(base)
    out = tmp_path / "dir.json"
    with pytest.raises(ConfigError, match="time_zone: got 'Nowhere/Town', want an IANA zone such as Asia/Shanghai"):
        fed.sign_directory_file(tb.authority, tb.spec_path, out, tb.directory_passphrase.encode(), now=NOW, time_zone="Nowhere/Town")
    fed.sign_directory_file(tb.authority, tb.spec_path, out, tb.directory_passphrase.encode(), now=NOW, time_zone="Asia/Hong_Kong")
    td = load_directory(out, _authority(tb), now=NOW)
    assert td.msg.time_zone == "Asia/Hong_Kong" and td.zone.key == "Asia/Hong_Kong"
