"""Graph v1.0 route table taken from the installed msgraph-sdk's request builders.

No registry ships Graph's OpenAPI description, but every SDK request builder carries its URL
template, the HTTP methods it implements and, per method, its query-parameter class. That is
enough to make the fake Graph refuse what real Graph would refuse: a made-up path, a method the
resource does not take, an unknown query option. The harvest (~10k builders) is cached as JSON
under the temp dir, keyed by the SDK version, so it costs ~1 s once per machine.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import unquote

CACHE_SCHEMA = 2  # bump when the JSON layout or the harvest rules change
METHODS = ("GET", "POST", "PATCH", "PUT", "DELETE")
# Graph's own nextLinks use these on collections even though no builder lists $skiptoken.
PAGING_OPTIONS = frozenset({"$skiptoken", "$skip"})
DELTA_OPTIONS = frozenset({"$skiptoken", "$deltatoken"})

_TEMPLATE_RE = re.compile(r'super\(\)\.__init__\(request_adapter, "([^"]+)"')
_METHOD_RE = re.compile(
    r"async def (get|post|patch|put|delete)\(self,[^)]*?RequestConfiguration\[(\w+)\]")
_CLASS_RE = re.compile(
    r"^    class (\w+QueryParameters)\(\):\n(.*?)(?=^    @dataclass|^    class |\Z)", re.M | re.S)
_MAPPING_RE = re.compile(r'if original_name == "(\w+)":\s*return "([^"]+)"')
_FIELD_RE = re.compile(r"^        (\w+): Optional\[", re.M)
_NAMESPACE_RE = re.compile(r"^(?:microsoft\.graph\.|graph\.)", re.I)
_PARAM_RE = re.compile(r"\{([^}]+)\}")


# ----------------------------------------------------------------------------- harvest

def sdk_version() -> str:
    from msgraph._version import VERSION

    return VERSION


def _generated_dir() -> Path:
    import msgraph

    return Path(msgraph.__file__).resolve().parent / "generated"


def _query_names(class_body: str) -> list[str]:
    mapping = dict(_MAPPING_RE.findall(class_body))
    names = [mapping.get(f, f) for f in _FIELD_RE.findall(class_body)]
    return sorted({unquote(n) for n in names})


def _harvest_file(text: str) -> tuple[str, dict[str, list[str]]] | None:
    found = _TEMPLATE_RE.search(text)
    if not found:
        return None
    template = found.group(1)
    path, _, query = template.removeprefix("{+baseurl}").partition("{?")
    template_opts = sorted(unquote(q.rstrip("*")) for q in query.rstrip("}").split(",") if q)
    classes = {name: _query_names(body) for name, body in _CLASS_RE.findall(text)}
    methods: dict[str, list[str]] = {}
    for method, qclass in _METHOD_RE.findall(text):
        if qclass == "QueryParameters":
            methods[method.upper()] = []
        else:
            methods[method.upper()] = classes.get(qclass, template_opts)
    return path, methods


def harvest() -> list[dict[str, object]]:
    """Walk the SDK's builders: one entry per URL path with its methods and query options."""
    merged: dict[str, dict[str, list[str]]] = {}
    for builder in _generated_dir().rglob("*_request_builder.py"):
        got = _harvest_file(builder.read_text(encoding="utf-8"))
        if got is None:
            continue
        path, methods = got
        slot = merged.setdefault(path, {})
        for method, opts in methods.items():
            slot[method] = sorted(set(slot.get(method, [])) | set(opts))
    return [{"path": p, "methods": m} for p, m in sorted(merged.items()) if m]


def cache_path() -> Path:
    base = Path(os.environ.get("DMARCBOT_ROUTES_CACHE", tempfile.gettempdir()))
    return base / "dmarcbot-graph-routes" / f"msgraph-sdk-{sdk_version()}-v{CACHE_SCHEMA}.json"


def load_routes() -> list[dict[str, object]]:
    """The harvested routes, from the JSON cache when present (written atomically)."""
    target = cache_path()
    try:
        return json.loads(target.read_text(encoding="utf-8"))["routes"]
    except (OSError, ValueError, KeyError):
        pass
    routes = harvest()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"sdk": sdk_version(), "routes": routes}, out)
        os.replace(tmp, target)  # atomic: parallel test workers never read half a file
    except OSError:
        pass  # no writable cache: harvest again next time
    return routes


# ----------------------------------------------------------------------------- matching

def normalize_literal(segment: str) -> str:
    """Graph treats literal segments case-insensitively, with or without the namespace
    (``microsoft.graph.delta()`` = ``delta()`` = ``delta``; ``graph.user`` is the SDK alias)."""
    return _NAMESPACE_RE.sub("", segment.lower()).removesuffix("()")


@dataclass(frozen=True)
class Route:
    """A request that real Graph would route: its template and the decoded path parameters."""

    method: str
    template: str  # e.g. "/users/{user-id}/messages/{message-id}"
    params: dict[str, str]
    query_options: frozenset[str]  # allowed, lower-cased


@dataclass(frozen=True)
class RouteError:
    """Why real Graph would refuse the request (400 BadRequest)."""

    reason: str

    def __bool__(self) -> bool:  # so `if table.match(...)` reads naturally
        return False


@dataclass
class _Segment:
    kind: str  # "lit" | "param" | "re"
    text: str  # normalized literal, param name, or the raw template segment
    regex: re.Pattern[str] | None = None
    names: tuple[str, ...] = ()


def _compile_segment(raw: str) -> _Segment:
    whole = _PARAM_RE.fullmatch(raw)
    if whole:
        return _Segment("param", unquote(whole.group(1)))
    if "{" not in raw:
        return _Segment("lit", normalize_literal(raw))
    names, pattern, pos = [], "(?:microsoft\\.graph\\.|graph\\.)?", 0
    body = _NAMESPACE_RE.sub("", raw)
    for m in _PARAM_RE.finditer(body):
        pattern += re.escape(body[pos:m.start()]) + "([^/]*?)"
        names.append(unquote(m.group(1)))
        pos = m.end()
    pattern += re.escape(body[pos:])
    return _Segment("re", raw, re.compile(pattern, re.I), tuple(names))


@dataclass
class _Entry:
    template: str
    segments: list[_Segment]
    methods: dict[str, frozenset[str]]


@dataclass
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    patterns: list[tuple[_Segment, _Node]] = field(default_factory=list)
    param: _Node | None = None
    entries: list[_Entry] = field(default_factory=list)


def _split(path: str) -> list[str]:
    return [s for s in path.split("/") if s != ""]


class RouteTable:
    """Matcher over the harvested routes. Build with ``RouteTable.load()`` (cached per process)."""

    def __init__(self, routes: list[dict[str, object]]) -> None:
        self._root = _Node()
        self.size = 0
        for route in routes:
            template = str(route["path"])
            segs = [_compile_segment(s) for s in _split(template)]
            methods = {m: frozenset(o.lower() for o in opts)  # type: ignore[union-attr]
                       for m, opts in route["methods"].items()}  # type: ignore[union-attr]
            node = self._root
            for seg in segs:
                if seg.kind == "lit":
                    node = node.literals.setdefault(seg.text, _Node())
                elif seg.kind == "param":
                    node.param = node.param or _Node()
                    node = node.param
                else:
                    for existing, child in node.patterns:
                        if existing.text == seg.text:
                            node = child
                            break
                    else:
                        child = _Node()
                        node.patterns.append((seg, child))
                        node = child
            node.entries.append(_Entry(unquote(template), segs, methods))
            self.size += 1

    @classmethod
    def load(cls) -> RouteTable:
        return _cached_table()

    def _walk(self, node: _Node, segs: list[str], i: int, out: list[_Entry]) -> None:
        if i == len(segs):
            out.extend(node.entries)
            return
        seg = segs[i]
        child = node.literals.get(normalize_literal(seg))
        if child is not None:
            self._walk(child, segs, i + 1, out)
        for pattern, pchild in node.patterns:
            if pattern.regex is not None and pattern.regex.fullmatch(seg):
                self._walk(pchild, segs, i + 1, out)
        if node.param is not None and not seg.startswith("$"):
            self._walk(node.param, segs, i + 1, out)

    def _params(self, entry: _Entry, segs: list[str]) -> dict[str, str]:
        params: dict[str, str] = {}
        for spec, seg in zip(entry.segments, segs, strict=True):
            if spec.kind == "param":
                params[spec.text] = seg
            elif spec.kind == "re" and spec.regex is not None:
                m = spec.regex.fullmatch(seg)
                if m:
                    params.update(zip(spec.names, m.groups(), strict=True))
        return params

    def match(self, method: str, path: str, query_keys: object = ()) -> Route | RouteError:
        """Route ``method path?query`` (path after /v1.0, percent-encoded or not)."""
        method = method.upper()
        segs = [unquote(s) for s in _split(path.split("?", 1)[0])]
        found: list[_Entry] = []
        self._walk(self._root, segs, 0, found)
        value_of_item = False
        if not found and segs and segs[-1].lower() == "$value":
            # Graph serves $value on any entity item (e.g. attachments/{id}/$value) though the
            # SDK has no builder for most of them.
            self._walk(self._root, segs[:-1], 0, found)
            found = [e for e in found if e.segments and e.segments[-1].kind == "param"
                     and "GET" in e.methods]
            value_of_item = bool(found)
        if not found:
            return RouteError(f"Resource not found for the segment path '{path}'.")
        usable = [e for e in found if (method == "GET" if value_of_item else method in e.methods)]
        if not usable:
            allowed = sorted({m for e in found for m in e.methods})
            return RouteError(f"{method} is not supported on '{path}'; allowed {allowed}")
        entry = usable[0]
        if value_of_item:
            template, allowed_opts = entry.template + "/$value", frozenset[str]()
            params = self._params(entry, segs[:-1])
        else:
            template, allowed_opts = entry.template, entry.methods[method]
            params = self._params(entry, segs)
            if method == "GET" and "$top" in allowed_opts:
                allowed_opts = allowed_opts | PAGING_OPTIONS
            if method == "GET" and entry.segments[-1].text == "delta":
                allowed_opts = allowed_opts | DELTA_OPTIONS
        for key in query_keys:  # type: ignore[attr-defined]
            k = str(key).lower()
            if k not in allowed_opts:
                return RouteError(
                    f"Query option '{key}' is not allowed on {method} {entry.template}; "
                    f"allowed {sorted(allowed_opts)}")
        return Route(method, template, params, allowed_opts)


@cache
def _cached_table() -> RouteTable:
    return RouteTable(load_routes())
