"""Registry text without its markup, so two renderings of the same words compare equal.

The live API (v2) serves text as Markdown (``* `` and ``1. `` list items, ``\\<`` escapes); the
registry's version history serves the same text in the legacy HTML-like markup (``<p>``,
``<ol><li>``, ``&lt;``, ``&#x2F;``). Diffing one against the other would report every text field
as changed. ``plain(text)`` reduces either form to its words: tags, entities, Markdown escapes,
emphasis and list markers dropped, whitespace collapsed. Pure functions, no I/O.
"""

from __future__ import annotations

import html
import re
from typing import Any

# Block-level tags become line breaks, so "<li>a</li><li>b</li>" does not glue "ab".
_BLOCK_TAG = re.compile(r"</?(?:p|br|li|ul|ol|div|h[1-6]|tr|table|blockquote|pre)\b[^>]*>", re.IGNORECASE)
_ANY_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*\b[^<>]*>")
_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~=&])")
_LIST_MARKER = re.compile(r"^\s*(?:[*+\-•]|\d+[.)]|[a-zA-Z][.)])\s+", re.MULTILINE)
# Only asterisks: underscores are common inside words and identifiers ("IL_6").
_EMPHASIS = re.compile(r"(\*\*|\*)(?=\S)(.+?)(?<=\S)\1")
_SPACE = re.compile(r"\s+")


def looks_legacy(text: str) -> bool:
    """True when ``text`` carries the legacy HTML-like markup (tags or character references)."""
    return bool(_ANY_TAG.search(text) or re.search(r"&(?:#x?[0-9a-fA-F]+|[a-zA-Z]+);", text))


def plain(text: str) -> str:
    """The words of a registry text in either markup, one space between them."""
    if looks_legacy(text):
        text = _BLOCK_TAG.sub("\n", text)
        text = _ANY_TAG.sub("", text)
        text = html.unescape(text)
    else:
        text = _MD_ESCAPE.sub(r"\1", text)
        text = _EMPHASIS.sub(r"\2", text)
    text = _LIST_MARKER.sub("", text)
    return _SPACE.sub(" ", text).strip()


def plain_record(node: Any) -> Any:
    """A copy of ``node`` with every string reduced by ``plain`` (a record, a module, a list)."""
    if isinstance(node, dict):
        return {k: plain_record(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain_record(v) for v in node]
    if isinstance(node, str):
        return plain(node)
    return node
