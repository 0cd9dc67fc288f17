"""Start-up cost of one-shot commands, each beside its floor measured in the same run.

    .venv/bin/python bench/bench_startup.py                # 7 rounds, N=1000 C=20, urlwatch if installed
    .venv/bin/python bench/bench_startup.py --rounds 9 --skip-urlwatch

Three one-shot commands, each spawned as cron would (interpreter start, imports, teardown):

- ``trialwatch --help`` beside ``python -c "print(...)"`` (the interpreter alone);
- a quiet ``trialwatch check NCT03268603`` (record already stored, nothing changed; the config
  has a subscriber with a city ``location``, as a hospital's would) beside a stdlib script doing
  the same fetch + print (urllib GET of the record, json.loads, print its title);
- a steady one-shot ``trialwatch poll --no-send`` (N watched trials, C changed since the last
  poll) beside a stdlib script making the same requests (replayed from the stand-in's log of the
  poll) and parsing them, and beside urlwatch on the same records when bench/.venv-urlwatch
  exists (bench/run.py installs it).

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
    BENCH, RESULTS, ROOT, TRIALWATCH, URLWATCH, VENV_PY, Corpus, StandIn, Trialwatch, Urlwatch,
    change_status, child_env, make_standin, put_lean, run_measured,
)

NCT = "NCT03268603"
FIXTURE = ROOT / "tests" / "fixtures" / f"{NCT}.json"
STATUSES = ("SUSPENDED", "RECRUITING", "ENROLLING_BY_INVITATION", "NOT_YET_RECRUITING", "WITHDRAWN", "COMPLETED")

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


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def measure(cmd: list[str], env: dict, cwd: Path) -> dict:
    m = run_measured(cmd, env=env, cwd=cwd)
    if m["rc"] != 0:
        run.fail(" ".join(cmd[:4]), m)
    return m


def pair(label: str, subject: list[str], floor: list[str], env: dict, cwd: Path, rounds: int,
         before=None) -> dict:  # noqa: ANN001
    """Subject and floor interleaved, order alternating; ``before(i)`` runs before each round."""
    s_wall, s_cpu, f_wall, s_rss = [], [], [], []
    for i in range(rounds):
        if before:
            before(i)
        order = (0, 1) if i % 2 == 0 else (1, 0)
        for which in order:
            m = measure(subject if which == 0 else floor, env, cwd)
            if which == 0:
                s_wall.append(m["wall_s"])
                s_cpu.append(m["user_s"] + m["sys_s"])
                s_rss.append(m["max_rss_mb"])
            else:
                f_wall.append(m["wall_s"])
    res = {"label": label, "wall_s": median(s_wall), "cpu_s": median(s_cpu), "rss_mb": median(s_rss),
           "floor_wall_s": median(f_wall), "walls": s_wall, "floor_walls": f_wall}
    res["ratio"] = res["wall_s"] / res["floor_wall_s"]
    print(f"  {label}: {res['wall_s']:.3f} s (CPU {res['cpu_s']:.3f} s, {res['rss_mb']:.0f} MB) | floor "
          f"{res['floor_wall_s']:.3f} s | {res['ratio']:.1f}x", flush=True)
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


def bench_poll(tmp: Path, rounds: int, n: int, c: int, urlwatch: bool) -> dict:
    corpus = Corpus(n)
    api = make_standin(corpus)
    try:
        tw = Trialwatch(api, corpus, tmp, subscriber=True)
        uw = Urlwatch(api, corpus, tmp) if urlwatch else None
        tw.poll("baseline")
        if uw:
            uw.run("baseline")
        env = child_env(tmp)
        replay = tmp / "requests.jsonl"
        host = api.base_url.split("//", 1)[1].split("/", 1)[0]
        state = {"round": 0}

        def refresh(i: int) -> None:
            # A new registry day: C records change, so every measured poll stores C versions.
            day = (dt.date(2026, 11, 25) + dt.timedelta(days=i)).isoformat()
            for k in corpus.changed_indices(c):
                put_lean(api, change_status(corpus.record(k), STATUSES[i % len(STATUSES)], updated=day))
            api.set_data_timestamp(f"{day}T09:00:05")
            state["round"] = i

        # The floor replays exactly the requests of a steady poll: record them once.
        refresh(0)
        api.reset_requests()
        probe = tw.poll("probe")
        assert probe["report"]["trials_changed"] == c, probe["report"]
        replay.write_text("".join(json.dumps([p, q]) + "\n" for _, p, q in api.requests))
        floor = [str(VENV_PY), "-c", FLOOR_POLL, host, str(replay)]
        subject = [str(TRIALWATCH), "--config", str(tw.config), "poll", "--json", "--no-send"]
        res = pair(f"one-shot poll N={n} C={c}", subject, floor, env, tw.dir, rounds,
                   before=lambda i: refresh(i + 1))
        res["requests"] = len(replay.read_text().splitlines())
        if uw:
            walls = []
            for i in range(max(3, rounds // 2)):
                refresh(rounds + 1 + i)
                m = uw.run("measured")
                assert m["report"]["changed"] == c, m["report"]
                walls.append(m["wall_s"])
            res["urlwatch_wall_s"] = median(walls)
            res["urlwatch_walls"] = walls
            res["vs_urlwatch"] = res["urlwatch_wall_s"] / res["wall_s"]
            print(f"  urlwatch: {res['urlwatch_wall_s']:.2f} s (median of {len(walls)}): trialwatch "
                  f"{res['vs_urlwatch']:.1f}x faster", flush=True)
        return res
    finally:
        api.stop()


def markdown(res: dict) -> str:
    L = [f"# trialwatch start-up — {res['when']}", "",
         f"trialwatch at {res['commit']}. Host: {res['host']}. Command: `{res['command']}`.", "",
         f"Medians of {res['rounds']} runs, subject and floor interleaved; wall is spawn to exit.", "",
         "| command | wall s | CPU s | peak RSS MB | floor (same run) | floor wall s | ratio |",
         "|---|---:|---:|---:|---|---:|---:|"]
    floors = {"help": "`python -c print(...)`", "check": "stdlib GET + json.loads + print",
              "check_location": "stdlib GET + json.loads + print", "poll": "stdlib: the same requests + parse"}
    for key in ("help", "check", "check_location", "poll"):
        r = res.get(key)
        if r:
            L.append(f"| {r['label']} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['rss_mb']:.0f} | {floors[key]} | "
                     f"{r['floor_wall_s']:.3f} | {r['ratio']:.1f}× |")
    p = res.get("poll", {})
    if "vs_urlwatch" in p:
        L += ["", f"urlwatch 2.29 on the same records, same run: {p['urlwatch_wall_s']:.2f} s (median of "
                  f"{len(p['urlwatch_walls'])}); the one-shot poll is **{p['vs_urlwatch']:.1f}× faster**."]
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--c", type=int, default=20)
    ap.add_argument("--location", default="Rochester, MN",
                    help="the check config's subscriber location ('' for none)")
    ap.add_argument("--skip-urlwatch", action="store_true")
    ap.add_argument("--skip-poll", action="store_true")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    import os
    import platform

    res: dict = {"when": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "host": f"{platform.node()} · {os.cpu_count()} CPUs · Python {platform.python_version()}",
                 "command": "bench/bench_startup.py " + " ".join(sys.argv[1:]), "commit": run.git_describe(),
                 "rounds": args.rounds}
    t0 = time.perf_counter()
    # The children run with PYTHONDONTWRITEBYTECODE (bench/run.py): compile the package first, as
    # an installed one is, so no run pays for compiling a module edited since the last one.
    import compileall

    compileall.compile_dir(str(ROOT / "trialwatch"), quiet=1)
    with tempfile.TemporaryDirectory(prefix="twbench-startup-") as t:
        tmp = Path(t)
        for sub in ("help", "check", "check_location", "poll"):
            (tmp / sub).mkdir()
        res["help"] = bench_help(tmp / "help", args.rounds)
        res["check"] = bench_check(tmp / "check", args.rounds, None)
        if args.location:
            res["check_location"] = bench_check(tmp / "check_location", args.rounds, args.location)
        if not args.skip_poll:
            res["poll"] = bench_poll(tmp / "poll", args.rounds, args.n, args.c,
                                     urlwatch=not args.skip_urlwatch and URLWATCH.exists())
    res["elapsed_s"] = time.perf_counter() - t0
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
