"""SPF records (RFC 7208) as values: the §12 grammar, macros included, and no DNS.

What the expansion in `analysis.dnsevidence` and the advice in `analysis.spfadvice` need: every
term with its qualifier and arguments, and the problems a reader can see without resolving, each
with the RFC section that decides it. A receiver that meets a syntax error anywhere in a record
returns permerror without evaluating any of it (§4.6), so a syntax problem is an error even when
it sits after `all`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

#: Mechanisms and modifiers that cost a DNS lookup (RFC 7208 §4.6.4); at most 10 per check.
LOOKUP_TERMS = frozenset({"include", "a", "mx", "ptr", "exists", "redirect"})
MAX_LOOKUPS = 10
MAX_VOID_LOOKUPS = 2
#: More MX hosts than this make the `mx` mechanism a permerror (§4.6.4).
MAX_MX_HOSTS = 10
#: A record above this many bytes may not reach a receiver over UDP (§3.4).
MAX_RECORD_BYTES = 512
#: Answers are best kept under this size (§3.4), so the whole DNS message fits in 512 bytes.
ADVISED_RECORD_BYTES = 450
MECHANISMS = frozenset({"all", "include", "a", "mx", "ptr", "ip4", "ip6", "exists"})
#: RFC 6652 §3 reporting modifiers: known, so not "unknown" (RFC 7208 §6 keeps them working).
REPORT_MODIFIERS = frozenset({"ra", "rp", "rr"})
_QUALIFIERS = "+-~?"
_MACRO_LETTERS = frozenset("slodiphcrtv")
_EXP_ONLY_LETTERS = frozenset("crt")  # §7.2: only in explanation text
_DELIMITERS = frozenset(".-+,/_=")
_TERM = re.compile(r"([+\-~?]?)([A-Za-z][A-Za-z0-9_.\-]*)(.*)", re.DOTALL)
_MODIFIER_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]*")
_TOPLABEL = re.compile(r"(?:[a-z0-9]*[a-z][a-z0-9]*|[a-z0-9]+-[a-z0-9\-]*[a-z0-9])",
                       re.IGNORECASE)
#: dual-cidr-length (§12): "/" ip4-cidr-length, "//" ip6-cidr-length, or both, no leading zeros.
_DUAL_CIDR = re.compile(r"(?:/(0|[1-9][0-9]?))?(?://(0|[1-9][0-9]{0,2}))?")
_CIDR_TAIL = re.compile(r"(/[0-9]+)?(//[0-9]+)?$")
_CIDR = re.compile(r"0|[1-9][0-9]{0,2}")
_SENDER_ID = re.compile(r"v=spf2\.0/(?:pra|mfrom)(?:,(?:pra|mfrom))?(?:[ \t]|$)", re.IGNORECASE)
_SEPARATORS = re.compile(r"[ \t\r\n\f\v]+")

#: Stable finding codes (docs/posture.md) and the RFC sections that decide them.
SYNTAX, MACRO, DUPLICATE_MODIFIER = "spf.syntax", "spf.macro", "spf.duplicate-modifier"
AFTER_ALL, REDIRECT_IGNORED, UNKNOWN_MODIFIER = ("spf.after-all", "spf.redirect-ignored",
                                                 "spf.unknown-modifier")
REPORT_MODIFIER, SEPARATOR, NON_ASCII, PTR = ("spf.report-modifier", "spf.separator",
                                              "spf.non-ascii", "spf.ptr")
DUPLICATE_TERM = "spf.duplicate-term"
_GLUED_ALL = re.compile(r"(\S+?)([+\-~?]all)", re.IGNORECASE)
_NEEDS_VALUE = ("include:", "exists:", "a:", "mx:", "ptr:", "redirect=", "exp=")


@dataclasses.dataclass(frozen=True, slots=True)
class SpfProblem:
    """One problem with an SPF record or its tree, and the rule that decides it."""

    code: str  # stable machine name, e.g. "spf.macro"
    level: str  # "error", "warning" or "info"
    section: str  # e.g. "RFC 7208 §7.1"
    text: str
    permerror: bool = False  # a receiver returns permerror: the record fails for all mail
    domain: str = ""  # whose record it is in ("" until the walk says)


@dataclasses.dataclass(frozen=True, slots=True)
class Term:
    """One mechanism (`-all`, `include:x`, `ip4:1.2.3.0/24`, `a/24`) or modifier (`redirect=x`)."""

    name: str  # lower-case mechanism or modifier name
    qualifier: str  # "+", "-", "~", "?" (modifiers: "")
    value: str  # the domain-spec or address, "" when absent (modifiers: the value as written)
    cidr4: int | None = None
    cidr6: int | None = None
    text: str = dataclasses.field(default="", compare=False)  # as written in the record

    @property
    def is_modifier(self) -> bool:
        return self.qualifier == ""

    @property
    def has_macro(self) -> bool:
        return "%" in self.value

    @property
    def target(self) -> str:
        """The domain-spec in lower case without a final dot (what DNS is asked about)."""
        return self.value.lower().rstrip(".")

    def same_test(self, other: Term) -> bool:
        """Whether `other` matches exactly the connections this mechanism matches."""
        if self.is_modifier or other.is_modifier or self.name != other.name:
            return False
        if self.name in ("ip4", "ip6"):
            return _network(self) == _network(other)
        return (self.target == other.target and self.cidr4 == other.cidr4
                and self.cidr6 == other.cidr6)

    def __str__(self) -> str:
        if self.is_modifier:
            return f"{self.name}={self.value}"
        text = ("" if self.qualifier == "+" else self.qualifier) + self.name
        if self.value:
            text += f":{self.value}"
        if self.cidr4 is not None and self.name in ("a", "mx"):
            text += f"/{self.cidr4}"
        if self.cidr6 is not None and self.name in ("a", "mx"):
            text += f"//{self.cidr6}"
        return text


@dataclasses.dataclass(frozen=True, slots=True)
class SpfRecord:
    text: str
    terms: tuple[Term, ...]  # every term that parsed, in record order (also those after `all`)
    problems: tuple[SpfProblem, ...]

    @property
    def errors(self) -> tuple[str, ...]:
        """Texts of the problems that make a receiver return permerror."""
        return tuple(p.text for p in self.problems if p.permerror)

    @property
    def mechanisms(self) -> tuple[Term, ...]:
        return tuple(t for t in self.terms if not t.is_modifier)

    @property
    def evaluated(self) -> tuple[Term, ...]:
        """The mechanisms a receiver may test: up to and including the first `all` (§4.6.2)."""
        out: list[Term] = []
        for term in self.mechanisms:
            out.append(term)
            if term.name == "all":
                break
        return tuple(out)

    def modifier(self, name: str) -> str | None:
        for term in self.terms:
            if term.is_modifier and term.name == name:
                return term.value
        return None

    @property
    def all_qualifier(self) -> str | None:
        """The qualifier of the first `all`, or None when the record has none."""
        for term in self.mechanisms:
            if term.name == "all":
                return term.qualifier
        return None

    @property
    def redirect(self) -> str | None:
        """The redirect a receiver follows: none when an `all` is anywhere in the record (§6.1)."""
        return None if self.all_qualifier is not None else self.modifier("redirect")


def is_spf(text: str) -> bool:
    """An SPF record starts with exactly `v=spf1` followed by a space or the end (§4.5)."""
    return text.lower() == "v=spf1" or text.lower().startswith("v=spf1 ")


def is_sender_id(text: str) -> bool:
    """A Sender ID record (RFC 4406, `v=spf2.0/pra`): not SPF, and historic (RFC 6686)."""
    return _SENDER_ID.match(text) is not None


def resembles_spf(text: str) -> bool:
    """Starts like SPF but is not (`v=spf10`, `v=spf1,`): receivers discard it (§4.5)."""
    return text.lower().startswith("v=spf1") and not is_spf(text)


def parse_spf(text: str) -> SpfRecord:
    """Every term of a record; a term that does not parse is kept out and named in problems."""
    terms: list[Term] = []
    problems: list[SpfProblem] = []
    if not text.isascii():
        problems.append(_syntax(NON_ASCII, "the record holds characters that are not ASCII: "
                                "SPF records are US-ASCII", "RFC 7208 §3"))
    body = text[6:] if is_spf(text) else text
    if any(c in body for c in "\t\r\n\f\v"):
        problems.append(SpfProblem(SEPARATOR, "warning", "RFC 7208 §12", "terms are separated "
                                   "by something other than spaces (a tab or a line break); "
                                   "receivers that follow the grammar reject the record"))
    seen_all = False
    count: dict[str, int] = {}
    for raw in _SEPARATORS.split(body.strip(" \t\r\n\f\v")):
        if not raw:
            continue
        term, problem = _term(raw)
        if problem is not None:
            problems.append(problem)
            continue
        assert term is not None
        terms.append(term)
        if term.is_modifier:
            count[term.name] = count.get(term.name, 0) + 1
            problems.extend(_modifier_notes(term))
        elif seen_all:
            problems.append(SpfProblem(
                AFTER_ALL, "warning", "RFC 7208 §5.1",
                f"'{raw}' comes after 'all': receivers never test it"))
        elif term.name == "all":
            seen_all = True
        elif any(term.same_test(earlier) for earlier in terms[:-1]):
            problems.append(SpfProblem(
                DUPLICATE_TERM, "warning", "RFC 7208 §4.6.4",
                f"'{raw}' repeats an earlier mechanism: it never matches anything new, and "
                "receivers count its lookups again"))
        elif term.name == "ptr":
            problems.append(SpfProblem(PTR, "warning", "RFC 7208 §5.5", f"'{raw}': the ptr "
                                       "mechanism should not be used (slow, unreliable, and "
                                       "some receivers skip it)"))
    for name in ("redirect", "exp"):
        if count.get(name, 0) > 1:
            problems.append(_syntax(DUPLICATE_MODIFIER, f"{name}= appears {count[name]} times "
                                    "(at most once)", "RFC 7208 §6"))
    for name in sorted(REPORT_MODIFIERS):
        if count.get(name, 0) > 1:
            problems.append(SpfProblem(REPORT_MODIFIER, "warning", "RFC 6652 §3", f"{name}= "
                                       f"appears {count[name]} times: receivers use the first"))
    if not count.get("ra") and (count.get("rp") or count.get("rr")):
        problems.append(SpfProblem(REPORT_MODIFIER, "warning", "RFC 6652 §3", "rp= and rr= do "
                                   "nothing without ra=: no failure reports are requested"))
    if seen_all and count.get("redirect"):
        problems.append(SpfProblem(REDIRECT_IGNORED, "warning", "RFC 7208 §6.1",
                                   "redirect= is ignored because the record has an 'all'"))
    return SpfRecord(text, tuple(terms), tuple(problems))


def _syntax(code: str, text: str, section: str = "RFC 7208 §12") -> SpfProblem:
    return SpfProblem(code, "error", section, text, permerror=True)


def _term(raw: str) -> tuple[Term | None, SpfProblem | None]:
    if not raw.isascii() or not raw.isprintable():
        return None, _syntax(SYNTAX, f"'{_show(raw)}' is not a valid term (characters outside "
                             "visible ASCII)")
    match = _TERM.fullmatch(raw)
    if match is None:
        return None, _syntax(SYNTAX, f"'{_show(raw)}' is not a mechanism or a modifier")
    qualifier, name, rest = match.groups()
    lname = name.lower()
    if rest.startswith("="):
        return _modifier(raw, qualifier, name, rest[1:])
    if lname not in MECHANISMS:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{name}' is not an SPF mechanism")
    qualifier = qualifier or "+"
    if lname == "all":
        if rest:
            return None, _syntax(SYNTAX, f"'{_show(raw)}': 'all' takes no value")
        return Term("all", qualifier, "", text=raw), None
    if lname in ("ip4", "ip6"):
        return _ip(raw, lname, qualifier, rest)
    if lname in ("include", "exists"):
        if not rest.startswith(":") or len(rest) == 1:
            return None, _syntax(SYNTAX, f"'{_show(raw)}': {lname} needs ':' and a domain")
        problem = domain_spec_problem(rest[1:])
        if problem:
            return None, _domain_problem(raw, problem)
        return Term(lname, qualifier, rest[1:], text=raw), None
    if lname == "ptr":
        if rest and (not rest.startswith(":") or len(rest) == 1):
            return None, _syntax(SYNTAX, f"'{_show(raw)}': ptr takes only ':' and a domain")
        problem = domain_spec_problem(rest[1:]) if rest else None
        if problem:
            return None, _domain_problem(raw, problem)
        return Term("ptr", qualifier, rest[1:], text=raw), None
    return _a_or_mx(raw, lname, qualifier, rest)


def _modifier(raw: str, qualifier: str, name: str, value: str
              ) -> tuple[Term | None, SpfProblem | None]:
    if qualifier:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': a modifier takes no qualifier")
    if _MODIFIER_NAME.fullmatch(name) is None:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{name}' is not a modifier name")
    lname = name.lower()
    if lname in ("redirect", "exp"):
        if not value:
            return None, _syntax(SYNTAX, f"'{_show(raw)}': {lname}= needs a domain")
        problem = domain_spec_problem(value, explanation=lname == "exp")
        if problem:
            return None, _domain_problem(raw, problem)
    return Term(lname, "", value, text=raw), None


def _modifier_notes(term: Term) -> list[SpfProblem]:
    if term.name in ("redirect", "exp"):
        return []
    if term.name in REPORT_MODIFIERS:
        problem = _report_modifier_problem(term.name, term.value)
        return [SpfProblem(REPORT_MODIFIER, "warning", "RFC 6652 §3", problem)] if problem else []
    if macro_problem(term.value, explanation=True):
        # §12 wants a macro-string here, yet §6 has receivers ignore unknown modifiers, and
        # they do (pyspf never reads the value): a warning, not a permerror
        return [SpfProblem(UNKNOWN_MODIFIER, "warning", "RFC 7208 §6, §12",
                           f"'{_show(term.text)}' is not a modifier receivers know, and its "
                           "value is not a valid macro string: most receivers ignore it, a "
                           "strict one may reject the record; remove it")]
    return [SpfProblem(UNKNOWN_MODIFIER, "info", "RFC 7208 §6",
                       f"'{_show(term.text)}' is not a modifier receivers know: they ignore it")]


def _report_modifier_problem(name: str, value: str) -> str | None:
    if name == "ra" and not re.fullmatch(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+"
                                         r"(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*", value):
        return f"ra={value}: not a local-part, so receivers ignore it"
    if name == "rp" and not re.fullmatch(r"100|[0-9]{1,2}", value):
        return f"rp={value}: not a percentage from 0 to 100, so receivers ignore it"
    if name == "rr" and not all(t in ("all", "e", "f", "s", "n")
                                for t in value.lower().split(":")):
        return f"rr={value}: not a list of all, e, f, s, n, so receivers ignore it"
    return None


def _ip(raw: str, name: str, qualifier: str, rest: str) -> tuple[Term | None, SpfProblem | None]:
    if not rest.startswith(":") or len(rest) == 1:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': {name} needs ':' and an address")
    value = rest[1:]
    address, slash, length = value.partition("/")
    version = 4 if name == "ip4" else 6
    if "%" in value:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': {name} takes an address, not a macro")
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{address}' is not an IPv{version} "
                             "address")
    if parsed.version != version:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{address}' is an IPv{parsed.version} "
                             f"address; use ip{parsed.version}:")
    if slash:
        limit = 32 if version == 4 else 128
        if _CIDR.fullmatch(length) is None or int(length) > limit:
            return None, _syntax(SYNTAX, f"'{_show(raw)}': '/{length}' is not a prefix length "
                                 f"from 0 to {limit} (no leading zeros)")
    return Term(name, qualifier, value, text=raw), None


def _a_or_mx(raw: str, name: str, qualifier: str, rest: str
             ) -> tuple[Term | None, SpfProblem | None]:
    if rest and rest[0] not in ":/":
        return None, _syntax(SYNTAX, f"'{_show(raw)}' is not a valid {name} mechanism")
    spec = rest[1:] if rest.startswith(":") else ""
    tail = rest if rest.startswith("/") else ""
    if spec:
        found = _CIDR_TAIL.search(spec)
        if found is not None and found.group(0) and (found.end() - found.start()) < len(spec):
            tail = found.group(0)
            spec = spec[: found.start()]
    elif rest == ":":
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{name}:' needs a domain after the colon")
    if spec and macro_problem(spec, explanation=False):
        return None, _domain_problem(raw, domain_spec_problem(spec) or "")
    cidr = _DUAL_CIDR.fullmatch(tail)
    if cidr is None:
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{tail}' is not a prefix length "
                             "(/0-32 for IPv4, //0-128 for IPv6, no leading zeros)")
    four = int(cidr.group(1)) if cidr.group(1) is not None else None
    six = int(cidr.group(2)) if cidr.group(2) is not None else None
    if (four is not None and four > 32) or (six is not None and six > 128):
        return None, _syntax(SYNTAX, f"'{_show(raw)}': '{tail}' is out of range (IPv4 up to "
                             "/32, IPv6 up to //128)")
    if rest.startswith(":"):
        if not spec:
            return None, _syntax(SYNTAX, f"'{_show(raw)}': '{name}:' needs a domain after the "
                                 "colon")
        problem = domain_spec_problem(spec)
        if problem:
            return None, _domain_problem(raw, problem)
    return Term(name, qualifier, spec, four, six, text=raw), None


def _domain_problem(raw: str, problem: str) -> SpfProblem:
    if problem.startswith("macro"):
        return _syntax(MACRO, f"'{_show(raw)}': {problem}", "RFC 7208 §7.1")
    return _syntax(SYNTAX, f"'{_show(raw)}': {problem}", "RFC 7208 §12")


def domain_spec_problem(spec: str, *, explanation: bool = False) -> str | None:
    """Why `spec` is not a domain-spec (§12: macro-string ending in a toplabel or a macro)."""
    problem = macro_problem(spec, explanation=explanation)
    if problem:
        return problem
    if spec.endswith(("}", "%%", "%_", "%-")) and _ends_in_macro(spec):
        return None
    labels = spec[:-1].split(".") if spec.endswith(".") else spec.split(".")
    if len(labels) < 2 or _TOPLABEL.fullmatch(labels[-1]) is None:
        return (f"'{spec}' is not a domain name ending in a top-level label (a one-label name "
                "or an all-digit last label is not allowed)")
    if "%" not in spec:
        if any(not label for label in labels[1:]) or any(len(x) > 63 for x in labels):
            return f"'{spec}' is not a valid domain name (empty label or one over 63 bytes)"
        if len(spec.rstrip(".")) > 253:
            return f"'{spec}' is longer than a domain name can be (253 bytes)"
    return None


def _ends_in_macro(spec: str) -> bool:
    """Whether the last macro-expand of `spec` runs to its end (so it is the domain-end)."""
    index, last_end = 0, -1
    while index < len(spec):
        if spec[index] == "%":
            if spec[index + 1] == "{":
                index = spec.index("}", index) + 1
            else:
                index += 2
            last_end = index
        else:
            index += 1
    return last_end == len(spec)


def macro_problem(text: str, *, explanation: bool) -> str | None:
    """Why `text` is not a valid macro-string (§7.1), or None. c, r, t only in exp (§7.2)."""
    index = 0
    while index < len(text):
        char = text[index]
        if not ("\x21" <= char <= "\x7e"):
            return f"macro string '{_show(text)}' holds a character that is not visible ASCII"
        if char != "%":
            index += 1
            continue
        following = text[index + 1 : index + 2]
        if following in ("%", "_", "-"):
            index += 2
            continue
        if following != "{":
            return (f"macro syntax: '%' must start %{{...}}, %%, %_ or %- (in '{_show(text)}'; "
                    "write a literal % as %%)")
        close = text.find("}", index + 2)
        if close < 0:
            return f"macro syntax: '%{{' without '}}' in '{_show(text)}'"
        problem = _macro_body(text[index + 2 : close], explanation)
        if problem:
            return f"macro syntax: %{{{text[index + 2 : close]}}} {problem}"
        index = close + 1
    return None


def _macro_body(body: str, explanation: bool) -> str | None:
    if not body:
        return "has no macro letter"
    letter = body[0].lower()
    if letter not in _MACRO_LETTERS:
        return f"uses '{body[0]}', which is not a macro letter (s l o d i p h c r t v)"
    if letter in _EXP_ONLY_LETTERS and not explanation:
        return f"uses '{body[0]}', allowed only in exp= explanation text (RFC 7208 §7.2)"
    rest = body[1:]
    digits = len(rest) - len(rest.lstrip("0123456789"))
    if digits and int(rest[:digits]) == 0:
        return "keeps 0 labels (the digit transformer must not be zero)"
    rest = rest[digits:]
    if rest[:1] in ("r", "R"):
        rest = rest[1:]
    bad = [c for c in rest if c not in _DELIMITERS]
    if bad:
        return f"has '{bad[0]}' where only a transformer or a delimiter (. - + , / _ =) fits"
    return None


def _network(term: Term) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(term.value, strict=False)


def network(term: Term) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """The network an ip4/ip6 term names (host bits allowed, as receivers read it)."""
    return _network(term)


def _show(text: str, limit: int = 60) -> str:
    shown = text.encode("ascii", "backslashreplace").decode()
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


def repair_syntax(text: str) -> str | None:
    """The record with the syntax slips that have one obvious meaning fixed, or None.

    Fixed: an `all` glued to the term before it (`ip4:192.0.2.1~all`), a value written after a
    space (`include: example.com`), an address given to the wrong ip4/ip6 mechanism, prefix
    lengths with leading zeros, tabs or line breaks between terms, and a repeated exp= (the first
    is kept: it only chooses an explanation text). None when nothing needed fixing or something
    else is still broken, because then no record keeps the author's intent for certain.
    """
    if not is_spf(text) or not text.isascii():
        return None
    tokens = [t for t in _SEPARATORS.split(text[6:]) if t]
    out: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        lower = token.lower().lstrip(_QUALIFIERS)
        if lower in _NEEDS_VALUE and index + 1 < len(tokens):
            token += tokens[index + 1]
            index += 1
        glued = _GLUED_ALL.fullmatch(token)
        if glued and _term(token)[0] is None and _term(glued.group(1))[0] is not None:
            out.extend((glued.group(1), glued.group(2)))
        else:
            out.append(_repaired_term(token))
        index += 1
    exp_seen = False
    kept = []
    for token in out:
        if token.lower().startswith("exp="):
            if exp_seen:
                continue
            exp_seen = True
        kept.append(token)
    repaired = " ".join(["v=spf1", *kept])
    if repaired == text or parse_spf(repaired).errors:
        return None
    return repaired


def _repaired_term(token: str) -> str:
    if _term(token)[1] is None:
        return token
    match = _TERM.fullmatch(token)
    if match is None:
        return token
    qualifier, name, rest = match.groups()
    if name.lower() in ("ip4", "ip6") and rest.startswith(":"):
        address, slash, length = rest[1:].partition("/")
        length = length.lstrip("0") or "0" if slash else ""
        try:
            version = ipaddress.ip_address(address).version
        except ValueError:
            return token
        candidate = f"{qualifier}ip{version}:{address}" + (f"/{length}" if slash else "")
        return candidate if _term(candidate)[1] is None else token
    if name.lower() in ("a", "mx"):
        candidate = re.sub(r"/0+([0-9])", r"/\1", token)
        return candidate if _term(candidate)[1] is None else token
    return token
