"""DKIM key records (RFC 6376 §3.6.1, Ed25519 keys RFC 8463, crypto rules RFC 8301).

What a verifier does with `<selector>._domainkey.<domain>`: the tag-list (§3.2, duplicates spoil
it), the key type (`k=rsa` or `ed25519`), an empty `p=` (revoked), `t=y` (testing), `h=` that only
allows SHA-1 (no longer accepted, RFC 8301 §3.1), and the key itself: RSA under 1024 bits is not
accepted (RFC 8301 §3.2) and base64 or DER that does not decode is no key at all.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses

from analysis.records import taglist
from analysis.records.findings import Finding

KEY_TYPES = ("rsa", "ed25519")
MIN_RSA_BITS = 1024  # below: verifiers MUST NOT accept the signature (RFC 8301 §3.2)
GOOD_RSA_BITS = 2048  # signers SHOULD use at least this (RFC 8301 §3.2)
ED25519_BYTES = 32  # RFC 8463 §4.2: the raw public key, not wrapped in DER

S_RECORD = "RFC 6376 §3.6.1"
S_TAGLIST = "RFC 6376 §3.2"
S_HASH = "RFC 8301 §3.1"
S_SIZE = "RFC 8301 §3.2"
S_ED25519 = "RFC 8463 §4.2"


@dataclasses.dataclass(frozen=True, slots=True)
class DkimKeyRecord:
    text: str
    tags: dict[str, str]  # the first of each tag (names are case-sensitive, §3.2)
    key_type: str  # k=, default rsa
    revoked: bool  # p= present and empty
    testing: bool  # t= has y
    bits: int | None  # RSA modulus size, or 256 for Ed25519; None when the key does not decode
    findings: tuple[Finding, ...]


def parse_dkim_key(text: str, name: str = "the DKIM key") -> DkimKeyRecord:
    """Read one key record; `name` (`s1._domainkey.example.com`) is how findings refer to it."""
    parts = taglist.split(text, name=r"[A-Za-z][A-Za-z0-9_]*", value=r"[\x21-\x3a\x3c-\x7e]",
                          blanks=taglist.FWS)
    findings: list[Finding] = []
    tags: dict[str, str] = {}
    for tag in parts.tags:
        tags.setdefault(tag.name, tag.value)

    def add(level: str, code: str, message: str, rfc: str) -> None:
        findings.append(Finding(level, "dkim", f"{name}: {message}", rfc, code=f"dkim.{code}"))

    for bad in parts.bad:
        add("error", "syntax", f"{bad!r} is not tag=value", S_TAGLIST)
    for duplicate in parts.duplicates():
        add("error", "duplicate-tag", f"the tag {duplicate} appears more than once: the whole "
            "record is invalid", S_TAGLIST)
    if "v" in tags and (tags["v"] != "DKIM1" or parts.tags[0].name != "v"):
        add("error", "version", "v= must be the first tag and read DKIM1, or verifiers discard "
            "the record", S_RECORD)
    key_type = tags.get("k", "rsa").lower()
    if key_type not in KEY_TYPES:
        add("error", "key-type", f"k={tags['k']} is not a key type verifiers know (rsa, "
            "ed25519): they cannot use the key", S_RECORD)
    hashes = {h.strip(taglist.FWS).lower() for h in tags["h"].split(":")} if "h" in tags else None
    if hashes is not None and not hashes & {"sha256"}:
        add("error", "sha1-only", f"h={tags['h']} allows no hash but SHA-1, which verifiers no "
            "longer accept: allow sha256 (or drop h=)", S_HASH)
    services = {s.strip(taglist.FWS).lower() for s in tags["s"].split(":")} if "s" in tags else None
    if services is not None and not services & {"email", "*"}:
        add("error", "service", f"s={tags['s']} does not include email: the key is not for mail",
            S_RECORD)
    flags = {f.strip(taglist.FWS).lower() for f in tags.get("t", "").split(":")}
    testing = "y" in flags
    if testing:
        add("warning", "testing", "t=y (testing): verifiers may treat its signatures like no "
            "signature; remove t=y once signing works", S_RECORD)
    revoked = "p" in tags and not tags["p"].strip(taglist.FWS)
    bits: int | None = None
    if "p" not in tags:
        add("error", "no-key", "the record has no p= tag (the key): verifiers cannot use it",
            S_RECORD)
    elif revoked:
        add("warning", "revoked", "the key is revoked (empty p=): signatures made with it fail",
            S_RECORD)
    elif key_type in KEY_TYPES:
        bits, problem = key_bits(tags["p"], key_type)
        if problem:
            add("error", "bad-key", problem, S_ED25519 if key_type == "ed25519" else S_RECORD)
        elif key_type == "rsa" and bits is not None and bits < MIN_RSA_BITS:
            add("error", "weak-key", f"the RSA key has {bits} bits: verifiers do not accept "
                f"keys under {MIN_RSA_BITS}; publish a {GOOD_RSA_BITS}-bit key", S_SIZE)
        elif key_type == "rsa" and bits is not None and bits < GOOD_RSA_BITS:
            add("warning", "short-key", f"the RSA key has {bits} bits: signers should use "
                f"{GOOD_RSA_BITS}", S_SIZE)
    return DkimKeyRecord(text, tags, key_type, revoked, testing, bits, tuple(findings))


def key_bits(value: str, key_type: str) -> tuple[int | None, str | None]:
    """(key size in bits, problem) of a `p=` value; the problem says why it is no key."""
    compact = "".join(value.split())
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        return None, "p= is not valid base64: verifiers cannot read the key"
    if key_type == "ed25519":
        if len(data) != ED25519_BYTES:
            return None, (f"an Ed25519 key is {ED25519_BYTES} raw bytes, this p= holds "
                          f"{len(data)}")
        return 8 * ED25519_BYTES, None
    modulus = _rsa_modulus(data)
    if modulus is None:
        return None, "p= does not hold an RSA public key (DER SubjectPublicKeyInfo)"
    return modulus.bit_length(), None


def _rsa_modulus(data: bytes) -> int | None:
    """The modulus of a DER SubjectPublicKeyInfo or a bare PKCS#1 RSAPublicKey."""
    try:
        tag, body, rest = _tlv(data)
        if tag != 0x30 or rest:
            return None
        first_tag, first, after = _tlv(body)
        if first_tag == 0x02:  # RSAPublicKey: SEQUENCE { modulus, exponent }
            return int.from_bytes(first, "big")
        if first_tag != 0x30:  # SubjectPublicKeyInfo: SEQUENCE { algorithm, BIT STRING }
            return None
        bits_tag, bits, _ = _tlv(after)
        if bits_tag != 0x03 or not bits or bits[0] != 0:
            return None
        return _rsa_modulus(bits[1:])
    except IndexError:
        return None


def _tlv(data: bytes) -> tuple[int, bytes, bytes]:
    """(tag, content, what follows) of the first DER element of `data`."""
    tag, length, offset = data[0], data[1], 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            raise IndexError("bad DER length")
        length = int.from_bytes(data[2:2 + count], "big")
        offset = 2 + count
    if len(data) < offset + length:
        raise IndexError("DER element longer than its data")
    return tag, data[offset:offset + length], data[offset + length:]
