"""Shared pieces of ``diff``: where things sit in a record, and the words of a change's
``label`` and ``detail`` (line diffs, ``+ added`` / ``- removed`` / ``~ changed`` items).
Pure, like ``diff``: no clock, network or database."""

from __future__ import annotations

import difflib
import re
from collections import Counter
from typing import Any, Callable, Iterable

from . import record as rec

PS = "protocolSection"
STATUS = f"{PS}.statusModule"
DESIGN = f"{PS}.designModule"
ELIG = f"{PS}.eligibilityModule"
OUTCOMES = f"{PS}.outcomesModule"
ARMS = f"{PS}.armsInterventionsModule"
CONTACTS = f"{PS}.contactsLocationsModule"
IDENT = f"{PS}.identificationModule"
LOCATIONS = f"{CONTACTS}.locations"


def humanize(key: str) -> str:
    """``briefSummary`` -> ``brief summary``; ``designModule`` -> ``design``."""
    key = re.sub(r"(Module|Struct|Info)$", "", key) or key
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", key).lower()


# Last keys too vague to stand alone in a label: the parent's name goes in front.
_VAGUE = frozenset({"type", "date", "name", "class", "count", "description", "label", "value",
                    "status", "code", "id", "info"})


_ACRONYMS = {"nct": "NCT", "id": "ID", "ids": "IDs", "ipd": "IPD", "fda": "FDA", "dmc": "DMC",
             "qc": "QC", "url": "URL", "us": "US", "mesh": "MeSH", "sap": "SAP", "icf": "ICF"}


def path_label(path: str) -> str:
    """``…designInfo.maskingInfo.masking`` -> ``Masking``; ``…organization.class`` -> ``Organization class``."""
    parts = [p for p in path.split(".") if p != PS] or [path]
    words = humanize(parts[-1])
    if parts[-1] in _VAGUE and len(parts) > 1:
        parent = humanize(parts[-2])
        words = parent if parent.endswith(" " + words) else f"{parent} {words}"
    words = " ".join(_ACRONYMS.get(w, w) for w in words.split(" "))
    return words[:1].upper() + words[1:]


def as_text(v: Any) -> str:
    # Keys must be strings whatever a partial record holds, so sorting them cannot fail.
    return v if isinstance(v, str) else ("" if v is None else rec.words(v))


def line_diff(old: str | None, new: str | None, *, context: int = 1) -> str:
    """Changed lines of two texts, ``- `` removed, ``+ `` added, ``  `` context, ``…`` between hunks."""
    out: list[str] = []
    started = False
    for line in difflib.unified_diff(as_text(old).splitlines(), as_text(new).splitlines(),
                                     lineterm="", n=context):
        if line.startswith("@@"):
            if started:
                out.append("…")
            started = True
            continue
        if not started:        # the ---/+++ file header
            continue
        tag, text = line[:1], line[1:]
        if tag == " ":
            if text.strip():   # blank context lines (between bullets) say nothing
                out.append(f"  {text}")
        else:
            out.append(f"{tag} {text}")
    return "\n".join(out)


def set_detail(old: list, new: list) -> str | None:
    """``+ added`` / ``- removed`` lines for two lists of scalars."""
    o, n = Counter(map(rec.words, old)), Counter(map(rec.words, new))
    lines = [f"- {x}" for x in sorted((o - n).elements())] + [f"+ {x}" for x in sorted((n - o).elements())]
    return "\n".join(lines) or None


def is_short(v: Any) -> bool:
    return not isinstance(v, (dict, list)) and len(str(v)) <= 80


def item_change(old: dict, new: dict) -> str:
    """What changed inside one list item: ``phone: 1 → 2; description changed``."""
    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a != b:
            parts.append(f"{humanize(k)}: {rec.words(a)} → {rec.words(b)}" if is_short(a) and is_short(b)
                         else f"{humanize(k)} changed")
    return "; ".join(parts)


def keyed(items: Iterable[Any], key: Callable[[dict], Any]) -> dict[tuple, dict]:
    """Index list items by key; repeats of a key get an occurrence number so none is lost."""
    out: dict[tuple, dict] = {}
    seen: Counter = Counter()
    for item in items:
        if not isinstance(item, dict):
            item = {"value": item}
        k = as_text(key(item))
        out[(k, seen[k])] = item
        seen[k] += 1
    return out


def keyed_detail(old: list, new: list, key: Callable[[dict], str]) -> str | None:
    o, n = keyed(old, key), keyed(new, key)
    lines = []
    for k in sorted(set(o) | set(n)):
        name = k[0] or "(unnamed)"
        if k not in n:
            lines.append(f"- {name}")
        elif k not in o:
            lines.append(f"+ {name}")
        elif o[k] != n[k]:
            lines.append(f"~ {name}: {item_change(o[k], n[k])}")
    return "\n".join(lines) or None

