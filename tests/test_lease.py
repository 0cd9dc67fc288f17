"""The poll lock never outlives its holder by much: a killed poll does not block the next one."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from trialwatch import ctgov, lease, poller, store as st
from trialwatch.cli import main
from trialwatch.config import loads
from trialwatch.daemon import Daemon
from trialwatch.errors import LockHeld

from corpus import clones, ids_of
from standin import StandIn

ROOT = Path(__file__).resolve().parent.parent
DAY1 = "2026-11-24T09:00:05"


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(ctgov, "BACKOFF_BASE_S", 0.01)


def make_config(api, db_url, trials, rpm=60000, batch=100):
    return loads(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: {rpm}, "
                 f"batch_size: {batch}, max_retries: 1}}\ntrials: [{', '.join(trials)}]\n")


def hold_lock(store, holder: str, *, seconds: float) -> None:
    with store.session() as s, s.begin():
        s.merge(st.Lock(name=poller.LOCK_NAME, holder=holder,
                        lease_until=st.utcnow() + dt.timedelta(seconds=seconds)))


def dead_pid() -> int:
    """The PID of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def snapshots(store) -> int:
    with store.session() as s:
        return s.scalar(select(func.count()).select_from(st.Snapshot))


def test_a_lock_held_by_a_dead_process_on_this_host_is_taken_over_at_once(store, db_url):
    records = clones(3)
    with StandIn(records, data_timestamp=DAY1) as api:
        hold_lock(store, f"{socket.gethostname()}:{dead_pid()}:abc", seconds=3600)
        report = poller.poll(store, make_config(api, db_url, ids_of(records)), send=False)
        assert report.complete and snapshots(store) == 3
        assert store.lock_holder(poller.LOCK_NAME) is None  # released after the poll


def test_a_lock_whose_lease_ran_out_is_taken_over(store, db_url):
    # A holder on another host cannot be asked whether it lives; its lease running out says so.
    records = clones(2)
    with StandIn(records, data_timestamp=DAY1) as api:
        hold_lock(store, "another-host:4242:abc", seconds=-1)
        assert poller.poll(store, make_config(api, db_url, ids_of(records)), send=False).complete


def test_a_live_holder_still_blocks_with_exit_5(store, db_url, tmp_path, capsys):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        records = clones(2)
        with StandIn(records, data_timestamp=DAY1) as api:
            hold_lock(store, f"{socket.gethostname()}:{live.pid}:abc", seconds=100)
            with pytest.raises(LockHeld):
                poller.poll(store, make_config(api, db_url, ids_of(records)), send=False)
            cfg = tmp_path / "config.yaml"
            cfg.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}'}}\n"
                           f"trials: [{', '.join(ids_of(records))}]\n")
            assert main(["--config", str(cfg), "poll", "--no-send"]) == 5
            assert "another poll holds the lock" in capsys.readouterr().err
            # Another host's holder with a lease still running blocks too.
            hold_lock(store, "another-host:4242:abc", seconds=100)
            with pytest.raises(LockHeld):
                poller.poll(store, make_config(api, db_url, ids_of(records)), send=False)
        assert snapshots(store) == 0
    finally:
        live.kill()
        live.wait()


def test_a_polls_lease_is_short_and_renewed_while_it_runs(store, db_url, monkeypatch):
    # A one-hour lease would block every other poll for an hour after a crash on another host.
    monkeypatch.setattr(lease, "RENEW_S", 0.05)
    seen: list[tuple[str, float, object]] = []

    class Watch(ctgov.Client):
        def _send(self, *a, **kw):
            lock = store.lock_holder(poller.LOCK_NAME)
            seen.append((lock.holder, (lock.lease_until - st.utcnow()).total_seconds(), lock.lease_until))
            time.sleep(0.2)  # long enough for the heartbeat to renew in between
            return super()._send(*a, **kw)

    records = clones(30)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids_of(records), batch=10)
        before = st.utcnow()
        client = Watch.from_config(config.ctgov)
        assert poller.poll(store, config, send=False, client=client).complete
        client.close()
    holders = {h for h, _, _ in seen}
    assert len(holders) == 1
    host, pid, _nonce = holders.pop().split(":")
    assert (host, int(pid)) == (socket.gethostname(), os.getpid())
    assert all(0 < left <= lease.LEASE_S for _, left, _ in seen)
    # Renewed while it ran: the lease's end moved on between requests (not only its first term).
    ends = [until for _, _, until in seen]
    assert ends == sorted(ends) and len(set(ends)) > 1
    assert lease.LEASE_S <= 120
    assert st.utcnow() >= before


def test_the_heartbeat_renews_the_lease_in_the_background(store):
    holder = lease.make_holder()
    assert store.acquire_lock("poll", holder, ttl_s=2)
    first = store.lock_holder("poll").lease_until
    with lease.Heartbeat(store, "poll", holder, every=0.05, lease=60) as beat:
        deadline = time.monotonic() + 10
        while store.lock_holder("poll").lease_until == first and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not beat.lost.is_set()
    assert store.lock_holder("poll").lease_until > first
    # Taken by another poller: the next beat says the lock is lost.
    hold_lock(store, "another-host:1:x", seconds=60)
    beat = lease.Heartbeat(store, "poll", holder)
    assert not beat.renew() and beat.lost.is_set()


def test_the_daemon_waits_out_a_dead_holders_lease_instead_of_skipping_the_run(store, db_url, caplog):
    records = clones(2)
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids_of(records))
        hold_lock(store, "another-host:4242:abc", seconds=1)  # stopped renewing; runs out in 1 s
        Daemon(store, config).poll_once()
        with store.session() as s:
            (p,) = s.scalars(select(st.Poll))
        assert p.complete and "skipping" not in caplog.text


def test_the_daemon_skips_a_run_while_a_holder_keeps_renewing(store, db_url, caplog, monkeypatch):
    import threading

    monkeypatch.setattr(lease, "LEASE_S", 1.0)
    records = clones(2)
    holder = "another-host:4242:abc"
    with StandIn(records, data_timestamp=DAY1) as api:
        config = make_config(api, db_url, ids_of(records))
        hold_lock(store, holder, seconds=1)
        alive = lease.Heartbeat(store, "poll", holder, every=0.2, lease=1)
        with alive:
            t = threading.Thread(target=Daemon(store, config).poll_once)
            t.start()
            t.join(timeout=30)
        assert not t.is_alive() and "skipping this run" in caplog.text
        with store.session() as s:
            assert s.scalar(select(func.count()).select_from(st.Poll)) == 0


def _poll_process(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trialwatch.cli", "--config", str(cfg), "poll", "--json",
                             "--no-send"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _slow_and_fast_configs(tmp_path, api, db_url, ids) -> tuple[Path, Path]:
    slow, fast = tmp_path / "slow.yaml", tmp_path / "fast.yaml"
    # 10 ids per batch at 4 requests a second: long enough to interrupt mid-poll.
    slow.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 240, "
                    f"batch_size: 10}}\ntrials: [{', '.join(ids)}]\n")
    fast.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000}}\n"
                    f"trials: [{', '.join(ids)}]\n")
    return slow, fast


def _wait_for(pred, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_a_poll_killed_mid_poll_does_not_block_the_next_one(tmp_path, db_url, sig):
    records = clones(40)
    ids = ids_of(records)
    with StandIn(records, data_timestamp=DAY1) as api:
        st.open_store(db_url).close()
        slow, fast = _slow_and_fast_configs(tmp_path, api, db_url, ids)
        proc = _poll_process(slow)
        try:
            assert _wait_for(lambda: len(api.requests) >= 2), "the poll never started"
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        store = st.open_store(db_url)
        try:
            if sig == signal.SIGTERM:
                # Stopped at a step boundary, said so, and let go of the lock on the way out.
                assert proc.returncode == 4, err
                assert "stopped by a signal" in err
                assert store.lock_holder(poller.LOCK_NAME) is None
            else:
                assert proc.returncode == -signal.SIGKILL
                assert store.lock_holder(poller.LOCK_NAME) is not None  # left behind
            again = _poll_process(fast)
            out, err = again.communicate(timeout=60)
            assert again.returncode == 0, err
            report = json.loads(out)
            assert report["complete"] and report["trials_checked"] == 40
            assert snapshots(store) == 40
        finally:
            store.close()
