"""The SharePoint list "Authorized senders": one item per (domain, service), with its decision.

Each service that sends e-mail as one of the organisation's domains gets an item, `Pending` until
its owner approves or rejects it (in a Teams card or in the list itself). Decisions are written with
`If-Match: <eTag>`: when two people decide at once, or click twice, the first decision stands and
the second gets `graph.errors.Conflict`. Background updates (volumes, reminders, card ids) never
change a decision.

Every column used in `$filter` is indexed, so queries keep working past SharePoint's 5,000-item
list view threshold without the `HonorNonIndexedQueriesWarningMayFailRandomly` escape hatch.
Text comparisons in SharePoint ignore case, and so does the uniqueness of `ItemKey`: a service key
is one service whatever its case.

Answers are read as plain JSON (SDK models cost about 3 ms each); URLs come from the SDK's request
builders, and requests go through its middleware (429/503/504 retried, `Retry-After` honoured).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, time
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast

from graph.client import GraphConnection, odata_string
from graph.errors import Conflict, GraphError, NotFound

if TYPE_CHECKING:
    from kiota_abstractions.request_information import RequestInformation
    from msgraph.generated.sites.item.lists.item.list_item_request_builder import (
        ListItemRequestBuilder,
    )

log = logging.getLogger("dmarcbot.graph")

T = TypeVar("T")
Status = Literal["Pending", "Approved", "Rejected"]
STATUSES: tuple[Status, ...] = ("Pending", "Approved", "Rejected")
DEFAULT_NAME = "Authorized senders"
MAX_TEXT = 255  # a single line of text in SharePoint
MAX_NOTE = 60000  # multiple lines of text hold 63,999 characters; keep clear of it
_ATTEMPTS = 3  # writes that lost an If-Match race to a change that does not matter to them


@dataclasses.dataclass(frozen=True, slots=True)
class Column:
    """A column of the list as Graph's columnDefinition describes it."""

    name: str
    kind: str  # the columnDefinition facet: text, choice, number, dateTime
    facet: dict[str, Any] = dataclasses.field(default_factory=dict)
    indexed: bool = False  # every column used in $filter or $orderby
    unique: bool = False  # enforceUniqueValues (SharePoint requires the column indexed)

    def definition(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, self.kind: dict(self.facet)}
        if self.indexed or self.unique:
            out["indexed"] = True
        if self.unique:
            out["enforceUniqueValues"] = True
        return out


_TEXT: dict[str, Any] = {}
_WHEN = {"format": "dateTime"}
COLUMNS: tuple[Column, ...] = (
    Column("Domain", "text", _TEXT, indexed=True),
    Column("ServiceKey", "text", _TEXT, indexed=True),
    Column("ItemKey", "text", _TEXT, indexed=True, unique=True),  # "domain|service"
    Column("ServiceName", "text", _TEXT),
    Column("Category", "text", _TEXT),
    Column("Verdict", "text", _TEXT),  # analysis.verdicts code: needs-dkim, compliant …
    Column("Status", "choice", {"choices": list(STATUSES), "displayAs": "dropDownMenu"},
           indexed=True),
    Column("OwnerUpn", "text", _TEXT, indexed=True),
    Column("OwnerId", "text", _TEXT),
    Column("Evidence", "text", {"allowMultipleLines": True, "textType": "plain",
                                "linesForEditing": 6}),
    Column("Messages", "number", {"decimalPlaces": "none"}),
    Column("PassRate", "number", {"decimalPlaces": "automatic", "displayAs": "percentage"}),
    Column("FirstSeen", "dateTime", _WHEN),
    Column("LastSeen", "dateTime", _WHEN),
    Column("DecidedBy", "text", _TEXT),
    Column("DecidedAt", "dateTime", _WHEN),
    Column("AskedAt", "dateTime", _WHEN),
    Column("LastAlerted", "dateTime", _WHEN),
    Column("LastReminded", "dateTime", _WHEN),
    Column("CardConversationId", "text", _TEXT),
    Column("CardActivityId", "text", _TEXT),
    Column("CardServiceUrl", "text", _TEXT),
)
# Title is the list's own column (always there): "domain · service name".
_FIELDS = ("Title", *(c.name for c in COLUMNS))
_SELECT = f"fields($select={','.join(_FIELDS)})"
_TOUCHABLE = {"asked_at": "AskedAt", "last_alerted": "LastAlerted",
              "last_reminded": "LastReminded"}

When = datetime | date | str


@dataclasses.dataclass(frozen=True, slots=True)
class SenderItem:
    """One item of the list as last read; `etag` is what a write must match."""

    id: str
    etag: str
    domain: str
    service_key: str
    service_name: str
    status: Status
    title: str = ""
    owner_upn: str | None = None
    owner_id: str | None = None
    evidence: str | None = None
    messages: int = 0
    pass_rate: float | None = None  # DMARC pass rate, 0 to 1
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    decided_by: str | None = None
    decided_at: datetime | None = None
    asked_at: datetime | None = None
    last_alerted: datetime | None = None
    last_reminded: datetime | None = None
    category: str | None = None
    verdict: str | None = None
    card_conversation_id: str | None = None
    card_activity_id: str | None = None
    card_service_url: str | None = None

    @property
    def decided(self) -> bool:
        return self.status != "Pending"

    @property
    def decision(self) -> tuple[str, str | None, datetime | None]:
        return self.status, self.decided_by, self.decided_at


@dataclasses.dataclass(frozen=True, slots=True)
class NewSender:
    """A sender as the reports show it: `messages` and `pass_rate` are totals, not increments,
    so recording the same sender twice changes nothing."""

    domain: str
    service_key: str
    service_name: str
    first_seen: When
    last_seen: When
    messages: int = 0
    pass_rate: float | None = None
    owner_upn: str | None = None
    owner_id: str | None = None
    evidence: str | None = None
    category: str | None = None
    verdict: str | None = None


def item_key(domain: str, service_key: str) -> str:
    """The unique key of a (domain, service): `domain|service`, case-folded, at most 255
    characters (a long one ends in a hash of the whole)."""
    key = f"{_domain(domain)}|{service_key.casefold()}"
    if len(key) <= MAX_TEXT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"{key[:MAX_TEXT - len(digest) - 1]}#{digest}"


class SendersList:
    """The "Authorized senders" list of one SharePoint site, through one Graph connection.

    `list_id` comes from the settings in production (a list-scoped app may not be allowed to look
    lists up); `provision()` finds or creates the list and sets it.
    """

    def __init__(self, graph: GraphConnection, site_id: str, list_id: str | None = None):
        self.graph = graph
        self.site_id = site_id
        self.list_id = list_id

    # -- provisioning ----------------------------------------------------------------------------

    async def provision(self, display_name: str = DEFAULT_NAME) -> str:
        """The id of the list, created with all its columns when missing; on an existing list,
        missing columns are added and filtered columns indexed. Safe to run any number of times
        (needs a grant that can manage lists: it is an administrator's step)."""
        found = await self._find_list(display_name)
        if found is None:
            body = {"displayName": display_name, "list": {"template": "genericList"},
                    "columns": [c.definition() for c in COLUMNS]}
            try:
                created = await self._json(self._request(self._site.lists, "POST", body))
                found = _text(created.get("id"))
            except GraphError as exc:
                if exc.status != 409:  # 409: another run created it since we looked
                    raise
                found = await self._find_list(display_name)
            if not found:
                raise GraphError(f"Graph created list {display_name!r} but returned no id")
            log.info("created SharePoint list %r", display_name)
        self.list_id = found
        await self._upgrade_columns()  # also checks what a create made of our definitions
        return found

    async def _find_list(self, display_name: str) -> str | None:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.sites.item.lists.lists_request_builder import ListsRequestBuilder

        query = ListsRequestBuilder.ListsRequestBuilderGetQueryParameters(
            filter=f"displayName eq {odata_string(display_name)}",
            select=["id", "displayName"])
        info = self._site.lists.to_get_request_information(
            RequestConfiguration(query_parameters=query))
        async for row in self._pages(info, lambda url: self._site.lists.with_url(url)):
            if str(row.get("displayName", "")).casefold() == display_name.casefold():
                return _text(row.get("id"))
        return None

    async def _existing_columns(self) -> dict[str, dict[str, Any]]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.sites.item.lists.item.columns.columns_request_builder import (
            ColumnsRequestBuilder,
        )

        columns = self._list.columns
        query = ColumnsRequestBuilder.ColumnsRequestBuilderGetQueryParameters(
            select=["id", "name", "indexed", "enforceUniqueValues", "text", "choice", "number",
                    "dateTime"])
        info = columns.to_get_request_information(RequestConfiguration(query_parameters=query))
        return {str(row.get("name")): row
                async for row in self._pages(info, lambda url: columns.with_url(url))}

    async def _upgrade_columns(self) -> None:
        columns = self._list.columns
        existing = await self._existing_columns()
        for column in COLUMNS:
            row = existing.get(column.name)
            if row is None:
                try:
                    await self._json(self._request(columns, "POST", column.definition()))
                    log.info("added column %s to the senders list", column.name)
                except GraphError as exc:
                    if exc.status != 409:  # 409: another run added it meanwhile
                        raise
                continue
            if column.kind not in row:
                log.warning("column %s of the senders list is not of type %s; leaving it",
                            column.name, column.kind)
                continue
            patch = _column_patch(column, row)
            if patch:
                builder = columns.by_column_definition_id(str(row.get("id")))
                await self._json(self._request(builder, "PATCH", patch))
                log.info("updated column %s of the senders list: %s", column.name,
                         sorted(patch))

    async def column_problems(self) -> list[str]:
        """What provisioning would change on this list, in words: empty when the list has every
        column, index and uniqueness dmarcbot relies on (read-only; `dmarcbot doctor`)."""
        existing = await self._existing_columns()
        problems = []
        for column in COLUMNS:
            row = existing.get(column.name)
            if row is None:
                problems.append(f"column {column.name} is missing")
            elif column.kind not in row:
                problems.append(f"column {column.name} is not of type {column.kind}")
            else:
                problems += [f"column {column.name} {what}"
                             for what in _patch_words(_column_patch(column, row))]
        return problems

    async def grant(self, app_id: str, role: str = "write") -> bool:
        """Give an app `role` on this list alone (selected permissions); False when it had it.

        Needs an administrator's grant (Sites.FullControl.All, or Sites.Selected with
        `fullcontrol` on the site). The runtime app then needs the application permission
        Lists.SelectedOperations.Selected, and nothing tenant-wide.
        """
        if role not in _SITE_ROLES:
            raise ValueError(f"role {role!r} is not one of {', '.join(_SITE_ROLES)}")
        permissions = self._list.permissions
        answer = await self._json(permissions.to_get_request_information())
        lower = None  # the app's existing grant, if it is of a lesser role
        for row in answer.get("value") or []:
            identities = row.get("grantedToIdentitiesV2") or row.get("grantedToIdentities") or []
            apps = {str((i.get("application") or {}).get("id", "")).lower()
                    for i in identities if isinstance(i, dict)}
            if app_id.lower() not in apps:
                continue
            had = [_SITE_ROLES.index(r) for r in row.get("roles") or [] if r in _SITE_ROLES]
            if had and max(had) >= _SITE_ROLES.index(role):
                return False
            lower = _text(row.get("id"))
        if lower is not None:  # one grant per app: raise it rather than add a second
            builder = permissions.by_permission_id(lower)
            await self._json(self._request(builder, "PATCH", {"roles": [role]}))
        else:
            body = {"roles": [role],
                    "grantedToIdentities": [{"application": {"id": app_id,
                                                             "displayName": "dmarcbot"}}]}
            await self._json(self._request(permissions, "POST", body))
        log.info("granted %s on the senders list to an app", role)
        return True

    # -- reading ---------------------------------------------------------------------------------

    async def get(self, domain: str, service_key: str) -> SenderItem | None:
        """The item of a (domain, service), or None."""
        key = item_key(domain, service_key)
        async for item in self._query(f"fields/ItemKey eq {odata_string(key)}"):
            if item.domain.casefold() == _domain(domain) \
                    and item.service_key.casefold() == service_key.casefold():
                return item
        return None

    async def by_status(self, status: Status) -> list[SenderItem]:
        """Every item with this status, by domain then service."""
        _check_status(status)
        items = [i async for i in self._query(f"fields/Status eq {odata_string(status)}")]
        return sorted(items, key=lambda i: (i.domain, i.service_key))

    async def pending(self) -> list[SenderItem]:
        """Every item still waiting for its owner's decision."""
        return await self.by_status("Pending")

    async def for_domain(self, domain: str) -> list[SenderItem]:
        """Every item of one domain, by service."""
        items = [i async for i in self._query(f"fields/Domain eq {odata_string(_domain(domain))}")]
        return sorted(items, key=lambda i: i.service_key)

    async def reread(self, item: SenderItem) -> SenderItem | None:
        """The item as it is now (None once deleted)."""
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.sites.item.lists.item.items.item.list_item_item_request_builder import (  # noqa: E501
            ListItemItemRequestBuilder,
        )

        query = ListItemItemRequestBuilder.ListItemItemRequestBuilderGetQueryParameters(
            expand=[_SELECT])
        builder = self._list.items.by_list_item_id(item.id)
        info = builder.to_get_request_information(RequestConfiguration(query_parameters=query))
        try:
            return _sender(await self._json(info))
        except NotFound:
            return None

    async def _query(self, condition: str) -> AsyncIterator[SenderItem]:
        from kiota_abstractions.base_request_configuration import RequestConfiguration
        from msgraph.generated.sites.item.lists.item.items.items_request_builder import (
            ItemsRequestBuilder,
        )

        items = self._list.items
        query = ItemsRequestBuilder.ItemsRequestBuilderGetQueryParameters(
            filter=condition, expand=[_SELECT])
        info = items.to_get_request_information(RequestConfiguration(query_parameters=query))
        async for row in self._pages(info, lambda url: items.with_url(url)):
            yield _sender(row)

    # -- writing ---------------------------------------------------------------------------------

    async def ensure_pending(self, item: NewSender) -> tuple[SenderItem, bool]:
        """The item of this sender, created `Pending` when missing (True when created here).

        An existing item keeps its status and decision, decided or not; only what the reports
        say changes: volumes, pass rate, first/last seen, evidence, the service's name, and the
        owner when it has none yet.
        """
        for _ in range(_ATTEMPTS):
            existing = await self.get(item.domain, item.service_key)
            if existing is None:
                try:
                    return await self._create(item), True
                except GraphError as exc:
                    # another instance created it since we looked: its 409 (or whatever a
                    # unique-column refusal is on this tenant) leaves an item to find
                    if await self.get(item.domain, item.service_key) is None:
                        raise
                    log.info("sender item created concurrently (%s %s)", exc.status, exc.code)
                    continue
            changes = _seen_changes(existing, item)
            if not changes:
                return existing, False
            try:
                return await self._patch(existing, changes), False
            except Conflict:
                continue  # changed meanwhile (a decision, a reminder): read it again
        raise Conflict("the sender item kept changing while its volumes were updated",
                       code="preconditionFailed", status=412)

    async def _create(self, item: NewSender) -> SenderItem:
        _check_key(item.domain, item.service_key)
        fields: dict[str, Any] = {
            "Title": _line(f"{_domain(item.domain)} · {item.service_name}"),
            "Domain": _domain(item.domain),
            "ServiceKey": item.service_key,
            "ItemKey": item_key(item.domain, item.service_key),
            "ServiceName": _line(item.service_name),
            "Status": "Pending",
            "Messages": int(item.messages),
            "FirstSeen": _stamp(item.first_seen),
            "LastSeen": _stamp(item.last_seen),
        }
        optional = {"PassRate": item.pass_rate, "OwnerUpn": item.owner_upn,
                    "OwnerId": item.owner_id, "Category": item.category,
                    "Verdict": item.verdict,
                    "Evidence": _note(item.evidence) if item.evidence else None}
        fields.update({k: v for k, v in optional.items() if v is not None})
        created = await self._json(self._request(self._list.items, "POST", {"fields": fields}))
        if isinstance(created.get("fields"), dict):
            return _sender(created)
        found = await self.get(item.domain, item.service_key)  # a create answered without fields
        if found is None:
            raise GraphError("Graph created the sender item but it cannot be read back")
        return found

    async def decide(self, item: SenderItem, status: Status, decided_by: str,
                     decided_at: datetime, *, owner_upn: str | None = None) -> SenderItem:
        """Record a decision on the item as read. Raises Conflict when someone decided since
        (the first decision stands); changes that are not decisions do not get in the way.

        A different `owner_upn` (Not mine) hands the item over: the old owner's id and when
        they were asked are cleared, so the new owner is asked afresh.
        """
        _check_status(status)
        fields: dict[str, Any] = {"Status": status, "DecidedBy": _line(decided_by),
                                  "DecidedAt": _stamp(decided_at)}
        if owner_upn is not None:
            fields["OwnerUpn"] = _line(owner_upn)
            if item.owner_upn and owner_upn.casefold() != item.owner_upn.casefold():
                fields.update({"OwnerId": None, "AskedAt": None, "LastReminded": None})
        return await self._patch_retrying(item, fields, decision_must_stand=True)

    async def set_owner_id(self, item: SenderItem, owner_id: str) -> SenderItem:
        """Record the owner's Entra object id (what a click is checked against). A different
        person from the one asked before is asked afresh: AskedAt and LastReminded clear."""
        fields: dict[str, Any] = {"OwnerId": _line(owner_id)}
        if item.owner_id and item.owner_id != owner_id:
            fields.update({"AskedAt": None, "LastReminded": None})
        return await self._patch_retrying(item, fields, decision_must_stand=True)

    async def set_card(self, item: SenderItem, conversation_id: str, activity_id: str,
                       service_url: str) -> SenderItem:
        """Remember the Teams card that asks for the decision, to update it later (written even
        if a decision came in meanwhile: the card is there and will need updating)."""
        return await self._patch_retrying(item, {
            "CardConversationId": _line(conversation_id), "CardActivityId": _line(activity_id),
            "CardServiceUrl": _line(service_url)}, decision_must_stand=False)

    async def touch(self, item: SenderItem, **fields: datetime | None) -> SenderItem:
        """Record when an alert or a reminder went out: `last_alerted=`, `last_reminded=`.
        Raises Conflict when the item was decided since it was read."""
        unknown = sorted(set(fields) - set(_TOUCHABLE))
        if unknown or not fields:
            raise ValueError(f"touch() takes {sorted(_TOUCHABLE)}, not {unknown or 'nothing'}")
        return await self._patch_retrying(
            item, {_TOUCHABLE[k]: _stamp(v) if v is not None else None
                   for k, v in fields.items()}, decision_must_stand=True)

    async def _patch_retrying(self, item: SenderItem, fields: dict[str, Any], *,
                              decision_must_stand: bool) -> SenderItem:
        """PATCH with If-Match; when the eTag moved on, try again on the item as it is now,
        unless the decision changed and it must not have (then: Conflict)."""
        current = item
        for _ in range(_ATTEMPTS):
            try:
                return await self._patch(current, fields)
            except Conflict:
                fresh = await self.reread(current)
                if fresh is None:
                    raise NotFound("the sender item was deleted", code="itemNotFound",
                                   status=404) from None
                if decision_must_stand and fresh.decision != item.decision:
                    raise
                current = fresh
        raise Conflict("the sender item kept changing", code="preconditionFailed", status=412)

    async def _patch(self, item: SenderItem, fields: dict[str, Any]) -> SenderItem:
        builder = self._list.items.by_list_item_id(item.id).fields
        info = self._request(builder, "PATCH", fields)
        info.headers.try_add("If-Match", item.etag)
        answer = await self._json(info)
        if not answer.get("@odata.etag"):  # the new eTag is what the next write must match
            fresh = await self.reread(item)
            if fresh is None:
                raise NotFound("the sender item was deleted", code="itemNotFound", status=404)
            return fresh
        return _sender({"id": item.id, "fields": answer})

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def _site(self) -> Any:
        return self.graph.client.sites.by_site_id(self.site_id)

    @property
    def _list(self) -> ListItemRequestBuilder:
        if not self.list_id:
            raise ValueError("no list id: pass list_id (DMARCBOT_SP_LIST_ID) or call provision()")
        return self._site.lists.by_list_id(self.list_id)

    @staticmethod
    def _request(builder: Any, method: str, body: dict[str, Any]) -> RequestInformation:
        from kiota_abstractions.method import Method
        from kiota_abstractions.request_information import RequestInformation

        info = RequestInformation(Method[method], builder.url_template,
                                  dict(builder.path_parameters))
        info.headers.try_add("Accept", "application/json")
        # application/json, not octet-stream: the retry handler replays only rewindable bodies
        info.set_stream_content(json.dumps(body, ensure_ascii=False).encode(),
                                "application/json")
        return info

    async def _pages(self, info: RequestInformation,
                     follow: Callable[[str], Any]) -> AsyncIterator[dict[str, Any]]:
        while True:
            page = await self._json(info)
            for row in page.get("value") or ():
                if isinstance(row, dict):
                    yield row
            link = page.get("@odata.nextLink")
            if not isinstance(link, str) or not link:
                return
            info = follow(link).to_get_request_information()  # absolute, followed verbatim

    async def _json(self, info: RequestInformation) -> dict[str, Any]:
        return await self.graph.json(info)


# -- mapping -------------------------------------------------------------------------------------


_SITE_ROLES = ("read", "write", "manage", "fullcontrol")  # each includes the ones before


def _column_patch(column: Column, row: dict[str, Any]) -> dict[str, Any]:
    """What a column as Graph shows it (`row`) lacks of its definition, as a PATCH body."""
    patch: dict[str, Any] = {}
    if (column.indexed or column.unique) and not row.get("indexed"):
        patch["indexed"] = True
    if column.unique and not row.get("enforceUniqueValues"):
        patch["enforceUniqueValues"] = True
    if column.kind == "choice":
        have = list((row.get("choice") or {}).get("choices") or [])
        missing = [c for c in column.facet["choices"] if c not in have]
        if missing:
            patch["choice"] = {**(row.get("choice") or {}), "choices": have + missing}
    return patch


def _patch_words(patch: dict[str, Any]) -> list[str]:
    words = {"indexed": "is not indexed", "enforceUniqueValues": "does not enforce unique values",
             "choice": "lacks some choices"}
    return [words[key] for key in patch]


def _sender(row: dict[str, Any]) -> SenderItem:
    """A SenderItem from Graph's JSON for a listItem (its `fields` expanded)."""
    fields = row.get("fields")
    if not isinstance(fields, dict):
        raise GraphError("Microsoft Graph listed a sender item without its fields")
    item_id = _text(row.get("id")) or _text(fields.get("id"))
    etag = _text(fields.get("@odata.etag")) or _text(row.get("eTag")) \
        or _text(row.get("@odata.etag"))
    domain, service_key = _text(fields.get("Domain")), _text(fields.get("ServiceKey"))
    if not item_id or not etag or not domain or not service_key:
        raise GraphError("Microsoft Graph listed a sender item without its id, eTag, Domain "
                         "or ServiceKey")
    status = _text(fields.get("Status")) or "Pending"
    messages = fields.get("Messages")
    rate = fields.get("PassRate")
    return SenderItem(
        id=item_id, etag=etag, domain=domain, service_key=service_key,
        service_name=_text(fields.get("ServiceName")) or service_key,
        status=cast("Status", status), title=_text(fields.get("Title")) or "",
        owner_upn=_text(fields.get("OwnerUpn")), owner_id=_text(fields.get("OwnerId")),
        evidence=_text(fields.get("Evidence")),
        messages=int(messages) if isinstance(messages, int | float) else 0,
        pass_rate=float(rate) if isinstance(rate, int | float) else None,
        first_seen=_moment(fields.get("FirstSeen")), last_seen=_moment(fields.get("LastSeen")),
        decided_by=_text(fields.get("DecidedBy")), decided_at=_moment(fields.get("DecidedAt")),
        asked_at=_moment(fields.get("AskedAt")),
        last_alerted=_moment(fields.get("LastAlerted")),
        last_reminded=_moment(fields.get("LastReminded")),
        category=_text(fields.get("Category")), verdict=_text(fields.get("Verdict")),
        card_conversation_id=_text(fields.get("CardConversationId")),
        card_activity_id=_text(fields.get("CardActivityId")),
        card_service_url=_text(fields.get("CardServiceUrl")))


def _seen_changes(existing: SenderItem, new: NewSender) -> dict[str, Any]:
    """What the reports say that the item does not yet: never the status or the decision."""
    changes: dict[str, Any] = {}
    first, last = _moment(_stamp(new.first_seen)), _moment(_stamp(new.last_seen))
    if first is not None and (existing.first_seen is None or first < existing.first_seen):
        changes["FirstSeen"] = _stamp(first)
    if last is not None and (existing.last_seen is None or last > existing.last_seen):
        changes["LastSeen"] = _stamp(last)
    if int(new.messages) != existing.messages:
        changes["Messages"] = int(new.messages)
    if new.pass_rate is not None and (existing.pass_rate is None
                                      or abs(new.pass_rate - existing.pass_rate) > 1e-9):
        changes["PassRate"] = new.pass_rate
    if new.evidence and _note(new.evidence) != existing.evidence:
        changes["Evidence"] = _note(new.evidence)
    if new.service_name and _line(new.service_name) != existing.service_name:
        changes["ServiceName"] = _line(new.service_name)
        changes["Title"] = _line(f"{existing.domain} · {new.service_name}")
    for name, new_value, old_value in (("Category", new.category, existing.category),
                                       ("Verdict", new.verdict, existing.verdict)):
        if new_value and _line(new_value) != old_value:
            changes[name] = _line(new_value)
    if new.owner_upn and not existing.owner_upn:  # a person's choice of owner stays
        changes["OwnerUpn"] = _line(new.owner_upn)
    if new.owner_id and not existing.owner_id:
        changes["OwnerId"] = _line(new.owner_id)
    return changes


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {status!r}")


def _check_key(domain: str, service_key: str) -> None:
    if not _domain(domain) or not service_key:
        raise ValueError("a sender needs a domain and a service key")
    if len(_domain(domain)) > MAX_TEXT or len(service_key) > MAX_TEXT:
        raise ValueError(f"a domain or service key is over {MAX_TEXT} characters")


def _domain(domain: str) -> str:
    return domain.strip().rstrip(".").casefold()


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _line(value: str) -> str:
    """One line of text that fits a single-line SharePoint column."""
    text = " ".join(value.split())
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT - 1] + "…"


def _note(value: str) -> str:
    return value if len(value) <= MAX_NOTE else value[:MAX_NOTE - 1] + "…"


def _stamp(value: When) -> str:
    """A dateTime field's value: UTC, whole seconds, as SharePoint stores it."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"not an ISO date or date and time: {value!r}") from None
    if not isinstance(value, datetime):  # a day: its start, in UTC
        value = datetime.combine(value, time(0, 0), tzinfo=UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _moment(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    with contextlib.suppress(ValueError):
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None
