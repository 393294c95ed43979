"""A page's HTML as a tree, to assert on its structure (which form sits inside which panel)
rather than on substrings. The standard library's parser; no third-party package needed."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


@dataclass
class Node:
    tag: str
    attrs: dict[str, str]
    parent: Node | None = None
    children: list[Node | str] = field(default_factory=list)

    @property
    def elements(self) -> list[Node]:
        return [c for c in self.children if isinstance(c, Node)]

    @property
    def text(self) -> str:
        return " ".join(" ".join((c if isinstance(c, str) else c.text).split()) for c in self.children if c).strip()

    def ancestors(self) -> list[Node]:
        out, node = [], self.parent
        while node is not None:
            out.append(node)
            node = node.parent
        return out

    def closest(self, tag: str) -> Node | None:
        return next((a for a in self.ancestors() if a.tag == tag), None)

    def find_all(self, tag: str, **attrs: str) -> list[Node]:
        found = []
        for child in self.elements:
            if child.tag == tag and all(child.attrs.get(k.rstrip("_")) == v for k, v in attrs.items()):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {})
        self.current = self.root

    def handle_starttag(self, tag, attrs):
        node = Node(tag, {k: v or "" for k, v in attrs}, parent=self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag, attrs):
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, parent=self.current))

    def handle_endtag(self, tag):
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data):
        self.current.children.append(data)


def parse(html: str | bytes) -> Node:
    builder = _Builder()
    builder.feed(html.decode() if isinstance(html, bytes) else html)
    builder.close()
    return builder.root


def confirm_step(page: Node, action: str) -> tuple[Node, Node]:
    """The one form posting to `action`, asserted to sit in a closed <details> panel whose
    <summary> (what the person first clicks) only opens it. Returns (details, form)."""
    forms = page.find_all("form", action=action)
    assert len(forms) == 1, f"{len(forms)} forms post to {action}"
    form = forms[0]
    details = form.closest("details")
    assert details is not None, f"the form posting to {action} is not behind a confirmation panel"
    assert "open" not in details.attrs, "the confirmation panel starts open"
    summary = details.elements[0]
    assert summary.tag == "summary", "the panel's first element is not the button that opens it"
    assert summary.find_all("button") == [] and summary.find_all("form") == [], "the opener itself posts"
    return details, form
