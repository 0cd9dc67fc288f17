"""Site changes for ``diff``: sites added, removed, reopened or closed, their contacts and details,
and per-site status vanishing everywhere at once. Pure, like ``diff``."""

from __future__ import annotations

from collections import Counter

from . import record as rec
from .diff_util import LOCATIONS, as_text, keyed_detail
from .events import KINDS, Change
from .record import as_list


def _site_key(loc: dict) -> tuple[str, str, str]:
    return (as_text(loc.get("facility")), as_text(loc.get("city")), as_text(loc.get("country")))


def _paired_sites(a: list, b: list) -> tuple[dict[tuple, dict], dict[tuple, dict]]:
    """Old and new sites under shared keys: the same key on both sides is the same site.

    Several sites may share (facility, city, country) ("Research Site" sponsors list one per
    address). Numbering them by position would pair different sites once the canonical sort
    moves one (its status changed), making phantom changes on both. So, within such a group,
    identical sites pair first, then sites at the same address (state, zip, geoPoint), then the
    rest in order; a site left over is added or removed."""
    ga: dict[tuple, list[dict]] = {}
    gb: dict[tuple, list[dict]] = {}
    for items, groups in ((a, ga), (b, gb)):
        for item in items:
            if not isinstance(item, dict):
                item = {"value": item}
            groups.setdefault(_site_key(item), []).append(item)
    ka: dict[tuple, dict] = {}
    kb: dict[tuple, dict] = {}
    for k in set(ga) | set(gb):
        for i, (x, y) in enumerate(_pair_group(ga.get(k, []), gb.get(k, []))):
            if x is not None:
                ka[(k, i)] = x
            if y is not None:
                kb[(k, i)] = y
    return ka, kb


def _same_address(x: dict, y: dict) -> bool:
    return all(x.get(f) == y.get(f) for f in ("state", "zip", "geoPoint"))


def _pair_group(xs: list[dict], ys: list[dict]) -> list[tuple[dict | None, dict | None]]:
    """Old and new sites of one (facility, city, country) paired: identical first, then at the
    same address, then in order; the rest unpaired (added or removed)."""
    if len(xs) <= 1 and len(ys) <= 1:
        return [(xs[0] if xs else None, ys[0] if ys else None)]
    xs, ys = list(xs), list(ys)
    pairs: list[tuple[dict | None, dict | None]] = []
    for same in (lambda x, y: x == y, _same_address):
        for x in list(xs):
            y = next((y for y in ys if same(x, y)), None)
            if y is not None:
                pairs.append((x, y))
                xs.remove(x)
                ys.remove(y)
    pairs += list(zip(xs, ys))
    return pairs + [(x, None) for x in xs[len(ys):]] + [(None, y) for y in ys[len(xs):]]


def _site_name(loc: dict) -> str:
    place = ", ".join(p for p in (as_text(loc.get(k)) for k in ("city", "state", "country")) if p)
    fac = as_text(loc.get("facility"))
    return f"{fac} ({place})" if fac and place else (fac or place or "(unnamed site)")


def _site_value(loc: dict) -> dict:
    return {k: loc[k] for k in ("facility", "city", "state", "country", "status") if loc.get(k)}


_SITE_OWN = frozenset({"status", "contacts"})


def sites(o: dict, n: dict) -> list[Change]:
    """The catalogue entry for ``contactsLocationsModule.locations``."""
    a, b = as_list(rec.get(o, LOCATIONS)), as_list(rec.get(n, LOCATIONS))
    if a == b:
        return []
    ka, kb = _paired_sites(a, b)
    # The registry drops per-site status from every site once a study stops recruiting: one
    # summary line instead of a thousand "Recruiting -> —" lines (overall_status carries the news).
    vanished = any(loc.get("status") for loc in ka.values()) and not any(
        loc.get("status") for loc in kb.values())
    out = [_statuses_vanished(ka.values())] if vanished else []
    for k in sorted(set(ka) | set(kb)):
        x, y = ka.get(k), kb.get(k)
        if x != y:
            out.extend(_one_site(x, y, vanished))
    return out


def _statuses_vanished(old_sites) -> Change:
    counts = Counter(loc.get("status") or rec.UNSPECIFIED for loc in old_sites if loc.get("status"))
    k = KINDS["site_statuses"]
    return Change(k.field, k.label, dict(sorted(counts.items())), None, k.severity,
                  detail=f"Per-site recruitment status is no longer listed for "
                         f"{sum(counts.values())} site{'' if sum(counts.values()) == 1 else 's'} (was: "
                         + ", ".join(f"{v} {rec.words(s).lower()}" for s, v in sorted(counts.items()))
                         + ").")


def _one_site(x: dict | None, y: dict | None, vanished: bool) -> list[Change]:
    """The changes of one site, ``x`` before and ``y`` after (``None``: not there)."""
    loc = y if y is not None else x
    name = _site_name(loc)
    site = as_text(loc.get("facility")) or name

    def change(field: str, old, new, **kw) -> Change:
        k = KINDS[field]
        return Change(field, k.words(site=name), old, new, k.severity, site=site, **kw)

    if x is None:
        return [change("site_added", None, _site_value(y))]
    if y is None:
        return [change("site_removed", _site_value(x), None)]
    out = []
    if x.get("status") != y.get("status") and not (vanished and not y.get("status")):
        out.append(change("site_status", x.get("status"), y.get("status")))
    if x.get("contacts") != y.get("contacts"):
        ca, cb = as_list(x.get("contacts")), as_list(y.get("contacts"))
        out.append(change("site_contact", ca, cb, detail=keyed_detail(ca, cb, lambda c: c.get("name") or "")))
    rest = sorted(key for key in set(x) | set(y) if key not in _SITE_OWN and x.get(key) != y.get(key))
    if rest:
        out.append(change("site_details", {key: x.get(key) for key in rest}, {key: y.get(key) for key in rest}))
    return out
