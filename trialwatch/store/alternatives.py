"""Recruiting alternatives of trials that stopped recruiting, as found once per poll.

One row per trial (``alternatives``): the answer of the registry's search at one data date,
ranked without a place, with each alternative's open sites, so that pages and digests rank by
each reader's own place without another request. A failed search removes the row: an older
list is never left to be read as the current one.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select

from ..events import NOT_RECRUITING
from .models import AlternativesCache, Trial, utcnow


class AlternativesOps:
    """Mixed into Store: the per-poll cache of recruiting alternatives."""

    def save_alternatives(self, nct_id: str, data_timestamp: str | None, body: str) -> None:
        """Store (or replace) a trial's alternatives found at ``data_timestamp``."""
        with self.session() as s, s.begin():
            row = s.get(AlternativesCache, nct_id)
            if row is None:
                s.add(AlternativesCache(nct_id=nct_id, data_timestamp=data_timestamp,
                                        computed_at=utcnow(), body=body))
            else:
                row.data_timestamp, row.computed_at, row.body = data_timestamp, utcnow(), body

    def drop_alternatives(self, nct_id: str) -> None:
        """Forget a trial's alternatives (its search just failed: no older list stays readable)."""
        with self.session() as s, s.begin():
            s.execute(delete(AlternativesCache).where(AlternativesCache.nct_id == nct_id))

    def alternatives_of(self, nct_ids: Iterable[str]) -> dict[str, AlternativesCache]:
        """The stored alternatives of each of ``nct_ids`` that has some."""
        ids = sorted(set(nct_ids))
        if not ids:
            return {}
        with self.session() as s:
            return {r.nct_id: r for r in s.scalars(select(AlternativesCache)
                                                   .where(AlternativesCache.nct_id.in_(ids)))}

    def alternatives_due(self, nct_ids: list[str], data_timestamp: str | None, limit: int) -> list[str]:
        """Up to ``limit`` of ``nct_ids`` that no longer recruit and have no alternatives found
        at ``data_timestamp``: those with none at all first, then in the order given."""
        if not nct_ids or limit <= 0:
            return []
        with self.session() as s:
            closed = set(s.scalars(select(Trial.nct_id).where(
                Trial.nct_id.in_(nct_ids), Trial.overall_status.in_(NOT_RECRUITING), Trial.gone_at.is_(None))))
            have = {r.nct_id: r.data_timestamp for r in s.execute(
                select(AlternativesCache.nct_id, AlternativesCache.data_timestamp)
                .where(AlternativesCache.nct_id.in_(nct_ids)))}
        todo = [n for n in dict.fromkeys(nct_ids) if n in closed and (n not in have or have[n] != data_timestamp)]
        todo.sort(key=lambda n: n in have)  # stable: never searched first, in the order given
        return todo[:limit]
