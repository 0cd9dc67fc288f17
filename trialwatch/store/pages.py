"""The reads behind pages, feeds and listings: plain rows for rendering, no writes."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, or_, select

from .models import ChangeRow, Poll, SearchMember, Snapshot, Subscriber, Trial


@dataclass
class IndexData:
    """What the home page shows: every trial row, the newest poll, and per saved search its
    active members and when it last had an event."""

    trials: dict[str, Trial]
    last_poll: Poll | None
    search_members: dict[str, int]
    search_last_change: dict[str, dt.datetime]


@dataclass
class SearchPageData:
    """A saved search's page: the trials it matches now (with their rows) and its newest events."""

    nct_ids: list[str]
    trials: dict[str, Trial]
    events: list[ChangeRow]


class PageOps:
    """Mixed into Store: reads for the web pages, the Atom feeds, ``history`` and ``subscribers``."""

    def index_data(self) -> IndexData:
        with self.session() as s:
            rows = {t.nct_id: t for t in s.scalars(select(Trial))}
            last_poll = s.scalars(select(Poll).order_by(Poll.started_at.desc(), Poll.id.desc()).limit(1)).first()
            members = dict(s.execute(select(SearchMember.search, func.count())
                                     .where(SearchMember.active.is_(True)).group_by(SearchMember.search)).all())
            changed = dict(s.execute(select(ChangeRow.search, func.max(ChangeRow.detected_at))
                                     .where(ChangeRow.search.is_not(None)).group_by(ChangeRow.search)).all())
        return IndexData(trials=rows, last_poll=last_poll, search_members=members,
                         search_last_change=changed)

    def search_page_data(self, name: str, *, limit: int = 100) -> SearchPageData:
        with self.session() as s:
            ids = list(s.scalars(select(SearchMember.nct_id).where(
                SearchMember.search == name, SearchMember.active.is_(True)).order_by(SearchMember.nct_id)))
            rows = {t.nct_id: t for t in s.scalars(select(Trial).where(Trial.nct_id.in_(ids)))} if ids else {}
            events = list(s.scalars(select(ChangeRow).where(ChangeRow.search == name)
                                    .order_by(ChangeRow.detected_at.desc(), ChangeRow.id.desc()).limit(limit)))
        return SearchPageData(nct_ids=ids, trials=rows, events=events)

    # -- feeds: what changed since, newest first (history backfilled from the registry is not news)
    def trial_feed_changes(self, nct_id: str, *, limit: int) -> list[ChangeRow]:
        with self.session() as s:
            return list(s.scalars(select(ChangeRow).where(ChangeRow.nct_id == nct_id, ChangeRow.historical.is_(False))
                                  .order_by(ChangeRow.detected_at.desc(), ChangeRow.id.desc()).limit(limit)))

    def search_feed_changes(self, name: str, *, limit: int) -> list[ChangeRow]:
        """Search membership events, and changes to every trial the search has matched."""
        members = select(SearchMember.nct_id).where(SearchMember.search == name)
        with self.session() as s:
            return list(s.scalars(select(ChangeRow)
                                  .where(or_(ChangeRow.search == name, ChangeRow.nct_id.in_(members)),
                                         ChangeRow.historical.is_(False))
                                  .order_by(ChangeRow.detected_at.desc(), ChangeRow.id.desc()).limit(limit)))

    def live_snapshots(self, nct_id: str) -> list[Snapshot]:
        """A trial's live snapshots (not versions backfilled from the registry), oldest first."""
        with self.session() as s:
            return list(s.scalars(select(Snapshot).where(Snapshot.nct_id == nct_id, Snapshot.source.is_(None))
                                  .order_by(Snapshot.seq)))

    def subscriber_list(self) -> list[dict]:
        """Every subscriber as a plain dict (email, name, state, source, min_severity, digest,
        trials, searches), by address."""
        with self.session() as s:
            subs = list(s.scalars(select(Subscriber).order_by(Subscriber.address)))
            return [{"email": x.address, "channel": x.channel, "name": x.name, "state": x.state, "source": x.source,
                     "min_severity": x.min_severity, "digest": x.digest, "location": x.location,
                     "trials": sorted(t.target for t in x.subscriptions if t.kind == "trial"),
                     "searches": sorted(t.target for t in x.subscriptions if t.kind == "search")} for x in subs]
