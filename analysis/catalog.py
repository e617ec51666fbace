"""The service catalog: which sending service a DMARC source belongs to, and why we think so.

The facts live in data (`analysis/data/services.toml`), not in code, so they can be reviewed,
cited and corrected without touching logic. Each fact carries its public source, the day it was
read and a confidence, because a report that names the wrong sender is worse than one that says
"unknown". The file is validated on load: a broken catalog fails loudly at start-up instead of
mislabelling mail later. Pure: no network, no DNS; resolving includes and selectors is the
caller's job.
"""

from __future__ import annotations

import functools
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CATEGORIES",
    "FACT_KINDS",
    "PUBLISH_KINDS",
    "Catalog",
    "CatalogError",
    "Fact",
    "PublishStep",
    "Service",
    "load_catalog",
]

CATEGORIES = frozenset(
    {
        "mailbox",
        "esp",
        "marketing",
        "crm",
        "helpdesk",
        "saas",
        "hr-finance",
        "security-gateway",
        "list-server",
        "forwarder",
    }
)
FACT_KINDS = frozenset(
    {"spf_include", "rdns_suffix", "dkim_domain", "dkim_cname_suffix", "return_path_domain"}
)
PUBLISH_KINDS = frozenset({"spf_include", "dkim_cname", "dkim_txt", "return_path_cname"})
CONFIDENCES = frozenset({"high", "low"})

_KEY = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# Lowercase labels of letters, digits, '-' and '_' (for `_spf`, `_netblocks`), at least two
# labels so that a bare TLD can never swallow every name under it.
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")

_SERVICE_FIELDS = frozenset(
    {"key", "name", "category", "doc", "platform", "forwarder", "evidence", "publish"}
)
_FACT_FIELDS = frozenset({"kind", "value", "source", "checked", "confidence", "shared"})
_PUBLISH_FIELDS = frozenset({"kind", "name", "value", "source", "checked", "note"})


class CatalogError(ValueError):
    """The catalog file breaks a rule; the message names the service and the rule."""


@dataclass(frozen=True, slots=True)
class Fact:
    """One piece of evidence that points at a service, with where and when it was read."""

    kind: str
    value: str
    source: str
    checked: date
    confidence: Literal["high", "low"]
    shared: bool


@dataclass(frozen=True, slots=True)
class PublishStep:
    """One DNS record the domain owner publishes to authorize the service."""

    kind: str
    name: str
    value: str
    source: str
    checked: date
    note: str | None


@dataclass(frozen=True, slots=True)
class Service:
    """A sending service and everything we know that identifies or authorizes it."""

    key: str
    name: str
    category: str
    doc: str
    platform: str | None
    forwarder: bool
    evidence: tuple[Fact, ...]
    publish: tuple[PublishStep, ...]

    def facts(self, kind: str) -> tuple[Fact, ...]:
        """The evidence of one kind, in file order."""
        return tuple(fact for fact in self.evidence if fact.kind == kind)


@dataclass(frozen=True)
class Catalog:
    """All services, indexed for the lookups the analysis makes per report record."""

    services: tuple[Service, ...]
    _by_key: dict[str, Service] = field(init=False, repr=False, compare=False)
    _by_value: dict[str, dict[str, tuple[tuple[Service, Fact], ...]]] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        by_key = {service.key: service for service in self.services}
        by_value: dict[str, dict[str, list[tuple[Service, Fact]]]] = {k: {} for k in FACT_KINDS}
        for service in self.services:
            for fact in service.evidence:
                by_value[fact.kind].setdefault(fact.value, []).append((service, fact))
        frozen = {kind: {v: tuple(m) for v, m in index.items()} for kind, index in by_value.items()}
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_by_value", frozen)

    @functools.cached_property
    def digest(self) -> str:
        """Of every service and fact: what a source was named with (analysis.remembered)."""
        return hashlib.sha256(repr(self.services).encode()).hexdigest()

    def get(self, key: str) -> Service:
        """The service with this key; KeyError if the catalog has none."""
        return self._by_key[key]

    def by_spf_include(self, domain: str) -> tuple[Service, ...]:
        """Services whose SPF include is exactly `domain` (an include names one record)."""
        matches = self._by_value["spf_include"].get(_normalize(domain), ())
        return tuple(service for service, _ in matches)

    def match_suffix(self, kind: str, name: str) -> tuple[tuple[Service, Fact], ...]:
        """Services whose `kind` fact is the longest suffix of `name` on label boundaries.

        "o1.ptr123.sendgrid.net" matches "sendgrid.net"; "notsendgrid.net" does not. Only the
        longest matching suffix counts, so a specific fact beats a broader one; several services
        come back only when they share that suffix.
        """
        if kind not in FACT_KINDS:
            raise ValueError(f"unknown evidence kind {kind!r}")
        index = self._by_value[kind]
        labels = _normalize(name).split(".")
        for start in range(len(labels)):
            matches = index.get(".".join(labels[start:]))
            if matches:
                return matches
        return ()


def load_catalog(path: Path | None = None) -> Catalog:
    """Read and validate a catalog; without `path`, the packaged one (cached after first use)."""
    if path is None:
        return _packaged_catalog()
    return _parse(Path(path).read_bytes(), str(path))


@functools.cache
def _packaged_catalog() -> Catalog:
    data = resources.files("analysis.data").joinpath("services.toml").read_bytes()
    return _parse(data, "analysis/data/services.toml")


def _normalize(name: str) -> str:
    return name.strip().lower().rstrip(".")


def _parse(data: bytes, origin: str) -> Catalog:
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CatalogError(f"{origin}: not valid UTF-8 TOML: {exc}") from None
    extra = set(document) - {"services"}
    if extra:
        raise CatalogError(f"{origin}: unknown top-level keys {sorted(extra)}")
    raw_services = document.get("services")
    if not isinstance(raw_services, list) or not raw_services:
        raise CatalogError(f"{origin}: needs a non-empty [[services]] array")
    services = tuple(_service(raw, index) for index, raw in enumerate(raw_services))
    _check_catalog(services)
    return Catalog(services)


def _service(raw: Any, index: int) -> Service:
    if not isinstance(raw, Mapping):
        raise CatalogError(f"services[{index}]: must be a table")
    key = raw.get("key")
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise CatalogError(f"services[{index}]: key must be a lowercase slug, got {key!r}")
    _no_unknown(key, "service", raw, _SERVICE_FIELDS)
    name = _text(key, raw, "name")
    category = _text(key, raw, "category")
    if category not in CATEGORIES:
        raise CatalogError(f"{key}: category {category!r} is not one of {sorted(CATEGORIES)}")
    doc = _url(key, raw, "doc")
    platform = raw.get("platform")
    if platform is not None and not isinstance(platform, str):
        raise CatalogError(f"{key}: platform must be a service key")
    forwarder = raw.get("forwarder", False)
    if not isinstance(forwarder, bool):
        raise CatalogError(f"{key}: forwarder must be true or false")
    raw_evidence = raw.get("evidence", [])
    if not isinstance(raw_evidence, list) or not raw_evidence:
        raise CatalogError(f"{key}: needs at least one [[services.evidence]] fact")
    raw_publish = raw.get("publish", [])
    if not isinstance(raw_publish, list):
        raise CatalogError(f"{key}: publish must be an array of tables")
    evidence = tuple(_fact(key, item, i) for i, item in enumerate(raw_evidence))
    seen: set[tuple[str, str]] = set()
    for fact in evidence:
        if (fact.kind, fact.value) in seen:
            raise CatalogError(f"{key}: duplicate fact {fact.kind} {fact.value!r}")
        seen.add((fact.kind, fact.value))
    publish = tuple(_publish(key, item, i) for i, item in enumerate(raw_publish))
    return Service(key, name, category, doc, platform, forwarder, evidence, publish)


def _fact(key: str, raw: Any, index: int) -> Fact:
    where = f"evidence[{index}]"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{key}: {where} must be a table")
    _no_unknown(key, where, raw, _FACT_FIELDS)
    kind = _text(key, raw, "kind", where)
    if kind not in FACT_KINDS:
        raise CatalogError(f"{key}: {where} kind {kind!r} is not one of {sorted(FACT_KINDS)}")
    value = _text(key, raw, "value", where)
    if not _DOMAIN.fullmatch(value):
        raise CatalogError(
            f"{key}: {where} value {value!r} must be a lowercase domain without scheme, "
            "leading or trailing dot"
        )
    confidence = raw.get("confidence")
    if confidence not in CONFIDENCES:
        raise CatalogError(f"{key}: {where} confidence must be 'high' or 'low', got {confidence!r}")
    shared = raw.get("shared", False)
    if not isinstance(shared, bool):
        raise CatalogError(f"{key}: {where} shared must be true or false")
    return Fact(
        kind=kind,
        value=value,
        source=_url(key, raw, "source", where),
        checked=_checked(key, raw, where),
        confidence=confidence,
        shared=shared,
    )


def _publish(key: str, raw: Any, index: int) -> PublishStep:
    where = f"publish[{index}]"
    if not isinstance(raw, Mapping):
        raise CatalogError(f"{key}: {where} must be a table")
    _no_unknown(key, where, raw, _PUBLISH_FIELDS)
    kind = _text(key, raw, "kind", where)
    if kind not in PUBLISH_KINDS:
        raise CatalogError(f"{key}: {where} kind {kind!r} is not one of {sorted(PUBLISH_KINDS)}")
    note = raw.get("note")
    if note is not None and (not isinstance(note, str) or not note.strip()):
        raise CatalogError(f"{key}: {where} note must be non-empty text when present")
    return PublishStep(
        kind=kind,
        name=_text(key, raw, "name", where),
        value=_text(key, raw, "value", where),
        source=_url(key, raw, "source", where),
        checked=_checked(key, raw, where),
        note=note,
    )


def _check_catalog(services: tuple[Service, ...]) -> None:
    """Rules across services: unique keys, real platforms, no silently double-claimed facts."""
    keys: set[str] = set()
    for service in services:
        if service.key in keys:
            raise CatalogError(f"{service.key}: duplicate key")
        keys.add(service.key)
    for service in services:
        if service.platform is not None:
            if service.platform == service.key:
                raise CatalogError(f"{service.key}: platform must name another service")
            if service.platform not in keys:
                raise CatalogError(
                    f"{service.key}: platform {service.platform!r} is not a service key"
                )
    claims: dict[tuple[str, str], list[tuple[Service, Fact]]] = {}
    for service in services:
        for fact in service.evidence:
            claims.setdefault((fact.kind, fact.value), []).append((service, fact))
    for (kind, value), claimants in claims.items():
        if len(claimants) == 1:
            service, fact = claimants[0]
            if fact.shared:
                raise CatalogError(
                    f"{service.key}: {kind} {value!r} is marked shared but no other service "
                    "claims it"
                )
            continue
        unshared = [service.key for service, fact in claimants if not fact.shared]
        if unshared:
            culprit = unshared[0]
            others = ", ".join(s.key for s, _ in claimants if s.key != culprit)
            raise CatalogError(
                f"{culprit}: {kind} {value!r} is also claimed by {others}; "
                "every claimant must mark it shared = true"
            )


def _no_unknown(key: str, where: str, raw: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = set(raw) - allowed
    if unknown:
        raise CatalogError(f"{key}: {where} has unknown fields {sorted(unknown)}")


def _text(key: str, raw: Mapping[str, Any], name: str, where: str = "") -> str:
    value = raw.get(name)
    if not isinstance(value, str) or not value.strip():
        prefix = f"{where} " if where else ""
        raise CatalogError(f"{key}: {prefix}missing required field {name!r}")
    return value


def _url(key: str, raw: Mapping[str, Any], name: str, where: str = "") -> str:
    value = _text(key, raw, name, where)
    if not value.startswith("https://") or len(value) <= len("https://") or " " in value:
        prefix = f"{where} " if where else ""
        raise CatalogError(f"{key}: {prefix}{name} must be an https:// URL, got {value!r}")
    return value


def _checked(key: str, raw: Mapping[str, Any], where: str) -> date:
    value = raw.get("checked")
    if isinstance(value, datetime) or not isinstance(value, date):
        raise CatalogError(f"{key}: {where} checked must be a TOML date (YYYY-MM-DD)")
    return value
