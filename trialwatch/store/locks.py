"""The poll lock: a lease with a holder, taken over when the holder is dead."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import (
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from .models import Lock, utcnow


class LockOps:
    """Mixed into Store: the named lease locks."""

    def acquire_lock(self, name: str, holder: str, ttl_s: float,
                     is_dead: "Callable[[str], bool] | None" = None) -> bool:
        """Take (or renew) the named lease if it is free, expired or already ours, or when
        ``is_dead(current holder)`` says its holder is gone (a killed poll on this host).
        Atomic on SQLite and PostgreSQL: an INSERT that collides falls back to a conditional
        UPDATE; a takeover only replaces the very holder that was found dead."""
        now = utcnow()
        until = now + dt.timedelta(seconds=ttl_s)
        with self.session() as s:
            # A read first: a poll that finds a live holder (the common case when several are
            # started at once) then takes no write lock at all, which pages would wait behind.
            held = s.execute(select(Lock.holder, Lock.lease_until).where(Lock.name == name)).first()
        if held is not None and held.lease_until >= now and held.holder != holder \
                and (is_dead is None or not is_dead(held.holder)):
            return False
        try:
            with self.session() as s, s.begin():
                s.add(Lock(name=name, holder=holder, lease_until=until))
            return True
        except IntegrityError:
            pass
        with self.session() as s, s.begin():
            res = s.execute(update(Lock).where(Lock.name == name)
                            .where((Lock.lease_until < now) | (Lock.holder == holder))
                            .values(holder=holder, lease_until=until))
            if res.rowcount == 1:
                return True
            if is_dead is None:
                return False
            current = s.scalar(select(Lock.holder).where(Lock.name == name))
            if current is None or not is_dead(current):
                return False
            res = s.execute(update(Lock).where(Lock.name == name, Lock.holder == current)
                            .values(holder=holder, lease_until=until))
            return res.rowcount == 1

    def renew_lock(self, name: str, holder: str, ttl_s: float) -> bool:
        """Extend our own lease; False when another holder has the lock now."""
        until = utcnow() + dt.timedelta(seconds=ttl_s)
        with self.session() as s, s.begin():
            res = s.execute(update(Lock).where(Lock.name == name, Lock.holder == holder)
                            .values(lease_until=until))
            return res.rowcount == 1

    def release_lock(self, name: str, holder: str) -> None:
        from sqlalchemy import delete

        with self.session() as s, s.begin():
            s.execute(delete(Lock).where(Lock.name == name, Lock.holder == holder))

    def lock_holder(self, name: str) -> Lock | None:
        with self.session() as s:
            lock = s.get(Lock, name)
            return lock if lock is not None and lock.lease_until >= utcnow() else None
