"""SYNTHETIC registry version sequences, built from a real record for the history tests and
benchmarks. Nothing here is ClinicalTrials.gov data: the versions, their dates and their edits
are made up (the version list the stand-in serves says ``"synthetic": true`` per sequence via
``SYNTHETIC``); only the base record is real.

``legacy(record)`` renders a record's text the way the registry's history API does (legacy
HTML-like markup: ``<p>``, ``<ol><li>``, ``&lt;``, ``&#x2F;``), so a sequence looks like what
``/api/int/studies/{id}/history/{v}`` serves.
"""

from __future__ import annotations

import copy
import datetime as dt
import html
import re

SYNTHETIC = True

_MD_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|~=&])")
_ITEM = re.compile(r"^\s*(?:[*\-+]|\d+\.)\s+(.*)$")
_RICH = {"eligibilityCriteria", "briefSummary", "detailedDescription", "description"}


def _escape(text: str) -> str:
    return html.escape(_MD_ESCAPE.sub(r"\1", text), quote=False).replace("/", "&#x2F;")


def legacy_text(text: str, *, rich: bool) -> str:
    """Markdown text as the legacy markup: lists as <ol>/<ul><li>, paragraphs as <p> (rich
    fields), characters as entities."""
    if not rich:
        return _escape(text)
    out, open_list = [], None
    for line in text.split("\n"):
        m = _ITEM.match(line)
        if m:
            kind = "ol" if line.strip()[0].isdigit() else "ul"
            if open_list != kind:
                if open_list:
                    out.append(f"</{open_list}>")
                out.append(f"<{kind}>")
                open_list = kind
            out.append(f"<li>{_escape(m.group(1))}</li>")
            continue
        if open_list:
            out.append(f"</{open_list}>")
            open_list = None
        if line.strip():
            out.append(f"<p>{_escape(line.strip())}</p>")
    if open_list:
        out.append(f"</{open_list}>")
    return "".join(out)


def legacy(record: dict) -> dict:
    """A registry-history rendering of a v2 record: protocolSection and hasResults only, every
    text in legacy markup."""
    def walk(node, key=""):
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str):
            return legacy_text(node, rich=key in _RICH)
        return node

    return {"protocolSection": walk(record["protocolSection"]), "hasResults": bool(record.get("hasResults"))}


def set_nct(record: dict, nct: str) -> dict:
    r = copy.deepcopy(record)
    r["protocolSection"]["identificationModule"]["nctId"] = nct
    r["protocolSection"]["identificationModule"].pop("nctIdAliases", None)
    r["protocolSection"]["statusModule"].get("expandedAccessInfo", {}).pop("nctId", None)
    return r


def sequence(base: dict, n: int, *, start: str = "2017-09-01", step_days: int = 45) -> tuple[list[dict], dict]:
    """``n`` synthetic versions of ``base`` (v2 shape, Markdown) and the live record that
    matches the last one. The edits cycle through: status (NOT_YET_RECRUITING at v0, RECRUITING
    from v1, ACTIVE_NOT_RECRUITING from 2n/3, COMPLETED at the last of 4+), enrollment
    (+5 every 3rd version), a site added every 4th, and a reworded summary (minor) otherwise.
    Returns ([{date, record, moduleLabels}], live_record)."""
    versions = []
    rec = copy.deepcopy(base)
    ps = rec["protocolSection"]
    sm = ps["statusModule"]
    design = ps.setdefault("designModule", {})
    locs = ps.setdefault("contactsLocationsModule", {}).setdefault("locations", [])
    day = dt.date.fromisoformat(start)
    for v in range(n):
        labels: list[str] = []
        if v == 0:
            status = "NOT_YET_RECRUITING"
        elif n >= 4 and v == n - 1:
            status = "COMPLETED"
        elif v >= (2 * n) // 3 and n >= 3:
            status = "ACTIVE_NOT_RECRUITING"
        else:
            status = "RECRUITING"
        if v and status != sm.get("overallStatus"):
            labels.append("Study Status")
        sm["overallStatus"] = status
        sm.pop("lastKnownStatus", None)
        if v and v % 3 == 0:
            design["enrollmentInfo"] = {"count": 30 + 5 * (v // 3), "type": "ESTIMATED"}
            labels.append("Study Design")
        elif v == 0:
            design["enrollmentInfo"] = {"count": 30, "type": "ESTIMATED"}
        if v and v % 4 == 0:
            locs.append({"facility": f"Synthetic Site {v}", "city": "Rochester", "state": "Minnesota",
                         "country": "United States"})
            labels.append("Contacts/Locations")
        if v and not labels:
            desc = ps.setdefault("descriptionModule", {})
            desc["briefSummary"] = f"{desc.get('briefSummary', '')}\nSynthetic note {v}."
            labels.append("Study Description")
        sm["lastUpdatePostDateStruct"] = {"date": day.isoformat(), "type": "ACTUAL"}
        versions.append({"date": day.isoformat(), "record": legacy(rec), "moduleLabels": labels if v else []})
        day += dt.timedelta(days=step_days)
    live = copy.deepcopy(rec)
    return versions, live
