"""The Teams app's two icons, drawn in code: the source of `function_app/teams_app/*.png`.

A white shield with a check mark, the sign of an approved sender. Teams' rules
(msteams-docs `concepts/build-and-test/apps-package.md`):

- `color.png`: 192x192, full colour, square (Teams rounds the corners itself), on a solid
  background, the symbol inside the middle 96x96 (48 px of padding all round, so Teams' crops
  lose nothing);
- `outline.png`: 32x32, white (255, 255, 255) on a fully transparent background (alpha 0), no
  other colours, no padding around the symbol.

Standard library only (zlib + struct). `python -m tests.teams_icons` rewrites the PNG files;
`tests/test_teams_package.py` checks that the committed files still hold these pixels.
"""

from __future__ import annotations

import struct
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

#: The manifest's `accentColor` and the colour icon's background.
ACCENT = (0x1E, 0x5A, 0x8A)
WHITE = (0xFF, 0xFF, 0xFF)
ICON_DIR = Path(__file__).resolve().parent.parent / "function_app" / "teams_app"

Rows = list[bytes]  # one RGBA row of bytes per line, top to bottom
Shape = Callable[[float, float], bool]  # (x, y) in the symbol's unit square → inside?

_SAMPLES = 4  # per axis: 16 samples a pixel


# -- the symbol, in a unit square (x right, y down) ---------------------------------------------

_HALF_WIDTH = 0.44
_SHOULDER = 0.42  # where the straight sides turn into the curve down to the point


def _shield(x: float, y: float, inset: float = 0.0) -> bool:
    """A heater shield: flat top, straight sides, curved down to a point at the bottom."""
    top, bottom = inset, 1.0 - 1.7 * inset
    if not top <= y <= bottom:
        return False
    half = _HALF_WIDTH - inset
    if y > _SHOULDER:
        t = (y - _SHOULDER) / (bottom - _SHOULDER)
        half *= 1.0 - t * t
    return abs(x - 0.5) <= half


def _near_segment(x: float, y: float, a: tuple[float, float], b: tuple[float, float],
                  radius: float) -> bool:
    (ax, ay), (bx, by) = a, b
    dx, dy = bx - ax, by - ay
    t = max(0.0, min(1.0, ((x - ax) * dx + (y - ay) * dy) / (dx * dx + dy * dy)))
    px, py = ax + t * dx - x, ay + t * dy - y
    return px * px + py * py <= radius * radius


_CHECK = ((0.29, 0.47), (0.44, 0.63), (0.71, 0.32))


def _check(x: float, y: float, radius: float) -> bool:
    return (_near_segment(x, y, _CHECK[0], _CHECK[1], radius)
            or _near_segment(x, y, _CHECK[1], _CHECK[2], radius))


# -- rasterising ------------------------------------------------------------------------------

def _coverage(shape: Shape, px: int, py: int, size: int) -> float:
    """The share of a pixel's samples inside the shape (the symbol box is size x size)."""
    hits = 0
    for sy in range(_SAMPLES):
        for sx in range(_SAMPLES):
            hits += shape((px + (sx + 0.5) / _SAMPLES) / size, (py + (sy + 0.5) / _SAMPLES) / size)
    return hits / (_SAMPLES * _SAMPLES)


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], share_b: float) -> tuple[int, ...]:
    return tuple(round(ca + (cb - ca) * share_b) for ca, cb in zip(a, b, strict=True))


def color_rows() -> Rows:
    """192x192: a white shield with an accent-coloured check, on the accent colour, opaque."""
    size, box, pad = 192, 96, 48
    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            colour = ACCENT
            bx, by = px - pad, py - pad
            if 0 <= bx < box and 0 <= by < box:
                shield = _coverage(_shield, bx, by, box)
                check = _coverage(lambda x, y: _shield(x, y) and _check(x, y, 0.065), bx, by, box)
                colour = _mix(_mix(ACCENT, WHITE, shield), ACCENT, check)
            row += bytes((*colour, 0xFF))
        rows.append(bytes(row))
    return rows


def outline_rows() -> Rows:
    """32x32: the shield's rim and the check, white; everything else fully transparent."""
    size = 32

    def symbol(x: float, y: float) -> bool:
        rim = _shield(x, y) and not _shield(x, y, inset=0.095)
        return rim or _check(x, y, 0.07)

    rows = []
    for py in range(size):
        row = bytearray()
        for px in range(size):
            opaque = _coverage(symbol, px, py, size) >= 0.5  # no partial alpha: white or nothing
            row += bytes((*WHITE, 0xFF if opaque else 0x00))
        rows.append(bytes(row))
    return rows


# -- PNG --------------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png(rows: Rows) -> bytes:
    """An 8-bit RGBA, non-interlaced PNG; every row unfiltered (filter type 0)."""
    height, width = len(rows), len(rows[0]) // 4
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header)
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


ICONS: dict[str, Callable[[], Rows]] = {"color.png": color_rows, "outline.png": outline_rows}


def main() -> int:
    ICON_DIR.mkdir(exist_ok=True)
    for name, draw in ICONS.items():
        (ICON_DIR / name).write_bytes(png(draw()))
        print(f"wrote {ICON_DIR / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
