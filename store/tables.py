"""Azure Table Storage store: the same interface as `SqliteStore`, for dmarcbot in Azure.

Table Storage has no transaction across partitions, and a report's rollups span several (one per
policy domain and UTC day). So each `add_report` call is an *attempt* with its own id: it writes
the report's rollup rows under that id, then creates the report's ledger entity, which names the
attempt. Creating the ledger entity is the commit: it succeeds once per report. Readers count a
rollup row only when its attempt is the committed one, so a crash at any point leaves nothing
visible, and running the report again writes and commits a fresh attempt: nothing is counted
twice. Rows of attempts that never committed are inert. docs/storage.md describes the layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core import MatchConditions
from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.data.tables import (
    EdmType,
    EntityProperty,
    TableClient,
    TableEntity,
    TableServiceClient,
    UpdateMode,
)

from analysis.dnsevidence import Answer
from analysis.mailauth import reporter_domain
from analysis.model import AggregateReport, FailureReport, Report, TlsReport
from analysis.rollup import (
    ContentDigest,
    LedgerKey,
    RollupKey,
    SourceRollup,
    content_digest,
    ledger_key,
    legacy_results,
    report_days,
    results_from_json,
    results_json,
    rollup_rows,
    stored_order,
)
from analysis.volume import Sent, VolumeCheck, is_held, window
from store import table_sources as ts
from store.base import (
    NOTHING_RECALLED,
    AddResult,
    InventoryItem,
    LedgerEntry,
    Recalled,
    StorageRefused,
    StoreError,
    basis,
    believed_bases,
)

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

    from store.table_retention import TableRetention

log = logging.getLogger(__name__)

CONNECTION_ENV = "DMARCBOT_TABLES_CONNECTION"
ACCOUNT_URL_ENV = "DMARCBOT_TABLES_ACCOUNT_URL"
CLIENT_ID_ENV = "DMARCBOT_TABLES_CLIENT_ID"
PREFIX_ENV = "DMARCBOT_TABLES_PREFIX"

LEDGER, ROLLUPS, INVENTORY, DNS = "reports", "rollups", "inventory", "dnscache"

_MAX_OPS = 100  # entities per transaction (the service's limit)
_MAX_BATCH_CHARS = 2_000_000  # JSON per transaction; the service takes at most 4 MiB
_PIECE = 16_000  # characters per string property: at most 64 KiB in UTF-16, even outside the BMP
_ERRORS_CHARS = 60_000  # JSON kept of a report's errors; an entity holds at most 1 MiB
_DETAILS_CHARS = 240_000  # JSON kept of a TLS or failure report's details
_SAFE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,199}")
_PREFIX = re.compile(r"[A-Za-z][A-Za-z0-9]{0,53}")  # table names: letters and digits, <= 63
_ROLLUP_TEXT = ("policy_domain", "source_ip", "header_from", "envelope_from", "disposition",
                "reasons")
_CONFLICTS = {"EntityAlreadyExists", "UpdateConditionNotSatisfied", "ConditionNotMet"}
#: The ledger table's partition indexing the policy domains (store/table_sources.py); no
#: domain's partition has this name (`_key` gives a plain name or `~` and 32 hex digits).
_DOMAINS = "~domains"
_NAMING_MARK = "~naming-mark"  # in _DOMAINS: Store.naming_mark
#: The pending rebuild of a whole partition's sources (the first read after the upgrade).
_FULL = f"{ts.PENDING}0-full"
_SETTLE_TRIES = 8
#: Deltas a source gathers before a reader folds them into its entity.
_COMPACT = 8
#: A ledger key one of whose copies was added to the sources (see `TableStore._additions`).
_GUARD = "~k-"
#: Seconds a DNS cache partition read whole is used before it is read again (answers other
#: processes cached meanwhile are missed that long, and looked up again: harmless).
_DNS_FRESH = 600.0

Operation = tuple[Any, ...]  # ("upsert", entity, {...}): one operation of a transaction


# -- keys and properties --------------------------------------------------------------------------


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:32]


def _key(value: str) -> str:
    """A PartitionKey or RowKey for `value`: itself when plainly safe, else `~` and a digest.

    Keys may not hold / \\ # ? or control characters and some others misbehave in URLs, so only
    letters, digits and . _ - pass through (domain names, mostly); `~` never starts a plain key.
    """
    return value if _SAFE_KEY.fullmatch(value) else "~" + _digest(value)


def _value(raw: object) -> Any:
    """The Python value of a property (Int64 properties come back wrapped)."""
    return raw.value if isinstance(raw, EntityProperty) else raw


def _props(**fields: object) -> dict[str, object]:
    """Entity properties: ints as Int64 (counts and timestamps pass 2**31), long text in pieces.

    None is left out, as the service cannot store it.
    """
    out: dict[str, object] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if isinstance(value, str):
            pieces = [value[i:i + _PIECE] for i in range(0, len(value), _PIECE)] or [""]
            out.update((name if i == 0 else f"{name}_{i}", piece)
                       for i, piece in enumerate(pieces))
        elif isinstance(value, bool | float):
            out[name] = value
        elif isinstance(value, int):
            out[name] = EntityProperty(value, EdmType.INT64)
        else:
            raise TypeError(f"{name}: {type(value).__name__} is not stored")
    return out


def _text(entity: Mapping[str, Any], name: str) -> str:
    pieces: list[str] = []
    for i in itertools.count():
        piece = entity.get(name if i == 0 else f"{name}_{i}")
        if piece is None:
            break
        pieces.append(piece)
    return "".join(pieces)


def _optional(entity: Mapping[str, Any], name: str) -> str | None:
    return (_text(entity, name) if name in entity else None) or None


def _fit(items: list[Any], limit: int) -> tuple[list[Any], int]:
    """The longest prefix of `items` whose JSON stays under `limit`, and how many were left."""
    sizes = itertools.accumulate(len(json.dumps(item)) + 2 for item in items)
    kept = sum(1 for size in sizes if size <= limit)
    return items[:kept], len(items) - kept


def _batches(entities: Iterable[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Transactions' worth of entities: at most 100 each and well under the 4 MiB payload."""
    batch: list[dict[str, Any]] = []
    size = 0
    for entity in entities:
        chars = len(json.dumps(entity))
        if batch and (len(batch) == _MAX_OPS or size + chars > _MAX_BATCH_CHARS):
            yield batch
            batch, size = [], 0
        batch.append(entity)
        size += chars
    if batch:
        yield batch


def _code(exc: HttpResponseError) -> str:
    """The service's error code (AuthorizationFailure, EntityAlreadyExists …) or the status."""
    code = getattr(exc, "error_code", None)
    if code is None and exc.response is not None:
        # azure-core types .response as a Protocol without `headers`; every response has them
        code = exc.response.headers.get("x-ms-error-code")  # type: ignore[attr-defined]
    if code is None and exc.error is not None:
        code = exc.error.code
    if code is None:
        return f"HTTP {exc.status_code}" if exc.status_code else type(exc).__name__
    return str(getattr(code, "value", code))


def _public(url: str) -> str:
    """`url` without its query, where a SAS token would be."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}".rstrip("/")


# -- what a report keeps ------------------------------------------------------------------------


def _errors_json(errors: list[str]) -> str:
    kept, dropped = _fit(errors, _ERRORS_CHARS - 200)
    note = [f"{dropped} more problems not kept (Table Storage entity size)"] if dropped else []
    return json.dumps(kept + note)


def _tls_details(report: TlsReport) -> tuple[int, int, str]:
    """Records, sessions and the `tls_results` rows SqliteStore keeps, as JSON."""
    budget = _DETAILS_CHARS // max(1, len(report.policies)) - 500
    policies = []
    for policy in report.policies:
        failures, dropped = _fit([
            {"result_type": d.result_type, "failed_session_count": d.failed_session_count,
             "sending_mta_ip": d.sending_mta_ip, "receiving_mx_hostname":
             d.receiving_mx_hostname, "receiving_ip": d.receiving_ip}
            for d in policy.failure_details], budget)
        policies.append({
            "policy_domain": policy.policy_domain, "policy_type": policy.policy_type,
            "successful": policy.total_successful_session_count,
            "failed": policy.total_failure_session_count, "failures": failures,
            **({"failures_not_kept": dropped} if dropped else {}),
        })
    kept, dropped = _fit(policies, _DETAILS_CHARS - 200)
    sessions = sum(p.total_successful_session_count + p.total_failure_session_count
                   for p in report.policies)
    return (len(report.policies), sessions,
            json.dumps(kept + ([{"policies_not_kept": dropped}] if dropped else [])))


def _failure_details(report: FailureReport) -> tuple[int, int, str]:
    """The `failure_reports` row SqliteStore keeps, as JSON (never the message itself)."""
    fields: dict[str, object] = {
        "reported_domain": report.reported_domain,
        "arrival_ts": int(report.arrival_date.timestamp()) if report.arrival_date else None,
        "source_ip": report.source_ip, "auth_failure": report.auth_failure,
        "identity_alignment": report.identity_alignment,
        "delivery_result": report.delivery_result, "dkim_domain": report.dkim_domain,
        "dkim_selector": report.dkim_selector, "spf_dns": report.spf_dns,
    }
    if len(json.dumps(fields)) > _DETAILS_CHARS:
        fields = {k: v[:_DETAILS_CHARS // 20] if isinstance(v, str) else v
                  for k, v in fields.items()}
    return 1, 1, json.dumps(fields)


def _org_schema(report: Report) -> tuple[str, str | None]:
    if isinstance(report, AggregateReport):
        return report.reporter.org_name, report.schema
    if isinstance(report, TlsReport):
        return report.organization_name, None
    return report.reporter or "", report.format


def _ledger_entry(entity: Mapping[str, Any], conflict: bool) -> LedgerEntry:
    key = LedgerKey(entity["kind"], _text(entity, "reporter"), _text(entity, "report_id"),
                    _text(entity, "policy_domain"), _value(entity["begin_ts"]),
                    _value(entity["end_ts"]))
    return LedgerEntry(
        key=key, org_name=_text(entity, "org_name"), schema=_optional(entity, "schema"),
        source=_text(entity, "source"), records=_value(entity["records"]),
        messages=_value(entity["messages"]), errors=tuple(json.loads(_text(entity, "errors"))),
        stored_at=entity["stored_at"], conflict=conflict,
        unverified=_optional(entity, "unverified") or None,
    )


def _same_content(entity: Mapping[str, Any], content: str, records: int, messages: int,
                  kind: str) -> bool:
    """Whether a ledger entity of the same key holds this content, by its digest. An entity
    stored before there were digests: a TLS or failure report by its counts; an aggregate
    report's rows are compared instead (`TableStore._rows_of`)."""
    if entity.get("digest") is not None:  # a selected property an entity lacks may read None
        return bool(entity["digest"] == content)
    return kind != "aggregate" and (_value(entity["records"]), _value(entity["messages"])) == (
        records, messages)


def _same_key(row_key: str) -> str:
    """The digest of the ledger key a ledger RowKey starts with (`<key>` before issue 13's
    content digests, `<key>-<content>` since)."""
    return row_key[:32]


def _rollup_key(entity: Mapping[str, Any]) -> RollupKey:
    if "dkim_results" in entity:
        dkim = results_from_json(_text(entity, "dkim_results"))
        spf = results_from_json(_text(entity, "spf_results"))
    else:  # written before results were structured: space-joined text
        dkim, spf = legacy_results(_text(entity, "dkim")), legacy_results(_text(entity, "spf"))
    return RollupKey(day=entity["day"], dkim_aligned=entity["dkim_aligned"],
                     spf_aligned=entity["spf_aligned"], dkim=dkim, spf=spf,
                     **{name: _text(entity, name) for name in _ROLLUP_TEXT})


def _item(entity: Mapping[str, Any]) -> InventoryItem:
    return InventoryItem(
        policy_domain=_text(entity, "policy_domain"), service_key=_text(entity, "service_key"),
        status=entity["status"], owner=_optional(entity, "owner"),
        first_seen=entity["first_seen"], last_seen=entity["last_seen"],
        messages=_value(entity["messages"]), dmarc_pass=_value(entity["dmarc_pass"]),
        decided_by=_optional(entity, "decided_by"), decided_at=_optional(entity, "decided_at"),
        asked_at=_optional(entity, "asked_at"), reminded_at=_optional(entity, "reminded_at"),
        alerted_at=_optional(entity, "alerted_at"),
    )


class _Gone(ResourceNotFoundError):
    """An entity a query returned a moment ago is gone: another writer got there first. Every
    caller takes it as the race a failed condition is, and reads again."""

    error_code = "ResourceNotFound"


@dataclasses.dataclass(frozen=True, slots=True)
class _Naming:
    """What a naming read of a partition's kept identifications (`TableStore.recall_naming`)."""

    started: datetime  # the partition's clock when it began (`~nclock`'s Timestamp)
    clock: str  # `~nclock`'s ETag then: the naming keeps what it named only if it is unchanged
    generations: tuple[str, ...]  # the state's, oldest first
    kept: dict[str, str]  # IP -> identification, every generation's, the later standing
    parts: tuple[str, ...]  # every `~n-` RowKey read (garbage of a naming that lost included)
    #: source entities this naming wrote itself (folding), RowKey -> ETag: not changes to the
    #: next naming while they stay as written
    own: dict[str, str] = dataclasses.field(default_factory=dict)


#: Source entities written this long before the last naming began count as changed since: a
#: transaction that had its Timestamp before that naming's clock but was not yet visible to it.
NAMING_OVERLAP = timedelta(seconds=5)


@dataclasses.dataclass(slots=True)
class _Unit:
    """One source on one basis, as read: its folded patterns and their entities' ETags, and
    the deltas ingest added since (RowKey -> patterns, ETag, the report's attempt)."""

    base: ts.Totals
    etags: dict[str, str]
    deltas: dict[str, tuple[ts.Totals, str, str]]

    def totals(self) -> ts.Totals:
        out = self.base
        for patterns, _, _ in self.deltas.values():
            out = ts.merged(out, patterns)
        return out


#: One source to write: (ip, basis), its folded patterns (None: as they are), the deltas to
#: delete.
_Item = tuple[tuple[str, str], ts.Totals | None, list[str]]


def _delete(entity: Mapping[str, Any], etag: str | None = None) -> Operation:
    options = ({} if etag is None else
               {"etag": etag, "match_condition": MatchConditions.IfNotModified})
    return ("delete", {"PartitionKey": entity["PartitionKey"], "RowKey": entity["RowKey"]},
            options)


def _marker_row(row: str) -> str:
    """A pending marker's RowKey: in the order they were made (as far as clocks agree)."""
    return f"{ts.PENDING}{time.time_ns():020d}-{row}"


def _rebuild_marker(partition: str, rows: list[str]) -> Operation:
    return ("create", {"PartitionKey": partition, "RowKey": _marker_row(rows[-1]),
                       **_props(op="rebuild", rows=json.dumps(sorted(rows)))})


def _days_of(entity: Mapping[str, Any]) -> list[date]:
    """The UTC days a ledger entity's report covers."""
    return [day for day, _ in report_days(
        datetime.fromtimestamp(_value(entity["begin_ts"]), UTC),
        datetime.fromtimestamp(_value(entity["end_ts"]), UTC))]


#: The properties of a source entity that `_read_units` reads.
_UNIT_FIELDS = ["RowKey", "ip", "basis", "patterns", "attempt"]
#: The properties of a cached DNS answer that `_answer` reads.
_ANSWER_FIELDS = ["RowKey", "name", "rdtype", "records", "canonical", "nxdomain", "expires"]


def _answer(entity: Mapping[str, Any]) -> Answer:
    return Answer(_text(entity, "name"), _text(entity, "rdtype"),
                  tuple(json.loads(_text(entity, "records"))), _text(entity, "canonical"),
                  bool(entity["nxdomain"]), float(_value(entity["expires"])))


def _dns_keys(name: str, rdtype: str) -> tuple[str, str]:
    # 256 partitions by a digest of the name keep lookups spread; the row names the answer.
    return _digest(name)[:2], f"{_key(rdtype)}:{_key(name)}"


# -- the store -------------------------------------------------------------------------------


class TableStore:
    """The store in four tables of one storage account: `<prefix>reports`, `<prefix>rollups`,
    `<prefix>inventory`, `<prefix>dnscache`, created when first used."""

    def __init__(self, service: TableServiceClient, *, prefix: str = "dmarcbot") -> None:
        if not _PREFIX.fullmatch(prefix):
            raise StoreError(f"table prefix {prefix!r} must be a letter then letters or digits "
                             "(at most 54)")
        self._service = service
        self._prefix = prefix
        self._tables: dict[str, TableClient] = {}
        #: Distinct rollup rows held in memory before they are written (a report's records
        #: stream; rows of one report written in several goes add up when read).
        self._flush_rows = 20_000
        self._noted: set[tuple[str, str]] = set()  # (domain, hour) indexed by this process
        #: DNS cache partitions read whole: when, and their answers by RowKey
        self._dns: dict[str, tuple[float, dict[str, Answer]]] = {}
        self._dns_asked: set[str] = set()  # partitions asked once (by a point read)
        self._dns_unsaved: dict[str, dict[str, Answer]] = {}  # partition -> row -> answer
        self._indexed = False
        self._retainer: TableRetention | None = None  # retention, made when first needed
        #: domain -> what its naming read at `recall_naming`, for `remember_naming`
        self._naming: dict[str, _Naming] = {}
        self.path = f"{_public(service.url)}/{prefix}"  # where the data is; never a key

    @classmethod
    def from_connection_string(cls, conn: str, *, prefix: str = "dmarcbot",
                               **client_options: Any) -> TableStore:
        """Key or SAS access (Azurite, development)."""
        try:
            service = TableServiceClient.from_connection_string(conn, **client_options)
        except (ValueError, AzureError):
            raise StoreError("the Table Storage connection string is not valid") from None
        return cls(service, prefix=prefix)

    @classmethod
    def from_account(cls, account_url: str, credential: TokenCredential, *,
                     prefix: str = "dmarcbot", **client_options: Any) -> TableStore:
        """Identity-based access (a managed identity in Azure): no key to keep or rotate.

        `client_options` go to `TableServiceClient` (`connection_verify`, `retry_total` …).
        """
        if urlsplit(account_url).scheme != "https":
            raise StoreError(f"{_public(account_url)}: identity-based access needs an https URL")
        try:
            service = TableServiceClient(endpoint=account_url, credential=credential,
                                         **client_options)
        except ValueError:
            raise StoreError(f"{_public(account_url)}: not a Table Storage account URL") from None
        return cls(service, prefix=prefix)

    def close(self) -> None:
        try:
            self.flush()  # answers are a cache: losing them costs lookups, not data
        except StoreError as exc:
            log.warning("%s", exc)
        finally:
            self._service.close()

    def probe(self) -> str:
        """Whether the account answers this identity, read-only (`dmarcbot doctor`)."""
        try:
            names = [t.name for t in self._service.list_tables()
                     if t.name.startswith(self._prefix)]
        except HttpResponseError as exc:
            raise StorageRefused(f"Table Storage refused the request ({_code(exc)})",
                                 status=exc.status_code) from None
        except AzureError as exc:
            raise StoreError(f"Table Storage did not answer ({type(exc).__name__})") from None
        return (f"Table Storage answers; {len(names)} {self._prefix}* tables exist"
                + ("" if names else " (made at the first report)"))

    def __enter__(self) -> TableStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------

    def _name(self, table: str) -> str:
        return self._prefix + table

    @contextlib.contextmanager
    def _errors(self, table: str) -> Iterator[None]:
        """Azure errors as one-line StoreErrors naming the table and the code, nothing secret."""
        try:
            yield
        except HttpResponseError as exc:
            raise StoreError(f"{self._name(table)}: Table Storage refused the request "
                             f"({_code(exc)})") from None
        except AzureError as exc:  # no answer: connection refused, timeout, TLS
            raise StoreError(f"{self._name(table)}: Table Storage did not answer "
                             f"({type(exc).__name__})") from None

    def _table(self, table: str) -> TableClient:
        client = self._tables.get(table)
        if client is None:
            with self._errors(table):
                client = self._service.create_table_if_not_exists(self._name(table))
            self._tables[table] = client
        return client

    def _get(self, table: str, partition: str, row: str) -> TableEntity | None:
        with self._errors(table):
            try:
                return self._table(table).get_entity(partition, row)
            except ResourceNotFoundError:
                return None

    def _query(self, table: str, query: str | None, parameters: dict[str, Any] | None = None,
               select: list[str] | None = None) -> Iterator[TableEntity]:
        client = self._table(table)
        with self._errors(table):
            if query:
                yield from client.query_entities(query, parameters=parameters, select=select)
            else:
                yield from client.list_entities(select=select)

    def _submit(self, table: str, operations: list[Operation]) -> list[Mapping[str, Any]]:
        """Every write goes through here: one transaction, in one partition (raw Azure errors).
        Returns each operation's response metadata (its new ETag)."""
        return self._table(table).submit_transaction(operations)

    # -- writing ------------------------------------------------------------------------------

    def add_report(self, report: Report, *, unverified: str | None = None,
                   volume: VolumeCheck | None = None) -> AddResult:
        """See `Store.add_report`. Reports with one ledger key share the first 32 characters of
        their ledger RowKey (`<key digest>-<content digest>`), and their rollup rows' prefix."""
        key = ledger_key(report)
        if key.kind == "aggregate" and key.end < self._retention.expired_before():
            return "duplicate"  # its period was expired: a copy of what went, or as good
        partition, same = _key(key.policy_domain), _digest(*dataclasses.astuple(key))
        earlier = list(self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": same, "high": same + "."},
            select=["RowKey", "digest", "records", "messages", "attempt", "unverified"]))
        attempt = uuid.uuid4().hex[:12]
        written: list[tuple[str, list[str]]] = []  # (partition, row keys) per transaction
        row: str | None = None  # the ledger RowKey, once the content is known
        stored_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        fold: dict[str, ts.Totals] = {}  # what the report adds to its sources
        if key.kind == "aggregate":
            self._note_domain(key.policy_domain, stored_at)
        try:
            if isinstance(report, AggregateReport):
                digest = ContentDigest(key)
                records, messages, last = self._add_rollups(report, same, attempt, written,
                                                            digest, fold)
                content, details = digest.hexdigest(), None
            else:
                records, messages, details = (_tls_details(report)
                                              if isinstance(report, TlsReport)
                                              else _failure_details(report))
                content, last = content_digest(report, key), {}
            same_copy = next((e for e in earlier
                              if _same_content(e, content, records, messages, key.kind)), None)
            if same_copy is not None:
                self._forget(partition, None, attempt, written)
                self._believe(partition, same_copy, unverified, key, messages, volume)
                return "duplicate"  # seen before, the last rows never written
            if last:
                self._write_rollups(last, f"{same}-{attempt}-{len(written):x}", written)
            if isinstance(report, AggregateReport) and earlier:  # same rows, other order?
                days = [day for day, _ in report_days(report.begin, report.end)]
                ours = self._rows_of(partition, days, same, attempt)
                same_copy = next((e for e in earlier
                                  if self._rows_of(partition, days, same, e["attempt"]) == ours),
                                 None)
                if same_copy is not None:
                    self._forget(partition, None, attempt, written)
                    self._believe(partition, same_copy, unverified, key, messages, volume)
                    return "duplicate"
            if unverified is None and volume is not None and key.kind == "aggregate":
                unverified = self._volume_hold(partition, key, messages, volume)
            org, schema = _org_schema(report)
            row = f"{same}-{content}"
            # What the commit adds to the source rollups (store/table_sources.py): the report
            # per source, or the note to add it later (too many sources for the commit), or,
            # as its key has other copies, the note to rebuild what they touched.
            due: list[Operation] = []
            if key.kind == "aggregate" and not earlier:
                due = self._additions(partition, same, row, attempt,
                                      basis(unverified, reporter_domain(key.reporter)), fold)
            elif key.kind == "aggregate":
                due = self._conflicted(partition, same, [e["RowKey"] for e in earlier] + [row])
            committed = self._commit(due, {
                "PartitionKey": partition, "RowKey": row,
                **_props(kind=key.kind, reporter=key.reporter, report_id=key.report_id,
                         policy_domain=key.policy_domain, begin_ts=key.begin, end_ts=key.end,
                         org_name=org, schema=schema, source=report.source, records=records,
                         messages=messages, errors=_errors_json(report.errors),
                         stored_at=stored_at, attempt=attempt, details=details, digest=content,
                         unverified=unverified or "",
                         reporter_domain=reporter_domain(key.reporter) or ""),
            })
        except Exception:
            self._forget(partition, row, attempt, written)
            raise
        if committed is None:  # another process stored the same report meanwhile
            self._forget(partition, row, attempt, written)
            return "duplicate"
        # A conflicting report committed by another process since `earlier` was read is
        # flagged all the same: conflicts are worked out when the ledger is read.
        return "conflict" if earlier or committed == "conflict" else "stored"

    def _additions(self, partition: str, same: str, row: str, attempt: str, basis_: str,
                   fold: dict[str, ts.Totals]) -> list[Operation]:
        """The commit's share of a clean report: its key's guard (a copy with other content
        committed by another process at the same moment fails on it), and the report's patterns
        per source as delta entities (`~s-<source>-d<attempt>`), added up when read; a report
        with more sources than one transaction holds gets a pending `add` instead."""
        guard: Operation = ("create", {"PartitionKey": partition, "RowKey": _GUARD + same})
        deltas: list[Operation] = []
        chars = 0
        for ip, totals in sorted(fold.items()):
            parts = ts.encode(totals)
            chars += len(parts[0]) + 300
            if len(parts) > 1 or len(deltas) + 3 > _MAX_OPS or chars > ts.BATCH_CHARS:
                return [guard, ("create", {"PartitionKey": partition, "RowKey": _marker_row(row),
                                           **_props(op="add", row=row)})]
            deltas.append(("create", {
                "PartitionKey": partition, "RowKey": f"{ts.unit_row(ip, basis_)}d{attempt}",
                **_props(ip=ip, basis=basis_, patterns=parts[0], attempt=attempt)}))
        return [guard, *deltas]

    def _conflicted(self, partition: str, same: str, rows: list[str]) -> list[Operation]:
        """The commit's share of a report whose key has other copies: the key's conflict mark,
        and a pending rebuild of the sources the copies touched."""
        return [("upsert", {"PartitionKey": partition, "RowKey": ts.CONFLICT + same}),
                _rebuild_marker(partition, rows)]

    def _believe(self, partition: str, entity: Mapping[str, Any], unverified: str | None,
                 key: LedgerKey, messages: int, volume: VolumeCheck | None) -> None:
        """The same report again, from a believed e-mail: the stored copy is believed now,
        unless its volume is (or was already) too much."""
        doubt = _optional(entity, "unverified")
        if unverified is None and doubt and not is_held(doubt):
            hold = (self._volume_hold(partition, key, messages, volume)
                    if volume is not None and key.kind == "aggregate" else None)
            # Believed now: its sources move to another basis (store/table_sources.py).
            due = [_rebuild_marker(partition, [entity["RowKey"]])] if (
                hold is None and key.kind == "aggregate") else []
            with self._errors(LEDGER):
                self._submit(LEDGER, [("update", {"PartitionKey": partition,
                                                  "RowKey": entity["RowKey"],
                                                  "unverified": hold or ""},
                                       {"mode": UpdateMode.MERGE}), *due])

    def _volume_hold(self, partition: str, key: LedgerKey, messages: int, check: VolumeCheck
                     ) -> str | None:
        """analysis.volume's judgement, from the believed reports of the look-back window:
        one query of the domain's ledger partition (two for a reporter new to the domain)."""
        low, high = window(key.begin)
        query = ("PartitionKey eq @pk and kind eq 'aggregate' and unverified eq ''"
                 f" and begin_ts ge {low}L and begin_ts lt {high}L")
        reporter = reporter_domain(key.reporter) or ""

        def sent(extra: str, parameters: dict[str, Any]) -> list[Sent]:
            return [Sent(_optional(e, "reporter_domain") or "", _value(e["begin_ts"]),
                         _value(e["end_ts"]), _value(e["messages"]))
                    for e in self._query(LEDGER, query + extra, {"pk": partition, **parameters},
                                         select=["reporter_domain", "begin_ts", "end_ts",
                                                 "messages"])]

        mine = sent(" and reporter_domain eq @rd", {"rd": reporter})
        return check.judge(reporter, key.begin, key.end, messages, mine, lambda: sent("", {}))

    def _add_rollups(self, report: AggregateReport, same: str, attempt: str,
                     written: list[tuple[str, list[str]]], digest: ContentDigest,
                     fold: dict[str, ts.Totals]) -> tuple[int, int, dict[RollupKey, int]]:
        """Write the report's rollup rows under `attempt`, identical rows added up first; the
        rows of the last chunk are returned unwritten (all of a usual report: a duplicate is
        then found without writing anything). `fold` gets the rows per source, days folded."""
        days = report_days(report.begin, report.end)
        pending: dict[RollupKey, int] = {}
        records = messages = 0
        for record in report.records:
            records += 1
            messages += record.count
            digest.add_record(record)
            for key, count in rollup_rows(report, record, days):
                pending[key] = pending.get(key, 0) + count
                ts.add_row(fold.setdefault(key.source_ip, {}), ts.pattern(key), count, key.day,
                           key.day)
            if len(pending) >= self._flush_rows:
                self._write_rollups(pending, f"{same}-{attempt}-{len(written):x}", written)
                pending = {}
        return records, messages, pending

    def _rows_of(self, partition: str, days: list[date], same: str, attempt: str
                 ) -> dict[RollupKey, int]:
        """The rollup rows one attempt wrote for a report, summed per key (chunks add up). A
        plain dict: a row of no messages is kept, so it counts (`Counter` equality would
        ignore it, and take a copy with another source of no mail for a duplicate)."""
        rows: dict[RollupKey, int] = {}
        for day in days:
            for e in self._query(ROLLUPS, "PartitionKey eq @pk and RowKey ge @low and RowKey lt"
                                 " @high", {"pk": f"{partition}!{day.isoformat()}",
                                            "low": f"{same}-{attempt}-",
                                            "high": f"{same}-{attempt}."}):
                key = _rollup_key(e)
                rows[key] = rows.get(key, 0) + _value(e["messages"])
        return rows

    def _write_rollups(self, rows: dict[RollupKey, int], row_prefix: str,
                       written: list[tuple[str, list[str]]]) -> None:
        def partition(key: RollupKey) -> str:
            return f"{_key(key.policy_domain)}!{key.day}"

        ordered = sorted(rows.items(), key=lambda item: partition(item[0]))
        for part, group in itertools.groupby(ordered, key=lambda item: partition(item[0])):
            entities = (
                {"PartitionKey": part,
                 "RowKey": f"{row_prefix}-{_digest(*dataclasses.astuple(key))}",
                 **_props(**{name: getattr(key, name) for name in _ROLLUP_TEXT}, day=key.day,
                          dkim_results=results_json(key.dkim), spf_results=results_json(key.spf),
                          dkim_aligned=key.dkim_aligned, spf_aligned=key.spf_aligned,
                          messages=count)}
                for key, count in group)
            for batch in _batches(entities):
                with self._errors(ROLLUPS):
                    self._submit(ROLLUPS, [("upsert", e, {"mode": UpdateMode.REPLACE})
                                           for e in batch])
                written.append((part, [e["RowKey"] for e in batch]))

    def _commit(self, due: list[Operation], entity: dict[str, Any]) -> str | None:
        """Create the ledger entity, with what it adds to the source rollups (`due`) in the same
        transaction: "stored"; None when it exists from another attempt, or its key's report
        was expired (store/table_retention.py keeps the guard); "conflict" when the
        key's guard stopped it (another copy was committed meanwhile): it is committed again
        as a copy in conflict."""
        partition, row = entity["PartitionKey"], entity["RowKey"]
        for ops in ([("create", entity), *due], None):
            if ops is None:  # the guard: commit it as a conflicting copy
                copies = [e["RowKey"] for e in self._copies(partition, _same_key(row))]
                if not copies:  # the guard outlived its key's expired report: a copy of it
                    return None
                ops = [("create", entity), *self._conflicted(partition, _same_key(row),
                                                             [*copies, row])]
            with self._errors(LEDGER):
                try:
                    self._submit(LEDGER, ops)
                    return "stored" if ops[1:] == due else "conflict"
                except HttpResponseError as exc:
                    if _code(exc) != "EntityAlreadyExists":
                        raise
            # Ours if a retried request had created it before its answer was lost.
            current = self._get(LEDGER, partition, row)
            if current is not None:
                return ("stored" if ops[1:] == due else "conflict") if current.get(
                    "attempt") == entity["attempt"] else None
            if not any(op[1]["RowKey"].startswith(_GUARD) for op in due):
                return None
        return None

    def _forget(self, partition: str, row: str | None, attempt: str,
                written: list[tuple[str, list[str]]]) -> None:
        """Best effort: delete this attempt's rollup rows unless it committed after all (`row`:
        the ledger entity it would have committed, None if it never tried).

        The rows are invisible anyway; this only keeps the table tidy.
        """
        if not written:
            return
        with contextlib.suppress(Exception):
            current = None if row is None else self._get(LEDGER, partition, row)
            if current is not None and current.get("attempt") == attempt:
                return
            for part, rows in written:
                self._submit(ROLLUPS, [("delete", {"PartitionKey": part, "RowKey": r})
                                       for r in rows])

    # -- reading ------------------------------------------------------------------------------

    def reports(self, *, domain: str | None = None, since: str | None = None,
                kind: str | None = None) -> Iterator[LedgerEntry]:
        clauses: list[str] = []
        parameters: dict[str, Any] = {}
        if domain is not None:
            clauses.append("PartitionKey eq @pk")
            parameters["pk"] = _key(domain.lower())
        if since is not None:
            midnight = int(datetime.fromisoformat(since).replace(tzinfo=UTC).timestamp())
            clauses.append(f"end_ts ge {midnight}L")  # an Int64 literal, as the property is
        if kind is not None:
            clauses.append("kind eq @kind")
            parameters["kind"] = kind
        # Every copy of a key passes the same filters (they are on the key), so counting the
        # copies here finds every conflict.
        clauses.append("RowKey lt '~'")  # not the source rollups beside the reports
        entities = list(self._query(LEDGER, " and ".join(clauses), parameters))
        copies = Counter((e["PartitionKey"], _same_key(e["RowKey"])) for e in entities)
        entries = [(_ledger_entry(e, copies[e["PartitionKey"], _same_key(e["RowKey"])] > 1),
                    e["stored_at"], e["RowKey"]) for e in entities]
        yield from (entry for entry, *_ in sorted(entries, key=lambda e: (
            e[0].key.begin, e[0].key.end, e[0].key.kind, e[0].key.reporter, e[0].key.report_id,
            e[0].key.policy_domain, e[1], e[2])))

    def _committed(self, domain: str | None, conflicting: bool, trusted: frozenset[str]
                   ) -> dict[str, tuple[str, dict[str, set[str]]]]:
        """Per ledger partition: its policy domain and, per ledger key digest, the committed
        attempts of its believed reports (see `Store.rollups`), or of all unless `conflicting`."""
        query, parameters = "kind eq @kind", {"kind": "aggregate"}
        if domain is not None:
            query += " and PartitionKey eq @pk"
            parameters["pk"] = _key(domain.lower())
        out: dict[str, tuple[str, dict[str, set[str]]]] = {}
        doubted: set[tuple[str, str, str]] = set()  # copies whose e-mail is not believed
        for e in self._query(LEDGER, query, parameters,
                             select=["PartitionKey", "RowKey", "policy_domain", "attempt",
                                     "unverified", "reporter_domain"]):
            reports = out.setdefault(e["PartitionKey"], (e["policy_domain"], {}))[1]
            reports.setdefault(_same_key(e["RowKey"]), set()).add(e["attempt"])
            if _optional(e, "unverified") and _optional(e, "reporter_domain") not in trusted:
                doubted.add((e["PartitionKey"], _same_key(e["RowKey"]), e["attempt"]))
        if not conflicting:
            for partition, (_, reports) in out.items():
                for same, attempts in list(reports.items()):
                    attempts -= {a for a in attempts if (partition, same, a) in doubted}
                    if len(attempts) != 1:  # none believed, or believed copies disagree
                        del reports[same]
        return out

    def rollups(self, *, domain: str | None = None, since: str | None = None,
                conflicting: bool = False, trusted_reporters: Collection[str] = ()
                ) -> Iterator[tuple[RollupKey, int]]:
        """Rows summed per key at read time, counting only committed attempts; one (domain,
        day) partition in memory at a time, in SqliteStore's order."""
        trusted = frozenset(t.lower() for t in trusted_reporters)
        committed = self._committed(domain, conflicting, trusted)
        for partition, (_, attempts) in sorted(committed.items(), key=lambda kv: kv[1][0]):
            rows = self._query(ROLLUPS, "PartitionKey ge @low and PartitionKey lt @high",
                               {"low": f"{partition}!{since or ''}", "high": f"{partition}!~"})
            for _, day_rows in itertools.groupby(rows, key=lambda e: e["PartitionKey"]):
                totals: dict[RollupKey, int] = {}
                for e in day_rows:
                    report, attempt = e["RowKey"].split("-", 2)[:2]
                    if attempt in attempts.get(report, ()):
                        key = _rollup_key(e)
                        totals[key] = totals.get(key, 0) + _value(e["messages"])
                yield from sorted(totals.items(), key=lambda kv: stored_order(kv[0]))

    # -- source rollups (issue 14; store/table_sources.py) ------------------------------------

    def sources(self, domain: str, *, trusted_reporters: Collection[str] = ()
                ) -> Iterator[SourceRollup]:
        """See `Store.sources`: one range query reads the domain's sources with the deltas
        ingest added since; pending work (a large report, a rebuild) is settled first, and a
        source with many deltas folded into one entity. If other writers keep winning the race,
        the daily rows are folded instead (exact, only slower)."""
        domain = domain.lower()
        partition = _key(domain)
        bases = set(believed_bases(trusted_reporters))
        trusted = frozenset(t.lower() for t in trusted_reporters)
        naming = self._naming.get(domain)  # a naming that recalled nothing reads it all
        for _ in range(_SETTLE_TRIES):
            # A naming under way starts again from here: what the settle reads comes after,
            # rebuilds it does included, and whoever rebuilds later touches the clock again.
            clock = None if naming is None else self._touch_clock(partition)
            state = self._settle(partition)
            if state is not None:
                break
        else:  # the daily rows, and the monthly rollups of expired reports
            yield from self._retention.folded(domain, trusted)
            return
        if naming is not None and clock is not None:
            self._naming[domain] = dataclasses.replace(naming, started=clock[0], clock=clock[1])
        units, conflicts = state
        by_ip: dict[str, ts.Totals] = {}
        for (ip, basis_), unit in sorted(units.items()):
            if basis_ in bases:
                by_ip[ip] = ts.merged(by_ip.get(ip, {}), unit.totals())
        for ip, totals in by_ip.items():
            yield from ts.source_rollups(domain, ip, totals)
        yield from self._conflict_rows(partition, conflicts, trusted)

    def _conflict_rows(self, partition: str, conflicts: Iterable[str], trusted: frozenset[str]
                       ) -> Iterator[SourceRollup]:
        """The daily rows of the keys with several copies, by `rollups()`' rule."""
        for same in sorted(conflicts):
            copies = self._copies(partition, same)
            believed = [e for e in copies if not (_optional(e, "unverified")
                                                  and _optional(e, "reporter_domain")
                                                  not in trusted)]
            if len(believed) == 1:
                for key, n in self._rows_of(partition, _days_of(believed[0]), same,
                                            believed[0]["attempt"]).items():
                    yield SourceRollup(key, key.day, n)

    # -- what naming keeps (store.base.Recalled; store/table_sources.py) ----------------------

    def recall_naming(self, domain: str, *, trusted_reporters: Collection[str] = ()
                      ) -> Recalled:
        """See `Store.recall_naming`. The sources changed since the last naming are those with
        an entity written since it began (by the partition's own clock, `NAMING_OVERLAP`
        before); they are read whole, with the keys in conflict, and every other source's
        identification comes from the kept generations. Nothing is recalled (the whole history
        is named, and settled) while work is pending or before the first naming."""
        domain = domain.lower()
        partition = _key(domain)
        clock = self._touch_clock(partition)
        state = self._get(LEDGER, partition, ts.NAMING)
        found = list(self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": ts.NAMING_PARTS, "high": "~n."}))
        if clock is None:  # gone that very moment (the table was emptied): name everything
            return NOTHING_RECALLED
        generations: tuple[str, ...] = ()
        kept: dict[str, str] = {}
        since = datetime.min.replace(tzinfo=UTC)
        own: dict[str, str] = {}
        if state is not None:
            texts: dict[str, list[tuple[str, str]]] = {}
            for e in found:
                generation = e["RowKey"][len(ts.NAMING_PARTS):].rsplit("-", 1)[0]
                texts.setdefault(generation, []).append((e["RowKey"], _text(e, "kept")))
            try:
                since = datetime.fromisoformat(_text(state, "since")) - NAMING_OVERLAP
                generations = tuple(str(g) for g in json.loads(_text(state, "generations")))
                own = {str(k): str(v) for k, v in json.loads(_text(state, "own") or "{}").items()}
                for generation in generations:
                    kept.update(ts.unpack_kept(t for _, t in sorted(texts.get(generation, []))))
            except (TypeError, ValueError) as exc:  # as if nothing were kept: all is named
                log.warning("%s: %s; naming the whole history again", domain, exc)
                state, generations, kept = None, (), {}
        self._naming[domain] = _Naming(*clock, generations, kept,
                                       tuple(e["RowKey"] for e in found))
        if (state is None or self._pending(partition)
                or self._get(LEDGER, partition, ts.VERSION) is None):
            return NOTHING_RECALLED
        ips = {_text(e, "ip") for e in self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high and "
            "Timestamp ge @since", {"pk": partition, "low": ts.SOURCE, "high": "~s.",
                                    "since": since}, select=["RowKey", "ip"])
               if own.get(e["RowKey"]) != e.metadata["etag"]}
        trusted = frozenset(t.lower() for t in trusted_reporters)
        conflicts = {e["RowKey"][len(ts.CONFLICT):] for e in self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": ts.CONFLICT, "high": "~c."}, select=["RowKey"])}
        conflicted = list(self._conflict_rows(partition, conflicts, trusted))
        ips |= {r.key.source_ip for r in conflicted}
        try:
            units = self._units_of(partition, sorted(
                (ip, b) for ip in ips for b in believed_bases(trusted)))
            # Sources with many deltas are folded, as a whole read's settle folds them: a busy
            # source gains one a report, and it is read each time it changes. What is written
            # is noted, so the next naming does not take it for a change.
            before = {row for unit in units.values() for row in unit.etags.items()}
            self._fold_deltas(partition, units, lambda unit: (
                sorted(unit.deltas) if len(unit.deltas) >= _COMPACT else []))
            written = {row: etag for unit in units.values() for row, etag in unit.etags.items()
                       if (row, etag) not in before}
            self._naming[domain] = dataclasses.replace(self._naming[domain], own=written)
        except HttpResponseError as exc:  # _Gone too: another writer got there first
            if _code(exc) not in _CONFLICTS | {"ResourceNotFound"}:
                raise StoreError(f"{self._name(LEDGER)}: Table Storage refused the request "
                                 f"({_code(exc)})") from None
            return NOTHING_RECALLED
        changed: list[SourceRollup] = []
        for ip in sorted(ips):
            totals: ts.Totals = {}
            for (unit_ip, _), unit in units.items():
                if unit_ip == ip:
                    totals = ts.merged(totals, unit.totals())
            changed.extend(ts.source_rollups(domain, ip, totals))
        changed.extend(conflicted)
        return Recalled(_text(state, "context"), {ip: text for ip, text in kept.items()
                                                  if ip not in ips}, changed)

    def remember_naming(self, domain: str, context: str,
                        identifications: Iterable[tuple[str, str]], *, whole: bool) -> None:
        """See `Store.remember_naming`: the identifications as a new generation (all of them
        once there are `ts.MAX_GENERATIONS`), then the state naming it, in one transaction with
        a check that nobody touched `~nclock` since the naming began (another naming, a
        rebuild); if somebody did, what this naming named is not kept, and the next names it
        again. Generations no longer named are deleted."""
        domain = domain.lower()
        partition = _key(domain)
        read = self._naming.pop(domain, None)
        if read is None:
            return  # not recalled first: no clock to check it against
        named = dict(identifications)
        generations = () if whole else read.generations
        if len(generations) + 1 > ts.MAX_GENERATIONS and named:
            named, generations = {**read.kept, **named}, ()
        generation = uuid.uuid4().hex[:16]
        parts = ts.pack_kept(named)
        rows = [f"{ts.NAMING_PARTS}{generation}-{i:04d}" for i in range(len(parts))]
        # a naming that named nothing new (its domain is due a card, say) adds no generation
        written = (*generations, generation) if parts or whole else generations
        writes = [{"PartitionKey": partition, "RowKey": row, **_props(kept=part)}
                  for row, part in zip(rows, parts, strict=True)]
        state: list[Operation] = [
            ("update", {"PartitionKey": partition, "RowKey": ts.NAMING_CLOCK},
             {"mode": UpdateMode.MERGE, "etag": read.clock,
              "match_condition": MatchConditions.IfNotModified}),
            ("upsert", {"PartitionKey": partition, "RowKey": ts.NAMING, **_props(
                context=context, since=read.started.isoformat(),
                generations=json.dumps(list(written)),
                own=json.dumps(read.own))},
             {"mode": UpdateMode.REPLACE})]
        live = {f"{ts.NAMING_PARTS}{g}-" for g in written}
        with self._errors(LEDGER):
            for batch in _batches(writes):
                self._submit(LEDGER, [("create", entity) for entity in batch])
            try:
                self._submit(LEDGER, state)
            except HttpResponseError as exc:
                if _code(exc) not in _CONFLICTS | {"ResourceNotFound"}:
                    raise
                live -= {f"{ts.NAMING_PARTS}{generation}-"}  # lost: it is garbage now
            stale = [row for row in (*read.parts, *rows)
                     if not any(row.startswith(prefix) for prefix in live)]
            for i in range(0, len(stale), _MAX_OPS):
                with contextlib.suppress(HttpResponseError):  # gone already: fine
                    self._submit(LEDGER, [("delete", {"PartitionKey": partition, "RowKey": r})
                                          for r in stale[i:i + _MAX_OPS]])

    def _touch_clock(self, partition: str) -> tuple[datetime, str] | None:
        """Write `~nclock`: the partition's time now (its Timestamp, by the clock that stamps
        the source entities) and its new ETag; None if it is gone again already."""
        with self._errors(LEDGER):
            self._table(LEDGER).upsert_entity({"PartitionKey": partition,
                                               "RowKey": ts.NAMING_CLOCK})
        clock = self._get(LEDGER, partition, ts.NAMING_CLOCK)
        stamp = None if clock is None else clock.metadata["timestamp"]
        return None if clock is None or stamp is None else (stamp, str(clock.metadata["etag"]))

    def _forget_naming(self, partition: str) -> None:
        """A rebuild is about to change sources (or take them away): what naming kept of the
        partition is dropped, and a naming under way will not keep what it named."""
        with self._errors(LEDGER):
            self._table(LEDGER).upsert_entity({"PartitionKey": partition,
                                               "RowKey": ts.NAMING_CLOCK})
            with contextlib.suppress(ResourceNotFoundError):
                self._table(LEDGER).delete_entity(partition, ts.NAMING)

    def naming_mark(self) -> str | None:
        """See `Store.naming_mark`: one entity beside the index of domains."""
        found = self._get(LEDGER, _DOMAINS, _NAMING_MARK)
        return None if found is None else _text(found, "started_at")

    def set_naming_mark(self, stamp: str) -> None:
        with self._errors(LEDGER):
            self._submit(LEDGER, [("upsert", {"PartitionKey": _DOMAINS, "RowKey": _NAMING_MARK,
                                              **_props(started_at=stamp)},
                                   {"mode": UpdateMode.REPLACE})])

    def domains(self, *, stored_since: str | None = None) -> list[str]:
        """See `Store.domains`: from the `~domains` partition ingest writes, at most once per
        domain and hour per process (`stored_since` counts whole hours)."""
        self._index_domains()
        if stored_since is None:
            low, high = "~d-", "~d."
        else:
            low, high = f"~h-{stored_since[:13]}", "~h."
        return sorted({_text(e, "domain") for e in self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": _DOMAINS, "low": low, "high": high}, select=["domain"])})

    def expire(self, before: date) -> int:
        """See `Store.expire`; store/table_retention.py says how, a batch at a time."""
        return self._retention.expire(before)

    @property
    def _retention(self) -> TableRetention:
        if self._retainer is None:
            from store.table_retention import TableRetention  # it builds on this module

            self._retainer = TableRetention(self)
        return self._retainer

    def _note_domain(self, domain: str, stored_at: str) -> None:
        """Index the domain (and the hour) a report is stored for, before its commit, so the
        index never misses a committed report (it may name one whose commit failed)."""
        hour = stored_at[:13]
        if (domain, hour) in self._noted:
            return
        row = _key(domain)
        with self._errors(LEDGER):
            self._submit(LEDGER, [
                ("upsert", {"PartitionKey": _DOMAINS, "RowKey": f"~d-{row}",
                            **_props(domain=domain)}, {"mode": UpdateMode.REPLACE}),
                ("upsert", {"PartitionKey": _DOMAINS, "RowKey": f"~h-{hour}-{row}",
                            **_props(domain=domain)}, {"mode": UpdateMode.REPLACE})])
        self._noted.add((domain, hour))

    def _index_domains(self) -> None:
        """Once per store: index the domains stored before the index existed."""
        if self._indexed or self._get(LEDGER, _DOMAINS, ts.VERSION) is not None:
            self._indexed = True
            return
        for e in self._query(LEDGER, "kind eq @kind", {"kind": "aggregate"},
                             select=["policy_domain", "stored_at"]):
            self._note_domain(_text(e, "policy_domain"), e["stored_at"])
        with self._errors(LEDGER):
            self._submit(LEDGER, [("upsert", {"PartitionKey": _DOMAINS,
                                              "RowKey": ts.VERSION})])
        self._indexed = True

    def _copies(self, partition: str, same: str) -> list[TableEntity]:
        """The ledger entities of one ledger key: its copies."""
        return list(self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": same, "high": same + "."},
            select=["RowKey", "attempt", "unverified", "reporter_domain", "begin_ts", "end_ts",
                    "kind"]))

    def _whole(self, table: str, partition: str, entity: TableEntity, name: str
               ) -> TableEntity | None:
        """`entity` with all of its long text `name`, or None if it changed since it was read:
        a query that selects properties gets only the first piece of a long text (`_props`),
        and naming every possible piece would make every entity dearer to decode, so the rare
        entity whose first piece is full is read again, whole."""
        if len(entity.get(name) or "") < _PIECE:
            return entity
        again = self._get(table, partition, entity["RowKey"])
        return (again if again is not None and again.metadata["etag"] == entity.metadata["etag"]
                else None)

    def _pending(self, partition: str) -> list[TableEntity]:
        return sorted(self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": ts.PENDING, "high": "~p."}), key=lambda e: e["RowKey"])

    def _units(self, partition: str) -> dict[tuple[str, str], _Unit]:
        """Every source of the partition: its folded entities and its deltas, with ETags."""
        return self._read_units(partition, self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": ts.SOURCE, "high": "~s."}, select=_UNIT_FIELDS))

    def _units_of(self, partition: str, names: list[tuple[str, str]]
                  ) -> dict[tuple[str, str], _Unit]:
        """`_units` for some sources (IP, basis) only, seven RowKey ranges a query (the service
        takes at most fifteen comparisons in a filter)."""
        def entities() -> Iterator[TableEntity]:
            for i in range(0, len(names), 7):
                parameters: dict[str, Any] = {"pk": partition}
                ranges = []
                for j, name in enumerate(names[i:i + 7]):
                    prefix = ts.unit_row(*name)
                    parameters[f"l{j}"], parameters[f"h{j}"] = prefix, prefix[:-1] + "."
                    # a space before ")": the SDK reads "@h0)" as the parameter's name
                    ranges.append(f"(RowKey ge @l{j} and RowKey lt @h{j} )")
                yield from self._query(LEDGER, f"PartitionKey eq @pk and ({' or '.join(ranges)})",
                                       parameters, select=_UNIT_FIELDS)

        return self._read_units(partition, entities())

    def _read_units(self, partition: str, found: Iterable[TableEntity]
                    ) -> dict[tuple[str, str], _Unit]:
        """Source entities as units. Only the properties used are asked for: the SDK's decoding
        of each entity is most of a naming's cost on Table Storage, and the timestamp alone was
        a tenth of it."""
        units: dict[tuple[str, str], _Unit] = {}
        parts: dict[tuple[str, str], list[tuple[str, str]]] = {}
        for entity in found:
            e = self._whole(LEDGER, partition, entity, "patterns")
            if e is None:
                raise _Gone("a source entity changed while it was read")
            name = (_text(e, "ip"), _text(e, "basis"))
            unit = units.setdefault(name, _Unit({}, {}, {}))
            etag = str(e.metadata["etag"])
            attempt = e.get("attempt")  # a property asked for but absent may come back null
            if attempt:  # a delta
                unit.deltas[e["RowKey"]] = (ts.decode([_text(e, "patterns")]), etag, attempt)
            else:
                unit.etags[e["RowKey"]] = etag
                parts.setdefault(name, []).append((e["RowKey"], _text(e, "patterns")))
        for name, texts in parts.items():
            units[name].base = ts.decode(text for _, text in sorted(texts))
        return units

    def _settle(self, partition: str
                ) -> tuple[dict[tuple[str, str], _Unit], set[str]] | None:
        """Do the domain's pending work and fold sources with many deltas; its sources and
        conflicting keys after, or None when another writer changed something first (the
        caller tries again). Every write is conditional on the ETags read, so no report counts
        twice or is lost, whoever else is settling or crashed half-way."""
        try:
            units = self._units(partition)
        except _Gone:
            return None
        markers = self._pending(partition)
        conflicts = {e["RowKey"][len(ts.CONFLICT):] for e in self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": ts.CONFLICT, "high": "~c."}, select=["RowKey"])}
        if (self._get(LEDGER, partition, ts.VERSION) is None
                and not any(e["RowKey"] == _FULL for e in markers)):
            # The first read of this partition's sources: build them from its history, unless
            # every report in it was stored with them (guarded, or in conflict).
            with self._errors(LEDGER), contextlib.suppress(HttpResponseError):
                self._submit(LEDGER, [(
                    "upsert", {"PartitionKey": partition, "RowKey": ts.VERSION}) if (
                        self._all_guarded(partition, conflicts)) else (
                    "create", {"PartitionKey": partition, "RowKey": _FULL, "op": "rebuild"})])
            return None
        try:
            for marker in markers:
                if marker["op"] == "add":
                    done = self._settle_add(partition, marker, units, conflicts)
                else:
                    done = self._settle_rebuild(partition, marker, conflicts)
                if not done:
                    return None
            if markers:
                return None  # read what the work left
            self._fold_deltas(partition, units, lambda unit: (
                sorted(unit.deltas) if len(unit.deltas) >= _COMPACT else []))
        except HttpResponseError as exc:
            if _code(exc) not in _CONFLICTS | {"ResourceNotFound"}:
                raise StoreError(f"{self._name(LEDGER)}: Table Storage refused the request "
                                 f"({_code(exc)})") from None
            return None
        return units, conflicts

    def _all_guarded(self, partition: str, conflicts: set[str]) -> bool:
        """Whether each aggregate report of the partition was stored with its sources: its key
        has a guard or a conflict mark (reports stored before issue 14 have neither)."""
        keys = {_same_key(e["RowKey"]) for e in self._query(
            LEDGER, "PartitionKey eq @pk and RowKey lt @high and kind eq @kind",
            {"pk": partition, "high": "~", "kind": "aggregate"}, select=["RowKey"])}
        guarded = {e["RowKey"][len(_GUARD):] for e in self._query(
            LEDGER, "PartitionKey eq @pk and RowKey ge @low and RowKey lt @high",
            {"pk": partition, "low": _GUARD, "high": "~k."}, select=["RowKey"])}
        return keys <= guarded | conflicts

    def _settle_add(self, partition: str, marker: TableEntity,
                    units: dict[tuple[str, str], _Unit], conflicts: set[str]) -> bool:
        """Fold a report too large for its commit into its sources, some per transaction, each
        noting in the marker which sources have it (the last deletes the marker)."""
        row = marker["row"]
        same = _same_key(row)
        copies = self._copies(partition, same)
        mine = next((e for e in copies if e["RowKey"] == row), None)
        if mine is None or same in conflicts or len(copies) > 1:
            # its key is in conflict: a rebuild sees to it
            ops: list[Operation] = [_delete(marker, marker.metadata["etag"])]
            if mine is not None and same not in conflicts:
                ops += self._conflicted(partition, same, [e["RowKey"] for e in copies])
            self._submit(LEDGER, ops)
            return False
        basis_ = basis(_optional(mine, "unverified"), _optional(mine, "reporter_domain"))
        delta: dict[str, ts.Totals] = {}
        for key, n in self._rows_of(partition, _days_of(mine), same, mine["attempt"]).items():
            ts.add_row(delta.setdefault(key.source_ip, {}), ts.pattern(key), n, key.day, key.day)
        applied = set(json.loads(_text(marker, "applied") or "[]"))
        todo: list[_Item] = [
            ((ip, basis_), ts.merged(units.get((ip, basis_), _Unit({}, {}, {})).base, totals), [])
            for ip, totals in sorted(delta.items()) if ip not in applied]
        etag = marker.metadata["etag"]
        packs = list(self._packs(partition, todo, units)) or [([], True)]
        for group, last in packs:
            applied |= {name[0] for name, _, _ in group}
            notes: list[Operation] = [_delete(marker, etag)] if last else [(
                "update", {"PartitionKey": partition, "RowKey": marker["RowKey"],
                           **_props(applied=json.dumps(sorted(applied)))},
                {"mode": UpdateMode.MERGE, "etag": etag,
                 "match_condition": MatchConditions.IfNotModified})]
            etag = self._write_sources(partition, group, units, notes)
        return True

    def _settle_rebuild(self, partition: str, marker: TableEntity, conflicts: set[str]
                        ) -> bool:
        """Rebuild the sources some reports touched (all, for `_FULL`) from the domain's daily
        rows that count on their own. The sources are read after the rows, and what they read
        is kept: deltas of reports committed since, and a large report's share its marker notes
        as folded in already (read last, so what changes meanwhile fails on its ETag). Expired
        reports count by their monthly rollups, read first, with a fence on retention's batch
        (store/table_retention.py). What naming kept of the partition is forgotten first: a
        rebuild may take sources away, which no entity written since would show."""
        fence = self._retention.fence(partition)
        if fence is None:
            return False
        self._forget_naming(partition)
        monthly = self._retention.monthly(partition)
        if marker["RowKey"] == _FULL:
            ips: set[str] | None = None
        else:
            ips = set()
            for row in json.loads(_text(marker, "rows")):
                for e in self._copies(partition, _same_key(row)):
                    if e["RowKey"] == row:
                        ips |= {k.source_ip for k in self._rows_of(
                            partition, _days_of(e), _same_key(row), e["attempt"])}
        clean: dict[tuple[str, str], tuple[str, str]] = {}  # (same, attempt) -> (row, basis)
        copies: Counter[str] = Counter()
        for e in self._query(LEDGER, "PartitionKey eq @pk and RowKey lt @high and kind eq @kind",
                             {"pk": partition, "high": "~", "kind": "aggregate"},
                             select=["RowKey", "attempt", "unverified", "reporter_domain"]):
            copies[_same_key(e["RowKey"])] += 1
            clean[_same_key(e["RowKey"]), e["attempt"]] = (
                e["RowKey"], basis(_optional(e, "unverified"), _optional(e, "reporter_domain")))
        taken: list[tuple[str, tuple[str, str], RollupKey, int]] = []
        for e in self._query(ROLLUPS, "PartitionKey ge @low and PartitionKey lt @high",
                             {"low": f"{partition}!", "high": f"{partition}!~"}):
            same, attempt = e["RowKey"].split("-", 2)[:2]
            found = clean.get((same, attempt))
            ip = _text(e, "source_ip")
            if (found is None or copies[same] > 1 or same in conflicts
                    or (ips is not None and ip not in ips)):
                continue
            taken.append((found[0], (ip, found[1]), _rollup_key(e), _value(e["messages"])))
        units = self._units(partition)
        adds = {e["row"]: set(json.loads(_text(e, "applied") or "[]"))
                for e in self._pending(partition) if e["op"] == "add"}
        fresh: dict[tuple[str, str], ts.Totals] = {}
        for row, name, key, n in taken:
            if row not in adds or name[0] in adds[row]:
                ts.add_row(fresh.setdefault(name, {}), ts.pattern(key), n, key.day, key.day)
        for name, totals in monthly.items():  # expired reports (store/table_retention.py)
            if ips is None or name[0] in ips:
                fresh[name] = ts.merged(fresh.get(name, {}), totals)
        scanned = {attempt for _, attempt in clean}
        todo: list[_Item] = []
        for name in sorted(set(fresh) | {u for u in units if ips is None or u[0] in ips}):
            unit = units.get(name, _Unit({}, {}, {}))
            gone = sorted(r for r, (_, _, attempt) in unit.deltas.items() if attempt in scanned)
            if gone or fresh.get(name, {}) != unit.base:
                # more deltas than a transaction holds go first, on their own (the marker
                # stays until the end: a reader meanwhile settles again or folds daily rows)
                step = ts.OPS // 2
                chunks = [gone[i:i + step] for i in range(0, len(gone), step)] or [[]]
                todo += [(name, None, chunk) for chunk in chunks[:-1]]
                todo.append((name, fresh.get(name, {}), chunks[-1]))
        if marker["RowKey"] == _FULL:  # keys stored in conflict before their marks existed
            marks: list[Operation] = [
                ("upsert", {"PartitionKey": partition, "RowKey": ts.CONFLICT + same})
                for same, n in sorted(copies.items()) if n > 1 and same not in conflicts]
            for i in range(0, len(marks), ts.OPS):
                self._submit(LEDGER, marks[i:i + ts.OPS])
        etag = marker.metadata["etag"]
        packs = list(self._packs(partition, todo, units)) or [([], True)]
        for i, (group, last) in enumerate(packs):
            if last and marker["RowKey"] == _FULL:
                notes: list[Operation] = [
                    _delete(marker, etag),
                    ("upsert", {"PartitionKey": partition, "RowKey": ts.VERSION})]
            elif last:
                notes = [_delete(marker, etag)]
            else:  # a change whose ETag fences off a second rebuilder
                notes = [("update", {"PartitionKey": partition, "RowKey": marker["RowKey"],
                                     "progress": len(group)},
                          {"mode": UpdateMode.MERGE, "etag": etag,
                           "match_condition": MatchConditions.IfNotModified})]
            if i == 0:  # no retention batch began or moved on since the reads above
                notes.append(fence)
            etag = self._write_sources(partition, group, units, notes)
        return True

    def _fold_deltas(self, partition: str, units: dict[tuple[str, str], _Unit],
                     pick: Callable[[_Unit], list[str]]) -> None:
        """Fold the deltas `pick` names of each source into its base, a transaction's worth at
        a time, until it names none (each write conditional on what was read, `units` kept up
        to date): settling folds sources with many, retention those of its batch."""
        while True:
            folds: list[_Item] = []
            for name, unit in sorted(units.items()):
                gone = pick(unit)[:ts.OPS // 2]
                if gone:
                    base = unit.base
                    for row in gone:
                        base = ts.merged(base, unit.deltas[row][0])
                    folds.append((name, base, gone))
            if not folds:
                return
            for group, _ in self._packs(partition, folds, units):
                self._write_sources(partition, group, units, [])

    def _packs(self, partition: str,
               todo: list[_Item], units: dict[tuple[str, str], _Unit]
               ) -> Iterator[tuple[list[_Item], bool]]:
        """(source, its new folded patterns or None to keep them, the deltas to delete) in
        groups that fit one transaction, with room for a note; True with the last."""
        out: list[list[_Item]] = []
        group: list[_Item] = []
        ops = chars = 0
        for name, totals, gone in todo:
            parts = [] if totals is None else ts.encode(totals)
            cost = (0 if totals is None else max(
                len(parts), len(units.get(name, _Unit({}, {}, {})).etags))) + len(gone)
            size = sum(len(p) for p in parts) + 300 * cost
            if cost > ts.OPS or size > ts.BATCH_CHARS:
                raise StoreError(f"{self._name(LEDGER)}: source {name[0]} of partition "
                                 f"{partition} has too many patterns to keep")
            if group and (ops + cost > ts.OPS or chars + size > ts.BATCH_CHARS):
                out.append(group)
                group, ops, chars = [], 0, 0
            group.append((name, totals, gone))
            ops, chars = ops + cost, chars + size
        if group:
            out.append(group)
        for i, g in enumerate(out):
            yield g, i == len(out) - 1

    def _write_sources(self, partition: str,
                       group: list[_Item], units: dict[tuple[str, str], _Unit],
                       notes: list[Operation]) -> str:
        """One transaction: each source's folded entities as given (None: as they are), the
        deltas named deleted (each conditional on what was read of it), and the notes; the
        first note's new ETag (`units` updated in place)."""
        ops: list[Operation] = []
        written: list[tuple[tuple[str, str], ts.Totals | None, list[str], int, list[str]]] = []
        for name, totals, gone in group:
            unit = units.get(name, _Unit({}, {}, {}))
            prefix = ts.unit_row(*name)
            parts = [] if totals is None else ts.encode(totals)
            rows = []
            for i, part in enumerate(parts):
                row = f"{prefix}{i:04d}"
                rows.append(row)
                entity = {"PartitionKey": partition, "RowKey": row,
                          **_props(ip=name[0], basis=name[1], patterns=part)}
                ops.append(("update", entity, {"mode": UpdateMode.REPLACE,
                                               "etag": unit.etags[row],
                                               "match_condition": MatchConditions.IfNotModified})
                           if row in unit.etags else ("create", entity))
            dropped = [] if totals is None else sorted(set(unit.etags) - set(rows))
            for row in dropped:
                ops.append(_delete({"PartitionKey": partition, "RowKey": row}, unit.etags[row]))
            for row in gone:
                ops.append(_delete({"PartitionKey": partition, "RowKey": row},
                                   unit.deltas[row][1]))
            written.append((name, totals, rows, len(dropped), gone))
        results = self._submit(LEDGER, ops + notes)
        etags = [str(r.get("etag") or "") for r in results] if results else []
        position = 0
        for name, totals, rows, dropped_count, gone in written:
            unit = units.setdefault(name, _Unit({}, {}, {}))
            if totals is not None:
                unit.base = totals
                unit.etags = {row: etags[position + i] if position + i < len(etags) else ""
                              for i, row in enumerate(rows)}
            position += len(rows) + dropped_count + len(gone)
            for row in gone:
                del unit.deltas[row]
            if not unit.base and not unit.deltas:
                units.pop(name)
        return etags[len(ops)] if len(etags) > len(ops) else ""


    # -- DNS cache (analysis.dnsevidence.DnsCache) ------------------------------------------

    def get_answer(self, name: str, rdtype: str, now: float) -> Answer | None:
        """A point read for the first name asked in one of the cache's 256 partitions; from
        the second on, the whole partition in one query, kept for `_DNS_FRESH` seconds. A run
        naming 50,000 sources asks ~86,000 names: ~512 requests instead of one per name."""
        partition, row = _dns_keys(name, rdtype)
        found = self._dns_unsaved.get(partition, {}).get(row)
        if found is None:
            found = self._stored_answer(partition, row)
        return found if found is not None and found.expires > now else None

    def get_answers(self, keys: Collection[tuple[str, str]], now: float
                    ) -> dict[tuple[str, str], Answer]:
        """`get_answer` for each: a partition is read whole from its second name on."""
        return {key: answer for key in keys
                if (answer := self.get_answer(*key, now)) is not None}

    def _stored_answer(self, partition: str, row: str) -> Answer | None:
        loaded = self._dns.get(partition)
        if loaded is None or loaded[0] < time.monotonic() - _DNS_FRESH:
            if partition not in self._dns_asked:
                self._dns_asked.add(partition)
                entity = self._get(DNS, partition, row)
                return None if entity is None else _answer(entity)
            with self._errors(DNS):  # only what an answer holds (see `_units`)
                loaded = (time.monotonic(), {e["RowKey"]: _answer(e) for found in self._query(
                    DNS, "PartitionKey eq @pk", {"pk": partition}, select=_ANSWER_FIELDS)
                    if (e := self._whole(DNS, partition, found, "records")) is not None})
            self._dns[partition] = loaded
        return loaded[1].get(row)

    def put_answer(self, answer: Answer) -> None:
        """Kept back and written by `flush` (or when its partition has a transaction's worth):
        one request per partition instead of one per answer, ~17,000 in a cold run naming
        10,000 sources, each of which held the DNS lookups' event loop up."""
        partition, row = _dns_keys(answer.name, answer.rdtype)
        unsaved = self._dns_unsaved.setdefault(partition, {})
        unsaved[row] = answer
        if partition in self._dns:
            self._dns[partition][1][row] = answer
        if len(unsaved) >= _MAX_OPS:
            self._save_answers(partition)

    def flush(self) -> None:
        for partition in list(self._dns_unsaved):
            self._save_answers(partition)

    def _save_answers(self, partition: str) -> None:
        answers = self._dns_unsaved.pop(partition, {})
        ops: list[Operation] = [("upsert", {
            "PartitionKey": partition, "RowKey": row,
            **_props(name=a.name, rdtype=a.rdtype, records=json.dumps(a.records),
                     canonical=a.canonical, nxdomain=a.nxdomain, expires=float(a.expires))},
            {"mode": UpdateMode.REPLACE}) for row, a in answers.items()]
        with self._errors(DNS):
            for i in range(0, len(ops), _MAX_OPS):
                self._submit(DNS, ops[i:i + _MAX_OPS])

    # -- inventory ----------------------------------------------------------------------------

    def inventory(self, domain: str | None = None) -> dict[tuple[str, str], InventoryItem]:
        query = "PartitionKey eq @pk" if domain is not None else None
        parameters = {"pk": _key(domain.lower())} if domain is not None else None
        items = sorted((_item(e) for e in self._query(INVENTORY, query, parameters)),
                       key=lambda i: (i.policy_domain, i.service_key))
        return {(i.policy_domain, i.service_key): i for i in items}

    def note_seen(self, domain: str, service_key: str, first_seen: str, last_seen: str,
                  messages: int, dmarc_pass: int, *, whole_history: bool = True) -> InventoryItem:
        """Record a sender as seen; a new one starts `Pending`, a known one keeps its status.

        Volumes change only from a look at the whole history (`whole_history`). A concurrent
        writer is detected by the entity's ETag and the change is made again on fresh data.
        """
        domain = domain.lower()
        partition, row = _key(domain), _key(service_key)
        for _ in range(20):
            current = self._get(INVENTORY, partition, row)
            if current is None:
                item = InventoryItem(domain, service_key, "Pending", None, first_seen,
                                     last_seen, messages, dmarc_pass, None, None)
                operation: Operation = ("create", {
                    "PartitionKey": partition, "RowKey": row,
                    **_props(**dataclasses.asdict(item))})
            else:
                old = _item(current)
                item = dataclasses.replace(
                    old, first_seen=min(old.first_seen, first_seen),
                    last_seen=max(old.last_seen, last_seen),
                    messages=messages if whole_history else old.messages,
                    dmarc_pass=dmarc_pass if whole_history else old.dmarc_pass)
                # MERGE: properties written by others (owner, decision) stay as they are.
                operation = ("update", {
                    "PartitionKey": partition, "RowKey": row,
                    **_props(first_seen=item.first_seen, last_seen=item.last_seen,
                             messages=item.messages, dmarc_pass=item.dmarc_pass)},
                    {"mode": UpdateMode.MERGE, "etag": current.metadata["etag"],
                     "match_condition": MatchConditions.IfNotModified})
            with self._errors(INVENTORY):
                try:
                    self._submit(INVENTORY, [operation])
                    return item
                except HttpResponseError as exc:
                    if _code(exc) not in _CONFLICTS:
                        raise
        raise StoreError(f"{self._name(INVENTORY)}: {domain} {service_key} keeps changing "
                         "under concurrent writers")

    def update_item(self, item: InventoryItem, *, if_status: str) -> bool:
        partition, row = _key(item.policy_domain.lower()), _key(item.service_key)
        current = self._get(INVENTORY, partition, row)
        if current is None or current["status"] != if_status:
            return False
        fields = {name: getattr(item, name) for name in (
            "owner", "status", "decided_by", "decided_at", "asked_at", "reminded_at",
            "alerted_at")}
        # MERGE on the ETag read above: a decision made meanwhile makes this one lose
        # MERGE keeps what it is not given, so an unset field is written as "" (read as None)
        operation: Operation = ("update", {
            "PartitionKey": partition, "RowKey": row,
            **_props(**{k: "" if v is None else v for k, v in fields.items()})},
            {"mode": UpdateMode.MERGE, "etag": current.metadata["etag"],
             "match_condition": MatchConditions.IfNotModified})
        with self._errors(INVENTORY):
            try:
                self._submit(INVENTORY, [operation])
            except HttpResponseError as exc:
                if _code(exc) not in _CONFLICTS:
                    raise
                return False
        return True


def table_store_from_settings(env: Mapping[str, str] | None = None,
                              **client_options: Any) -> TableStore:
    """The store the settings name: a connection string, or an account URL and managed identity.

    `DMARCBOT_TABLES_CLIENT_ID` picks a user-assigned identity; without it the app's
    system-assigned identity is used. ManagedIdentityCredential rather than
    DefaultAzureCredential: in Azure it is the one that should work, and it fails plainly.
    `DMARCBOT_TABLES_PREFIX` (default `dmarcbot`) starts every table's name, so several
    deployments can share one storage account.
    """
    env = os.environ if env is None else env
    prefix = env.get(PREFIX_ENV, "").strip() or "dmarcbot"
    if not _PREFIX.fullmatch(prefix):
        raise StoreError(f"{PREFIX_ENV} {prefix!r} is not a table name prefix (a letter, then "
                         "letters and digits, at most 54)")
    conn = env.get(CONNECTION_ENV, "").strip()
    url = env.get(ACCOUNT_URL_ENV, "").strip()
    if conn and url:
        raise StoreError(f"set {CONNECTION_ENV} or {ACCOUNT_URL_ENV}, not both")
    if conn:
        return TableStore.from_connection_string(conn, prefix=prefix, **client_options)
    if url:
        from azure.identity import ManagedIdentityCredential  # only Azure needs azure-identity

        client_id = env.get(CLIENT_ID_ENV, "").strip() or None
        return TableStore.from_account(url, ManagedIdentityCredential(client_id=client_id),
                                       prefix=prefix, **client_options)
    raise StoreError(f"Table Storage is not configured: set {ACCOUNT_URL_ENV} (with a managed "
                     f"identity) or {CONNECTION_ENV} (a connection string)")
