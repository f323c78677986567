"""The audit page's static markup: its type suggestions follow the contract's event
types, and it holds nothing the Content-Security-Policy would refuse."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

from domain.audit.types import EventType

PAGE = Path(__file__).resolve().parents[2] / "api" / "ui" / "html" / "audit.html"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.options: list[str] = []
        self.attrs: list[tuple[str, str, str | None]] = []
        self.inline_scripts = 0
        self.styles = 0
        self._script_src: list[bool] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.extend((tag, name, value) for name, value in attrs)
        values = dict(attrs)
        if tag == "option" and values.get("value"):
            self.options.append(str(values["value"]))
        if tag == "script":
            self._script_src.append("src" in values)
        if tag == "style":
            self.styles += 1

    def handle_data(self, data: str) -> None:
        if self._script_src and not self._script_src[-1] and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._script_src:
            self._script_src.pop()


def parsed() -> _Collect:
    collect = _Collect()
    collect.feed(PAGE.read_text())
    return collect


def test_every_event_type_and_each_prefix_is_suggested() -> None:
    options = set(parsed().options)
    types = {t.value for t in EventType}
    assert types <= options
    prefixes = {o for o in options if o.endswith(".*")}
    assert {t.split(".")[0] + ".*" for t in types} <= prefixes
    # Nothing suggested that no event type would match.
    assert all(any(t.startswith(p[:-1]) for t in types) for p in prefixes)
    assert options - types - prefixes <= {"25", "50", "100", "250"}


def test_no_inline_script_style_or_handler() -> None:
    page = parsed()
    assert page.inline_scripts == 0 and page.styles == 0
    assert not [a for a in page.attrs if a[1] == "style" or a[1].startswith("on")]


def test_every_control_has_a_label() -> None:
    text = PAGE.read_text()
    ids = re.findall(r'<(?:input|select)[^>]* id="([^"]+)"', text)
    labelled = set(re.findall(r'<label for="([^"]+)"', text))
    assert ids and set(ids) <= labelled
