"""DKIM key, MTA-STS, TLS-RPT and BIMI records read by their grammars (analysis/records/)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from analysis.records.bimi import parse_bimi
from analysis.records.dkim import parse_dkim_key
from analysis.records.mtasts import parse_sts_policy, parse_sts_record, sts_record_findings
from analysis.records.tlsrpt import parse_tlsrpt, tlsrpt_findings


def rsa_key(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def der(tag: int, body: bytes) -> bytes:
    length = len(body)
    head = bytes([length]) if length < 128 else bytes([0x81 if length < 256 else 0x82]) + (
        length.to_bytes(1 if length < 256 else 2, "big"))
    return bytes([tag]) + head + body


def small_rsa_key(bits: int) -> str:
    """A SubjectPublicKeyInfo with a `bits`-bit modulus (the library refuses to make one)."""
    modulus = (1 << (bits - 1)) | 1
    rsa_public = der(0x30, der(0x02, b"\x00" + modulus.to_bytes(bits // 8, "big"))
                     + der(0x02, b"\x01\x00\x01"))
    algorithm = der(0x30, der(0x06, bytes.fromhex("2a864886f70d010101")) + b"\x05\x00")
    return base64.b64encode(der(0x30, algorithm + der(0x03, b"\x00" + rsa_public))).decode()


KEY_2048 = rsa_key(2048)
KEY_1024 = rsa_key(1024)


def dkim_codes(text: str) -> set[str]:
    return {f.code for f in parse_dkim_key(text, "s1._domainkey.contoso.example").findings}


def test_good_keys_have_no_findings() -> None:
    record = parse_dkim_key(f"v=DKIM1; k=rsa; p={KEY_2048}")
    assert record.findings == () and record.bits == 2048 and record.key_type == "rsa"
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    ed = parse_dkim_key(f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode()}")
    assert ed.findings == () and ed.bits == 256
    folded = KEY_2048[:60] + " \r\n\t" + KEY_2048[60:]  # FWS inside the value (RFC 6376 §3.2)
    assert parse_dkim_key(f"p={folded}").findings == ()


@pytest.mark.parametrize(("text", "code"), [
    (f"v=DKIM1; p={KEY_1024}", "dkim.short-key"),
    (f"v=DKIM1; p={small_rsa_key(768)}", "dkim.weak-key"),
    (f"v=DKIM1; p={small_rsa_key(512)}", "dkim.weak-key"),
    ("v=DKIM1; p=", "dkim.revoked"),
    (f"v=DKIM1; t=y; p={KEY_2048}", "dkim.testing"),
    (f"v=DKIM1; t=s:y; p={KEY_2048}", "dkim.testing"),
    (f"v=DKIM1; h=sha1; p={KEY_2048}", "dkim.sha1-only"),
    (f"v=DKIM1; k=dsa; p={KEY_2048}", "dkim.key-type"),
    ("v=DKIM1; p=not*base64!", "dkim.bad-key"),
    ("v=DKIM1; p=QUJD", "dkim.bad-key"),  # base64, but no DER inside
    ("v=DKIM1; k=ed25519; p=QUJD", "dkim.bad-key"),
    (f"v=DKIM1; s=other; p={KEY_2048}", "dkim.service"),
    (f"v=DKIM2; p={KEY_2048}", "dkim.version"),
    (f"k=rsa; v=DKIM1; p={KEY_2048}", "dkim.version"),
    (f"v=DKIM1; p={KEY_2048}; p={KEY_1024}", "dkim.duplicate-tag"),
    ("v=DKIM1; k=rsa", "dkim.no-key"),
    (f"v=DKIM1; junk; p={KEY_2048}", "dkim.syntax"),
])
def test_key_problems(text: str, code: str) -> None:
    assert code in dkim_codes(text)


def test_sha256_beside_sha1_is_fine_and_findings_name_the_key() -> None:
    assert dkim_codes(f"v=DKIM1; h=sha1:sha256; p={KEY_2048}") == set()
    (finding,) = parse_dkim_key("v=DKIM1; p=", "s1._domainkey.contoso.example").findings
    assert finding.text.startswith("s1._domainkey.contoso.example:")
    assert finding.rfc == "RFC 6376 §3.6.1"


def test_mta_sts_txt_record() -> None:
    assert parse_sts_record("v=STSv1; id=20260501T1200;").valid
    assert parse_sts_record("v=STSv1;id=abc").valid
    for text, code in [("v=STSv1;", "mta-sts.no-id"), ("v=STSv1; id=has-dash", "mta-sts.bad-id"),
                       ("v=STSv1; id=" + "a" * 33, "mta-sts.bad-id"),
                       ("v=stsv1; id=abc", "mta-sts.not-sts"),
                       ("v=STSv1; id=abc; junk", "mta-sts.syntax")]:
        assert code in {f.code for f in parse_sts_record(text).findings}, text
    two = sts_record_findings("contoso.example", ["v=STSv1; id=a", "v=STSv1; id=b"])
    assert [f.code for f in two] == ["mta-sts.multiple"]
    assert sts_record_findings("contoso.example", ["unrelated", "v=STSv1; id=a"]) == []


def test_mta_sts_policy_file() -> None:
    policy = parse_sts_policy("version: STSv1\r\nmode: enforce\r\nmx: mail.contoso.example\r\n"
                              "mx: *.backup.contoso.example\r\nmax_age: 604800\r\n")
    assert policy.valid and policy.mode == "enforce" and policy.max_age == 604800
    assert policy.mx == ("mail.contoso.example", "*.backup.contoso.example")
    for text, code in [
        ("version: STSv1\nmode: enforce\nmax_age: 86400\n", "mta-sts.policy-no-mx"),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 86400\n", "mta-sts.policy-mode"),
        ("version: STSv1\nmode: none\nmax_age: 99999999999\n", "mta-sts.policy-max-age"),
        ("version: STSv1\nmode: none\nmax_age: 31557601\n", "mta-sts.policy-max-age"),
        ("mode: none\nmax_age: 86400\n", "mta-sts.policy-version"),
        ("version: STSv1\nmode: enforce\nmx: bad host\nmax_age: 86400\n", "mta-sts.policy-mx"),
        ("version STSv1\nmode: none\nmax_age: 86400\n", "mta-sts.policy-syntax"),
    ]:
        found = parse_sts_policy(text)
        assert code in {f.code for f in found.findings} and not found.valid, text
    duplicate = parse_sts_policy("version: STSv1\nmode: none\nmode: enforce\nmax_age: 86400\n")
    assert duplicate.mode == "none" and duplicate.valid  # the first counts
    assert parse_sts_policy("version: STSv1\nmode: none\nmax_age: 86400\n").valid


def test_mta_sts_policy_mode_and_max_age_notes() -> None:
    """Usable policies that still deserve a word: withdrawn (mode none), and max_age under a
    day (RFC 8461 §3.2 expects weeks); a day and more is not flagged, nor is the maximum."""
    def notes(text: str) -> set[tuple[str, str]]:
        found = parse_sts_policy(text)
        assert found.valid, text
        return {(f.level, f.code) for f in found.findings}

    body = "version: STSv1\nmode: enforce\nmx: mx.contoso.example\nmax_age: {}\n"
    assert notes(body.format(86399)) == {("warning", "mta-sts.policy-max-age-short")}
    assert notes(body.format(0)) == {("warning", "mta-sts.policy-max-age-short")}
    assert notes(body.format(86400)) == set()
    assert notes(body.format(31557600)) == set()
    assert notes("version: STSv1\nmode: none\nmax_age: 604800\n") == {
        ("info", "mta-sts.policy-none")}
    testing = "version: STSv1\nmode: testing\nmx: mx.contoso.example\nmax_age: 604800\n"
    assert notes(testing) == {("info", "mta-sts.policy-testing")}


def test_tls_rpt_record() -> None:
    record = parse_tlsrpt("v=TLSRPTv1; rua=mailto:tls@contoso.example,https://r.example/t")
    assert record.valid and len(record.rua) == 2
    twice = parse_tlsrpt("v=TLSRPTv1; rua=mailto:a@c.example; rua=mailto:b@c.example")
    assert twice.valid and len(twice.rua) == 2  # several rua fields add up (RFC 8460 §3)
    for text, code in [("v=TLSRPTv1; x=1", "tls-rpt.no-rua"),
                       ("v=TLSRPTv1; rua=ftp://a.example/x", "tls-rpt.bad-uri"),
                       ("v=TLSRPTv1; rua=a@c.example", "tls-rpt.bad-uri"),
                       ("v=tlsrptv1; rua=mailto:a@c.example", "tls-rpt.not-tlsrpt"),
                       ("v=TLSRPTv1 ; rua=mailto:a@c.example", "tls-rpt.blank-before-semicolon"),
                       ("v=TLSRPTv1; rua=mailto:a@c.example; x=a b", "tls-rpt.syntax")]:
        assert code in {f.code for f in parse_tlsrpt(text).findings}, text
    two = tlsrpt_findings("c.example", ["v=TLSRPTv1; rua=mailto:a@c.example",
                                        "v=TLSRPTv1; rua=mailto:b@c.example"])
    assert [f.code for f in two] == ["tls-rpt.multiple"]


def test_bimi_record() -> None:
    good = parse_bimi("v=BIMI1; l=https://brand.example/logo.svg; a=https://brand.example/vmc.pem")
    assert good.valid and good.findings == ()
    declined = parse_bimi("v=BIMI1; l=; a=;")
    assert declined.valid and declined.declined
    for text, code in [("v=BIMI1; a=https://b.example/v.pem", "bimi.no-l"),
                       ("v=BIMI1; l=http://brand.example/logo.svg", "bimi.bad-uri"),
                       ("l=https://brand.example/logo.svg; v=BIMI1", "bimi.not-bimi"),
                       ("v=BIMI1; l=https://b.example/a.svg; l=https://b.example/b.svg",
                        "bimi.duplicate-tag"),
                       ("v=BIMI1; l=https://brand.example/logo.svg", "bimi.no-evidence")]:
        assert code in {f.code for f in parse_bimi(text).findings}, text
