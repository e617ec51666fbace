"""SharePoint lists on the fake Graph: sites, lists, columns and list items as Graph serves them.

Installed into a FakeGraph with ``graph.add_site(site_id)``; requests still go through the
fake's route table (taken from the SDK), fault injection, token check and request log. What real
SharePoint enforces is enforced here, so a client that works against this fake meets no surprise
on a real list:

* ``$filter``/``$orderby`` on ``fields/X`` needs column X indexed, unless the request carries
  ``Prefer: HonorNonIndexedQueriesWarningMayFailRandomly`` (such queries fail once a list passes
  5,000 items); multi-line text cannot be filtered on or indexed; 20 indexes per list at most;
* every item has an eTag ``"{guid},{version}"``; the version goes up with each change, and a
  ``PATCH …/items/{id}/fields`` whose ``If-Match`` is stale is 412 ``preconditionFailed``
  (``*`` matches anything; no ``If-Match`` at all is allowed, as SharePoint allows it);
* unknown and read-only field names, choice values outside the choices, over-long single-line
  text and a duplicate in a column with ``enforceUniqueValues`` are refused;
* list and column creation check the column definitions; a second list with the same title is
  409 ``nameAlreadyExists``; a list's ``name`` cannot be set (Graph assigns it).

Stricter than Graph on purpose: unknown names in ``fields($select=…)`` are a 400 (catches typos).
Field names are case-sensitive (SharePoint internal names); text comparisons in filters and
uniqueness ignore case, as SharePoint's do.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote, urlencode

from tests.fakes.odata import GraphError, bad_request, parse_expand
from tests.fakes.permissions import SITE_ROLES, Need, role_at_least
from tests.fakes.routes import Route
from tests.fakes.server import Request, Response

if TYPE_CHECKING:
    from tests.fakes.graph import FakeGraph

HONOR_NON_INDEXED = "HonorNonIndexedQueriesWarningMayFailRandomly"
ODATA_JSON = ("application/json;odata.metadata=minimal;odata.streaming=true;"
              "IEEE754Compatible=false;charset=utf-8")
TITLE_COLUMN_ID = "fa564e0f-0c70-4ab9-b863-0177e6ddd247"
MAX_INDEXES = 20  # SharePoint's limit per list
MAX_TEXT = 255  # single line of text
MAX_NOTE = 63999  # multiple lines of text
DEFAULT_PAGE = 200  # Graph's page of list items when no $top is given
MAX_TOP = 5000
ITEM_CONTENT_TYPE = {"id": "0x0100", "name": "Item"}
APP_USER = {"user": {"displayName": "SharePoint App"}}

COLUMN_TYPES = frozenset({
    "boolean", "calculated", "choice", "contentApprovalStatus", "currency", "dateTime",
    "geolocation", "hyperlinkOrPicture", "lookup", "number", "personOrGroup", "term", "text",
    "thumbnail"})
_COLUMN_PROPERTIES = frozenset({
    "name", "displayName", "description", "columnGroup", "enforceUniqueValues", "hidden",
    "indexed", "readOnly", "required", "defaultValue", "validation", "isDeletable",
    "isReorderable", "isSealed", "propagateChanges", "id"}) | COLUMN_TYPES
_COLUMN_PATCHABLE = frozenset({"displayName", "description", "enforceUniqueValues", "hidden",
                               "indexed", "required"})
_FACET_KEYS: dict[str, frozenset[str]] = {
    "text": frozenset({"allowMultipleLines", "appendChangesToExistingText", "linesForEditing",
                       "maxLength", "textType"}),
    "choice": frozenset({"allowTextEntry", "choices", "displayAs"}),
    "number": frozenset({"decimalPlaces", "displayAs", "maximum", "minimum"}),
    "dateTime": frozenset({"displayAs", "format"}),
    "boolean": frozenset(),
}
_LIST_PROPERTIES = frozenset({"displayName", "description", "list", "columns", "contentTypes"})
_LIST_SELECTABLE = ("id", "name", "displayName", "description", "createdDateTime",
                    "lastModifiedDateTime", "eTag", "webUrl", "list", "parentReference",
                    "columns", "createdBy", "lastModifiedBy")
_COLUMN_SELECTABLE = ("id", "name", "displayName", "description", "columnGroup",
                      "enforceUniqueValues", "hidden", "indexed", "readOnly", "required",
                      *sorted(COLUMN_TYPES))
_ITEM_SELECTABLE = ("id", "eTag", "createdDateTime", "lastModifiedDateTime", "webUrl",
                    "createdBy", "lastModifiedBy", "parentReference", "contentType", "fields")
# Fields SharePoint computes: shown in `fields`, never written by a client.
_COMPUTED_FIELDS = ("ContentType", "Modified", "Created", "AuthorLookupId", "EditorLookupId",
                    "_UIVersionString", "Attachments", "Edit", "LinkTitleNoMenu", "LinkTitle",
                    "ItemChildCount", "FolderChildCount", "AppAuthorLookupId",
                    "AppEditorLookupId")
_READ_ONLY_FIELDS = frozenset({"id", "ID", "Author", "Editor", "AppAuthor", "AppEditor",
                               *_COMPUTED_FIELDS})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _invalid(message: str) -> GraphError:
    return GraphError(400, "invalidRequest", message)


def _unknown_property(name: str, type_name: str) -> GraphError:
    return GraphError(400, "invalidRequest",
                      f"The property '{name}' does not exist on type 'microsoft.graph."
                      f"{type_name}'. Make sure to only use property names that are defined by "
                      "the type or mark the type as open type.")


def _not_found(what: str) -> GraphError:
    return GraphError(404, "itemNotFound", what)


# ----------------------------------------------------------------------------- model

@dataclass
class FakeColumn:
    """A column definition: its type is the one facet it carries (``text``, ``choice``, …)."""

    name: str
    kind: str
    facet: dict[str, Any]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    display_name: str = ""
    description: str = ""
    indexed: bool = False
    enforce_unique: bool = False
    required: bool = False
    hidden: bool = False
    read_only: bool = False
    group: str = "Custom Columns"

    @property
    def multiline(self) -> bool:
        return self.kind == "text" and bool(self.facet.get("allowMultipleLines"))

    def json(self) -> dict[str, Any]:
        return {"columnGroup": self.group, "description": self.description,
                "displayName": self.display_name or self.name,
                "enforceUniqueValues": self.enforce_unique, "hidden": self.hidden,
                "id": self.id, "indexed": self.indexed, "name": self.name,
                "readOnly": self.read_only, "required": self.required,
                self.kind: dict(self.facet)}


def _builtin_columns() -> list[FakeColumn]:
    """The columns every genericList starts with (the ones a client can meet in `columns`)."""
    text = {"allowMultipleLines": False, "appendChangesToExistingText": False,
            "linesForEditing": 0, "maxLength": MAX_TEXT}
    base = "Custom Columns"
    return [
        FakeColumn("Title", "text", dict(text), TITLE_COLUMN_ID, "Title", required=True,
                   group=base),
        FakeColumn("ID", "number", {}, display_name="ID", indexed=True, read_only=True,
                   group="_Hidden"),
        FakeColumn("ContentType", "text", {}, display_name="Content Type", read_only=True,
                   group="_Hidden"),
        FakeColumn("Modified", "dateTime", {"format": "dateTime"}, display_name="Modified",
                   read_only=True, group="_Hidden"),
        FakeColumn("Created", "dateTime", {"format": "dateTime"}, display_name="Created",
                   read_only=True, group="_Hidden"),
        FakeColumn("Author", "personOrGroup", {}, display_name="Created By", read_only=True,
                   group="_Hidden"),
        FakeColumn("Editor", "personOrGroup", {}, display_name="Modified By", read_only=True,
                   group="_Hidden"),
        FakeColumn("Attachments", "boolean", {}, display_name="Attachments", read_only=True,
                   group="_Hidden"),
    ]


@dataclass
class FakeItem:
    """A list item; ``fields`` holds the non-empty values by column name."""

    id: int
    fields: dict[str, Any]
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    version: int = 1
    created: datetime = field(default_factory=_now)
    modified: datetime = field(default_factory=_now)

    @property
    def etag(self) -> str:
        return f'"{self.guid},{self.version}"'


class FakeList:
    """A genericList: columns (built-in ones first) and items with SharePoint's rules."""

    def __init__(self, site: FakeSite, display_name: str, description: str = "") -> None:
        self.site = site
        self.id = str(uuid.uuid4())
        self.display_name = display_name
        self.name = re.sub(r"[^A-Za-z0-9]", "", display_name) or "List"
        self.description = description
        self.columns: list[FakeColumn] = _builtin_columns()
        self.items: dict[int, FakeItem] = {}
        self.grants: dict[str, str] = {}  # app id -> role (Lists.SelectedOperations.Selected)
        self.created = self.modified = _now()
        self._guid = str(uuid.uuid4())
        self._version = 1
        self._next_id = 1

    @property
    def etag(self) -> str:
        return f'"{self._guid},{self._version}"'

    def grant(self, app_id: str, role: str = "write") -> FakeList:
        """What `POST …/lists/{id}/permissions` records: the app may use this list only."""
        with self.site.lock:
            self.grants[app_id] = role
        return self

    @property
    def web_url(self) -> str:
        return f"{self.site.web_url}/Lists/{self.name}"

    def column(self, name: str) -> FakeColumn | None:
        """A column by its internal name (case-sensitive, as SharePoint's field names)."""
        return next((c for c in self.columns if c.name == name), None)

    def column_by_id(self, ref: str) -> FakeColumn | None:
        return next((c for c in self.columns if c.id == ref.lower() or c.name == ref), None)

    def _touch(self) -> None:
        self._version += 1
        self.modified = _now()

    # -- columns -----------------------------------------------------------------------------

    def add_column(self, definition: dict[str, Any]) -> FakeColumn:
        """Validate a columnDefinition as Graph does and add it."""
        column = _column_from(definition)
        if any(c.name.casefold() == column.name.casefold() for c in self.columns):
            raise GraphError(409, "nameAlreadyExists",
                             f'A duplicate field name "{column.name}" was found.')
        if column.indexed:
            self._check_index_room()
        self.columns.append(column)
        self._touch()
        return column

    def update_column(self, column: FakeColumn, patch: dict[str, Any]) -> FakeColumn:
        for key in patch:
            if key.startswith("@odata."):
                continue
            if key not in _COLUMN_PATCHABLE and key != column.kind:
                if key in _COLUMN_PROPERTIES:
                    raise _invalid(f"Cannot change '{key}' of column '{column.name}'.")
                raise _unknown_property(key, "columnDefinition")
        if column.read_only or (column.group == "_Hidden"):
            raise GraphError(403, "accessDenied", f"Column '{column.name}' cannot be changed.")
        indexed = _flag(patch, "indexed", column.indexed)
        unique = _flag(patch, "enforceUniqueValues", column.enforce_unique)
        facet = column.facet
        if column.kind in patch:
            facet = _facet(column.kind, patch[column.kind])
        _check_index_rules(column.name, column.kind, facet, indexed, unique)
        if indexed and not column.indexed:
            self._check_index_room()
        if unique and not column.enforce_unique:
            seen: set[str] = set()
            for item in self.items.values():
                value = item.fields.get(column.name)
                if value is None:
                    continue
                folded = str(value).casefold()
                if folded in seen:
                    raise _invalid(f"Column '{column.name}' has duplicate values and cannot "
                                   "enforce unique values.")
                seen.add(folded)
        column.facet = facet
        column.indexed, column.enforce_unique = indexed, unique
        for key, attr in (("displayName", "display_name"), ("description", "description")):
            if isinstance(patch.get(key), str):
                setattr(column, attr, patch[key])
        for key, attr in (("required", "required"), ("hidden", "hidden")):
            if key in patch:
                setattr(column, attr, _flag(patch, key, False))
        self._touch()
        return column

    def _check_index_room(self) -> None:
        if sum(1 for c in self.columns if c.indexed and c.name != "ID") >= MAX_INDEXES:
            raise _invalid(f"The list cannot have more than {MAX_INDEXES} indexed columns.")

    # -- items -------------------------------------------------------------------------------

    def item(self, ref: str | int) -> FakeItem | None:
        try:
            return self.items.get(int(ref))
        except ValueError:
            return None

    def add_item(self, fields: dict[str, Any]) -> FakeItem:
        """Create an item as `POST …/items` does (validation, unique columns)."""
        values = self._checked(fields, None)
        item = FakeItem(self._next_id, {k: v for k, v in values.items() if v is not None})
        self._next_id += 1
        self.items[item.id] = item
        return item

    def update_item(self, item: FakeItem, fields: dict[str, Any],
                    if_match: str | None = None) -> FakeItem:
        """Change an item as `PATCH …/fields` does, or as a person in the browser would."""
        if if_match is not None and if_match.strip() != "*" and if_match.strip() != item.etag:
            raise GraphError(412, "preconditionFailed",
                             f"The request ETag value '{if_match}' does not match the object's "
                             f"ETag value '{item.etag}'.")
        values = self._checked(fields, item)
        for name, value in values.items():
            if value is None:
                item.fields.pop(name, None)
            else:
                item.fields[name] = value
        item.version += 1
        item.modified = _now()
        return item

    def _checked(self, fields: dict[str, Any], item: FakeItem | None) -> dict[str, Any]:
        if not isinstance(fields, dict):
            raise _invalid("fields must be an object.")
        values: dict[str, Any] = {}
        for name, value in fields.items():
            if name.startswith("@odata."):
                continue
            if name in _READ_ONLY_FIELDS:
                raise _invalid(f"Field '{name}' is read-only")
            column = self.column(name)
            if column is None:
                raise _invalid(f"Field '{name}' is not recognized")
            if column.read_only:
                raise _invalid(f"Field '{name}' is read-only")
            values[name] = _value(column, value)
        for column in self.columns:
            if not column.enforce_unique or values.get(column.name) is None:
                continue
            folded = str(values[column.name]).casefold()
            for other in self.items.values():
                if other is not item and \
                        str(other.fields.get(column.name, "")).casefold() == folded:
                    raise GraphError(
                        409, "nameAlreadyExists",
                        "The list item could not be added or updated because duplicate values "
                        f"were found in the following field(s) in the list: [{column.name}].")
        return values

    # -- rendering ---------------------------------------------------------------------------

    def fields_json(self, item: FakeItem, select: list[str] | None) -> dict[str, Any]:
        title = item.fields.get("Title", "")
        computed: dict[str, Any] = {
            "id": str(item.id), "ContentType": "Item", "Modified": _iso(item.modified),
            "Created": _iso(item.created), "AuthorLookupId": "9", "EditorLookupId": "9",
            "_UIVersionString": f"{item.version}.0", "Attachments": False, "Edit": "",
            "LinkTitleNoMenu": title, "LinkTitle": title, "ItemChildCount": "0",
            "FolderChildCount": "0", "AppAuthorLookupId": "1", "AppEditorLookupId": "1"}
        out: dict[str, Any] = {"@odata.etag": item.etag}
        if select is None:
            out.update({k: v for k, v in item.fields.items()})
            out.update(computed)
            return out
        for name in select:
            if name in computed:
                out[name] = computed[name]
            elif item.fields.get(name) is not None:  # SharePoint leaves empty fields out
                out[name] = item.fields[name]
        return out

    def item_json(self, item: FakeItem, fields: list[str] | bool | None,
                  select: list[str] | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@odata.etag": item.etag, "createdDateTime": _iso(item.created),
            "eTag": item.etag, "id": str(item.id), "lastModifiedDateTime": _iso(item.modified),
            "webUrl": f"{self.web_url}/{item.id}_.000", "createdBy": APP_USER,
            "lastModifiedBy": APP_USER,
            "parentReference": {"id": self.id, "siteId": self.site.id},
            "contentType": dict(ITEM_CONTENT_TYPE)}
        if select is not None:
            out = {k: v for k, v in out.items() if k in select or k == "@odata.etag"}
        if fields is not False:
            out["fields"] = self.fields_json(item, None if fields is True else fields)
        return out

    def json(self, select: list[str] | None = None,
             columns: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@odata.etag": self.etag, "createdDateTime": _iso(self.created),
            "description": self.description, "eTag": self.etag, "id": self.id,
            "lastModifiedDateTime": _iso(self.modified), "name": self.name,
            "webUrl": self.web_url, "displayName": self.display_name,
            "createdBy": APP_USER, "lastModifiedBy": APP_USER,
            "parentReference": {"siteId": self.site.id},
            "list": {"contentTypesEnabled": False, "hidden": False, "template": "genericList"}}
        if select is not None:
            out = {k: v for k, v in out.items() if k in select or k == "@odata.etag"}
        if columns:
            out["columns"] = [c.json() for c in self.columns]
        return out


class FakeSite:
    """A SharePoint site (``host,site-collection-id,web-id``) holding lists."""

    def __init__(self, site_id: str, lock: threading.RLock) -> None:
        self.id = site_id
        self.lock = lock
        self.lists: dict[str, FakeList] = {}
        self.grants: dict[str, str] = {}  # app id -> role (Sites.Selected)
        host = site_id.split(",", 1)[0] if "," in site_id else "contoso.sharepoint.com"
        self.web_url = f"https://{host}/sites/dmarc"

    def grant(self, app_id: str, role: str = "fullcontrol") -> FakeSite:
        """What `POST /sites/{id}/permissions` records (for an app holding Sites.Selected)."""
        with self.lock:
            self.grants[app_id] = role
        return self

    def list(self, ref: str) -> FakeList | None:
        """A list by id or by title (Graph takes either in the URL)."""
        with self.lock:
            found = self.lists.get(ref.lower())
            if found is None:
                found = self.list_named(ref)
            return found

    def list_named(self, display_name: str) -> FakeList | None:
        with self.lock:
            return next((lst for lst in self.lists.values()
                         if lst.display_name.casefold() == display_name.casefold()), None)

    def add_list(self, display_name: str, columns: list[dict[str, Any]] = (),  # type: ignore[assignment]
                 description: str = "") -> FakeList:
        """Create a list as `POST /sites/{id}/lists` does: all columns valid, or nothing."""
        with self.lock:
            if not isinstance(display_name, str) or not display_name.strip():
                raise _invalid("displayName is required.")
            if self.list_named(display_name) is not None:
                raise GraphError(409, "nameAlreadyExists",
                                 "A list, survey, discussion board, or document library with "
                                 "the specified title already exists in this Web site.  Please "
                                 "choose another title.")
            created = FakeList(self, display_name, description)
            if not isinstance(columns, list | tuple):
                raise _invalid("columns must be an array.")
            for definition in columns:
                created.add_column(definition)
            self.lists[created.id] = created
            return created


# ----------------------------------------------------------------------------- validation

def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _invalid(f"'{key}' must be true or false.")
    return value


def _facet(kind: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _invalid(f"The '{kind}' facet must be an object.")
    known = _FACET_KEYS.get(kind)
    if known is not None:
        for key in raw:
            if key not in known and not key.startswith("@odata."):
                raise _unknown_property(key, f"{kind}Column")
    facet = {k: v for k, v in raw.items() if not k.startswith("@odata.")}
    if kind == "choice":
        choices = facet.get("choices")
        if not isinstance(choices, list) or not choices \
                or not all(isinstance(c, str) and c for c in choices):
            raise _invalid("A choice column needs a non-empty array of choices.")
        if facet.get("displayAs", "dropDownMenu") not in ("checkBoxes", "dropDownMenu",
                                                          "radioButtons"):
            raise _invalid(f"Invalid displayAs '{facet['displayAs']}' for a choice column.")
    elif kind == "text":
        if int(facet.get("maxLength", MAX_TEXT)) > MAX_TEXT:
            raise _invalid(f"maxLength cannot be over {MAX_TEXT}.")
        if facet.get("textType", "plain") not in ("plain", "richText"):
            raise _invalid(f"Invalid textType '{facet['textType']}'.")
    elif kind == "number":
        if facet.get("decimalPlaces", "automatic") not in (
                "automatic", "none", "one", "two", "three", "four", "five"):
            raise _invalid(f"Invalid decimalPlaces '{facet['decimalPlaces']}'.")
        if facet.get("displayAs", "number") not in ("number", "percentage"):
            raise _invalid(f"Invalid displayAs '{facet['displayAs']}' for a number column.")
    elif kind == "dateTime" and facet.get("format", "dateTime") not in ("dateOnly", "dateTime"):
        raise _invalid(f"Invalid format '{facet['format']}' for a dateTime column.")
    return facet


def _check_index_rules(name: str, kind: str, facet: dict[str, Any], indexed: bool,
                       unique: bool) -> None:
    multiline = kind == "text" and bool(facet.get("allowMultipleLines"))
    if indexed and (multiline or (kind in ("calculated", "personOrGroup") and
                    facet.get("allowMultipleSelection"))):
        raise _invalid(f"Column '{name}' cannot be indexed: its type does not support indexes.")
    if unique and not indexed:
        raise _invalid(f"Column '{name}' must be indexed to enforce unique values.")
    if unique and multiline:
        raise _invalid(f"Column '{name}' cannot enforce unique values.")


def _column_from(definition: Any) -> FakeColumn:
    if not isinstance(definition, dict):
        raise _invalid("A column definition must be an object.")
    for key in definition:
        if key.startswith("@odata."):
            continue
        if key not in _COLUMN_PROPERTIES:
            raise _unknown_property(key, "columnDefinition")
    name = definition.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _invalid(f"Invalid column name {name!r}.")
    kinds = [k for k in definition if k in COLUMN_TYPES]
    if len(kinds) != 1:
        raise _invalid(f"Column '{name}' must have exactly one column type facet, "
                       f"found {kinds or 'none'}.")
    kind = kinds[0]
    if kind not in _FACET_KEYS:
        raise _invalid(f"FakeGraph does not support '{kind}' columns.")
    facet = _facet(kind, definition[kind])
    indexed = _flag(definition, "indexed", False)
    unique = _flag(definition, "enforceUniqueValues", False)
    _check_index_rules(name, kind, facet, indexed, unique)
    display = definition.get("displayName") or name
    return FakeColumn(name, kind, facet, display_name=str(display),
                      description=str(definition.get("description") or ""), indexed=indexed,
                      enforce_unique=unique, required=_flag(definition, "required", False),
                      hidden=_flag(definition, "hidden", False))


def _datetime_value(name: str, value: Any) -> str:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            try:
                parsed = datetime.combine(date.fromisoformat(value), datetime.min.time())
            except ValueError:
                raise _invalid(f"Invalid date/time value for field '{name}': '{value}'") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        return _iso(parsed)  # SharePoint keeps whole seconds, in UTC
    raise _invalid(f"Invalid date/time value for field '{name}'.")


def _value(column: FakeColumn, value: Any) -> Any:
    """The value SharePoint stores for a write, or a 400 like SharePoint's."""
    name = column.name
    if value is None or (value == "" and column.kind in ("text", "choice", "dateTime")):
        return None
    if column.kind == "text":
        if not isinstance(value, str):
            raise _invalid(f"Invalid value for text field '{name}'.")
        limit = MAX_NOTE if column.multiline else int(column.facet.get("maxLength", MAX_TEXT))
        if len(value) > limit:
            raise _invalid(f"The value of field '{name}' is over {limit} characters.")
        return value
    if column.kind == "choice":
        if not isinstance(value, str) or (value not in column.facet.get("choices", ())
                                          and not column.facet.get("allowTextEntry")):
            raise _invalid(f"Invalid choice value '{value}' for field '{name}'.")
        return value
    if column.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _invalid(f"Invalid number value for field '{name}'.")
        return value
    if column.kind == "dateTime":
        return _datetime_value(name, value)
    if column.kind == "boolean":
        if not isinstance(value, bool):
            raise _invalid(f"Invalid boolean value for field '{name}'.")
        return value
    raise _invalid(f"FakeGraph cannot write '{column.kind}' field '{name}'.")


# ----------------------------------------------------------------------------- $filter

_CLAUSE = re.compile(
    r"\s*(?P<lhs>[\w/]+)\s+(?P<op>eq|ne|ge|gt|le|lt)\s+"
    r"(?P<rhs>'(?:[^']|'')*'|[^\s')]+)\s*", re.I)
_AND = re.compile(r"and\s+", re.I)
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b,
    "ge": lambda a, b: a is not None and b is not None and a >= b,
    "gt": lambda a, b: a is not None and b is not None and a > b,
    "le": lambda a, b: a is not None and b is not None and a <= b,
    "lt": lambda a, b: a is not None and b is not None and a < b,
}


@dataclass(frozen=True)
class _Clause:
    prop: str
    op: str
    literal: Any


def _literal(text: str) -> Any:
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "null":
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _datetime_value("", text)
    except GraphError:
        raise bad_request(f"Syntax error at '{text}' in $filter.") from None


def _parse_filter(text: str) -> list[_Clause]:
    clauses, pos = [], 0
    while True:
        match = _CLAUSE.match(text, pos)
        if match is None:
            raise bad_request(f"Syntax error: invalid $filter at position {pos} in '{text}'.")
        clauses.append(_Clause(match["lhs"], match["op"].lower(), _literal(match["rhs"])))
        pos = match.end()
        if pos >= len(text):
            return clauses
        joined = _AND.match(text, pos)
        if joined is None:
            raise bad_request(f"Syntax error at position {pos} in '{text}' (FakeGraph supports "
                              "clauses joined with 'and').")
        pos = joined.end()


def _comparable(column: FakeColumn | None, value: Any) -> Any:
    if isinstance(value, str) and (column is None or column.kind in ("text", "choice")):
        return value.casefold()
    if column is not None and column.kind == "number" and isinstance(value, int | float):
        return float(value)
    return value


# ----------------------------------------------------------------------------- HTTP

@dataclass
class _Call:
    request: Request
    route: Route
    query: dict[str, str]
    pairs: list[tuple[str, str]]

    def json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self.request.body or b"null")
        except ValueError as exc:
            raise _invalid("Unable to read JSON request payload. Please ensure Content-Type "
                           "header is set and payload is of valid JSON format.") from exc
        if not isinstance(data, dict):
            raise _invalid("Empty Payload. JSON content expected.")
        return data

    def prefers(self, token: str) -> bool:
        prefer = ", ".join(self.request.headers.get_all("Prefer") or [])
        return token.lower() in prefer.lower()


def _json(status: int, payload: Any, extra: dict[str, str] | None = None) -> Response:
    return Response(status, json.dumps(payload).encode(),
                    {"Content-Type": ODATA_JSON, "OData-Version": "4.0", **(extra or {})})


def _select(value: str | None, known: tuple[str, ...], type_name: str) -> list[str] | None:
    if value is None:
        return None
    names = []
    for raw in value.split(","):
        name = raw.strip()
        if not name:
            continue
        canonical = next((k for k in known if k.lower() == name.lower()), None)
        if canonical is None:
            raise bad_request(f"Could not find a property named '{name}' on type "
                              f"'microsoft.graph.{type_name}'.")
        names.append(canonical)
    return names


def _encode_token(position: str) -> str:
    return base64.b64encode(f"Paged=TRUE&{position}".encode()).decode().rstrip("=")


def _decode_token(token: str) -> tuple[str, int]:
    try:
        text = base64.b64decode(token + "=" * (-len(token) % 4)).decode()
        key, _, value = text.split("&", 1)[1].partition("=")
        return key, int(value)
    except (ValueError, IndexError, UnicodeDecodeError):
        raise bad_request(f"Invalid $skiptoken '{token}'.") from None


class FakeSharePoint:
    """The SharePoint part of one FakeGraph: its sites and the handlers serving them."""

    _of: ClassVar[weakref.WeakKeyDictionary[FakeGraph, FakeSharePoint]] = (
        weakref.WeakKeyDictionary())

    def __init__(self, graph: FakeGraph, lock: threading.RLock) -> None:
        self._graph = weakref.ref(graph)  # the graph holds us (our handlers), not the reverse
        self.lock = lock
        self.sites: dict[str, FakeSite] = {}
        self.non_indexed_queries: list[str] = []  # filters served only thanks to Prefer
        sites, lst = "/sites/{site-id}", "/sites/{site-id}/lists/{list-id}"
        routes: dict[tuple[str, str], Callable[[_Call], Response]] = {
            ("GET", sites): self._get_site,
            ("GET", f"{sites}/lists"): self._list_lists,
            ("POST", f"{sites}/lists"): self._create_list,
            ("GET", lst): self._get_list,
            ("GET", f"{lst}/columns"): self._list_columns,
            ("POST", f"{lst}/columns"): self._create_column,
            ("GET", f"{lst}/columns/{{columnDefinition-id}}"): self._get_column,
            ("PATCH", f"{lst}/columns/{{columnDefinition-id}}"): self._patch_column,
            ("GET", f"{lst}/items"): self._list_items,
            ("POST", f"{lst}/items"): self._create_item,
            ("GET", f"{lst}/items/{{listItem-id}}"): self._get_item,
            ("GET", f"{lst}/items/{{listItem-id}}/fields"): self._get_fields,
            ("PATCH", f"{lst}/items/{{listItem-id}}/fields"): self._patch_fields,
            ("GET", f"{sites}/permissions"): self._list_permissions,
            ("POST", f"{sites}/permissions"): self._create_permission,
            ("GET", f"{lst}/permissions"): self._list_permissions,
            ("POST", f"{lst}/permissions"): self._create_permission,
            ("PATCH", f"{lst}/permissions/{{permission-id}}"): self._update_permission,
        }
        graph.add_handlers({key: self._wrap(handler) for key, handler in routes.items()})

    @classmethod
    def of(cls, graph: FakeGraph, lock: threading.RLock) -> FakeSharePoint:
        with lock:
            found = cls._of.get(graph)
            if found is None:
                found = cls._of[graph] = cls(graph, lock)
            return found

    def add_site(self, site_id: str) -> FakeSite:
        with self.lock:
            if site_id.lower() in self.sites:
                raise ValueError(f"site {site_id} exists")
            site = self.sites[site_id.lower()] = FakeSite(site_id, self.lock)
            return site

    def allows(self, route: Route, app_id: str, roles: frozenset[str], need: Need) -> bool:
        """Whether a selected-permission grant covers the call (the tenant-wide roles were
        checked by the caller). An unknown site or list is let through to answer 404."""
        with self.lock:
            site = self.sites.get(route.params.get("site-id", "").lower())
            if site is None:
                return True
            if "Sites.Selected" in roles and need.site_role is not None \
                    and role_at_least(site.grants.get(app_id), need.site_role):
                return True
            if need.list_role is None or "Lists.SelectedOperations.Selected" not in roles:
                return False
            found = site.list(route.params.get("list-id", ""))
            return found is None or role_at_least(found.grants.get(app_id), need.list_role)

    def _grants_of(self, call: _Call) -> dict[str, str]:
        if "list-id" in call.route.params:
            return self._list(call).grants
        return self._site(call).grants

    @staticmethod
    def _permission_json(app_id: str, role: str) -> dict[str, Any]:
        identity = {"application": {"id": app_id, "displayName": "app"}}
        return {"id": base64.b64encode(f"app#{app_id}".encode()).decode(), "roles": [role],
                "grantedToIdentitiesV2": [identity], "grantedToIdentities": [identity]}

    def _list_permissions(self, call: _Call) -> Response:
        grants = self._grants_of(call)
        return _json(200, {"value": [self._permission_json(app, role)
                                     for app, role in sorted(grants.items())]})

    def _update_permission(self, call: _Call) -> Response:
        """`PATCH …/permissions/{id}`: only `roles` may change."""
        grants = self._grants_of(call)
        try:
            app_id = base64.b64decode(call.route.params["permission-id"]).decode()
        except ValueError:
            raise _not_found("Permission not found") from None
        app_id = app_id.removeprefix("app#")
        if app_id not in grants:
            raise _not_found("Permission not found")
        body = call.json_body()
        roles = body.get("roles")
        if set(body) != {"roles"} or not isinstance(roles, list) or len(roles) != 1 \
                or roles[0] not in SITE_ROLES:
            raise _invalid("Only roles, one of read, write, manage, fullcontrol, can change.")
        grants[app_id] = roles[0]
        return _json(200, self._permission_json(app_id, roles[0]))

    def _create_permission(self, call: _Call) -> Response:
        """`POST …/permissions` for an application (selected permissions): one role, one app,
        in `grantedToIdentities`, `grantedTo` or `grantedToV2` as the reference pages show."""
        body = call.json_body()
        roles = body.get("roles")
        if not isinstance(roles, list) or len(roles) != 1 or roles[0] not in SITE_ROLES:
            raise _invalid("roles must hold one of read, write, manage, fullcontrol.")
        identities = body.get("grantedToIdentities") or body.get("grantedToIdentitiesV2")
        if identities is None:
            single = body.get("grantedTo") or body.get("grantedToV2")
            identities = [single] if single is not None else None
        app = (identities[0] or {}).get("application") if isinstance(identities, list) \
            and len(identities) == 1 and isinstance(identities[0], dict) else None
        app_id = app.get("id") if isinstance(app, dict) else None
        if not isinstance(app_id, str) or not app_id:
            raise _invalid("An application id is required in grantedToIdentities.")
        self._grants_of(call)[app_id] = roles[0]
        return _json(201, self._permission_json(app_id, roles[0]))

    # -- plumbing ----------------------------------------------------------------------------

    @staticmethod
    def _wrap(handler: Callable[[_Call], Response]) -> Callable[[Request, Route], Response]:
        def serve(request: Request, route: Route) -> Response:
            pairs = request.query
            return handler(_Call(request, route, {k.lower(): v for k, v in pairs}, pairs))
        return serve

    def _site(self, call: _Call) -> FakeSite:
        ref = call.route.params["site-id"]
        site = self.sites.get(ref.lower())
        if site is None:
            raise _not_found("Requested site could not be found")
        return site

    def _list(self, call: _Call) -> FakeList:
        found = self._site(call).list(call.route.params["list-id"])
        if found is None:
            raise _not_found("List not found")
        return found

    def _item(self, call: _Call, lst: FakeList) -> FakeItem:
        found = lst.item(call.route.params["listItem-id"])
        if found is None:
            raise _not_found("Item not found")
        return found

    def _page(self, call: _Call, rows: list[Any], render: Callable[[Any], dict[str, Any]],
              keyset: Callable[[Any], int] | None, default: int | None) -> Response:
        """One page with an absolute nextLink; SharePoint's skiptoken is `Paged=TRUE&p_ID=n`
        (the last id served), so changes between pages shift nothing."""
        top = default
        if "$top" in call.query:
            try:
                top = int(call.query["$top"])
            except ValueError:
                raise bad_request(f"Invalid $top value '{call.query['$top']}'.") from None
            if not 1 <= top <= MAX_TOP:
                raise bad_request(f"Invalid $top value '{top}'.")
        start = 0
        if "$skiptoken" in call.query:
            key, number = _decode_token(call.query["$skiptoken"])
            if key == "p_ID" and keyset is not None:
                start = next((i for i, r in enumerate(rows) if keyset(r) > number), len(rows))
            else:
                start = number
        size = top if top is not None else len(rows) or 1
        chunk = rows[start:start + size]
        body: dict[str, Any] = {"value": [render(r) for r in chunk]}
        if start + size < len(rows):
            token = (f"p_ID={keyset(chunk[-1])}" if keyset is not None
                     else f"p_Offset={start + size}")
            kept = [(k, v) for k, v in call.pairs if k.lower() != "$skiptoken"]
            kept.append(("$skiptoken", _encode_token(token)))
            graph = self._graph()
            assert graph is not None
            origin = graph.base_url[:-len("/v1.0")]
            query = urlencode(kept, quote_via=quote, safe="$,()':/")
            body["@odata.nextLink"] = f"{origin}{call.request.raw_path}?{query}"
        return _json(200, body)

    # -- sites and lists ---------------------------------------------------------------------

    def _get_site(self, call: _Call) -> Response:
        site = self._site(call)
        return _json(200, {"id": site.id, "name": "dmarc", "displayName": "DMARC",
                           "webUrl": site.web_url})

    def _list_lists(self, call: _Call) -> Response:
        site = self._site(call)
        select = _select(call.query.get("$select"), _LIST_SELECTABLE, "list")
        rows = list(site.lists.values())
        if call.query.get("$filter"):
            for clause in _parse_filter(call.query["$filter"]):
                if clause.prop not in ("displayName", "name", "id") or clause.op != "eq":
                    raise bad_request(f"FakeGraph filters lists on displayName/name/id eq only, "
                                      f"not '{clause.prop} {clause.op}'.")
                wanted = str(clause.literal).casefold()
                attr = {"displayName": "display_name"}.get(clause.prop, clause.prop)
                rows = [r for r in rows if str(getattr(r, attr)).casefold() == wanted]
        columns = self._expand_columns(call)
        return self._page(call, rows, lambda r: r.json(select, columns), None, None)

    def _expand_columns(self, call: _Call) -> bool:
        expanded = False
        for item in parse_expand(call.query.get("$expand")):
            if item.prop != "columns" or item.select is not None:
                raise bad_request(f"FakeGraph expands only 'columns' on a list, not "
                                  f"'{item.prop}'.")
            expanded = True
        return expanded

    def _create_list(self, call: _Call) -> Response:
        site = self._site(call)
        body = call.json_body()
        if "name" in body:
            raise _invalid("Cannot define a 'name' for a list as it is assigned by the server. "
                           "Instead, provide 'displayName'")
        for key in body:
            if key not in _LIST_PROPERTIES and not key.startswith("@odata."):
                raise _unknown_property(key, "list")
        info = body.get("list") or {}
        if not isinstance(info, dict) or info.get("template", "genericList") != "genericList":
            raise _invalid("FakeGraph creates genericList lists only.")
        created = site.add_list(body.get("displayName"), body.get("columns") or [],
                                str(body.get("description") or ""))
        return _json(201, created.json())

    def _get_list(self, call: _Call) -> Response:
        select = _select(call.query.get("$select"), _LIST_SELECTABLE, "list")
        return _json(200, self._list(call).json(select, self._expand_columns(call)))

    # -- columns -----------------------------------------------------------------------------

    def _list_columns(self, call: _Call) -> Response:
        lst = self._list(call)
        select = _select(call.query.get("$select"), _COLUMN_SELECTABLE, "columnDefinition")
        for option in ("$filter", "$orderby", "$expand", "$search"):
            if option in call.query:
                raise bad_request(f"FakeGraph does not support {option} on columns.")

        def render(column: FakeColumn) -> dict[str, Any]:
            out = column.json()
            return out if select is None else {k: v for k, v in out.items() if k in select}

        return self._page(call, list(lst.columns), render, None, None)

    def _create_column(self, call: _Call) -> Response:
        return _json(201, self._list(call).add_column(call.json_body()).json())

    def _column(self, call: _Call) -> tuple[FakeList, FakeColumn]:
        lst = self._list(call)
        column = lst.column_by_id(call.route.params["columnDefinition-id"])
        if column is None:
            raise _not_found("Column not found")
        return lst, column

    def _get_column(self, call: _Call) -> Response:
        return _json(200, self._column(call)[1].json())

    def _patch_column(self, call: _Call) -> Response:
        lst, column = self._column(call)
        return _json(200, lst.update_column(column, call.json_body()).json())

    # -- items -------------------------------------------------------------------------------

    def _fields_expand(self, call: _Call, lst: FakeList) -> list[str] | bool:
        """False: no `fields`; True: all of them; a list: the $select inside the expand."""
        expanded: list[str] | bool = False
        for item in parse_expand(call.query.get("$expand")):
            if item.prop != "fields":
                raise bad_request(f"Could not find a property named '{item.prop}' on type "
                                  "'microsoft.graph.listItem'.")
            expanded = True if item.select is None else self._field_names(lst, item.select)
        return expanded

    @staticmethod
    def _field_names(lst: FakeList, select: str) -> list[str]:
        names = []
        for raw in select.split(","):
            name = raw.strip()
            if not name:
                continue
            if lst.column(name) is None and name not in _READ_ONLY_FIELDS:
                raise _invalid(f"Column '{name}' does not exist. It may have been deleted by "
                               "another user.")
            names.append(name)
        return names

    def _filter_column(self, call: _Call, lst: FakeList, prop: str, use: str) -> FakeColumn:
        if prop == "id":
            column = lst.column("ID")
            assert column is not None
            return column
        if not prop.startswith("fields/"):
            raise bad_request(f"FakeGraph {use}s list items on fields/<column> or id, not "
                              f"'{prop}'.")
        name = prop[len("fields/"):]
        column = lst.column(name)
        if column is None:
            raise _invalid(f"Column '{name}' does not exist. It may have been deleted by "
                           "another user.")
        if column.multiline:
            raise _invalid(f"The field '{name}' of type 'Note' cannot be used in the query "
                           f"{use} expression.")
        if not column.indexed:
            if not call.prefers(HONOR_NON_INDEXED):
                raise _invalid(f"Field '{name}' cannot be referenced in filter or orderby as it "
                               "is not indexed. Provide the 'Prefer: "
                               "HonorNonIndexedQueriesWarningMayFailRandomly' header to allow "
                               "this, but be warned that such queries may fail on large lists.")
            self.non_indexed_queries.append(name)
        return column

    @staticmethod
    def _field_value(item: FakeItem, column: FakeColumn) -> Any:
        return item.id if column.name == "ID" else item.fields.get(column.name)

    def _list_items(self, call: _Call) -> Response:
        lst = self._list(call)
        fields = self._fields_expand(call, lst)
        select = _select(call.query.get("$select"), _ITEM_SELECTABLE, "listItem")
        if "$search" in call.query:
            raise bad_request("FakeGraph does not support $search on list items.")
        rows = sorted(lst.items.values(), key=lambda i: i.id)
        for clause in _parse_filter(call.query["$filter"]) if call.query.get("$filter") else ():
            column = self._filter_column(call, lst, clause.prop, "filter")
            wanted = _comparable(column, clause.literal)
            compare = _COMPARE[clause.op]
            rows = [r for r in rows
                    if compare(_comparable(column, self._field_value(r, column)), wanted)]
        keyset: Callable[[FakeItem], int] | None = lambda i: i.id  # noqa: E731
        if call.query.get("$orderby"):
            keyset = None
            for part in reversed(call.query["$orderby"].split(",")):
                prop, _, direction = part.strip().partition(" ")
                column = self._filter_column(call, lst, prop, "orderby")
                rows.sort(key=lambda r, c=column: (self._field_value(r, c) is None,
                                                   _comparable(c, self._field_value(r, c))),
                          reverse=direction.strip().lower() == "desc")
        return self._page(call, rows, lambda r: lst.item_json(r, fields, select), keyset,
                          DEFAULT_PAGE)

    def _create_item(self, call: _Call) -> Response:
        lst = self._list(call)
        body = call.json_body()
        for key in body:
            if key != "fields" and not key.startswith("@odata."):
                raise _unknown_property(key, "listItem")
        item = lst.add_item(body.get("fields") or {})
        return _json(201, lst.item_json(item, True))

    def _get_item(self, call: _Call) -> Response:
        lst = self._list(call)
        select = _select(call.query.get("$select"), _ITEM_SELECTABLE, "listItem")
        item = self._item(call, lst)
        return _json(200, lst.item_json(item, self._fields_expand(call, lst), select),
                     {"ETag": item.etag})

    def _get_fields(self, call: _Call) -> Response:
        lst = self._list(call)
        item = self._item(call, lst)
        select = call.query.get("$select")
        names = self._field_names(lst, select) if select else None
        return _json(200, lst.fields_json(item, names))

    def _patch_fields(self, call: _Call) -> Response:
        lst = self._list(call)
        item = self._item(call, lst)
        if_match = call.request.headers.get("If-Match")
        lst.update_item(item, call.json_body(), if_match)
        return _json(200, lst.fields_json(item, None), {"ETag": item.etag})
