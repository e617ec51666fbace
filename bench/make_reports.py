"""Generate synthetic DMARC aggregate reports (RFC 7489) for the parse benchmark.

The documents are written record by record, so even the 1M-record report (~0.5 GB of XML)
never sits in memory; the .xml.gz is then streamed from the .xml. Output is deterministic for
a given (size, seed), so runs on different machines parse byte-identical inputs.

    .venv/bin/python bench/make_reports.py --sizes 1000,10000
"""

from __future__ import annotations

import argparse
import gzip
import os
import random
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_SIZES = (1_000, 10_000, 100_000, 1_000_000)
DEFAULT_SEED = 7489
CHUNK_RECORDS = 2_000  # records formatted per write() call
GZIP_LEVEL = 6  # what mail providers' gzip/zlib defaults produce

OWN_DOMAINS = ("example.com", "example.org", "mail.example.com", "news.example.com")
# (envelope domain, DKIM d=, selectors, IPv4 /16 prefixes, IPv6 /32 prefix) of typical senders
SENDERS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...], str], ...] = (
    ("example.com", "example.com", ("s1", "s2", "2024a"), ("203.0", "198.51"), "2001:db8:10"),
    ("bounces.example.com", "example.com", ("mta1", "mta2"), ("192.0", "198.18"), "2001:db8:20"),
    ("_spf.mailhost.test", "mailhost.test", ("google", "20230601"), ("209.85", "172.217"),
     "2a00:1450"),
    ("sendgrid.test", "sendgrid.test", ("s1", "smtpapi"), ("167.89", "149.72"), "2604:a880"),
    ("amazonses.test", "amazonses.test", ("ug7nbtf4gccmlpwj322ax3p6ow6yfsug",
     "224i4yxa5dv7c2xz3womw6peuasteono"), ("54.240", "23.251"), "2600:1f18"),
    ("mcsv.test", "mcdlv.test", ("k1", "k2", "k3"), ("198.2", "205.201"), "2607:f8b0"),
    ("outbound.protection.test", "example.onmicrosoft.test",
     ("selector1", "selector2"), ("40.107", "52.100"), "2a01:111"),
)
REPORTERS = (
    ("google.com", "noreply-dmarc-support@google.com", "https://support.google.com/a/answer/2466580"),
    ("Outlook.com", "dmarcreport@microsoft.com", "https://aka.ms/dmarc"),
    ("Yahoo", "dmarchelp@yahooinc.com", "https://senders.yahooinc.com/contact"),
    ("Mail.Ru", "dmarc_support@corp.mail.ru", "https://help.mail.ru/mail/postmaster/dmarc"),
)
REASONS = (
    ("forwarded", "looks forwarded, downgrade to none"),
    ("local_policy", "arc=pass as.1.google.com=pass"),
    ("mailing_list", "list-id header present"),
    ("sampled_out", ""),
    ("trusted_forwarder", "known forwarder"),
)


def _ip(rng: random.Random, sender: tuple[str, str, tuple[str, ...], tuple[str, ...], str]) -> str:
    """Mostly unique sender IPs, ~12% IPv6, like a large provider's daily report."""
    roll = rng.random()
    if roll < 0.12:
        return f"{sender[4]}:{rng.randrange(65536):x}::{rng.randrange(1, 65536):x}"
    if roll < 0.25:  # unrelated senders (spoofers, forwarders) anywhere in the IPv4 space
        return (f"{rng.randrange(1, 224)}.{rng.randrange(256)}."
                f"{rng.randrange(256)}.{rng.randrange(1, 255)}")
    return f"{rng.choice(sender[3])}.{rng.randrange(256)}.{rng.randrange(1, 255)}"


def _record(rng: random.Random) -> str:
    """One <record>, with the optional parts real reporters include some of the time."""
    sender = rng.choice(SENDERS)
    header_from = rng.choice(OWN_DOMAINS)
    spoofed = rng.random() < 0.08
    env_from = f"spoof{rng.randrange(1000)}.test" if spoofed else sender[0]
    dkim_pass = not spoofed and rng.random() < 0.85
    spf_pass = not spoofed and rng.random() < 0.8
    dkim_aligned = dkim_pass and sender[1].endswith("example.com")
    spf_aligned = spf_pass and env_from.endswith("example.com")
    dmarc_pass = dkim_aligned or spf_aligned
    disposition = "none" if dmarc_pass else rng.choices(
        ("none", "quarantine", "reject"), weights=(5, 3, 2))[0]
    count = rng.choices((1, rng.randrange(2, 20), rng.randrange(20, 5000)),
                        weights=(70, 25, 5))[0]
    reason = ""
    if not dmarc_pass and disposition == "none" and rng.random() < 0.5:
        rtype, comment = rng.choice(REASONS)
        reason = f"<reason><type>{rtype}</type><comment>{comment}</comment></reason>\n"
    envelope_to = (f"<envelope_to>{header_from}</envelope_to>\n"
                   if rng.random() < 0.3 else "")
    dkims = [(sender[1], rng.choice(sender[2]), "pass" if dkim_pass else
              rng.choice(("fail", "neutral", "temperror", "permerror")))]
    if rng.random() < 0.35:  # second signature, e.g. the ESP's own d= next to the customer's
        dkims.append((rng.choice(("mailhost.test", "esp-signing.test", header_from)),
                      rng.choice(("s1024", "k2", "default")), rng.choice(("pass", "fail"))))
    dkim_xml = "".join(
        f"<dkim>\n<domain>{d}</domain>\n<selector>{s}</selector>\n<result>{r}</result>\n"
        "</dkim>\n" for d, s, r in dkims)
    spf_result = "pass" if spf_pass else rng.choice(("fail", "softfail", "neutral", "none"))
    # One element per line without indentation, as several large reporters send it.
    return (
        f"<record>\n<row>\n<source_ip>{_ip(rng, sender)}</source_ip>\n"
        f"<count>{count}</count>\n<policy_evaluated>\n"
        f"<disposition>{disposition}</disposition>\n"
        f"<dkim>{'pass' if dkim_aligned else 'fail'}</dkim>\n"
        f"<spf>{'pass' if spf_aligned else 'fail'}</spf>\n{reason}"
        f"</policy_evaluated>\n</row>\n<identifiers>\n{envelope_to}"
        f"<envelope_from>{env_from}</envelope_from>\n"
        f"<header_from>{header_from}</header_from>\n</identifiers>\n"
        f"<auth_results>\n{dkim_xml}<spf>\n<domain>{env_from}</domain>\n"
        f"<scope>mfrom</scope>\n<result>{spf_result}</result>\n</spf>\n"
        "</auth_results>\n</record>\n"
    )


def _document(n: int, seed: int) -> Iterator[str]:
    """Yield the report in chunks: header, CHUNK_RECORDS-record blocks, footer."""
    rng = random.Random(seed * 1_000_003 + n)
    org, email, contact = rng.choice(REPORTERS)
    begin = 1_717_200_000 + 86_400 * rng.randrange(365)
    yield (
        '<?xml version="1.0" encoding="UTF-8" ?>\n<feedback>\n  <version>1.0</version>\n'
        f"  <report_metadata>\n    <org_name>{org}</org_name>\n    <email>{email}</email>\n"
        f"    <extra_contact_info>{contact}</extra_contact_info>\n"
        f"    <report_id>{rng.getrandbits(64)}{n}</report_id>\n"
        f"    <date_range>\n      <begin>{begin}</begin>\n      <end>{begin + 86_399}</end>\n"
        "    </date_range>\n  </report_metadata>\n  <policy_published>\n"
        "    <domain>example.com</domain>\n    <adkim>r</adkim>\n    <aspf>r</aspf>\n"
        "    <p>quarantine</p>\n    <sp>reject</sp>\n    <pct>100</pct>\n    <fo>1</fo>\n"
        "  </policy_published>\n"
    )
    for start in range(0, n, CHUNK_RECORDS):
        yield "".join(_record(rng) for _ in range(min(CHUNK_RECORDS, n - start)))
    yield "</feedback>\n"


def make_report(n: int, seed: int = DEFAULT_SEED, data_dir: Path = DATA_DIR,
                force: bool = False) -> tuple[Path, Path]:
    """Write agg-<n>.xml and agg-<n>.xml.gz unless both exist; return their paths.

    Each file is written under a temporary name and renamed, so an existing file is complete.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    xml_path = data_dir / f"agg-{n}.xml"
    gz_path = data_dir / f"agg-{n}.xml.gz"
    if force or not xml_path.exists():
        tmp = xml_path.with_suffix(".xml.tmp")
        with open(tmp, "w", encoding="utf-8", buffering=1 << 20) as out:
            for chunk in _document(n, seed):
                out.write(chunk)
        os.replace(tmp, xml_path)
        force = True  # the .gz must follow the new .xml
    if force or not gz_path.exists():
        tmp = gz_path.with_suffix(".gz.tmp")
        with open(xml_path, "rb") as src, open(tmp, "wb") as raw, \
                gzip.GzipFile(filename=xml_path.name, mode="wb", fileobj=raw,
                              compresslevel=GZIP_LEVEL, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
        os.replace(tmp, gz_path)
    return xml_path, gz_path


def parse_sizes(text: str) -> list[int]:
    """Accept '1000,10k,1M' style lists so the command lines stay short."""
    sizes = []
    for part in text.split(","):
        part = part.strip().lower()
        mult = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        sizes.append(int(part.rstrip("km")) * mult)
    return sizes


def main(argv: list[str] | None = None) -> int:
    """CLI entry: generate the requested sizes and print their file sizes."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=parse_sizes, default=list(DEFAULT_SIZES))
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--out", type=Path, default=DATA_DIR)
    ap.add_argument("--force", action="store_true", help="rewrite files that already exist")
    args = ap.parse_args(argv)
    for n in args.sizes:
        xml_path, gz_path = make_report(n, args.seed, args.out, args.force)
        xml_size = xml_path.stat().st_size
        print(f"{n:>9} records: {xml_path.name} {xml_size / 1e6:8.1f} MB "
              f"({xml_size / n:.0f} B/record), {gz_path.name} "
              f"{gz_path.stat().st_size / 1e6:7.1f} MB", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
