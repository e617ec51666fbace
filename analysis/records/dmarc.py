"""DMARC policy records read by RFC 9989's ABNF (§4.7-4.8), as RFC 7489 receivers read them too.

`parse_dmarc` reads one TXT string: tag names are caseless and blanks may surround `=` and `;`
(`V = DMARC1 ;p=reject` is a valid record), `v=DMARC1` must come first, a duplicated tag spoils the
whole record (RFC 6376 §3.2, whose tag-value syntax DMARC uses). `intent` says what the publisher
meant even when receivers cannot use the record (duplicates, two records, a typo in a value), and
`render` writes it back as one clean record; `strength` orders records so that advice can prove it
never weakens what is published.

Where the publisher said two things (two records, or a tag twice with different values) receivers
apply neither (RFC 9989 §4.10, RFC 6376 §3.2), so the repair keeps what every version asks for:
the weakest of them. Moving past it is a step like any other, for `analysis.posture` to take when
the domain's mail is ready (docs/posture.md, "Two records that disagree").
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Iterable, Sequence

from analysis.records import taglist
from analysis.records.findings import Finding

POLICIES = ("none", "quarantine", "reject")
LEVEL = {"none": 0, "quarantine": 1, "reject": 2}
#: The value rule of each tag with a closed set of values (RFC 9989 §4.8, Table 2).
CHOICES: dict[str, tuple[str, ...]] = {
    "p": POLICIES, "sp": POLICIES, "np": POLICIES, "adkim": ("r", "s"), "aspf": ("r", "s"),
    "t": ("y", "n"), "psd": ("y", "n", "u")}
KNOWN = frozenset({"v", "p", "sp", "np", "adkim", "aspf", "t", "psd", "rua", "ruf", "fo"})
REMOVED = {"pct": ("warning", "pct is removed in RFC 9989 and ignored by its receivers; use t=y "
                              "for a softer step"),
           "rf": ("info", "rf is removed in RFC 9989"),
           "ri": ("info", "ri is removed in RFC 9989 (receivers choose the interval)")}
#: A value outside its rule: an error where receivers then change how mail is handled (a bad
#: p, sp or np makes them act as p=none, §4.10.1; a bad t applies the policy in full; a bad psd
#: moves the Organizational Domain), a warning where the default that replaces it is harmless.
BAD_VALUE_LEVEL = {"p": "error", "sp": "error", "np": "error", "t": "error", "psd": "error",
                   "fo": "warning", "adkim": "warning", "aspf": "warning"}
#: The order `render` writes tags in: policy first, then alignment, then reporting.
ORDER = ("p", "t", "sp", "np", "adkim", "aspf", "psd", "rua", "ruf", "fo")
#: Receivers must send to at least two destinations (RFC 7489 §6.2); more may be dropped.
MAX_DESTINATIONS = 2

_VERSION = re.compile(r"[vV][ \t]*=[ \t]*DMARC1(?=[ \t]*(?:;|$))")
_ANY_VERSION = re.compile(r"\bv[ \t]*=[ \t]*dmarc1", re.IGNORECASE)
_DMARC_VALUE = r"[\x20-\x3a\x3c-\x7e]"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(.*)", re.DOTALL)
_URI_REST = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+=:@/?#\[\]]|%[0-9A-Fa-f]{2})+")
_SIZE = re.compile(r"!(\d+[kmgtKMGT]?)$")
_HOSTNAME = re.compile(r"(?=.{1,253}$)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")
_FO = frozenset({"0", "1", "d", "s"})

S_FORMAT = "RFC 9989 §4.8"
S_TAGS = "RFC 9989 §4.7"
S_URIS = "RFC 9989 §4.6"
S_DUPLICATE = "RFC 6376 §3.2"
S_DISCOVERY = "RFC 9989 §4.10.1"
S_REMOVED = "RFC 9989 Appendix C.5.2"
S_P_SECOND = "RFC 7489 §6.4"
S_DESTINATIONS = "RFC 7489 §6.2"


def is_dmarc(text: str) -> bool:
    """Whether receivers take `text` for a DMARC record: it starts with `v=DMARC1` (§4.8)."""
    return _VERSION.match(text) is not None


def near_dmarc(text: str) -> bool:
    """A TXT string its publisher meant as DMARC that receivers ignore (`v=dmarc1`, `p=..;v=..`,
    a leading blank, a missing `;` after the version)."""
    return not is_dmarc(text) and _ANY_VERSION.search(text) is not None


@dataclasses.dataclass(frozen=True, slots=True)
class ReportUri:
    """One `rua`/`ruf` destination."""

    text: str  # as published, with any `!size` suffix
    scheme: str | None  # lower-case; None when the text is not a URI
    address: str | None  # mailto: the addr-spec (no size suffix)
    host: str | None  # mailto: the address's domain, http(s): the authority; lower-case
    size: str | None  # "10m" from an obsolete `!10m` suffix

    @property
    def destination(self) -> str:
        """The text without the size suffix: what a repaired record keeps."""
        return self.text[: -len(self.size) - 1] if self.size else self.text


@dataclasses.dataclass(frozen=True, slots=True)
class DmarcPolicy:
    """One TXT string read as a DMARC record, with what its syntax alone says about it."""

    text: str
    valid: bool  # starts with v=DMARC1: receivers read it (other problems may remain)
    tags: tuple[tuple[str, str], ...]  # every tag after v, in order; names lower-case
    findings: tuple[Finding, ...]

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.tags if n == name]

    def first(self, name: str) -> str | None:
        return next((v for n, v in self.tags if n == name), None)

    def choice(self, name: str) -> str | None:
        """The first value of a closed-set tag that its rule allows (lower-case), else None."""
        for value in self.values(name):
            if value.lower() in CHOICES[name]:
                return value.lower()
        return None

    @property
    def policy(self) -> str:
        """p as receivers apply it to the domain itself: a missing or bad p is p=none (§4.10.1)."""
        return self.choice("p") or "none"

    @property
    def testing(self) -> bool:
        return self.choice("t") == "y"

    def uris(self, name: str) -> tuple[ReportUri, ...]:
        return tuple(parse_uri(u) for value in self.values(name) for u in split_uris(value))


def split_uris(value: str) -> list[str]:
    """`a, b` -> [a, b] (commas inside a URI must be %-encoded, RFC 9989 §4.8)."""
    return [u.strip(taglist.WSP) for u in value.split(",") if u.strip(taglist.WSP)]


def parse_uri(text: str) -> ReportUri:
    """A DMARC reporting URI (RFC 3986), with the obsolete `!size` suffix split off."""
    size_match = _SIZE.search(text)
    size = size_match.group(1).lower() if size_match else None
    body = text[: size_match.start()] if size_match else text
    scheme_match = _SCHEME.fullmatch(body)
    if scheme_match is None or not _URI_REST.fullmatch(scheme_match.group(2)):
        return ReportUri(text, None, None, None, size)
    scheme, rest = scheme_match.group(1).lower(), scheme_match.group(2)
    if scheme == "mailto":
        local, at, domain = rest.rpartition("@")
        domain = domain.split("?")[0]
        if not at or not local or not _HOSTNAME.fullmatch(domain):
            return ReportUri(text, scheme, None, None, size)
        return ReportUri(text, scheme, f"{local}@{domain}", domain.lower().rstrip("."), size)
    host = None
    if rest.startswith("//"):
        authority = rest[2:].split("/")[0].split("?")[0].split("#")[0]
        host = authority.rpartition("@")[2].split(":")[0].lower() or None
    return ReportUri(text, scheme, None, host, size)


def parse_dmarc(text: str, *, lenient: bool = False) -> DmarcPolicy:
    """Read `text` as a DMARC record; `lenient` reads a near-miss (see `near_dmarc`) for its intent.

    The findings are what the text alone shows; `analysis.posture` adds what DNS shows.
    """
    findings: list[Finding] = []
    valid = is_dmarc(text)
    body = text
    if not valid:
        why = _why_not_dmarc(text)
        findings.append(Finding("error", "dmarc", f"not a DMARC record to receivers: {why}; "
                                "they ignore it", S_TAGS, code="dmarc.not-dmarc"))
        if not lenient:
            return DmarcPolicy(text, False, (), tuple(findings))
        body = _straighten(text)
    match = _VERSION.match(body)
    rest = body[match.end():].lstrip(taglist.WSP) if match else body
    rest = rest[1:] if rest.startswith(";") else rest  # the dmarc-sep after the version
    parts = taglist.split(rest, name="[A-Za-z]+", value=_DMARC_VALUE)
    tags = tuple((t.name.lower(), t.value) for t in parts.tags if t.name.lower() != "v")
    policy = DmarcPolicy(text, valid, tags, ())
    findings += _syntax_findings(parts)
    findings += _tag_findings(policy, [t.name.lower() for t in parts.tags])
    return dataclasses.replace(policy, findings=tuple(findings))


def _why_not_dmarc(text: str) -> str:
    if text[:1] in taglist.FWS and is_dmarc(text.lstrip(taglist.FWS)):
        return "it starts with a blank, and v=DMARC1 must be first"
    found = _ANY_VERSION.search(text)
    if found is None:
        return "it does not start with v=DMARC1"
    if found.start() > 0:
        return "v=DMARC1 must be the first tag"
    if "DMARC1" not in found.group(0):
        return f"the version is case-sensitive: {found.group(0)!r} must read v=DMARC1"
    return "v=DMARC1 must be followed by ';' before the next tag"


def _straighten(text: str) -> str:
    """A near-miss rewritten so the tags can be read: v=DMARC1 first, then everything else."""
    inner = text.strip(taglist.FWS)
    found = _ANY_VERSION.search(inner)
    if found is None:
        return "v=DMARC1; " + inner
    rest = (inner[: found.start()] + ";" + inner[found.end():]).strip(" \t;")
    return "v=DMARC1; " + rest


def _syntax_findings(parts: taglist.TagList) -> list[Finding]:
    out = []
    for bad in parts.bad:
        out.append(Finding("error", "dmarc", f"{bad!r} is not tag=value: the record breaks the "
                           "grammar and receivers ignore the part (or all of it)", S_FORMAT,
                           code="dmarc.syntax"))
    if parts.empty_parts:
        out.append(Finding("warning", "dmarc", "empty tag between two ';': the grammar does "
                           "not allow it", S_FORMAT, code="dmarc.empty-tag"))
    return out


def _tag_findings(policy: DmarcPolicy, names: list[str]) -> list[Finding]:
    out: list[Finding] = []
    counts: dict[str, list[str]] = {}
    for name, value in policy.tags:
        counts.setdefault(name, []).append(value)
    differ = conflicts(policy)
    for name, values in counts.items():
        if len(values) > 1:
            shown = ", ".join(f"{name}={v}" for v in values)
            text = (f"the tag {name} appears {len(values)} times ({shown}): a record with a "
                    "duplicated tag is invalid as a whole, so receivers may ignore it")
            if name in differ:
                weak = getattr(intent_of(policy), name)
                text = (f"the tag {name} appears {len(values)} times with values that disagree "
                        f"({shown}): the record is invalid as a whole, so receivers that follow "
                        "the standard apply none of it and lenient ones either value; the repair "
                        f"keeps the weaker, {name}={weak or _DEFAULT.get(name, 'none')}")
            out.append(Finding("error", "dmarc", text, S_DUPLICATE, code="dmarc.duplicate-tag"))
    if names.count("v") > 1:
        out.append(Finding("error", "dmarc", "the tag v appears more than once: a record with a "
                           "duplicated tag is invalid as a whole", S_DUPLICATE,
                           code="dmarc.duplicate-tag"))
    for name in counts:
        if name in REMOVED:
            level, text = REMOVED[name]
            out.append(Finding(level, "dmarc", text, S_REMOVED, code=f"dmarc.removed-{name}"))
        elif name not in KNOWN:
            out.append(Finding("warning", "dmarc", f"unknown tag {name}: receivers ignore it",
                               S_TAGS, code="dmarc.unknown-tag"))
    out += _value_findings(policy)
    after_v = [n for n in names if n != "v"]
    if "p" not in counts:
        out.append(Finding("warning", "dmarc", "no p= tag: treated as p=none; say it explicitly",
                           S_TAGS, code="dmarc.no-p"))
    elif after_v[0] != "p":
        out.append(Finding("warning", "dmarc", "p does not come right after v=DMARC1: RFC 9989 "
                           "allows it, but receivers that follow RFC 7489's grammar may not",
                           S_P_SECOND, code="dmarc.p-not-second"))
    out += _report_findings(policy)
    if policy.testing:
        out.append(Finding("info", "dmarc", "t=y (test mode): receivers apply one level less "
                           "than p= and report policy_test_mode", S_TAGS, code="dmarc.testing"))
    if policy.choice("psd") == "y":  # `analysis.posture` rewords it for an inherited record
        out.append(Finding("warning", "dmarc", "psd=y declares a public suffix domain; only "
                           "registries should publish it", "RFC 9989 §5.2", code="dmarc.psd"))
    p, sp = policy.choice("p"), policy.choice("sp")
    if p == "none" or (p is None and "p" not in counts):
        out.append(Finding("info", "dmarc", "p=none (monitoring): receivers report but enforce "
                           "nothing yet", "RFC 9989 §5.1.5", code="dmarc.monitoring"))
    if sp == "none":
        out.append(Finding("warning" if p in ("quarantine", "reject") else "info", "dmarc",
                           "sp=none: subdomains stay unprotected whatever p says", S_TAGS,
                           code="dmarc.sp-none"))
    return out


def _value_findings(policy: DmarcPolicy) -> list[Finding]:
    out = []
    for name, value in policy.tags:
        if name in CHOICES and value.lower() not in CHOICES[name]:
            allowed = ", ".join(CHOICES[name])
            then = (" receivers then act as if p=none" if name in ("p", "sp", "np")
                    else f" receivers use the default ({_DEFAULT[name]})")
            out.append(Finding(BAD_VALUE_LEVEL[name], "dmarc", f"{name}={value} is not one of "
                               f"{allowed}:{then}", S_DISCOVERY if name in ("p", "sp", "np")
                               else S_FORMAT, code="dmarc.bad-value"))
        elif name == "fo" and not valid_fo(value):
            out.append(Finding(BAD_VALUE_LEVEL["fo"], "dmarc", f"fo={value} is not a ':' list "
                               "of 0, 1, d, s (0 and 1 exclusive, each once)", S_FORMAT,
                               code="dmarc.bad-value"))
    return out


_DEFAULT = {"adkim": "r", "aspf": "r", "t": "n", "psd": "u", "fo": "0"}


def valid_fo(value: str) -> bool:
    options = [o.strip(taglist.WSP).lower() for o in value.split(":")]
    return (bool(options) and all(o in _FO for o in options) and len(set(options)) == len(options)
            and not {"0", "1"} <= set(options))


def _report_findings(policy: DmarcPolicy) -> list[Finding]:
    out: list[Finding] = []
    for tag in ("rua", "ruf"):
        uris = policy.uris(tag)
        for uri in uris:
            if uri.scheme is None and "@" in uri.text and ":" not in uri.text.split("@")[0]:
                out.append(Finding("error", "reports", f"{tag}={uri.text} has no mailto: "
                                   "scheme: reports are never sent there; write "
                                   f"mailto:{uri.destination}", S_URIS, code="reports.no-scheme"))
            elif uri.scheme is None or (uri.scheme == "mailto" and uri.address is None):
                out.append(Finding("error", "reports", f"{tag}={uri.text} is not a valid "
                                   "reporting URI: reports are never sent there", S_URIS,
                                   code="reports.bad-uri"))
            elif uri.scheme != "mailto":
                out.append(Finding("warning", "reports", f"{tag}={uri.text}: receivers need "
                                   "only support mailto: URIs and ignore others", S_TAGS,
                                   code="reports.not-mailto"))
            if uri.size:
                out.append(Finding("warning", "reports", f"{tag}: the size limit !{uri.size} is "
                                   "obsolete; RFC 9989 receivers ignore it", S_FORMAT,
                                   code="reports.size-suffix"))
        if len(uris) > MAX_DESTINATIONS:
            out.append(Finding("warning", "reports", f"{tag} lists {len(uris)} destinations: "
                               f"receivers need only send to {MAX_DESTINATIONS}, so some may get "
                               "nothing", S_DESTINATIONS, code="reports.too-many"))
        if tag == "rua" and not uris:
            out.append(Finding("warning", "reports", "no rua= tag: no aggregate reports are sent",
                               S_TAGS, code="reports.no-rua"))
    return out


# -- intent, strength and the record written back ------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Intent:
    """What a publisher asked for, in the tags RFC 9989 defines (removed and unknown tags gone)."""

    p: str = "none"
    t: str = "n"
    sp: str | None = None
    np: str | None = None
    adkim: str | None = None
    aspf: str | None = None
    psd: str | None = None
    rua: tuple[str, ...] = ()
    ruf: tuple[str, ...] = ()
    fo: str | None = None

    def strength(self) -> tuple[int, int, int, int, int]:
        """(p, sp, np as receivers apply them after t=y, strict DKIM, strict SPF) to compare."""
        soften = 1 if self.t == "y" else 0
        p = LEVEL[self.p]
        sp = LEVEL[self.sp] if self.sp else p
        np = LEVEL[self.np] if self.np else sp
        return (max(0, p - soften) if p else 0, max(0, sp - soften) if sp else 0,
                max(0, np - soften) if np else 0, int(self.adkim == "s"), int(self.aspf == "s"))

    def covers(self, other: Intent) -> bool:
        """Not weaker than `other` anywhere, and it reports to every destination `other` does."""
        return (all(a >= b for a, b in zip(self.strength(), other.strength(), strict=True))
                and destinations(self.rua) >= destinations(other.rua)
                and destinations(self.ruf) >= destinations(other.ruf))


def destinations(uris: Iterable[str]) -> set[str]:
    """Where `uris` send reports, case-folded and without size suffixes, for comparisons."""
    return {repair_uri(u).lower() for u in uris}


def repair_uri(text: str) -> str:
    """A URI as a repaired record writes it: no size suffix; `a@b` becomes `mailto:a@b`."""
    uri = parse_uri(text)
    if uri.scheme is None and "@" in uri.destination and ":" not in uri.destination:
        return "mailto:" + uri.destination
    return uri.destination


def _guess(value: str, choices: Sequence[str]) -> str | None:
    """The allowed value a typo most likely meant (`rejct` -> `reject`), if any is close."""
    value = value.strip().lower()
    if value in choices:
        return value
    close = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    return close[0] if close else None


def _weakest(values: Iterable[str], choices: Sequence[str], order: Sequence[str]) -> str | None:
    """The weakest allowed (or guessed) value among `values`; `order` runs weakest first.

    Values nothing can be read from (`p=block`) state no intent and are passed over.
    """
    found = [g for g in (_guess(v, choices) for v in values) if g is not None]
    return min(found, key=order.index) if found else None


#: The tags that decide what happens to mail, and the values each can take, weakest first.
STRENGTH_TAGS: dict[str, tuple[str, ...]] = {
    "p": POLICIES, "sp": POLICIES, "np": POLICIES, "t": ("y", "n"), "adkim": ("r", "s"),
    "aspf": ("r", "s")}


def conflicts(policy: DmarcPolicy) -> dict[str, tuple[str, ...]]:
    """Tags that decide what happens to mail and appear twice with values that disagree
    (`p=reject; p=none`), each with the values that can be read, in order."""
    out = {}
    for name, choices in STRENGTH_TAGS.items():
        read = [g for g in (_guess(v, choices) for v in policy.values(name)) if g is not None]
        if len(set(read)) > 1:
            out[name] = tuple(read)
    return out


def intent_of(policy: DmarcPolicy) -> Intent:
    """What one record asks for. Of duplicated tags the weakest value counts: the record is
    invalid as a whole (RFC 6376 §3.2), so receivers may apply either value or none, and the
    repair must not ask for more than every reading of it does."""
    p = _weakest(policy.values("p"), POLICIES, POLICIES) or "none"
    # t=y when some t says exactly that; a bad t alone is t=n to receivers (RFC 9989 §4.8)
    t = "y" if any(v.lower() == "y" for v in policy.values("t")) else "n"
    fo_values = [v for v in policy.values("fo") if valid_fo(v)]
    return Intent(
        p=p, t=t,
        sp=_weakest(policy.values("sp"), POLICIES, POLICIES),
        np=_weakest(policy.values("np"), POLICIES, POLICIES),
        adkim=_weakest(policy.values("adkim"), ("r", "s"), ("r", "s")),
        aspf=_weakest(policy.values("aspf"), ("r", "s"), ("r", "s")),
        psd=_guess(policy.first("psd") or "", ("y", "n", "u")) if policy.first("psd") else None,
        rua=_unique(repair_uri(u.text) for u in policy.uris("rua")),
        ruf=_unique(repair_uri(u.text) for u in policy.uris("ruf")),
        fo=fo_values[0].lower().replace(" ", "").replace("\t", "") if fo_values else None)


def disagree(intents: Sequence[Intent]) -> bool:
    """Whether `intents` ask for different things for mail (reports aside)."""
    return len({i.strength() for i in intents}) > 1


def merge(intents: Sequence[Intent]) -> Intent:
    """One record for several (two records at one name -> one): what every one of them asks
    for, and every report destination of any.

    When they disagree receivers apply none of them today (RFC 9989 §4.10), so the stricter one
    would be a new policy, not a repair: each of p, sp and np (after t=y) and each alignment
    mode is the weakest among them. Moving past that is for the plan to decide.
    """
    if not intents:
        return Intent()
    if len(intents) == 1:
        return intents[0]
    floor = tuple(min(i.strength()[k] for i in intents) for k in range(5))
    base = next((i for i in intents if i.strength() == floor), None)
    if base is None:  # they cross (one stricter in p, another in sp): written from the floor
        p, sp, np = (POLICIES[level] for level in floor[:3])
        base = Intent(p=p, sp=sp if sp != p else None, np=np if np != sp else None,
                      adkim="s" if floor[3] else None, aspf="s" if floor[4] else None)
    return dataclasses.replace(
        base, psd=base.psd or next((i.psd for i in intents if i.psd), None),
        rua=_unique(u for i in intents for u in i.rua),
        ruf=_unique(u for i in intents for u in i.ruf),
        fo=base.fo or next((i.fo for i in intents if i.fo), None))


def asks(intent: Intent) -> str:
    """What `intent` asks for mail, in its own tags (`p=reject; t=y`), reports left out."""
    bare = dataclasses.replace(intent, psd=None, rua=(), ruf=(), fo=None,
                               adkim="s" if intent.adkim == "s" else None,
                               aspf="s" if intent.aspf == "s" else None)
    return render(bare).removeprefix("v=DMARC1; ")


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    seen: set[str] = set()
    out = []
    for item in items:
        if item.lower() not in seen:
            seen.add(item.lower())
            out.append(item)
    return tuple(out)


def render(intent: Intent) -> str:
    """The one record that says `intent`, tags in a fixed order (equal intents, equal text)."""
    parts = ["v=DMARC1"]
    for name in ORDER:
        value = getattr(intent, name)
        if name == "t":
            value = "y" if value == "y" else None
        if isinstance(value, tuple):
            value = ",".join(value) if value else None
        if value:
            parts.append(f"{name}={value}")
    return "; ".join(parts)
