"""What to tell a domain's owner about its SPF tree: findings, each with the record that fixes it.

A fix keeps what the record means today. It only drops what can never match (terms after `all`,
repeated mechanisms, names and include targets that do not exist, a redirect that `all` already
overrides, `a`/`mx` terms whose addresses other terms cover), repairs syntax slips that have one
obvious meaning, merges two records into one, and moves a `+all`, `?all` or missing `all` to
`~all`, never the other way. A record that would still exceed 10 lookups or 2 void lookups is not
offered: the advice then says what to do instead.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from analysis.records.findings import DnsChange, Finding
from analysis.spf import (
    AFTER_ALL,
    DUPLICATE_MODIFIER,
    DUPLICATE_TERM,
    MACRO,
    MAX_LOOKUPS,
    MAX_VOID_LOOKUPS,
    REDIRECT_IGNORED,
    SEPARATOR,
    SYNTAX,
    SpfProblem,
    Term,
    parse_spf,
    repair_syntax,
)
from analysis.spftree import (
    LOOKUP_LIMIT,
    LOOP,
    MULTIPLE,
    SENDER_ID,
    TARGET_MISSING,
    TYPE_SPF,
    VOID,
    VOID_LIMIT,
    Network,
    SpfTermCost,
    SpfTree,
)

NONE, TEMPORARY, PLUS_ALL, NEUTRAL_ALL, NO_ALL = ("spf.none", "spf.temporary", "spf.plus-all",
                                                  "spf.neutral-all", "spf.no-all")
NEAR_LIMIT, PERMERROR = "spf.lookups-near-limit", "spf.permerror"
#: How strict an `all` is; a proposal never lowers it.
STRICTNESS = {"-": 3, "~": 2, "?": 1, "+": 0}
_SYNTAX_CODES = frozenset({SYNTAX, MACRO, DUPLICATE_MODIFIER, SEPARATOR})


@dataclasses.dataclass(frozen=True, slots=True)
class Repair:
    """The domain's record with everything fixed that can be fixed without changing its meaning."""

    record: str
    lookups: int
    void4: int
    void6: int
    fixed: frozenset[str]  # finding codes (of the domain's own record) it fixes
    done: tuple[str, ...]  # what changed, in words


def own(tree: SpfTree, domain: str) -> bool:
    """Whether `domain`'s record is the owner's to change (the domain or one of its names)."""
    return not domain or domain == tree.domain or domain.endswith("." + tree.domain)


# -- findings -------------------------------------------------------------------------------


def findings(tree: SpfTree) -> list[Finding]:
    """Every SPF finding for `tree`, worst first within the order the tree found them."""
    if tree.temporary:
        return [Finding("warning", "spf", "part of the SPF tree could not be looked up now "
                        "(timeout or SERVFAIL); try again", "RFC 7208 §2.6.6", code=TEMPORARY)]
    fixed = repair(tree)
    base = fixed.record if fixed else tree.record
    broken = any(p.permerror for p in tree.problems
                 if not (fixed and own(tree, p.domain) and p.code in fixed.fixed))
    best = None if broken or base is None else strengthen_all(base)
    if fixed and best is not None:  # one record fixes everything: the same for every finding
        done = fixed.done + (("~all at the end",) if best != fixed.record else ())
        fixed = dataclasses.replace(fixed, record=best, done=done)
    change = _change(tree, fixed.record, "; ".join(fixed.done)) if fixed else None
    out: list[Finding] = []
    if tree.record is None and not tree.alternatives and not _has(tree, MULTIPLE):
        out.append(Finding("error", "spf", f"{tree.domain} has no SPF record: receivers get "
                           "'none' for every sender; publish one that lists your senders and "
                           "ends in ~all or -all", "RFC 7208 §2.6.1", code=NONE))
    for problem in tree.problems:
        out.append(_finding(tree, problem, fixed, change))
    known = {p.text for p in tree.problems}
    out.extend(Finding("error", "spf", e, "RFC 7208 §2.6.7", code=PERMERROR)
               for e in tree.errors if e not in known)
    if tree.record is not None:
        out.extend(_all_findings(tree, None if broken or base is None else base))
        if MAX_LOOKUPS - 1 <= tree.lookups <= MAX_LOOKUPS:
            out.append(Finding("warning", "spf", f"{tree.lookups} of {MAX_LOOKUPS} DNS lookups "
                               "used: one more include breaks SPF for every message",
                               "RFC 7208 §4.6.4", code=NEAR_LIMIT))
    return out


def _has(tree: SpfTree, code: str) -> bool:
    return any(p.code == code and p.domain in ("", tree.domain) for p in tree.problems)


def _finding(tree: SpfTree, problem: SpfProblem, fixed: Repair | None,
             change: DnsChange | None) -> Finding:
    level, text = problem.level, problem.text
    mine = own(tree, problem.domain)
    if not mine:
        if problem.permerror:
            text += f" (in {problem.domain}'s record: its owner must fix it)"
        else:
            level, text = "info", text + f" (in {problem.domain}'s record)"
    fix = change if mine and fixed and problem.code in fixed.fixed else None
    if problem.code == VOID and mine and fixed and not any(
            c.dead and c.term.text in text for c in tree.terms):
        fix = None  # an MX host without addresses: the mx term stays, so no fix for this one
    if problem.code == LOOKUP_LIMIT and mine and fix is None:
        text += _lookup_hint(tree)
    if problem.code == MULTIPLE and problem.domain == tree.domain:
        fix = merged(tree)
    elif problem.code == SENDER_ID:
        fix = next((DnsChange(tree.domain, "TXT", "", "remove the Sender ID record", (r,))
                    for r in tree.replaced_records if r[:40] in text), None)
    elif problem.code == TYPE_SPF:
        legacy = tuple(r[4:] for r in tree.replaced_records if r.startswith("SPF "))
        fix = DnsChange(tree.domain, "SPF", "", "remove the type SPF (99) records", legacy)
    return Finding(level, "spf", text, problem.section, fix, problem.code)


def _lookup_hint(tree: SpfTree) -> str:
    costly = sorted((c for c in tree.terms if c.lookups > 1), key=lambda c: -c.lookups)[:4]
    listed = ", ".join(f"{c.term.text} ({c.lookups})" for c in costly)
    return ("; no record keeps every sender within 10: send some services from a subdomain "
            "with its own SPF record (each name has its own 10), or let their aligned DKIM carry "
            "DMARC" + (f"; the costliest terms: {listed}" if listed else ""))


def _all_findings(tree: SpfTree, base: str | None) -> list[Finding]:
    """+all, ?all or no all in the domain's own record; `base` is the record to build on."""
    record = parse_spf(base or tree.record or "")
    qualifier = record.all_qualifier
    if qualifier in ("-", "~") or (qualifier is None and record.redirect is not None):
        return []
    fix = None
    if base is not None:
        stronger = strengthen_all(base)
        fix = _change(tree, stronger, "end with ~all; once the reports show every sender of "
                      "yours listed, -all") if stronger != tree.record else None
    if qualifier == "+":
        return [Finding("error", "spf", "+all authorises every server on the Internet to send "
                        "as this domain", "RFC 7208 §5.1", fix, PLUS_ALL)]
    if qualifier == "?":
        return [Finding("warning", "spf", "?all is neutral: it authorises nothing and rejects "
                        "nothing; end with ~all or -all", "RFC 7208 §5.1", fix, NEUTRAL_ALL)]
    return [Finding("warning", "spf", "no 'all' at the end: unlisted servers get a neutral "
                    "result; end with ~all or -all", "RFC 7208 §4.7", fix, NO_ALL)]


def _change(tree: SpfTree, record: str, why: str) -> DnsChange:
    return DnsChange(tree.domain, "TXT", record, why,
                     (tree.record,) if tree.record is not None else ())


def strengthen_all(record: str) -> str:
    """`record` with +all/?all made ~all, or ~all added when it has neither all nor redirect."""
    spf = parse_spf(record)
    tokens = record.split()
    qualifier = spf.all_qualifier
    if qualifier in ("+", "?"):
        first = next(i for i, t in enumerate(tokens) if t.lower().lstrip("+?~-") == "all")
        tokens[first] = "~all"
    elif qualifier is None and spf.redirect is None:
        tokens.append("~all")
    return " ".join(tokens)


# -- the repair -----------------------------------------------------------------------------


def repair(tree: SpfTree) -> Repair | None:
    """The domain's record with its fixable problems fixed, or None (nothing to fix, or no fix
    that keeps its meaning within 10 lookups and 2 void lookups)."""
    if tree.record is None or tree.temporary:
        return None
    text, costs = tree.record, list(tree.terms)
    fixed: set[str] = set()
    done: list[str] = []
    if parse_spf(text).errors:
        candidate = repair_syntax(text)
        measured = next((c for r, c in tree.alternatives if r == candidate), None)
        if candidate is None or measured is None:
            return None
        fixed |= {p.code for p in parse_spf(text).problems if p.code in _SYNTAX_CODES}
        done.append("syntax repaired")
        text, costs = candidate, list(measured)
    result = _simplify(tree, text, costs, fixed, done)
    if result is None or result.record == tree.record:
        return None
    return result


def _simplify(tree: SpfTree, text: str, costs: list[SpfTermCost], fixed: set[str],
              done: list[str]) -> Repair | None:
    record = parse_spf(text)
    evaluated = record.evaluated
    if len(costs) < len(evaluated):
        return None  # the walk stopped early: the costs are not all known
    redirect_cost = costs[len(evaluated)] if len(costs) > len(evaluated) else None
    items: list[tuple[Term, SpfTermCost | None]] = []
    index = 0
    for term in record.terms:
        if term.is_modifier:
            if term.name != "redirect":
                items.append((term, None))
            elif record.all_qualifier is not None:
                fixed.add(REDIRECT_IGNORED)
                done.append(f"removed {term.text} (ignored next to 'all')")
            elif redirect_cost is not None:
                items.append((term, redirect_cost))
            continue
        if index >= len(evaluated):
            fixed.add(AFTER_ALL)
            done.append(f"removed {term.text} (after 'all', never tested)")
            continue
        items.append((term, costs[index]))
        index += 1
    items = _without_repeats_and_dead(items, fixed, done)
    lookups = sum(c.lookups for _, c in items if c is not None)
    while lookups > MAX_LOOKUPS:
        position = next((i for i in range(len(items)) if _covered(items, i)), None)
        if position is None:
            return None
        term, cost = items.pop(position)
        done.append(f"removed {term.text} (its addresses are covered by the other terms)")
        lookups -= cost.lookups if cost else 0
    void4 = sum(c.void4 for _, c in items if c is not None)
    void6 = sum(c.void6 for _, c in items if c is not None)
    if void4 > MAX_VOID_LOOKUPS:
        return None
    if tree.lookups > MAX_LOOKUPS:
        fixed.add(LOOKUP_LIMIT)
    if void6 <= MAX_VOID_LOOKUPS and max(tree.void4, tree.void6) > MAX_VOID_LOOKUPS:
        fixed.add(VOID_LIMIT)
    new = " ".join(["v=spf1", *(t.text for t, _ in items)])
    if parse_spf(new).errors:
        return None
    return Repair(new, lookups, void4, void6, frozenset(fixed), tuple(done))


def _without_repeats_and_dead(items: list[tuple[Term, SpfTermCost | None]], fixed: set[str],
                              done: list[str]) -> list[tuple[Term, SpfTermCost | None]]:
    kept: list[tuple[Term, SpfTermCost | None]] = []
    for term, cost in items:
        if not term.is_modifier and any(term.same_test(t) for t, _ in kept):
            fixed.add(DUPLICATE_TERM)
            done.append(f"removed {term.text} (repeats an earlier term)")
            continue
        if cost is not None and cost.dead and term.name in ("a", "mx", "exists", "include"):
            fixed.add(TARGET_MISSING if term.name == "include" else VOID)
            if cost.networks is None:  # a loop back into the record
                fixed.add(LOOP)
            done.append(f"removed {term.text} (" + ("no SPF record there" if term.name ==
                        "include" else "the name has no records") + ")")
            continue
        kept.append((term, cost))
    return kept


def _covered(items: Sequence[tuple[Term, SpfTermCost | None]], index: int) -> bool:
    """Whether dropping the a/mx term at `index` changes no receiver's result."""
    term, cost = items[index]
    if term.name not in ("a", "mx") or cost is None or not cost.networks:
        return False
    nets = cost.networks
    earlier = [n for t, c in items[:index] if not t.is_modifier and c is not None and c.networks
               for n in c.networks]
    if all(_inside(n, earlier) for n in nets):
        return True  # an earlier term always matches first
    covering: list[Network] = []
    for other, other_cost in items[index + 1:]:
        if other.is_modifier:
            if other.name == "redirect":
                return False
            continue
        if other.name == "all":
            return False
        same = other.qualifier == term.qualifier
        if other_cost is None or other_cost.networks is None:
            if same:
                continue  # whatever it matches first ends the same way
            return False
        if not same:
            if any(a.overlaps(b) for a in other_cost.networks for b in nets
                   if a.version == b.version):
                return False
            continue
        covering.extend(other_cost.networks)
        if all(_inside(n, covering) for n in nets):
            return True
    return False


def _inside(net: Network, others: Sequence[Network]) -> bool:
    return any(net.version == o.version and net.subnet_of(o)  # type: ignore[arg-type]
               for o in others)


def merged(tree: SpfTree) -> DnsChange | None:
    """One record for a domain that publishes several (all discarded now): their terms, the
    strictest `all`, within the limits; None when they cannot be merged safely."""
    if len(tree.alternatives) < 2:
        return None
    terms: list[tuple[Term, SpfTermCost]] = []
    others: list[Term] = []
    qualifiers = []
    for text, costs in tree.alternatives:
        record = parse_spf(text)
        if record.errors or record.modifier("redirect") is not None or len(costs) != len(
                record.evaluated):
            return None
        for term, cost in zip(record.evaluated, costs, strict=True):
            if term.name == "all":
                qualifiers.append(term.qualifier)
            elif not any(term.same_test(t) for t, _ in terms):
                terms.append((term, cost))
        others.extend(t for t in record.terms if t.is_modifier and t not in others)
    if sum(c.lookups for _, c in terms) > MAX_LOOKUPS:
        return None
    if max(sum(c.void4 for _, c in terms), sum(c.void6 for _, c in terms)) > MAX_VOID_LOOKUPS:
        return None
    tokens = ["v=spf1", *(t.text for t, _ in terms)]
    if qualifiers:
        best = max(qualifiers, key=STRICTNESS.__getitem__)
        tokens.append(f"{best if STRICTNESS[best] >= 2 else '~'}all")
    tokens += [t.text for t in others if t.name == "exp"][:1]
    tokens += [t.text for t in others if t.name != "exp"]
    return DnsChange(tree.domain, "TXT", " ".join(tokens), "one record instead of "
                     f"{len(tree.alternatives)}: receivers discard all of them now",
                     tuple(text for text, _ in tree.alternatives))

