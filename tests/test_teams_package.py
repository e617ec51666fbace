"""`dmarcbot teams-app`: the Teams app package, checked against Microsoft's own manifest schema.

The schema is the one shipped in the npm package `@microsoft/app-manifest`, pinned in
`tests/teams_manifest/package.json` and installed by `tests/install-test-deps.sh`; without it
these tests fail, they never skip. Its files declare JSON Schema draft-04 but use two later
keywords, `const` (on `manifestVersion`) and `if`/`then`: the validator is draft-04 extended with
those two, so `manifestVersion` is really checked. jsonschema checks the `uri` format only with
an optional package this project does not need, so the test brings its own RFC 3986 check.
"""

from __future__ import annotations

import json
import re
import struct
import tomllib
import zipfile
import zlib
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft4Validator, Draft7Validator, FormatChecker, validators

from function_app import teams_package as tp
from function_app.cli import main
from tests import teams_icons

ROOT = Path(__file__).resolve().parents[1]
NPM = ROOT / "tests" / "teams_manifest"
PACKAGE = NPM / "node_modules" / "@microsoft" / "app-manifest"
SCHEMAS = PACKAGE / "build" / "json-schemas" / "teams"

APP = "0f3c2b1a-9d8e-4f7a-b6c5-d4e3f2a1b0c9"
OTHER = "7a6b5c4d-3e2f-4a1b-8c9d-0e1f2a3b4c5d"
HOST = "dmarcbot-xyz.azurewebsites.net"


# -- the official schema ----------------------------------------------------------------------

def _installed() -> Path:
    if not PACKAGE.is_dir():
        pytest.fail(f"@microsoft/app-manifest is not installed in {NPM}: run "
                    "`bash tests/install-test-deps.sh`")
    return PACKAGE


@cache
def _schema() -> dict[str, Any]:
    path = _installed() / "build" / "json-schemas" / "teams" / f"v{tp.MANIFEST_VERSION}" \
        / "MicrosoftTeams.schema.json"
    assert path.is_file(), f"the pinned package has no manifest schema {tp.MANIFEST_VERSION}"
    return json.loads(path.read_text(encoding="utf-8-sig"))


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:[^\s<>\"{}|\\^`]*")
_FORMATS = FormatChecker()


@_FORMATS.checks("uri")
def _is_uri(value: object) -> bool:
    """RFC 3986 absolute URI: a scheme, then only characters a URI may hold."""
    return not isinstance(value, str) or _URI.fullmatch(value) is not None


# Draft-04 as the schema declares, plus the two later keywords its authors rely on.
_ManifestValidator = validators.extend(
    Draft4Validator, {"const": Draft7Validator.VALIDATORS["const"],
                      "if": Draft7Validator.VALIDATORS["if"]})


def problems(manifest: dict[str, Any]) -> list[str]:
    validator = _ManifestValidator(_schema(), format_checker=_FORMATS)
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in validator.iter_errors(manifest)]


def test_the_pinned_package_is_installed() -> None:
    pinned = json.loads((NPM / "package.json").read_text())["dependencies"][
        "@microsoft/app-manifest"]
    installed = json.loads((_installed() / "package.json").read_text())["version"]
    assert installed == pinned, "run `bash tests/install-test-deps.sh` to install the pinned one"
    lock = json.loads((NPM / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/@microsoft/app-manifest"]["version"] == pinned


def test_the_manifest_version_is_the_newest_numbered_one_the_package_ships() -> None:
    _installed()
    numbered = [tuple(map(int, m.groups())) for d in SCHEMAS.iterdir()
                if (m := re.fullmatch(r"v(\d+)\.(\d+)", d.name))]
    assert (SCHEMAS / "vDevPreview").is_dir() and len(numbered) > 20
    newest = ".".join(map(str, max(numbered)))
    assert newest == tp.MANIFEST_VERSION, f"the package ships manifest {newest}: move to it"


def test_the_schema_and_the_manifest_agree_on_version_and_draft() -> None:
    schema = _schema()
    assert schema["$schema"] == "http://json-schema.org/draft-04/schema#"
    assert validators.validator_for(schema) is Draft4Validator
    # Without format checks: a few patterns are ECMAScript (`\p{L}`, in Office add-in parts
    # this manifest never uses) and Python's `re` cannot compile them.
    Draft4Validator.check_schema(schema, format_checker=None)
    assert schema["properties"]["manifestVersion"]["const"] == tp.MANIFEST_VERSION
    assert tp.SCHEMA_URL.endswith(f"/teams/v{tp.MANIFEST_VERSION}/MicrosoftTeams.schema.json")
    manifest = tp.build_manifest(app_id=APP, version="1.0.0", host=HOST)
    assert (manifest["$schema"], manifest["manifestVersion"]) == (tp.SCHEMA_URL, "1.30")


def test_the_validator_catches_what_the_schema_forbids() -> None:
    good = tp.build_manifest(app_id=APP, version="1.0.0", host=HOST)
    assert problems(good) == []
    bad_version = {**good, "manifestVersion": "1.29"}  # `const`: ignored by plain draft-04
    assert any("manifestVersion" in p for p in problems(bad_version))
    bad_uri = {**good, "$schema": "not a uri"}  # the `uri` format
    assert any(p.startswith("$schema") for p in problems(bad_uri))
    bad_bot = {**good, "bots": [{**good["bots"][0], "botId": "dmarcbot"}]}
    assert any(p.startswith("bots/0/botId") for p in problems(bad_bot))
    missing = {k: v for k, v in good.items() if k != "developer"}
    assert any("'developer' is a required property" in p for p in problems(missing))


@pytest.mark.parametrize("options", [
    {"host": HOST},
    {"host": HOST, "manifest_id": OTHER, "developer_name": "Contoso IT",
     "website_url": "https://intranet.contoso.com/it", "privacy_url": "https://contoso.com/p",
     "terms_url": "https://contoso.com/t"},
    {"website_url": "https://contoso.com/"},  # no host: no validDomains at all
])
def test_every_manifest_the_command_can_build_is_valid(options: dict[str, str]) -> None:
    manifest = tp.build_manifest(app_id=APP, version="2.10.3", **options)
    assert problems(manifest) == []
    assert manifest.get("validDomains", []) == ([HOST] if "host" in options else [])


def test_the_ids_land_where_teams_expects_them() -> None:
    manifest = tp.build_manifest(app_id=APP.upper(), version="1.0.0", host=HOST)
    assert manifest["id"] == manifest["bots"][0]["botId"] == APP
    assert manifest["webApplicationInfo"] == {"id": APP}  # no SSO: no resource URI
    assert manifest["bots"][0]["scopes"] == ["personal"]
    assert manifest["bots"][0]["isNotificationOnly"] is False  # owners act on its cards
    other = tp.build_manifest(app_id=APP, manifest_id=OTHER, version="1.0.0", host=HOST)
    assert other["id"] == OTHER
    assert other["bots"][0]["botId"] == other["webApplicationInfo"]["id"] == APP


def test_names_and_descriptions_follow_the_store_rules() -> None:
    """short ≠ full, and the short description is not repeated inside the full one."""
    manifest = tp.build_manifest(app_id=APP, version="1.0.0", host=HOST)
    name, description = manifest["name"], manifest["description"]
    assert name["short"] != name["full"] and description["short"] != description["full"]
    assert description["short"] not in description["full"]
    assert manifest["accentColor"] == "#{:02X}{:02X}{:02X}".format(*teams_icons.ACCENT)


# -- the command ------------------------------------------------------------------------------

def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["teams-app", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_writes_a_package_teams_takes(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dmarcbot-teams.zip"
    code, stdout, stderr = run(capsys, "--app-id", APP, "--host", HOST, "--out", str(out))
    assert (code, stderr) == (0, "")
    assert stdout.splitlines()[-1] == f"DMARCBOT_TEAMS_APP_ID={APP}"
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == ["manifest.json", "color.png", "outline.png"]
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        manifest = json.loads(archive.read("manifest.json"))
        icons = {name: archive.read(name) for name in ("color.png", "outline.png")}
    assert problems(manifest) == []
    assert manifest["id"] == manifest["bots"][0]["botId"] == manifest["webApplicationInfo"]["id"]
    assert set(manifest["icons"].values()) == set(icons)
    assert icons == {name: tp.icon_bytes(name) for name in icons}


def test_the_package_is_the_same_bytes_every_time(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    argv = ("--app-id", APP, "--host", HOST, "--app-version", "1.2.3")
    assert run(capsys, *argv, "--out", str(tmp_path / "a.zip"))[0] == 0
    assert run(capsys, *argv, "--out", str(tmp_path / "b.zip"))[0] == 0
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_a_separate_manifest_id_is_the_one_to_configure(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.zip"
    code, stdout, _ = run(capsys, "--app-id", APP, "--manifest-id", OTHER, "--website",
                          "https://contoso.com/it", "--out", str(out))
    assert code == 0 and stdout.splitlines()[-1] == f"DMARCBOT_TEAMS_APP_ID={OTHER}"
    manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))
    assert (manifest["id"], manifest["bots"][0]["botId"]) == (OTHER, APP)
    assert "validDomains" not in manifest and problems(manifest) == []


def test_an_existing_file_is_replaced_only_with_force(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "p.zip"
    out.write_bytes(b"keep me")
    code, stdout, stderr = run(capsys, "--app-id", APP, "--host", HOST, "--out", str(out))
    assert (code, stdout, out.read_bytes()) == (2, "", b"keep me")
    assert stderr == f"dmarcbot: error: --out {str(out)!r} exists: add --force to replace it\n"
    assert run(capsys, "--app-id", APP, "--host", HOST, "--out", str(out), "--force")[0] == 0
    assert zipfile.is_zipfile(out)
    assert [p.name for p in tmp_path.iterdir()] == ["p.zip"]  # no temporary file left behind


@pytest.mark.parametrize(("argv", "named"), [
    (["--app-id", "dmarcbot", "--host", HOST], "--app-id 'dmarcbot' is not a GUID"),
    (["--app-id", APP + "0", "--host", HOST], "is not a GUID"),
    (["--app-id", APP, "--manifest-id", "{" + OTHER + "}", "--host", HOST], "--manifest-id"),
    (["--app-id", APP, "--host", f"https://{HOST}"], "is not a host name"),
    (["--app-id", APP, "--host", f"{HOST}/api"], "is not a host name"),
    (["--app-id", APP, "--host", f"{HOST}:443"], "is not a host name"),
    (["--app-id", APP, "--host", "*.azurewebsites.net"], "is not a host name"),
    (["--app-id", APP, "--host", "localhost"], "is not a host name"),
    (["--app-id", APP, "--host", "10.0.0.1"], "is not a host name"),
    (["--app-id", APP, "--host", "bad_name.example.com"], "is not a host name"),
    (["--app-id", APP], "give --website"),
    (["--app-id", APP, "--website", "http://contoso.com/"], "--website 'http://contoso.com/'"),
    (["--app-id", APP, "--host", HOST, "--privacy-url", "contoso.com/privacy"], "--privacy-url"),
    (["--app-id", APP, "--host", HOST, "--terms-url", "https://"], "--terms-url"),
    (["--app-id", APP, "--host", HOST, "--app-version", "1.0"], "--app-version '1.0'"),
    (["--app-id", APP, "--host", HOST, "--developer", "x" * 33], "--developer"),
])
def test_bad_input_is_one_line_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         argv: list[str], named: str) -> None:
    out = tmp_path / "p.zip"
    code, stdout, stderr = run(capsys, *argv, "--out", str(out))
    assert (code, stdout) == (2, "")
    assert stderr.startswith("dmarcbot: error: ") and stderr.count("\n") == 1
    assert named in stderr
    assert not out.exists()


@pytest.mark.parametrize(("where", "named"), [
    ("missing/p.zip", "the folder"),
    (".", "is a folder"),
])
def test_an_unusable_out_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                     where: str, named: str) -> None:
    code, stdout, stderr = run(capsys, "--app-id", APP, "--host", HOST,
                               "--out", str(tmp_path / where))
    assert (code, stdout) == (2, "")
    assert stderr.count("\n") == 1 and named in stderr and "--out" in stderr


# -- the icons --------------------------------------------------------------------------------

def decode_png(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and RGBA rows of an 8-bit RGBA non-interlaced PNG; anything else fails."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        pos += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour, interlace) == (8, 6, 0), "expected 8-bit RGBA, not interlaced"
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    stride, rows, previous = width * 4, [], bytearray(width * 4)
    assert len(raw) == height * (stride + 1)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            left = line[i - 4] if i >= 4 else 0
            up, corner = previous[i], previous[i - 4] if i >= 4 else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                best = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + best) & 0xFF
            else:
                assert kind == 0, f"unknown filter {kind}"
        rows.append(bytes(line))
        previous = line
    return width, height, rows


def pixels(rows: list[bytes]) -> list[list[tuple[int, ...]]]:
    return [[tuple(row[i:i + 4]) for i in range(0, len(row), 4)] for row in rows]


def test_the_colour_icon_is_192_square_opaque_with_the_symbol_in_the_middle() -> None:
    width, height, rows = decode_png(tp.icon_bytes("color.png"))
    assert (width, height) == (192, 192)
    grid = pixels(rows)
    assert all(p[3] == 255 for row in grid for p in row), "a solid square, corners included"
    background = (*teams_icons.ACCENT, 255)
    outside = [grid[y][x] for y in range(192) for x in range(192)
               if not (48 <= x < 144 and 48 <= y < 144)]
    assert set(outside) == {background}, "48 px of plain background around the symbol"
    assert len({p for row in grid for p in row}) > 2 and (255, 255, 255, 255) in grid[96]


def test_the_outline_icon_is_32_square_white_on_transparent_without_padding() -> None:
    width, height, rows = decode_png(tp.icon_bytes("outline.png"))
    assert (width, height) == (32, 32)
    grid = pixels(rows)
    assert {p for row in grid for p in row} == {(255, 255, 255, 255), (255, 255, 255, 0)}
    opaque = [(x, y) for y in range(32) for x in range(32) if grid[y][x][3]]
    ys = {y for _, y in opaque}
    assert (min(ys), max(ys)) == (0, 31), "the symbol fills the icon's height"


def test_the_shipped_icons_are_what_the_drawing_code_makes() -> None:
    """`python -m tests.teams_icons` rewrites them after a change to the drawing."""
    for name, draw in teams_icons.ICONS.items():
        assert decode_png(tp.icon_bytes(name))[2] == draw(), f"{name} is stale"
        assert decode_png(teams_icons.png(draw()))[2] == draw()


def test_the_icons_ship_in_the_package_data() -> None:
    """A non-editable install (a wheel, Azure's remote build) carries them too."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "teams_app/*.png" in setuptools["package-data"]["function_app"]
