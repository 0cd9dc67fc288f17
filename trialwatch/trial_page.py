"""The trial page as data: what a physician reads before a referral, in that order.

``trial_view(record, params, today)`` turns the latest record and the page's GET parameters
(``near``, ``site_status``, ``country``, ``state``, ``page``) into plain values for
``templates/web/trial.html``: status, warnings, the nearest open sites to a place, contacts,
eligibility at a glance, and ONE page of the full site list, filtered server-side. A record of
a thousand sites thus makes a page of ``SITES_PER_PAGE`` rows, not of a thousand. Pure: no
database, no clock (``today`` is passed in).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from . import eligibility, referral
from . import record as rec
from .errors import PlaceError
from .events import is_status_change

if TYPE_CHECKING:
    from collections.abc import Mapping

SITES_PER_PAGE = 50
NEAREST = 5
_FILTERS = ("site_status", "country", "state")


@dataclass
class SiteList:
    """One page of the filtered site list and what the filter form offers."""

    rows: list[rec.Site]
    total: int                  # sites on the record
    matching: int               # sites the filter keeps
    page: int
    pages: int
    filters: dict[str, str]
    statuses: list[tuple[str, int]]
    countries: list[tuple[str, int]]
    states: list[tuple[str, int]]  # of the chosen country (all when none is chosen)
    prev_url: str | None = None
    next_url: str | None = None

    @property
    def filtered(self) -> bool:
        return any(self.filters.values())


@dataclass
class TrialView:
    summary: rec.Summary
    warnings: list[referral.RecordWarning]
    near: str                               # what was asked ("" without ?near=)
    nearest: referral.Nearest | None
    near_error: str | None                  # an unknown or ambiguous place, in words
    criteria: eligibility.Criteria
    glance: str
    sites: SiteList
    problems: list[str] = field(default_factory=list)


def _param(params: "Mapping[str, Any]", name: str, limit: int = 200) -> str:
    value = params.get(name) or ""
    return " ".join(str(value).split())[:limit]


def _counts(values: list[str]) -> list[tuple[str, int]]:
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return sorted(out.items(), key=lambda kv: (-kv[1], kv[0]))


def _status_of(s: rec.Site) -> str:
    return s.status if isinstance(s.status, str) and s.status else rec.UNSPECIFIED


def _site_order(s: rec.Site) -> tuple:
    """Open sites first, then by status (unspecified last among the rest), then by place."""
    status = _status_of(s)
    return (status not in referral.OPEN_SITE_STATUSES, status == rec.UNSPECIFIED, status,
            s.country or "", s.state or "", s.city or "", s.facility or "")


def _page_number(params: "Mapping[str, Any]", pages: int) -> int:
    """The ``page`` asked for, clamped to 1..pages; 1 when it is not a number."""
    try:
        return min(max(int(_param(params, "page", 6) or 1), 1), pages)
    except ValueError:
        return 1


def site_list(sites: list[rec.Site], params: "Mapping[str, Any]", path: str) -> SiteList:
    """Sites kept by the status/country/state filter, open ones first, one page of them."""
    filters = {k: _param(params, k, 100) for k in _FILTERS}
    country = filters["country"]
    in_country = [s for s in sites if not country or s.country == country]
    kept = [s for s in in_country
            if (not filters["site_status"] or _status_of(s) == filters["site_status"])
            and (not filters["state"] or s.state == filters["state"])]
    kept.sort(key=_site_order)
    pages = max(1, -(-len(kept) // SITES_PER_PAGE))
    page = _page_number(params, pages)
    start = (page - 1) * SITES_PER_PAGE

    def url(p: int) -> str:
        q = {k: v for k, v in {"near": _param(params, "near"), **filters}.items() if v}
        if p > 1:
            q["page"] = str(p)
        return f"{path}?{urlencode(q)}#sites" if q else f"{path}#sites"

    return SiteList(rows=kept[start:start + SITES_PER_PAGE], total=len(sites), matching=len(kept),
                    page=page, pages=pages, filters=filters,
                    statuses=_counts([_status_of(s) for s in sites]),
                    countries=_counts([s.country for s in sites if s.country]),
                    states=_counts([s.state for s in in_country if s.state]),
                    prev_url=url(page - 1) if page > 1 else None,
                    next_url=url(page + 1) if page < pages else None)


def trial_view(record: dict, params: "Mapping[str, Any]", today: dt.date, *, path: str,
               problems: list[str] | None = None) -> TrialView:
    from . import places

    s = rec.summary(record)
    near = _param(params, "near")
    nearest = near_error = None
    if near:
        try:
            nearest = referral.nearest_sites(record, places.resolve(near), NEAREST)
        except PlaceError as e:
            near_error = f"{e.message[:1].upper()}{e.message[1:]}. {e.hint or ''}".strip()
    e = s.eligibility
    return TrialView(summary=s, warnings=referral.warnings(record, today), near=near, nearest=nearest,
                     near_error=near_error, criteria=eligibility.parse_criteria(e.criteria),
                     glance=eligibility.glance(e.sex, e.minimum_age, e.maximum_age, e.healthy_volunteers),
                     sites=site_list(s.sites, params, path), problems=list(problems or []))


def problems_of(text: str | None) -> list[str]:
    """``trials.problems`` (a JSON list) as text lines; none when unreadable."""
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return []
    return [str(x) for x in value] if isinstance(value, list) else []


def followed_because(linked_from: str | None) -> str | None:
    """``expanded_access:NCT03268603`` in words: "expanded-access record of NCT03268603"."""
    if not linked_from:
        return None
    kind, _, nct = linked_from.partition(":")
    if kind == "expanded_access" and nct:
        return f"expanded-access record of {nct}"
    if kind == "linked" and nct:
        return f"linked from {nct}"
    return rec.words(kind).lower() + (f" {nct}" if nct else "")


def ordered_changes(changes: list) -> list:
    """A trial's changes as its mail orders them: newest batch (one fetch, or one registry
    version) first; within a batch the status change first, then most severe first."""
    def batch(c: Any) -> tuple:
        when = c.registry_date if c.historical and c.registry_date else (
            c.detected_at.strftime("%Y-%m-%d %H:%M:%S.%f") if c.detected_at else "")
        return (when, c.snapshot_id or 0)

    within = sorted(changes, key=lambda c: (not is_status_change(c), -c.rank, c.id or 0))
    return sorted(within, key=batch, reverse=True)  # stable: each batch keeps its inner order
