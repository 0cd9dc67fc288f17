"""When a trial closes: recruiting alternatives and expanded access, found by the registry's search.

``find(client, record, place=None, limit=10)`` returns ``Alternatives``: trials that recruit now
(RECRUITING, NOT_YET_RECRUITING, ENROLLING_BY_INVITATION), share the record's condition and a
similar intervention, ranked by closeness, then by distance of their nearest open site; and,
apart, expanded-access records (``studyType`` EXPANDED_ACCESS, status AVAILABLE) for the same
condition and intervention, with the trial's own expanded-access record first.

Requests (``Alternatives.requests``), the record being already at hand:

1. ``GET /studies`` with ``query.cond`` (the record's conditions, OR-ed), ``query.intr`` (the
   key phrases of its active interventions, OR-ed), ``filter.overallStatus`` and, with a place,
   ``filter.geo=distance(lat,lon,Nmi)``;
2. ``GET /studies`` for expanded access: the same ``query.cond`` and ``query.intr``,
   ``filter.overallStatus=AVAILABLE`` and ``filter.advanced=AREA[StudyType]EXPANDED_ACCESS``;
3. only when (1) found nothing: (1) again without ``query.intr`` (condition only), and every
   entry's ``why`` says that no similar intervention was found.

The list is a starting point from the registry's search: not a recommendation, not an
eligibility judgement (``NOTICE``). A failed search raises ``CtgovError``: nothing is listed,
never an older list presented as current.

A poll stores each closed trial's place-free answer (``alternatives_cache``): pages and digests
rank it by each reader's place without a request.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .record import as_list, get, nct_of, url

if TYPE_CHECKING:
    from .ctgov import Client
    from .places import Place
    from .referral import NearSite

RECRUITING = ("RECRUITING", "NOT_YET_RECRUITING", "ENROLLING_BY_INVITATION")
EA_STATUS = "AVAILABLE"
DEFAULT_LIMIT = 10
DEFAULT_WITHIN_MILES = 500.0   # "near her": about a day's drive; --within widens it
MAX_RESULTS = 200              # per search: one page; ranking happens here, not in the registry
MAX_CONDITIONS = 6             # an OR of more conditions is no longer "the same condition"
MAX_PHRASES = 6

NOTICE = ("A starting point from ClinicalTrials.gov's own search, not a recommendation and not an "
          "eligibility judgement: read each record, and confirm with the study team.")

_PS = "protocolSection"

# Interventions that say nothing about what is being tried.
_INERT = re.compile(r"\b(placebo|sham|vehicle|saline|standard (of )?care|usual care|best supportive care|"
                    r"control|no intervention|observation)\b", re.I)
_UNINFORMATIVE_TYPES = {"BEHAVIORAL", "DIAGNOSTIC_TEST", "OTHER"}
# Words that qualify a product without changing what it is: an autologous trial's alternatives
# include allogeneic ones; a dose or route is not another intervention.
_QUALIFIERS = frozenset("""
    autologous allogeneic allogenic human adult donor derived bone marrow adipose umbilical cord
    placental expanded cultured ex vivo intrathecal intravenous iv im intramuscular injection injections
    infusion infusions administration administered transplantation transplant dose doses high low
    repeated single multiple of the a an and with by in mg kg ml
""".split())
_CELL_SYNONYMS = (("stromal", "stem"), ("stem", "stromal"))


@dataclass(frozen=True)
class Query:
    """What the record asks of the registry, and the phrases the ranking compares."""
    conditions: list[str]          # normalised condition phrases (query.cond, OR-ed)
    condition_terms: set[str]      # conditions, keywords and MeSH terms of the record (ranking)
    phrases: list[str]             # intervention key phrases (query.intr, OR-ed)
    types: set[str]                # intervention types of the active interventions

    def cond_param(self) -> str:
        return _or(self.conditions)

    def intr_param(self) -> str:
        return _or(self.phrases)


@dataclass
class Alternative:
    nct_id: str
    title: str | None
    status: str | None
    phases: list[str]
    why: str
    closeness: int
    nearest_site: "NearSite | None" = None

    @property
    def url(self) -> str:
        return url(self.nct_id)

    def to_dict(self) -> dict[str, Any]:
        return {"nct_id": self.nct_id, "title": self.title, "status": self.status,
                "phases": list(self.phases), "why": self.why, "url": self.url,
                "nearest_site": self.nearest_site.to_dict() if self.nearest_site else None}


@dataclass
class ExpandedAccessEntry:
    nct_id: str
    title: str | None
    status: str | None
    why: str

    @property
    def url(self) -> str:
        return url(self.nct_id)

    def to_dict(self) -> dict[str, Any]:
        return {"nct_id": self.nct_id, "title": self.title, "status": self.status,
                "why": self.why, "url": self.url}


@dataclass
class Alternatives:
    nct_id: str
    query: Query
    alternatives: list[Alternative] = field(default_factory=list)
    expanded_access: list[ExpandedAccessEntry] = field(default_factory=list)
    place: "Place | None" = None
    within_miles: float | None = None
    condition_only: bool = False   # no similar intervention recruits: listed by condition only
    requests: int = 0              # HTTP requests the searches made (retries included)
    searches: list[dict[str, str]] = field(default_factory=list)
    # The records the search returned, by NCT number: the per-poll cache keeps their open sites.
    records: dict[str, dict] = field(default_factory=dict, repr=False)

    def limited(self, limit: int) -> "Alternatives":
        """The same answer with at most ``limit`` alternatives (expanded access is kept whole)."""
        out = Alternatives(**{**self.__dict__})
        out.alternatives = self.alternatives[:max(limit, 0)]
        return out

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``trialwatch alternatives --json`` (documented in the README)."""
        d: dict[str, Any] = {
            "nct_id": self.nct_id,
            "notice": NOTICE,
            "alternatives": [a.to_dict() for a in self.alternatives],
            "expanded_access": [e.to_dict() for e in self.expanded_access],
            "condition_only": self.condition_only,
            "query": {"conditions": self.query.conditions, "interventions": self.query.phrases},
            "requests": self.requests,
        }
        if self.place is not None:
            d["near"] = {**self.place.to_dict(), "within_miles": self.within_miles}
        return d


# -- building the query from the record ---------------------------------------------------------

def _norm(text: str) -> str:
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text.lower())
    text = re.sub(r"[^a-z0-9+\- ]+", " ", text)
    return " ".join(text.replace("-", " ").split())


def _or(phrases: list[str]) -> str:
    return " OR ".join(f'"{p}"' for p in phrases)


def key_phrase(name: str) -> str:
    """The intervention as the search should name it: "Autologous MSC-NTF cells (NurOwn®)"
    -> "msc ntf cells"; "Allogeneic bone marrow-derived mesenchymal stromal cells" ->
    "mesenchymal stromal cells"; doses, routes and sources dropped."""
    kept = [w for w in _norm(name).split() if w not in _QUALIFIERS and not re.fullmatch(r"[\d.]+", w)]
    return " ".join(kept)


def _variants(phrase: str) -> list[str]:
    """A phrase and its common synonyms: mesenchymal stem/stromal cells are one product."""
    out = [phrase]
    words_ = phrase.split()
    if words_ and words_[-1] in ("cell", "cells"):
        for a, b in _CELL_SYNONYMS:
            if a in words_:
                out.append(" ".join(b if w == a else w for w in words_))
    return out


def _interventions(record: dict) -> list[dict]:
    return [i for i in as_list(get(record, f"{_PS}.armsInterventionsModule.interventions")) if isinstance(i, dict)]


def _active(interventions: list[dict]) -> list[dict]:
    return [i for i in interventions if isinstance(i.get("name"), str) and not _INERT.search(i["name"])]


def _condition_terms(record: dict) -> set[str]:
    terms = {_norm(c) for c in as_list(get(record, f"{_PS}.conditionsModule.conditions")) if isinstance(c, str)}
    terms |= {_norm(k) for k in as_list(get(record, f"{_PS}.conditionsModule.keywords")) if isinstance(k, str)}
    for m in as_list(get(record, "derivedSection.conditionBrowseModule.meshes")):
        if isinstance(m, dict) and isinstance(m.get("term"), str):
            terms.add(_norm(m["term"]))
    return {t for t in terms if t}


def build_query(record: dict) -> Query:
    """Conditions as written (the registry's query.cond adds its own synonyms) and the key
    phrases of the active interventions: placebo and sham left out; behavioural or "other"
    interventions only when nothing else is tried."""
    conditions = list(dict.fromkeys(
        _norm(c) for c in as_list(get(record, f"{_PS}.conditionsModule.conditions")) if isinstance(c, str)))
    conditions = [c for c in conditions if c][:MAX_CONDITIONS]
    active = _active(_interventions(record))
    informative = [i for i in active if i.get("type") not in _UNINFORMATIVE_TYPES] or active
    phrases: list[str] = []
    for i in informative:
        p = key_phrase(i["name"])
        if p:
            phrases.extend(_variants(p))
    phrases = list(dict.fromkeys(phrases))[:MAX_PHRASES]
    types = {i.get("type") for i in informative if isinstance(i.get("type"), str)}
    return Query(conditions=conditions, condition_terms=_condition_terms(record), phrases=phrases,
                 types=types)


# -- ranking --------------------------------------------------------------------------------------

def _contains(haystack: str, phrase: str) -> bool:
    """Whole words, with a trailing plural "s" not counted: "stromal cell" in "...stromal cells"."""
    stem = lambda s: " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w for w in s.split())  # noqa: E731
    return f" {stem(phrase)} " in f" {stem(haystack)} "


def closeness(query: Query, candidate: dict) -> tuple[int, int, str | None, str | None]:
    """(condition score, intervention score, shared condition, shared intervention phrase).

    Condition: 2 = a condition of the record word for word, 1 = a keyword or MeSH term in
    common, 0 = matched only through the registry's synonyms. Intervention: 2 = a key phrase in
    its intervention names, +1 when that intervention is of a type the record tries (a BIOLOGICAL
    for a BIOLOGICAL); 0 = none (a condition-only listing)."""
    theirs = _condition_terms(candidate)
    shared_cond = next((c for c in query.conditions if c in theirs), None)
    cond = 2 if shared_cond else 0
    if not shared_cond:
        shared_cond = next((t for t in sorted(query.condition_terms) if t in theirs), None)
        cond = 1 if shared_cond else 0
    intr, shared_intr = 0, None
    for i in _interventions(candidate):
        names = [i.get("name")] + as_list(i.get("otherNames"))
        text = " ".join(_norm(n) for n in names if isinstance(n, str))
        hit = next((p for p in query.phrases if _contains(text, p)), None)
        if hit:
            score = 2 + (1 if i.get("type") in query.types else 0)
            if score > intr:
                intr, shared_intr = score, hit
    return cond, intr, shared_cond, shared_intr


def _why(cond_name: str | None, intr_name: str | None, candidate: dict, condition_only: bool) -> str:
    if cond_name:
        parts = [f"same condition: {cond_name}"]
    else:
        theirs = [c for c in as_list(get(candidate, f"{_PS}.conditionsModule.conditions")) if isinstance(c, str)]
        parts = [f"related condition (registry search): {_norm(theirs[0]) if theirs else 'unnamed'}"]
    if intr_name:
        parts.append(f"intervention: {intr_name}")
    elif condition_only:
        parts.append("no recruiting trial of a similar intervention was found: listed by condition only")
    return "; ".join(parts)


def rank(query: Query, records: list[dict], *, own: str, place: "Place | None" = None,
         condition_only: bool = False) -> list[Alternative]:
    """The records as alternatives, closest first, then nearest open site first, then by NCT
    number; the trial itself (and anything without a recruiting status) never listed."""
    from .referral import nearest_sites

    out: list[tuple[tuple, Alternative]] = []
    seen: set[str] = set()
    for r in records:
        try:
            nct = nct_of(r)
        except Exception:  # noqa: BLE001 - a record without a readable id cannot be linked
            continue
        status = get(r, f"{_PS}.statusModule.overallStatus")
        if nct == own or nct in seen or status not in RECRUITING:
            continue
        seen.add(nct)
        cond, intr, cond_name, intr_name = closeness(query, r)
        site = None
        if place is not None:
            near = nearest_sites(r, place, limit=1)
            site = near.sites[0] if near.sites else None
        alt = Alternative(nct_id=nct, title=get(r, f"{_PS}.identificationModule.briefTitle"), status=status,
                          phases=[p for p in as_list(get(r, f"{_PS}.designModule.phases")) if isinstance(p, str)],
                          why=_why(cond_name, intr_name, r, condition_only), closeness=cond + intr,
                          nearest_site=site)
        distance = site.distance_km if site else float("inf")
        out.append(((-alt.closeness, distance, nct), alt))
    out.sort(key=lambda t: t[0])
    return [a for _, a in out]


def _nct_or_none(r: dict) -> str | None:
    try:
        return nct_of(r)
    except Exception:  # noqa: BLE001 - as in rank(): a record without a readable id is not listed
        return None


def _expanded_access(query: Query, records: list[dict], record: dict, own: str) -> list[ExpandedAccessEntry]:
    eai = get(record, f"{_PS}.statusModule.expandedAccessInfo")
    eai = eai if isinstance(eai, dict) else {}
    link = eai.get("nctId") if isinstance(eai.get("nctId"), str) else None
    found: dict[str, ExpandedAccessEntry] = {}
    for r in records:
        nct = nct_of(r)
        if nct == own or get(r, f"{_PS}.designModule.studyType") != "EXPANDED_ACCESS" \
                or (get(r, f"{_PS}.statusModule.overallStatus") != EA_STATUS and nct != link):
            continue  # the filters asked for this; an answer that ignored them is not believed
        _, _, cond_name, intr_name = closeness(query, r)
        why = _why(cond_name, intr_name, r, False)
        if nct == link:
            why = f"this trial's own expanded-access record; {why}"
        found[nct] = ExpandedAccessEntry(nct, get(r, f"{_PS}.identificationModule.briefTitle"),
                                         get(r, f"{_PS}.statusModule.overallStatus"), why)
    out = sorted(found.values(), key=lambda e: e.nct_id)
    if link:
        own_entry = found.get(link) or ExpandedAccessEntry(
            link, None, eai.get("statusForNctId"),
            "this trial's own expanded-access record, as its record names it (status as the trial's "
            "record states it; the search did not list it as available)")
        out = [own_entry] + [e for e in out if e.nct_id != link]
    return out


# -- the search -----------------------------------------------------------------------------------

def geo_param(place: "Place", within_miles: float) -> str:
    return f"distance({place.lat:.4f},{place.lon:.4f},{within_miles:g}mi)"


def find(client: "Client", record: dict, place: "Place | None" = None, limit: int = DEFAULT_LIMIT, *,
         within_miles: float = DEFAULT_WITHIN_MILES) -> Alternatives:
    """Recruiting alternatives and expanded access for ``record`` (see the module docstring).
    Raises ``CtgovError`` when a search fails: no partial or older list is returned."""
    own = nct_of(record)
    q = build_query(record)
    before = client.stats.requests
    result = Alternatives(nct_id=own, query=q, place=place,
                          within_miles=within_miles if place is not None else None)
    if not q.conditions:
        # Without a condition there is no "same condition" to search for.
        return result
    base = {"query.cond": q.cond_param(), "filter.overallStatus": ",".join(RECRUITING)}
    if place is not None:
        base["filter.geo"] = geo_param(place, within_miles)
    records: list[dict] = []
    if q.phrases:
        params = {**base, "query.intr": q.intr_param()}
        result.searches.append(params)
        records = client.search(params, max_results=MAX_RESULTS).records
    if not [r for r in records if nct_of(r) != own]:
        result.condition_only = True
        result.searches.append(base)
        records = client.search(base, max_results=MAX_RESULTS).records
    result.alternatives = rank(q, records, own=own, place=place, condition_only=result.condition_only)
    listed = {a.nct_id for a in result.alternatives}
    result.records = {n: r for r in records if (n := _nct_or_none(r)) in listed}
    ea = {"query.cond": q.cond_param(), "filter.overallStatus": EA_STATUS,
          "filter.advanced": "AREA[StudyType]EXPANDED_ACCESS"}
    if q.phrases:
        ea["query.intr"] = q.intr_param()
    result.searches.append(ea)
    ea_records = client.search(ea, max_results=MAX_RESULTS).records
    result.expanded_access = _expanded_access(q, ea_records, record, own)
    result.requests = client.stats.requests - before
    return result.limited(limit)
