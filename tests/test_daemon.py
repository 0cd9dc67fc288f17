"""`trialwatch run`: the daemon polls on schedule, one poll at a time, and stops cleanly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select

from trialwatch import store as st
from trialwatch.config import loads
from trialwatch.daemon import Daemon

from corpus import clones, ids_of
from standin import StandIn

ROOT = Path(__file__).resolve().parent.parent


def start_daemon(cfg: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trialwatch.cli", "--config", str(cfg), "run", "--now"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def sigterm_when(proc: subprocess.Popen, ready) -> tuple[str, str]:
    """Wait until ``ready()``, send SIGTERM, and return the daemon's (stdout, stderr)."""
    try:
        assert wait_for(ready), "the daemon never got there"
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_for(pred, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def polls(store):
    with store.session() as s:
        return list(s.scalars(select(st.Poll).order_by(st.Poll.id)))


def test_sigterm_after_a_poll_exits_0(tmp_path, db_url):
    records = clones(5)
    ids = ids_of(records)
    with StandIn(records) as api:
        cfg = tmp_path / "config.yaml"
        cfg.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000}}\n"
                       f"trials: [{', '.join(ids)}]\nschedule: '0 3 * * *'\n")
        store = st.open_store(db_url)
        proc = start_daemon(cfg)
        out, err = sigterm_when(proc, lambda: any(p.finished_at for p in polls(store)))
        assert proc.returncode == 0, err
        assert "daemon started" in err and "5 trials checked" in err and "stopped after 1 poll" in err
        (p,) = polls(store)
        assert p.complete
        store.close()


def test_sigterm_during_a_poll_stops_at_a_step_boundary(tmp_path, db_url):
    records = clones(50)
    ids = ids_of(records)
    with StandIn(records) as api:
        cfg = tmp_path / "config.yaml"
        # 10 ids per batch at 2 requests a second: the poll takes ~3 s, long enough to interrupt.
        cfg.write_text(f"database: {db_url}\nctgov: {{base_url: '{api.base_url}', requests_per_minute: 120, "
                       f"batch_size: 10}}\ntrials: [{', '.join(ids)}]\n")
        store = st.open_store(db_url)
        proc = start_daemon(cfg)
        out, err = sigterm_when(proc, lambda: len(api.requests) >= 2)
        assert proc.returncode == 0, err
        (p,) = polls(store)
        assert not p.complete and "stopped by a signal" in p.error
        with store.session() as s:
            stored = s.scalar(select(func.count()).select_from(st.Snapshot))
        assert 0 < stored < 50 and stored % 10 == 0  # whole batches only
        assert store.lock_holder("poll") is None  # the lock was released
        store.close()


def test_a_held_lock_skips_the_run_and_logs_why(store, caplog, tmp_path):
    config = loads(f"database: sqlite:///{tmp_path / 'x.db'}\nctgov: {{base_url: 'http://127.0.0.1:9/api/v2'}}\n")
    assert store.acquire_lock("poll", "someone-else", ttl_s=600)
    with caplog.at_level(logging.WARNING, logger="trialwatch"):
        Daemon(store, config).poll_once()
    assert "skipping this run" in caplog.text and "someone-else" in caplog.text


def test_a_stop_during_a_retry_wait_ends_the_poll_at_once(store, tmp_path):
    # A 429 asking for 300 s: a SIGTERM must not wait that out (the service manager would
    # SIGKILL us and leave the poll lock held for an hour).
    import threading

    records = clones(3)
    ids = ids_of(records)
    with StandIn(records) as api:
        config = loads(f"database: sqlite:///{tmp_path / 'x.db'}\n"
                       f"ctgov: {{base_url: '{api.base_url}', requests_per_minute: 60000}}\n"
                       f"trials: [{', '.join(ids)}]\n")
        api.fail_next("429", times=1, retry_after=300)
        daemon = Daemon(store, config)
        t = threading.Thread(target=daemon.poll_once)
        t.start()
        assert wait_for(lambda: len(api.requests) >= 1, timeout=10)
        time.sleep(0.2)
        started = time.monotonic()
        daemon.stop.set()
        t.join(timeout=10)
        assert not t.is_alive() and time.monotonic() - started < 5
        (p,) = polls(store)
        assert not p.complete and "stopped by a signal" in p.error
        assert store.lock_holder("poll") is None
