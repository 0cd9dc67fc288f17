"""Storing fetched records: snapshots, their changes and the outbox rows, in one transaction a record (or a short batch)."""

from __future__ import annotations

import datetime as dt
import logging
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    func,
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from ..diff import SEVERITY_RANK, Change, diff
from ..errors import StoreError
from .engine import CHUNK_BYTES, FIRSTS_CHUNK, WRITE_CHUNK
from .models import Blob, ChangeRow, OutboxRow, SearchMember, Snapshot, Subscriber, Subscription, Trial, utcnow
from .parts import insert_blobs, join_parts, part_hashes, part_loader, put_blobs, read_blob, split_parts
from .records import (
    FIELD_MAX,
    Recorded,
    json_text,
    problems_text,
    nct_or_unknown,
    Prepared,
    error_reason,
    remember_alias,
    nul_free,
    Work,
    seam_diff,
)



log = logging.getLogger("trialwatch.store")


class SnapshotOps:
    """Mixed into Store: record_fetch(es), add_events, the reads of stored versions."""

    # -- snapshots ----------------------------------------------------------------------------
    def record_fetch(self, record: dict, *, fetched_at: dt.datetime | None = None,
                     ignore: Sequence[str] = (), requested_id: str | None = None,
                     linked_from: str | None = None) -> "Recorded":
        """Store one fetched record: a snapshot if its content changed, its changes, and the
        outbox rows for every active subscriber they concern, all in one transaction."""
        return self.record_fetches([record], fetched_at=fetched_at, ignore=ignore,
                                   requested_ids=[requested_id], linked_from=linked_from)[0]

    def record_fetches(self, records: Sequence[dict], *, fetched_at: dt.datetime | None = None,
                       ignore: Sequence[str] = (), requested_ids: Sequence[str | None] | None = None,
                       linked_from: str | None = None) -> list["Recorded"]:
        """``record_fetch`` for a batch (a page of ``filter.ids`` results), in transactions of
        ``WRITE_CHUNK`` records: each chunk's trials and latest snapshots are read in two
        queries instead of two per record, and no transaction holds the write lock for long
        (a web page's write waits behind at most one chunk, not a whole page of 100).

        One record never spoils the others. When the batch fails (another writer appended to
        one of these chains first, the UNIQUE(nct_id, seq) collision; or a record the database
        or the diff refuses), it is rolled back and each record is stored in a transaction of
        its own, a collision once more: the same content is then a no-op, different content a
        version of its own. A record that still cannot be stored comes back with ``error`` set
        (nothing of it written); the others are stored with their changes and mail. Only a
        database that is unavailable (OperationalError) stops the whole batch."""
        requested = list(requested_ids) if requested_ids is not None else [None] * len(records)
        at = fetched_at or utcnow()
        out: list[Recorded | None] = [None] * len(records)
        preps: list[tuple[int, Prepared]] = []
        for i, r in enumerate(records):
            try:
                preps.append((i, Prepared.of(r)))
            except StoreError:
                raise  # not a study record at all: the caller passed garbage, before any write
            except Exception as e:  # noqa: BLE001 - one unreadable record is reported, not fatal
                out[i] = Recorded(nct_id=nct_or_unknown(r), snapshot_id=None, first=False, stored=False,
                                  error=f"not stored: {error_reason(e)}")
        # The reads and the costly part (split, compression, diff) for the whole batch, in one
        # read transaction before any write lock: two queries for a page, not two a chunk.
        work: dict[str, Work] | None
        try:
            work = self._prework([p for _, p in preps], ignore)
        except OperationalError as e:
            raise StoreError(f"database error while reading {len(preps)} trials: {e.orig}") from None
        except StoreError:
            raise
        except Exception:  # noqa: BLE001 - each chunk prepares its own, and fails alone if it must
            log.warning("preparing %d records failed; preparing them chunk by chunk", len(preps), exc_info=True)
            work = None
        for chunk in _write_chunks(preps, work or {}):
            raced = False
            try:
                done = self._store_batch([p for _, p in chunk], [requested[i] for i, _ in chunk], at, ignore,
                                         linked_from, work=work)
            except StoreError:
                raise
            except Exception as e:  # noqa: BLE001 - retried record by record below
                raced = isinstance(e, IntegrityError)
                if not raced:
                    log.warning("%d records could not be stored together (%s); storing them one by one",
                                len(chunk), error_reason(e))
                done = None
            for n, (i, prep) in enumerate(chunk):
                if done is not None:
                    res = done[n]
                else:
                    res = self._store_alone(prep, requested[i], at, ignore, linked_from, raced=raced)
                res.problems = list(prep.problems)
                out[i] = res
        return out  # type: ignore[return-value]

    def _store_alone(self, prep: "Prepared", requested: str | None, at: dt.datetime,
                     ignore: Sequence[str], linked_from: str | None, *, raced: bool) -> "Recorded":
        """One record in its own transaction; a collision with another writer is tried once
        more. Whatever else it raises is its own failure, reported in ``error``."""
        for attempt in (1, 2):
            try:
                (res,) = self._store_batch([prep], [requested], at, ignore, linked_from)
                res.raced = raced or attempt == 2
                return res
            except StoreError:
                raise
            except IntegrityError as e:
                if attempt == 2:
                    return Recorded(nct_id=prep.nct_id, snapshot_id=None, first=False, stored=False,
                                    error=f"not stored: the database refused it twice ({error_reason(e)}); "
                                          "another trialwatch may be writing the same trial")
            except Exception as e:  # noqa: BLE001 - this record's own problem; the others go on
                log.warning("%s could not be stored", prep.nct_id, exc_info=True)
                return Recorded(nct_id=prep.nct_id, snapshot_id=None, first=False, stored=False,
                                error=f"not stored: {error_reason(e)}")
        raise AssertionError("unreachable")

    def _store_batch(self, preps: list["Prepared"], requested: list[str | None], at: dt.datetime,
                     ignore: Sequence[str], linked_from: str | None,
                     work: dict[str, "Work"] | None = None) -> list["Recorded"]:
        ids = list({p.nct_id for p in preps})
        try:
            if work is None:
                # The costly part (split, compression, diff) before the write lock, not under it.
                work = self._prework(preps, ignore)
            with self.session() as s, s.begin():
                # Prepared as first versions, and still without a snapshot now, under the
                # write lock (one query, columns only): inserted in bulk. Any other record
                # goes through _store_one, which checks its work against the latest snapshot.
                firsts = [n for n, (p, req) in enumerate(zip(preps, requested))
                          if (w := work.get(p.nct_id)) is not None and w.latest_id is None
                          and not (req and req != p.nct_id)]
                if firsts:
                    seqs = dict(s.execute(select(Snapshot.nct_id, func.max(Snapshot.seq)).where(
                        Snapshot.nct_id.in_([preps[n].nct_id for n in firsts])).group_by(Snapshot.nct_id)).all())
                    firsts = [n for n in firsts if preps[n].nct_id not in seqs]
                out: list[Recorded | None] = [None] * len(preps)
                for n, res in zip(firsts, self._store_firsts(s, [preps[n] for n in firsts], at, linked_from, work)):
                    out[n] = res
                rest = [n for n in range(len(preps)) if out[n] is None]
                if rest:
                    self._store_rest(s, preps, requested, rest, out, at, ignore, linked_from, work)
                return out  # type: ignore[return-value]
        except OperationalError as e:
            raise StoreError(f"database error while storing {', '.join(ids[:3])}: {e.orig}") from None

    def _store_rest(self, s: Session, preps: list["Prepared"], requested: list[str | None], rest: list[int],
                    out: list["Recorded | None"], at: dt.datetime, ignore: Sequence[str],
                    linked_from: str | None, work: dict[str, "Work"]) -> None:
        """The records of a chunk that are not first versions: the changed ones whose prepared
        work still holds in bulk (``_store_changed``); the others (unchanged, raced, no work)
        one by one against their trial row and latest snapshot, read here in two queries."""
        fast = _still_prepared(s, preps, requested, rest, work)
        for n, res in zip(fast, self._store_changed(s, [preps[n] for n in fast], at, work)):
            out[n] = res
        rest = [n for n in rest if out[n] is None]
        if not rest:
            return
        ids = list({preps[n].nct_id for n in rest})
        trials = {t.nct_id: t for t in s.scalars(select(Trial).where(Trial.nct_id.in_(ids)))}
        newest = select(Snapshot.nct_id, func.max(Snapshot.seq).label("seq")) \
            .where(Snapshot.nct_id.in_(ids)).group_by(Snapshot.nct_id).subquery()
        latest = {x.nct_id: x for x in s.scalars(select(Snapshot).join(
            newest, (Snapshot.nct_id == newest.c.nct_id) & (Snapshot.seq == newest.c.seq)))}
        # Flushes happen where this code asks for them, not before every query.
        with s.no_autoflush:
            for n in rest:
                p = preps[n]
                out[n] = self._store_one(s, p, requested[n], at, ignore, linked_from, trials, latest,
                                         work.get(p.nct_id))

    def _store_changed(self, s: Session, preps: list["Prepared"], at: dt.datetime,
                       work: dict[str, "Work"]) -> list["Recorded"]:
        """New versions of trials whose work (blobs, changes) was prepared against the latest
        snapshot, which is still the latest under the write lock: a few statements for the
        whole chunk (the trials' UPDATE, blobs, snapshots, changes, outbox rows, each one
        executemany, and three reads of ids), where the ORM's unit of work took ~5 a record.
        Same rows as ``_store_one`` writes; a failure fails the chunk, which is then retried
        record by record (``record_fetches``), so a poison record still fails alone."""
        from sqlalchemy import insert, tuple_, update

        if not preps:
            return []
        ids = [p.nct_id for p in preps]
        latest = {x.nct_id: x for x in s.execute(
            select(Snapshot.nct_id, Snapshot.seq, Snapshot.fetched_at, Trial.last_checked_at)
            .join(Trial, Trial.nct_id == Snapshot.nct_id)
            .where(Snapshot.id.in_([work[i].latest_id for i in ids])))}
        s.execute(update(Trial), [{"nct_id": p.nct_id, "last_checked_at": at, "gone_at": None, "title": p.title,
                                   "overall_status": p.status, "problems": problems_text(p.problems),
                                   "last_changed_at": at} for p in preps])
        blob_rows: dict[str, dict] = {}
        for i in ids:
            for row in work[i].blob_rows:
                blob_rows.setdefault(row["hash"], row)
        insert_blobs(s, list(blob_rows.values()))
        # max(.., 1): after a backfill the latest may be a registry version (negative seq).
        seqs = {i: max(latest[i].seq + 1, 1) for i in ids}
        s.execute(insert(Snapshot), [{"nct_id": p.nct_id, "seq": seqs[p.nct_id], "blob_hash": p.digest,
                                      "fetched_at": at, "overall_status": p.status,
                                      "last_update_posted": p.last_update_posted} for p in preps])
        snap_ids = {i: x for i, x in s.execute(select(Snapshot.nct_id, Snapshot.id).where(
            tuple_(Snapshot.nct_id, Snapshot.seq).in_(list(seqs.items()))))}
        rows = {i: _change_rows(i, work[i].changes, snap_ids[i], at) for i in ids}
        _insert_changes(s, rows)
        outbox = [{"subscriber_id": sub_id, "change_id": row.id, "created_at": at}
                  for i, interested in _interested_in(s, ids).items()
                  for sub_id, min_severity in interested
                  for row in rows[i] if row.rank >= SEVERITY_RANK[min_severity]]
        if outbox:
            s.execute(insert(OutboxRow), outbox)
        return [Recorded(nct_id=i, snapshot_id=snap_ids[i], first=False, stored=True, changes=rows[i],
                         previous_fetched_at=latest[i].fetched_at, previous_checked_at=latest[i].last_checked_at)
                for i in ids]

    def _store_firsts(self, s: Session, preps: list["Prepared"], at: dt.datetime, linked_from: str | None,
                      work: dict[str, "Work"]) -> list["Recorded"]:
        """First snapshots of trials never stored before, in a few statements for all of them:
        the new trials' rows, their blobs (ON CONFLICT DO NOTHING), their snapshots. A first
        snapshot is the silent baseline: no change, so no outbox row. A trial row that exists
        without a snapshot (watched, or once gone) is updated, all of them in one statement.
        No ORM object is made: a first poll of 10,000 trials is a few statements per chunk."""
        from sqlalchemy import insert, update

        if not preps:
            return []
        ids = [p.nct_id for p in preps]
        have = set(s.scalars(select(Trial.nct_id).where(Trial.nct_id.in_(ids))))
        new_trials = [{"nct_id": p.nct_id, "title": p.title, "overall_status": p.status,
                       "first_seen_at": at, "last_checked_at": at, "gone_at": None,
                       "linked_from": linked_from, "watched": False, "problems": problems_text(p.problems)}
                      for p in preps if p.nct_id not in have]
        if new_trials:
            s.execute(insert(Trial), new_trials)
        if have:  # ORM bulk UPDATE by primary key: one executemany
            s.execute(update(Trial), [{"nct_id": p.nct_id, "last_checked_at": at, "gone_at": None,
                                       "title": p.title, "overall_status": p.status,
                                       "problems": problems_text(p.problems)}
                                      for p in preps if p.nct_id in have])
        blob_rows: dict[str, dict] = {}
        for p in preps:
            for row in work[p.nct_id].blob_rows:
                blob_rows.setdefault(row["hash"], row)
        insert_blobs(s, list(blob_rows.values()))
        s.execute(insert(Snapshot), [{"nct_id": p.nct_id, "seq": 1, "blob_hash": p.digest, "fetched_at": at,
                                      "overall_status": p.status, "last_update_posted": p.last_update_posted}
                                     for p in preps])
        # Their ids in one read (RETURNING in parameter order is a statement per row on SQLite).
        snap_ids = dict(s.execute(select(Snapshot.nct_id, Snapshot.id).where(
            Snapshot.nct_id.in_(ids), Snapshot.seq == 1)).all())
        return [Recorded(nct_id=p.nct_id, snapshot_id=snap_ids[p.nct_id], first=True, stored=True, changes=[])
                for p in preps]

    def _prework(self, preps: list["Prepared"], ignore: Sequence[str]) -> dict[str, "Work"]:
        """For each record whose content differs from its trial's latest snapshot: its new
        blobs, compressed, and its changes, computed in a read transaction (which on SQLite
        takes no lock) so the write transaction that follows only inserts. Valid only while
        the trial's latest snapshot stays the one read here; ``_store_one`` checks that."""
        counts: dict[str, int] = {}
        for p in preps:
            counts[p.nct_id] = counts.get(p.nct_id, 0) + 1
        ids = [i for i, n in counts.items() if n == 1]  # a repeated id depends on its own first copy
        if not ids:
            return {}
        pending: dict[str, tuple[int | None, dict[str, tuple[bytes, int]], list[Change]]] = {}
        with self.session() as s:
            latest = _latest_versions(s, ids)
            for p in preps:
                if counts[p.nct_id] != 1:
                    continue
                latest_id, latest_hash, latest_source = latest.get(p.nct_id, (None, None, None))
                if latest_hash == p.digest:  # unchanged: nothing costly to do
                    continue
                try:
                    new, changes = _parts_and_changes(s, p, latest_hash, latest_source, ignore)
                except (StoreError, SQLAlchemyError):
                    raise
                except Exception:  # noqa: BLE001 - a record the diff refuses: no work prepared for it,
                    continue       # so it fails alone under the lock and is reported, the others stored
                pending[p.nct_id] = (latest_id, new, changes)
            return _compressed_work(s, pending)

    def _store_one(self, s: Session, p: "Prepared", requested_id: str | None, at: dt.datetime,
                   ignore: Sequence[str], linked_from: str | None, trials: dict[str, Trial],
                   latest_by_id: dict[str, Snapshot], work: "Work | None" = None) -> "Recorded":
        trial = trials.get(p.nct_id)
        if trial is None:
            trial = trials[p.nct_id] = Trial(nct_id=p.nct_id, first_seen_at=at, linked_from=linked_from)
            s.add(trial)
            s.flush()  # before the snapshot that references it (no ORM relationship orders them)
        if requested_id and requested_id != p.nct_id:
            remember_alias(s, requested_id, p.nct_id)
        previous_checked_at = trial.last_checked_at
        trial.last_checked_at = at
        trial.gone_at = None
        trial.title = p.title
        trial.overall_status = p.status
        trial.problems = problems_text(p.problems)  # cleared by a well-formed version
        latest = latest_by_id.get(p.nct_id)
        if latest is not None and latest.blob_hash == p.digest:
            return Recorded(nct_id=p.nct_id, snapshot_id=latest.id, first=False, stored=False,
                            changes=[], previous_fetched_at=latest.fetched_at,
                            previous_checked_at=previous_checked_at)
        if work is not None and work.latest_id == (latest.id if latest is not None else None):
            # Prepared before the write lock against this very latest snapshot: only inserts.
            insert_blobs(s, work.blob_rows)
            changes = work.changes
        else:
            # Another writer moved the chain since (or nothing was prepared): all of it here, as
            # _prework would have done it, against the latest snapshot read under the lock.
            new, changes = _parts_and_changes(s, p, latest.blob_hash if latest is not None else None,
                                              latest.source if latest is not None else None, ignore)
            put_blobs(s, new)
        # max(.., 1): after a backfill without live snapshots, the latest is a registry version
        # (negative seq); the live chain still starts at 1.
        snap = Snapshot(nct_id=p.nct_id, seq=max(latest.seq + 1, 1) if latest else 1, blob_hash=p.digest,
                        fetched_at=at, overall_status=p.status, last_update_posted=p.last_update_posted)
        s.add(snap)
        s.flush()
        latest_by_id[p.nct_id] = snap
        if latest is not None:
            trial.last_changed_at = at
        rows = self._add_changes(s, p.nct_id, changes, snapshot_id=snap.id, at=at)
        return Recorded(nct_id=p.nct_id, snapshot_id=snap.id, first=latest is None, stored=True,
                        changes=rows, previous_fetched_at=latest.fetched_at if latest else None,
                        previous_checked_at=previous_checked_at)

    def add_events(self, nct_id: str, changes: Iterable[Change], *, search: str | None = None,
                   at: dt.datetime | None = None, session: Session | None = None) -> list[ChangeRow]:
        """Store changes that are not a new snapshot (search membership, a record gone), with
        their outbox rows; inside ``session``'s transaction when one is given."""
        if session is not None:
            return self._add_changes(session, nct_id, list(changes), snapshot_id=None,
                                     at=at or utcnow(), search=search)
        with self.session() as s, s.begin():
            return self._add_changes(s, nct_id, list(changes), snapshot_id=None,
                                     at=at or utcnow(), search=search)

    def _add_changes(self, s: Session, nct_id: str, changes: list[Change], *,
                     snapshot_id: int | None, at: dt.datetime,
                     search: str | None = None, registry_date: str | None = None) -> list[ChangeRow]:
        historical = registry_date is not None
        # Labels, details and generic field paths come from record text: bounded and NUL-free.
        rows = [ChangeRow(nct_id=nct_id, snapshot_id=snapshot_id, search=search, field=nul_free(c.field)[:FIELD_MAX],
                          label=nul_free(c.label), old=json_text(c.old), new=json_text(c.new), detail=nul_free(c.detail),
                          site=nul_free(c.site), severity=c.severity, detected_at=at,
                          historical=historical, registry_date=registry_date) for c in changes]
        if not rows:
            return rows
        s.add_all(rows)
        s.flush()
        if historical:
            return rows  # history is never news: no outbox row, no mail
        # Plain executemany, not ORM objects: a change followed by many physicians makes many rows.
        outbox = [{"subscriber_id": sub_id, "change_id": row.id, "created_at": at}
                  for sub_id, min_severity in self._interested(s, nct_id, search)
                  for row in rows if row.rank >= SEVERITY_RANK[min_severity]]
        if outbox:
            from sqlalchemy import insert

            s.execute(insert(OutboxRow), outbox)
        return rows

    def _interested(self, s: Session, nct_id: str, search: str | None) -> list[tuple[int, str]]:
        """(id, min_severity) of active subscribers to this trial, or to a search it belongs
        (or belonged) to. Columns only: loading Subscriber objects would load every one of
        their subscriptions too."""
        member_of = select(SearchMember.search).where(SearchMember.nct_id == nct_id)
        search_match = Subscription.target.in_(member_of)
        if search:
            search_match = search_match | (Subscription.target == search)
        q = (select(Subscriber.id, Subscriber.min_severity).join(Subscription)
             .where(Subscriber.state == "active")
             .where(((Subscription.kind == "trial") & (Subscription.target == nct_id))
                    | ((Subscription.kind == "search") & search_match))
             .distinct())
        return [(i, m) for i, m in s.execute(q)]

    @staticmethod
    def _load_blob(s: Session, digest: str) -> dict:
        manifest = read_blob(s, digest)
        return join_parts(manifest, part_loader(s, set(part_hashes(manifest)), {}))

    def snapshot_record(self, snapshot_id: int) -> dict:
        with self.session() as s:
            snap = s.get(Snapshot, snapshot_id)
            return self._load_blob(s, snap.blob_hash)

    def latest_snapshot(self, nct_id: str) -> Snapshot | None:
        with self.session() as s:
            return s.scalars(select(Snapshot).where(Snapshot.nct_id == nct_id)
                             .order_by(Snapshot.seq.desc()).limit(1)).first()

    def latest_record(self, nct_id: str) -> dict | None:
        snap = self.latest_snapshot(nct_id)
        return self.snapshot_record(snap.id) if snap else None

    def history(self, nct_id: str) -> tuple[list[Snapshot], list[ChangeRow]]:
        """Snapshots oldest first, and every change stored for the trial oldest first."""
        with self.session() as s:
            snaps = list(s.scalars(select(Snapshot).where(Snapshot.nct_id == nct_id)
                                   .order_by(Snapshot.seq)))
            changes = list(s.scalars(select(ChangeRow).where(ChangeRow.nct_id == nct_id)
                                     .order_by(ChangeRow.detected_at, ChangeRow.id)))
            return snaps, changes

    # -- the registry's history (trialwatch/history.py drives these) --------------------------


def _write_chunks(preps: list[tuple[int, "Prepared"]], work: dict[str, "Work"]) -> list[list[tuple[int, "Prepared"]]]:
    """The batch cut into write transactions, in order, each short: at most ``WRITE_CHUNK``
    records that need more than inserts (a diff, changes, outbox rows, ORM updates), at most
    ``FIRSTS_CHUNK`` records in all, and at most ``CHUNK_BYTES`` of new compressed parts. A
    trial's first version is only inserts (~7 ms for 100 of them on SQLite), so a first poll
    writes a page of 100 in one transaction where it took five."""
    chunks: list[list[tuple[int, Prepared]]] = []
    chunk: list[tuple[int, Prepared]] = []
    heavy = size = 0
    for item in preps:
        w = work.get(item[1].nct_id)
        first = w is not None and w.latest_id is None
        grows = sum(len(r["body"]) for r in w.blob_rows) if w is not None else 0
        if chunk and (len(chunk) >= FIRSTS_CHUNK or (not first and heavy >= WRITE_CHUNK)
                      or size + grows > CHUNK_BYTES):
            chunks.append(chunk)
            chunk, heavy, size = [], 0, 0
        chunk.append(item)
        heavy += not first
        size += grows
    if chunk:
        chunks.append(chunk)
    return chunks


# Values in one IN (...) list: well under SQLite's 32,766 and PostgreSQL's 65,535 parameters.
_IN_MAX = 5000


def _still_prepared(s: Session, preps: list["Prepared"], requested: list[str | None], rest: list[int],
                    work: dict[str, "Work"]) -> list[int]:
    """Of ``rest``, the changed records whose work was prepared against the latest snapshot
    still there under the write lock (no other writer moved the chain), each its trial's only
    record in the chunk and without an alias: only inserts and one UPDATE, in bulk."""
    counts: dict[str, int] = {}
    for n in rest:
        counts[preps[n].nct_id] = counts.get(preps[n].nct_id, 0) + 1
    fast = [n for n in rest if (w := work.get(preps[n].nct_id)) is not None and w.latest_id is not None
            and counts[preps[n].nct_id] == 1 and not (requested[n] and requested[n] != preps[n].nct_id)]
    now = _latest_versions(s, [preps[n].nct_id for n in fast]) if fast else {}
    return [n for n in fast if work[preps[n].nct_id].latest_id == now.get(preps[n].nct_id, (None,))[0]]


def _change_rows(nct_id: str, changes: list[Change], snapshot_id: int, at: dt.datetime) -> list[ChangeRow]:
    """The rows ``_add_changes`` makes for a new snapshot's changes (not added to a session)."""
    # Labels, details and generic field paths come from record text: bounded and NUL-free.
    return [ChangeRow(nct_id=nct_id, snapshot_id=snapshot_id, search=None, field=nul_free(c.field)[:FIELD_MAX],
                      label=nul_free(c.label), old=json_text(c.old), new=json_text(c.new), detail=nul_free(c.detail),
                      site=nul_free(c.site), severity=c.severity, detected_at=at, historical=False,
                      registry_date=None) for c in changes]


_CHANGE_KEY = ("snapshot_id", "field", "label", "old", "new", "detail", "site", "severity")


def _insert_changes(s: Session, rows: dict[str, list[ChangeRow]]) -> None:
    """Insert the rows in one executemany and give each its id, read back in one query. Ids
    are matched by content, not by insertion order (which neither database promises for an
    executemany); rows alike in every column are interchangeable."""
    from sqlalchemy import insert

    flat = [r for rs in rows.values() for r in rs]
    if not flat:
        return
    cols = _CHANGE_KEY + ("nct_id", "search", "detected_at", "historical", "registry_date")
    s.execute(insert(ChangeRow), [{c: getattr(r, c) for c in cols} for r in flat])
    ids: dict[tuple, list[int]] = {}
    snaps = list({r.snapshot_id for r in flat})
    for row in s.execute(select(ChangeRow.id, *(getattr(ChangeRow, c) for c in _CHANGE_KEY))
                         .where(ChangeRow.snapshot_id.in_(snaps)).order_by(ChangeRow.id.desc())):
        ids.setdefault(tuple(row[1:]), []).append(row[0])
    for r in flat:
        r.id = ids[tuple(getattr(r, c) for c in _CHANGE_KEY)].pop()


def _interested_in(s: Session, ids: list[str]) -> dict[str, list[tuple[int, str]]]:
    """``_interested`` (no search) for many trials in one query: by trial, the (id, min_severity)
    of the active subscribers following it or a search it belongs (or belonged) to."""
    from sqlalchemy import union

    by_trial = (select(Subscription.target.label("nct_id"), Subscriber.id, Subscriber.min_severity)
                .join(Subscription).where(Subscriber.state == "active", Subscription.kind == "trial",
                                          Subscription.target.in_(ids)))
    by_search = (select(SearchMember.nct_id, Subscriber.id, Subscriber.min_severity)
                 .select_from(Subscriber).join(Subscription)
                 .join(SearchMember, SearchMember.search == Subscription.target)
                 .where(Subscriber.state == "active", Subscription.kind == "search", SearchMember.nct_id.in_(ids)))
    out: dict[str, list[tuple[int, str]]] = {}
    for nct_id, sub_id, min_severity in s.execute(union(by_trial, by_search)):
        out.setdefault(nct_id, []).append((sub_id, min_severity))
    return out


def _latest_versions(s: Session, ids: list[str]) -> dict[str, tuple[int, str, str | None]]:
    """Each trial's latest snapshot as (id, blob hash, source), in one query."""
    newest = select(Snapshot.nct_id, func.max(Snapshot.seq).label("seq")) \
        .where(Snapshot.nct_id.in_(ids)).group_by(Snapshot.nct_id).subquery()
    return {x.nct_id: (x.id, x.blob_hash, x.source) for x in s.execute(
        select(Snapshot.nct_id, Snapshot.id, Snapshot.blob_hash, Snapshot.source).join(
            newest, (Snapshot.nct_id == newest.c.nct_id) & (Snapshot.seq == newest.c.seq)))}


def _parts_and_changes(s: Session, p: "Prepared", latest_hash: str | None, latest_source: str | None,
                       ignore: Sequence[str]) -> tuple[dict[str, tuple[bytes, int]], list[Change]]:
    """The parts of ``p`` its trial's latest version lacks, and the changes since that version."""
    values: dict[str, Any] = {}
    blobs = split_parts(p.canon, p.digest, raw_size=len(p.body), values=values, encoded=p.encoded)
    old_manifest = read_blob(s, latest_hash) if latest_hash is not None else None
    old_parts = set(part_hashes(old_manifest)) if old_manifest is not None else set()
    changes: list[Change] = []
    if old_manifest is not None:
        old = join_parts(old_manifest, part_loader(s, old_parts - values.keys(), values))
        if latest_source == "registry":  # legacy markup on one side: compare the words
            changes = seam_diff(old, p.canon, ignore=ignore)
        else:
            changes = diff(old, p.canon, ignore=tuple(ignore), assume_canonical=True)
    return {h: b for h, b in blobs.items() if h not in old_parts}, changes


def _compressed_work(s: Session, pending: dict) -> dict[str, "Work"]:
    """One existence query for the whole chunk's new parts; each part is compressed once."""
    wanted = list({h for _, new, _ in pending.values() for h in new})
    have: set[str] = set()
    for start in range(0, len(wanted), _IN_MAX):  # a page of 1,000 large records has more parts
        have.update(s.scalars(select(Blob.hash).where(Blob.hash.in_(wanted[start:start + _IN_MAX]))))
    compressed: dict[str, dict] = {}
    out: dict[str, Work] = {}
    for nct_id, (latest_id, new, changes) in pending.items():
        rows = []
        for h, (b, n) in new.items():
            if h in have:
                continue
            if h not in compressed:
                compressed[h] = {"hash": h, "body": zlib.compress(b, 9), "raw_size": n}
            rows.append(compressed[h])
        out[nct_id] = Work(latest_id=latest_id, blob_rows=rows, changes=changes)
    return out
