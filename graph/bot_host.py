"""The bot's messaging endpoint, hosted by an Azure Functions HTTP trigger.

`BotEndpoint.handle(body, headers)` is all the trigger calls: it parses the activity, checks it
with graph.bot_auth on every request, and dispatches:

* `invoke` `adaptiveCard/action` (an Action.Execute click, or an automatic refresh) →
  `on_action(caller, verb, data)` returns the card that replaces the clicked one, sent back in
  the HTTP response as Teams expects (`{"statusCode":200,"type":"…card.adaptive","value":card}`);
* `installationUpdate` / `conversationUpdate` → `on_conversation(caller, activity)`, to keep the
  service URL and 1:1 conversation id for proactive messages;
* anything else → 200 with no body.

Replays: the Bot Connector's token names no activity (its claims bind only the service URL) and
the same token comes with every activity for its lifetime, so a captured token and body can be
posted again. The endpoint therefore remembers each card action's activity `id` (Teams gives every
invoke its own) until the token it came with expires, and answers a second activity with that id
as a duplicate click is answered: with the card as it stands (`on_action` with the verb
"refresh", which reads and never decides), without acting. The id alone is the key, whatever
the conversation or token: the body is the sender's to write, the id is what names one activity.
A Teams redelivery of a slow invoke (same id) is a duplicate too, and gets the same answer. An
action without an id is refused (400 in the invoke answer). The memory is this process's
(the worker keeps one endpoint per event loop), bounded by count, oldest first out; on another
instance a replayed decision meets the SharePoint item already decided (and its eTag).

Answers: 400 for a body that is not a JSON object, 401 `{"error":"Unauthorized"}` for any
authentication failure (the reason is logged, the token never is), 413 for an oversized body.
A failing `on_action` never escapes: Teams gets HTTP 200 with a generic error card whose
"Try again" button repeats the same verb and data (a 500 would show the user "something went
wrong" and leave nothing to click; the card keeps the decision one click away). A failing
`on_conversation` answers 500 `{"error":"internal"}`: no user sees it, and no traceback leaves
the process.

The Teams SDK (microsoft_teams.apps) is not in this path, by choice: its token validator fetches
the signing keys with blocking urllib calls on the event loop and checks neither the channel, the
tenant, a missing `exp`, nor `serviceurl` when the activity has none; and importing it costs about
a second of cold start. `FunctionsHttpAdapter` lets an SDK `App` be initialised inside the
Function all the same (`App(http_server_adapter=...)`, `await app.initialize()`, never
`app.start()`), for example to use `app.send`.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from graph.bot_auth import MAX_CLOCK_SKEW, ActivityAuthenticator, Caller
from graph.errors import BotAuthError

__all__ = [
    "ADAPTIVE_CARD_ACTION",
    "ActionHandler",
    "BotEndpoint",
    "ConversationHandler",
    "FunctionsHttpAdapter",
    "SeenActivities",
    "error_card",
]

log = logging.getLogger("dmarcbot.bot")

ADAPTIVE_CARD_ACTION = "adaptiveCard/action"
CARD_RESPONSE = "application/vnd.microsoft.card.adaptive"
ERROR_RESPONSE = "application/vnd.microsoft.error"
MAX_BODY = 1024 * 1024  # Teams activities are a few KB; the Bot Service caps far lower
CONVERSATION_EVENTS = frozenset({"installationUpdate", "conversationUpdate"})
REFRESH = "refresh"  # the verb of a card's refresh action: shows the card, decides nothing
TOKEN_LIFETIME = 3600  # seconds; how long an activity is remembered if its token's exp is unknown
MAX_REMEMBERED = 10_000  # activity ids; ~1 MB, far above an hour of clicks in one tenant

ActionHandler = Callable[[Caller, str, dict[str, Any]], Awaitable[Mapping[str, Any]]]
ConversationHandler = Callable[[Caller, dict[str, Any]], Awaitable[None]]
Answer = tuple[int, dict[str, Any] | None]

_UNSAFE = re.compile(r"[^A-Za-z0-9_./:-]")


class MemoryFull(Exception):
    """Every remembered activity is still within its token's lifetime: act on no new one."""


class SeenActivities:
    """Activity ids already acted on, each until the token it came with expires.

    Kept as SHA-256 digests, so an entry costs the same whatever the id's length. At most
    `limit` entries: a flood (it needs a valid token: only authenticated activities get here)
    is refused (MemoryFull) rather than growing the process or forgetting an id whose replay
    would then be acted on. `clock` returns Unix seconds.
    """

    def __init__(self, limit: int = MAX_REMEMBERED,
                 clock: Callable[[], float] = time.time) -> None:
        if limit < 1:
            raise ValueError("remember at least one activity")
        self.limit = limit
        self._clock = clock
        self._until: OrderedDict[bytes, float] = OrderedDict()  # digest -> forget after

    def __len__(self) -> int:
        return len(self._until)

    def first_time(self, activity_id: str, token_expires: float | None) -> bool:
        """Remember `activity_id`; False if it was already remembered and not yet forgotten."""
        now = self._clock()
        key = hashlib.sha256(activity_id.encode("utf-8", "surrogatepass")).digest()
        until = self._until.get(key)
        if until is not None and now <= until:
            return False
        self._until.pop(key, None)
        # oldest first: mostly also the first to expire (tokens live about as long)
        while self._until and now > next(iter(self._until.values())):
            self._until.popitem(last=False)
        if len(self._until) >= self.limit:
            # forgetting an unexpired id would let its replay through: refuse instead
            raise MemoryFull(f"{self.limit} card actions remembered, none expired yet")
        # the authenticator accepts a token until exp + skew: remember the activity as long
        expires = token_expires if token_expires is not None else now + TOKEN_LIFETIME
        self._until[key] = expires + MAX_CLOCK_SKEW
        return True


class BotEndpoint:
    """The messaging endpoint: authentication, then dispatch to the two callbacks."""

    def __init__(self, authenticator: ActivityAuthenticator, on_action: ActionHandler,
                 on_conversation: ConversationHandler | None = None, *,
                 max_body: int = MAX_BODY, seen: SeenActivities | None = None) -> None:
        self.authenticator = authenticator
        self.on_action = on_action
        self.on_conversation = on_conversation
        self.max_body = max_body
        self.seen = seen if seen is not None else SeenActivities()
        self.replays = 0  # card actions answered without acting, for logs and tests

    async def handle(self, body: bytes, headers: Mapping[str, str]) -> Answer:
        """(HTTP status, JSON body or None) for one POST to the messaging endpoint."""
        if len(body) > self.max_body:
            return 413, {"error": "TooLarge"}
        try:
            activity = json.loads(body)
        except (ValueError, RecursionError):
            return 400, {"error": "BadRequest"}
        if not isinstance(activity, dict):
            return 400, {"error": "BadRequest"}
        kind = _label(activity.get("type"))
        try:
            caller = await self.authenticator.authenticate(_header(headers, "Authorization"),
                                                           activity)
        except BotAuthError as exc:
            log.warning("bot activity refused (%s, type %s)", exc.reason, kind)
            return 401, {"error": "Unauthorized"}
        except Exception as exc:  # a bug or an I/O failure in validation: fail closed
            log.error("bot activity refused: validation failed with %s", type(exc).__name__)
            return 401, {"error": "Unauthorized"}

        if activity.get("type") == "invoke":
            if activity.get("name") == ADAPTIVE_CARD_ACTION:
                return 200, await self._action(caller, activity)
            return 200, None
        if activity.get("type") in CONVERSATION_EVENTS and self.on_conversation is not None:
            try:
                await _maybe_await(self.on_conversation(caller, activity))
            except Exception as exc:
                log.error("storing the conversation of a %s failed: %s", kind,
                          type(exc).__name__, exc_info=True)
                return 500, {"error": "internal"}
        return 200, None

    async def _action(self, caller: Caller, activity: dict[str, Any]) -> dict[str, Any]:
        value = activity.get("value")
        action = value.get("action") if isinstance(value, dict) else None
        if not isinstance(action, dict) or action.get("type", "Action.Execute") != \
                "Action.Execute":
            return _invoke_error(400, "BadRequest", "Not an Action.Execute.")
        verb = action.get("verb")
        data = action.get("data", {})
        if not isinstance(verb, str) or not verb or not isinstance(data, dict):
            return _invoke_error(400, "BadRequest", "The action has no verb or its data is not "
                                 "an object.")
        activity_id = activity.get("id")
        if not isinstance(activity_id, str) or not activity_id:
            return _invoke_error(400, "BadRequest", "The activity has no id.")
        acting = verb
        try:
            first = self.seen.first_time(activity_id, caller.token_expires)
        except MemoryFull:
            log.warning("bot activity memory full: card action refused for now")
            return _invoke_error(503, "ServiceUnavailable", "Too many card actions at once; "
                                 "try again in a minute.")
        if not first:
            self.replays += 1
            log.warning("bot activity replayed (replay, %d so far): answered without acting",
                        self.replays)
            acting = REFRESH  # the card as it stands, as a second click on it gets
        try:
            card = await _maybe_await(self.on_action(caller, acting, data))
            if not isinstance(card, Mapping):
                raise TypeError(f"on_action returned {type(card).__name__}, not a card")
        except Exception as exc:
            log.error("card action %s failed: %s", _label(verb), type(exc).__name__,
                      exc_info=True)
            card = error_card(verb, data)
        return {"statusCode": 200, "type": CARD_RESPONSE, "value": dict(card)}


def error_card(verb: str, data: Mapping[str, Any]) -> dict[str, Any]:
    """A generic "that failed" card whose button repeats the failed action."""
    return {
        "type": "AdaptiveCard",
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "version": "1.5",
        "body": [
            {"type": "TextBlock", "text": "Something went wrong", "weight": "Bolder",
             "size": "Medium", "wrap": True},
            {"type": "TextBlock", "wrap": True,
             "text": "Your answer may not have been recorded. Please try again in a moment."},
        ],
        "actions": [{"type": "Action.Execute", "title": "Try again", "verb": verb,
                     "data": dict(data)}],
    }


class FunctionsHttpAdapter:
    """microsoft_teams.apps `HttpServerAdapter` for a Function: routes are kept, not served.

    `App(http_server_adapter=FunctionsHttpAdapter(), ...)` then `await app.initialize()`
    registers the SDK's messaging route here; `dispatch()` calls it. There is no server to
    start: `start()` raises, so a stray `app.start()` fails loudly instead of binding a port.
    (Structural: the SDK's Protocol is runtime-checkable, so importing the SDK is not needed.)
    """

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Callable[[Any], Awaitable[Any]]] = {}

    def register_route(self, method: str, path: str,
                       handler: Callable[[Any], Awaitable[Any]]) -> None:
        self.routes[(method.upper(), path)] = handler

    def serve_static(self, path: str, directory: str) -> None:
        log.debug("static files are not served by the Function (%s)", path)

    async def start(self, port: int) -> None:
        raise NotImplementedError("hosted by Azure Functions: call app.initialize(), "
                                  "never app.start()")

    async def stop(self) -> None:
        return None

    async def dispatch(self, method: str, path: str, body: dict[str, Any],
                       headers: Mapping[str, str]) -> tuple[int, Any]:
        """Run the handler the SDK registered for (method, path): (status, body)."""
        handler = self.routes.get((method.upper(), path))
        if handler is None:
            return 404, {"error": "NotFound"}
        response = await handler({"body": body, "headers": dict(headers)})
        return int(response["status"]), response.get("body")


def _invoke_error(status: int, code: str, message: str) -> dict[str, Any]:
    """An Universal Actions error answer: Teams shows the message and keeps the card."""
    return {"statusCode": status, "type": ERROR_RESPONSE,
            "value": {"code": code, "message": message}}


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        value = next((v for k, v in headers.items() if k.lower() == lowered), None)
    return value


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _label(value: object) -> str:
    """An activity field fit for a log line: short, no control characters."""
    return _UNSAFE.sub("?", str(value))[:40]
