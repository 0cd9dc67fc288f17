"""Trials, aliases and what they cost to keep."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import (
    func,
    select,
    update,
)

from .. import events
from .models import Blob, ChangeRow, Snapshot, Trial, TrialAlias, utcnow
from .records import remember_alias


class TrialOps:
    """Mixed into Store: trials and their aliases."""

    def trial(self, nct_id: str) -> Trial | None:
        with self.session() as s:
            return s.get(Trial, nct_id)

    def resolve_alias(self, nct_id: str) -> str:
        with self.session() as s:
            alias = s.get(TrialAlias, nct_id)
            return alias.nct_id if alias else nct_id

    def remember_alias(self, alias: str, nct_id: str) -> None:
        with self.session() as s, s.begin():
            remember_alias(s, alias, nct_id)

    def mark_checked(self, nct_ids: Iterable[str], at: dt.datetime | None = None) -> None:
        """Records fetched-and-unchanged in bulk (the poller's cheap path)."""
        ids = list(nct_ids)
        if not ids:
            return
        with self.session() as s, s.begin():
            s.execute(update(Trial).where(Trial.nct_id.in_(ids)).values(last_checked_at=at or utcnow()))

    def mark_gone(self, nct_id: str) -> bool:
        """A record answers 404. Seen before: store that as a ``record_removed`` event, once, and
        return True. Never seen: remember the 404 (a trial row with ``gone_at`` and no snapshot),
        so a poll does not count it as "never fetched" forever, and return False: there is no
        news to tell. ``gone_at`` and the event are ONE transaction: were they two, a crash
        between them would lose the event for good (the next 404 finds ``gone_at`` set)."""
        with self.session() as s, s.begin():
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
            self.add_events(nct_id, [events.record_removed(trial.overall_status)], session=s)
            return True

    def storage_bytes(self) -> dict[str, int]:
        """Bytes of stored record bodies (compressed and raw) and row counts, for reports."""
        with self.session() as s:
            comp = s.scalar(select(func.coalesce(func.sum(func.length(Blob.body)), 0)))
            raw = s.scalar(select(func.coalesce(func.sum(Blob.raw_size), 0)))
            return {"blobs": s.scalar(select(func.count()).select_from(Blob)),
                    "snapshots": s.scalar(select(func.count()).select_from(Snapshot)),
                    "changes": s.scalar(select(func.count()).select_from(ChangeRow)),
                    "compressed_bytes": int(comp), "raw_bytes": int(raw)}
