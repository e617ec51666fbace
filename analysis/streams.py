"""Byte streams that enforce the limits while they are read.

Nothing here inflates or reads a whole input up front: readers count as they go and stop with
`LimitExceeded` the moment a limit is crossed, so a bomb costs at most one limit's worth of work.
"""

from __future__ import annotations

import io
import zlib
from typing import IO, BinaryIO

from analysis.errors import CorruptInput, LimitExceeded, RejectedInput
from analysis.limits import Limits, MiB

GZIP_MAGIC = b"\x1f\x8b"
STRAY_AFTER_GZIP = "stray bytes follow the gzip stream; ignored"
_CHUNK = 64 * 1024
#: Small inputs may inflate past the ratio limit without harm (a 200-byte gzip of a short report).
_RATIO_FLOOR = 1 * MiB
#: What the report reader takes: an open binary file, or one of the counting readers below.
ByteStream = BinaryIO | io.RawIOBase


def read_raw(raw: IO[bytes], size: int, source: str) -> bytes:
    """Read from an underlying stream; a failure there means the input is damaged.

    Zip members and files fail in many ways (zlib errors, CRC mismatches, unsupported methods,
    truncated archives); all of them are the input's fault and become one `CorruptInput`.
    """
    try:
        return raw.read(size)
    except RejectedInput:
        raise
    except Exception as exc:
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())[:160]
        raise CorruptInput(source, f"damaged data ({detail})") from None


def output_allowance(limits: Limits, compressed_size: int | None) -> tuple[int, str]:
    """How many bytes an input may inflate to, and the name of the limit that sets it."""
    if compressed_size is None:
        return limits.max_decompressed_bytes, "max_decompressed_bytes"
    by_ratio = max(compressed_size * limits.max_ratio, _RATIO_FLOOR)
    if by_ratio < limits.max_decompressed_bytes:
        return by_ratio, "max_ratio"
    return limits.max_decompressed_bytes, "max_decompressed_bytes"


def _too_big(source: str, limits: Limits, allowance: int, limit: str) -> LimitExceeded:
    if limit == "max_ratio":
        return LimitExceeded(
            source, f"max_ratio={limits.max_ratio}", "decompresses more than the allowed ratio"
        )
    return LimitExceeded(
        source, f"max_decompressed_bytes={limits.max_decompressed_bytes}",
        f"decompresses to more than {allowance} bytes",
    )


class CountingReader(io.RawIOBase):
    """Passes bytes through and refuses to yield more than `allowance` of them."""

    def __init__(self, raw: IO[bytes], source: str, limits: Limits,
                 compressed_size: int | None = None) -> None:
        self._raw = raw
        self._source = source
        self._limits = limits
        self._allowance, self._limit = output_allowance(limits, compressed_size)
        self.count = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        # The aggregate parser reads through here: the bytes are handed on, not copied.
        if size < 0:
            return self.readall()
        data = read_raw(self._raw, size, self._source)
        self.count += len(data)
        if self.count > self._allowance:
            raise _too_big(self._source, self._limits, self._allowance, self._limit)
        return data

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class GzipReader(io.RawIOBase):
    """Inflates gzip members one after another and ignores stray bytes after the last one.

    Python's `gzip` refuses a stream followed by junk, which is how some gateways (Mimecast via
    Exchange Online) deliver reports; zlib with `wbits=MAX_WBITS|16` reads them fine. The junk
    is noted in the errors of the reports read from the stream (see `tell_stray`).
    """

    def __init__(self, raw: IO[bytes], source: str, limits: Limits,
                 compressed_size: int | None = None) -> None:
        self._raw = raw
        self._source = source
        self._limits = limits
        self._allowance, self._limit = output_allowance(limits, compressed_size)
        self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
        self._pending = b""
        self._done = False
        self.count = 0
        self._consumed = 0  # compressed bytes taken from `raw` so far
        self.stray = False  # whether bytes that are not gzip follow the stream
        self._told: list[list[str]] = []

    def tell_stray(self, errors: list[str]) -> None:
        """Have a note put in `errors` if stray bytes follow the stream: now, if they were seen
        already, or when they are (a report's records are read after it is handed out)."""
        self._told.append(errors)
        if self.stray:
            errors.append(STRAY_AFTER_GZIP)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        want = len(buffer)
        out = b""
        while not out and not self._done:
            out = self._inflate(want)
        n = len(out)
        self.count += n
        if self.count > self._allowance:
            raise _too_big(self._source, self._limits, self._allowance, self._limit)
        # The ratio also holds against what has been read so far: this is what stops a stream
        # whose own size is unknown (a gzip inside a gzip) from inflating without bound.
        if self.count > max(self._consumed * self._limits.max_ratio, _RATIO_FLOOR):
            raise _too_big(self._source, self._limits, self._allowance, "max_ratio")
        buffer[:n] = out
        return n

    def _read_raw(self) -> bytes:
        data = read_raw(self._raw, _CHUNK, self._source)
        self._consumed += len(data)
        return data

    def _inflate(self, want: int) -> bytes:
        inflater = self._inflater
        if inflater.unconsumed_tail:
            data = inflater.unconsumed_tail
        else:
            data = self._pending or self._read_raw()
            self._pending = b""
        if not data:
            if not inflater.eof:
                raise CorruptInput(self._source, "gzip stream ends before its end marker")
            self._done = True
            return b""
        try:
            out = inflater.decompress(data, want)
        except zlib.error as exc:
            raise CorruptInput(self._source, f"damaged gzip data ({exc})") from None
        if inflater.eof:
            rest = inflater.unused_data or self._read_raw()
            if rest[:2] == GZIP_MAGIC:  # a further gzip member follows
                self._inflater = zlib.decompressobj(wbits=zlib.MAX_WBITS | 16)
                self._pending = rest
            else:  # stray bytes after the stream: nothing more to read
                self._done = True
                if rest:
                    self.stray = True
                    for errors in self._told:
                        errors.append(STRAY_AFTER_GZIP)
        return out
