"""Hostile input: bombs, floods, entity tricks and damaged containers are refused, and cheaply.

Every bomb here is built small (the deflate stream of one chunk is repeated, never the inflated
bytes), and every test measures what a careless reader would have spent: bytes inflated and
decompressors opened (any zlib decompressor in the process is metered), bytes handed to the XML
parser, and peak memory. Work, never time: a loaded machine is slow, not wrong (timings belong in
bench/).
"""

from __future__ import annotations

import base64
import dataclasses
import os
import struct
import subprocess
import sys
import threading
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from analysis import (
    AggregateReport,
    CorruptInput,
    LimitExceeded,
    Limits,
    NotAReport,
    RejectedInput,
    UnsafeXml,
    read_reports,
)
from tests.builders import zipped

MiB = 1024 * 1024
GiB = 1024 * MiB
DEFAULTS = Limits()

HEAD = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<feedback><version>1.0</version><report_metadata>'
    b"<org_name>Hostile Receiver</org_name><email>dmarc@hostile.example</email>"
    b"<report_id>bomb-1</report_id><date_range><begin>1764288000</begin><end>1764374399</end>"
    b"</date_range></report_metadata><policy_published><domain>example.com</domain><p>none</p>"
    b"</policy_published>\n"
)
RECORD = (
    b"<record><row><source_ip>192.0.2.1</source_ip><count>3</count><policy_evaluated>"
    b"<disposition>none</disposition><dkim>pass</dkim><spf>pass</spf></policy_evaluated></row>"
    b"<identifiers><header_from>example.com</header_from></identifiers><auth_results><spf>"
    b"<domain>example.com</domain><result>pass</result></spf></auth_results></record>\n"
)
REPORT = HEAD + RECORD + b"</feedback>\n"


# --- reading ---------------------------------------------------------------------------------


def read_all(source: bytes | Path, limits: Limits | None = None,
             name: str | None = None) -> list[tuple[Any, list[Any]]]:
    """Every report of an input, with the records of each read while the reader is on it."""
    out = []
    for report in read_reports(source, limits, name=name):
        records = list(report.records) if isinstance(report, AggregateReport) else []
        out.append((report, records))
    return out


def record_counts(source: bytes | Path, limits: Limits | None = None) -> list[int]:
    return [sum(r.count for r in records) for _, records in read_all(source, limits)]


def refusal(source: bytes | Path, limits: Limits | None = None,
            name: str | None = None) -> RejectedInput:
    with pytest.raises(RejectedInput) as info:
        read_all(source, limits, name)
    return info.value


def assert_limit(error: RejectedInput, *names: str) -> None:
    """`error` is a LimitExceeded naming one of the limits `names` (with its value)."""
    assert isinstance(error, LimitExceeded), repr(error)
    limit_name, _, value = error.limit.partition("=")
    assert limit_name in names, error.limit
    assert value.isdigit(), error.limit
    assert error.limit in str(error)


# --- building bombs without ever holding them --------------------------------------------------


def _gf2_times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: list[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A+B from the CRCs of A and B (zlib's crc32_combine, which Python lacks)."""
    odd = [0xEDB88320] + [1 << i for i in range(31)]
    even = _gf2_square(odd)
    odd = _gf2_square(even)
    while len2:
        even = _gf2_square(odd)
        if len2 & 1:
            crc1 = _gf2_times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _gf2_square(even)
        if len2 & 1:
            crc1 = _gf2_times(odd, crc1)
        len2 >>= 1
    return crc1 ^ crc2


@dataclasses.dataclass(frozen=True)
class Deflated:
    stream: bytes  # raw deflate (no header)
    crc: int
    size: int  # inflated size


def deflate_repeated(head: bytes, chunk: bytes, copies: int, tail: bytes = b"") -> Deflated:
    """`head`, `copies` times `chunk`, then `tail`, deflated in a few milliseconds.

    After a full flush the compressor starts from scratch, so each copy of `chunk` deflates to
    the same bytes: compress it once and repeat the output.
    """
    deflater = zlib.compressobj(9, zlib.DEFLATED, -15)
    first = deflater.compress(head) + deflater.flush(zlib.Z_FULL_FLUSH)
    block = deflater.compress(chunk) + deflater.flush(zlib.Z_FULL_FLUSH)
    last = deflater.compress(tail) + deflater.flush(zlib.Z_FINISH)
    crc = zlib.crc32(head)
    unit, unit_len, n = zlib.crc32(chunk), len(chunk), copies
    while n:
        if n & 1:
            crc = crc32_combine(crc, unit, unit_len)
        unit, unit_len, n = crc32_combine(unit, unit, unit_len), unit_len * 2, n >> 1
    crc = zlib.crc32(tail, crc)
    return Deflated(first + block * copies + last, crc, len(head) + len(chunk) * copies + len(tail))


def gzip_of(deflated: Deflated) -> bytes:
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + deflated.stream
            + struct.pack("<II", deflated.crc, deflated.size & 0xFFFFFFFF))


def gzip_bytes(data: bytes) -> bytes:
    return gzip_of(deflate_repeated(data, b"", 0))


def zip_of(name: str, deflated: Deflated, *, local_size: int | None = None,
           central_size: int | None = None, method: int = 8, flags: int = 0) -> bytes:
    """A one-member zip archive; the two declared inflated sizes may be made to lie."""
    raw_name = name.encode()
    csize = len(deflated.stream)
    local_usize = deflated.size if local_size is None else local_size
    central_usize = deflated.size if central_size is None else central_size
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, flags, method, 0, 0x5B21,
                        deflated.crc, csize, local_usize, len(raw_name), 0) + raw_name
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, flags, method, 0, 0x5B21,
                          deflated.crc, csize, central_usize, len(raw_name), 0, 0, 0, 0, 0,
                          0) + raw_name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central),
                      len(local) + csize, 0)
    return local + deflated.stream + central + end


def email_with(*attachments: tuple[str, str, bytes], headers: bytes = b"") -> bytes:
    """A multipart e-mail; each attachment is (filename parameter as written, type, bytes)."""
    parts = [
        b"From: noreply-dmarc@receiver.example\r\nTo: dmarc@example.com\r\n"
        b"Subject: Report Domain: example.com\r\nMIME-Version: 1.0\r\n" + headers
        + b'Content-Type: multipart/mixed; boundary="=b="\r\n\r\n--=b=\r\n'
        b"Content-Type: text/plain\r\n\r\nA DMARC aggregate report.\r\n"
    ]
    for filename, ctype, data in attachments:
        parts.append(
            f"--=b=\r\nContent-Type: {ctype}\r\nContent-Disposition: attachment; {filename}\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n".encode()
            + base64.encodebytes(data).replace(b"\n", b"\r\n")
        )
    return b"".join(parts) + b"--=b=--\r\n"


def report_email(data: bytes, filename: str = "report.xml.gz") -> bytes:
    return email_with((f'filename="{filename}"', "application/gzip", data))


def forward(message: bytes) -> bytes:
    """An e-mail whose whole body is `message`, attached as message/rfc822."""
    return (b"From: admin@example.com\r\nTo: dmarc@example.com\r\nSubject: Fwd: DMARC\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n" + message)


# --- measuring ---------------------------------------------------------------------------------


class InflateMeter:
    """Counts the bytes every zlib decompressor created while it is installed hands out, and
    the decompressors (one per gzip stream or zip member opened)."""

    def __init__(self) -> None:
        self.inflated = 0
        self.streams = 0


@pytest.fixture
def meter(monkeypatch: pytest.MonkeyPatch) -> InflateMeter:
    meter = InflateMeter()
    real_decompressobj, real_decompress = zlib.decompressobj, zlib.decompress

    class Metered:
        def __init__(self, inner: Any) -> None:
            self._inner = inner

        def decompress(self, data: bytes, max_length: int = 0) -> bytes:
            out = self._inner.decompress(data, max_length)
            meter.inflated += len(out)
            return out

        def flush(self, *args: int) -> bytes:
            out = self._inner.flush(*args)
            meter.inflated += len(out)
            return out

        def __getattr__(self, name: str) -> Any:
            return getattr(self._inner, name)

    def decompress(data: bytes, *args: Any, **kwargs: Any) -> bytes:
        meter.streams += 1
        out = real_decompress(data, *args, **kwargs)
        meter.inflated += len(out)
        return out

    def decompressobj(*args: Any, **kwargs: Any) -> Metered:
        meter.streams += 1
        return Metered(real_decompressobj(*args, **kwargs))

    monkeypatch.setattr(zlib, "decompressobj", decompressobj)
    monkeypatch.setattr(zlib, "decompress", decompress)
    return meter


class XmlMeter:
    """Counts the bytes handed to lxml's parser: what it can spend time or memory on."""

    def __init__(self) -> None:
        self.fed = 0


@pytest.fixture
def xml_meter(monkeypatch: pytest.MonkeyPatch) -> XmlMeter:
    meter = XmlMeter()

    class MeteredParser(etree.XMLPullParser):  # type: ignore[misc]
        def feed(self, data: bytes | str) -> None:
            meter.fed += len(data)
            super().feed(data)

    monkeypatch.setattr(etree, "XMLPullParser", MeteredParser)
    return meter


@dataclasses.dataclass
class Cost:
    peak_bytes: int = 0


def costed(action: Callable[[], object]) -> tuple[Cost, object]:
    """Run `action`, returning its peak Python memory, and its result or error."""
    cost = Cost()
    tracemalloc.start()
    try:
        result: object = action()
    except RejectedInput as exc:
        result = exc
    finally:
        cost.peak_bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return cost, result


# --- gzip bombs --------------------------------------------------------------------------------

GZIP_BOMBS = {
    # About 1 GiB inflated each, about 1-2.5 MB as sent.
    "whitespace after a valid header": (HEAD, b" " * MiB, 1024),
    "comments after a valid header": (HEAD, b"<!-- padding -->" * (MiB // 16), 1024),
    "newlines inside <feedback>": (b"<feedback>", b"\n" * MiB, 1024),
}


@pytest.fixture(scope="module")
def gzip_bombs() -> dict[str, bytes]:
    return {name: gzip_of(deflate_repeated(*spec)) for name, spec in GZIP_BOMBS.items()}


@pytest.mark.parametrize("kind", sorted(GZIP_BOMBS))
@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_gzip_bomb_is_refused_after_inflating_a_fraction(
    kind: str, as_file: bool, gzip_bombs: dict[str, bytes], meter: InflateMeter, tmp_path: Path,
) -> None:
    bomb = gzip_bombs[kind]
    head, chunk, copies = GZIP_BOMBS[kind]
    full_size = len(head) + len(chunk) * copies
    assert full_size >= GiB // 2 and len(bomb) < 3 * MiB
    source: bytes | Path = bomb
    if as_file:
        source = tmp_path / "bomb.xml.gz"
        source.write_bytes(bomb)

    cost, error = costed(lambda: read_all(source, name="bomb.xml.gz"))

    assert isinstance(error, RejectedInput), f"bomb accepted: {error!r}"
    assert_limit(error, "max_ratio", "max_decompressed_bytes")
    assert str(error).startswith("bomb.xml.gz")
    allowance = max(len(bomb) * DEFAULTS.max_ratio, MiB)
    assert 0 < meter.inflated <= allowance + MiB, meter.inflated
    assert meter.inflated < full_size / 3
    assert cost.peak_bytes < 32 * MiB, cost.peak_bytes


def test_gzip_bomb_of_zeros_is_refused_at_once(meter: InflateMeter) -> None:
    """Not XML at all: refused on its first bytes, long before any limit."""
    bomb = gzip_of(deflate_repeated(b"", b"\0" * MiB, 1024))
    cost, error = costed(lambda: read_all(bomb))
    assert isinstance(error, RejectedInput), repr(error)
    assert meter.inflated <= MiB and meter.streams == 1
    assert cost.peak_bytes < 4 * MiB, cost.peak_bytes


def test_gzip_bomb_is_held_to_a_small_max_decompressed_bytes(meter: InflateMeter) -> None:
    bomb = gzip_of(deflate_repeated(HEAD, b" " * MiB, 256))
    limits = Limits(max_decompressed_bytes=2 * MiB)
    error = refusal(bomb, limits)
    assert_limit(error, "max_decompressed_bytes")
    assert "max_decompressed_bytes=2097152" in str(error)
    assert meter.inflated <= 3 * MiB


@pytest.mark.parametrize("wrap", [
    pytest.param(gzip_bytes, id="gzip-in-gzip"),
    pytest.param(lambda inner: zipped(("report.xml.gz", inner)), id="gzip-in-zip"),
    pytest.param(lambda inner: report_email(gzip_bytes(inner)), id="gzip-in-gzip-in-email"),
])
def test_nested_gzip_bomb_is_still_held_to_the_ratio(
    wrap: Callable[[bytes], bytes], meter: InflateMeter,
) -> None:
    """A bomb wrapped once more must not escape `max_ratio` because its own size is unknown.

    256 MiB of whitespace gzip to ~256 KB, which gzip (or zip) again to ~1 KB: the input
    inflates ~200,000 times. Each layer, or the whole, must stay within the ratio limit.
    """
    inner = gzip_of(deflate_repeated(HEAD, b" " * MiB, 256))
    outer = wrap(inner)
    assert len(outer) < 64 * 1024
    cost, error = costed(lambda: read_all(outer))
    assert isinstance(error, RejectedInput), f"nested bomb accepted after {meter.inflated} bytes"
    assert_limit(error, "max_ratio", "max_decompressed_bytes")
    assert meter.inflated < 200 * MiB, meter.inflated
    assert cost.peak_bytes < 32 * MiB, cost.peak_bytes


# --- zip bombs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zip_bomb_stream() -> Deflated:
    return deflate_repeated(HEAD, b" " * MiB, 1024, b"</feedback>\n")


def test_zip_bomb_with_honest_size_is_refused_before_inflating(
    zip_bomb_stream: Deflated, meter: InflateMeter,
) -> None:
    bomb = zip_of("bomb.xml", zip_bomb_stream)
    assert zip_bomb_stream.size > GiB and len(bomb) < 2 * MiB
    cost, error = costed(lambda: read_all(bomb, name="bombs.zip"))
    assert isinstance(error, RejectedInput), repr(error)
    assert_limit(error, "max_ratio")
    assert str(error).startswith("bombs.zip > bomb.xml")
    assert meter.inflated == 0
    assert cost.peak_bytes < 4 * MiB, cost.peak_bytes
    # The meter does see zip members being inflated.
    assert record_counts(zipped(("r.xml", REPORT))) == [3]
    assert meter.inflated > 0


def test_zip_bomb_over_max_decompressed_bytes_names_that_limit(
    zip_bomb_stream: Deflated, meter: InflateMeter,
) -> None:
    bomb = zip_of("bomb.xml", zip_bomb_stream)
    error = refusal(bomb, Limits(max_decompressed_bytes=64 * MiB, max_ratio=100_000))
    assert_limit(error, "max_decompressed_bytes")
    assert meter.inflated == 0


@pytest.mark.parametrize(("where", "declared"), [
    ("central", 1000),
    ("both", 1000),
    ("both", "just-under-allowance"),
    ("local", 1000),
])
def test_zip_bomb_that_lies_about_its_size_is_cut_off_while_streaming(
    zip_bomb_stream: Deflated, meter: InflateMeter, where: str, declared: int | str,
) -> None:
    """The inflated size in the headers is patched down; the data still inflates to 1 GiB.

    Python's zipfile stops a member at its declared size and then fails its CRC, so a refusal
    as corrupt is as good as one by the limit: what matters is that inflation stops early.
    """
    allowance = max(len(zip_bomb_stream.stream) * DEFAULTS.max_ratio, MiB)
    size = allowance - 1024 if declared == "just-under-allowance" else declared
    assert isinstance(size, int)
    bomb = zip_of(
        "bomb.xml", zip_bomb_stream,
        local_size=size if where in ("local", "both") else None,
        central_size=size if where in ("central", "both") else None,
    )
    cost, error = costed(lambda: read_all(bomb, name="liar.zip"))
    assert isinstance(error, RejectedInput), f"lying zip accepted: {error!r}"
    assert isinstance(error, LimitExceeded | CorruptInput), repr(error)
    assert str(error).startswith("liar.zip")
    assert "\n" not in str(error)
    assert meter.inflated <= allowance + 2 * MiB, meter.inflated
    assert meter.inflated < zip_bomb_stream.size / 4
    assert cost.peak_bytes < 32 * MiB


def test_too_many_zip_members() -> None:
    members = [(f"r{i}.xml", REPORT.replace(b"bomb-1", f"id-{i}".encode())) for i in range(4)]
    limits = Limits(max_members=3)
    assert record_counts(zipped(*members[:3]), limits) == [3, 3, 3]
    error = refusal(zipped(*members), limits, name="many.zip")
    assert_limit(error, "max_members")
    assert "max_members=3" in str(error) and str(error).startswith("many.zip")


def test_too_many_email_parts() -> None:
    limits = Limits(max_members=3)
    parts = [(f'filename="r{i}.xml.gz"', "application/gzip", gzip_bytes(REPORT)) for i in range(4)]
    error = refusal(email_with(*parts), limits, name="many.eml")
    assert_limit(error, "max_members")
    assert str(error).startswith("many.eml")


# --- nesting -----------------------------------------------------------------------------------

WRAPPERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip_bytes,
    "zip": lambda data: zipped(("inner", data)),
    "email": lambda data: report_email(data, "inner.bin"),
}


def nest(data: bytes, kinds: list[str]) -> bytes:
    for kind in kinds:
        data = WRAPPERS[kind](data)
    return data


@pytest.mark.parametrize("kinds", [
    ["gzip", "gzip", "gzip"],
    ["zip", "zip", "zip"],
    ["gzip", "zip", "email"],
    ["zip", "gzip", "email"],
], ids="-".join)
def test_containers_nested_beyond_max_depth(kinds: list[str]) -> None:
    limits = Limits(max_depth=3)
    assert record_counts(nest(REPORT, kinds), limits) == [3]
    for extra in ("gzip", "zip"):
        error = refusal(nest(REPORT, [*kinds, extra]), limits, name="deep")
        assert_limit(error, "max_depth")
        assert "max_depth=3" in str(error) and str(error).startswith("deep")


def test_gzip_nested_far_beyond_the_default_depth_is_refused_quickly(meter: InflateMeter
                                                                      ) -> None:
    data = nest(REPORT, ["gzip"] * 200)
    error = refusal(data)
    assert_limit(error, "max_depth")
    # Refused on the layer past the limit (opened to see what it holds): none of the other 193.
    assert 1 <= meter.streams <= DEFAULTS.max_depth + 1, meter.streams


def test_forwarded_emails_count_towards_max_depth() -> None:
    """Limits.max_depth counts "mbox > e-mail > forwarded e-mail > zip > gzip ..."."""
    limits = Limits(max_depth=3)
    message = report_email(gzip_bytes(REPORT))  # e-mail > gzip > XML: two containers
    assert record_counts(forward(message), limits) == [3]  # three
    error = refusal(forward(forward(message)), limits, name="fwd")  # four
    assert_limit(error, "max_depth")


def test_email_forwarded_300_times_is_refused_by_max_depth() -> None:
    message = report_email(gzip_bytes(REPORT))
    for _ in range(300):
        message = forward(message)
    error = refusal(message, name="fwd300")
    assert_limit(error, "max_depth")
    assert str(error).startswith("fwd300")


# --- sizes -------------------------------------------------------------------------------------

SMALL_INPUT = Limits(max_input_bytes=64 * 1024)


@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_email_bigger_than_max_input_bytes(as_file: bool, tmp_path: Path) -> None:
    padding = b"X-Padding: " + b"p" * 70 + b"\r\n"
    message = email_with(("filename=r.xml.gz", "application/gzip", gzip_bytes(REPORT)),
                         headers=padding * 1200)
    assert len(message) > 80 * 1024
    assert record_counts(message) == [3]  # fine under the default limits
    source: bytes | Path = message
    if as_file:
        source = tmp_path / "big.eml"
        source.write_bytes(message)
    error = refusal(source, SMALL_INPUT, name="big.eml")
    assert_limit(error, "max_input_bytes")
    assert "max_input_bytes=65536" in str(error) and str(error).startswith("big.eml")


def test_email_inflated_from_a_small_gzip_is_held_to_max_input_bytes() -> None:
    padding = b"X-Padding: " + b"p" * 70 + b"\r\n"
    message = email_with(("filename=r.xml.gz", "application/gzip", gzip_bytes(REPORT)),
                         headers=padding * 1200)
    error = refusal(gzip_bytes(message), SMALL_INPUT)
    assert_limit(error, "max_input_bytes")


@pytest.mark.parametrize("wrap", [gzip_bytes, lambda d: zipped(("r.xml", d))],
                         ids=["gzip", "zip"])
@pytest.mark.parametrize("as_file", [False, True], ids=["bytes", "file"])
def test_compressed_input_bigger_than_max_input_bytes(
    wrap: Callable[[bytes], bytes], as_file: bool, tmp_path: Path,
) -> None:
    noise = base64.b64encode(os.urandom(70 * 1024))  # does not compress below 64 KiB
    data = wrap(HEAD + b"<!-- " + noise + b" -->" + RECORD + b"</feedback>")
    assert len(data) > SMALL_INPUT.max_input_bytes
    assert record_counts(data) == [3]
    source: bytes | Path = data
    if as_file:
        source = tmp_path / "big.bin"
        source.write_bytes(data)
    error = refusal(source, SMALL_INPUT, name="big.bin")
    assert_limit(error, "max_input_bytes")
    assert str(error).startswith("big.bin")


def test_mbox_message_is_not_held_in_memory_past_max_input_bytes(tmp_path: Path) -> None:
    """One 16 MiB line in an mbox must not be read whole when the limit is 1 MiB."""
    path = tmp_path / "huge-line.mbox"
    with path.open("wb") as out:
        out.write(b"From MAILER-DAEMON Fri Nov 28 00:00:00 2025\nSubject: x\n\n")
        for _ in range(16):
            out.write(b"A" * MiB)
        out.write(b"\n")
    limits = Limits(max_input_bytes=MiB)
    cost, error = costed(lambda: read_all(path, limits))
    assert isinstance(error, RejectedInput), repr(error)
    assert_limit(error, "max_input_bytes")
    assert cost.peak_bytes < 4 * MiB, f"peak {cost.peak_bytes} bytes for a 1 MiB limit"


FLOOD_PROBE = """
import resource, sys
from analysis import AggregateReport, RejectedInput, read_reports
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    for report in read_reports(sys.argv[1]):
        if isinstance(report, AggregateReport):
            for _ in report.records:
                pass
    outcome = "read"
except RejectedInput as exc:
    outcome = type(exc).__name__
print(outcome, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.parametrize("fragment", [
    pytest.param(b"<x/>", id="empty-elements"),
    pytest.param(b"<extension><x/></extension>", id="extensions"),
    pytest.param(b"<x><y/></x>", id="nested-elements"),
    pytest.param(b"<?pi data?>", id="processing-instructions"),
])
@pytest.mark.parametrize("stray", [b"", b"<stray>", b"<record><row>"],
                         ids=["top-level", "under-stray-open-tag", "inside-an-open-record"])
def test_element_flood_does_not_grow_memory(fragment: bytes, stray: bytes, tmp_path: Path
                                            ) -> None:
    """8 MiB of unknown elements between records: memory must stay flat, as it does for records.

    (Inside a 1 MB gzip bomb under the default limits this is 150 MB of elements.) A stray open
    tag, whose records are still read, must not shelter the flood; nor may a record, which is
    kept whole while it is open.
    """
    path = tmp_path / "flood.xml"
    with path.open("wb") as out:
        out.write(HEAD + stray + RECORD)
        out.write(fragment * (8 * MiB // len(fragment)))
        out.write(RECORD + b"</feedback>\n")
    result = subprocess.run([sys.executable, "-c", FLOOD_PROBE, str(path)], capture_output=True,
                            text=True, timeout=120, check=True)
    outcome, grown_kib = result.stdout.split()
    assert outcome in ("read", "LimitExceeded", "CorruptInput", "NotAReport")
    assert int(grown_kib) < 32 * 1024, f"peak memory grew {int(grown_kib) // 1024} MiB"


@pytest.mark.parametrize("part", [b"record", b"report_metadata", b"policy_published"])
def test_a_report_part_larger_than_1_mib_is_refused(part: bytes) -> None:
    data = REPORT.replace(b"<" + part + b">", b"<" + part + b">" + b"<x>flood</x>" * 100_000, 1)
    name = part.decode()
    with pytest.raises(LimitExceeded, match=rf"<{name}> is larger than 1 MiB \(limit 1 MiB per "
                       r"report part\)"):
        for report in read_reports(data, name="big.xml"):
            list(report.records)  # type: ignore[union-attr]


def test_processing_instructions_before_the_root_are_refused_quickly(xml_meter: XmlMeter
                                                                     ) -> None:
    # lxml's cost grows with the square of what comes before the root element: bound what it
    # is given (one 64 KiB chunk, and the marker put before the root).
    data = REPORT.replace(b"<feedback>", b"<?a?>" * (1 * MiB // 5) + b"<feedback>", 1)
    with pytest.raises(NotAReport, match="no root element in its first 64 KiB"):
        read_all(data, name="pis.xml")
    assert 0 < xml_meter.fed <= 64 * 1024 + 64, xml_meter.fed


def test_processing_instructions_after_the_report_do_not_grow_memory(tmp_path: Path) -> None:
    path = tmp_path / "trailer.xml"
    path.write_bytes(REPORT + b"<?a?>" * (16 * MiB // 5))
    result = subprocess.run([sys.executable, "-c", FLOOD_PROBE, str(path)], capture_output=True,
                            text=True, timeout=120, check=True)
    outcome, grown_kib = result.stdout.split()
    assert outcome == "CorruptInput"
    assert int(grown_kib) < 32 * 1024, f"peak memory grew {int(grown_kib) // 1024} MiB"
    with pytest.raises(CorruptInput, match="more than 512 bytes follow the closing </feedback>"):
        read_all(path)


def test_a_long_dtd_is_refused_before_it_is_read(xml_meter: XmlMeter) -> None:
    data = REPORT.replace(b"<feedback>", b'<!DOCTYPE feedback [<!ENTITY a "' + b"A" * (16 * MiB)
                          + b'">]><feedback>', 1)
    with pytest.raises(UnsafeXml, match="DTD"):
        read_all(data, name="dtd.xml")
    assert xml_meter.fed == 0  # refused from its first bytes: lxml never sees the DTD


# --- XML tricks --------------------------------------------------------------------------------


def billion_laughs(root: bytes) -> bytes:
    entities = b'<!ENTITY lol0 "lol">' + b"".join(
        b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, 10)
    )
    return (b'<?xml version="1.0"?>\n<!DOCTYPE ' + root + b" [" + entities + b"]>\n<" + root
            + b">&lol9;</" + root + b">\n")


@pytest.mark.parametrize("document", [
    pytest.param(billion_laughs(b"lolz"), id="billion-laughs-classic"),
    pytest.param(billion_laughs(b"feedback"), id="billion-laughs-feedback"),
    pytest.param(REPORT.replace(b"\n<feedback>", b'\n<!DOCTYPE feedback [<!ENTITY a "'
                                + b"A" * 100_000 + b'">]>\n<feedback>').replace(
        b"Hostile Receiver", b"&a;" * 10_000), id="quadratic-blowup"),
    pytest.param(billion_laughs(b"feedback")[:-12] + HEAD[HEAD.index(b"<version>"):]
                 + b"</feedback>", id="laughs-then-report"),
])
@pytest.mark.parametrize("wrap", [lambda d: d, gzip_bytes, report_email],
                         ids=["raw", "gzip", "email"])
def test_entity_expansion_bombs_are_unsafe_xml(document: bytes, wrap: Callable[[bytes], bytes],
                                               xml_meter: XmlMeter) -> None:
    data = wrap(document)
    error = refusal(data, name="laughs.xml")
    assert xml_meter.fed == 0  # refused from its first bytes: no entity is ever parsed
    assert isinstance(error, UnsafeXml), repr(error)
    assert str(error).startswith("laughs.xml")


@pytest.fixture
def secret(tmp_path: Path) -> tuple[Path, str]:
    token = "TOPSECRET-" + os.urandom(8).hex()
    path = tmp_path / "secret.txt"
    path.write_text(token + "\n")
    return path, token


def _with_doctype(doctype: bytes, body: bytes = REPORT) -> bytes:
    return body.replace(b"\n<feedback>", b"\n" + doctype + b"\n<feedback>", 1)


@pytest.mark.parametrize("wrap", [lambda d: d, gzip_bytes, report_email],
                         ids=["raw", "gzip", "email"])
def test_external_entity_is_refused_and_the_file_never_shows(
    secret: tuple[Path, str], wrap: Callable[[bytes], bytes],
) -> None:
    path, token = secret
    uri = path.as_uri().encode()
    document = _with_doctype(b'<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "' + uri + b'">]>')
    document = document.replace(b"Hostile Receiver", b"&xxe;").replace(b"bomb-1", b"&xxe;")
    error = refusal(wrap(document), name="xxe.xml")
    assert isinstance(error, UnsafeXml), repr(error)
    assert str(error).startswith("xxe.xml")
    for shown in (str(error), repr(error), repr(error.args), repr(vars(error))):
        assert token not in shown


def _never_opened(fifo: Path, document: bytes) -> RejectedInput | None:
    """Read `document`, which points at the named pipe `fifo`; fail if the pipe gets opened.

    Opening a pipe for reading blocks until a writer comes, so a reader that loads the DTD
    hangs: give it a few seconds, then unblock it and fail.
    """
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            read_all(document, name="dtd.xml")
            outcome["result"] = None
        except RejectedInput as exc:
            outcome["result"] = exc
        except BaseException as exc:  # reported below
            outcome["result"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(5)
    if thread.is_alive():
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        thread.join(5)
        pytest.fail("the reader opened a file named in the DTD")
    result = outcome["result"]
    assert result is None or isinstance(result, RejectedInput), repr(result)
    return result  # type: ignore[return-value]


@pytest.mark.parametrize("doctype", [
    pytest.param(b'<!DOCTYPE feedback SYSTEM "{uri}">', id="system-dtd"),
    pytest.param(b'<!DOCTYPE feedback PUBLIC "-//X//DTD X//EN" "{uri}">', id="public-dtd"),
    pytest.param(b'<!DOCTYPE feedback [<!ENTITY % pe SYSTEM "{uri}"> %pe;]>',
                 id="parameter-entity-only"),
    pytest.param(b'<!DOCTYPE feedback [<!ENTITY % pe SYSTEM "{uri}">]>',
                 id="parameter-entity-declared"),
])
def test_external_dtd_is_refused_without_being_opened(doctype: bytes, tmp_path: Path) -> None:
    fifo = tmp_path / "evil.dtd"
    os.mkfifo(fifo)
    document = _with_doctype(doctype.replace(b"{uri}", fifo.as_uri().encode()))
    error = _never_opened(fifo, document)
    assert isinstance(error, UnsafeXml), repr(error)
    assert str(error).startswith("dtd.xml")


def test_xinclude_is_not_processed(secret: tuple[Path, str]) -> None:
    path, token = secret
    include = (b'<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="'
               + path.as_uri().encode() + b'" parse="text"/>')
    document = REPORT.replace(b"Hostile Receiver", include).replace(
        b"<header_from>example.com</header_from>",
        b"<header_from>example.com" + include + b"</header_from>",
    )
    ((report, records),) = read_all(document)
    assert [r.count for r in records] == [3]
    shown = repr(report) + repr(records) + repr(report.errors)
    assert token not in shown
    assert records[0].header_from == "example.com"


# --- damaged containers must be refused, never crash --------------------------------------------


def _zip_patched(**changes: int) -> bytes:
    data = bytearray(zipped(("r.xml", REPORT)))
    local, central = data.index(b"PK\x03\x04"), data.index(b"PK\x01\x02")
    if "method" in changes:
        struct.pack_into("<H", data, local + 8, changes["method"])
        struct.pack_into("<H", data, central + 10, changes["method"])
    if "flags" in changes:
        struct.pack_into("<H", data, local + 6, changes["flags"])
        struct.pack_into("<H", data, central + 8, changes["flags"])
    if "damage" in changes:  # overwrite the start of the deflate data
        start = local + 30 + len("r.xml")
        data[start:start + 4] = changes["damage"].to_bytes(4, "big")
    if "local_name" in changes:  # UTF-8 flag on, and a name that is not UTF-8
        struct.pack_into("<H", data, local + 6, 0x800)
        data[local + 30] = changes["local_name"]
    if "version_needed" in changes:  # the version needed to extract, in the central directory
        struct.pack_into("<H", data, central + 6, changes["version_needed"])
    if "directory_offset" in changes:  # where the end record says the central directory is
        end = data.rindex(b"PK\x05\x06")
        offset = struct.unpack_from("<I", data, end + 16)[0]
        struct.pack_into("<I", data, end + 16, offset + changes["directory_offset"])
    return bytes(data)


@pytest.mark.parametrize("data", [
    pytest.param(_zip_patched(method=9), id="zip-deflate64-method"),
    pytest.param(_zip_patched(method=14), id="zip-lzma-method"),
    pytest.param(_zip_patched(method=99), id="zip-aes-method"),
    pytest.param(_zip_patched(flags=0x20), id="zip-patched-data-flag"),
    pytest.param(_zip_patched(damage=0xFFFFFFFF), id="zip-damaged-deflate"),
    pytest.param(_zip_patched(damage=0x05000000), id="zip-deflate-bad-distance"),
    pytest.param(_zip_patched(local_name=0xFF), id="zip-local-name-not-utf8"),
    pytest.param(_zip_patched(directory_offset=1), id="zip-member-offset-before-start"),
    pytest.param(_zip_patched(version_needed=99), id="zip-needs-version-9.9"),
])
def test_damaged_zip_is_refused_not_crashed(data: bytes) -> None:
    error = refusal(data, name="damaged.zip")
    assert isinstance(error, CorruptInput | NotAReport), repr(error)
    assert str(error).startswith("damaged.zip") and "\n" not in str(error)


TLS_DATES = (b'{"organization-name": "R", "report-id": "t-1", "date-range": {"start-datetime": '
             b'"%s", "end-datetime": "2025-11-28T23:59:59Z"}, "policies": []}')
ARF = (b"From: reporter@receiver.example\r\nTo: dmarc@example.com\r\nSubject: DMARC failure\r\n"
       b'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report; '
       b'boundary="B"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nA failure report.\r\n'
       b"--B\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: auth-failure\r\n"
       b"Version: 1\r\nArrival-Date: %s\r\n\r\n--B\r\nContent-Type: message/rfc822\r\n\r\n"
       b"From: sender@example.com\r\nMessage-ID: %s\r\nSubject: hi\r\n\r\nbody\r\n--B--\r\n")
ARF_DATE = b"Tue, 30 Apr 2019 02:09:09 +0000"
ARF_ID = b"<sample@example.com>"
DEEP = 5000


def test_the_templates_below_are_reports_when_their_values_are_sane() -> None:
    ((arf, _),) = read_all(ARF % (ARF_DATE, ARF_ID))
    assert arf.kind == "failure" and arf.sample_headers["message_id"] == ARF_ID.decode()
    ((tls, _),) = read_all(TLS_DATES % b"2025-11-28T00:00:00Z")
    assert tls.kind == "tls" and tls.report_id == "t-1"


@pytest.mark.parametrize("data", [
    pytest.param(TLS_DATES % b"9999-12-31T23:00:00-05:00", id="tls-date-past-year-9999"),
    pytest.param(TLS_DATES % b"0001-01-01T00:00:00+05:00", id="tls-date-before-year-1"),
    pytest.param(ARF % (b"Fri, 31 Dec 9999 23:59:59 -0100", ARF_ID), id="arf-date-past-year-9999"),
    pytest.param(ARF % (ARF_DATE, b"<"), id="arf-sample-message-id-just-bracket"),
    pytest.param(b"From: " + b"(" * DEEP + b")" * DEEP + b" a@example.com\r\nSubject: x\r\n\r\n"
                 b"DMARC failure notice\r\nSender IP Address: 192.0.2.1\r\n",
                 id="text-notice-from-with-nested-comments"),
    pytest.param(b"From: a: b; c\r\nSubject: x\r\n\r\nDMARC failure notice\r\n"
                 b"Sender IP Address: 192.0.2.1\r\n", id="text-notice-from-group-then-junk"),
    pytest.param(email_with(("filename=" + "(" * DEEP, "application/gzip", gzip_bytes(REPORT))),
                 id="attachment-filename-with-nested-comments"),
    pytest.param(email_with(('filename="r.xml.gz"', "application/gzip; x=" + "(" * DEEP,
                             gzip_bytes(REPORT))), id="content-type-with-nested-comments"),
])
def test_hostile_field_values_are_read_or_refused_not_crashed(data: bytes) -> None:
    try:
        read_all(data, name="odd")
    except RejectedInput as exc:
        assert str(exc).startswith("odd") and "\n" not in str(exc)


# --- every refusal: one line, naming the input -------------------------------------------------

REFUSED: dict[str, tuple[bytes, Limits | None]] = {
    "empty": (b"", None),
    "not-a-report": (b"hello world", None),
    "html": (b"<html><body>hi</body></html>", None),
    "truncated-gzip": (gzip_bytes(REPORT)[:-20], None),
    "damaged-zip": (b"PK\x03\x04" + b"\0" * 60, None),
    "doctype": (billion_laughs(b"feedback"), None),
    "bad-json": (b'{"policies": [', None),
    "xml-garbage": (b"<feedback>\0\0\0<<<&&&", None),
    "gzip-depth": (nest(REPORT, ["gzip"] * 4), Limits(max_depth=3)),
    "members": (zipped(*[(f"{i}.xml", REPORT) for i in range(3)]), Limits(max_members=2)),
    "input-size": (gzip_bytes(os.urandom(4096)), Limits(max_input_bytes=1024)),
    "ratio": (gzip_of(deflate_repeated(HEAD, b" " * MiB, 4)), Limits(max_ratio=2)),
    "zip-declared": (zip_of("b.xml", deflate_repeated(HEAD, b" " * MiB, 4)), None),
    "email-no-report": (email_with(('filename="a.txt"', "text/plain", b"hello")), None),
    "mbox-no-report": (b"From x\nSubject: hi\n\nhello\n", None),
    # Names inside the input are the sender's: they must not break the line.
    "zip-member-name-with-newline": (zipped(("evil\nname.xml.gz", gzip_bytes(REPORT)[:-20])),
                                     None),
    "zip-member-name-with-cr": (zipped(("evil\rname.xml", billion_laughs(b"feedback"))),
                                None),
    "attachment-name-with-newline": (email_with((
        "filename*=utf-8''evil%0D%0Aname.xml.gz", "application/gzip", gzip_bytes(REPORT)[:-20]
    )), None),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_every_refusal_is_one_line_naming_the_input(case: str, tmp_path: Path) -> None:
    data, limits = REFUSED[case]
    named = refusal(data, limits, name="suspect input 7")
    path = tmp_path / "suspect file.bin"
    path.write_bytes(data)
    by_path = refusal(path, limits)
    for error, name in ((named, "suspect input 7"), (by_path, str(path))):
        message = str(error)
        assert message.strip() and message.splitlines() == [message], repr(message)
        assert "\r" not in message and "\x00" not in message, repr(message)
        assert message.startswith(name), repr(message)
        assert error.rule in message or error.detail in message


# --- limits from the environment ---------------------------------------------------------------


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Limits)])
@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1.5", "12abc", "0x10"])
def test_limits_from_env_refuse_bad_values_by_name(field: str, raw: str) -> None:
    variable = f"DMARCBOT_{field.upper()}"
    with pytest.raises(ValueError, match=variable) as info:
        Limits.from_env({variable: raw})
    assert "\n" not in str(info.value)


def test_limits_from_env_reads_good_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DMARCBOT_MAX_RATIO", " 42 ")
    monkeypatch.setenv("DMARCBOT_MAX_DEPTH", "")
    limits = Limits.from_env()
    assert limits.max_ratio == 42
    assert limits.max_depth == DEFAULTS.max_depth
    assert Limits.from_env({}) == DEFAULTS
    monkeypatch.setenv("DMARCBOT_MAX_MEMBERS", "zero")
    with pytest.raises(ValueError, match="DMARCBOT_MAX_MEMBERS"):
        Limits.from_env()
