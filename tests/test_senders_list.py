"""The "Authorized senders" SharePoint list, with the real msal and msgraph-sdk over HTTPS against
the fakes of Entra ID and Graph (SharePoint lists on the fake Graph: tests.fakes.sharepoint)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx
import pytest

from function_app.settings import MailboxSettings
from graph.client import RetryPolicy, connect
from graph.credentials import credential_for
from graph.errors import Conflict, GraphError
from graph.senders_list import (
    COLUMNS,
    DEFAULT_NAME,
    NewSender,
    SenderItem,
    SendersList,
    item_key,
)
from tests.fakes.entra import FakeEntra
from tests.fakes.graph import FakeGraph
from tests.fakes.routes import RouteTable
from tests.fakes.sharepoint import HONOR_NON_INDEXED, FakeList, FakeSite
from tests.mailbox_env import CLIENT_ID, FAST, PROVISIONING_ROLES

T = TypeVar("T")
SITE = ("contoso.sharepoint.com,2c1b2f4e-6b8e-4a4f-9a0e-3f1d2c3b4a59,"
        "7d0c6a1e-5f3b-4c2d-8e9f-0a1b2c3d4e5f")
T0 = datetime(2026, 5, 1, 8, 30, tzinfo=UTC)
FILTERED = {"Domain", "ServiceKey", "ItemKey", "Status", "OwnerUpn"}


@pytest.fixture
def site(graph: FakeGraph, entra: FakeEntra, settings: MailboxSettings) -> FakeSite:
    """The site, with the app allowed to provision lists on it (an administrator's grant)."""
    entra.set_roles(CLIENT_ID, PROVISIONING_ROLES)
    return graph.add_site(SITE).grant(CLIENT_ID, "manage")


def run(settings: MailboxSettings, scenario: Callable[[SendersList], Awaitable[T]],
        retry: RetryPolicy = FAST, list_id: str | None = None) -> T:
    """Run `scenario` on a SendersList over a fresh Graph connection (one event loop)."""
    async def go() -> T:
        credential = credential_for(settings.credential)
        async with connect(credential, base_url=settings.graph_url,
                           ca_bundle=settings.credential.ca_bundle, retry=retry) as connection:
            senders = SendersList(connection, SITE, list_id)
            if list_id is None:
                await senders.provision()
            return await scenario(senders)

    return asyncio.run(go())


def sender(service_key: str = "mailchimp", *, domain: str = "contoso.com",
           name: str = "Mailchimp", messages: int = 10, first: Any = date(2026, 4, 28),
           last: Any = date(2026, 4, 30), **extra: Any) -> NewSender:
    return NewSender(domain, service_key, name, first, last, messages, **extra)


def the_list(site: FakeSite) -> FakeList:
    found = site.list_named(DEFAULT_NAME)
    assert found is not None
    return found


def sent(graph: FakeGraph, method: str, path_end: str) -> list[Any]:
    return [r for r in graph.requests if r.method == method and r.path.endswith(path_end)]


def assert_well_behaved(graph: FakeGraph) -> None:
    """Routable requests only, every $filter on an indexed column, never the Prefer escape."""
    assert graph.rejected == [] and graph.unimplemented == [] and graph.deleted == []
    for request in graph.requests:
        assert HONOR_NON_INDEXED.lower() not in request.headers.get("prefer", "").lower()
        assert request.headers.get("authorization") == "<redacted>"
        for name in re.findall(r"fields/(\w+)", request.query.get("$filter", "")):
            assert name in FILTERED, request.query["$filter"]


# -- provisioning --------------------------------------------------------------------------------


def test_provisioning_twice_makes_one_list_with_every_column_as_specified(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    async def twice(senders: SendersList) -> tuple[str, str]:
        first = senders.list_id
        assert first is not None
        return first, await senders.provision()

    first, second = run(settings, twice)

    assert first == second and list(site.lists) == [first]
    created = the_list(site)
    for spec in COLUMNS:
        column = created.column(spec.name)
        assert column is not None, spec.name
        assert column.kind == spec.kind
        assert column.indexed == (spec.name in FILTERED), spec.name
        assert column.enforce_unique == (spec.name == "ItemKey")
    assert {c.name for c in created.columns if c.indexed} == FILTERED | {"ID"}
    status = created.column("Status")
    assert status is not None and status.facet["choices"] == ["Pending", "Approved", "Rejected"]
    evidence = created.column("Evidence")
    assert evidence is not None and evidence.multiline
    # one create with all the columns in it; the second run only looked
    assert len(sent(graph, "POST", "/lists")) == 1
    assert sent(graph, "POST", "/columns") == [] and sent(graph, "PATCH", "") == []
    lookup = sent(graph, "GET", "/lists")[0]
    assert lookup.query["$filter"] == "displayName eq 'Authorized senders'"
    assert_well_behaved(graph)


def test_provisioning_an_older_list_adds_columns_and_indexes(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    old = site.add_list(DEFAULT_NAME, [
        {"name": "Domain", "text": {}},
        {"name": "ServiceKey", "text": {}, "indexed": True},
        {"name": "Status", "choice": {"choices": ["Pending", "Approved"]}},
        {"name": "Messages", "number": {}},
        {"name": "Notes", "text": {"allowMultipleLines": True}},  # a column of their own
    ])
    kept = old.add_item({"Title": "a person's row", "Domain": "contoso.com", "Messages": 3})

    list_id = run(settings, lambda senders: _value(senders.list_id))

    assert list_id == old.id and len(site.lists) == 1
    assert {c.name for c in old.columns if c.indexed} == FILTERED | {"ID"}
    unique = old.column("ItemKey")
    assert unique is not None and unique.enforce_unique
    status = old.column("Status")
    assert status is not None and status.facet["choices"] == ["Pending", "Approved", "Rejected"]
    assert all(old.column(spec.name) is not None for spec in COLUMNS)
    assert old.column("Notes") is not None
    assert old.items[kept.id].fields["Messages"] == 3
    patched = {r.path.rsplit("/", 1)[1] for r in sent(graph, "PATCH", "")}
    assert patched == {old.column("Domain").id, status.id}  # type: ignore[union-attr]
    assert len(sent(graph, "POST", "/columns")) == len(COLUMNS) - 4
    assert sent(graph, "POST", "/lists") == []
    assert_well_behaved(graph)


async def _value(value: T) -> T:
    return value


def test_a_list_scoped_app_uses_the_list_id_without_provisioning(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    created = run(settings, lambda senders: _value(senders.list_id))
    graph.requests.clear()

    async def scenario(senders: SendersList) -> SenderItem:
        item, _ = await senders.ensure_pending(sender())
        return item

    item = run(settings, scenario, list_id=created)
    assert item.status == "Pending"
    assert not [r for r in graph.requests if r.path.endswith(("/lists", "/columns"))]

    async def no_list(senders: SendersList) -> None:
        senders.list_id = None
        await senders.pending()

    with pytest.raises(ValueError, match="list id"):
        run(settings, no_list, list_id=created)


# -- items ---------------------------------------------------------------------------------------


def test_ensure_pending_twice_makes_one_item(settings: MailboxSettings, graph: FakeGraph,
                                             site: FakeSite) -> None:
    async def twice(senders: SendersList) -> list[tuple[SenderItem, bool]]:
        new = sender(evidence="SPF include:servers.mcsv.net\nDKIM d=mcsv.net",
                     owner_upn="alice@contoso.com", pass_rate=0.9)
        return [await senders.ensure_pending(new), await senders.ensure_pending(new)]

    (first, created), (second, again) = run(settings, twice)

    assert (created, again) == (True, False)
    assert first == second  # nothing to change: no write, same eTag
    assert first.status == "Pending" and not first.decided
    assert first.title == "contoso.com · Mailchimp"
    assert (first.domain, first.service_key, first.service_name) == (
        "contoso.com", "mailchimp", "Mailchimp")
    assert first.messages == 10 and first.pass_rate == 0.9
    assert first.first_seen == datetime(2026, 4, 28, tzinfo=UTC)
    assert first.last_seen == datetime(2026, 4, 30, tzinfo=UTC)
    assert first.owner_upn == "alice@contoso.com" and first.evidence.startswith("SPF")  # type: ignore[union-attr]
    (item,) = the_list(site).items.values()
    assert item.fields["ItemKey"] == "contoso.com|mailchimp"
    assert first.etag == item.etag and first.id == str(item.id)
    assert len(sent(graph, "POST", "/items")) == 1 and sent(graph, "PATCH", "/fields") == []
    assert_well_behaved(graph)


def test_ensure_pending_updates_volumes_but_never_resets_a_decision(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> tuple[SenderItem, SenderItem, bool]:
        item, _ = await senders.ensure_pending(sender())
        decided = await senders.decide(item, "Approved", "bob@contoso.com", T0)
        later = sender(messages=25, first=date(2026, 4, 20), last=date(2026, 4, 29),
                       name="Intuit Mailchimp", owner_upn="carol@contoso.com")
        again, created = await senders.ensure_pending(later)
        return decided, again, created

    decided, again, created = run(settings, scenario)

    assert not created
    assert again.status == "Approved" and again.decision == decided.decision
    assert again.decided_by == "bob@contoso.com" and again.decided_at == T0
    assert again.messages == 25 and again.service_name == "Intuit Mailchimp"
    assert again.first_seen == datetime(2026, 4, 20, tzinfo=UTC)  # earlier: moved back
    assert again.last_seen == datetime(2026, 4, 30, tzinfo=UTC)  # not moved back
    assert again.owner_upn == "carol@contoso.com"  # there was none: the gap is filled
    assert again.title == "contoso.com · Intuit Mailchimp"
    (item,) = the_list(site).items.values()
    assert item.fields["Status"] == "Approved" and item.fields["OwnerUpn"] == "carol@contoso.com"
    patches = sent(graph, "PATCH", "/fields")
    assert len(patches) == 2 and all(r.headers.get("if-match") for r in patches)
    assert_well_behaved(graph)


def test_a_stale_etag_is_a_conflict_and_the_first_decision_stands(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> tuple[SenderItem, SenderItem | None]:
        item, _ = await senders.ensure_pending(sender())
        first = await senders.decide(item, "Approved", "alice@contoso.com", T0)
        assert first.etag != item.etag
        with pytest.raises(Conflict) as caught:
            await senders.decide(item, "Rejected", "bob@contoso.com", T0 + timedelta(minutes=1))
        assert caught.value.status == 412 and caught.value.code == "preconditionFailed"
        assert isinstance(caught.value, GraphError)
        return first, await senders.get("contoso.com", "mailchimp")

    first, now = run(settings, scenario)

    assert now == first
    assert now is not None and now.status == "Approved" and now.decided_by == "alice@contoso.com"
    (item,) = the_list(site).items.values()
    assert item.fields["Status"] == "Approved" and item.fields["DecidedBy"] == "alice@contoso.com"
    assert item.fields["DecidedAt"] == "2026-05-01T08:30:00Z"
    assert_well_behaved(graph)


def test_two_decisions_at_once_exactly_one_wins(settings: MailboxSettings, graph: FakeGraph,
                                                site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> list[SenderItem | BaseException]:
        item, _ = await senders.ensure_pending(sender())
        return await asyncio.gather(
            senders.decide(item, "Approved", "alice@contoso.com", T0),
            senders.decide(item, "Rejected", "bob@contoso.com", T0),
            return_exceptions=True)

    results = run(settings, scenario)

    won = [r for r in results if isinstance(r, SenderItem)]
    lost = [r for r in results if isinstance(r, BaseException)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], Conflict)
    (item,) = the_list(site).items.values()
    assert (item.fields["Status"], item.fields["DecidedBy"]) == (won[0].status,
                                                                won[0].decided_by)
    assert item.version == 2  # created, then one decision
    assert_well_behaved(graph)


def test_a_decision_made_in_the_list_itself_wins_over_a_card_click(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> SenderItem:
        item, _ = await senders.ensure_pending(sender())
        lst = the_list(site)
        with site.lock:  # a person approves in the browser
            lst.update_item(lst.items[int(item.id)], {"Status": "Rejected", "DecidedBy": "dan"})
        with pytest.raises(Conflict):
            await senders.decide(item, "Approved", "alice@contoso.com", T0)
        with pytest.raises(Conflict):  # and no reminder is recorded on a stale reading
            await senders.touch(item, last_reminded=T0)
        # the card sent meanwhile is recorded all the same: it will need updating
        return await senders.set_card(item, "a:1c", "1:a", "https://smba.example/")

    fresh = run(settings, scenario)
    assert fresh.status == "Rejected" and fresh.decided_by == "dan" and fresh.last_reminded is None
    assert fresh.card_activity_id == "1:a"


def test_reminders_and_card_ids_do_not_block_a_decision(
        settings: MailboxSettings, graph: FakeGraph, site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> tuple[SenderItem, SenderItem]:
        item, _ = await senders.ensure_pending(sender())
        carded = await senders.set_card(item, "a:1conversation", "1:activity",
                                        "https://smba.trafficmanager.net/emea/")
        reminded = await senders.touch(carded, last_reminded=T0, last_alerted=T0)
        await senders.ensure_pending(sender(messages=50))  # the daily run, meanwhile
        # the owner clicks on the card read before all that
        decided = await senders.decide(item, "Approved", "alice@contoso.com",
                                       T0 + timedelta(hours=1), owner_upn="alice@contoso.com")
        return reminded, decided

    reminded, decided = run(settings, scenario)

    assert reminded.last_reminded == T0 and reminded.last_alerted == T0
    assert reminded.card_conversation_id == "a:1conversation"
    assert reminded.card_activity_id == "1:activity"
    assert reminded.card_service_url == "https://smba.trafficmanager.net/emea/"
    assert decided.status == "Approved" and decided.owner_upn == "alice@contoso.com"
    assert decided.messages == 50 and decided.last_reminded == T0  # nothing else lost
    assert decided.card_activity_id == "1:activity"
    stale = [r for r in graph.requests if r.method == "PATCH"
             and r.headers.get("if-match") == f'"{the_list(site).items[1].guid},1"']
    assert len(stale) == 2  # set_card, then the decision's first try (412, retried)
    assert_well_behaved(graph)


def test_touch_takes_only_the_alert_and_reminder_times(
        settings: MailboxSettings, site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> None:
        item, _ = await senders.ensure_pending(sender())
        with pytest.raises(ValueError, match="last_reminded"):
            await senders.touch(item, status=T0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="status must be"):
            await senders.decide(item, "Maybe", "x", T0)  # type: ignore[arg-type]

    run(settings, scenario)


def test_queries_use_indexed_columns_only(settings: MailboxSettings, graph: FakeGraph,
                                          site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> tuple[list[SenderItem], ...]:
        for key, domain in (("sendgrid", "contoso.com"), ("mailchimp", "contoso.com"),
                            ("google", "fabrikam.com")):
            await senders.ensure_pending(sender(key, domain=domain, name=key.title()))
        google = await senders.get("fabrikam.com", "google")
        assert google is not None
        await senders.decide(google, "Rejected", "x@fabrikam.com", T0)
        assert await senders.get("contoso.com", "nobody") is None
        return (await senders.pending(), await senders.by_status("Rejected"),
                await senders.for_domain("Contoso.COM."))

    pending, rejected, contoso = run(settings, scenario)

    assert [(i.domain, i.service_key) for i in pending] == [
        ("contoso.com", "mailchimp"), ("contoso.com", "sendgrid")]
    assert [i.service_key for i in rejected] == ["google"]
    assert [i.service_key for i in contoso] == ["mailchimp", "sendgrid"]
    filters = [r.query["$filter"] for r in graph.requests if "$filter" in r.query]
    assert "fields/Status eq 'Pending'" in filters and "fields/Domain eq 'contoso.com'" in filters
    for request in graph.requests:
        if request.path.endswith("/items") and request.method == "GET":
            assert request.query["$expand"].startswith("fields($select=Title,Domain,")
    assert_well_behaved(graph)


def test_quotes_in_service_keys_are_escaped(settings: MailboxSettings, graph: FakeGraph,
                                            site: FakeSite) -> None:
    key = "o'reilly's-mailer"

    async def scenario(senders: SendersList) -> tuple[bool, bool, SenderItem | None]:
        _, created = await senders.ensure_pending(sender(key, name="O'Reilly"))
        _, again = await senders.ensure_pending(sender(key, name="O'Reilly"))
        return created, again, await senders.get("contoso.com", key)

    created, again, found = run(settings, scenario)

    assert (created, again) == (True, False)
    assert found is not None and found.service_key == key
    assert found.title == "contoso.com · O'Reilly"
    assert len(the_list(site).items) == 1
    filters = {r.query["$filter"] for r in graph.requests if r.path.endswith("/items")
               and "$filter" in r.query}
    assert filters == {"fields/ItemKey eq 'contoso.com|o''reilly''s-mailer'"}
    assert_well_behaved(graph)


def test_a_long_key_is_hashed_to_fit_a_text_column() -> None:
    domain = ".".join(["a" * 60] * 4) + ".example"
    key = item_key(domain, "mailchimp")
    assert len(key) == 255 and key != item_key(domain, "sendgrid")
    assert item_key("Contoso.COM.", "MailChimp") == "contoso.com|mailchimp"


def test_throttling_is_retried(settings: MailboxSettings, graph: FakeGraph, site: FakeSite,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from kiota_http.middleware.retry_handler import RetryHandler

    # Retry-After: 0 counts as absent, so kiota sleeps 0.25 s + up to 1 s of jitter: drop that.
    monkeypatch.setattr(RetryHandler, "_get_delay_time_exp_backoff", lambda self, n, d: 0.0)
    graph.inject(429, method="GET", path_contains="/items", headers={"Retry-After": "0"})
    graph.inject(429, method="POST", path_contains="/items", headers={"Retry-After": "0"})
    graph.inject(503, method="PATCH", path_contains="/fields")

    async def scenario(senders: SendersList) -> SenderItem:
        item, _ = await senders.ensure_pending(sender())
        return await senders.decide(item, "Approved", "alice@contoso.com", T0)

    decided = run(settings, scenario)

    assert decided.status == "Approved"
    assert len(the_list(site).items) == 1
    retried = [r for r in graph.requests if "retry-attempt" in r.headers]
    assert [(r.method, r.path.rsplit("/", 1)[1]) for r in retried] == [
        ("GET", "items"), ("POST", "items"), ("PATCH", "fields")]
    assert_well_behaved(graph)


def test_errors_carry_graph_s_code(settings: MailboxSettings, graph: FakeGraph,
                                   site: FakeSite) -> None:
    graph.inject(403, method="GET", path_contains="/items",
                 body={"error": {"code": "accessDenied", "message": "Access denied"}})

    async def scenario(senders: SendersList) -> None:
        with pytest.raises(GraphError) as caught:
            await senders.pending()
        assert (caught.value.status, caught.value.code) == (403, "accessDenied")
        assert "Access denied" not in str(caught.value)

    run(settings, scenario)


def test_an_expired_token_is_replaced(settings: MailboxSettings, entra: FakeEntra,
                                      site: FakeSite) -> None:
    async def scenario(senders: SendersList) -> list[SenderItem]:
        await senders.ensure_pending(sender())
        entra.expire_all()  # msal still holds the token and believes it good
        return await senders.pending()

    assert len(run(settings, scenario)) == 1


# -- the fake itself -----------------------------------------------------------------------------


@pytest.fixture
def plain(graph_routes: RouteTable) -> Iterator[tuple[FakeGraph, FakeSite, httpx.Client]]:
    """Plain-http FakeGraph accepting any bearer, with a raw httpx client for odd requests."""
    with FakeGraph(routes=graph_routes) as fake, httpx.Client(
            base_url=fake.base_url, headers={"Authorization": "Bearer any"}, timeout=5) as http:
        yield fake, fake.add_site(SITE), http
    assert not fake.errors, fake.errors[0]


def code(answer: httpx.Response) -> tuple[int, str]:
    return answer.status_code, answer.json()["error"]["code"]


def test_fake_lists_and_columns(plain: tuple[FakeGraph, FakeSite, httpx.Client]) -> None:
    graph, site, http = plain
    lists = f"/sites/{SITE}/lists"
    body = {"displayName": "T", "list": {"template": "genericList"},
            "columns": [{"name": "K", "text": {}, "indexed": True, "enforceUniqueValues": True}]}
    made = http.post(lists, json=body)
    assert made.status_code == 201 and made.json()["displayName"] == "T"
    assert code(http.post(lists, json=body)) == (409, "nameAlreadyExists")
    assert code(http.post(lists, json={"name": "X"}))[0] == 400
    assert code(http.post(lists, json={"displayName": "Y", "columns": [
        {"name": "R", "richText": {}}]})) == (400, "invalidRequest")
    assert code(http.post(lists, json={"displayName": "Y", "columns": [
        {"name": "U", "text": {}, "enforceUniqueValues": True}]})) == (400, "invalidRequest")
    assert code(http.post(lists, json={"displayName": "Y", "columns": [
        {"name": "N", "text": {"allowMultipleLines": True}, "indexed": True}]}))[0] == 400
    assert site.list_named("Y") is None  # a refused create leaves nothing behind
    found = http.get(lists, params={"$filter": "displayName eq 't'"}).json()["value"]
    assert [x["id"] for x in found] == [made.json()["id"]]
    columns = http.get(f"{lists}/T/columns").json()["value"]  # a list by its title works too
    assert {"Title", "K", "ID", "Created"} <= {c["name"] for c in columns}
    key = next(c for c in columns if c["name"] == "K")
    assert key["indexed"] and key["enforceUniqueValues"] and "text" in key
    assert code(http.patch(f"{lists}/T/columns/{key['id']}", json={"indexed": False}))[0] == 400
    assert code(http.post(f"{lists}/T/columns", json={"name": "k", "text": {}}))[0] == 409
    assert http.delete(f"{lists}/T/items/1").status_code == 204 and graph.deleted  # recorded only
    assert code(http.get(f"/sites/{SITE}/listz")) == (400, "BadRequest")
    assert code(http.get("/sites/nowhere/lists")) == (404, "itemNotFound")


def test_fake_items_etags_and_field_rules(
        plain: tuple[FakeGraph, FakeSite, httpx.Client]) -> None:
    _, site, http = plain
    lst = site.add_list("T", [
        {"name": "K", "text": {}, "indexed": True, "enforceUniqueValues": True},
        {"name": "S", "choice": {"choices": ["A", "B"]}},
        {"name": "N", "number": {}}, {"name": "W", "dateTime": {}}])
    items = f"/sites/{SITE}/lists/{lst.id}/items"
    made = http.post(items, json={"@odata.type": "#microsoft.graph.listItem",
                                  "fields": {"Title": "one", "K": "x", "S": "A", "N": 1,
                                             "W": "2026-05-01T08:30:00.123+02:00"}})
    assert made.status_code == 201
    item = made.json()
    assert re.fullmatch(r'"[0-9a-f-]{36},1"', item["eTag"]) and item["id"] == "1"
    assert item["fields"]["W"] == "2026-05-01T06:30:00Z" and item["@odata.etag"] == item["eTag"]
    assert code(http.post(items, json={"fields": {"K": "X"}})) == (409, "nameAlreadyExists")
    fields = f"{items}/1/fields"
    refused = {"Nope": "x", "Created": "2026-01-01T00:00:00Z", "id": "7", "S": "C", "N": "2"}
    for name, value in refused.items():
        answer = http.patch(fields, json={name: value})
        assert code(answer) == (400, "invalidRequest"), name
    assert "is not recognized" in http.patch(fields, json={"Nope": 1}).json()["error"]["message"]
    assert http.patch(fields, json={"S": "B"}, headers={"If-Match": item["eTag"]}).json()[
        "@odata.etag"].endswith(',2"')
    stale = http.patch(fields, json={"S": "A"}, headers={"If-Match": item["eTag"]})
    assert code(stale) == (412, "preconditionFailed")
    assert http.patch(fields, json={"S": "A"}, headers={"If-Match": "*"}).status_code == 200
    assert http.patch(fields, json={"N": None}).status_code == 200  # no If-Match: allowed
    assert lst.items[1].version == 4 and "N" not in lst.items[1].fields
    got = http.get(f"{items}/1", params={"$expand": "fields($select=K,S,N)"}).json()
    assert got["fields"] == {"@odata.etag": lst.items[1].etag, "K": "x", "S": "A"}
    assert code(http.get(items, params={"$expand": "fields($select=Nope)"}))[0] == 400


def test_fake_filters_need_indexes_and_pages_by_id(
        plain: tuple[FakeGraph, FakeSite, httpx.Client]) -> None:
    _, site, http = plain
    lst = site.add_list("T", [{"name": "I", "text": {}, "indexed": True},
                              {"name": "P", "text": {}},
                              {"name": "M", "text": {"allowMultipleLines": True}}])
    for n in range(5):
        lst.add_item({"I": "a" if n % 2 else "b", "P": f"p{n}", "M": "m"})
    items = f"/sites/{SITE}/lists/{lst.id}/items"
    indexed = http.get(items, params={"$filter": "fields/I eq 'B'", "$expand": "fields"})
    assert [x["id"] for x in indexed.json()["value"]] == ["1", "3", "5"]  # case ignored
    refused = http.get(items, params={"$filter": "fields/P eq 'p1'"})
    assert code(refused) == (400, "invalidRequest")
    assert HONOR_NON_INDEXED in refused.json()["error"]["message"]
    honoured = http.get(items, params={"$filter": "fields/P eq 'p1'"},
                        headers={"Prefer": HONOR_NON_INDEXED})
    assert [x["id"] for x in honoured.json()["value"]] == ["2"]
    assert code(http.get(items, params={"$filter": "fields/M eq 'm'"},
                         headers={"Prefer": HONOR_NON_INDEXED}))[0] == 400
    assert code(http.get(items, params={"$orderby": "fields/P desc"}))[0] == 400
    assert code(http.get(items, params={"$filter": "fields/I eq 'it's'"}))[0] == 400
    page = http.get(items, params={"$top": "2", "$expand": "fields($select=I)"}).json()
    seen = [x["id"] for x in page["value"]]
    lst.add_item({"I": "c"})  # an item added while paging comes last, nothing is skipped
    while "@odata.nextLink" in page:
        assert "$expand=fields($select=I)" in unquote(page["@odata.nextLink"])
        page = http.get(page["@odata.nextLink"]).json()
        seen += [x["id"] for x in page["value"]]
    assert seen == ["1", "2", "3", "4", "5", "6"]


def test_fake_json_uses_the_sdk_models_property_names(
        plain: tuple[FakeGraph, FakeSite, httpx.Client]) -> None:
    from msgraph.generated.models.column_definition import ColumnDefinition
    from msgraph.generated.models.list_ import List_
    from msgraph.generated.models.list_item import ListItem

    def names(model: Any) -> set[str]:
        return set(model().get_field_deserializers())

    _, site, http = plain
    lst = site.add_list("T", [{"name": "K", "choice": {"choices": ["a"]}, "indexed": True}])
    lst.add_item({"K": "a"})
    base = f"/sites/{SITE}/lists/{lst.id}"
    shown = {
        List_: http.get(base, params={"$expand": "columns"}).json(),
        ColumnDefinition: http.get(f"{base}/columns").json()["value"][-1],
        ListItem: http.get(f"{base}/items/1", params={"$expand": "fields"}).json(),
    }
    for model, body in shown.items():
        extra = {k for k in body if not k.startswith("@odata.")} - names(model)
        assert extra == set(), model.__name__
