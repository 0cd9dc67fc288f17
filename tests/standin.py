"""A local stand-in of the ClinicalTrials.gov API v2, for integration tests and benchmarks.

It also serves the registry's internal version-history API (``/api/int/studies/{id}/history``
and ``…/history/{v}``) from version sequences given with ``put_history`` (tests build synthetic
ones, marked ``"synthetic": true``) or read from fixture folders (``load_history``), with
per-trial faults (``history_fault``: 404, garbage, a wrong shape).

Serves ``/api/v2/version``, ``/api/v2/studies/{id}`` and ``/api/v2/studies`` from records held
in memory, on 127.0.0.1 in a background thread, with the real API's quirks that trialwatch
relies on: case-insensitive ids with optional leading zeros, 301 for alias ids, plain-text
400/404 bodies, opaque page tokens that are only valid with the same parameters, and faults on
demand (``fail_next``). It is a stand-in, not a search engine: a query (``query.cond``,
``query.intr``, ``query.term``, ``query.spons``) is a small subset of Essie: alternatives joined
by ``OR``, each a case-insensitive "every word appears" match where a "quoted phrase" must appear
as whole words (a plural "s" does not count); ``query.cond`` searches conditions, keywords and
MeSH condition terms, ``query.intr`` intervention names and other names. ``filter.advanced`` takes
``AREA[LastUpdatePostDate]RANGE[...]`` and ``AREA[StudyType]VALUE``, joined by ``AND``. Only the
parameters trialwatch sends are implemented.

    with StandIn(records) as api:
        client = Client(api.base_url)
        api.fail_next("503", times=2)

As a script, for manual runs and benchmarks::

    python tests/standin.py --records ../shared/ctgov/records --port 8765
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import re
import threading
from collections import deque
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

_NCT_RE = re.compile(r"^NCT0*([1-9]\d{0,7})$", re.IGNORECASE)
_RANGE_RE = re.compile(r"^AREA\[LastUpdatePostDate\]RANGE\[(MIN|\d{4}(?:-\d{2}){0,2}),\s*(MAX|\d{4}(?:-\d{2}){0,2})\]$")
_STUDY_TYPE_RE = re.compile(r"^AREA\[StudyType\]\s*([A-Z_]+)$")
_GEO_RE = re.compile(r"^distance\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*([\d.]+)\s*(mi|km)?\s*\)$", re.IGNORECASE)

STATUSES = frozenset({
    "ACTIVE_NOT_RECRUITING", "COMPLETED", "ENROLLING_BY_INVITATION", "NOT_YET_RECRUITING",
    "RECRUITING", "SUSPENDED", "TERMINATED", "WITHDRAWN", "AVAILABLE", "NO_LONGER_AVAILABLE",
    "TEMPORARILY_NOT_AVAILABLE", "APPROVED_FOR_MARKETING", "WITHHELD", "UNKNOWN",
})
# /studies parameters of the real API [OAS]; IMPLEMENTED are served, the rest answer 400 saying
# so (a silent "ignore" would let a test pass against a filter that did nothing).
LIST_PARAMS = frozenset({
    "format", "markupFormat", "query.cond", "query.term", "query.locn", "query.titles", "query.intr",
    "query.outc", "query.spons", "query.lead", "query.id", "query.patient", "filter.overallStatus",
    "filter.geo", "filter.ids", "filter.advanced", "filter.synonyms", "postFilter.overallStatus",
    "postFilter.geo", "postFilter.ids", "postFilter.advanced", "postFilter.synonyms", "aggFilters",
    "geoDecay", "fields", "sort", "countTotal", "pageSize", "pageToken",
})
IMPLEMENTED = frozenset({
    "format", "markupFormat", "query.cond", "query.term", "query.intr", "query.spons",
    "filter.overallStatus", "filter.geo", "filter.ids", "filter.advanced", "fields", "countTotal",
    "pageSize", "pageToken",
})
STUDY_PARAMS = frozenset({"format", "markupFormat", "fields"})
FAULTS = frozenset({"429", "503", "500", "drop", "truncate", "html", "plain404"})

HTML_PAGE = (b"<!DOCTYPE html><html><head><title>ClinicalTrials.gov</title></head><body>"
             b"<h1>We'll be right back</h1><p>ClinicalTrials.gov is undergoing maintenance.</p>"
             b"</body></html>")


def norm_id(value: str) -> str | None:
    m = _NCT_RE.match(value.strip())
    return "NCT" + m.group(1).zfill(8) if m else None


def _get(node, *path, default=None):
    for p in path:
        if not isinstance(node, dict) or p not in node:
            return default
        node = node[p]
    return node


class _Entry:
    """One record with what every request needs precomputed: bytes and search text."""

    __slots__ = ("nct_id", "record", "body", "cond", "intr", "term", "spons", "status", "updated", "geo",
                 "study_type")

    def __init__(self, record: dict) -> None:
        ps = record.get("protocolSection", {})
        self.nct_id = norm_id(_get(ps, "identificationModule", "nctId", default="") or "")
        if not self.nct_id:
            raise ValueError("record has no readable protocolSection.identificationModule.nctId")
        self.record = record
        self.body = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
        conditions = _get(ps, "conditionsModule", "conditions", default=[]) or []
        keywords = _get(ps, "conditionsModule", "keywords", default=[]) or []
        interventions = []
        for i in _get(ps, "armsInterventionsModule", "interventions", default=[]) or []:
            interventions += [i.get("name", "")] + list(i.get("otherNames") or [])
        meshes = [m.get("term", "") for m in _get(record, "derivedSection", "conditionBrowseModule", "meshes",
                                                  default=[]) or []]
        sponsors = [_get(ps, "sponsorCollaboratorsModule", "leadSponsor", "name", default="") or ""]
        sponsors += [c.get("name", "") for c in _get(ps, "sponsorCollaboratorsModule", "collaborators", default=[]) or []]
        titles = [_get(ps, "identificationModule", k, default="") or "" for k in ("briefTitle", "officialTitle", "acronym")]
        summary = _get(ps, "descriptionModule", "briefSummary", default="") or ""
        self.cond = " ".join(conditions + keywords + meshes).lower()
        self.intr = " ".join(interventions).lower()
        self.spons = " ".join(sponsors).lower()
        # Malformed records (an object where text belongs) are served as they are, for fault tests.
        words = [w if isinstance(w, str) else json.dumps(w) for w in (*titles, summary)]
        self.term = " ".join([self.nct_id, *words, self.cond, self.intr, self.spons]).lower()
        self.status = _get(ps, "statusModule", "overallStatus")
        self.study_type = _get(ps, "designModule", "studyType")
        self.updated = _get(ps, "statusModule", "lastUpdatePostDateStruct", "date", default="") or ""
        self.geo = [(loc["geoPoint"]["lat"], loc["geoPoint"]["lon"])
                    for loc in _get(ps, "contactsLocationsModule", "locations", default=[]) or []
                    if isinstance(loc.get("geoPoint"), dict)]


class _BadRequest(Exception):
    pass


class StandIn:
    """The stand-in server. ``start()``/``stop()`` or use it as a context manager."""

    def __init__(self, records: Iterable[dict] = (), *, data_timestamp: str = "2026-11-25T09:00:05",
                 port: int = 0, empty_last_page: bool = False, api_version: str = "2.0.5") -> None:
        self.data_timestamp = data_timestamp
        self.api_version = api_version
        # True: every full page carries a nextPageToken, so a listing whose size is a multiple
        # of pageSize ends with an empty page (the API allows it; clients must cope).
        self.empty_last_page = empty_last_page
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.bytes_sent = 0
        self._port = port
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}  # insertion order is listing order
        self._aliases: dict[str, str] = {}
        self._faults: deque[tuple[str, dict]] = deque()
        self._history: dict[str, list[dict]] = {}  # nct -> [{version, date, status, moduleLabels, record}]
        self._history_faults: dict[str, str] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        for r in records:
            self.put(r)

    # -- data -------------------------------------------------------------------------------

    def put(self, record: dict) -> None:
        """Add or replace a study (keyed by its nctId); its nctIdAliases become aliases."""
        e = _Entry(record)
        with self._lock:
            self._entries[e.nct_id] = e
            self._aliases.pop(e.nct_id, None)
            for a in _get(record, "protocolSection", "identificationModule", "nctIdAliases", default=[]) or []:
                a = norm_id(a)
                if a and a != e.nct_id:
                    self._aliases[a] = e.nct_id

    def remove(self, nct_id: str) -> None:
        with self._lock:
            self._entries.pop(norm_id(nct_id) or nct_id, None)

    def alias(self, old_id: str, new_id: str) -> None:
        """GET /studies/old answers 301 to /studies/new; filter.ids=old finds new."""
        old, new = norm_id(old_id), norm_id(new_id)
        if not old or not new:
            raise ValueError(f"not NCT numbers: {old_id!r}, {new_id!r}")
        with self._lock:
            self._aliases[old] = new

    def put_history(self, nct_id: str, versions: list[dict]) -> None:
        """The registry's versions of a trial, oldest first: each ``{"date", "record"}`` and
        optionally ``"moduleLabels"``; numbered 0, 1, ... and given the record's status."""
        nct = norm_id(nct_id)
        out = []
        for i, v in enumerate(versions):
            out.append({"version": i, "date": v["date"],
                        "status": _get(v["record"], "protocolSection", "statusModule", "overallStatus"),
                        "moduleLabels": list(v.get("moduleLabels", [] if i == 0 else ["Study Status"])),
                        "body": json.dumps({"studyVersion": i, "study": v["record"]},
                                           ensure_ascii=False).encode()})
        with self._lock:
            self._history[nct] = out

    def load_history(self, folder: str | Path) -> None:
        """Fixture folders ``folder/NCT…/`` holding ``history.json`` (the version list, real
        shape) and ``v{n}.json`` (the version answers, real shape)."""
        for d in sorted(Path(folder).iterdir()):
            listing = d / "history.json"
            if not listing.is_file():
                continue
            changes = json.loads(listing.read_text(encoding="utf-8"))["changes"]
            out = [dict(c, body=(d / f"v{c['version']}.json").read_bytes()) for c in changes]
            with self._lock:
                self._history[norm_id(d.name)] = out

    def history_fault(self, nct_id: str, kind: str | None) -> None:
        """Every history request for this trial fails: "404", "garbage" (200, not JSON),
        "shape" (200, JSON of another shape); None clears it."""
        with self._lock:
            if kind is None:
                self._history_faults.pop(norm_id(nct_id), None)
            else:
                if kind not in ("404", "garbage", "shape"):
                    raise ValueError(f"unknown history fault {kind!r}")
                self._history_faults[norm_id(nct_id)] = kind

    def set_data_timestamp(self, ts: str) -> None:
        self.data_timestamp = ts

    def fail_next(self, kind: str, times: int = 1, **kw) -> None:
        """The next ``times`` requests (any path) fail as ``kind``; queued faults run in order.
        Kinds: 429 (kw retry_after=1, seconds or an HTTP date string), 503, 500, drop (close
        without a response), truncate (200 with half a JSON body), html (200 text/html page),
        plain404 (404 text/plain whatever the path)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULTS)}")
        with self._lock:
            self._faults.extend((kind, kw) for _ in range(times))

    def clear_faults(self) -> None:
        """Drop faults still queued, e.g. the rest of a ``fail_next("500", times=50)``."""
        with self._lock:
            self._faults.clear()

    def reset_requests(self) -> None:
        with self._lock:
            self.requests.clear()
            self.bytes_sent = 0

    # -- server -----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in is not running; call start()")
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v2"

    def start(self) -> "StandIn":
        if self._server is not None:
            return self
        standin = self

        class Handler(_Handler):
            api = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="ctgov-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> "StandIn":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling (called from handler threads) -------------------------------------

    def _take_fault(self) -> tuple[str, dict] | None:
        with self._lock:
            return self._faults.popleft() if self._faults else None

    def _respond(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) for a GET; faults are applied by the handler."""
        if path.startswith("/api/int/"):
            return self._int(path[len("/api/int/"):].rstrip("/"))
        prefix = "/api/v2/"
        if not path.startswith(prefix):
            return _text(404, "Not Found")
        route = path[len(prefix):].rstrip("/")
        try:
            if route == "version":
                body = json.dumps({"apiVersion": self.api_version, "dataTimestamp": self.data_timestamp})
                return 200, {"Content-Type": "application/json"}, body.encode()
            if route == "studies":
                return self._list(query)
            if route.startswith("studies/") and "/" not in route[len("studies/"):]:
                return self._one(route[len("studies/"):], query)
        except _BadRequest as e:
            return _text(400, str(e))
        return _text(404, "Not Found")

    def _int(self, route: str) -> tuple[int, dict[str, str], bytes]:
        """The internal API: studies/{id}/history and studies/{id}/history/{v}."""
        m = re.match(r"^studies/([^/]+)/history(?:/(\d+))?$", route)
        nct = norm_id(m.group(1)) if m else None
        if nct is None:
            return _text(404, "Not Found")
        with self._lock:
            versions = self._history.get(nct)
            fault = self._history_faults.get(nct)
        if fault == "404" or versions is None:
            return _text(404, "Not Found")
        if fault == "garbage":
            return 200, {"Content-Type": "application/json"}, b"\x00\x17<<not json"
        if fault == "shape":
            return 200, {"Content-Type": "application/json"}, b'{"versions": "soon"}'
        if m.group(2) is None:
            listing = [{k: v for k, v in e.items() if k != "body"} for e in versions]
            return 200, {"Content-Type": "application/json"}, json.dumps({"changes": listing}).encode()
        v = int(m.group(2))
        if v >= len(versions):
            return _text(404, "Not Found")
        return 200, {"Content-Type": "application/json"}, versions[v]["body"]

    def _one(self, raw_id: str, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        _unknown(query, STUDY_PARAMS, STUDY_PARAMS)
        nct = norm_id(raw_id)
        if nct is None:
            raise _BadRequest(f"Invalid value in parameter `nctId`: {raw_id}")
        with self._lock:
            entry = self._entries.get(nct)
            target = self._aliases.get(nct)
        if entry is not None:
            return 200, {"Content-Type": "application/json"}, entry.body
        if target is not None:
            qs = "&".join(f"{k}={v}" for k, v in query.items())
            return 301, {"Location": f"/api/v2/studies/{target}" + (f"?{qs}" if qs else "")}, b""
        return _text(404, f"Study {nct} not found")

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        _unknown(query, LIST_PARAMS, IMPLEMENTED)
        if query.get("format", "json") != "json":
            raise _BadRequest("the trialwatch stand-in serves format=json only")
        size = _page_size(query.get("pageSize"))
        token = query.get("pageToken")
        fingerprint = _fingerprint(query)
        offset = _read_token(token, fingerprint) if token else 0
        matches = self._match(query)
        page = matches[offset:offset + size]
        end = offset + len(page)
        more = end < len(matches) or (self.empty_last_page and len(page) == size)
        out = b'{"studies":[' + b",".join(e.body for e in page) + b"]"
        if more:
            out += b',"nextPageToken":' + json.dumps(_make_token(end, fingerprint)).encode()
        if query.get("countTotal", "").lower() == "true" and not token:
            out += b',"totalCount":' + str(len(matches)).encode()
        return 200, {"Content-Type": "application/json"}, out + b"}"

    def _match(self, query: dict[str, str]) -> list[_Entry]:
        with self._lock:
            entries = self._entries
            aliases = self._aliases
            if "filter.ids" in query:
                # a direct lookup per id: no scan, so batches stay fast with thousands of records
                picked: dict[str, _Entry] = {}
                for part in re.split(r"[,|]", query["filter.ids"]):
                    nct = norm_id(part)
                    if nct is None:
                        if part.strip():
                            raise _BadRequest(f"Invalid value in parameter `filter.ids`: {part.strip()}")
                        continue
                    nct = nct if nct in entries else aliases.get(nct, nct)
                    if nct in entries:
                        picked[nct] = entries[nct]
                candidates = list(picked.values())
            else:
                candidates = list(entries.values())
        tests = []
        for param, attr in (("query.cond", "cond"), ("query.intr", "intr"), ("query.term", "term"),
                            ("query.spons", "spons")):
            if query.get(param):
                alternatives = _essie(query[param])
                tests.append(lambda e, a=attr, alts=alternatives: any(_matches(getattr(e, a), alt) for alt in alts))
        if query.get("filter.overallStatus"):
            wanted = {s.strip().upper() for s in re.split(r"[,|]", query["filter.overallStatus"]) if s.strip()}
            bad = sorted(wanted - STATUSES)
            if bad:
                raise _BadRequest(f"Invalid value in parameter `overallStatus`: {bad[0]}")
            tests.append(lambda e, w=wanted: e.status in w)
        for part in re.split(r"\s+AND\s+", query.get("filter.advanced", "").strip()):
            if not part:
                continue
            m = _RANGE_RE.match(part)
            t = _STUDY_TYPE_RE.match(part)
            if m:
                lo, hi = m.group(1), m.group(2)
                tests.append(lambda e, lo=lo, hi=hi: bool(e.updated) and (lo == "MIN" or e.updated >= lo)
                             and (hi == "MAX" or e.updated[:len(hi)] <= hi))
            elif t:
                study_type = t.group(1)
                tests.append(lambda e, v=study_type: e.study_type == v)
            else:
                raise _BadRequest("the trialwatch stand-in supports only filter.advanced="
                                  "AREA[LastUpdatePostDate]RANGE[YYYY-MM-DD,MAX] and AREA[StudyType]VALUE, "
                                  "joined by AND")
        if query.get("filter.geo"):
            m = _GEO_RE.match(query["filter.geo"].strip())
            if not m:
                raise _BadRequest("Invalid value in parameter `filter.geo`: expected distance(lat,lon,Nmi)")
            lat, lon, dist = float(m.group(1)), float(m.group(2)), float(m.group(3))
            km = dist if (m.group(4) or "mi").lower() == "km" else dist * 1.609344
            tests.append(lambda e: any(_km(lat, lon, a, b) <= km for a, b in e.geo))
        return [e for e in candidates if all(t(e) for t in tests)]


def _essie(expr: str) -> list[list[tuple[str, str]]]:
    """``"a b" OR c d`` -> [[("phrase", "a b")], [("word", "c"), ("word", "d")]]; parentheses
    are ignored, AND is implied between the terms of one alternative."""
    out = []
    for alt in re.split(r"\s+OR\s+", expr.replace("(", " ").replace(")", " ").strip()):
        terms = [("phrase", m.group(1).lower()) if m.group(1) is not None else ("word", m.group(2).lower())
                 for m in re.finditer(r'"([^"]*)"|(\S+)', alt) if m.group(0) != "AND"]
        if terms:
            out.append(terms)
    return out


def _stem(text: str) -> str:
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") else w
                    for w in re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _matches(text: str, terms: list[tuple[str, str]]) -> bool:
    for kind, value in terms:
        if kind == "word" and value not in text:
            return False
        if kind == "phrase" and f" {_stem(value)} " not in f" {_stem(text)} ":
            return False
    return True


def _text(status: int, message: str) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "text/plain"}, message.encode()


def _unknown(query: dict[str, str], known: frozenset, implemented: frozenset) -> None:
    for k in query:
        if k not in known:
            raise _BadRequest(f"`{k}` is unknown parameter")  # the real API's wording
        if k not in implemented:
            raise _BadRequest(f"`{k}` is not implemented by the trialwatch stand-in")


def _page_size(value: str | None) -> int:
    if value is None:
        return 10
    try:
        n = int(value)
    except ValueError:
        raise _BadRequest(f"Invalid value in parameter `pageSize`: {value}") from None
    if n < 0:
        raise _BadRequest(f"Invalid value in parameter `pageSize`: {value}")
    return 10 if n == 0 else min(n, 1000)  # the API's own rules: 0 -> default, >1000 -> 1000


def _fingerprint(query: dict[str, str]) -> str:
    # Later pages must repeat the same parameters, except these (as the real API documents).
    keep = sorted((k, v) for k, v in query.items() if k not in ("pageToken", "pageSize", "countTotal"))
    return hashlib.sha256(json.dumps(keep).encode()).hexdigest()[:10]


def _make_token(offset: int, fingerprint: str) -> str:
    return base64.urlsafe_b64encode(f"{offset}:{fingerprint}".encode()).decode().rstrip("=")


def _read_token(token: str, fingerprint: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        offset, fp = raw.split(":")
        if fp == fingerprint:
            return int(offset)
    except (ValueError, UnicodeDecodeError):
        pass
    raise _BadRequest(f"Invalid value in parameter `pageToken`: {token}")


def _km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 6371.0 * 2 * math.asin(math.sqrt(a))


class _Handler(BaseHTTPRequestHandler):
    api: StandIn
    protocol_version = "HTTP/1.1"  # keep-alive, as the real API; every response has a length
    server_version = "ctgov-standin/1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; no 40 ms stall between

    def log_message(self, format: str, *args) -> None:  # quiet: tests read api.requests instead
        pass

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self.api._lock:
            self.api.requests.append(("GET", parts.path, query))
        fault = self.api._take_fault()
        if fault is not None:
            if self._fault(*fault):
                return
        status, headers, body = self.api._respond(parts.path, query)
        self._send(status, headers, body)

    def _fault(self, kind: str, kw: dict) -> bool:
        """Answer with a fault; True when the request is done."""
        if kind == "drop":
            self.close_connection = True  # no status line, no headers: the client sees a reset
            return True
        if kind == "429":
            self._send(429, {"Content-Type": "text/plain", "Retry-After": str(kw.get("retry_after", 1))},
                       b"Too Many Requests")
        elif kind in ("503", "500"):
            self._send(int(kind), {"Content-Type": "text/plain"},
                       b"Service Unavailable" if kind == "503" else b"Internal Server Error")
        elif kind == "html":
            self._send(200, {"Content-Type": "text/html; charset=utf-8"}, HTML_PAGE)
        elif kind == "plain404":
            self._send(404, {"Content-Type": "text/plain"}, b"Not Found")
        elif kind == "truncate":
            parts = urlsplit(self.path)
            status, headers, body = self.api._respond(parts.path, dict(parse_qsl(parts.query)))
            if status != 200 or not body:
                body = b'{"studies":[{"protocolSection":{"identificationModule":{"nctId":"NCT00000001"}}}]}'
            self._send(200, {"Content-Type": "application/json"}, body[: len(body) // 2])
        return True

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)  # adds Server and Date
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # Counted before the write: a client that has read the body must see it counted.
        with self.api._lock:
            self.api.bytes_sent += len(body)
        self.wfile.write(body)


def load_records(folder: str | Path) -> list[dict]:
    """Every study in ``folder/*.json``: single records and ``{"studies": [...]}`` pages."""
    out: list[dict] = []
    for p in sorted(Path(folder).glob("*.json")):
        data = json.loads(p.read_text(encoding="utf-8"))
        for r in data["studies"] if isinstance(data, dict) and "studies" in data else [data]:
            if _get(r, "protocolSection", "identificationModule", "nctId"):
                out.append(r)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", action="append", default=[], help="folder of *.json records (repeatable)")
    ap.add_argument("--history", action="append", default=[],
                    help="folder of NCT…/ version-history fixtures (history.json, v0.json, ...)")
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--data-timestamp", default="2026-11-25T09:00:05")
    args = ap.parse_args(argv)
    records = [r for folder in args.records for r in load_records(folder)]
    api = StandIn(records, port=args.port, data_timestamp=args.data_timestamp)
    for folder in args.history:
        api.load_history(folder)
    api.start()
    print(f"serving {len(api._entries)} studies at {api.base_url} (Ctrl-C stops)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()


if __name__ == "__main__":
    main()
