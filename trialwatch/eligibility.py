"""Eligibility at a glance: the registry's criteria text as inclusion and exclusion lists.

``parse_criteria(text)`` reads the layouts found on ClinicalTrials.gov: "Inclusion Criteria:" /
"Exclusion Criteria" headings in any case, with or without a colon, "Key …", markdown emphasis or
``#``; ``*``, ``-``, ``+``, ``•`` and numbered or lettered bullets; nested bullets; paragraphs
between bullets. A nested bullet stays with its parent item, as an indented ``- `` line. Text under
no inclusion/exclusion heading goes to ``other``; a text without such headings is all ``other``.
Nothing is dropped except the headings themselves, which the lists stand for.

``criteria_detail(old, new)`` says which list gained or lost which item, for ``diff``. Pure
functions: no I/O.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from typing import Any

from .record import words

LISTS = (("inclusion", "Inclusion"), ("exclusion", "Exclusion"), ("other", "Criteria"))

_BULLET = re.compile(
    r"^(?:[*\-+•·▪◦‣]|\(?\d{1,3}[.)]|\(\d{1,3}\)|\(?[a-zA-Z][.)]|\([a-zA-Z]\)|\(?[ivxIVX]{1,4}[.)])\s+(.*)$")
_EMPHASIS = re.compile(r"^[#>\s]*[*_]*\s*(.*?)\s*[*_]*\s*$")
_HEADING = re.compile(
    r"^(?:(?:key|main|major|general|principal|specific|additional|study)\s+)?"
    r"(?P<which>non[- ]?inclusion|inclusion|exclusion|eligibility)"
    r"(?:\s+criteri(?:a|on))?(?P<rest>.*)$", re.IGNORECASE)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>^~|=])")


@dataclass(frozen=True)
class Criteria:
    inclusion: list[str] = field(default_factory=list)
    exclusion: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)   # under no inclusion/exclusion heading

    @property
    def split(self) -> bool:
        return bool(self.inclusion or self.exclusion)

    def to_dict(self) -> dict[str, list[str]]:
        return {"inclusion": list(self.inclusion), "exclusion": list(self.exclusion), "other": list(self.other)}


def _unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


def _heading(line: str) -> tuple[str, str | None] | None:
    """("inclusion" | "exclusion" | "eligibility", text to keep as an item or None) for a
    heading line; None for any other line."""
    m = _EMPHASIS.match(line)
    core = _unescape(m.group(1) if m else line).strip()
    h = _HEADING.match(core)
    if not h or len(core) > 100:
        return None
    which = h.group("which").lower()
    which = "exclusion" if which.startswith("non") else which
    rest = h.group("rest").strip()
    stripped = rest.strip("*_ ")
    if stripped in ("", ":", "-", "–", "—", ":-"):
        return which, None
    if re.search(r"\b(inclusion|exclusion)\b", rest, re.IGNORECASE):
        return None   # "Inclusion and exclusion criteria:" names neither list alone
    if stripped.startswith(":") and stripped[1:].strip():
        return which, stripped[1:].strip()         # "Exclusion criteria: pregnancy" -> an item
    if stripped.endswith(":") and " " in core:
        return which, core.strip("*_ ")            # "Inclusion Criteria for Part A:" kept
    return None


def parse_criteria(text: Any) -> Criteria:
    """The criteria text as lists; never raises, never drops a criterion (see module doc)."""
    if not isinstance(text, str) or not text.strip():
        return Criteria()
    reader = _Reader()
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        reader.feed(raw)
    joined = {k: ["\n".join(lines) for lines in v] for k, v in reader.sections.items()}
    if joined["exclusion"] and not joined["inclusion"]:
        # "Eligibility criteria: …  Exclusion criteria: …": what comes before the exclusions
        # is what a patient must meet.
        joined["inclusion"], joined["other"] = joined["other"], []
    return Criteria(**joined)


def _line_heading(line: str, bullet: Any, indent: int) -> tuple[str, str | None] | None:
    """The heading a line is (``* Inclusion Criteria:`` too), or None."""
    if indent >= 4:
        return None
    head = _heading(line)
    if head is None and bullet:
        as_bullet = _heading(bullet.group(1))
        head = as_bullet if as_bullet and as_bullet[1] is None else None
    return head


class _Reader:
    """Reads criteria line by line into inclusion, exclusion and other items."""

    def __init__(self) -> None:
        self.sections: dict[str, list[list[str]]] = {"inclusion": [], "exclusion": [], "other": []}
        self.current = "other"
        self.item: list[str] | None = None     # the lines of the item being read
        self.indents: list[int] = []           # its bullet's indentation, then its open nested bullets'
        self.blank_before = False

    def feed(self, raw: str) -> None:
        if not raw.strip():
            self.blank_before = True
            return
        expanded = raw.expandtabs(4)
        indent = len(expanded) - len(expanded.lstrip())
        line = expanded.strip()
        bullet = _BULLET.match(line)
        head = _line_heading(line, bullet, indent)
        if head is not None:
            self._heading(*head)
        else:
            self._line(_clean(bullet.group(1) if bullet else line), bool(bullet), indent)
        self.blank_before = False

    def _heading(self, which: str, keep: str | None) -> None:
        if which != "eligibility":
            self.current = which
        self.item = None
        if keep:
            self.sections[self.current].append([_clean(keep)])

    def _line(self, body: str, bullet: bool, indent: int) -> None:
        item = self.item
        if item is not None and indent > self.indents[0] and (bullet or self.blank_before):
            # A nested bullet or an indented paragraph belongs to the item above it.
            while len(self.indents) > 1 and self.indents[-1] >= indent:
                self.indents.pop()
            if bullet:
                item.append("  " * len(self.indents) + "- " + body)
                self.indents.append(indent)
            else:
                item.append("  " * max(1, len(self.indents) - 1) + body)
        elif item is not None and not bullet and not self.blank_before:
            item[-1] += " " + body    # a wrapped line of the same item (markdown's lazy continuation)
        else:
            self.item = [body]
            self.indents = [indent]
            self.sections[self.current].append(self.item)


def _clean(text: str) -> str:
    return " ".join(_unescape(text).split())


def glance(sex: Any, minimum_age: Any, maximum_age: Any, healthy_volunteers: Any) -> str:
    """Age, sex and healthy volunteers on one line: "18 Years and older · all sexes · no
    healthy volunteers"."""
    if minimum_age and maximum_age:
        age = f"{minimum_age} to {maximum_age}"
    elif minimum_age:
        age = f"{minimum_age} and older"
    elif maximum_age:
        age = f"up to {maximum_age}"
    else:
        age = "any age"
    sexes = {"ALL": "all sexes", "FEMALE": "female only", "MALE": "male only"}
    sex_words = sexes.get(sex, words(sex).lower() if sex else "sex not stated")
    hv = {True: "healthy volunteers accepted", False: "no healthy volunteers"}.get(
        healthy_volunteers, "healthy volunteers not stated")
    return f"{age} · {sex_words} · {hv}"


def _norm(item: str) -> str:
    return " ".join(item.split())


def criteria_detail(old: Any, new: Any) -> str | None:
    """``+ Inclusion: item`` / ``- Exclusion: item`` lines: which list gained or lost which
    item (a reworded item is one ``-`` and one ``+``). None when no item differs (the layout or
    the order changed), so the caller can fall back to a line diff."""
    a, b = parse_criteria(old), parse_criteria(new)
    lines: list[str] = []
    for key, label in LISTS:
        xs, ys = getattr(a, key), getattr(b, key)
        matcher = difflib.SequenceMatcher(a=[_norm(x) for x in xs], b=[_norm(y) for y in ys], autojunk=False)
        gone: list[str] = []
        added: list[str] = []
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag in ("delete", "replace"):
                gone += xs[i1:i2]
            if tag in ("insert", "replace"):
                added += ys[j1:j2]
        # An item that only moved within its list is neither gained nor lost.
        moved = {_norm(x) for x in gone} & {_norm(y) for y in added}
        lines += _tagged("-", label, [x for x in gone if _norm(x) not in moved])
        lines += _tagged("+", label, [y for y in added if _norm(y) not in moved])
    return "\n".join(lines) or None


def _tagged(tag: str, label: str, items: list[str]) -> list[str]:
    out = []
    for item in items:
        first, *rest = item.split("\n")
        out.append(f"{tag} {label}: {first}")
        out.extend(f"{tag} {' ' * (len(label) + 1)} {line.strip()}" for line in rest)
    return out
