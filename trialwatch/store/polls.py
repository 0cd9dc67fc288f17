"""Poll rows: a poll's start and finish, the last complete one, and what the mail still owes."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import func, or_, select

from .models import Message, OutboxRow, Poll, utcnow


class PollOps:
    """Mixed into Store: the ``polls`` table and the counts a poll or ``/healthz`` reports."""

    def start_poll(self) -> int:
        """A new poll row, started now; its id."""
        with self.session() as s, s.begin():
            row = Poll(started_at=utcnow())
            s.add(row)
            s.flush()
            return row.id

    def finish_poll(self, poll_id: int, *, complete: bool, skipped: bool, full: bool,
                    data_timestamp: str | None, requests: int, bytes_received: int,
                    trials_checked: int, trials_changed: int, changes: int, error: str | None) -> None:
        """Say how far a poll got (even one that ended in a bug)."""
        with self.session() as s, s.begin():
            row = s.get(Poll, poll_id)
            row.finished_at = utcnow()
            row.complete = complete
            row.skipped = skipped
            row.full = full
            row.data_timestamp = data_timestamp
            row.requests = requests
            row.bytes_received = bytes_received
            row.trials_checked = trials_checked
            row.trials_changed = trials_changed
            row.changes = changes
            row.error = error

    def last_complete_poll(self) -> Poll | None:
        """The newest poll that finished complete: only its ``data_timestamp`` lets a poll skip."""
        with self.session() as s:
            return s.scalars(select(Poll).where(Poll.complete.is_(True))
                             .order_by(Poll.id.desc()).limit(1)).first()

    def last_full_sweep(self) -> dt.datetime | None:
        """When the newest complete full sweep started."""
        with self.session() as s:
            return s.scalars(select(Poll.started_at).where(Poll.complete.is_(True), Poll.full.is_(True))
                             .order_by(Poll.id.desc()).limit(1)).first()

    def mail_waiting(self) -> bool:
        """Whether any change waits for a digest, or any message waits to be sent."""
        with self.session() as s:
            pending = s.scalar(select(func.count()).select_from(OutboxRow).where(OutboxRow.message_id.is_(None)))
            queued = s.scalar(select(func.count()).select_from(Message).where(Message.state == "queued"))
        return bool(pending or queued)

    def health(self) -> tuple[Any, Any]:
        """``(when the last complete poll finished, undelivered changes)`` for ``/healthz``."""
        with self.session() as s:
            last = s.scalar(select(func.max(Poll.finished_at)).where(Poll.complete.is_(True)))
            # Changes owed to someone and not yet delivered: not in a message, or in one
            # that has not been sent.
            backlog = s.scalar(select(func.count()).select_from(OutboxRow)
                               .outerjoin(Message, Message.id == OutboxRow.message_id)
                               .where(or_(OutboxRow.message_id.is_(None), Message.state != "sent")))
        return last, backlog
