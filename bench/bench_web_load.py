"""Web pages under load while polls write: are the pages still responsive?

One `trialwatch serve` process on 127.0.0.1 over a SQLite (default) or PostgreSQL database of
N trials; the registry is the local stand-in (tests/standin.py), in this process. While
``--polls`` loops each run `trialwatch poll --force --no-send` back to back (one holds the lock,
the others find it held, as when several pollers are started at once) and a mutator changes
the status of some trials every half second (so polls store real new versions), ``--clients``
concurrent httpx clients make ``--requests`` requests:

* GET: the home page and trial pages (80%);
* POST: /subscribe with a fresh address each (20%): a full sign-up, rate-limit rows, a pending
  subscriber and a confirmation mail (file transport), i.e. write transactions.

The floor, measured in the same run against the same server under the same poll load: the
same clients fetching /static/style.css (no database at all). Figures: p50 / p99 latency for
GET, POST and the floor, and requests per second. These are measurements, not tests.

    .venv/bin/python bench/bench_web_load.py                      # N=500, 2,000 requests, 20 clients, 6 polls
    .venv/bin/python bench/bench_web_load.py --database postgresql+psycopg://postgres@127.0.0.1/bench
    .venv/bin/python bench/bench_web_load.py --src /tmp/old-trialwatch   # another checkout's package
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from corpus import change_status, clones, ids_of  # noqa: E402
from standin import StandIn  # noqa: E402

SECRET = "bench-secret-key-0123456789abcdef"
STATUSES = ("RECRUITING", "ACTIVE_NOT_RECRUITING", "SUSPENDED", "COMPLETED")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(base: str, timeout_s: float = 30) -> bool:
    """Whether the server at ``base`` answers /healthz with 200 within ``timeout_s``."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base + "/healthz").status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


class Env:
    """What the child processes share: the config file and the environment (PYTHONPATH=--src)."""

    def __init__(self, workdir: Path, api: StandIn, ids: list[str], database: str, src: Path | None) -> None:
        self.cfg = workdir / "config.yaml"
        self.cfg.write_text(
            f"database: {database}\n"
            f"ctgov: {{base_url: '{api.base_url}', requests_per_minute: 100000}}\n"
            f"trials: [{', '.join(ids)}]\n"
            f"email: {{transport: file, outbox_dir: {workdir / 'outbox'}, public_url: 'http://127.0.0.1'}}\n")
        self.env = {**os.environ, "TRIALWATCH_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
        if src is not None:
            self.env["PYTHONPATH"] = str(src)
        self.cwd = str(workdir)

    def cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "trialwatch.cli", "--config", str(self.cfg), *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), env=self.env, cwd=self.cwd, capture_output=True, text=True)


async def load(base: str, paths: list[str], n_requests: int, clients: int, *, post_share: float,
               trial_ids: list[str], seed: int) -> dict:
    """``n_requests`` spread over ``clients`` concurrent clients; latencies by method."""
    import httpx

    rng = random.Random(seed)
    plan = ["POST" if rng.random() < post_share else "GET" for _ in range(n_requests)]
    lat: dict[str, list[float]] = {"GET": [], "POST": []}
    codes: dict[str, int] = {}
    counter = iter(range(n_requests))

    async def client(k: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as c:
            token = None
            if post_share:
                page = await c.get("/subscribe")
                token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            for i in counter:
                method = plan[i]
                t0 = time.perf_counter()
                if method == "GET":
                    r = await c.get(paths[i % len(paths)])
                else:
                    # A distinct client address per sign-up (uvicorn trusts X-Forwarded-For from
                    # 127.0.0.1), so the per-client rate limit does not turn POSTs into 429s.
                    r = await c.post("/subscribe", headers={"X-Forwarded-For": f"10.{k}.{i // 250}.{i % 250}"},
                                     data={"csrf_token": token, "email": f"bench{i}-{seed}@example.org",
                                           "trials": [trial_ids[i % len(trial_ids)]],
                                           "min_severity": "important", "digest": "each_poll"})
                lat[method].append(time.perf_counter() - t0)
                codes[f"{method} {r.status_code}"] = codes.get(f"{method} {r.status_code}", 0) + 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(clients)))
    wall = time.perf_counter() - t0
    return {"lat": lat, "codes": codes, "wall_s": wall, "req_per_s": n_requests / wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=500, help="trials watched (default 500)")
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--polls", type=int, default=6, help="concurrent poll loops (default 6)")
    ap.add_argument("--post-share", type=float, default=0.2)
    ap.add_argument("--database", default=None, help="a database URL (default: SQLite in a temp dir)")
    ap.add_argument("--src", type=Path, default=None, help="run the trialwatch package found in this folder")
    ap.add_argument("--label", default="", help="a name for this run in the output")
    ap.add_argument("--out", type=Path, default=None, help="append the result as one JSON line to this file")
    args = ap.parse_args()

    records = clones(args.n)
    ids = ids_of(records)
    with tempfile.TemporaryDirectory(prefix="tw-webload-", ignore_cleanup_errors=True) as tmp, \
            StandIn(records, data_timestamp="2026-11-24T09:00:05") as api:
        workdir = Path(tmp)
        database = args.database or f"sqlite:///{workdir / 'trialwatch.db'}"
        env = Env(workdir, api, ids, database, args.src)
        first = env.run("poll", "--no-send")
        if first.returncode != 0:
            print(first.stderr, file=sys.stderr)
            return 1
        port = free_port()
        server = subprocess.Popen(env.cmd("serve", "--port", str(port)), env=env.env, cwd=env.cwd,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stop = threading.Event()
        poll_runs: list[int] = []
        try:
            base = f"http://127.0.0.1:{port}"
            if not wait_healthy(base):
                print("the server did not start", file=sys.stderr)
                return 1

            def mutate() -> None:
                rng = random.Random(1)
                while not stop.wait(0.5):
                    for r in rng.sample(records, k=min(25, len(records))):
                        api.put(change_status(r, rng.choice(STATUSES), updated="2026-11-25"))

            def poll_loop() -> None:
                while not stop.is_set():
                    poll_runs.append(env.run("poll", "--force", "--no-send").returncode)

            workers = [threading.Thread(target=mutate, daemon=True)]
            workers += [threading.Thread(target=poll_loop, daemon=True) for _ in range(args.polls)]
            for w in workers:
                w.start()
            time.sleep(1.0)  # the polls are under way
            floor = asyncio.run(load(base, ["/static/style.css"], args.requests, args.clients, post_share=0,
                                     trial_ids=ids, seed=1))
            pages = ["/"] + [f"/trials/{i}" for i in ids[:50]]
            mixed = asyncio.run(load(base, pages, args.requests, args.clients, post_share=args.post_share,
                                     trial_ids=ids, seed=2))
        finally:
            stop.set()
            server.terminate()
            server.wait(timeout=30)
            for w in workers if "workers" in locals() else []:
                w.join(timeout=120)  # a poll still running writes into the folder being removed

    ms = lambda v: round(v * 1000, 1)  # noqa: E731
    result = {
        "label": args.label, "n": args.n, "requests": args.requests, "clients": args.clients, "polls": args.polls,
        "database": "sqlite" if args.database is None else args.database.split(":")[0],
        "GET": {"count": len(mixed["lat"]["GET"]), "p50_ms": ms(pct(mixed["lat"]["GET"], 50)),
                "p99_ms": ms(pct(mixed["lat"]["GET"], 99))},
        "POST": {"count": len(mixed["lat"]["POST"]), "p50_ms": ms(pct(mixed["lat"]["POST"], 50)),
                 "p99_ms": ms(pct(mixed["lat"]["POST"], 99))},
        "mixed_req_per_s": round(mixed["req_per_s"], 1),
        "floor_static": {"p50_ms": ms(pct(floor["lat"]["GET"], 50)), "p99_ms": ms(pct(floor["lat"]["GET"], 99)),
                         "req_per_s": round(floor["req_per_s"], 1)},
        "status_codes": {**mixed["codes"]},
        "polls_run": len(poll_runs), "polls_by_exit_code": {str(c): poll_runs.count(c) for c in sorted(set(poll_runs))},
        "mean_get_ms": ms(statistics.fmean(mixed["lat"]["GET"])) if mixed["lat"]["GET"] else None,
    }
    print(json.dumps(result, indent=2))
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
