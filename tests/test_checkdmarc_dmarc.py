"""dmarcbot's DMARC findings against checkdmarc's, both reading one real DNS server (issue 15).

Every case is a domain in one zone served by knot on loopback (tests/checkdmarc_oracle.py).
checkdmarc's error and warnings and dmarcbot's findings are reduced to problem kinds
(`duplicate-tag`, `bad-uri`, ...) and compared:

- a kind checkdmarc reports that dmarcbot does not is `missed`;
- a kind dmarcbot reports as an error or warning that checkdmarc does not is `extra` (not counted
  when checkdmarc stopped at an error: it reports nothing after its first one);
- `verdict`: checkdmarc calls the record invalid and dmarcbot has no error, or the reverse.

Each disagreement must be listed in DOCUMENTED with the reason, which docs/posture.md repeats
under "Where dmarcbot and checkdmarc disagree" with the RFC section that decides it; the test
fails on an unexplained disagreement and on a documented one that no case produces any more.

Cases: checkdmarc's own DMARC test cases rewritten as records of our own, records generated from
RFC 9989's grammar (seeded, so every run checks the same ones), and real-world-shaped records.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from analysis.dnsevidence import DnsEvidence, make_resolver
from analysis.posture import dmarc_findings, report_destinations
from analysis.records.findings import Finding
from tests.checkdmarc_oracle import OracleDNS, Verdict, check, txt

MX = "MX 10 mx.mail-host.test."
DOCS = Path(__file__).resolve().parent.parent / "docs" / "posture.md"

# -- the cases: (name, TXT strings at _dmarc.<name>.example, more zone data) --------------------
# `{d}` in a record or a zone name is the case's own domain.

PEER_CASES: list[tuple[str, list[str], dict[str, list[str]]]] = [
    # checkdmarc's test_dmarc.py cases, rewritten with our own records and domains
    ("mixed-case-value", ["v=DMARC1;p=ReJect"], {}),
    ("blanks-around-equals", ["v = DMARC1;p=reject;"], {}),
    ("tabs-around-semicolons", ["v = DMARC1\t;\tp=reject\t;"], {}),
    ("tabs-everywhere", ["v = DMARC1\t;\tp\t\t\t=\t\t\treject\t;"], {}),
    ("upper-case-v", ["V=DMARC1;p=reject;"], {}),
    ("rua-without-scheme", ["v=DMARC1; p=none; rua=agg@sink.example,mailto:dmarc@{d}"], {}),
    ("rua-with-junk-before-scheme", ["v=DMARC1; p=none; rua=__mailto:agg@{d},mailto:x@{d}"], {}),
    ("p-not-a-policy", ["v=DMARC1; p=foo; rua=mailto:dmarc@{d}"], {}),
    ("np-valid", ["v=DMARC1; p=reject; np=quarantine; rua=mailto:dmarc@{d}"], {}),
    ("psd-n", ["v=DMARC1; p=reject; psd=n; rua=mailto:dmarc@{d}"], {}),
    ("t-y", ["v=DMARC1; p=reject; t=y; rua=mailto:dmarc@{d}"], {}),
    ("np-invalid", ["v=DMARC1; p=reject; np=invalid; rua=mailto:dmarc@{d}"], {}),
    ("psd-invalid", ["v=DMARC1; p=reject; psd=x; rua=mailto:dmarc@{d}"], {}),
    ("t-invalid", ["v=DMARC1; p=reject; t=x; rua=mailto:dmarc@{d}"], {}),
    ("pct-removed", ["v=DMARC1; p=reject; pct=100; rua=mailto:dmarc@{d}"], {}),
    ("rf-removed", ["v=DMARC1; p=reject; rf=afrf; rua=mailto:dmarc@{d}"], {}),
    ("ri-removed", ["v=DMARC1; p=reject; ri=3600; rua=mailto:dmarc@{d}"], {}),
    ("p-missing", ["v=DMARC1; rua=mailto:dmarc@{d}"], {}),
    ("sp-quarantine", ["v=DMARC1; p=reject; sp=quarantine; rua=mailto:dmarc@{d}"], {}),
    ("rfc7489-everything", ["v=DMARC1; p=none; sp=none; fo=1; pct=50; adkim=r; aspf=r; rf=afrf; "
                            "ri=86400; rua=mailto:agg@{d}; ruf=mailto:fail@{d}"], {}),
    ("bare-version", ["v=DMARC1"], {}),
    ("bare-version-semicolon", ["v=DMARC1;"], {}),
    ("version-lower-case", ["v=dmarc1; p=reject"], {}),
    ("percent-encoded-address", ["v=DMARC1; p=none; rua=mailto:a%2Cb@{d}"], {}),
    ("long-unknown-tag", ["v=DMARC1; p=reject; foobar=baz; rua=mailto:dmarc@{d}"], {}),
    ("https-rua", ["v=DMARC1; p=none; rua=https://reports.{d}/submit"], {}),
    ("alignment-invalid", ["v=DMARC1; p=reject; adkim=x; aspf=q; rua=mailto:dmarc@{d}"], {}),
    ("alignment-strict", ["v=DMARC1; p=reject; adkim=s; aspf=s; rua=mailto:dmarc@{d}"], {}),
    ("tag-without-value", ["v=DMARC1; p"], {}),
    ("fo-invalid-word", ["v=DMARC1; p=reject; fo=invalid_value; rua=mailto:dmarc@{d}"], {}),
    ("fo-0-and-1", ["v=DMARC1; p=reject; fo=0:1; ruf=mailto:f@{d}; rua=mailto:dmarc@{d}"], {}),
    ("fo-twice-d", ["v=DMARC1; p=reject; fo=d:d; ruf=mailto:f@{d}; rua=mailto:dmarc@{d}"], {}),
    ("fo-x", ["v=DMARC1; p=reject; fo=x; rua=mailto:dmarc@{d}"], {}),
    ("duplicate-p", ["v=DMARC1; p=reject; p=none; rua=mailto:dmarc@{d}"], {}),
    ("unknown-tag", ["v=DMARC1; p=reject; xyz=foo; rua=mailto:dmarc@{d}"], {}),
    ("spf-at-dmarc", ["v=spf1 include:{d} -all"], {}),
    ("sp-none", ["v=DMARC1; p=reject; sp=none; rua=mailto:dmarc@{d}"], {}),
    ("p-after-sp", ["v=DMARC1; sp=none; p=reject; rua=mailto:dmarc@{d}"], {}),
    ("no-rua", ["v=DMARC1; p=reject"], {}),
    ("leading-blank", [" v=DMARC1; p=reject; rua=mailto:dmarc@{d}"], {}),
    ("two-records", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}",
                     "v=DMARC1; p=none; rua=mailto:dmarc@{d}"], {}),
    ("unrelated-beside", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}", "some random txt record"],
     {}),
    ("apex-too", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}"],
     {"{d}": [txt("v=DMARC1; p=reject"), MX]}),
    ("apex-only", [], {"{d}": [txt("v=DMARC1; p=reject"), MX], "www.{d}": ["A 192.0.2.8"]}),
    ("size-suffix", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}!10m"], {}),
    ("external-unauthorised", ["v=DMARC1; p=reject; rua=mailto:dmarc@elsewhere.example"],
     {"elsewhere.example": [MX]}),
    ("external-authorised", ["v=DMARC1; p=reject; rua=mailto:dmarc@vendor-a.example"],
     {"vendor-a.example": [MX], "{d}._report._dmarc.vendor-a.example": [txt("v=DMARC1")]}),
    ("external-wildcard", ["v=DMARC1; p=reject; rua=mailto:dmarc@vendor-b.example"],
     {"vendor-b.example": [MX], "*._report._dmarc.vendor-b.example": [txt("v=DMARC1")]}),
    ("external-authorised-beside-junk", ["v=DMARC1; p=reject; rua=mailto:d@vendor-c.example"],
     {"vendor-c.example": [MX], "{d}._report._dmarc.vendor-c.example": [
         txt("unrelated txt"), txt("v=DMARC1")]}),
    ("destination-without-mx", ["v=DMARC1; p=reject; rua=mailto:dmarc@nomx.{d}"],
     {"nomx.{d}": ["A 192.0.2.9"]}),
    ("destination-missing", ["v=DMARC1; p=reject; rua=mailto:dmarc@gone.{d}"], {}),
    ("three-rua", ["v=DMARC1; p=reject; rua=mailto:a@{d},mailto:b@{d},mailto:c@{d}"], {}),
    ("external-ruf-with-size", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}; "
                                "ruf=mailto:forensic@elsewhere.example!5m"],
     {"elsewhere.example": [MX]}),
    ("three-ruf", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}; "
                   "ruf=mailto:f0@{d},mailto:f1@{d},mailto:f2@{d}"], {}),
]

# the tree walk: the record that applies to a subdomain (checkdmarc's tree-walk cases)
WALK_ZONE = {
    "_dmarc.walk.example": [txt("v=DMARC1; p=reject; rua=mailto:dmarc@walk.example")],
    "walk.example": [MX],
    "a.sub.walk.example": ["A 192.0.2.10"],
    "_dmarc.mail.fewest.example": [txt("v=DMARC1; p=none; rua=mailto:dmarc@fewest.example")],
    "_dmarc.fewest.example": [txt("v=DMARC1; p=reject; rua=mailto:dmarc@fewest.example")],
    "fewest.example": [MX],
    "a.mail.fewest.example": ["A 192.0.2.11"],
    "_dmarc.mail.psdn.example": [txt("v=DMARC1; p=quarantine; psd=n; "
                                     "rua=mailto:dmarc@mail.psdn.example")],
    "mail.psdn.example": [MX],
    "_dmarc.psdn.example": [txt("v=DMARC1; p=reject; rua=mailto:dmarc@psdn.example")],
    "a.mail.psdn.example": ["A 192.0.2.12"],
    "_dmarc.psdy": [txt("v=DMARC1; p=reject; psd=y")],
    "a.mail.brand.psdy": ["A 192.0.2.13"],
}
WALK_CASES = ["a.sub.walk.example", "a.mail.fewest.example", "a.mail.psdn.example",
              "a.mail.brand.psdy"]

REAL_WORLD: list[tuple[str, list[str], dict[str, list[str]]]] = [
    # shapes seen in the wild, written for these tests with example domains
    ("vendor-monitoring", ["v=DMARC1; p=none; rua=mailto:re+x7k2@inbound.vendor-d.example; "
                           "ruf=mailto:re+x7k2@inbound.vendor-d.example; fo=1"],
     {"inbound.vendor-d.example": [MX],
      "*._report._dmarc.inbound.vendor-d.example": [txt("v=DMARC1")]}),
    ("ramp-with-pct", ["v=DMARC1; p=quarantine; pct=25; rua=mailto:dmarc@{d}; adkim=r; aspf=r"],
     {}),
    ("strict-everything", ["v=DMARC1;p=reject;sp=reject;adkim=s;aspf=s;fo=1;"
                           "rua=mailto:dmarc-rua@{d};ruf=mailto:dmarc-ruf@{d}"], {}),
    ("fo-all-options", ["v=DMARC1; p=none; rua=mailto:postmaster@{d}; "
                        "ruf=mailto:postmaster@{d}; fo=0:1:d:s"], {}),
    ("space-after-comma", ["v=DMARC1; p=none; rua=mailto:a@{d}, mailto:b@{d}"], {}),
    ("generator-output", ["v=DMARC1; p=reject; rua=mailto:dmarc@{d}; ruf=mailto:dmarc@{d}; "
                          "rf=afrf; pct=100; ri=86400"], {}),
    ("semicolon-soup", ["v=DMARC1;;p=none;rua=mailto:dmarc@{d}"], {}),
    ("parked", ["v=DMARC1; p=reject; sp=reject; adkim=s; aspf=s"], {}),
    ("missing-semicolon", ["v=DMARC1 p=reject; rua=mailto:dmarc@{d}"], {}),
    ("colon-for-equals", ["v=DMARC1; p:reject; rua=mailto:dmarc@{d}"], {}),
]


def generated(count: int = 40) -> list[tuple[str, list[str], dict[str, list[str]]]]:
    """Records from RFC 9989 §4.8's grammar: v first, then tags drawn from Table 2's values
    (and a few outside them), in random order, with random blanks and a random trailing `;`."""
    rng = random.Random(9989)
    values = {
        "p": ["none", "quarantine", "reject", "Reject", "reject!"],
        "sp": ["none", "quarantine", "reject", "all"], "np": ["none", "reject", "nil"],
        "adkim": ["r", "s", "S"], "aspf": ["r", "s"], "t": ["y", "n", "Y"],
        "psd": ["n", "u"], "fo": ["0", "1", "d", "s", "d:s", "1:d:s"],
        "rua": ["mailto:agg@{d}", "mailto:agg@{d},mailto:agg2@{d}", "mailto:agg@{d}!20m"],
        "ruf": ["mailto:fail@{d}"],
    }
    cases = []
    for number in range(count):
        names = rng.sample(sorted(values), rng.randint(1, 6))
        if "p" in names and rng.random() < 0.7:
            names.remove("p")
            names.insert(0, "p")
        blank = lambda: rng.choice(["", "", " ", "\t"])  # noqa: E731
        parts = [f"v{blank()}={blank()}DMARC1"]
        parts += [f"{n}{blank()}={blank()}{rng.choice(values[n])}" for n in names]
        record = "".join(p if i == 0 else f"{blank()};{blank()}{p}" for i, p in enumerate(parts))
        cases.append((f"gen-{number:02d}", [record + rng.choice(["", ";", " ;"])], {}))
    return cases


ALL_CASES = PEER_CASES + REAL_WORLD + generated()


def zone() -> dict[str, list[str]]:
    data: dict[str, list[str]] = {"mx.mail-host.test": ["A 192.0.2.1"], **WALK_ZONE}
    for name, records, extra in ALL_CASES:
        domain = f"{name}.example"
        if records:
            data[f"_dmarc.{domain}"] = [txt(r.replace("{d}", domain)) for r in records]
        data.setdefault(domain, [MX])
        for owner, rdata in extra.items():
            data[owner.replace("{d}", domain)] = [r.replace("{d}", domain) for r in rdata]
    return data


# -- problem kinds ---------------------------------------------------------------------------

#: checkdmarc's texts -> kinds (first match wins).
THEIRS = [
    (r"has no MX records|Failed to retrieve MX records", "no-mx"),
    (r"DMARC record does not exist|domain .* does not exist", "none"),
    (r"Multiple DMARC policy records", "multiple"),
    (r"starts with whitespace", "not-dmarc"),
    (r"SPF record where a DMARC record|Unrelated TXT records", "unrelated"),
    (r"must be located at|at the root of .* has no effect", "apex"),
    (r"Duplicate .* tags are not permitted", "duplicate-tag"),
    (r"must have one of the following values|not a valid option for the DMARC fo|"
     r"not a valid (adkim|aspf) tag value|fo=.* is invalid", "bad-value"),
    (r"Expected .* at position", "syntax"),
    (r"not a valid DMARC report URI", "bad-uri"),
    (r"Unknown DMARC tag", "unknown-tag"),
    (r"tag was removed in RFC 9989", "removed"),
    (r"missing p tag", "no-p"),
    (r"p tag does not immediately follow", "p-not-second"),
    (r"\bsp tag value of none", "sp-none"),
    (r"\bp tag value of none", "monitoring"),
    (r"rua tag \(destination for aggregate reports\) not found", "no-rua"),
    (r"size limit", "size-suffix"),
    (r"uses the \w+ scheme", "not-mailto"),
    (r"does not indicate that it accepts DMARC reports", "unauthorised"),
    (r"might not send to more than two", "too-many"),
    (r"Organizational Domain of .* psd=y", "psd-record-applies"),
]
#: dmarcbot's codes -> kinds, where the names differ.
OURS = {"reports.no-scheme": "bad-uri", "reports.bad-uri": "bad-uri",
        "reports.no-domain": "no-mx", "dmarc.removed-pct": "removed",
        "dmarc.removed-rf": "removed", "dmarc.removed-ri": "removed", "dmarc.empty-tag": "syntax"}


def their_kinds(verdict: Verdict) -> tuple[set[str], str | None]:
    kinds, error_kind = set(), None
    for number, text in enumerate(([verdict.error] if verdict.error else [])
                                  + list(verdict.warnings)):
        kind = next((k for pattern, k in THEIRS if re.search(pattern, text, re.I)), None)
        assert kind is not None, f"a checkdmarc text no kind covers: {text!r}"
        kinds.add(kind)
        if number == 0 and verdict.error:
            error_kind = kind
    return kinds, error_kind


def kind(finding: Finding) -> str:
    return OURS.get(finding.code, finding.code.partition(".")[2])


def our_findings(server: OracleDNS, domain: str) -> list[Finding]:
    async def go() -> list[Finding]:
        ev = DnsEvidence(make_resolver([f"{server.host}:{server.port}"]))
        try:
            record = await ev.dmarc(domain)
            return dmarc_findings(domain, record, await report_destinations(ev, record))
        finally:
            ev.close()

    return asyncio.run(go())


def disagreements(theirs: Verdict, ours: list[Finding]) -> set[tuple[str, str]]:
    their, their_error = their_kinds(theirs)
    mine = {kind(f) for f in ours}
    claimed = {kind(f) for f in ours if f.level in ("error", "warning")}
    errors = {kind(f) for f in ours if f.level == "error"}
    out = {("missed", k) for k in their - mine}
    if their_error is None:
        out |= {("extra", k) for k in claimed - their}
        out |= {("verdict", k) for k in errors}  # checkdmarc: valid; dmarcbot: an error
    elif their_error not in errors:
        out.add(("verdict", their_error))
    return out


#: Every disagreement, and why dmarcbot answers differently (docs/posture.md says the same,
#: with the RFC section that decides it).
DOCUMENTED = {
    ("verdict", "unauthorised"): "an unauthorised external destination is an error: receivers "
                                 "drop those reports (RFC 9990 §3); checkdmarc warns",
    ("verdict", "no-mx"): "a destination that does not exist is an error for dmarcbot (no "
                          "report can arrive, RFC 5321 §5.1); checkdmarc warns",
    ("verdict", "unrelated"): "other TXT strings at _dmarc are discarded by receivers (RFC 9989 "
                              "§4.10 step 2): dmarcbot notes them, checkdmarc fails the record",
    ("missed", "unrelated"): "a near-miss (v=dmarc1, no ';' after the version) is unrelated TXT "
                             "to checkdmarc; dmarcbot names it as the DMARC record receivers "
                             "ignore (RFC 9989 §4.7) and repairs it",
    ("verdict", "bad-value"): "fo=<unknown option> falls back to the default (RFC 9989 §4.8): "
                              "a warning for dmarcbot, an error for checkdmarc",
    ("verdict", "syntax"): "RFC 9989 §4.8 discards a part that is not tag=value; dmarcbot "
                           "calls `;;` a warning, checkdmarc a syntax error",
}


@pytest.fixture(scope="module")
def oracle() -> Iterator[OracleDNS]:
    with OracleDNS(zone()) as server:
        yield server


def test_zero_unexplained_disagreements_with_checkdmarc(oracle: OracleDNS) -> None:
    found: dict[tuple[str, str], list[str]] = {}
    domains = [f"{name}.example" for name, _, _ in ALL_CASES] + WALK_CASES
    for domain in domains:
        theirs = check("dmarc", domain, oracle)
        for disagreement in disagreements(theirs, our_findings(oracle, domain)):
            found.setdefault(disagreement, []).append(domain)
    unexplained = {d: where for d, where in found.items() if d not in DOCUMENTED}
    assert not unexplained, f"unexplained disagreements with checkdmarc: {unexplained}"
    stale = set(DOCUMENTED) - set(found)
    assert not stale, f"documented disagreements no case produces any more: {stale}"
    text = DOCS.read_text()
    for direction, what in DOCUMENTED:
        assert f"`{direction}: {what}`" in text, f"docs/posture.md does not explain {what}"


def test_the_issue_cases_agree(oracle: OracleDNS) -> None:
    """The four wrong answers of issue 15, now agreeing with the peer."""
    for domain in ("upper-case-v.example", "blanks-around-equals.example",
                   "tabs-around-semicolons.example"):
        ours = our_findings(oracle, domain)
        assert check("dmarc", domain, oracle).valid
        assert not [f for f in ours if f.level == "error"], ours
    duplicate = our_findings(oracle, "duplicate-p.example")
    assert any(f.code == "dmarc.duplicate-tag" and f.level == "error" for f in duplicate)
    assert check("dmarc", "duplicate-p.example", oracle).has_error("Duplicate")
    two = [f for f in our_findings(oracle, "two-records.example") if f.code == "dmarc.multiple"]
    assert two and two[0].fix is not None and len(two[0].fix.replaces) == 2
    inherited = our_findings(oracle, "a.sub.walk.example")
    assert not [f for f in inherited if f.topic == "reports"]


# -- TLS-RPT (RFC 8460 §3), which checkdmarc checks too ------------------------------------------

TLSRPT_CASES: list[tuple[str, list[str]]] = [
    ("tls-mailto", ["v=TLSRPTv1; rua=mailto:tls@{d}"]),
    ("tls-https", ["v=TLSRPTv1; rua=https://reports.{d}/tlsrpt"]),
    ("tls-two-uris", ["v=TLSRPTv1; rua=mailto:a@{d}, https://reports.{d}/x"]),
    ("tls-trailing", ["v=TLSRPTv1;rua=mailto:tls@{d};"]),
    ("tls-no-rua", ["v=TLSRPTv1; foo=bar"]),
    ("tls-bad-scheme", ["v=TLSRPTv1; rua=ftp://files.{d}/tls"]),
    ("tls-no-scheme", ["v=TLSRPTv1; rua=tls@{d}"]),
    ("tls-two-records", ["v=TLSRPTv1; rua=mailto:a@{d}", "v=TLSRPTv1; rua=mailto:b@{d}"]),
    ("tls-version-case", ["v=tlsrptv1; rua=mailto:a@{d}"]),
    ("tls-blank-before-semicolon", ["v=TLSRPTv1 ; rua=mailto:a@{d}"]),
    ("tls-rua-twice", ["v=TLSRPTv1; rua=mailto:a@{d}; rua=mailto:b@{d}"]),
    ("tls-extension", ["v=TLSRPTv1; rua=mailto:a@{d}; note=hello"]),
    ("tls-extension-blank", ["v=TLSRPTv1; rua=mailto:a@{d}; note=a b"]),
    ("tls-unrelated-beside", ["v=TLSRPTv1; rua=mailto:a@{d}", "google-site-verification=x1"]),
]
TLS_THEIRS = [
    (r"Multiple SMTP TLS Reporting records", "multiple"),
    (r"Unrelated TXT records", "unrelated"),
    (r"missing the required rua", "no-rua"),
    (r"not a valid SMTP TLS Reporting URI", "bad-uri"),
    (r"Expected .* at position|extension field .* is not valid", "syntax"),
    (r"Unknown tag .* was ignored", "unknown-field"),
    (r"does not begin with the literal", "blank-before-semicolon"),
    (r"more than one .* tag", "duplicate"),
    (r"does not exist|not found|does not have", "none"),
]
#: TLS-RPT disagreements, explained in docs/posture.md like the DMARC ones: none so far.
TLS_DOCUMENTED: dict[tuple[str, str], str] = {}


def tls_kinds(verdict: Verdict) -> set[str]:
    kinds = set()
    for text in ([verdict.error] if verdict.error else []) + list(verdict.warnings):
        kind_ = next((k for pattern, k in TLS_THEIRS if re.search(pattern, text, re.I)), None)
        assert kind_ is not None, f"a checkdmarc TLS-RPT text no kind covers: {text!r}"
        kinds.add(kind_)
    return kinds


@pytest.fixture(scope="module")
def tls_oracle() -> Iterator[OracleDNS]:
    data = {"mx.mail-host.test": ["A 192.0.2.1"]}
    for name, records in TLSRPT_CASES:
        domain = f"{name}.example"
        data[f"_smtp._tls.{domain}"] = [txt(r.replace("{d}", domain)) for r in records]
        data[domain] = [MX]
    with OracleDNS(data) as server:
        yield server


def test_tls_rpt_findings_agree_with_checkdmarc(tls_oracle: OracleDNS) -> None:
    from analysis.records.tlsrpt import tlsrpt_findings

    found: dict[tuple[str, str], list[str]] = {}
    resolver = tls_oracle.sync_resolver()
    for name, _ in TLSRPT_CASES:
        domain = f"{name}.example"
        theirs = check("tlsrpt", domain, tls_oracle)
        txts = [b"".join(r.strings).decode() for r in resolver.resolve(f"_smtp._tls.{domain}",
                                                                       "TXT")]
        ours = tlsrpt_findings(domain, txts)
        their = tls_kinds(theirs)
        mine = {f.code.partition(".")[2] for f in ours}
        claimed = {f.code.partition(".")[2] for f in ours if f.level in ("error", "warning")}
        problems = {("missed", k) for k in their - mine if k != "none"}
        if theirs.valid:
            problems |= {("extra", k) for k in claimed - their}
            problems |= {("verdict", f.code) for f in ours if f.level == "error"}
        elif not any(f.level == "error" for f in ours):
            problems.add(("verdict", theirs.error or ""))
        for problem in problems:
            found.setdefault(problem, []).append(domain)
    unexplained = {d: w for d, w in found.items() if d not in TLS_DOCUMENTED}
    assert not unexplained, f"unexplained TLS-RPT disagreements with checkdmarc: {unexplained}"
    assert set(TLS_DOCUMENTED) <= set(found), "a documented TLS-RPT disagreement went away"
    text = DOCS.read_text()
    for direction, what in TLS_DOCUMENTED:
        assert f"`{direction}: {what}`" in text, f"docs/posture.md does not explain {what}"
