"""Alternatives per poll, read per reader: search once, rank by each reader's place locally.

A poll that sees a followed trial stop recruiting (``store.NOT_RECRUITING``), and up to
``alternatives.per_poll`` other trials that do not recruit and have nothing found at the
poll's data date, asks the registry ``alternatives.find`` WITHOUT a place (two or three
requests a trial) and stores the answer in the ``alternatives`` table with each alternative's
open sites and central contacts. The trial page and the digest then rank those by the reader's
own place with ``referral.nearest_sites`` on the stored sites: a digest run for 5,000
subscribers costs no request.

A failed search stores nothing and removes what was stored for the trial: the page and the
digest then say the search is unavailable, never show an older list as current. What is shown
always carries the registry data date it was found at.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .alternatives import DEFAULT_WITHIN_MILES, NOTICE
from .record import get, url, words

if TYPE_CHECKING:
    from .alternatives import Alternatives
    from .config import Config
    from .ctgov import Client
    from .places import Place
    from .referral import NearSite
    from .store import AlternativesCache, Store

log = logging.getLogger("trialwatch.alternatives")

ON_PAGE = 5        # the trial page's section
IN_DIGEST = 3      # a digest's block
BODY_VERSION = 1
_LOCATIONS = "protocolSection.contactsLocationsModule.locations"
_CENTRAL = "protocolSection.contactsLocationsModule.centralContacts"
_SITE_KEYS = ("facility", "city", "state", "country", "status", "geoPoint", "contacts")


# -- storing one poll's answer ------------------------------------------------------------------

def _open_sites(record: dict) -> list[dict]:
    from .referral import OPEN_SITE_STATUSES

    return [{k: loc[k] for k in _SITE_KEYS if k in loc}
            for loc in (get(record, _LOCATIONS) or []) if isinstance(loc, dict)
            and loc.get("status") in OPEN_SITE_STATUSES]


def body_of(result: "Alternatives") -> str:
    """The stored JSON: the place-free answer, each alternative with its open sites and central
    contacts (what ``referral.nearest_sites`` reads), nothing else of its record."""
    alts = []
    for a in result.alternatives:
        d = a.to_dict()
        d.pop("nearest_site", None)
        r = result.records.get(a.nct_id) or {}
        central = get(r, _CENTRAL)
        alts.append({**d, "closeness": a.closeness, "sites": _open_sites(r),
                     "central_contacts": central if isinstance(central, list) else []})
    return json.dumps({"version": BODY_VERSION, "nct_id": result.nct_id, "alternatives": alts,
                       "expanded_access": [e.to_dict() for e in result.expanded_access],
                       "condition_only": result.condition_only, "requests": result.requests},
                      ensure_ascii=False, sort_keys=True)


@dataclass
class AltPollReport:
    computed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    requests: int = 0


def refresh_for_poll(store: "Store", config: "Config", client: "Client", *, closed_now: list[str],
                     watched: list[str], data_timestamp: str | None,
                     checkpoint: Callable[[], None] | None = None) -> AltPollReport:
    """Search once for each trial that stopped recruiting in this poll (``closed_now``, all of
    them: their digests are composed now), then for up to ``alternatives.per_poll`` in all with
    other followed trials that do not recruit and have nothing found at ``data_timestamp``.
    A failed search is logged and drops the trial's stored list; it never fails the poll."""
    from .errors import CtgovError
    from .store import NOT_RECRUITING
    from . import alternatives

    before = client.stats.requests
    report = AltPollReport()
    backfill = store.alternatives_due(watched, data_timestamp,
                                      max(config.alternatives.per_poll - len(closed_now), 0))
    for nct in list(dict.fromkeys(closed_now + backfill)):
        if checkpoint is not None:
            checkpoint()
        record = store.latest_record(nct)
        if record is None or get(record, "protocolSection.statusModule.overallStatus") not in NOT_RECRUITING:
            continue
        try:
            found = alternatives.find(client, record, None, limit=alternatives.MAX_RESULTS)
        except CtgovError as e:
            store.drop_alternatives(nct)
            report.failed.append(nct)
            log.warning("%s: the search for recruiting alternatives failed (%s); none are listed "
                        "until a later poll's search succeeds", nct, e.message)
            continue
        store.save_alternatives(nct, data_timestamp, body_of(found))
        report.computed.append(nct)
    report.requests = client.stats.requests - before
    if report.computed or report.failed:
        log.info("alternatives: %d trial(s) searched, %d failed, %d requests",
                 len(report.computed), len(report.failed), report.requests)
    return report


# -- reading it for one reader ------------------------------------------------------------------

@dataclass(frozen=True)
class ShownAlternative:
    nct_id: str
    url: str
    title: str
    status: str
    phases: str
    why: str
    site: "NearSite | None"          # the nearest open site to the reader, when a place is known
    site_text: str | None


@dataclass(frozen=True)
class ShownExpandedAccess:
    nct_id: str
    url: str
    title: str
    status: str
    why: str


@dataclass(frozen=True)
class ShownAlternatives:
    """What a page or a digest says; ``state`` is "ok" or "unavailable" (nothing stored: the
    last search failed, or none has run yet)."""

    state: str
    nct_id: str
    alternatives: tuple[ShownAlternative, ...] = ()
    expanded_access: tuple[ShownExpandedAccess, ...] = ()
    data_date: str | None = None      # the registry's data date the search answered at
    place: str | None = None          # the reader's place in words, when known
    within_miles: float = DEFAULT_WITHIN_MILES
    beyond: int = 0                   # alternatives listed by the search but farther than that
    condition_only: bool = False
    notice: str = NOTICE


def _sites_record(alt: dict) -> dict:
    return {"protocolSection": {"contactsLocationsModule": {
        "locations": alt.get("sites") or [], "centralContacts": alt.get("central_contacts") or []}}}


def _site_text(site: "NearSite") -> str:
    return f"{site.where()}, {site.distance_km:.0f} km / {site.distance_miles:.0f} mi"


def shown(nct_id: str, row: "AlternativesCache | None", place: "Place | None", limit: int, *,
          within_miles: float = DEFAULT_WITHIN_MILES, own_ea: dict | None = None) -> ShownAlternatives:
    """The stored answer for one reader: with a place, only alternatives with an open site
    within ``within_miles``, closest match first, then nearest site (the order of
    ``trialwatch alternatives --near``); without one, closest match first. ``own_ea`` is the
    trial's ``expandedAccessInfo`` (its own route is listed first even when nothing is stored)."""
    body = _stored_body(nct_id, row)
    if body is None:
        return ShownAlternatives(state="unavailable", nct_id=nct_id, expanded_access=_own_only(own_ea),
                                 place=place.label if place else None, within_miles=within_miles)
    ranked, beyond = _ranked(body.get("alternatives") or [], place, within_miles)
    ea = tuple(ShownExpandedAccess(nct_id=e["nct_id"], url=url(e["nct_id"]), title=e.get("title") or "",
                                   status=words(e.get("status")) if e.get("status") else "", why=e.get("why") or "")
               for e in body.get("expanded_access") or [])
    return ShownAlternatives(
        state="ok", nct_id=nct_id, alternatives=tuple(ranked[:max(limit, 0)]), expanded_access=ea,
        data_date=(row.data_timestamp or "")[:10] or None, place=place.label if place else None,
        within_miles=within_miles, beyond=beyond, condition_only=bool(body.get("condition_only")))


def _stored_body(nct_id: str, row: "AlternativesCache | None") -> dict[str, Any] | None:
    if row is None:
        return None
    try:
        return json.loads(row.body)
    except ValueError:
        log.error("%s: stored alternatives are not JSON; shown as unavailable", nct_id)
        return None


def _ranked(alternatives: list[dict], place: "Place | None",
            within_miles: float) -> tuple[list[ShownAlternative], int]:
    """The entries in the order a reader sees them, and how many lie beyond her radius."""
    from .referral import nearest_sites

    ranked: list[tuple[tuple, ShownAlternative]] = []
    beyond = 0
    for a in alternatives:
        site = None
        if place is not None:
            near = nearest_sites(_sites_record(a), place, limit=1)
            site = near.sites[0] if near.sites else None
            if site is None or site.distance_miles > within_miles:
                beyond += 1
                continue
        entry = ShownAlternative(
            nct_id=a["nct_id"], url=url(a["nct_id"]), title=a.get("title") or "", status=words(a.get("status")),
            phases=words(a.get("phases") or []) if a.get("phases") else "", why=a.get("why") or "",
            site=site, site_text=_site_text(site) if site else None)
        ranked.append(((-int(a.get("closeness") or 0), site.distance_km if site else 0.0, a["nct_id"]), entry))
    ranked.sort(key=lambda t: t[0])
    return [e for _, e in ranked], beyond


def _own_only(own_ea: dict | None) -> tuple[ShownExpandedAccess, ...]:
    """The trial's own expanded-access link, from its own record: known without any search."""
    link = own_ea.get("nctId") if isinstance(own_ea, dict) else None
    if not isinstance(link, str) or not link:
        return ()
    status = own_ea.get("statusForNctId")
    return (ShownExpandedAccess(nct_id=link, url=url(link), title="", status=words(status) if status else "",
                                why="this trial's own expanded-access record, as its record names it"),)
