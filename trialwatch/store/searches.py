"""Saved searches: their membership, their runs, and the join/leave events, in one transaction."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence

from sqlalchemy import select

from ..diff import Change
from .models import SavedSearchRun, SearchMember, Trial, utcnow

# (overall_status, gone_at) of a trial, as the search's events need it to say why one left.
TrialState = tuple[str | None, dt.datetime | None]


class SearchOps:
    """Mixed into Store: ``search_members``, ``searches_run``, ``record_search_run``."""

    def search_members(self, name: str) -> tuple[dict[str, bool], bool]:
        """``({nct_id: active}, has_run)`` of a saved search: everyone it ever matched, and
        whether it has run before (a search that matched nothing at first has still run)."""
        with self.session() as s:
            members = {m.nct_id: m.active for m in s.scalars(select(SearchMember).where(SearchMember.search == name))}
            return members, s.get(SavedSearchRun, name) is not None

    def searches_run(self) -> set[str]:
        """Names of the saved searches that have run at least once."""
        with self.session() as s:
            return set(s.scalars(select(SavedSearchRun.name)))

    def record_search_run(self, name: str, ids: Sequence[str], left: Sequence[str], *,
                          events: Callable[[dict[str, TrialState]], list[tuple[str, Change]]] | None = None,
                          at: dt.datetime | None = None) -> int:
        """Store one run of a saved search: ``ids`` match now, ``left`` (former members) do not.
        ``events``, given the state of the leavers, returns the ``(nct_id, Change)`` events to
        store with it (None: a silent baseline). The events are written in the same transaction
        as the membership they describe: none is lost or written twice if the process dies
        here. Returns how many were stored."""
        now = at or utcnow()
        with self.session() as s, s.begin():
            rows = {m.nct_id: m for m in s.scalars(select(SearchMember).where(SearchMember.search == name))}
            for i in ids:
                m = rows.get(i)
                if m is None:
                    s.add(SearchMember(search=name, nct_id=i, first_seen=now, last_seen=now, active=True))
                else:
                    m.active, m.last_seen = True, now
            for i in left:
                rows[i].active = False
            run = s.get(SavedSearchRun, name)
            if run is None:
                s.add(SavedSearchRun(name=name, first_run_at=now, last_run_at=now, last_count=len(ids)))
            else:
                run.last_run_at, run.last_count = now, len(ids)
            if events is None:
                return 0
            states = {t.nct_id: (t.overall_status, t.gone_at) for t in s.scalars(
                select(Trial).where(Trial.nct_id.in_(list(left))))} if left else {}
            made = events(states)
            for nct_id, change in made:
                self.add_events(nct_id, [change], search=name, at=now, session=s)
            return len(made)
