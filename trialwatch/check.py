"""``trialwatch check``: fetch named trials now, store what is new, report what changed.

Library code under the CLI command: ``check_trials(store, config, ids)`` returns one
``CheckResult`` per trial (an error in one trial does not hide the others' results).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import CtgovError, TrialNotFound, TrialwatchError

if TYPE_CHECKING:
    from .config import Config
    from .ctgov import Client
    from .eligibility import Criteria
    from .places import Place
    from .record import Summary
    from .referral import Nearest, RecordWarning
    from .store import Recorded, Store


@dataclass
class CheckResult:
    nct_id: str
    requested_id: str
    summary: "Summary | None" = None
    recorded: "Recorded | None" = None
    error: TrialwatchError | None = None
    changes: list = field(default_factory=list)
    # Ready to refer: warnings about the record, the criteria as lists, and (with a place) the
    # nearest open sites.
    warnings: "list[RecordWarning]" = field(default_factory=list)
    criteria: "Criteria | None" = None
    nearest: "Nearest | None" = None
    problems: list[str] = field(default_factory=list)  # malformed fields, stored as unknown

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON object of ``trialwatch check --json`` (documented in the README)."""
        s = self.summary
        r = self.recorded
        return {
            "nct_id": self.nct_id,
            "requested_id": self.requested_id,
            "title": s.title,
            "status": s.status,
            "status_words": s.status_words,
            "last_known_status": s.last_known_status,
            "why_stopped": s.why_stopped,
            "enrollment": {"count": s.enrollment_count, "type": s.enrollment_type},
            "phases": list(s.phases),
            "sponsor": s.lead_sponsor,
            "start_date": s.start_date,
            "primary_completion_date": s.primary_completion_date,
            "completion_date": s.completion_date,
            "has_results": s.has_results,
            "sites_by_status": dict(s.sites_by_status),
            "central_contacts": [asdict(c) for c in s.central_contacts],
            "expanded_access": asdict(s.expanded_access) if s.expanded_access else None,
            "url": s.url,
            "first_snapshot": bool(r and r.first),
            "changed": bool(r and r.stored and not r.first),
            "previous_check": _iso(r.previous_checked_at) if r else None,
            "unchanged_since": _iso(r.previous_fetched_at) if r and not r.stored else None,
            "changes": [c.to_dict() for c in self.changes],
            "warnings": [w.to_dict() for w in self.warnings],
            "eligibility": self._eligibility(),
            **self._nearest(),
        }

    def _eligibility(self) -> dict[str, Any]:
        e = self.summary.eligibility
        lists = self.criteria.to_dict() if self.criteria else {"inclusion": [], "exclusion": [], "other": []}
        return {**lists, "sex": e.sex, "minimum_age": e.minimum_age, "maximum_age": e.maximum_age,
                "healthy_volunteers": e.healthy_volunteers}

    def _nearest(self) -> dict[str, Any]:
        """``near`` and ``nearest_sites``: only when a place was given."""
        n = self.nearest
        if n is None:
            return {}
        return {"near": {**n.place.to_dict(), "open_sites": n.open_sites, "unranked": n.unranked},
                "nearest_sites": [site.to_dict() for site in n.sites]}


def _iso(t: dt.datetime | None) -> str | None:
    return t.isoformat() + "Z" if t else None


def check_trials(store: "Store", config: "Config", ids: list[str], *,
                 client: "Client | None" = None, near: "Place | None" = None, limit: int = 5,
                 today: dt.date | None = None) -> list[CheckResult]:
    """Fetch ``ids`` (normalised NCT numbers) live, store each, return what happened. With
    ``near``, each result names its ``limit`` nearest open sites; ``today`` (default: today in
    UTC) dates the record warnings."""
    from .ctgov import Client

    today = today or dt.datetime.now(dt.timezone.utc).date()

    own_client = client is None
    client = client or Client.from_config(config.ctgov)
    try:
        fetched, errors = fetch_records(store, client, ids)
        results: list[CheckResult] = []
        for requested in ids:
            if requested in errors:
                results.append(CheckResult(nct_id=requested, requested_id=requested, error=errors[requested]))
                continue
            raw = fetched[requested]
            results.append(store_and_summarize(store, config, raw, requested, near=near, limit=limit,
                                               today=today))
        # A trial stored for the first time gets the registry's status timeline: one request
        # each, through the same throttled client; a failure there only warns.
        from .history import fetch_lists

        fetch_lists(store, config, client, [r.nct_id for r in results if r.recorded and r.recorded.first])
    finally:
        if own_client:
            client.close()
    return results


def store_and_summarize(store: "Store", config: "Config", raw: dict, requested: str, *,
                        near: "Place | None" = None, limit: int = 5,
                        today: dt.date | None = None) -> CheckResult:
    from .eligibility import parse_criteria
    from .record import get, nct_of, summary
    from .referral import nearest_sites, warnings

    recorded = store.record_fetch(raw, requested_id=requested, ignore=config.ignore)
    if recorded.error is not None:
        from .errors import CtgovBadResponse

        return CheckResult(nct_id=nct_of(raw), requested_id=requested, error=CtgovBadResponse(
            f"{nct_of(raw)}: the record from ClinicalTrials.gov was {recorded.error}",
            hint="The other trials were stored; this one is tried again on the next check or poll."))
    changes = sorted(recorded.changes, key=lambda c: -c.rank)
    return CheckResult(
        nct_id=nct_of(raw), requested_id=requested, summary=summary(raw), recorded=recorded,
        changes=changes,
        warnings=warnings(raw, today or dt.datetime.now(dt.timezone.utc).date()),
        criteria=parse_criteria(get(raw, "protocolSection.eligibilityModule.eligibilityCriteria")),
        nearest=nearest_sites(raw, near, limit) if near is not None else None,
        problems=list(recorded.problems))


def fetch_records(store: "Store", client: "Client",
                  ids: list[str]) -> tuple[dict[str, dict], dict[str, TrialwatchError]]:
    """Fetch each requested id: in ``filter.ids`` batches when there are several, then one by
    one only for those the batch did not return (aliases answer 301, unknown ids 404)."""
    fetched: dict[str, dict] = {}
    errors: dict[str, TrialwatchError] = {}
    from .record import nct_of

    wanted = {i: store.resolve_alias(i) for i in ids}
    if len(ids) > 1:
        try:
            for raw in client.studies(sorted(set(wanted.values()))):
                nct = nct_of(raw)
                for req, canon in wanted.items():
                    if canon == nct:
                        fetched[req] = raw
        except CtgovError as e:
            return {}, {i: e for i in ids}
    for req in ids:
        if req in fetched:
            continue
        try:
            got = client.study(wanted[req])
            fetched[req] = got.record
        except TrialNotFound as e:
            mark_gone(store, wanted[req])
            errors[req] = e
        except CtgovError as e:
            errors[req] = e
    return fetched, errors


def mark_gone(store: "Store", nct_id: str) -> bool:
    """A record answers 404. Seen before: store that as an event, once, and return True. Never
    seen: remember the 404 (a trial row with ``gone_at`` and no snapshot), so a poll does not
    count it as "never fetched" forever, and return False: there is no news to tell."""
    from sqlalchemy import select

    from . import events
    from .store import Snapshot, Trial, utcnow

    with store.session() as s, s.begin():
        trial = s.get(Trial, nct_id)
        if trial is None:
            s.add(Trial(nct_id=nct_id, first_seen_at=utcnow(), gone_at=utcnow(), last_checked_at=utcnow()))
            return False
        if trial.gone_at is not None:
            trial.last_checked_at = utcnow()
            return False
        if s.scalar(select(Snapshot.id).where(Snapshot.nct_id == nct_id).limit(1)) is None:
            trial.gone_at = trial.last_checked_at = utcnow()
            return False
        trial.gone_at = utcnow()
        status = trial.overall_status
    store.add_events(nct_id, [events.record_removed(status)])
    return True
