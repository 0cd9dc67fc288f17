"""Page throughput between polls: index, a trial page, a feed and a 304, each beside its floor.

One `trialwatch serve` process on 127.0.0.1 over a SQLite (default) or PostgreSQL database of
N watched trials (two polls first, the measured trial changing status in between; none during
the measurement: pages change only after a poll).

The load generator is ``wrk`` (a C program, its own process) when it is on PATH: ``--clients``
keep-alive connections for ``--duration`` seconds per target; a Lua script counts the status
codes and prints the latency percentiles. Without wrk (or with ``--client httpx``) it is
``--clients`` Python httpx clients making ``--requests`` GETs, which on a small machine
measures the clients as much as the server: the output says which one ran.
Targets are interleaved round by round (floor, index, trial, feed, 304, floor, ...) so the
noise of a shared machine falls on all of them alike, and each figure is the median over
``--rounds`` rounds. The floor: /static/style.css from the same server (no database); a row's
``floor/x`` is its own server's floor over the row's req/s.

    .venv/bin/python bench/bench_pages.py                          # N=1000, 20 clients, 5 rounds
    .venv/bin/python bench/bench_pages.py --src /tmp/old-trialwatch  # another checkout's package
    .venv/bin/python bench/bench_pages.py --baseline-src /tmp/old-trialwatch  # before/after in one run
    .venv/bin/python bench/bench_pages.py --database postgresql+psycopg://postgres@127.0.0.1/bench

Rows: ``index`` is ``/`` (the first page), ``trial`` a typical trial page (the third clone of
the corpus, a mid-sized record), ``feed`` that trial's Atom feed, ``304`` the trial page asked
again with the ETag it was served (a feed reader's poll; an older trialwatch without ETags
answers 200 there, which the status codes show). With ``--baseline-src DIR`` a second server
runs DIR's package over the same database (``--baseline-python PY``: with another interpreter,
e.g. a venv with other packages), and every round measures each target on both (rows
``before:<target>``), so before and after share the same noise. ``cpu ms`` is the server
process's CPU time per request (Linux /proc), which a shared machine's load disturbs least.
Measurements, not tests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from bench_web_load import Env, free_port, pct, wait_healthy  # noqa: E402
from corpus import change_status, clones, ids_of  # noqa: E402
from standin import StandIn  # noqa: E402


async def hammer(base: str, path: str, n_requests: int, clients: int, headers: dict | None = None) -> dict:
    import httpx

    lat: list[float] = []
    codes: dict[int, int] = {}
    counter = iter(range(n_requests))
    size = [0]

    async def client() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=120) as c:
            for _ in counter:
                t0 = time.perf_counter()
                r = await c.get(path, headers=headers or {})
                lat.append(time.perf_counter() - t0)
                codes[r.status_code] = codes.get(r.status_code, 0) + 1
                size[0] = len(r.content)

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - t0
    return {"requests": n_requests, "req_per_s": n_requests / wall, "p50_ms": pct(lat, 50) * 1000, "p99_ms": pct(lat, 99) * 1000,
            "codes": codes, "bytes": size[0]}

# Counts status codes and body sizes per wrk thread; done() sums them and prints one JSON line.
WRK_LUA = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) codes = {}; size = 0 end
function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  size = #body
end
function done(summary, latency, requests)
  local all, size = {}, 0
  for _, t in ipairs(threads) do
    for c, n in pairs(t:get("codes")) do all[tostring(c)] = (all[tostring(c)] or 0) + n end
    size = t:get("size")
  end
  local parts = {}
  for c, n in pairs(all) do table.insert(parts, string.format('"%s": %d', c, n)) end
  local e = summary.errors
  io.write(string.format(
    'WRK-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "bytes": %d, '
    .. '"errors": %d, "codes": {%s}}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), size,
    e.connect + e.read + e.write + e.timeout, table.concat(parts, ", ")))
end
"""


def wrk(base: str, path: str, seconds: int, clients: int, headers: dict | None, threads: int) -> dict:
    """One wrk run against ``base + path``; the same figures as ``hammer``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        for name, value in (headers or {}).items():
            f.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
        f.write(WRK_LUA)
        script = f.name
    try:
        done = subprocess.run(["wrk", "-t", str(min(threads, clients)), "-c", str(clients), "-d", f"{seconds}s",
                               "--timeout", "60s", "-s", script, base + path],
                              capture_output=True, text=True, check=True)
    finally:
        Path(script).unlink()
    line = next(x for x in done.stdout.splitlines() if x.startswith("WRK-JSON "))
    r = json.loads(line.removeprefix("WRK-JSON "))
    if r["errors"]:
        r["codes"]["error"] = r["errors"]
    return {"requests": r["requests"], "req_per_s": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "codes": {int(k) if k.isdigit() else k: v for k, v in r["codes"].items()},
            "bytes": r["bytes"]}



def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="trials watched (default 1000)")
    ap.add_argument("--client", choices=("auto", "wrk", "httpx"), default="auto",
                    help="load generator: wrk when on PATH (auto), or Python httpx clients")
    ap.add_argument("--duration", type=int, default=5, help="wrk: whole seconds per target per round")
    ap.add_argument("--wrk-threads", type=int, default=1, help="wrk: threads (each drives clients/threads)")
    ap.add_argument("--requests", type=int, default=1000, help="httpx: requests per target per round")
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--database", default=None, help="a database URL (default: SQLite in a temp dir)")
    ap.add_argument("--src", type=Path, default=None, help="run the trialwatch package found in this folder")
    ap.add_argument("--baseline-src", type=Path, default=None,
                    help="also serve this folder's trialwatch package over the same database, interleaved")
    ap.add_argument("--baseline-python", type=Path, default=None,
                    help="the interpreter of the baseline server (default: this one), e.g. another venv's")
    ap.add_argument("--label", default="")
    ap.add_argument("--out", type=Path, default=None, help="append the result as one JSON line to this file")
    args = ap.parse_args()

    import httpx

    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk") is not None)
    if use_wrk and shutil.which("wrk") is None:
        print("wrk is not on PATH", file=sys.stderr)
        return 1

    def measure(pid: int, base: str, path: str, headers: dict | None, warm: bool = False) -> dict:
        cpu = cpu_seconds(pid)
        if use_wrk:
            r = wrk(base, path, 1 if warm else args.duration, args.clients, headers, args.wrk_threads)
        else:
            r = asyncio.run(hammer(base, path, 40 if warm else args.requests,
                                   min(args.clients, 20) if warm else args.clients, headers))
        # The server's own CPU per request: what a shared machine's load disturbs least.
        after = cpu_seconds(pid)
        r["cpu_ms"] = (after - cpu) * 1000 / r["requests"] if cpu is not None and after is not None else float("nan")
        return r

    records = clones(args.n)
    ids = ids_of(records)
    trial = ids[2]
    with tempfile.TemporaryDirectory(prefix="tw-pages-", ignore_cleanup_errors=True) as tmp, \
            StandIn(records, data_timestamp="2026-11-24T09:00:05") as api:
        workdir = Path(tmp)
        database = args.database or f"sqlite:///{workdir / 'trialwatch.db'}"
        env = Env(workdir, api, ids, database, args.src)
        # Two polls, the measured trial changing status in between: its page and feed show a change.
        for status in (None, "SUSPENDED"):
            if status:
                api.put(change_status(records[2], status, updated="2026-11-25"))
            done = env.run("poll", "--no-send", *(["--force"] if status else []))
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return 1
        servers: dict[str, tuple[subprocess.Popen, str]] = {}
        try:
            baseline = args.baseline_src or args.baseline_python
            variants = {"": (args.src, None)} | ({"before:": (args.baseline_src, args.baseline_python)}
                                                 if baseline else {})
            for prefix, (src, python) in variants.items():
                venv = Env(workdir, api, ids, database, src)  # the same config file, another package
                port = free_port()
                cmd = venv.cmd("serve", "--port", str(port))
                if python is not None:
                    cmd[0] = str(python)
                proc = subprocess.Popen(cmd, env=venv.env, cwd=venv.cwd,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                servers[prefix] = (proc, f"http://127.0.0.1:{port}")
            if not all(wait_healthy(base) for _, base in servers.values()):
                print("a server did not start", file=sys.stderr)
                return 1
            targets: dict[str, tuple[int, str, str, dict | None]] = {}
            for prefix, (proc, base) in servers.items():
                etag = httpx.get(f"{base}/trials/{trial}").headers.get("etag")
                if prefix == "":
                    has_etag = bool(etag)
                targets.update({
                    f"{prefix}floor": (proc.pid, base, "/static/style.css", None),
                    f"{prefix}index": (proc.pid, base, "/", None),
                    f"{prefix}trial": (proc.pid, base, f"/trials/{trial}", None),
                    f"{prefix}feed": (proc.pid, base, f"/trials/{trial}/feed.atom", None),
                    f"{prefix}304": (proc.pid, base, f"/trials/{trial}", {"if-none-match": etag} if etag else None),
                })
            for target in targets.values():  # warm-up, not measured
                measure(*target, warm=True)
            runs: dict[str, list[dict]] = {k: [] for k in targets}
            for _ in range(args.rounds):
                for name, target in targets.items():
                    runs[name].append(measure(*target))
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(timeout=30)

    def med(name: str, key: str, digits: int = 1) -> float:
        return round(statistics.median(r[key] for r in runs[name]), digits)

    rows = {}
    for name in targets:
        floor = med(name[:name.find(":") + 1] + "floor", "req_per_s")  # its own server's floor
        codes: dict[str, int] = {}
        for r in runs[name]:
            for c, k in r["codes"].items():
                codes[str(c)] = codes.get(str(c), 0) + k
        rows[name] = {"req_per_s": med(name, "req_per_s"), "p50_ms": med(name, "p50_ms"),
                      "p99_ms": med(name, "p99_ms"), "floor_over_this": round(floor / med(name, "req_per_s"), 2),
                      "cpu_ms_per_req": med(name, "cpu_ms", 3),
                      "bytes": runs[name][-1]["bytes"], "codes": codes}
    client = f"wrk -t{min(args.wrk_threads, args.clients)} -c{args.clients} -d{args.duration}s" if use_wrk \
        else f"httpx x{args.clients}, {args.requests} requests"
    result = {"label": args.label, "n": args.n, "clients": args.clients, "client": client,
              "requests": None if use_wrk else args.requests, "duration_s": args.duration if use_wrk else None,
              "rounds": args.rounds, "database": "sqlite" if args.database is None else args.database.split(":")[0],
              "etag": has_etag, "rows": rows}
    print(f"load generator: {client}; {args.rounds} rounds, medians; database {result['database']}")
    print(f"{'target':13} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'floor/x':>8} {'cpu ms':>7} {'bytes':>8}  codes")
    for name, r in rows.items():
        print(f"{name:13} {r['req_per_s']:8.1f} {r['p50_ms']:8.1f} {r['p99_ms']:8.1f} {r['floor_over_this']:8.2f} "
              f"{r['cpu_ms_per_req']:7.3f} {r['bytes']:8d}  {r['codes']}")
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
