"""Start-up cost of one-shot commands, each beside its floor measured in the same run, and the
poll beside urlwatch 2.29 on the same records, one-shot and inside the daemon.

    .venv/bin/python bench/bench_startup.py                # 7 rounds, N=1000 C=20, both scenarios
    .venv/bin/python bench/bench_startup.py --rounds 9 --skip-urlwatch --scenario steady

Each command is spawned as cron would (interpreter start, imports, exit):

- ``trialwatch --help`` beside ``python -c "print(...)"`` (the interpreter alone);
- a quiet ``trialwatch check NCT03268603`` (record already stored, nothing changed; the config
  has a subscriber, with and without a city ``location``, as a hospital's would) beside a stdlib
  script doing the same fetch + print (urllib GET of the record, json.loads, print its title);
- a one-shot ``trialwatch poll --json --no-send`` (N watched trials, C changed since the last
  poll) beside a stdlib script making the same requests (replayed from the stand-in's log of the
  poll) and parsing them; after each round, the same poll inside an already running process
  (bench/bench_daemon_poll.py, as ``trialwatch run`` makes it) and urlwatch 2.29 on the same
  records (installed into bench/.venv-urlwatch on the first run, as bench/run.py does). Two
  scenarios (SCENARIOS below): ``steady``, the v2 poll alone (1 + N/100 requests), and
  ``closing``, the shipped config on a day when the C trials stop recruiting, so the poll also
  searches recruiting alternatives for each;
- the one-shot poll's phases (interpreter, imports, config, store, sync, poll), timed in a child.

Floor and subject run interleaved (their order alternating), ``--rounds`` times; medians are
reported with their ratio. Results: bench/results/startup.{md,json}.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (re-executes under .venv when needed)
from run import (  # noqa: E402
    BENCH, RESULTS, ROOT, TRIALWATCH, VENV_PY, Corpus, DaemonPoll, StandIn, Trialwatch, Urlwatch,
    change_status, child_env, ensure_urlwatch, make_standin, put_lean, run_measured,
)

NCT = "NCT03268603"
FIXTURE = ROOT / "tests" / "fixtures" / f"{NCT}.json"

FLOOR_CHECK = r'''
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1]) as r:
    rec = json.loads(r.read())
print(rec["protocolSection"]["identificationModule"]["briefTitle"])
print(rec["protocolSection"]["statusModule"]["overallStatus"])
'''

FLOOR_POLL = r'''
import http.client, json, sys, urllib.parse
host, port = sys.argv[1].split(":")
conn = http.client.HTTPConnection(host, int(port))
n = 0
for line in open(sys.argv[2]):
    path, query = json.loads(line)
    conn.request("GET", path + ("?" + urllib.parse.urlencode(query) if query else ""))
    body = json.loads(conn.getresponse().read())
    n += len(body.get("studies", ())) if isinstance(body, dict) else 0
print(json.dumps({"studies": n}))
'''


BASELINE_SRC: Path | None = None  # --baseline-src: an older package folder measured beside this one


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def measure(cmd: list[str], env: dict, cwd: Path) -> dict:
    m = run_measured(cmd, env=env, cwd=cwd)
    if m["rc"] != 0:
        run.fail(" ".join(cmd[:4]), m)
    return m


def pair(label: str, subject: list[str], floor: list[str], env: dict, cwd: Path, rounds: int,
         before=None, after=None, baseline: list[str] | None = None) -> dict:  # noqa: ANN001
    """Subject and floor interleaved, order rotating; ``before(i)`` and ``after(i)`` run around
    each round. With ``--baseline-src``, ``baseline`` (the same command of the older package, by
    default ``subject`` itself) runs in each round too: the "before" figures of the same run."""
    runs: dict[str, list[dict]] = {"subject": [], "floor": []}
    cmds = {"subject": (subject, env), "floor": (floor, env)}
    if BASELINE_SRC is not None:
        runs["before"] = []
        cmds["before"] = (baseline or subject, {**env, "PYTHONPATH": str(BASELINE_SRC)})
    names = list(cmds)
    for i in range(rounds):
        if before:
            before(i)
        for which in names[i % len(names):] + names[:i % len(names)]:
            cmd, e = cmds[which]
            runs[which].append(measure(cmd, e, cwd))
        if after:
            after(i)

    def stats(ms: list[dict]) -> dict:
        return {"wall_s": median([m["wall_s"] for m in ms]), "cpu_s": median([m["user_s"] + m["sys_s"] for m in ms]),
                "rss_mb": median([m["max_rss_mb"] for m in ms]), "walls": [m["wall_s"] for m in ms]}

    res = {"label": label, **stats(runs["subject"])}
    res["floor_wall_s"], res["floor_walls"] = median([m["wall_s"] for m in runs["floor"]]), [m["wall_s"] for m in runs["floor"]]
    res["ratio"] = res["wall_s"] / res["floor_wall_s"]
    line = (f"  {label}: {res['wall_s']:.3f} s (CPU {res['cpu_s']:.3f} s, {res['rss_mb']:.0f} MB) | floor "
            f"{res['floor_wall_s']:.3f} s | {res['ratio']:.1f}x")
    if "before" in runs:
        res["before"] = stats(runs["before"])
        line += f" | before: {res['before']['wall_s']:.3f} s (CPU {res['before']['cpu_s']:.3f} s)"
    print(line, flush=True)
    return res


def bench_help(tmp: Path, rounds: int) -> dict:
    env = child_env(tmp)
    return pair("trialwatch --help", [str(TRIALWATCH), "--help"],
                [str(VENV_PY), "-c", "print('usage: trialwatch')"], env, tmp, rounds)


def bench_check(tmp: Path, rounds: int, location: str | None) -> dict:
    record = json.loads(FIXTURE.read_text())
    with StandIn([record]) as api:
        env = child_env(tmp)
        cfg = tmp / "check.yaml"
        sub = (f"subscribers:\n  - email: dr@example.org\n    trials: [{NCT}]\n"
               + (f"    location: '{location}'\n" if location else ""))
        cfg.write_text(f"database: sqlite:///{tmp / 'check.db'}\nctgov:\n  base_url: {api.base_url}\n"
                       f"  requests_per_minute: 100000\ntrials: [{NCT}]\n{sub}")
        cmd = [str(TRIALWATCH), "--config", str(cfg), "check", NCT]
        first = measure(cmd, env, tmp)  # stores the record: the measured checks are quiet
        assert "First snapshot" in first["stdout"], first["stdout"]
        quiet = measure(cmd, env, tmp)
        assert "No change since" in quiet["stdout"], quiet["stdout"]
        floor = [str(VENV_PY), "-c", FLOOR_CHECK, f"{api.base_url}/studies/{NCT}"]
        what = f"quiet check {NCT}" + (f" (subscriber location {location!r})" if location else "")
        return pair(what, cmd, floor, env, tmp, rounds)


# Two registry refreshes a day of C changed trials. "steady" is the poll of the goal
# (the v2 poll alone, 1 + N/100 requests, as bench/run.py measures it): the changed trials stay
# recruiting and `alternatives.per_poll: 0`, so no search for recruiting alternatives runs.
# "closing" is the shipped configuration on a day when the C trials stop recruiting: the poll
# also searches alternatives for each of them (2-3 /studies searches a trial). Statuses alternate
# between two values that are no base record's own (tests/corpus.py), so every round changes C.
SCENARIOS = {
    "steady": {"statuses": ("ENROLLING_BY_INVITATION", "NOT_YET_RECRUITING"), "alternatives": False,
               "what": "C changed, still recruiting (the v2 poll alone)"},
    "closing": {"statuses": ("WITHDRAWN", "COMPLETED"), "alternatives": True,
                "what": "C changed, all stop recruiting; shipped config: + alternatives searches "
                        "(per_poll 20: the C, then other non-recruiting trials)"},
}

# The one-shot poll's phases, timed inside a child that runs what `trialwatch poll --json
# --no-send` runs (trialwatch.cli_ops.poll), in its order, with the console script's settings.
PHASES = r"""
import time
marks = [(time.perf_counter(), time.process_time())]
import os, sys
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
sys.modules.setdefault("httpx._main", None)
from trialwatch import cli_common
getattr(cli_common, "begin_startup", lambda: None)()  # (absent before start-up had it)
from trialwatch import cli  # click and the command modules: what --help imports
marks.append((time.perf_counter(), time.process_time()))
from trialwatch.config import load
config = load(sys.argv[1])
marks.append((time.perf_counter(), time.process_time()))
from trialwatch.notify import sync_subscribers  # imports the store: SQLAlchemy, the ORM, the models
marks.append((time.perf_counter(), time.process_time()))
from trialwatch.store import open_store
store = open_store(config.database_url)
getattr(cli_common, "end_startup", lambda: None)()
marks.append((time.perf_counter(), time.process_time()))
sync_subscribers(store, config)
marks.append((time.perf_counter(), time.process_time()))
from trialwatch.poller import poll
report = poll(store, config, send=False)  # with the API client, its imports and its requests
marks.append((time.perf_counter(), time.process_time()))
store.close()
import json
names = ["click + CLI modules", "config: pydantic, yaml, validation", "store import: SQLAlchemy, ORM, models",
         "store open", "subscriber sync", "poll: client, fetch, store"]
print(json.dumps({"changed": report.trials_changed, "requests": report.requests, "cpu_before": marks[0][1],
                  "phases": {n: [b[0] - a[0], b[1] - a[1]] for n, a, b in zip(names, marks, marks[1:])}}))
sys.stdout.flush()
os._exit(0)
"""


class PollScenario:
    """One trialwatch one-shot database, one daemon-style process (bench/bench_daemon_poll.py)
    with its own database, and the registry refreshes of one scenario."""

    day = 0  # registry days, shared by the scenarios (one stand-in): each refresh is a later day

    def __init__(self, name: str, api: StandIn, corpus: Corpus, tmp: Path, c: int) -> None:
        self.name, self.api, self.corpus, self.c = name, api, corpus, c
        self.spec = SCENARIOS[name]
        self.tw = Trialwatch(api, corpus, tmp, subscriber=True, alternatives=self.spec["alternatives"])
        self.tw.poll("baseline")
        self.daemon = DaemonPoll(api, self.tw, tmp)
        self.tw_before = None
        if BASELINE_SRC is not None:  # the older package's one-shot poll: its own database
            self.tw_before = Trialwatch(api, corpus, tmp / "before", subscriber=True,
                                        alternatives=self.spec["alternatives"])
            self.tw_before.env["PYTHONPATH"] = str(BASELINE_SRC)
            self.tw_before.poll("baseline")

    def refresh(self) -> None:
        """A new registry day: C records change status, /version's dataTimestamp moves."""
        PollScenario.day += 1
        day = (dt.date(2026, 11, 25) + dt.timedelta(days=PollScenario.day)).isoformat()
        status = self.spec["statuses"][PollScenario.day % 2]
        for k in self.corpus.changed_indices(self.c):
            put_lean(self.api, change_status(self.corpus.record(k), status, updated=day))
        self.api.set_data_timestamp(f"{day}T09:00:05")


def bench_poll(tmp: Path, rounds: int, n: int, c: int, scenarios: list[str], urlwatch: bool,
               daemon: bool) -> dict:
    """Per scenario and round: a registry refresh, then the one-shot poll and its floor
    (interleaved, order alternating), the daemon's poll and urlwatch, all on the same records."""
    corpus = Corpus(n)
    api = make_standin(corpus)
    host = api.base_url.split("//", 1)[1].split("/", 1)[0]
    out: dict = {}
    try:
        uw = Urlwatch(api, corpus, tmp) if urlwatch else None
        if uw:
            uw.run("baseline")
        for name in scenarios:
            sc = PollScenario(name, api, corpus, tmp / name, c)
            env = child_env(sc.tw.dir)
            # The floor replays exactly the requests of this scenario's poll: record them once.
            sc.refresh()
            api.reset_requests()
            probe = sc.tw.poll("probe")
            assert probe["report"]["trials_changed"] == c, probe["report"]
            replay = sc.tw.dir / "requests.jsonl"
            replay.write_text("".join(json.dumps([p, q]) + "\n" for _, p, q in api.requests))
            if daemon:
                sc.daemon.poll(last=False)  # the daemon's database takes this day too
            floor = [str(VENV_PY), "-c", FLOOR_POLL, host, str(replay)]
            subject = [str(TRIALWATCH), "--config", str(sc.tw.config), "poll", "--json", "--no-send"]
            d_walls: list[float] = []
            u_walls: list[float] = []

            def after(i: int, sc=sc, d_walls=d_walls, u_walls=u_walls) -> None:  # noqa: ANN001
                if daemon:
                    m = sc.daemon.poll(last=i == rounds - 1)
                    assert m["report"]["trials_changed"] == c, m["report"]
                    d_walls.append(m["wall_s"])
                if uw:
                    m = uw.run("measured")
                    assert m["report"]["changed"] == c and m["report"]["fetched_every_url"], m["report"]
                    u_walls.append(m["wall_s"])

            def before(i: int, sc=sc) -> None:  # noqa: ANN001
                sc.refresh()
                api.reset_requests()

            baseline = None
            if sc.tw_before is not None:
                sc.tw_before.poll("probe")  # this day too
                baseline = [str(TRIALWATCH), "--config", str(sc.tw_before.config), "poll", "--json", "--no-send"]
            res = pair(f"one-shot poll N={n} C={c}, {name}", subject, floor, env, sc.tw.dir, rounds,
                       before=before, after=after, baseline=baseline)
            res["what"] = sc.spec["what"]
            res["requests"] = len(replay.read_text().splitlines())
            # The phases of the same poll, in a child (one refresh each; medians).
            phases: dict[str, list[float]] = {}
            walls = []
            for _ in range(max(3, rounds // 2)):
                before(0)
                m = measure([str(VENV_PY), "-c", PHASES, str(sc.tw.config)], env, sc.tw.dir)
                got = json.loads(m["stdout"].strip().splitlines()[-1])
                assert got["changed"] == c, got
                walls.append(m["wall_s"])
                # Before the first timer and after the last: spawn to exit less the timed phases; CPU
                # before the first timer is the interpreter's start (the process's own clock).
                phases.setdefault("interpreter start + exit (wall: the rest; CPU: before the first timer)", []).append(
                    [m["wall_s"] - sum(w for w, _ in got["phases"].values()), got["cpu_before"]])
                for k, v in got["phases"].items():
                    phases.setdefault(k, []).append(v)
            res["phases"] = {k: [median([w for w, _ in v]), median([cpu for _, cpu in v])] for k, v in phases.items()}
            res["phases_wall_s"] = median(walls)
            if d_walls:
                res["daemon_wall_s"], res["daemon_walls"] = median(d_walls), d_walls
            if u_walls:
                res["urlwatch_wall_s"], res["urlwatch_walls"] = median(u_walls), u_walls
                res["vs_urlwatch"] = res["urlwatch_wall_s"] / res["wall_s"]
                print(f"  urlwatch: {res['urlwatch_wall_s']:.2f} s (median of {len(u_walls)}): the one-shot "
                      f"poll is {res['vs_urlwatch']:.1f}x faster", flush=True)
                if d_walls:
                    res["daemon_vs_urlwatch"] = res["urlwatch_wall_s"] / res["daemon_wall_s"]
                    print(f"  daemon poll: {res['daemon_wall_s']:.3f} s (median of {len(d_walls)}): "
                          f"{res['daemon_vs_urlwatch']:.1f}x faster than urlwatch", flush=True)
            out[name] = res
        return out
    finally:
        api.stop()


def markdown(res: dict) -> str:
    L = [f"# trialwatch start-up — {res['when']}", "",
         f"trialwatch at {res['commit']}. Host: {res['host']}; load average at the start {res['load']}. "
         f"Command: `{res['command']}`.", "",
         f"Medians of {res['rounds']} runs, subject and floor interleaved; wall is spawn to exit.", "",
         "| command | wall s | CPU s | peak RSS MB | floor (same run) | floor wall s | ratio |"
         + (" before: wall s | before: CPU s |" if res.get("baseline_src") else ""),
         "|---|---:|---:|---:|---|---:|---:|" + ("---:|---:|" if res.get("baseline_src") else "")]
    floors = {"help": "`python -c print(...)`", "check": "stdlib GET + json.loads + print",
              "check_location": "stdlib GET + json.loads + print"}
    rows = [(k, res.get(k), floors[k]) for k in ("help", "check", "check_location")]
    rows += [(k, r, f"stdlib: the same {r['requests']} requests + parse") for k, r in res.get("poll", {}).items()]
    for _, r, floor in rows:
        if r:
            b = r.get("before")
            L.append(f"| {r['label']} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['rss_mb']:.0f} | {floor} | "
                     f"{r['floor_wall_s']:.3f} | {r['ratio']:.1f}× |"
                     + (f" {b['wall_s']:.3f} | {b['cpu_s']:.3f} |" if b else ""))
    if res.get("baseline_src"):
        L += ["", f"before: the package in `{res['baseline_src']}`, run in the same rounds."]
    polls = res.get("poll", {})
    if any("urlwatch_wall_s" in p for p in polls.values()):
        L += ["", "urlwatch 2.29 on the same records in the same rounds (each after the same registry refresh):", "",
              f"| poll N={res['n']} C={res['c']} | what | urlwatch s | one-shot s | × faster | in-daemon s | × faster |",
              "|---|---|---:|---:|---:|---:|---:|"]
        for name, p in polls.items():
            if "urlwatch_wall_s" in p:
                d = (f"{p['daemon_wall_s']:.3f} | **{p['daemon_vs_urlwatch']:.1f}×**" if "daemon_wall_s" in p
                     else "— | —")
                L.append(f"| {name} | {p['what']} | {p['urlwatch_wall_s']:.2f} | {p['wall_s']:.3f} | "
                         f"**{p['vs_urlwatch']:.1f}×** | {d} |")
    for name, p in polls.items():
        if "phases" in p:
            L += ["", f"Where the one-shot poll's time goes ({name}; a child that runs the `poll` command's "
                      f"steps with timers; medians of each phase, so they need not add up to the median "
                      f"wall, {p['phases_wall_s']:.3f} s; CPU is the process's own clock):",
                  "", "| phase | wall s | CPU s |", "|---|---:|---:|"]
            L += [f"| {k} | {w:.3f} | {c:.3f} |" for k, (w, c) in p["phases"].items()]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--c", type=int, default=20)
    ap.add_argument("--location", default="Rochester, MN",
                    help="the check config's subscriber location ('' for none)")
    ap.add_argument("--scenario", choices=("both", *SCENARIOS), default="both",
                    help="which poll scenario to measure (default both)")
    ap.add_argument("--skip-urlwatch", action="store_true")
    ap.add_argument("--skip-daemon", action="store_true", help="no in-daemon poll")
    ap.add_argument("--skip-poll", action="store_true")
    ap.add_argument("--baseline-src", metavar="DIR",
                    help="also run each command with DIR's trialwatch package (PYTHONPATH) in the same "
                         "rounds: the 'before' figures (DIR: an older checkout's folder holding trialwatch/)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    global BASELINE_SRC
    if args.baseline_src:
        BASELINE_SRC = Path(args.baseline_src).resolve()
        assert (BASELINE_SRC / "trialwatch" / "cli.py").is_file(), f"no trialwatch package in {BASELINE_SRC}"
    import os
    import platform

    res: dict = {"when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "host": f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()}",
                 "command": "bench/bench_startup.py " + " ".join(sys.argv[1:]), "commit": run.git_describe(),
                 "rounds": args.rounds, "n": args.n, "c": args.c, "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    urlwatch = False
    if not args.skip_poll and not args.skip_urlwatch:
        version, note = ensure_urlwatch()
        urlwatch = version is not None
        res["urlwatch"] = version or note
        print(f"urlwatch: {version or note}", flush=True)
    t0 = time.perf_counter()
    # The children run with PYTHONDONTWRITEBYTECODE (bench/run.py): compile the package first, as
    # an installed one is, so no run pays for compiling a module edited since the last one.
    import compileall

    compileall.compile_dir(str(ROOT / "trialwatch"), quiet=1)
    if BASELINE_SRC is not None:
        compileall.compile_dir(str(BASELINE_SRC / "trialwatch"), quiet=1)
        res["baseline_src"] = str(BASELINE_SRC)
    with tempfile.TemporaryDirectory(prefix="twbench-startup-") as t:
        tmp = Path(t)
        for sub in ("help", "check", "check_location", "poll"):
            (tmp / sub).mkdir()
        res["help"] = bench_help(tmp / "help", args.rounds)
        res["check"] = bench_check(tmp / "check", args.rounds, None)
        if args.location:
            res["check_location"] = bench_check(tmp / "check_location", args.rounds, args.location)
        if not args.skip_poll:
            scenarios = list(SCENARIOS) if args.scenario == "both" else [args.scenario]
            res["poll"] = bench_poll(tmp / "poll", args.rounds, args.n, args.c, scenarios,
                                     urlwatch=urlwatch, daemon=not args.skip_daemon)
    res["elapsed_s"] = time.perf_counter() - t0
    res["load_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "startup.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    (out / "startup.md").write_text(md)
    print("\n" + md)
    return 0


if __name__ == "__main__":
    assert BENCH.exists()
    sys.exit(main())
