"""Fake Microsoft Graph v1.0 (Exchange Online mail) on loopback, for the real msgraph-sdk.

Each request is checked against the route table harvested from the SDK (a path, method or
query option Graph would refuse is a 400 here too), then against the bearer token, then served
from in-memory mailboxes with Graph's JSON shapes, paging, id semantics and errors. Faults,
latency and per-mailbox concurrency are observable so the client's retry and throttling
behaviour can be tested against real sockets.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import Message
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol
from urllib.parse import quote, unquote, urlencode

from tests.fakes.mail_json import (
    ATTACHMENT_PROPERTIES,
    MAIL_FOLDER_PROPERTIES,
    MESSAGE_PROPERTIES,
    attachment_json,
    attachment_value,
    folder_json,
    lookup,
    message_json,
    message_mime,
)
from tests.fakes.mailbox import (
    ROOT,
    FakeFolder,
    FakeMailbox,
    FakeMessage,
    parse_attachment_id,
)
from tests.fakes.odata import (
    DEFAULT_TOP,
    GraphError,
    bad_request,
    check_filter_and_orderby,
    decode_skiptoken,
    encode_skiptoken,
    parse_expand,
    parse_folder_filter,
    parse_message_filter,
    parse_message_orderby,
    parse_select,
    parse_top,
)
from tests.fakes.permissions import denied, need_for, token_roles
from tests.fakes.routes import Route, RouteError, RouteTable
from tests.fakes.server import LoopbackServer, Request, Response, Served
from tests.fakes.tls import TestCA

if TYPE_CHECKING:
    from tests.fakes.sharepoint import FakeSite

ODATA_JSON = ("application/json;odata.metadata=minimal;odata.streaming=true;"
              "IEEE754Compatible=false;charset=utf-8")
EXPIRED_MESSAGE = "Access token has expired or is not yet valid."
WWW_AUTHENTICATE = ('Bearer realm="", authorization_uri="https://login.microsoftonline.com/'
                    'common/oauth2/authorize", client_id="00000003-0000-0000-c000-000000000000"')
_IMMUTABLE = re.compile(r'idtype\s*=\s*"?immutableid"?', re.I)
_MAX_PAGE = re.compile(r"odata\.maxpagesize\s*=\s*(\d+)", re.I)
_FOLDER_SCOPED = "/users/{user-id}/mailFolders/{mailFolder-id}/messages/{message-id}"
_ITEM_EXPAND = ("microsoft.graph.itemattachment/item", "graph.itemattachment/item")

_DEFAULT_FAULTS = {
    401: ("InvalidAuthenticationToken", EXPIRED_MESSAGE),
    403: ("ErrorAccessDenied", "Access is denied. Check credentials and try again."),
    404: ("ErrorItemNotFound", "The specified object was not found in the store."),
    409: ("ErrorFolderExists", "A folder with the specified name already exists."),
    429: ("ApplicationThrottled", "Application is over its MailboxConcurrency limit."),
    500: ("InternalServerError", "An internal server error occurred."),
    502: ("BadGateway", "Bad gateway."),
    503: ("ServiceNotAvailable", "The service is temporarily unavailable."),
    504: ("UnknownError", ""),
}


class TokenValidator(Protocol):
    def is_valid(self, token: str) -> bool: ...


class GraphRequest(NamedTuple):
    """A logged request: never bodies, never the Authorization value."""

    method: str
    path: str  # decoded, including /v1.0
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names


class Rejection(NamedTuple):
    method: str
    path: str
    reason: str


@dataclass
class _Fault:
    status: int
    method: str | None
    path_contains: str | None
    remaining: int
    headers: dict[str, str]
    body: Any


@dataclass
class _Ctx:
    """Everything a handler needs about one routed request."""

    mailbox: FakeMailbox
    route: Route
    query: dict[str, str]  # lower-cased keys
    pairs: list[tuple[str, str]]
    headers: Message
    body: bytes
    raw_path: str
    immutable: bool
    in_folder: str | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)

    def id_for(self, msg: FakeMessage) -> str:
        return msg.immutable_id if self.immutable else msg.id

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"null")
        except ValueError as exc:
            raise bad_request("Unable to read JSON request payload. Please ensure Content-Type "
                              "header is set and payload is of valid JSON format.") from exc
        if not isinstance(data, dict):
            raise bad_request("Empty Payload. JSON content expected.")
        return data


def _not_found() -> GraphError:
    return GraphError(404, "ErrorItemNotFound", "The specified object was not found in the store.")


def _malformed_or_missing(value: str, prefixes: tuple[str, ...]) -> GraphError:
    if value.startswith(prefixes):
        return _not_found()
    return GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")


class FakeGraph(Served):
    """Graph v1.0 mail endpoints for mailboxes added with ``add_mailbox``.

    ``tokens``: who decides a bearer is valid (a FakeEntra); None accepts any non-empty one.
    ``tls``: serve https with this CA's certificate; None serves plain http.
    """

    def __init__(self, *, tokens: TokenValidator | None = None, tls: TestCA | None = None,
                 routes: RouteTable | None = None) -> None:
        self.tokens = tokens
        self.routes = routes or RouteTable.load()
        self.latency = 0.0
        self.ids_change_on_move = False
        # False: /mailFolders/{id}/messages/{id} finds a message in any folder (Graph does not
        # promise a 404 for a message that has left the folder)
        self.folder_scoped_reads_check_folder = True
        self.mailbox_concurrency_limit: int | None = None  # Outlook's is 4; None = off
        self.requests: list[GraphRequest] = []
        self.rejected: list[Rejection] = []
        self.deleted: list[str] = []
        self.unimplemented: list[Rejection] = []
        self.forbidden: list[Rejection] = []  # refused for want of a permission (app id in reason)
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self._lock = threading.RLock()
        self._mailboxes: dict[str, FakeMailbox] = {}
        self._faults: list[_Fault] = []
        # more resources (tests.fakes.sharepoint): (method, route template) -> handler
        self._extra_handlers: dict[tuple[str, str], Callable[[Request, Route], Response]] = {}
        self._server = LoopbackServer(self._handle, tls.server_context() if tls else None)
        self._handlers: dict[tuple[str, str], Callable[[_Ctx], Response]] = {
            ("GET", "/users/{user-id}/mailFolders/{mailFolder-id}/messages"): self._list_messages,
            ("GET", "/users/{user-id}/messages"): self._list_messages,
            ("GET", "/users/{user-id}/messages/{message-id}"): self._get_message,
            ("PATCH", "/users/{user-id}/messages/{message-id}"): self._patch_message,
            ("GET", "/users/{user-id}/messages/{message-id}/$value"): self._message_value,
            ("GET", "/users/{user-id}/messages/{message-id}/attachments"): self._list_attachments,
            ("GET", "/users/{user-id}/messages/{message-id}/attachments/{attachment-id}"):
                self._get_attachment,
            ("GET", "/users/{user-id}/messages/{message-id}/attachments/{attachment-id}/$value"):
                self._attachment_value,
            ("POST", "/users/{user-id}/messages/{message-id}/move"): self._move,
            ("POST", "/users/{user-id}/messages/{message-id}/permanentDelete"): self._delete,
            ("GET", "/users/{user-id}/mailFolders"): self._list_folders,
            ("POST", "/users/{user-id}/mailFolders"): self._create_folder,
            ("GET", "/users/{user-id}/mailFolders/{mailFolder-id}"): self._get_folder,
            ("GET", "/users/{user-id}/mailFolders/{mailFolder-id}/childFolders"):
                self._list_folders,
            ("POST", "/users/{user-id}/mailFolders/{mailFolder-id}/childFolders"):
                self._create_folder,
        }

    @property
    def base_url(self) -> str:
        return f"{self._server.origin}/v1.0"

    # ------------------------------------------------------------------ setup API
    def add_mailbox(self, upn: str, *, object_id: str | None = None) -> FakeMailbox:
        with self._lock:
            if upn.casefold() in self._mailboxes:
                raise ValueError(f"mailbox {upn} exists")
            mailbox = FakeMailbox(upn, object_id, self._lock)
            self._mailboxes[upn.casefold()] = mailbox
            return mailbox

    def mailbox(self, user: str) -> FakeMailbox | None:
        """A mailbox by UPN (case-insensitive) or object id."""
        with self._lock:
            found = self._mailboxes.get(user.casefold())
            if found is None:
                found = next((m for m in self._mailboxes.values()
                              if m.object_id.casefold() == user.casefold()), None)
            return found

    def add_handlers(self, handlers: dict[tuple[str, str],
                                          Callable[[Request, Route], Response]]) -> None:
        """Serve more routes: ``(method, route template) -> handler(request, route)``, called
        under the fake's lock after routing, fault injection and token checks."""
        with self._lock:
            self._extra_handlers.update(handlers)

    def add_site(self, site_id: str) -> FakeSite:
        """A SharePoint site whose lists this fake serves (see tests.fakes.sharepoint)."""
        from tests.fakes.sharepoint import FakeSharePoint

        return FakeSharePoint.of(self, self._lock).add_site(site_id)

    def inject(self, status: int, *, method: str | None = None, path_contains: str | None = None,
               times: int = 1, headers: dict[str, str] | None = None, body: Any = None) -> None:
        """The next ``times`` matching requests get this response instead (after routing).

        ``body``: dict (JSON), str or bytes; default is Graph's error JSON for ``status``.
        """
        with self._lock:
            self._faults.append(_Fault(status, method.upper() if method else None,
                                       path_contains, times, dict(headers or {}), body))

    # ------------------------------------------------------------------ HTTP entry
    def _handle(self, request: Request) -> Response:
        raw_path = request.raw_path
        path = unquote(raw_path)
        pairs = request.query
        headers = {k.lower(): ("<redacted>" if k.lower() == "authorization" else v)
                   for k, v in request.headers.items()}
        key = self._mailbox_key(path)
        with self._lock:
            self.requests.append(GraphRequest(request.method, path, dict(pairs), headers))
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            self.max_in_flight[key] = max(self.max_in_flight.get(key, 0), self.in_flight[key])
            concurrent = self.in_flight[key]
        try:
            if self.latency:
                time.sleep(self.latency)
            return self._serve(request, raw_path, path, pairs, concurrent)
        except GraphError as exc:
            return self._error(exc, request)
        finally:
            with self._lock:
                self.in_flight[key] -= 1

    def _mailbox_key(self, path: str) -> str:
        segs = [s for s in path.split("/") if s]
        if len(segs) >= 3 and segs[1].lower() == "users":
            found = self.mailbox(segs[2])
            return found.upn if found else segs[2].lower()
        return ""

    def _serve(self, request: Request, raw_path: str, path: str,
               pairs: list[tuple[str, str]], concurrent: int) -> Response:
        method = request.method.upper()
        if not raw_path.startswith("/v1.0/"):
            version = raw_path.strip("/").split("/", 1)[0]
            self._reject(method, path, f"Invalid version: {version}")
        keys = [k for k, _ in pairs]
        dupes = {k for k in keys if keys.count(k) > 1}
        if dupes:
            self._reject(method, path, f"Query option '{sorted(dupes)[0]}' was specified more "
                                       "than once, but it must be specified at most once.")
        route = self.routes.match(method, raw_path[len("/v1.0"):], keys)
        if isinstance(route, RouteError):
            self._reject(method, path, route.reason)
        assert isinstance(route, Route)
        fault = self._take_fault(method, raw_path, path)
        if fault is not None:
            return self._fault_response(fault, request)
        limit = self.mailbox_concurrency_limit
        if limit is not None and concurrent > limit:
            raise GraphError(429, "ApplicationThrottled",
                             "Application is over its MailboxConcurrency limit.",
                             {"Retry-After": "0"})
        claims = self._authenticate(request.headers)
        if claims is not None:
            self._authorize(route, claims)
        return self._dispatch(request, route, raw_path, path, pairs)

    def _reject(self, method: str, path: str, reason: str) -> None:
        with self._lock:
            self.rejected.append(Rejection(method, path, reason))
        raise bad_request(reason)

    def _authenticate(self, headers: Message) -> dict[str, Any] | None:
        """The token's claims when ``tokens`` can tell them (a FakeEntra), else None."""
        value = headers.get("Authorization") or ""  # Message lookups ignore case
        scheme, _, token = value.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise GraphError(401, "InvalidAuthenticationToken", "Access token is empty.",
                             {"WWW-Authenticate": WWW_AUTHENTICATE})
        if self.tokens is not None and not self.tokens.is_valid(token):
            raise GraphError(401, "InvalidAuthenticationToken", EXPIRED_MESSAGE,
                             {"WWW-Authenticate": WWW_AUTHENTICATE})
        claims = getattr(self.tokens, "claims", None)
        return claims(token) if claims is not None else None

    def _authorize(self, route: Route, claims: dict[str, Any]) -> None:
        """Refuse, as Graph does, a call the token's roles and the app's narrower grants
        (Exchange RBAC on the mailbox, selected permissions on a site or list) do not cover."""
        need = need_for(route.method, route.template)
        if need is None:
            return
        roles = token_roles(claims)
        if roles & need.roles:
            return
        app = str(claims.get("appid", ""))
        if need.mail is not None:
            box = self.mailbox(route.params.get("user-id", ""))
            if box is None or box.allows(app, need.mail):
                return  # an unknown mailbox is Exchange's 404, answered by the handler
        if need.site_role is not None:
            from tests.fakes.sharepoint import FakeSharePoint

            if FakeSharePoint.of(self, self._lock).allows(route, app, roles, need):
                return
        with self._lock:
            self.forbidden.append(Rejection(route.method, route.template, app))
        raise denied(need, roles)

    def _take_fault(self, method: str, raw_path: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.method and fault.method != method:
                    continue
                if fault.path_contains and fault.path_contains not in path \
                        and fault.path_contains not in raw_path:
                    continue
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _fault_response(self, fault: _Fault, request: Request) -> Response:
        if fault.body is None:
            code, message = _DEFAULT_FAULTS.get(fault.status, ("UnknownError", ""))
            response = self._error(GraphError(fault.status, code, message), request)
            response.headers.update(fault.headers)
            return response
        if isinstance(fault.body, dict | list):
            return Response(fault.status, json.dumps(fault.body).encode(),
                            {"Content-Type": ODATA_JSON, **fault.headers})
        raw = fault.body.encode() if isinstance(fault.body, str) else bytes(fault.body)
        return Response(fault.status, raw, {"Content-Type": "text/plain", **fault.headers})

    def _error(self, exc: GraphError, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        client_request_id = request.headers.get("client-request-id") or request_id
        body = {"error": {"code": exc.code, "message": exc.message, "innerError": {
            "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "request-id": request_id, "client-request-id": client_request_id}}}
        return Response(exc.status, json.dumps(body).encode(), {
            "Content-Type": ODATA_JSON, "request-id": request_id,
            "client-request-id": client_request_id, **exc.headers})

    def _dispatch(self, request: Request, route: Route, raw_path: str, path: str,
                  pairs: list[tuple[str, str]]) -> Response:
        if route.method == "DELETE":  # never delete: record it so tests can assert it is empty
            with self._lock:
                self.deleted.append(path)
            return Response(204)
        extra = self._extra_handlers.get((route.method, route.template))
        if extra is not None:
            with self._lock:
                response = extra(request, route)
            response.headers.setdefault("request-id", str(uuid.uuid4()))
            return response
        template, in_folder = route.template, None
        if template.startswith(_FOLDER_SCOPED):
            in_folder = route.params.get("mailFolder-id")
            template = "/users/{user-id}/messages/{message-id}" + template[len(_FOLDER_SCOPED):]
        handler = self._handlers.get((route.method, template))
        if handler is None:
            with self._lock:
                self.unimplemented.append(Rejection(route.method, path, route.template))
            raise GraphError(501, "NotImplemented",
                             f"FakeGraph does not implement {route.method} {route.template}")
        user = route.params.get("user-id", "")
        mailbox = self.mailbox(user)
        if mailbox is None:
            raise GraphError(404, "ErrorInvalidUser", f"The requested user '{user}' is invalid.")
        prefer = ", ".join(request.headers.get_all("Prefer") or [])
        ctx = _Ctx(mailbox, route, {k.lower(): v for k, v in pairs}, pairs, request.headers,
                   request.body, raw_path, bool(_IMMUTABLE.search(prefer)), in_folder)
        if ctx.immutable:
            ctx.extra_headers["Preference-Applied"] = 'IdType="ImmutableId"'
        with self._lock:
            response = handler(ctx)
        request_id = str(uuid.uuid4())
        response.headers.setdefault("request-id", request_id)
        response.headers.setdefault("client-request-id",
                                    request.headers.get("client-request-id") or request_id)
        response.headers.update(ctx.extra_headers)
        return response

    # ------------------------------------------------------------------ helpers
    def _json(self, status: int, payload: Any) -> Response:
        return Response(status, json.dumps(payload).encode(),
                        {"Content-Type": ODATA_JSON, "OData-Version": "4.0"})

    def _page(self, ctx: _Ctx, items: list[Any], render: Callable[[Any], dict[str, Any]],
              default_top: int | None) -> Response:
        """One page of a collection with an absolute nextLink carrying an opaque $skiptoken.

        The token encodes an offset, like Graph's own mail paging: moving items out of the
        collection while paging shifts the rest, as it does in production.
        """
        top = parse_top(ctx.query["$top"]) if "$top" in ctx.query else default_top
        prefer = ", ".join(ctx.headers.get_all("Prefer") or [])
        max_page = _MAX_PAGE.search(prefer)
        size = top if top is not None else len(items)
        if max_page and top is None:
            size = int(max_page.group(1))
        elif max_page and top is not None:
            size = min(top, int(max_page.group(1)))
        if max_page:
            ctx.extra_headers["Preference-Applied"] = ", ".join(
                filter(None, [ctx.extra_headers.get("Preference-Applied"),
                              f"odata.maxpagesize={max_page.group(1)}"]))
        if "$skiptoken" in ctx.query:
            offset = decode_skiptoken(ctx.query["$skiptoken"])
        else:
            offset = self._int_option(ctx.query.get("$skip", "0"), "$skip")
        size = max(size, 1)  # a zero page size would hand out nextLinks forever
        chunk = items[offset:offset + size]
        body: dict[str, Any] = {"value": [render(item) for item in chunk]}
        if ctx.query.get("$count", "").lower() == "true":
            body["@odata.count"] = len(items)
        if offset + size < len(items):
            kept = [(k, v) for k, v in ctx.pairs if k.lower() not in ("$skip", "$skiptoken")]
            kept.append(("$skiptoken", encode_skiptoken(offset + size)))
            query = urlencode(kept, quote_via=quote, safe="$,()':")
            body["@odata.nextLink"] = f"{self._server.origin}{ctx.raw_path}?{query}"
        return self._json(200, body)

    @staticmethod
    def _int_option(value: str, name: str) -> int:
        try:
            number = int(value)
        except ValueError as exc:
            raise bad_request(f"Invalid {name} value '{value}'.") from exc
        if number < 0:
            raise bad_request(f"Invalid {name} value '{value}'.")
        return number

    def _folder(self, ctx: _Ctx, ref: str) -> FakeFolder:
        found = ctx.mailbox.resolve_folder(ref)
        if found is None:
            raise _malformed_or_missing(ref, ("AQMk", "AAMk"))
        return found

    def _message(self, ctx: _Ctx) -> FakeMessage:
        ref = ctx.route.params["message-id"]
        msg = ctx.mailbox.find(ref)
        if msg is None:
            raise _malformed_or_missing(ref, ("AAMk", "AAkA"))
        if ctx.in_folder is not None and self.folder_scoped_reads_check_folder \
                and msg.folder_id != self._folder(ctx, ctx.in_folder).id:
            raise _not_found()
        return msg

    def _message_expand(self, ctx: _Ctx) -> list[str] | bool | None:
        """False: no attachments expanded; None: all properties; list: their $select."""
        expanded: list[str] | bool | None = False
        for item in parse_expand(ctx.query.get("$expand")):
            if item.prop.lower() != "attachments":
                raise bad_request(f"Could not find a property named '{item.prop}' on type "
                                  "'microsoft.graph.message'.", "RequestBroker--ParseUri")
            expanded = parse_select(item.select, lookup(ATTACHMENT_PROPERTIES), "attachment")
        return expanded

    def _render_message(self, ctx: _Ctx, msg: FakeMessage, select: list[str] | None,
                        expanded: list[str] | bool | None) -> dict[str, Any]:
        mid = ctx.id_for(msg)
        out = message_json(msg, mid, select)
        if expanded is not False:
            nested = None if expanded is True else expanded
            out["attachments"] = [attachment_json(a, mid, i, msg, nested)
                                  for i, a in enumerate(msg.attachments)]
        return out

    # ------------------------------------------------------------------ messages
    def _list_messages(self, ctx: _Ctx) -> Response:
        folder_ref = ctx.route.params.get("mailFolder-id")
        folder = self._folder(ctx, folder_ref) if folder_ref is not None else None
        select = parse_select(ctx.query.get("$select"), lookup(MESSAGE_PROPERTIES), "message")
        expanded = self._message_expand(ctx)
        if "$search" in ctx.query:
            raise bad_request("FakeGraph does not support $search.")
        filt = parse_message_filter(ctx.query.get("$filter"))
        orderby = parse_message_orderby(ctx.query.get("$orderby"))
        check_filter_and_orderby(filt, orderby)
        items = [m for m in ctx.mailbox.all_messages()
                 if (folder is None or m.folder_id == folder.id)
                 and (filt is None or filt.predicate(m))]
        descending = orderby[0][1] if orderby else True  # Graph's default: newest first
        items.sort(key=lambda m: m.received, reverse=descending)
        return self._page(ctx, items, lambda m: self._render_message(ctx, m, select, expanded),
                          default_top=DEFAULT_TOP)

    def _get_message(self, ctx: _Ctx) -> Response:
        msg = self._message(ctx)
        select = parse_select(ctx.query.get("$select"), lookup(MESSAGE_PROPERTIES), "message")
        return self._json(200, self._render_message(ctx, msg, select, self._message_expand(ctx)))

    def _patch_message(self, ctx: _Ctx) -> Response:
        msg = self._message(ctx)
        body = ctx.json_body()
        known = lookup(MESSAGE_PROPERTIES)
        for key, value in body.items():
            if key.startswith("@odata."):
                continue
            name = known.get(key.lower())
            if name is None:
                raise GraphError(400, "RequestBodyRead",
                                 f"The property '{key}' does not exist on type "
                                 "'microsoft.graph.message'. Make sure to only use property "
                                 "names that are defined by the type or mark the type as open "
                                 "type.")
            if name == "categories":
                if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
                    raise bad_request("categories must be an array of strings.")
                msg.categories = list(value)
            elif name == "isRead":
                msg.is_read = bool(value)
        msg.last_modified = datetime.now(UTC)
        return self._json(200, self._render_message(ctx, msg, None, False))

    def _message_value(self, ctx: _Ctx) -> Response:
        return Response(200, message_mime(self._message(ctx)), {"Content-Type": "message/rfc822"})

    def _move(self, ctx: _Ctx) -> Response:
        msg = self._message(ctx)
        body = {k.lower(): v for k, v in ctx.json_body().items()}  # SDK sends "DestinationId"
        destination = body.get("destinationid")
        if not isinstance(destination, str) or not destination:
            raise bad_request("Value cannot be null. Parameter name: DestinationId",
                              "ErrorInvalidRequest")
        folder = self._folder(ctx, destination)
        ctx.mailbox.move(msg, folder, new_immutable=self.ids_change_on_move)
        return self._json(201, self._render_message(ctx, msg, None, False))

    def _delete(self, ctx: _Ctx) -> Response:
        with self._lock:
            self.deleted.append(unquote(ctx.raw_path))
        return Response(204)

    # ------------------------------------------------------------------ attachments
    def _attachment(self, ctx: _Ctx) -> tuple[FakeMessage, int]:
        msg = self._message(ctx)
        parsed = parse_attachment_id(ctx.route.params["attachment-id"])
        if parsed is None:
            raise GraphError(400, "ErrorInvalidIdMalformed", "Id is malformed.")
        listed_under, index = parsed
        if ctx.mailbox.find(listed_under) is not msg or not 0 <= index < len(msg.attachments):
            raise _not_found()
        return msg, index

    def _list_attachments(self, ctx: _Ctx) -> Response:
        msg = self._message(ctx)
        select = parse_select(ctx.query.get("$select"), lookup(ATTACHMENT_PROPERTIES),
                              "attachment")
        if ctx.query.get("$filter") or ctx.query.get("$orderby") or ctx.query.get("$expand"):
            raise bad_request("FakeGraph supports only $select/$top on attachments.")
        mid = ctx.id_for(msg)
        indexed = list(enumerate(msg.attachments))
        return self._page(ctx, indexed,
                          lambda pair: attachment_json(pair[1], mid, pair[0], msg, select),
                          default_top=None)

    def _get_attachment(self, ctx: _Ctx) -> Response:
        msg, index = self._attachment(ctx)
        select = parse_select(ctx.query.get("$select"), lookup(ATTACHMENT_PROPERTIES),
                              "attachment")
        expand_item = False
        for item in parse_expand(ctx.query.get("$expand")):
            if item.prop.lower() not in _ITEM_EXPAND:
                raise bad_request(f"Could not find a property named '{item.prop}' on type "
                                  "'microsoft.graph.attachment'.", "RequestBroker--ParseUri")
            expand_item = True
        att = msg.attachments[index]
        return self._json(200, attachment_json(att, ctx.id_for(msg), index, msg, select,
                                               expand_item))

    def _attachment_value(self, ctx: _Ctx) -> Response:
        msg, index = self._attachment(ctx)
        content, content_type = attachment_value(msg.attachments[index])
        return Response(200, content, {"Content-Type": content_type})

    # ------------------------------------------------------------------ folders
    def _render_folder(self, ctx: _Ctx, folder: FakeFolder,
                       select: list[str] | None) -> dict[str, Any]:
        folders = ctx.mailbox.folders()
        messages = [m for m in ctx.mailbox.all_messages() if m.folder_id == folder.id]
        return folder_json(folder, sum(1 for f in folders if f.parent_id == folder.id),
                           len(messages), sum(1 for m in messages if not m.is_read), select)

    def _list_folders(self, ctx: _Ctx) -> Response:
        parent_ref = ctx.route.params.get("mailFolder-id", ROOT)
        parent = self._folder(ctx, parent_ref)
        select = parse_select(ctx.query.get("$select"), lookup(MAIL_FOLDER_PROPERTIES),
                              "mailFolder")
        filt = parse_folder_filter(ctx.query.get("$filter"))
        if ctx.query.get("$orderby") or ctx.query.get("$expand") or "$search" in ctx.query:
            raise bad_request("FakeGraph supports only $filter/$select/$top on mailFolders.")
        hidden = ctx.query.get("includehiddenfolders", "").lower() == "true"
        items = [f for f in ctx.mailbox.folders() if f.parent_id == parent.id
                 and (hidden or not f.is_hidden) and (filt is None or filt.predicate(f))]
        return self._page(ctx, items, lambda f: self._render_folder(ctx, f, select),
                          default_top=DEFAULT_TOP)

    def _get_folder(self, ctx: _Ctx) -> Response:
        folder = self._folder(ctx, ctx.route.params["mailFolder-id"])
        select = parse_select(ctx.query.get("$select"), lookup(MAIL_FOLDER_PROPERTIES),
                              "mailFolder")
        return self._json(200, self._render_folder(ctx, folder, select))

    def _create_folder(self, ctx: _Ctx) -> Response:
        parent = self._folder(ctx, ctx.route.params.get("mailFolder-id", ROOT))
        body = {k.lower(): v for k, v in ctx.json_body().items()}
        name = body.get("displayname")
        if not isinstance(name, str) or not name.strip():
            raise bad_request("The folder name must not be empty.", "ErrorInvalidRequest")
        folder = ctx.mailbox.create_folder(name, parent.id)
        if folder is None:
            raise GraphError(409, "ErrorFolderExists",
                             "A folder with the specified name already exists.")
        return self._json(201, self._render_folder(ctx, folder, None))
