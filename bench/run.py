"""trialwatch benchmark: one poll against a local stand-in of ClinicalTrials.gov API v2.

Compares a steady-state ``trialwatch poll`` with a naive per-trial fetcher and with urlwatch,
all watching the same N trials (real records cloned by tests/corpus.py) of which C changed
since the last poll, and measures trialwatch's peak RSS over 10,000 watched trials.

    .venv/bin/python bench/run.py                 # the default run (N=2000 C=20, yardstick, 10k RSS)
    .venv/bin/python bench/run.py --quick         # smoke run, small sizes
    .venv/bin/python bench/run.py --n 5000 --c 50 --skip-urlwatch

Every measured command runs as a subprocess; its wall time is measured here, its peak RSS and
CPU come from the kernel's rusage of that one process, read by GNU time (see run_measured). Requests and bytes come from the stand-in's own log.
Only 127.0.0.1 is contacted (plus PyPI once, to install urlwatch into bench/.venv-urlwatch).
Results: bench/results/latest.json and bench/results/latest.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
HERE = BENCH
VENV_PY = ROOT / ".venv" / "bin" / "python"
TRIALWATCH = ROOT / ".venv" / "bin" / "trialwatch"
URLWATCH_VENV = BENCH / ".venv-urlwatch"
URLWATCH = URLWATCH_VENV / "bin" / "urlwatch"
RESULTS = BENCH / "results"

# Re-run under the project's venv (the stand-in and corpus import the test helpers).
if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve() and VENV_PY.exists() \
        and not os.environ.get("TRIALWATCH_BENCH_REEXEC"):
    os.environ["TRIALWATCH_BENCH_REEXEC"] = "1"
    os.execv(str(VENV_PY), [str(VENV_PY), __file__, *sys.argv[1:]])

sys.path.insert(0, str(ROOT / "tests"))
from corpus import base_records, change_status, clones, set_updated, synthetic_id  # noqa: E402
from standin import StandIn  # noqa: E402

DAY1 = "2026-11-24T09:00:05"   # dataTimestamp of the baseline poll
DAY2 = "2026-11-25T09:00:05"   # the registry refreshed: C records changed
# Statuses of the daemon-style rounds after the first: none is a base record's own status, so the
# per-trial watchers still see C changed trials against their DAY1 baseline; each differs from the
# round before (round 0 sets ENROLLING_BY_INVITATION); both recruit, so no round adds the searches
# for alternatives a trial that stops recruiting gets (bench_startup.py's closing scenario).
EXTRA_STATUSES = ("ENROLLING_BY_INVITATION", "NOT_YET_RECRUITING")
DAEMON_ROUNDS = 5
OLD_UPDATE = "2026-01-15"      # lastUpdatePostDate of every clone (tests/corpus.py default)
NEW_UPDATE = "2026-11-25"      # lastUpdatePostDate of a changed record
RSS_GOAL_MB = 200
YARDSTICK = 20.0               # trialwatch must be >= 20x faster than urlwatch (N=1000, C=20)


# -- the corpus ---------------------------------------------------------------------------------

class Corpus:
    """N clones of real records, made one at a time (10,000 deep copies at once would cost
    the driver ~2 GB). ``record(i)`` equals ``tests/corpus.clones(n)[i]``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.bases = base_records()
        self.ids = [synthetic_id(i) for i in range(n)]
        probe = min(n, 2 * len(self.bases))
        assert [self.record(i) for i in range(probe)] == clones(probe, self.bases), \
            "bench corpus drifted from tests/corpus.py clones()"

    def record(self, i: int) -> dict:
        r = copy.deepcopy(self.bases[i % len(self.bases)])
        ident = r["protocolSection"]["identificationModule"]
        ident["nctId"] = synthetic_id(i)
        ident.pop("nctIdAliases", None)
        r["protocolSection"]["statusModule"].setdefault("expandedAccessInfo", {}).pop("nctId", None)
        return set_updated(r, OLD_UPDATE)

    def changed_indices(self, c: int) -> list[int]:
        """C trials spread evenly over the list (so over the filter.ids batches)."""
        step = self.n / c if c else 1
        return sorted({int(k * step) for k in range(c)})


def put_lean(api: StandIn, record: dict) -> None:
    """StandIn.put, then drop the parsed record the stand-in keeps beside the encoded body: it
    serves bodies only (no ``fields=`` projection is asked for here), and 10,000 parsed records
    would cost the driver process ~1.5 GB for nothing."""
    api.put(record)
    entry = api._entries[record["protocolSection"]["identificationModule"]["nctId"]]
    entry.record = None


LATENCY_S = 0.0  # --latency-ms: added to every stand-in response (the loopback has none)


def make_standin(corpus: Corpus) -> StandIn:
    api = StandIn(data_timestamp=DAY1)
    for i in range(corpus.n):
        put_lean(api, corpus.record(i))
    if LATENCY_S > 0:
        respond = api._respond

        def slow(path: str, query: dict[str, str]):  # runs in the handler's own thread
            time.sleep(LATENCY_S)
            return respond(path, query)

        api._respond = slow
    return api.start()


def refresh_registry(api: StandIn, corpus: Corpus, c: int) -> list[str]:
    """The registry's daily refresh: C records change status and move their
    lastUpdatePostDate to the new day; /version's dataTimestamp moves."""
    changed = []
    for i in corpus.changed_indices(c):
        r = corpus.record(i)
        old = r["protocolSection"]["statusModule"]["overallStatus"]
        # Statuses that recruit: a trial that stops recruiting also gets its alternatives
        # searched (2-3 requests), always, which is not the v2 poll this measures.
        new = "ENROLLING_BY_INVITATION" if old != "ENROLLING_BY_INVITATION" else "RECRUITING"
        put_lean(api, change_status(r, new, updated=NEW_UPDATE))
        changed.append(corpus.ids[i])
    api.set_data_timestamp(DAY2)
    return changed


# -- measuring one subprocess ------------------------------------------------------------------

def child_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIALWATCH_")}
    env.update({"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
                "HOME": str(tmp), "XDG_CONFIG_HOME": str(tmp / "xdg-config"),
                "XDG_CACHE_HOME": str(tmp / "xdg-cache"), "PYTHONDONTWRITEBYTECODE": "1"})
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(k, None)
    return env


# Peak RSS must come from a process forked by a *small* parent. Linux carries the RSS high-water
# mark across fork+exec (the child starts from a copy of its parent's memory map, and exec keeps
# that map's high-water mark in ru_maxrss), so a child spawned straight from this driver — which
# holds up to 10,000 records for the stand-in — would report the driver's size, not its own.
# GNU time (a few MB) forks the measured command itself; without it, a minimal Python launcher
# does the same (floor ~10 MB, far below anything measured here).
GNU_TIME = "/usr/bin/time"
LAUNCHER = (
    "import os, sys\n"
    "pid = os.fork()\n"
    "if pid == 0:\n"
    "    os.execv(sys.argv[2], sys.argv[2:])\n"
    "_, st, ru = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(f'{ru.ru_maxrss} {ru.ru_utime} {ru.ru_stime}\\n')\n"
    "sys.exit(os.waitstatus_to_exitcode(st) & 255)\n"
)


def rss_method() -> str:
    return "GNU time (%M)" if os.access(GNU_TIME, os.X_OK) else "fork+wait4 launcher"


def run_measured(cmd: list[str], *, env: dict[str, str], cwd: Path) -> dict:
    """Run ``cmd``; wall seconds from spawn to exit, peak RSS and CPU from the kernel's rusage
    of that one process, read by a small parent (see above)."""
    out_path, err_path, ru_path = cwd / ".stdout", cwd / ".stderr", cwd / ".rusage"
    ru_path.unlink(missing_ok=True)
    exe = shutil.which(cmd[0]) or cmd[0]
    if os.access(GNU_TIME, os.X_OK):
        wrapped = [GNU_TIME, "-f", "%M %U %S", "-o", str(ru_path), exe, *cmd[1:]]
    else:
        wrapped = [sys.executable, "-c", LAUNCHER, str(ru_path), exe, *cmd[1:]]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        rc = subprocess.run(wrapped, stdout=out, stderr=err, env=env, cwd=cwd).returncode
        wall = time.perf_counter() - t0
    # GNU time prefixes a line when the command died of a signal; the figures are the last line.
    kib, user, sys_s = ru_path.read_text().strip().splitlines()[-1].split()
    return {"cmd": cmd, "rc": rc, "wall_s": wall, "max_rss_mb": int(kib) / 1024,
            "user_s": float(user), "sys_s": float(sys_s),
            "stdout": out_path.read_text(errors="replace"), "stderr": err_path.read_text(errors="replace")}


def observe(api: StandIn, m: dict) -> dict:
    """The stand-in's view of the run that just ended (its log was reset before it)."""
    paths = [p for _, p, _ in api.requests]
    m["requests"] = len(paths)
    m["bytes_sent"] = api.bytes_sent
    m["paths"] = paths
    return m


def fail(what: str, m: dict) -> None:
    raise SystemExit(f"{what} failed (exit {m['rc']}):\n--- stdout\n{m['stdout'][-3000:]}\n"
                     f"--- stderr\n{m['stderr'][-3000:]}")


# -- trialwatch -----------------------------------------------------------------------------------

class Trialwatch:
    def __init__(self, api: StandIn, corpus: Corpus, tmp: Path, *, subscriber: bool,
                 alternatives: bool = False) -> None:
        self.api, self.corpus, self.dir = api, corpus, tmp / "trialwatch"
        self.dir.mkdir(parents=True)
        self.env = child_env(self.dir)
        ids = ", ".join(corpus.ids)
        cfg = (f"database: sqlite:///{self.dir / 'trialwatch.db'}\n"
               f"ctgov:\n  base_url: {api.base_url}\n"
               # The throttle (50/min) exists for the real API; against the stand-in it would
               # only measure the sleep, so it is set out of the way.
               f"  requests_per_minute: 100000\n  max_retries: 1\n  timeout_s: 60\n"
               f"email:\n  transport: file\n  outbox_dir: {self.dir / 'outbox'}\n"
               f"trials: [{ids}]\n"
               # The v2 poll alone: version lists (the registry's history) are measured by
               # bench/bench_history.py, the searches for recruiting alternatives of trials that
               # stopped recruiting (2-3 a trial) by bench/bench_startup.py's closing scenario;
               # here they would add up to per_poll requests a poll each.
               f"history:\n  per_poll: 0\n")
        if not alternatives:  # True: the shipped setting (bench_startup.py's closing scenario)
            cfg += "alternatives:\n  per_poll: 0\n"
        if subscriber:
            # One physician following every watched trial: changes get outbox rows, as in use.
            cfg += (f"subscribers:\n  - email: bench@example.org\n    min_severity: minor\n"
                    f"    trials: [{ids}]\n")
        self.config = self.dir / "config.yaml"
        self.config.write_text(cfg)

    def poll(self, label: str) -> dict:
        self.api.reset_requests()
        m = run_measured([str(TRIALWATCH), "--config", str(self.config), "poll", "--json", "--no-send"],
                         env=self.env, cwd=self.dir)
        if m["rc"] != 0:
            fail(f"trialwatch poll ({label})", m)
        observe(self.api, m)
        m["report"] = json.loads(m["stdout"].strip().splitlines()[-1])
        return m


class DaemonPoll:
    """The same poll inside an already-running process, as `trialwatch run` makes it
    (bench/bench_daemon_poll.py); its own database, baselined before the registry refresh."""

    def __init__(self, api: StandIn, tw: "Trialwatch", tmp: Path) -> None:
        self.api = api
        self.dir = tmp / "daemon"
        self.dir.mkdir(parents=True)
        cfg = tw.config.read_text().replace(str(tw.dir / "trialwatch.db"), str(self.dir / "trialwatch.db"))
        self.config = self.dir / "config.yaml"
        self.config.write_text(cfg)
        self.proc = subprocess.Popen(
            [str(TRIALWATCH.parent / "python"), str(HERE / "bench_daemon_poll.py"), str(self.config)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=child_env(self.dir), cwd=self.dir)
        line = self.proc.stdout.readline()
        if not line.startswith('{"ready"'):
            raise SystemExit(f"daemon-style poll did not start: {line}{self.proc.stderr.read()[-3000:]}")

    def poll(self, *, last: bool = True) -> dict:
        self.api.reset_requests()
        self.proc.stdin.write("go\n" if not last else "last\n")
        self.proc.stdin.flush()
        res = json.loads(self.proc.stdout.readline())
        if last:
            self.proc.wait(timeout=60)
        return observe(self.api, {"wall_s": res["seconds"], "report": res["report"]})

    def rounds(self, corpus: "Corpus", c: int, k: int) -> dict:
        """k daily refreshes, each with C changed records, each polled: the median is reported,
        since one poll of ~0.15 s is at the mercy of whatever else the machine does."""
        runs = [self.poll(last=k == 1)]
        for r in range(1, k):
            day = f"2026-11-{25 + r:02d}"
            for i in corpus.changed_indices(c):
                put_lean(self.api, change_status(corpus.record(i), EXTRA_STATUSES[r % len(EXTRA_STATUSES)],
                                                 updated=day))
            self.api.set_data_timestamp(f"{day}T09:00:05")
            runs.append(self.poll(last=r == k - 1))
        walls = sorted(m["wall_s"] for m in runs)
        med = runs[[m["wall_s"] for m in runs].index(walls[len(walls) // 2])]
        return {**med, "walls": [m["wall_s"] for m in runs]}


# -- naive ----------------------------------------------------------------------------------------

class Naive:
    def __init__(self, api: StandIn, corpus: Corpus, tmp: Path) -> None:
        self.api, self.dir = api, tmp / "naive"
        self.dir.mkdir(parents=True)
        self.env = child_env(self.dir)
        (self.dir / "ids.txt").write_text("\n".join(corpus.ids) + "\n")

    def run(self, label: str) -> dict:
        self.api.reset_requests()
        m = run_measured([str(VENV_PY), str(BENCH / "bench_naive.py"), "--base-url", self.api.base_url,
                          "--ids", str(self.dir / "ids.txt"), "--state", str(self.dir / "state")],
                         env=self.env, cwd=self.dir)
        if m["rc"] != 0:
            fail(f"naive watcher ({label})", m)
        observe(self.api, m)
        m["report"] = json.loads(m["stdout"].strip().splitlines()[-1])
        return m


# -- urlwatch -------------------------------------------------------------------------------------

def ensure_urlwatch() -> tuple[str | None, str]:
    """(version, note). Installs urlwatch from PyPI into bench/.venv-urlwatch when missing."""
    if not URLWATCH.exists():
        try:
            if not (URLWATCH_VENV / "bin" / "python").exists():
                subprocess.run([sys.executable if shutil.which("python3") is None else "python3",
                                "-m", "venv", str(URLWATCH_VENV)], check=True, capture_output=True)
            subprocess.run([str(URLWATCH_VENV / "bin" / "pip"), "install", "-q", "urlwatch"],
                           check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as e:
            detail = getattr(e, "stderr", b"") or b""
            return None, (f"urlwatch could not be installed into {URLWATCH_VENV}: {e} "
                          f"{detail.decode(errors='replace')[-500:]}").strip()
    try:
        out = subprocess.run([str(URLWATCH), "--version"], capture_output=True, text=True, timeout=60)
        return out.stdout.strip() or out.stderr.strip(), ""
    except (subprocess.SubprocessError, OSError) as e:
        return None, f"urlwatch is installed but does not run: {e}"


class Urlwatch:
    def __init__(self, api: StandIn, corpus: Corpus, tmp: Path) -> None:
        self.api, self.corpus, self.dir = api, corpus, tmp / "urlwatch"
        self.dir.mkdir(parents=True)
        self.env = child_env(self.dir)
        self.urls = self.dir / "urls.yaml"
        self.urls.write_text("".join(f"---\nname: {i}\nurl: {api.base_url}/studies/{i}\n" for i in corpus.ids))
        # Its own defaults, except: no colour, one line per changed job (the stdout reporter
        # stays on so the changes can be counted), nothing printed for new/unchanged jobs.
        self.config = self.dir / "urlwatch.yaml"
        self.config.write_text(
            "display:\n  new: false\n  unchanged: false\n  error: true\n  empty-diff: false\n"
            "report:\n  text:\n    minimal: true\n    details: false\n    footer: false\n"
            "  stdout:\n    enabled: true\n    color: false\n")
        self.cache = self.dir / "cache.db"
        self.hooks = self.dir / "hooks.py"

    def run(self, label: str) -> dict:
        self.api.reset_requests()
        m = run_measured([str(URLWATCH), "--urls", str(self.urls), "--config", str(self.config),
                          "--hooks", str(self.hooks), "--cache", str(self.cache)],
                         env=self.env, cwd=self.dir)
        if m["rc"] != 0:
            fail(f"urlwatch ({label})", m)
        observe(self.api, m)
        lines = m["stdout"].splitlines()
        m["report"] = {"changed": sum(1 for x in lines if x.lstrip().startswith("CHANGED")),
                       "errors": sum(1 for x in lines if x.lstrip().startswith("ERROR"))}
        fetched = {p.rsplit("/", 1)[-1] for p in m["paths"] if "/studies/" in p}
        m["report"]["distinct_urls_fetched"] = len(fetched)
        m["report"]["fetched_every_url"] = fetched == set(self.corpus.ids)
        return m


# -- scenarios ------------------------------------------------------------------------------------

def slim(m: dict) -> dict:
    return {k: v for k, v in m.items() if k not in ("stdout", "stderr", "paths", "cmd")}


def check(cond: bool, what: str, problems: list[str]) -> bool:
    if not cond:
        problems.append(what)
        print(f"  CHECK FAILED: {what}", flush=True)
    return cond


def compare(n: int, c: int, *, naive: bool, urlwatch: bool, subscriber: bool, problems: list[str]) -> dict:
    """Baseline everything at DAY1, refresh the registry with C changed, measure each tool."""
    print(f"\n== N={n} C={c}: building the stand-in", flush=True)
    corpus = Corpus(n)
    api = make_standin(corpus)
    out: dict = {"n": n, "c": c}
    with tempfile.TemporaryDirectory(prefix=f"twbench-{n}-") as t:
        tmp = Path(t)
        tw = Trialwatch(api, corpus, tmp, subscriber=subscriber)
        nv = Naive(api, corpus, tmp) if naive else None
        uw = Urlwatch(api, corpus, tmp) if urlwatch else None
        try:
            print("  baseline runs (not measured)", flush=True)
            first = tw.poll("baseline")
            check(first["report"]["complete"] and first["report"]["trials_checked"] == n,
                  f"N={n}: trialwatch baseline poll checked {first['report']['trials_checked']} of {n}", problems)
            if nv:
                nv.run("baseline")
            if uw:
                b = uw.run("baseline")
                check(b["report"]["fetched_every_url"], f"N={n}: urlwatch baseline did not fetch every URL", problems)
            dp = DaemonPoll(api, tw, tmp)
            changed = refresh_registry(api, corpus, c)
            print(f"  registry refreshed: {len(changed)} changed, dataTimestamp {DAY2}", flush=True)
            dm = dp.rounds(corpus, c, DAEMON_ROUNDS)
            check(dm["report"]["trials_changed"] == c and dm["requests"] == 1 + math.ceil(n / 100),
                  f"N={n}: daemon-style poll found {dm['report']['trials_changed']} changed in {dm['requests']} requests",
                  problems)
            out["daemon"] = {"wall_s": dm["wall_s"], "walls": dm["walls"], "requests": dm["requests"],
                             "bytes_sent": dm["bytes_sent"], "report": dm["report"]}
            print(f"  trialwatch daemon poll: median {dm['wall_s']:.3f} s of "
                  f"{', '.join(f'{w:.3f}' for w in dm['walls'])}, {dm['requests']} requests", flush=True)
            tm = tw.poll("steady")
            r = tm["report"]
            expected_requests = 1 + math.ceil(n / 100)
            check(r["trials_changed"] == c, f"N={n}: trialwatch trials_changed={r['trials_changed']}, expected {c}", problems)
            check(r["changes"] >= c, f"N={n}: trialwatch changes={r['changes']} < C={c}", problems)
            check(r["complete"] and not r["skipped"], f"N={n}: trialwatch steady poll not complete", problems)
            check(tm["requests"] == r["requests"] == expected_requests,
                  f"N={n}: trialwatch made {tm['requests']} requests (CLI says {r['requests']}), "
                  f"expected 1 + ceil(N/100) = {expected_requests}", problems)
            check(tm["bytes_sent"] == r["bytes_received"],
                  f"N={n}: stand-in sent {tm['bytes_sent']} bytes, trialwatch counted {r['bytes_received']}", problems)
            out["trialwatch"] = slim(tm)
            print(f"  trialwatch: {tm['wall_s']:.2f} s, {tm['requests']} requests, {tm['max_rss_mb']:.0f} MB", flush=True)
            if nv:
                m = nv.run("measured")
                check(m["requests"] == n and m["report"]["changed"] == c,
                      f"N={n}: naive made {m['requests']} requests, found {m['report']['changed']} changed", problems)
                out["naive"] = slim(m)
                print(f"  naive:      {m['wall_s']:.2f} s, {m['requests']} requests, {m['max_rss_mb']:.0f} MB", flush=True)
            if uw:
                m = uw.run("measured")
                check(m["report"]["fetched_every_url"] and m["requests"] == n,
                      f"N={n}: urlwatch made {m['requests']} requests for {n} URLs "
                      f"({m['report']['distinct_urls_fetched']} distinct)", problems)
                check(m["report"]["changed"] == c, f"N={n}: urlwatch reported {m['report']['changed']} changed, expected {c}", problems)
                out["urlwatch"] = slim(m)
                print(f"  urlwatch:   {m['wall_s']:.2f} s, {m['requests']} requests, {m['max_rss_mb']:.0f} MB", flush=True)
        finally:
            api.stop()
    for other in ("naive", "urlwatch"):
        if other in out:
            t, o = out["trialwatch"], out[other]
            out[f"vs_{other}"] = {"wall_ratio": o["wall_s"] / t["wall_s"],
                                  "request_ratio": o["requests"] / t["requests"],
                                  "bytes_ratio": o["bytes_sent"] / max(1, t["bytes_sent"]),
                                  "daemon_wall_ratio": o["wall_s"] / out["daemon"]["wall_s"]}
    return out


def rss_run(n: int, c: int, *, subscriber: bool, problems: list[str]) -> dict:
    """trialwatch alone over N trials: first full poll, a no-change poll, a steady-state poll."""
    print(f"\n== RSS N={n} C={c}: building the stand-in", flush=True)
    corpus = Corpus(n)
    api = make_standin(corpus)
    out: dict = {"n": n, "c": c}
    with tempfile.TemporaryDirectory(prefix=f"twbench-rss-{n}-") as t:
        tw = Trialwatch(api, corpus, Path(t), subscriber=subscriber)
        try:
            full = tw.poll("first full poll")
            r = full["report"]
            check(r["complete"] and r["trials_checked"] == n, f"RSS N={n}: first poll checked {r['trials_checked']}", problems)
            check(full["requests"] == 1 + math.ceil(n / 100),
                  f"RSS N={n}: first poll made {full['requests']} requests, expected {1 + math.ceil(n / 100)}", problems)
            out["first"] = slim(full)
            print(f"  first full poll: {full['wall_s']:.2f} s, {full['requests']} requests, "
                  f"{full['max_rss_mb']:.0f} MB", flush=True)
            same = tw.poll("unchanged")
            check(same["report"]["skipped"] and same["requests"] == 1 and same["paths"] == ["/api/v2/version"],
                  f"RSS N={n}: no-change poll made {same['requests']} requests ({same['paths'][:3]}...), expected 1 (/version)",
                  problems)
            out["unchanged"] = slim(same)
            print(f"  no-change poll:  {same['wall_s']:.2f} s, {same['requests']} requests, "
                  f"{same['max_rss_mb']:.0f} MB", flush=True)
            refresh_registry(api, corpus, c)
            steady = tw.poll("steady")
            r = steady["report"]
            check(r["trials_changed"] == c and r["changes"] >= c and r["complete"],
                  f"RSS N={n}: steady poll trials_changed={r['trials_changed']} changes={r['changes']}", problems)
            check(steady["requests"] == 1 + math.ceil(n / 100),
                  f"RSS N={n}: steady poll made {steady['requests']} requests", problems)
            out["steady"] = slim(steady)
            print(f"  steady poll:     {steady['wall_s']:.2f} s, {steady['requests']} requests, "
                  f"{steady['max_rss_mb']:.0f} MB", flush=True)
        finally:
            api.stop()
    for k in ("first", "unchanged", "steady"):
        check(out[k]["max_rss_mb"] <= RSS_GOAL_MB,
              f"RSS N={n}: {k} poll peaked at {out[k]['max_rss_mb']:.0f} MB > {RSS_GOAL_MB} MB", problems)
    return out


# -- report ---------------------------------------------------------------------------------------

def fmt_bytes(b: int) -> str:
    return f"{b / 1e6:.2f} MB" if b >= 1e5 else f"{b / 1e3:.1f} kB"


def row(label: str, m: dict, found: str) -> str:
    return (f"| {label} | {m['requests']} | {fmt_bytes(m['bytes_sent'])} | {m['wall_s']:.2f} | "
            f"{m['user_s'] + m['sys_s']:.2f} | {m['max_rss_mb']:.0f} | {found} |")


def markdown(res: dict) -> str:
    L = [f"# trialwatch benchmark — {res['when']}", "",
         f"trialwatch at {res['trialwatch_commit']}. Host: {res['host']}. Command: `{res['command']}` ({res['elapsed_s']:.0f} s in all).", "",
         "Every figure is one subprocess run against the local stand-in (127.0.0.1). Requests and "
         "bytes are the stand-in's own log; wall time is spawn to exit; CPU is user+sys; peak RSS is "
         f"the child's own `ru_maxrss`, read by {res['rss_method']} (a process spawned straight from "
         "the driver would report the driver's size: Linux keeps the RSS high-water mark across "
         "fork+exec). trialwatch runs with `requests_per_minute: 100000`: its throttle (50/min by "
         "default) is for the real API, and against it a 1,000-trial steady poll would wait ≥ 12 s "
         "(11 requests, 1.2 s apart) by design; "
         "urlwatch and the naive watcher have no throttle at all.", ""]
    if res.get("latency_ms"):
        L += [f"**Every stand-in response was delayed by {res['latency_ms']:g} ms** (`--latency-ms`), "
              "to stand for a real network; the default run has none.", ""]
    if res.get("subscriber"):
        L += ["Config: every trial under `trials:` and one subscriber following all of them "
              "(`--no-send`: changes get outbox rows, no mail is composed).", ""]
    hdr = ["| run | requests | bytes received | wall s | CPU s | peak RSS MB | changes found |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for key, title in (("main", "Steady-state poll"), ("yardstick", "Yardstick")):
        s = res.get(key)
        if not s or (key == "yardstick" and s is res.get("main")):
            continue
        is_yardstick = key == "yardstick" or s is res.get("yardstick")
        L += [f"## {title}: N={s['n']} watched trials, C={s['c']} changed", ""] + hdr
        t = s["trialwatch"]
        L.append(row("trialwatch poll", t, f"{t['report']['trials_changed']} trials, {t['report']['changes']} changes "
                                           f"(CLI: {t['report']['requests']} req, {fmt_bytes(t['report']['bytes_received'])})"))
        if "daemon" in s:
            d = s["daemon"]
            L.append(f"| trialwatch poll inside `trialwatch run` (process already up; median of "
                     f"{len(d.get('walls', [1]))} daily rounds) | {d['requests']} | "
                     f"{fmt_bytes(d['bytes_sent'])} | {d['wall_s']:.3f} | — | — | "
                     f"{d['report']['trials_changed']} trials, {d['report']['changes']} changes |")
        if "naive" in s:
            L.append(row("naive GET per trial", s["naive"], f"{s['naive']['report']['changed']} trials"))
        if "urlwatch" in s:
            u = s["urlwatch"]
            L.append(row(res.get("urlwatch_version") or "urlwatch", u,
                         f"{u['report']['changed']} trials; fetched every URL: {u['report']['fetched_every_url']}"))
        L.append("")
        for other in ("naive", "urlwatch"):
            v = s.get(f"vs_{other}")
            if v:
                L.append(f"- trialwatch vs {other}: **{v['wall_ratio']:.1f}× faster** (wall, one-shot "
                         f"`trialwatch poll` including interpreter start-up), **{v['daemon_wall_ratio']:.1f}× "
                         f"faster** (the daemon's poll), {v['request_ratio']:.0f}× fewer requests, "
                         f"{v['bytes_ratio']:.0f}× fewer bytes.")
        if is_yardstick and "vs_urlwatch" in s:
            v = s["vs_urlwatch"]
            L.append(f"- Yardstick (≥ {YARDSTICK:.0f}× faster than urlwatch at N=1000, C=20): one-shot "
                     f"`trialwatch poll` **{'MET' if v['wall_ratio'] >= YARDSTICK else 'NOT MET'}** "
                     f"({v['wall_ratio']:.1f}×); the daemon's poll **"
                     f"{'MET' if v['daemon_wall_ratio'] >= YARDSTICK else 'NOT MET'}** ({v['daemon_wall_ratio']:.1f}×). "
                     "urlwatch has no daemon: cron starts it for every run.")
        L.append("")
    if res.get("urlwatch_note"):
        L += [f"urlwatch: {res['urlwatch_note']}", ""]
    s = res.get("rss")
    if s:
        L += [f"## Peak RSS: trialwatch over N={s['n']} watched trials (goal ≤ {RSS_GOAL_MB} MB)", ""] + hdr
        L.append(row("first full poll (all new)", s["first"], f"{s['first']['report']['trials_checked']} checked"))
        L.append(row("no-change poll (same dataTimestamp)", s["unchanged"],
                     f"skipped: {s['unchanged']['report']['skipped']}"))
        L.append(row(f"steady poll, C={s['c']} changed", s["steady"],
                     f"{s['steady']['report']['trials_changed']} trials, {s['steady']['report']['changes']} changes"))
        worst = max(s[k]["max_rss_mb"] for k in ("first", "unchanged", "steady"))
        L += ["", f"- Worst peak RSS {worst:.0f} MB: **{'within' if worst <= RSS_GOAL_MB else 'OVER'}** the "
                  f"{RSS_GOAL_MB} MB goal.", ""]
    L += ["## Checks", ""]
    L += [f"- FAILED: {p}" for p in res["problems"]] or ["- all passed (request counts, changes found, "
                                                        "urlwatch fetched every URL, RSS goal)."]
    return "\n".join(L) + "\n"


def git_describe() -> str:
    """The commit measured, with '+dirty' when trialwatch/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "trialwatch", "migrations"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="watched trials of the main comparison (2000)")
    ap.add_argument("--c", type=int, default=20, help="changed trials (20)")
    ap.add_argument("--rss-n", type=int, default=10000, help="watched trials of the RSS runs (10000)")
    ap.add_argument("--skip-urlwatch", action="store_true")
    ap.add_argument("--skip-naive", action="store_true", help="no naive per-trial watcher row")
    ap.add_argument("--skip-yardstick", action="store_true", help="no N=1000 C=20 comparison")
    ap.add_argument("--skip-rss", action="store_true", help="no 10,000-trial RSS runs")
    ap.add_argument("--no-subscriber", action="store_true",
                    help="config without the subscriber who follows every trial")
    ap.add_argument("--latency-ms", type=float, default=0,
                    help="delay every stand-in response by this much, like a real network (default 0)")
    ap.add_argument("--quick", action="store_true", help="smoke run: N=200 C=5, yardstick N=100 C=5, RSS N=500")
    ap.add_argument("--out", default=str(RESULTS), help="folder for latest.json / latest.md (quick.* with --quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.c, args.rss_n = min(args.n, 200), min(args.c, 5), min(args.rss_n, 500)
    yard_n, yard_c = (100, 5) if args.quick else (1000, 20)
    if not 0 < args.c <= args.n:
        ap.error("need 0 < C <= N")
    if not TRIALWATCH.exists():
        ap.error(f"{TRIALWATCH} is missing; install the project into .venv first")
    global LATENCY_S
    LATENCY_S = args.latency_ms / 1000
    started = time.perf_counter()
    problems: list[str] = []
    res: dict = {"when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "host": f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()}",
                 "command": "bench/run.py " + " ".join(sys.argv[1:]) if sys.argv[1:] else "bench/run.py",
                 "trialwatch_commit": git_describe(),
                 "subscriber": not args.no_subscriber, "latency_ms": args.latency_ms, "rss_method": rss_method(), "problems": problems}
    use_urlwatch = not args.skip_urlwatch
    if use_urlwatch:
        version, note = ensure_urlwatch()
        res["urlwatch_version"] = version
        if version is None:
            use_urlwatch = False
            res["urlwatch_note"] = "skipped — " + note
            print(res["urlwatch_note"], flush=True)
        else:
            res["urlwatch_note"] = (f"{version} from PyPI in bench/.venv-urlwatch; one `url` job per trial, "
                                    "its default 10 worker threads, its own minidb cache.")
    else:
        res["urlwatch_note"] = "skipped (--skip-urlwatch)."
    sub = not args.no_subscriber
    res["main"] = compare(args.n, args.c, naive=not args.skip_naive, urlwatch=use_urlwatch, subscriber=sub, problems=problems)
    if not args.skip_yardstick and (yard_n, yard_c) != (args.n, args.c):
        res["yardstick"] = compare(yard_n, yard_c, naive=False, urlwatch=use_urlwatch, subscriber=sub,
                                   problems=problems)
    elif not args.skip_yardstick:
        res["yardstick"] = res["main"]
    if res.get("yardstick") and "vs_urlwatch" in res["yardstick"]:
        v = res["yardstick"]["vs_urlwatch"]
        res["yardstick_met"] = {"one_shot": v["wall_ratio"] >= YARDSTICK, "daemon": v["daemon_wall_ratio"] >= YARDSTICK}
        for what, ratio in (("one-shot trialwatch poll", v["wall_ratio"]), ("daemon poll", v["daemon_wall_ratio"])):
            check(ratio >= YARDSTICK or args.quick,
                  f"yardstick: {what} only {ratio:.1f}x faster than urlwatch (goal >= {YARDSTICK:.0f}x)", problems)
    if not args.skip_rss:
        res["rss"] = rss_run(args.rss_n, args.c, subscriber=sub, problems=problems)
    res["elapsed_s"] = time.perf_counter() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # A smoke run or a latency run does not overwrite the default run's figures.
    name = "quick" if args.quick else f"latency-{args.latency_ms:g}ms" if args.latency_ms else "latest"
    md = markdown(res)
    for ext, text in (("json", json.dumps(res, indent=2, default=str) + "\n"), ("md", md)):
        tmp = out / f"{name}.{ext}.tmp"
        tmp.write_text(text)
        tmp.replace(out / f"{name}.{ext}")
    print("\n" + md)
    print(f"wrote {out / (name + '.md')} and {out / (name + '.json')} ({res['elapsed_s']:.0f} s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
