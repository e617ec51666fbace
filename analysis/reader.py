"""From an input (file, folder, bytes) to reports, whatever the wrapping.

An input is classified by its bytes, unwrapped (gzip, zip, e-mail, mbox) as often as the depth
limit allows, and every report inside is yielded as it is found. Streams stay open while a yielded
aggregate report's records are read, so consume `report.records` before moving on.
"""

from __future__ import annotations

import io
import os
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from analysis.aggregate import parse_aggregate
from analysis.errors import CorruptInput, LimitExceeded, NotAReport, RejectedInput
from analysis.limits import Limits
from analysis.model import AggregateReport, Report
from analysis.sniff import HEAD_BYTES, kind_by_name, sniff
from analysis.streams import ByteStream, CountingReader, GzipReader, output_allowance
from analysis.tls import parse_tls

# The zip and e-mail readers (zipfile, the email package) are imported where they are first used:
# they are a third of the start-up of a command that reads plain XML.

_BUFFER = 256 * 1024


def iter_files(paths: Iterable[str | os.PathLike[str]]) -> Iterator[Path]:
    """Expand folders (recursively, sorted, hidden entries skipped) into the files to read."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Path(root, name)
        else:
            yield path


def read_reports(
    source: str | os.PathLike[str] | bytes, limits: Limits | None = None, *, name: str | None = None
) -> Iterator[Report]:
    """Yield every report in one input: a path (file or folder) or the bytes of one.

    Raise a `RejectedInput` subclass naming the input and the rule it broke; reports already
    yielded stay valid. Reports come out in the order they are found.
    """
    limits = limits or Limits()
    if isinstance(source, bytes):
        label = name or "<bytes>"
        yield from _read_stream(io.BytesIO(source), label, len(source), 0, limits, counted=False)
        return
    path = Path(source)
    if path.is_dir():
        for file in iter_files([path]):
            yield from read_reports(file, limits)
        return
    label = name or str(path)
    try:
        handle = path.open("rb", buffering=_BUFFER)
    except OSError as exc:
        raise NotAReport(label, f"cannot be opened ({exc.strerror or exc})") from None
    with handle:
        yield from _read_stream(handle, label, os.fstat(handle.fileno()).st_size, 0, limits,
                                counted=False, named=path.name)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__


def _label(parent: str, name: str) -> str:
    """`parent > name`, with the name (from a zip or an e-mail: untrusted) made one short line."""
    clean = "".join(c if c.isprintable() else "?" for c in name)
    if len(clean) > 120:
        clean = clean[:117] + "..."
    return f"{parent} > {clean}"


def _peekable(stream: ByteStream) -> io.BufferedReader:
    if isinstance(stream, io.BufferedReader):
        return stream
    return io.BufferedReader(stream, buffer_size=_BUFFER)  # type: ignore[arg-type]


def _read_all(stream: BinaryIO, label: str, limit: int, what: str) -> bytes:
    chunks, size = [], 0
    while size <= limit and (chunk := stream.read(min(_BUFFER, limit + 1 - size))):
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    if len(data) > limit:
        raise LimitExceeded(
            label, f"max_input_bytes={limit}", f"{what} is larger than {limit} bytes"
        )
    return data


def _read_stream(stream: ByteStream, label: str, size: int | None, depth: int, limits: Limits,
                 *, counted: bool, outer: str | None = None, named: str = "",
                 notes: tuple[str, ...] = ()) -> Generator[Report, None, None]:
    """Dispatch on the leading bytes. `counted`: the stream already enforces the output limits;
    `outer`: the compression this stream came out of; `named`: the file or zip member name it
    came under; `notes`: for the reports' `errors`."""
    if depth > limits.max_depth:
        raise LimitExceeded(label, f"max_depth={limits.max_depth}", "containers nested too deeply")
    buffered = _peekable(stream)
    kind = sniff(buffered.peek(HEAD_BYTES)[:HEAD_BYTES])
    if outer and kind in ("gzip", "zip"):  # nested once or more, within max_depth (issue 15)
        notes += (f"{kind} inside {outer}: the report was compressed twice",)
    if kind_by_name(named) not in (None, kind):  # names lie; the bytes decide (issue 15)
        notes += (f"named *.{named.rpartition('.')[2].lower()} but holds {kind}; read by its "
                  "bytes",)
    if kind == "gzip":
        _check_stored_size(label, size, limits)
        inflated = GzipReader(buffered, label, limits, size)
        unzipped = _read_stream(inflated, label, None, depth + 1, limits, counted=True,
                                outer="gzip", notes=notes)
        try:
            for report in unzipped:
                inflated.tell_stray(report.errors)  # (seen once its records are read)
                yield report
        finally:
            unzipped.close()
    elif kind == "zip":
        yield from _read_zip(buffered, label, size, depth, limits, notes)
    elif kind == "xml":
        reader: BinaryIO = buffered
        if not counted:
            reader = CountingReader(buffered, label, limits)  # type: ignore[assignment]
        report = parse_aggregate(reader, label, limits)
        report.errors.extend(notes)
        try:
            yield report
        finally:
            report.records.close()
    elif kind == "json":
        tls = parse_tls(_read_all(buffered, label, limits.max_input_bytes, "JSON report"), label)
        tls.errors.extend(notes)
        yield tls
    elif kind == "email":
        data = _read_all(buffered, label, limits.max_input_bytes, "e-mail")
        yield from _read_email(data, label, depth, limits)
    elif kind == "mbox":
        from analysis.mail import split_mbox

        found = False
        skipped: list[str] = []
        for number, message in enumerate(split_mbox(buffered, label, limits), start=1):
            try:
                inner = f"{label} > message {number}"
                for inner_report in _read_email(message, inner, depth + 1, limits):
                    found = True
                    yield inner_report
            except RejectedInput as exc:
                # An mbox export holds ordinary mail too, some with damaged attachments.
                skipped.append(str(exc))
                continue
        if not found:
            reason = f" ({len(skipped)} messages refused, first: {skipped[0]})" if skipped else ""
            raise NotAReport(label, f"mbox holds no DMARC or TLS report{reason}")
    else:
        raise NotAReport(label, "not a report: content is not XML, JSON, gzip, zip or e-mail")


def _check_stored_size(label: str, size: int | None, limits: Limits) -> None:
    if size is not None and size > limits.max_input_bytes:
        raise LimitExceeded(
            label, f"max_input_bytes={limits.max_input_bytes}",
            f"compressed input is {size} bytes",
        )


def _read_zip(stream: io.BufferedReader, label: str, size: int | None, depth: int,
              limits: Limits, notes: tuple[str, ...]) -> Iterator[Report]:
    import zipfile

    _check_stored_size(label, size, limits)
    if not stream.seekable():
        data = _read_all(stream, label, limits.max_input_bytes, "zip archive")
        stream = io.BufferedReader(io.BytesIO(data))
    declared = _zip_entries(stream)
    if declared is not None and declared > limits.max_members:
        raise LimitExceeded(label, f"max_members={limits.max_members}",
                            f"zip declares {declared} members")
    try:
        archive = zipfile.ZipFile(stream)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError) as exc:
        raise CorruptInput(label, f"damaged zip archive ({_one_line(exc)})") from None
    with archive:
        members = [info for info in archive.infolist() if not info.filename.endswith("/")]
        if len(members) > limits.max_members:
            raise LimitExceeded(
                label, f"max_members={limits.max_members}", f"zip has {len(members)} members"
            )
        found = False
        for info in members:
            # Nothing requires a name, and reports are known by their bytes (issue 15).
            member = _label(label, info.filename or "<unnamed member>")
            if info.flag_bits & 0x1:
                raise CorruptInput(member, "zip member is encrypted")
            allowance, limit = output_allowance(limits, info.compress_size)
            if info.file_size > allowance:  # refuse on the declared size, before inflating
                detail = (f"max_ratio={limits.max_ratio}" if limit == "max_ratio"
                          else f"max_decompressed_bytes={limits.max_decompressed_bytes}")
                raise LimitExceeded(member, detail, f"declares {info.file_size} bytes inflated")
            try:
                raw = archive.open(info)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
                    NotImplementedError, RuntimeError) as exc:
                raise CorruptInput(member, f"damaged zip member ({_one_line(exc)})") from None
            try:
                with raw:
                    counted = CountingReader(raw, member, limits, info.compress_size)
                    for report in _read_stream(counted, member, None, depth + 1, limits,
                                               counted=True, outer="zip",
                                               named=info.filename, notes=notes):
                        found = True
                        yield report
            except NotAReport:
                continue  # a readme or other file beside the report
        if not found:
            raise NotAReport(label, "zip holds no DMARC or TLS report")


def _zip_entries(stream: BinaryIO) -> int | None:
    """The entry count the end-of-central-directory record declares (None if not found), read
    before `zipfile` loads a central directory of any size into memory."""
    stream.seek(0, io.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - 65_557))  # the record (22 bytes) plus the longest comment
    tail = stream.read()
    stream.seek(0)
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) < at + 12:
        return None
    count = int.from_bytes(tail[at + 10:at + 12], "little")
    return None if count == 0xFFFF else count  # zip64: zipfile checks it after reading


def _read_email(data: bytes, label: str, depth: int, limits: Limits) -> Iterator[Report]:
    from analysis.failure import find_failure_report
    from analysis.mail import parse_message, report_parts
    from analysis.mailauth import mail_evidence

    msg = parse_message(data, label)
    failure = find_failure_report(msg, label)
    if failure is not None:
        yield failure
        return
    # the outermost e-mail delivered the report: its word replaces a forwarded one's inside it
    evidence = mail_evidence(msg.raw_items())  # unparsed: a hostile header cannot break it
    found = False
    refused: RejectedInput | None = None
    for part_label, payload, level, note in report_parts(msg, label, limits, depth):
        try:
            for report in _read_stream(io.BytesIO(payload), _label(label, part_label),
                                       len(payload), level + 1, limits, counted=False,
                                       notes=(note,) if note else ()):
                found = True
                if isinstance(report, AggregateReport):
                    report.mail = evidence
                yield report
        except NotAReport:
            continue  # an HTML body or another XML/JSON attachment that is not a report
        except RejectedInput as exc:  # read the other parts first: one may be the report
            refused = refused or exc
    if refused is not None:
        raise refused
    if not found:
        raise NotAReport(label, "e-mail holds no DMARC or TLS report")
