"""Cross-check each record's `policy_evaluated` claims against its own auth results (issue 13).

`policy_evaluated` dkim/spf say the message passed with an *aligned* identifier; `auth_results`
list the identifiers checked. A claimed pass that no aligned passing result backs is a
contradiction: a forged report (anyone can mail the rua address) or a broken reporter. The
contradicted dimension is not believed: the record's claim becomes `fail`, what its auth results
support, and the report's `errors` get one note summarising the contradictions.

A record may also lack `policy_evaluated`'s dkim or spf (AOL's 2012 reports give only the
disposition), though RFC 7489 Appendix C requires them. A missing result is unknown, not a fail:
it is derived from the record's auth results, `pass` only when an aligned passing result backs
it, and the report's `errors` get one note saying how many records were filled in (issue 15).
Here "aligned" is the same *could be aligned* as above, so a derived pass is never one the
contradiction check would refuse.

Alignment is judged without DNS, so "aligned" here means *could be aligned*, erring towards yes:
a wrong "contradiction" would drop real mail from the numbers, a missed one only leaves the claim
as today. Strict mode (`adkim=s`/`aspf=s`) is a string comparison (RFC 9989, Organizational
Domain Discovery: "a simple string comparison ... is all that is required"). Relaxed mode needs
the Organizational Domain, which RFC 9989 finds by a DNS tree walk (RFC 7489 used a public
suffix list). Either way a name's Organizational Domain is the name or one of its ancestors, so
two names with one Organizational Domain share it as a suffix; it has at least two labels unless
a top-level domain publishes a DMARC record without `psd=y`, which a PSO MUST NOT do. Hence: two
names *could* be relaxed-aligned when equal, when one is the other's ancestor, or when they share
their last two labels. That accepts every pair either method aligns but siblings under a
one-label Organizational Domain (a brand TLD with `psd=n`), and also some pairs neither aligns
(`a.co.uk` and `b.co.uk`), which only misses a contradiction.
"""

from __future__ import annotations

import codecs
import functools

from analysis.model import Record

#: What IDNA reads as a label separator besides "." (RFC 3490 section 3.1).
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})


def _label(label: str) -> str:
    """An A-label as its U-label, so `xn--bcher-kva` and `bücher` compare equal (RFC 9989
    converts the author domain to A-labels; reports write either form)."""
    if label.startswith("xn--"):
        try:
            return codecs.decode(label[4:].encode("ascii"), "punycode").lower()
        except (UnicodeError, ValueError):
            return label
    return label


@functools.lru_cache(maxsize=8192)
def _labels(name: str) -> tuple[str, ...]:
    """A domain's labels, compared case- and form-insensitively; () when it names nothing.
    An address (`user@example.com`) stands for its domain."""
    name = name.rpartition("@")[2].strip().lower()
    if not name.isascii():
        name = name.translate(_DOTS)
    name = name.strip(".")
    if not name:
        return ()
    labels = name.split(".")
    return tuple(_label(x) for x in labels) if "xn--" in name else tuple(labels)


@functools.lru_cache(maxsize=8192)
def may_align(name: str, header_from: str, strict: bool) -> bool:
    """Whether `name` (a DKIM d= or SPF domain) could be aligned with `header_from`.

    Never says no to a pair a receiver could have aligned (see the module's docstring), so a
    "no" is a real contradiction of a claimed aligned pass.
    """
    a, b = _labels(name), _labels(header_from)
    if not a or not b:
        return False
    if a == b:
        return True
    if strict:
        return False
    shorter, longer = (a, b) if len(a) <= len(b) else (b, a)
    return longer[-len(shorter):] == shorter or (len(shorter) >= 2 and a[-2:] == b[-2:])


class CrossCheck:
    """Fills and checks a report's records as they stream by; `notes()` summarises what it
    found."""

    __slots__ = ("dkim", "example", "filled", "filled_example", "filled_messages", "messages",
                 "missing", "records", "spf", "strict_dkim", "strict_spf")

    def __init__(self, adkim: str | None, aspf: str | None) -> None:
        # Only "s" is strict; anything else (absent, "r", junk) is relaxed, the safe reading.
        self.strict_dkim = adkim == "s"
        self.strict_spf = aspf == "s"
        self.records = self.messages = self.dkim = self.spf = 0
        self.example: str | None = None
        # records with policy_evaluated fields missing, and how often each field was missing
        self.filled = self.filled_messages = 0
        self.missing = {"disposition": 0, "dkim": 0, "spf": 0}
        self.filled_example: str | None = None

    def __call__(self, record: Record) -> Record:
        """The record, its missing results derived and its contradicted claims replaced by
        `fail` (changed in place)."""
        if record.defaulted:
            self._fill(record)
        dkim = record.dkim == "pass" and self._dkim_contradicted(record)
        spf = record.spf == "pass" and self._spf_contradicted(record)
        if dkim or spf:
            self.records += 1
            self.messages += record.count
            if dkim:
                self.dkim += 1
                record.dkim = "fail"
            if spf:
                self.spf += 1
                record.spf = "fail"
            if self.example is None:
                self.example = self._describe(record, dkim, spf)
        return record

    def _fill(self, record: Record) -> None:
        """Derive the results the reporter left out (the disposition is already `none`)."""
        self.filled += 1
        self.filled_messages += record.count
        for name in record.defaulted:
            self.missing[name] += 1
        if "dkim" in record.defaulted:
            record.dkim = "pass" if self._dkim_supported(record) else "fail"
        if "spf" in record.defaulted:
            record.spf = "pass" if self._spf_supported(record) else "fail"
        if self.filled_example is None:
            self.filled_example = (f"header_from {record.header_from[:60]}: "
                                   f"dkim {record.dkim}, spf {record.spf}")

    def _dkim_supported(self, record: Record) -> bool:
        header_from, strict = record.header_from, self.strict_dkim
        return any(d.result == "pass" and may_align(d.domain, header_from, strict)
                   for d in record.auth_dkim)

    def _spf_supported(self, record: Record) -> bool:
        # Unlike a claim, a derived pass needs a domain to align. A HELO result stands for SPF
        # only when there was no envelope sender (RFC 7489 section 3.1.2).
        header_from, strict = record.header_from, self.strict_spf
        return any(s.result == "pass" and s.domain is not None
                   and (s.scope != "helo" or not record.envelope_from)
                   and may_align(s.domain, header_from, strict)
                   for s in record.auth_spf)

    def _dkim_contradicted(self, record: Record) -> bool:
        # No DKIM result at all (old reporters, RFC 7489 allows none): unknown, so believed.
        if not record.auth_dkim:
            return False
        header_from, strict = record.header_from, self.strict_dkim
        return not any(d.result == "pass" and may_align(d.domain, header_from, strict)
                       for d in record.auth_dkim)

    def _spf_contradicted(self, record: Record) -> bool:
        # A passing SPF result without a domain (Zoho's HELO results) cannot be checked, so
        # it could be the aligned one; no SPF result at all is unknown too.
        if not record.auth_spf:
            return False
        header_from, strict = record.header_from, self.strict_spf
        return not any(s.result == "pass" and (s.domain is None
                                               or may_align(s.domain, header_from, strict))
                       for s in record.auth_spf)

    @staticmethod
    def _describe(record: Record, dkim: bool, spf: bool) -> str:
        parts = []
        if dkim:
            signed = ", ".join(f"d={d.domain[:60]} {d.result}" for d in record.auth_dkim[:3])
            parts.append(f"DKIM ({signed})")
        if spf:
            checked = ", ".join(f"{(s.domain or '?')[:60]} {s.result}"
                                for s in record.auth_spf[:3])
            parts.append(f"SPF ({checked})")
        return f"header_from {record.header_from[:60]}: " + "; ".join(parts)

    def notes(self) -> list[str]:
        """The lines for the report's errors: at most one for missing results, one for
        contradictions."""
        notes = [self._missing_note()] if self.filled else []
        contradicted = self.note()
        return [*notes, contradicted] if contradicted else notes

    def _missing_note(self) -> str:
        counts = ", ".join(f"{name} missing in {n}" for name, n in self.missing.items() if n)
        return (f"policy_evaluated incomplete in {self.filled} record(s) "
                f"({self.filled_messages} messages), though RFC 7489 Appendix C requires its "
                f"disposition, dkim and spf: {counts}; missing dkim and spf are derived from "
                "auth_results (pass only with an aligned passing result), a missing disposition"
                f" is read as none. First: {self.filled_example}")

    def note(self) -> str | None:
        """One line for the report's errors, or None when nothing was contradicted."""
        if not self.records:
            return None
        return (f"policy_evaluated contradicts auth_results in {self.records} record(s) "
                f"({self.messages} messages): a DKIM pass with no aligned passing signature in "
                f"{self.dkim}, an SPF pass with no aligned passing SPF result in {self.spf}; "
                f"those passes are not believed (counted as fail). First: {self.example}")

