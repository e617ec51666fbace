"""Adaptive Cards as static HTML, for the local outbox: readable in any browser, offline.

Teams renders the real cards; this is a faithful-enough preview of the elements dmarcbot's cards
use (text, fact sets, columns, containers, inputs and actions). Everything from a card is
escaped: card text comes partly from reports, which anyone can send.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Mapping
from typing import Any

_BOLD = re.compile(r"\*\*(.+?)\*\*")

PAGE_STYLE = """
body { font-family: "Segoe UI", system-ui, sans-serif; background: #f3f2f1; margin: 2rem; }
h1 { font-size: 1.3rem; font-weight: 600; }
.card { background: #fff; border-radius: 6px; box-shadow: 0 1px 3px #0002; padding: 1rem 1.25rem;
        margin: 0 0 1.5rem; max-width: 34rem; }
.meta { color: #605e5c; font-size: .8rem; margin: 0 0 .4rem; }
.tb { margin: .25rem 0; line-height: 1.35; }
.large { font-size: 1.15rem; } .extraLarge { font-size: 1.35rem; } .small { font-size: .8rem; }
.bolder { font-weight: 600; } .subtle { color: #605e5c; }
.attention { color: #a4262c; } .good { color: #107c10; } .warning { color: #8a6d00; }
.accent { color: #0f6cbd; }
table.facts { border-collapse: collapse; margin: .4rem 0; }
table.facts td { padding: .1rem .8rem .1rem 0; vertical-align: top; }
table.facts td:first-child { font-weight: 600; white-space: nowrap; }
table.grid { border-collapse: collapse; margin: .4rem 0; width: 100%; }
table.grid th, table.grid td { border-bottom: 1px solid #edebe9; padding: .15rem .4rem;
                               text-align: left; vertical-align: top; }
table.grid th .tb { font-weight: 600; }
.columns { display: flex; gap: .75rem; } .columns > div { flex: 1; }
.container { margin: .4rem 0; } .emphasis { background: #f5f5f5; padding: .4rem .6rem; }
.actions { margin-top: .75rem; display: flex; gap: .5rem; flex-wrap: wrap; }
.actions button { border: 1px solid #8a8886; background: #fff; border-radius: 4px;
                  padding: .3rem .9rem; font: inherit; }
.actions button.positive { background: #0f6cbd; color: #fff; border-color: #0f6cbd; }
.actions button.destructive { color: #a4262c; border-color: #a4262c; }
input { font: inherit; padding: .25rem; width: 100%; box-sizing: border-box; }
"""


def page(title: str, cards: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """One HTML page showing `(caption, card)` pairs, in order."""
    parts = [f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
             f"<title>{_e(title)}</title><style>{PAGE_STYLE}</style></head><body>"
             f"<h1>{_e(title)}</h1>"]
    for caption, card in cards:
        parts.append(f'<p class="meta">{_e(caption)}</p><div class="card">{render(card)}</div>')
    parts.append("</body></html>\n")
    return "".join(parts)


def render(card: Mapping[str, Any]) -> str:
    """The body and actions of one card as HTML (buttons are shown, not wired)."""
    body = "".join(_element(e) for e in card.get("body") or ())
    return body + _actions(card.get("actions") or ())


def _element(element: Mapping[str, Any]) -> str:
    kind = element.get("type")
    if element.get("isVisible") is False:
        return ""
    if kind == "TextBlock":
        classes = ["tb", str(element.get("size") or ""), str(element.get("weight") or ""),
                   str(element.get("color") or "")]
        if element.get("isSubtle"):
            classes.append("subtle")
        return f'<div class="{_e(" ".join(filter(None, classes)))}">{_text(element)}</div>'
    if kind == "RichTextBlock":
        runs = "".join(_e(str(r.get("text", ""))) if isinstance(r, Mapping) else _e(str(r))
                       for r in element.get("inlines") or ())
        return f'<div class="tb">{runs}</div>'
    if kind == "FactSet":
        rows = "".join(f"<tr><td>{_e(str(f.get('title', '')))}</td>"
                       f"<td>{_e(str(f.get('value', '')))}</td></tr>"
                       for f in element.get("facts") or ())
        return f'<table class="facts">{rows}</table>'
    if kind == "Table":
        trs: list[str] = []
        for n, row in enumerate(element.get("rows") or ()):
            tag = "th" if n == 0 and element.get("firstRowAsHeader", True) else "td"
            cells = "".join(
                f"<{tag}>" + "".join(_element(e) for e in cell.get("items") or ()) + f"</{tag}>"
                for cell in row.get("cells") or ())
            trs.append(f"<tr>{cells}</tr>")
        return f'<table class="grid">{"".join(trs)}</table>'
    if kind == "ColumnSet":
        columns = "".join(
            "<div>" + "".join(_element(e) for e in c.get("items") or ()) + "</div>"
            for c in element.get("columns") or ())
        return f'<div class="columns">{columns}</div>'
    if kind == "Container":
        style = " emphasis" if element.get("style") in ("emphasis", "accent") else ""
        inner = "".join(_element(e) for e in element.get("items") or ())
        return f'<div class="container{style}">{inner}</div>'
    if kind == "ActionSet":
        return _actions(element.get("actions") or ())
    if kind and str(kind).startswith("Input."):
        label = element.get("label") or element.get("placeholder") or ""
        return (f'<label class="tb">{_e(str(label))}<input disabled '
                f'placeholder="{_e(str(element.get("placeholder", "")))}"></label>')
    return ""  # elements dmarcbot does not use are left out of the preview


def _actions(actions: Iterable[Mapping[str, Any]]) -> str:
    buttons = []
    for action in actions:
        style = action.get("style") or ""
        buttons.append(f'<button disabled class="{_e(str(style))}">'
                       f'{_e(str(action.get("title", "")))}</button>')
        if action.get("type") == "Action.ShowCard" and isinstance(action.get("card"), Mapping):
            buttons.append(f'<div class="container emphasis">{render(action["card"])}</div>')
    return f'<div class="actions">{"".join(buttons)}</div>' if buttons else ""


def _text(element: Mapping[str, Any]) -> str:
    """TextBlock text: escaped, then only the **bold** of Adaptive Cards' markdown kept."""
    return _BOLD.sub(r"<b>\1</b>", _e(str(element.get("text", "")))).replace("\n", "<br>")


def _e(text: str) -> str:
    return html.escape(text, quote=True)
