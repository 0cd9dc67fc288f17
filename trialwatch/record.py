"""Reading a ClinicalTrials.gov v2 study record: NCT numbers, the canonical form and its hash.

Pure functions only: nothing here does I/O. The canonical form is what a snapshot stores and
what the content hash covers; it leaves out what the registry changes without the trial changing
(``derivedSection``, last-update dates) and sorts lists whose order means nothing, so two fetches
of an unchanged trial have the same hash.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from typing import Any

from .errors import InvalidNctId

_NCT_RE = re.compile(r"^NCT0*([1-9]\d{0,7})$", re.IGNORECASE)


def normalize_nct(value: str) -> str:
    """``' nct3268603 '`` -> ``'NCT03268603'``; anything that is not an NCT number raises."""
    if not isinstance(value, str):
        raise InvalidNctId(f"{value!r} is not an NCT number")
    m = _NCT_RE.match(value.strip())
    if not m:
        raise InvalidNctId(f"{value.strip()!r} is not an NCT number")
    return "NCT" + m.group(1).zfill(8)


def is_study(obj: Any) -> bool:
    """A plausible v2 study: the shape every real record has, with an NCT number we can read."""
    try:
        nct = obj["protocolSection"]["identificationModule"]["nctId"]
        normalize_nct(nct)
        return isinstance(obj["protocolSection"].get("statusModule"), dict)
    except (KeyError, TypeError, InvalidNctId):
        return False


def nct_of(record: dict) -> str:
    return normalize_nct(record["protocolSection"]["identificationModule"]["nctId"])


# Paths (dotted, list indexes omitted) dropped from the canonical form: the registry rewrites
# them on every data refresh or record touch without the trial itself changing.
CHURN_PATHS = (
    "derivedSection",
    "protocolSection.statusModule.lastUpdateSubmitDate",
    "protocolSection.statusModule.lastUpdatePostDateStruct",
)

# Lists whose order carries no meaning; sorted in the canonical form.
UNORDERED_LISTS = frozenset({
    "protocolSection.identificationModule.nctIdAliases",
    "protocolSection.identificationModule.secondaryIdInfos",
    "protocolSection.conditionsModule.conditions",
    "protocolSection.conditionsModule.keywords",
    "protocolSection.sponsorCollaboratorsModule.collaborators",
    "protocolSection.designModule.phases",
    "protocolSection.eligibilityModule.stdAges",
    "protocolSection.contactsLocationsModule.centralContacts",
    "protocolSection.contactsLocationsModule.overallOfficials",
    "protocolSection.contactsLocationsModule.locations",
    "protocolSection.contactsLocationsModule.locations.contacts",
    "protocolSection.referencesModule.references",
    "protocolSection.referencesModule.seeAlsoLinks",
})


def _sort_key(item: Any) -> str:
    return json.dumps(item, sort_keys=True, ensure_ascii=False)


def _canon(node: Any, path: str) -> Any:
    if isinstance(node, dict):
        return {k: _canon(v, f"{path}.{k}" if path else k) for k, v in node.items()
                if (f"{path}.{k}" if path else k) not in CHURN_PATHS}
    if isinstance(node, list):
        items = [_canon(v, path) for v in node]
        return sorted(items, key=_sort_key) if path in UNORDERED_LISTS else items
    return node


def canonical(record: dict) -> dict:
    """The record as trialwatch keeps it: churn removed, unordered lists sorted."""
    return _canon(copy.deepcopy(record), "")


def canonical_json(record: dict) -> bytes:
    """Canonical bytes of an already-canonical record (stable key order, compact)."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def content_hash(record: dict) -> str:
    """SHA-256 of the canonical form: equal for two fetches that differ only in churn."""
    return hashlib.sha256(canonical_json(canonical(record))).hexdigest()


def get(record: dict | None, path: str, default: Any = None) -> Any:
    """``get(r, 'protocolSection.statusModule.overallStatus')``; missing parts give default."""
    node: Any = record
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


STATUS_WORDS = {
    "ACTIVE_NOT_RECRUITING": "Active, not recruiting",
    "COMPLETED": "Completed",
    "ENROLLING_BY_INVITATION": "Enrolling by invitation",
    "NOT_YET_RECRUITING": "Not yet recruiting",
    "RECRUITING": "Recruiting",
    "SUSPENDED": "Suspended",
    "TERMINATED": "Terminated",
    "WITHDRAWN": "Withdrawn",
    "AVAILABLE": "Available",
    "NO_LONGER_AVAILABLE": "No longer available",
    "TEMPORARILY_NOT_AVAILABLE": "Temporarily not available",
    "APPROVED_FOR_MARKETING": "Approved for marketing",
    "WITHHELD": "Withheld",
    "UNKNOWN": "Unknown status",
}

_ENUM_WORDS = {
    **STATUS_WORDS,
    "ACTUAL": "actual", "ESTIMATED": "estimated",
    "EARLY_PHASE1": "Early Phase 1", "PHASE1": "Phase 1", "PHASE2": "Phase 2",
    "PHASE3": "Phase 3", "PHASE4": "Phase 4", "NA": "Not applicable",
    "ALL": "All", "FEMALE": "Female", "MALE": "Male",
    "CHILD": "Child", "ADULT": "Adult", "OLDER_ADULT": "Older adult",
}
_ENUM_RE = re.compile(r"^[A-Z][A-Z0-9_]+$")


def words(value: Any) -> str:
    """A stored value as a person reads it: enums in words, lists joined, None as an em dash."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(words(v) for v in value) or "—"
    if isinstance(value, str) and _ENUM_RE.match(value):
        return _ENUM_WORDS.get(value, value.replace("_", " ").capitalize())
    return str(value)


def url(nct_id: str) -> str:
    return f"https://clinicaltrials.gov/study/{nct_id}"
