"""What the poll follows: the operator's watch list, and every other reason a trial is followed."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update

from .models import SearchMember, Snapshot, Subscriber, Subscription, Trial, TrialAlias


class WatchOps:
    """Mixed into Store: the watch list and ``watch_reasons``, the one definition of what is followed."""

    def watch(self, nct_ids: Iterable[str]) -> None:
        """Put trials (already stored) on the `trialwatch watch` list."""
        self._set_watched(nct_ids, True)

    def unwatch(self, nct_ids: Iterable[str]) -> None:
        """Take trials off the `trialwatch watch` list; their history is kept."""
        self._set_watched(nct_ids, False)

    def _set_watched(self, nct_ids: Iterable[str], watched: bool) -> None:
        ids = list(nct_ids)
        if not ids:
            return
        with self.session() as s, s.begin():
            s.execute(update(Trial).where(Trial.nct_id.in_(ids)).values(watched=watched))

    def watch_reasons(self, config: Any) -> dict[str, list[str]]:
        """Every record the poll follows, in order, with why: config trials (and config
        subscribers' trials), `trialwatch watch`, web subscribers' trials, linked records, and the
        members of saved searches. Aliases are resolved to their current IDs. The one definition of
        what is watched: the poller, `trialwatch watch` and the web pages all read it.
        ``config`` is the loaded configuration (its ``trials``, ``subscribers`` and ``searches``)."""
        found: list[tuple[str, str]] = [(n, "config.yaml trials") for n in config.trials]
        found += [(n, f"config.yaml subscriber {sub.address}") for sub in config.subscribers for n in sub.trials]
        names = {x.name for x in config.searches}
        with self.session() as s:
            found += [(n, "trialwatch watch") for n in s.scalars(
                select(Trial.nct_id).where(Trial.watched.is_(True)).order_by(Trial.nct_id))]
            # Config subscribers' trials are listed above, from the file itself.
            found += [(n, f"web subscriber {email}") for n, email in s.execute(
                select(Subscription.target, Subscriber.address).join(Subscriber)
                .where(Subscription.kind == "trial", Subscriber.state == "active", Subscriber.source != "config"))]
            found += [(n, link.replace("expanded_access:", "expanded access of ")) for n, link in s.execute(
                select(Trial.nct_id, Trial.linked_from).where(Trial.linked_from.is_not(None)))]
            found += [(n, f"saved search {name}") for n, name in s.execute(
                select(SearchMember.nct_id, SearchMember.search).where(SearchMember.active.is_(True)))
                if name in names]
            aliases = dict(s.execute(select(TrialAlias.alias, TrialAlias.nct_id)).all())
        out: dict[str, list[str]] = {}
        for nct, why in found:
            reasons = out.setdefault(aliases.get(nct, nct), [])
            if why not in reasons:
                reasons.append(why)
        return out

    def watched_ids(self, config: Any) -> list[str]:
        """Every record the poll follows (``watch_reasons`` without the reasons)."""
        return list(self.watch_reasons(config))

    def never_fetched(self, nct_ids: list[str]) -> list[str]:
        """Those of ``nct_ids`` never fetched live, in order. Versions backfilled from the
        registry are not a fetch; an id that answered 404 has been fetched (the full sweep
        asks again)."""
        if not nct_ids:
            return []
        with self.session() as s:
            have = set(s.scalars(select(Snapshot.nct_id).where(Snapshot.nct_id.in_(nct_ids),
                                                                Snapshot.source.is_(None)).distinct()))
            have |= set(s.scalars(select(Trial.nct_id).where(Trial.nct_id.in_(nct_ids),
                                                               Trial.gone_at.is_not(None))))
        return [i for i in nct_ids if i not in have]

    def with_live_snapshot(self, nct_ids: list[str]) -> list[str]:
        """Those of ``nct_ids`` that have a live snapshot, in order."""
        with self.session() as s:
            have = set(s.scalars(select(Snapshot.nct_id).where(Snapshot.source.is_(None)).distinct()))
        return [i for i in nct_ids if i in have]

    def known_trials(self, nct_ids: Iterable[str]) -> set[str]:
        """Those of ``nct_ids`` that have a trial row."""
        ids = list(nct_ids)
        if not ids:
            return set()
        with self.session() as s:
            return set(s.scalars(select(Trial.nct_id).where(Trial.nct_id.in_(ids))))

    def trial_titles(self, nct_ids: Iterable[str]) -> dict[str, str | None]:
        """Title by NCT number, for those that have a trial row."""
        ids = list(nct_ids)
        if not ids:
            return {}
        with self.session() as s:
            return dict(s.execute(select(Trial.nct_id, Trial.title).where(Trial.nct_id.in_(ids))).all())
