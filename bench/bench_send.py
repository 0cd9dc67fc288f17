"""trialwatch benchmark: one `send` of N digests to a local SMTP sink, beside its floor.

    .venv/bin/python bench/bench_send.py                  # N=5,000, 20 changed trials, 5 rounds
    .venv/bin/python bench/bench_send.py --n 50000 --rounds 1
    .venv/bin/python bench/bench_send.py --profile        # one subject run under cProfile
    .venv/bin/python bench/bench_send.py --db-url postgresql+psycopg://postgres@127.0.0.1:5432/bench
    .venv/bin/python bench/bench_send.py --baseline ../tw-base  # also the code in ../tw-base, each round

``--baseline DIR``: DIR holds another version of the code (``git archive main | tar -x -C DIR``);
each round then also runs it as a second subject on its own copy of the database, interleaved
with this checkout's, so a before/after ratio comes from the same conditions.

Setup (not measured): a database with N active subscribers, each following 1 to 5 of 20 trials
(cloned from real records by tests/corpus.py), then each trial's status changes once, so
``Store.record_fetch`` queues the outbox rows the real way. Each round copies that database
(SQLite; PostgreSQL: re-created) and runs, interleaved:

* **subject**: a fresh process runs ``notify.send_pending`` (compose every digest, claim, send
  over SMTP, settle) against the copy; the time is the call's (wall, and its CPU seconds, which
  other load on the machine moves far less), the peak RSS the process's own ``ru_maxrss`` read
  by GNU time (``/usr/bin/time -f %M``).
* **floor**: a fresh process sends N prebuilt messages (the digests the subject stored, cycled
  from the first 200) with smtplib over one connection to the same sink.

The sink is a minimal asyncio SMTP server in its own process on 127.0.0.1 that accepts and
discards everything (counting messages, so a short send is caught). Figures are medians; the
load average before the rounds is printed and kept. Results: bench/results/send-<db>-<n>.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV_PY = ROOT / ".venv" / "bin" / "python"
RESULTS = BENCH / "results"
SECRET = "bench-secret-key-0123456789abcdef0123"
N_TRIALS = 20
FLOOR_DISTINCT = 200

if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and VENV_PY.exists() \
        and not os.environ.get("TRIALWATCH_BENCH_REEXEC"):
    os.environ["TRIALWATCH_BENCH_REEXEC"] = "1"
    os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])

sys.path.insert(0, str(ROOT / "tests"))


# -- the sink -----------------------------------------------------------------------------------

def run_sink(port_file: Path) -> None:
    """A minimal SMTP server: EHLO/MAIL/RCPT/DATA/RSET/NOOP/QUIT, everything accepted and dropped."""
    import asyncio

    count = 0

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal count
        writer.write(b"220 sink ESMTP\r\n")
        while True:
            line = await reader.readline()
            if not line:
                break
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n")
            elif verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                await writer.drain()
                while True:
                    chunk = await reader.readline()
                    if chunk in (b".\r\n", b""):
                        break
                count += 1
                writer.write(b"250 OK queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            elif verb == b"STAT":  # not SMTP: lets the driver read the count
                writer.write(f"250 {count}\r\n".encode())
            else:
                writer.write(b"250 OK\r\n")
            await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(session, "127.0.0.1", 0, limit=1 << 20)
        port_file.write_text(str(server.sockets[0].getsockname()[1]))
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def sink_count(port: int) -> int:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"STAT\r\n")
        n = int(f.readline().split()[1])
        s.sendall(b"QUIT\r\n")
        f.readline()
        return n


# -- setup --------------------------------------------------------------------------------------

def config_text(port: int) -> str:
    return ("email:\n  from: 'trialwatch <alerts@tw.example.org>'\n  public_url: https://tw.example.org\n"
            f"  transport: smtp\n  smtp: {{host: 127.0.0.1, port: {port}, timeout_s: 30}}\n")


def setup(url: str, n: int, seed: int = 13) -> None:
    """N subscribers following 1–5 of 20 trials; each trial's status then changes once."""
    import datetime as dt

    from sqlalchemy import insert

    from corpus import change_status, clones
    from trialwatch.store import Subscriber, Subscription, open_store, utcnow

    store = open_store(url)
    records = clones(N_TRIALS)
    ids = [r["protocolSection"]["identificationModule"]["nctId"] for r in records]
    now = utcnow()
    store.record_fetches(records, fetched_at=now - dt.timedelta(days=1))
    rnd = random.Random(seed)
    step = 5000
    with store.session() as s, s.begin():
        for start in range(0, n, step):
            subs = [{"id": i + 1, "channel": "email", "address": f"doc{i}@hospital{i % 97}.example.org",
                     "name": f"Dr Number {i}", "state": "active", "source": "web", "min_severity": "minor",
                     "digest": "each_poll", "created_at": now, "confirmed_at": now, "token_version": 0}
                    for i in range(start, min(n, start + step))]
            s.execute(insert(Subscriber), subs)
            s.execute(insert(Subscription), [
                {"subscriber_id": sub["id"], "kind": "trial", "target": t}
                for sub in subs for t in rnd.sample(ids, rnd.randint(1, 5))])
    changed = [change_status(r, "RECRUITING" if r["protocolSection"]["statusModule"]["overallStatus"] !=
                             "RECRUITING" else "COMPLETED", updated="2026-11-25") for r in records]
    store.record_fetches(changed, fetched_at=now)
    if url.startswith("postgresql"):
        from sqlalchemy import text

        # Up-to-date planner statistics, as autovacuum keeps them in a database in use (a copy
        # made seconds after a bulk load would otherwise plan every query as for empty tables).
        with store.session() as s, s.begin():
            s.execute(text("ANALYZE"))
    store.close()


# -- the measured sides -------------------------------------------------------------------------

def run_subject(url: str, port: int, out: Path, profile: Path | None) -> None:
    os.environ["TRIALWATCH_SECRET_KEY"] = SECRET
    from trialwatch import config as cfgmod
    from trialwatch import notify
    from trialwatch.store import open_store

    config = cfgmod.loads(config_text(port))
    store = open_store(url, create=False)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    t0, c0 = time.perf_counter(), time.process_time()
    report = notify.send_pending(store, config)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if prof:
        prof.disable()
        prof.dump_stats(str(profile))
    out.write_text(json.dumps({"seconds": seconds, "cpu_s": cpu, "composed": report.composed, "sent": len(report.sent),
                               "queued": len(report.queued), "failed": len(report.failed)}))
    store.close()


def run_floor(url: str, port: int, n: int, out: Path) -> None:
    import smtplib

    from trialwatch.store import open_store

    store = open_store(url, create=False)
    # N prebuilt messages: the digests the subject stored, FLOOR_DISTINCT of them cycled (all N
    # would cost the floor process gigabytes at N=50,000, and bytes are bytes to smtplib).
    bodies = _bodies(store)
    store.close()
    t0, c0 = time.perf_counter(), time.process_time()
    conn = smtplib.SMTP("127.0.0.1", port, timeout=30)
    conn.ehlo()
    for i in range(n):
        rcpt, body = bodies[i % len(bodies)]
        conn.sendmail("alerts@tw.example.org", [rcpt], body)
    conn.quit()
    out.write_text(json.dumps({"seconds": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}))


def _bodies(store) -> list[tuple[str, bytes]]:  # noqa: ANN001
    from sqlalchemy import select

    from trialwatch.store import Message

    with store.session() as s:
        return [tuple(r) for r in s.execute(select(Message.recipient, Message.body)
                                            .order_by(Message.id).limit(FLOOR_DISTINCT))]


def measured(args: list[str], code: Path | None = None) -> tuple[dict, float]:
    """Run this script with ``args`` in a fresh process; (its JSON result, its peak RSS in MB).
    ``code``: import trialwatch from that folder instead (PYTHONPATH comes before the venv's
    editable install; this script's folder, first on sys.path, holds no trialwatch)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    with tempfile.NamedTemporaryFile(suffix=".rss", delete=False) as f:
        rss = Path(f.name)
    cmd = ["/usr/bin/time", "-f", "%M", "-o", str(rss), str(VENV_PY), __file__, *args, "--out", str(out)]
    env = dict(os.environ, PYTHONPATH=str(code), TRIALWATCH_BENCH_CODE=str(code)) if code else None
    subprocess.run(cmd, check=True, env=env)
    result = json.loads(out.read_text())
    mb = int(rss.read_text().split()[-1]) / 1024
    out.unlink()
    rss.unlink()
    return result, mb


# -- the driver ---------------------------------------------------------------------------------

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--db-url", help="PostgreSQL URL (a database the bench may drop and re-create); default SQLite")
    ap.add_argument("--profile", action="store_true", help="one subject run under cProfile, top 30 printed")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also run the trialwatch code in DIR (e.g. an exported main) each round, interleaved")
    ap.add_argument("--role", choices=["sink", "setup", "subject", "floor"], help=argparse.SUPPRESS)
    ap.add_argument("--url", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--prof-out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "sink":
        run_sink(args.out)
        return 0
    if os.environ.get("TRIALWATCH_BENCH_CODE"):
        _migrations_from(Path(os.environ["TRIALWATCH_BENCH_CODE"]))
    if args.role == "setup":
        setup(args.url, args.n)
        args.out.write_text("{}")
        return 0
    if args.role == "subject":
        run_subject(args.url, args.port, args.out, args.prof_out)
        return 0
    if args.role == "floor":
        run_floor(args.url, args.port, args.n, args.out)
        return 0

    tmp = Path(tempfile.mkdtemp(prefix="tw-bench-send-"))
    port_file = tmp / "port"
    sink = subprocess.Popen([str(VENV_PY), __file__, "--role", "sink", "--out", str(port_file)])
    try:
        while not port_file.exists() or not port_file.read_text():
            time.sleep(0.05)
        port = int(port_file.read_text())
        # One set-up database per version of the code: the baseline may be at an older migration.
        codes = {"subject": None} | ({"baseline": args.baseline} if args.baseline else {})
        templates = {}
        t0 = time.perf_counter()
        for which, code in codes.items():
            if args.db_url:
                url = make_url_for(args.db_url, "" if which == "subject" else "_base")
                templates[which] = _pg_fresh(url)
            else:
                templates[which] = f"sqlite:///{tmp / f'template-{which}.db'}"
            measured(["--role", "setup", "--url", templates[which], "--n", str(args.n)], code=code)
        print(f"setup: {args.n} subscribers, {N_TRIALS} changed trials, {time.perf_counter() - t0:.1f} s",
              flush=True)

        def fresh(which: str = "subject") -> str:
            if args.db_url:
                return _pg_copy(templates[which])
            db = tmp / f"round-{which}.db"
            shutil.copyfile(templates[which].removeprefix("sqlite:///"), db)
            return f"sqlite:///{db}"

        if args.profile:
            prof = tmp / "send.prof"
            measured(["--role", "subject", "--url", fresh(), "--port", str(port), "--prof-out", str(prof)])
            import pstats

            pstats.Stats(str(prof)).sort_stats("cumulative").print_stats(40)
            pstats.Stats(str(prof)).sort_stats("tottime").print_stats(25)
            return 0

        load = os.getloadavg()[0]
        print(f"load average before the rounds: {load:.2f} (2 cores: above 2, other work competes)", flush=True)
        rows = []
        for r in range(args.rounds):
            # The baseline (when given) goes first in odd rounds: neither side always runs second.
            base = _baseline_round(args, port, fresh("baseline")) if args.baseline and r % 2 else None
            url = fresh()
            before = sink_count(port)
            subj, subj_mb = measured(["--role", "subject", "--url", url, "--port", str(port)])
            got = sink_count(port) - before
            if got != args.n or subj["sent"] != args.n:
                print(f"round {r}: sink received {got}, send reported {subj}; expected {args.n}", file=sys.stderr)
                return 1
            floor, floor_mb = measured(["--role", "floor", "--url", url, "--port", str(port), "--n", str(args.n)])
            row = {"subject_s": subj["seconds"], "subject_mb": subj_mb, "floor_s": floor["seconds"],
                   "floor_mb": floor_mb, "subject_cpu_s": subj["cpu_s"], "floor_cpu_s": floor["cpu_s"]}
            line = (f"round {r}: send {subj['seconds']:.2f} s ({args.n / subj['seconds']:.0f} digests/s, "
                    f"{subj_mb:.0f} MB, CPU {subj['cpu_s']:.2f} s); floor {floor['seconds']:.2f} s "
                    f"(CPU {floor['cpu_s']:.2f} s); ratio {subj['seconds'] / floor['seconds']:.2f}")
            if args.baseline:
                base_s, base_cpu, base_mb = base or _baseline_round(args, port, fresh("baseline"))
                row |= {"baseline_s": base_s, "baseline_mb": base_mb, "baseline_cpu_s": base_cpu}
                line += (f"; baseline {base_s:.2f} s ({base_mb:.0f} MB, CPU {base_cpu:.2f} s), "
                         f"ratio {base_s / floor['seconds']:.2f}")
            rows.append(row)
            print(line, flush=True)
        med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        ratio = statistics.median(row["subject_s"] / row["floor_s"] for row in rows)
        # CPU seconds of the measured call, beside the wall time: far less moved by other load
        # on the machine (the sink's share is not in either).
        cpu_ratio = statistics.median(row["subject_cpu_s"] / row["floor_cpu_s"] for row in rows)
        db = "postgresql" if args.db_url else "sqlite"
        summary = {"n": args.n, "trials": N_TRIALS, "rounds": args.rounds, "db": db, **med,
                   "digests_per_s": args.n / med["subject_s"], "ratio": ratio, "cpu_ratio": cpu_ratio,
                   "load_before": load, "rows": rows}
        md = (f"| send, N={args.n:,}, {N_TRIALS} trials changed, {db} (median of {args.rounds}) | "
              f"{med['subject_s']:.2f} s, {args.n / med['subject_s']:.0f} digests/s, {med['subject_mb']:.0f} MB | "
              f"smtplib, {args.n:,} prebuilt messages, one connection: {med['floor_s']:.2f} s | {ratio:.2f}× "
              f"(CPU {med['subject_cpu_s']:.2f} s / {med['floor_cpu_s']:.2f} s: {cpu_ratio:.2f}×) |")
        if args.baseline:
            summary["baseline_ratio"] = statistics.median(row["baseline_s"] / row["floor_s"] for row in rows)
            summary["baseline_cpu_ratio"] = statistics.median(row["baseline_cpu_s"] / row["floor_cpu_s"]
                                                              for row in rows)
            md += (f"\n| the same, baseline code ({args.baseline.name}), same rounds | {med['baseline_s']:.2f} s, "
                   f"{args.n / med['baseline_s']:.0f} digests/s, {med['baseline_mb']:.0f} MB | "
                   f"(the same floor) | {summary['baseline_ratio']:.2f}× (CPU {med['baseline_cpu_s']:.2f} s: "
                   f"{summary['baseline_cpu_ratio']:.2f}×) |")
        print(md)
        RESULTS.mkdir(exist_ok=True)
        name = f"send-{db}-{args.n}"
        (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=1))
        (RESULTS / f"{name}.md").write_text("| work | subject | floor (same run) | ratio |\n|---|---|---|---|\n"
                                            + md + "\n")
        return 0
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def _baseline_round(args: argparse.Namespace, port: int, url: str) -> tuple[float, float, float]:
    """The baseline code's send on its own fresh copy, checked like the subject's: (s, CPU s, MB)."""
    before = sink_count(port)
    base, mb = measured(["--role", "subject", "--url", url, "--port", str(port)], code=args.baseline)
    got = sink_count(port) - before
    if got != args.n or base["sent"] != args.n:
        raise SystemExit(f"baseline: sink received {got}, send reported {base}; expected {args.n}")
    return base["seconds"], base["cpu_s"], mb


def _migrations_from(code: Path) -> None:
    """trialwatch.migrations from ``code`` too: the venv's editable install maps that package
    to this checkout's folder, which may hold migrations the baseline does not know."""
    import importlib.util

    init = code / "migrations" / "__init__.py"
    spec = importlib.util.spec_from_file_location("trialwatch.migrations", init,
                                                  submodule_search_locations=[str(init.parent)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["trialwatch.migrations"] = module
    spec.loader.exec_module(module)


def make_url_for(url: str, suffix: str) -> str:
    """``url`` with ``suffix`` added to its database name."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return u.set(database=f"{u.database}{suffix}").render_as_string(hide_password=False)


def _pg_fresh(url: str) -> str:
    """Drop and re-create the database ``url`` names (the set-up copy every round starts from)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{base.database}_round"'))
        c.execute(text(f'DROP DATABASE IF EXISTS "{base.database}"'))
        c.execute(text(f'CREATE DATABASE "{base.database}"'))
    admin.dispose()
    return url


def _pg_copy(url: str) -> str:
    """A fresh copy of the set-up PostgreSQL database (CREATE DATABASE ... TEMPLATE)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    base = make_url(url)
    copy = f"{base.database}_round"
    admin = create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{copy}"'))
        c.execute(text(f'CREATE DATABASE "{copy}" TEMPLATE "{base.database}"'))
    admin.dispose()
    return base.set(database=copy).render_as_string(hide_password=False)


if __name__ == "__main__":
    sys.exit(main())
