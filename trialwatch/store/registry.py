"""The registry's own history of a trial: version lists and backfilled versions."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence

from sqlalchemy import (
    select,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from ..diff import Change
from ..errors import StoreError
from .models import REGISTRY_SEQ_BASE, RegistryHistory, RegistryVersion, Snapshot, Trial, utcnow
from .parts import put_blobs, split_parts
from .records import Recorded, day_start, Prepared, seam_diff


class RegistryOps:
    """Mixed into Store: the registry's version lists and backfilled versions."""

    def save_registry_versions(self, nct_id: str, versions: Sequence[dict], *,
                               at: dt.datetime | None = None) -> int | None:
        """Keep a trial's version list ``[{version, date, status, modules}]`` (replacing an
        earlier one) and return the seam version: the newest one the first live snapshot
        shows, where backfill stops."""
        at = at or utcnow()
        from sqlalchemy import delete

        with self.session() as s, s.begin():
            if s.get(Trial, nct_id) is None:
                s.add(Trial(nct_id=nct_id, first_seen_at=at))
                s.flush()
            first_live = s.scalars(select(Snapshot.fetched_at).where(
                Snapshot.nct_id == nct_id, Snapshot.source.is_(None)).order_by(Snapshot.seq).limit(1)).first()
            s.execute(delete(RegistryVersion).where(RegistryVersion.nct_id == nct_id))
            s.add_all([RegistryVersion(nct_id=nct_id, version=v["version"], date=v["date"],
                                       overall_status=v.get("status"),
                                       modules=json.dumps(v.get("modules") or [], ensure_ascii=False))
                       for v in versions])
            # Versions dated after the first live snapshot are what live snapshots show since.
            cutoff = first_live.date().isoformat() if first_live else None
            shown = [v["version"] for v in versions if cutoff is None or v["date"][:10] <= cutoff]
            seam = max(shown) if shown else None
            row = s.get(RegistryHistory, nct_id)
            if row is None:
                s.add(RegistryHistory(nct_id=nct_id, state="ok", fetched_at=at, seam_version=seam))
            else:
                row.state, row.fetched_at, row.error = "ok", at, None
                row.seam_version = row.seam_version if row.seam_version is not None else seam
                seam = row.seam_version
            return seam

    def mark_history_unavailable(self, nct_id: str, error: str, *, at: dt.datetime | None = None) -> None:
        import re

        # The error quotes the garbage it got: PostgreSQL text refuses NUL, nobody needs controls.
        error = re.sub(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", "\ufffd", error)[:1000]
        with self.session() as s, s.begin():
            if s.get(Trial, nct_id) is None:
                s.add(Trial(nct_id=nct_id, first_seen_at=at or utcnow()))
                s.flush()
            row = s.get(RegistryHistory, nct_id)
            if row is None:
                s.add(RegistryHistory(nct_id=nct_id, state="unavailable", fetched_at=at or utcnow(), error=error))
            elif row.state != "ok":
                row.fetched_at, row.error = at or utcnow(), error

    def registry_history(self, nct_id: str) -> tuple[RegistryHistory | None, list[RegistryVersion]]:
        """The state of a trial's version list, and its versions oldest first."""
        with self.session() as s:
            return (s.get(RegistryHistory, nct_id),
                    list(s.scalars(select(RegistryVersion).where(RegistryVersion.nct_id == nct_id)
                                   .order_by(RegistryVersion.version))))

    def trials_without_registry_history(self, nct_ids: Sequence[str], limit: int) -> list[str]:
        """Of ``nct_ids``, up to ``limit`` stored trials whose version list was never asked
        for, oldest-watched first."""
        if limit <= 0 or not nct_ids:
            return []
        asked = select(RegistryHistory.nct_id)
        with self.session() as s:
            return list(s.scalars(select(Trial.nct_id).where(
                Trial.nct_id.in_(list(nct_ids)), Trial.nct_id.not_in(asked), Trial.gone_at.is_(None),
                Trial.nct_id.in_(select(Snapshot.nct_id))).order_by(Trial.first_seen_at, Trial.nct_id).limit(limit)))

    def stored_registry_versions(self, nct_id: str) -> set[int]:
        with self.session() as s:
            return set(s.scalars(select(Snapshot.registry_version).where(
                Snapshot.nct_id == nct_id, Snapshot.source == "registry")))

    def record_registry_version(self, record: dict, *, version: int, date: str,
                                ignore: Sequence[str] = (), seam: bool = False) -> "Recorded":
        """Store version ``version`` of a trial as the registry served it, diffed against the
        newest stored registry version before it; its changes are historical (no outbox row).
        ``seam``: this is the version the first live snapshot shows, so the first live snapshot
        is diffed against it too (changes there mean the two really differ). Idempotent: a
        version already stored is not stored again (UNIQUE(nct_id, seq))."""
        p = Prepared.of(record)
        at = utcnow()
        try:
            with self.session() as s, s.begin():
                trial = s.get(Trial, p.nct_id)
                if trial is None:
                    trial = Trial(nct_id=p.nct_id, first_seen_at=at, title=p.title, overall_status=p.status)
                    s.add(trial)
                    s.flush()
                seq = REGISTRY_SEQ_BASE + version
                done = s.scalars(select(Snapshot).where(Snapshot.nct_id == p.nct_id, Snapshot.seq == seq)).first()
                if done is not None:
                    return Recorded(nct_id=p.nct_id, snapshot_id=done.id, first=False, stored=False)
                before = s.scalars(select(Snapshot).where(
                    Snapshot.nct_id == p.nct_id, Snapshot.source == "registry", Snapshot.seq < seq)
                    .order_by(Snapshot.seq.desc()).limit(1)).first()
                put_blobs(s, split_parts(p.canon, p.digest, raw_size=len(p.body), encoded=p.encoded))
                snap = Snapshot(nct_id=p.nct_id, seq=seq, blob_hash=p.digest, fetched_at=at,
                                overall_status=p.status, last_update_posted=p.last_update_posted,
                                source="registry", registry_version=version, registry_date=date[:10])
                s.add(snap)
                s.flush()
                changes: list[Change] = []
                if before is not None:
                    # By words too: the registry's legacy markup would otherwise fill the
                    # details with tags and entities.
                    changes = seam_diff(self._load_blob(s, before.blob_hash), p.canon, ignore=ignore)
                rows = self._add_changes(s, p.nct_id, changes, snapshot_id=snap.id,
                                         at=day_start(date), registry_date=date[:10])
                if seam:
                    live = s.scalars(select(Snapshot).where(Snapshot.nct_id == p.nct_id, Snapshot.source.is_(None))
                                     .order_by(Snapshot.seq).limit(1)).first()
                    if live is not None:
                        seam_changes = seam_diff(p.canon, self._load_blob(s, live.blob_hash), ignore=ignore)
                        # The live record differs from the registry's newest version: that
                        # happened between the two dates; history too, never news now.
                        rows += self._add_changes(s, p.nct_id, seam_changes, snapshot_id=live.id,
                                                  at=live.fetched_at,
                                                  registry_date=(live.last_update_posted or date)[:10])
                return Recorded(nct_id=p.nct_id, snapshot_id=snap.id, first=before is None, stored=True,
                                changes=rows)
        except IntegrityError:
            # Another backfill stored this version first: nothing twice.
            return Recorded(nct_id=p.nct_id, snapshot_id=None, first=False, stored=False, raced=True)
        except OperationalError as e:
            raise StoreError(f"database error while storing {p.nct_id} version {version}: {e.orig}") from None
