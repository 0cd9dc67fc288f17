"""Ready to refer: the nearest open sites of a trial and the warnings a physician must see.

Pure functions of a record (raw or canonical), a ``places.Place`` and the date of today, which
the caller passes in: nothing here reads the clock, the network or the database.

- ``nearest_sites(record, place, limit=5)``: sites whose own status says they recruit, ranked
  by great-circle distance from the record's own ``geoPoint``s. A site without a geoPoint cannot
  be ranked and is counted, not guessed.
- ``warnings(record, today)``: ``stale`` (status not verified for over 12 months while the trial
  claims to be open or active), ``past_completion`` (the primary completion date has passed and
  it still claims to recruit), ``results_posted``.
"""

from __future__ import annotations

import calendar
import datetime as dt
import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .record import Contact, get, words

if TYPE_CHECKING:
    from .places import Place

# A site a patient can be referred to (the registry's RecruitmentStatus of a location).
OPEN_SITE_STATUSES = frozenset({"RECRUITING", "NOT_YET_RECRUITING", "ENROLLING_BY_INVITATION"})
# Overall statuses that claim the trial still runs, so an old verification date matters.
OPEN_OR_ACTIVE = OPEN_SITE_STATUSES | {"ACTIVE_NOT_RECRUITING", "AVAILABLE", "TEMPORARILY_NOT_AVAILABLE"}
STALE_AFTER_MONTHS = 12

EARTH_RADIUS_KM = 6371.0088      # the IUGG mean radius
KM_PER_MILE = 1.609344

_LOCATIONS = "protocolSection.contactsLocationsModule.locations"
_CENTRAL = "protocolSection.contactsLocationsModule.centralContacts"


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in km between two points given in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


@dataclass(frozen=True)
class NearSite:
    facility: str | None
    city: str | None
    state: str | None
    country: str | None
    status: str
    distance_km: float
    distance_miles: float
    contacts: list[Contact] = field(default_factory=list)
    contacts_from: str | None = None     # "site", "central" (the site lists none), or None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["distance_km"] = round(self.distance_km, 1)
        d["distance_miles"] = round(self.distance_miles, 1)
        return d

    def where(self) -> str:
        return ", ".join(p for p in (self.facility, self.city, self.state, self.country) if p)


@dataclass(frozen=True)
class Nearest:
    """The answer to "where is the nearest open site": ``sites`` nearest first."""
    place: "Place"
    sites: list[NearSite]
    open_sites: int          # sites on the record whose status is open
    unranked: int            # open sites without a geoPoint: not in ``sites``
    without_status: int      # sites that carry no status at all (never counted as open)
    overall_status: str | None

    def summary(self) -> str:
        """Why there is no nearest site, or how many were left out; "" when nothing to add."""
        if not self.open_sites:
            if self.without_status and self.overall_status in OPEN_SITE_STATUSES:
                many = self.without_status != 1
                return (f"the trial says “{words(self.overall_status)}”, but its {self.without_status} "
                        f"site{'s list' if many else ' lists'} no status of {'their' if many else 'its'} own: "
                        "ask the study contact where it recruits")
            return f"no site is open to referrals (overall status: {words(self.overall_status)})"
        if self.unranked:
            return (f"{self.unranked} of {self.open_sites} open sites have no coordinates on the "
                    "record and are not ranked")
        return ""


def _contacts(items: Any) -> list[Contact]:
    return [Contact(c.get("name"), c.get("role"), c.get("phone"), c.get("email"))
            for c in (items if isinstance(items, list) else []) if isinstance(c, dict)]


def _reachable(contacts: list[Contact]) -> bool:
    return any(c.phone or c.email for c in contacts)


def _point(loc: dict) -> tuple[float, float] | None:
    gp = loc.get("geoPoint")
    if not isinstance(gp, dict):
        return None
    lat, lon = gp.get("lat"), gp.get("lon")
    if isinstance(lat, bool) or isinstance(lon, bool) or not isinstance(lat, (int, float)) \
            or not isinstance(lon, (int, float)) or not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    return float(lat), float(lon)


def nearest_sites(record: dict, place: "Place", limit: int = 5) -> Nearest:
    """The ``limit`` open sites nearest to ``place``, nearest first (ties by facility name)."""
    central = _contacts(get(record, _CENTRAL))
    locations = [loc for loc in (get(record, _LOCATIONS) or []) if isinstance(loc, dict)]
    ranked: list[NearSite] = []
    open_sites = unranked = without_status = 0
    for loc in locations:
        status = loc.get("status")
        if not isinstance(status, str) or not status:
            without_status += 1
            continue
        if status not in OPEN_SITE_STATUSES:
            continue
        open_sites += 1
        point = _point(loc)
        if point is None:
            unranked += 1
            continue
        km = haversine_km(place.lat, place.lon, *point)
        own = _contacts(loc.get("contacts"))
        if _reachable(own):
            contacts, source = own, "site"
        elif central:
            contacts, source = central, "central"
        else:
            contacts, source = own, ("site" if own else None)
        ranked.append(NearSite(loc.get("facility"), loc.get("city"), loc.get("state"), loc.get("country"),
                               status, km, km / KM_PER_MILE, contacts, source))
    ranked.sort(key=lambda s: (s.distance_km, s.facility or "", s.city or ""))
    return Nearest(place=place, sites=ranked[:max(limit, 0)], open_sites=open_sites, unranked=unranked,
                   without_status=without_status,
                   overall_status=get(record, "protocolSection.statusModule.overallStatus"))


def contact_line(c: Contact) -> str:
    return ", ".join(b for b in (c.name, c.phone, c.email) if b)


def site_line(s: NearSite) -> str:
    """"Mayo Clinic, Rochester, Minnesota, 12 km / 7 mi — Jane Doe, 507-…" (one line)."""
    text = f"{s.where()}, {s.distance_km:.0f} km / {s.distance_miles:.0f} mi"
    if s.status != "RECRUITING":
        text += f" ({words(s.status).lower()})"
    reachable = [c for c in s.contacts if c.phone or c.email] or s.contacts
    if reachable:
        text += " — " + contact_line(reachable[0])
        if s.contacts_from == "central":
            text += " (central contact)"
    return text


# -- warnings -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class RecordWarning:
    kind: str        # stale | past_completion | results_posted
    text: str

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}


def _last_day(value: Any) -> dt.date | None:
    """The last day a partial registry date can mean: "2022-03" -> 2022-03-31, "2022" -> 2022-12-31."""
    if not isinstance(value, str):
        return None
    try:
        parts = [int(p) for p in value.split("-")]
        if len(parts) == 3:
            return dt.date(*parts)
        if len(parts) == 2:
            return dt.date(parts[0], parts[1], calendar.monthrange(parts[0], parts[1])[1])
        if len(parts) == 1:
            return dt.date(parts[0], 12, 31)
    except ValueError:
        return None
    return None


def _plus_months(d: dt.date, months: int) -> dt.date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return dt.date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def _months_between(a: dt.date, b: dt.date) -> int:
    return (b.year - a.year) * 12 + (b.month - a.month)


def warnings(record: dict, today: dt.date) -> list[RecordWarning]:
    """What a physician must see before trusting the record's status, most serious first."""
    sm = get(record, "protocolSection.statusModule") or {}
    sm = sm if isinstance(sm, dict) else {}
    status = sm.get("overallStatus")
    status = status if isinstance(status, str) else None  # a malformed record still gets its other warnings
    out: list[RecordWarning] = []
    verified = sm.get("statusVerifiedDate")
    verified_end = _last_day(verified)
    if status in OPEN_OR_ACTIVE and verified_end and today > _plus_months(verified_end, STALE_AFTER_MONTHS):
        months = _months_between(verified_end, today)
        out.append(RecordWarning("stale", (
            f"Status last verified {verified}, {months} months ago, yet the record says "
            f"“{words(status)}”: it may be out of date. Confirm with the study team before a referral.")))
    pc = sm.get("primaryCompletionDateStruct")
    pc = pc if isinstance(pc, dict) else {}
    pc_end = _last_day(pc.get("date"))
    if status in OPEN_SITE_STATUSES and pc_end and today > pc_end:
        kind = f" ({words(pc.get('type'))})" if pc.get("type") else ""
        out.append(RecordWarning("past_completion", (
            f"Primary completion date {pc.get('date')}{kind} has passed, yet the record still says "
            f"“{words(status)}”.")))
    if record.get("hasResults") is True:
        posted = get(sm, "resultsFirstPostDateStruct.date")
        out.append(RecordWarning("results_posted", "Results are posted on ClinicalTrials.gov"
                           + (f" (first posted {posted})." if posted else ".")))
    return out
